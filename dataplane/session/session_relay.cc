// Session, upstream relay: results and COPY towards the client, masked and recorded.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/protocol/event_record.h"
#include "common/protocol/messages.h"
#include "dataplane/pgwire/messages.h"
#include "dataplane/session/session.h"
#include "dataplane/session/session_internal.h"
#include "dataplane/session/worker.h"

namespace pgwarden::session {

using namespace detail;  // the helpers every part of Session shares
using nlohmann::json;
namespace pw = pgwarden::pgwire;

// ---------------------------------------------------------------------------------------------
// Upstream relay

void Session::process_upstream_stream() {
  const size_t cap = worker_->runtime().config.limits.output_buffer_bytes;
  upstream_held_for_output_ = false;
  while (!destroyed_ && state_ == State::kReady) {
    size_t avail = up_in_.size() - up_in_off_;
    if (avail == 0) break;
    if (client_out_pending() > cap) {
      upstream_held_for_output_ = true;  // resumed once the client took enough of it
      break;
    }
    if (up_pass_remaining_ > 0) {
      size_t n = std::min(avail, up_pass_remaining_);
      if (up_pass_ != UpstreamPass::kPlain) {
        results_->large_chunk(std::string_view(up_in_).substr(up_in_off_, n), client_out_);
      }
      if (up_pass_ != UpstreamPass::kDiscard) client_out_.append(up_in_, up_in_off_, n);
      up_in_off_ += n;
      up_pass_remaining_ -= n;
      if (up_pass_remaining_ == 0 && up_pass_ != UpstreamPass::kPlain) {
        up_pass_ = UpstreamPass::kPlain;
        results_->end_large(client_out_);
      }
      continue;
    }
    if (avail < 5) break;
    const auto* p = reinterpret_cast<const uint8_t*>(up_in_.data() + up_in_off_);
    uint8_t type = p[0];
    uint32_t len = pw::load_be32(p + 1);
    if (len < 4) {
      send_fatal("08006", "pgwarden: protocol error from the upstream database");
      close_after_flush();
      return;
    }
    if ((type == '1' || type == '3') && len == 4 && server_ && on_pooled_completion(type)) {
      up_in_off_ += 5;  // answers a Parse or Close the gateway added (transaction pooling)
      continue;
    }
    bool filtered = results_ != nullptr && results_->needs_whole(type);
    if (filtered && type != 'E' && type != 'Z' && len >= results_->whole_limit(type)) {
      // Too large to hold whole (a big row or COPY line): streamed, recorded as it passes, or
      // refused in step when it would need masking.
      if (mask_plan_pending_) break;
      bump(worker_->counters().results_streamed);
      if (type == 'D' || type == 'd') results_->note_result_bytes(1 + static_cast<uint64_t>(len));
      ResultFilter::Large mode = results_->begin_large(type, len, cycles_received_, client_out_);
      if (mode == ResultFilter::Large::kPass) client_out_.append(up_in_, up_in_off_, 5);
      up_in_off_ += 5;
      up_pass_remaining_ = len - 4;
      up_pass_ =
          mode == ResultFilter::Large::kPass ? UpstreamPass::kFiltered : UpstreamPass::kDiscard;
      continue;
    }
    if (type == 'E' || type == 'Z' || filtered) {
      if (len > kMaxInspectedUpstream) {
        send_fatal("08006", "pgwarden: oversized message from the upstream database");
        close_after_flush();
        return;
      }
      if (avail < 1 + static_cast<size_t>(len)) break;
      std::string_view whole = std::string_view(up_in_).substr(up_in_off_, 1 + len);
      ResultFilter::Action a = ResultFilter::Action::kForward;
      if (results_) {
        if (mask_plan_pending_) break;
        a = results_->on_message(type, whole, cycles_received_, monotonic_ms(), client_out_);
        if (a == ResultFilter::Action::kNeedPlan) {
          request_mask_plan();
          break;
        }
        if (results_->swallowing() && unsynced_ && !skip_until_sync_) {
          // A result refused inside an unsynced pipeline is an error there, as if PostgreSQL
          // had raised it: the server skips to Sync and rolls the pipeline's implicit
          // transaction back (a nonce Parse that fails; its error is swallowed with the rest
          // of the cycle), and the client's messages up to Sync are not run.
          pw::append_parse(up_out_, "pgwarden_refused_" + nonce_, nonce_sql_);
          skip_until_sync_ = true;
        }
      }
      if (a == ResultFilter::Action::kForward) {
        if (type == 'E' || type == 'Z') {
          on_upstream_message(type, whole);
        } else {
          client_out_.append(whole);
        }
      }
      if (results_ && (type == 'D' || type == 'd')) {
        results_->note_result_bytes(1 + static_cast<uint64_t>(len));
      }
      up_in_off_ += 1 + len;
      if (destroyed_ || state_ != State::kReady) return;
      continue;
    }
    // Pass through without buffering the whole message (DataRows may be large).
    if (results_ && (type == 'D' || type == 'd')) {
      results_->note_result_bytes(1 + static_cast<uint64_t>(len));
    }
    client_out_.append(up_in_, up_in_off_, 5);
    up_in_off_ += 5;
    up_pass_remaining_ = len - 4;
  }
  if (up_in_off_ == up_in_.size()) {
    up_in_.clear();
    up_in_off_ = 0;
  } else if (up_in_off_ > (64u << 10)) {
    up_in_.erase(0, up_in_off_);
    up_in_off_ = 0;
  }
}

void Session::on_upstream_message(uint8_t type, std::string_view whole) {
  if (type == 'E') {
    if (!rewrites_.empty() && whole.find(nonce_) != std::string_view::npos) {
      Rewrite r = std::move(rewrites_.front());
      rewrites_.pop_front();
      if (r.silent) return;
      if (r.position > 0) {
        const std::string pos = std::to_string(r.position);
        const pw::ErrorField fields[] = {{pw::kFieldSeverity, "ERROR"},
                                         {pw::kFieldSeverityNonLocalized, "ERROR"},
                                         {pw::kFieldSqlstate, r.sqlstate},
                                         {pw::kFieldMessage, r.message},
                                         {pw::kFieldPosition, pos}};
        pw::append_error_fields(client_out_, 'E', fields);
      } else {
        pw::append_error_response(client_out_, "ERROR", r.sqlstate, r.message);
      }
      return;
    }
    if (results_) {
      results_->append_error(whole, client_out_);
    } else {
      client_out_.append(whole);
    }
    return;
  }
  // 'Z': one request cycle ended.
  ++cycles_received_;
  if (whole.size() >= 6) tx_status_ = whole[5];
  if (tx_status_ == 'I' && (!portals_.empty() || !cursors_.empty())) forget_transaction_objects();
  if (pooled()) on_pooled_cycle_end();
  while (!rewrites_.empty() && rewrites_.front().cycle <= cycles_received_) {
    rewrites_.pop_front();
  }
  if (results_ && results_->take_refusal() && tx_status_ == 'T' && fail_upstream_transaction()) {
    return;
  }
  client_out_.append(whole);
  if (draining_ && !busy()) {
    terminate("57P01", "pgwarden: terminating connection because the gateway is shutting down");
  }
}

bool Session::fail_upstream_transaction() {
  bump(worker_->counters().results_refused_in_tx);
  if (cycles_sent_ > cycles_received_) {
    // Later cycles (maybe a COMMIT) are already upstream: the failing statement can no longer
    // come right behind the refused result. Closing the upstream connection rolls back what
    // has not been committed yet.
    emit_event({{"kind", "error"}, {"sqlstate", "25P02"}, {"code", "refused_result_pipelined"}});
    terminate("25P02",
              "pgwarden: a result was refused inside a transaction while further statements were "
              "pipelined; the connection is closed so the transaction is not committed");
    return true;
  }
  Rewrite r;
  r.cycle = cycles_sent_ + 1;
  r.silent = true;
  pw::append_query(up_out_, nonce_sql_);
  ++cycles_sent_;
  rewrites_.push_back(std::move(r));
  return true;
}

void Session::request_mask_plan() {
  if (mask_plan_pending_) return;
  mask_plan_pending_ = true;
  uint64_t key = results_->pending_key();
  json req = results_->plan_request();
  req["session_id"] = session_id_hex();
  worker_->cp().request(
      "mask_plan", std::move(req), worker_->runtime().config.limits.escalation_timeout_ms,
      [w = worker_, id = id_, key](Result<json> r) {
        Session* s = w->find(id);
        if (s == nullptr || !s->results_) return;
        s->mask_plan_pending_ = false;
        if (r.is_ok()) {
          s->results_->set_plan_answer(key, *r);
        } else {
          s->results_->set_plan_error(key, r.status());
        }
        s->pump();
      },
      worker_->runtime().config.limits.cp_unavailable_wait_ms);
}

void Session::note_forwarded(const pw::Message& m) {
  uint64_t cycle = cycles_sent_ + 1;
  switch (m.type) {
    case 'Q': {
      pw::Query q;
      if (pw::parse(m.body, &q).ok()) results_->on_query_forwarded(q.sql, cycle, monotonic_ms());
      break;
    }
    case 'P': {
      pw::Parse p;
      if (pw::parse(m.body, &p).ok()) results_->on_parse_forwarded(p.statement, p.query);
      break;
    }
    case 'B': {
      pw::Bind b;
      if (pw::parse(m.body, &b).ok()) results_->on_bind_forwarded(b.portal, b.statement);
      break;
    }
    case 'D':
      results_->on_describe_forwarded(cycle);
      break;
    case 'E': {
      pw::Execute e;
      if (pw::parse(m.body, &e).ok()) {
        results_->before_execute(e.portal, cycle, monotonic_ms(), up_out_);
      }
      break;
    }
    default:
      break;
  }
}

bool Session::busy() const {
  return waiting_cp_ || cycles_sent_ > cycles_received_ || client_in_pending() > 0 ||
         client_pass_remaining_ > 0;
}

}  // namespace pgwarden::session
