// Session, ending: termination, kill, re-registration after a cp restart, teardown.
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
// Ending

void Session::send_fatal(std::string_view sqlstate, std::string_view message) {
  pw::append_error_response(client_out_, "FATAL", sqlstate, message);
}

void Session::terminate(std::string_view sqlstate, std::string_view message) {
  if (destroyed_ || state_ == State::kClosing) return;
  send_fatal(sqlstate, message);
  close_after_flush();
}

void Session::kill(std::string_view sqlstate, std::string_view message) {
  if (destroyed_ || state_ == State::kClosing) return;
  // A statement still running upstream would go on after the socket closes until it next
  // writes: cancel it.
  if (cancel_registered_ && cycles_sent_ > cycles_received_) send_cancel_async(cancel_target_);
  // cp already ended the session: no session_end for it.
  authenticated_ = false;
  spdlog::info("session {}: ended by the control plane: {}", sid_hex_, message);
  terminate(sqlstate, message);
}

void Session::reregister() {
  if (destroyed_ || state_ == State::kClosing || !authenticated_) return;
  if ((state_ != State::kReady && !relogin_) || grant_.ticket.empty()) {
    authenticated_ = false;
    terminate("57P01",
              "pgwarden: terminating connection: the control plane restarted and this session "
              "cannot be re-registered; connect again");
    return;
  }
  json request{{"session_id", sid_hex_}, {"ticket", grant_.ticket}};
  // Events the session made that never reached cp: recorded there as a gap (docs/recording.md).
  json lost = worker_->cp().take_lost(sid_);
  if (!lost.is_null()) request["lost"] = lost;
  // The write-ahead record that was in flight, if any: cp says whether it wrote it.
  if (json ahead = worker_->cp().uncertain_ahead(sid_); !ahead.is_null()) {
    request["ahead"] = std::move(ahead);
  }
  worker_->cp().request(
      "reregister", std::move(request), worker_->runtime().config.limits.escalation_timeout_ms,
      [w = worker_, id = id_, sid = sid_, lost = std::move(lost)](Result<json> r) {
        // cp went away again before it answered: the next re-registration reports them.
        if (!r.is_ok() && r.status().code() == StatusCode::kUnavailable) {
          w->cp().restore_lost(sid, lost);
        }
        w->cp().resolve_ahead(sid, r);
        Session* s = w->find(id);
        if (s == nullptr || s->state_ == State::kClosing) return;
        if (r.is_ok()) {
          bump(w->counters().sessions_reregistered);
          // The policy as cp now has it: cached verdicts of the old version are not reused.
          if (const json* pol = field(*r, "policy"); pol != nullptr && pol->is_object()) {
            if (const json* v = field(*pol, "version"); v != nullptr && v->is_number_unsigned()) {
              s->grant_.policy_version = v->get<uint64_t>();
              if (s->results_) s->results_->set_masks(s->cache_version(), s->masks_values_);
            }
          }
          if (const json* req = field(*r, "recording_required");
              req != nullptr && req->is_boolean() &&
              s->grant_.recording != protocol::RecordingLevel::kOff) {
            s->grant_.recording_required = req->get<bool>();
          }
          if (const json* b = field(*r, "budgets"); b != nullptr) {
            auto budgets = parse_budgets(*b);
            if (!budgets.is_ok()) {
              s->authenticated_ = false;
              return s->terminate(
                  "57P01", "pgwarden: terminating connection: " + budgets.status().message());
            }
            s->set_budgets(std::move(*budgets));
          }
          return;
        }
        const Status& st = r.status();
        // cp went away again: the next reconnection re-registers the session.
        if (st.code() == StatusCode::kUnavailable && st.sqlstate() != "57P01") return;
        s->authenticated_ = false;
        std::string msg = st.message();
        if (!msg.starts_with("pgwarden:")) msg = "pgwarden: terminating connection: " + msg;
        s->terminate("57P01", msg);
      });
}

void Session::on_drain() {
  draining_ = true;
  if (destroyed_ || state_ == State::kClosing) return;
  if (state_ != State::kReady) {
    if (state_ == State::kStartup || state_ == State::kAwaitPassword) {
      terminate("57P03", "pgwarden: the gateway is shutting down; connect again shortly");
    }
    return;
  }
  if (!busy()) {
    terminate("57P01", "pgwarden: terminating connection because the gateway is shutting down");
  }
}

void Session::close_after_flush() {
  if (destroyed_) return;
  leave_pending();
  const State state_before_close = state_;
  state_ = State::kClosing;
  waiting_cp_ = false;
  awaiting_record_ = false;
  ++escalation_seq_;  // late cp answers are ignored
  if (pooled()) return_server(state_before_close == State::kReady && server_clean());
  if (upstream_registered_) {
    worker_->loop().remove(upstream_.fd());
    upstream_registered_ = false;
  }
  upstream_.reset();
  flush_client();
  if (destroyed_) return;
  if (close_timer_ == 0) {
    close_timer_ = worker_->loop().add_timer(monotonic_ms() + kCloseFlushMs, [this] {
      close_timer_ = 0;
      destroy("close flush timeout");
    });
  }
  update_interest();
}

void Session::destroy(std::string_view reason) {
  if (destroyed_) return;
  destroyed_ = true;
  EventLoop& loop = worker_->loop();
  leave_pending();
  for (EventLoop::TimerId* t :
       {&auth_timer_, &idle_timer_, &close_timer_, &hold_timer_, &reminder_timer_}) {
    if (*t != 0) loop.cancel_timer(*t);
    *t = 0;
  }
  if (pool_timer_ != 0) loop.cancel_timer(pool_timer_);
  pool_timer_ = 0;
  if (relogin_timer_ != 0) loop.cancel_timer(relogin_timer_);
  relogin_timer_ = 0;
  // Transaction pooling: a clean connection goes back to the pool; one in the middle of a
  // transaction (the client vanished) is closed, so the server rolls the transaction back.
  if (pooled()) return_server(state_ == State::kReady && server_clean());
  if (client_registered_) loop.remove(client_.fd());
  if (upstream_registered_) loop.remove(upstream_.fd());
  client_registered_ = upstream_registered_ = false;
  client_.reset();
  upstream_.reset();
  if (cancel_registered_) worker_->shared().cancels.remove(gateway_key_);
  cancel_registered_ = false;
  cancel_entry_.reset();
  if (counted_) worker_->shared().connections.fetch_sub(1);
  counted_ = false;
  bump(worker_->counters().sessions_closed);
  const bool end_pending = authenticated_ && !grant_.ticket.empty();
  if (authenticated_) {
    // Ends the session in cp too (it exists there since authenticate succeeded).
    emit_event(
        {{"kind", "session_end"}, {"statements", statements_}, {"reason", std::string(reason)}});
  }
  spdlog::debug("session {}: closed ({})", session_id_hex(), reason);
  if (end_pending) {
    // Until cp surely has the session_end, a new cp connection re-registers it as ended.
    worker_->note_ended(sid_, sid_hex_, grant_.ticket);
  } else {
    worker_->cp().forget_lost(sid_);
  }
  worker_->release(this);
}

void Session::emit_event(json ev) {
  ev["session_id"] = session_id_hex();
  ev["ts_ms"] = unix_ms();
  worker_->cp().event(std::move(ev));
}

void Session::emit_statement(std::string_view sql, const char* verdict, const std::string& rule,
                             const char* source, std::string_view message) {
  if (results_) results_->note_decision(verdict, rule, approval_id_);
  worker_->metrics().statements.inc({verdict, rule, source});
  if (std::string_view(verdict) == "deny" &&
      (!message.empty() || grant_.recording == protocol::RecordingLevel::kOff)) {
    // Every denial is audited with its rule and reason, also under recording "off" (whose
    // statement records cp discards after auditing them) — docs/recording.md.
    json ev = {{"kind", "statement"},
               {"sql", std::string(sql)},
               {"verdict", "deny"},
               {"rule", rule},
               {"source", source},
               {"message", std::string(message)},
               {"shape_key", protocol::session_hex(screen_.shape_key)}};
    if (!approval_id_.empty()) ev["approval_id"] = approval_id_;
    emit_event(std::move(ev));
    return;
  }
  if (grant_.recording == protocol::RecordingLevel::kOff) return;
  protocol::StatementFields ev;
  ev.verdict = protocol::verdict_from(verdict);
  auto src = protocol::source_from(source);
  ev.source = src.is_ok() ? *src : protocol::DecisionSource::kCp;
  ev.has_shape_key = true;
  ev.shape_key = screen_.shape_key;
  ev.ts_ms = unix_ms();
  ev.sql = sql;
  ev.rule = rule;
  ev.approval_id = approval_id_;
  std::string payload;
  ev.encode(payload);
  worker_->cp().post(protocol::RecordType::kStatement, sid_, payload);
}

void Session::arm_idle_timer() {
  int64_t idle = worker_->runtime().config.limits.idle_timeout_ms;
  if (idle <= 0) return;
  idle_timer_ = worker_->loop().add_timer(last_client_activity_ms_ + idle, [this, idle] {
    idle_timer_ = 0;
    if (destroyed_ || state_ == State::kClosing) return;
    if (state_ != State::kReady) {  // a pooled session opening a connection for a transaction
      arm_idle_timer();
      return;
    }
    if (!busy() && monotonic_ms() - last_client_activity_ms_ >= idle) {
      emit_event({{"kind", "error"}, {"sqlstate", "57P05"}, {"code", "idle_timeout"}});
      terminate("57P05", "pgwarden: terminating connection due to idle timeout (" +
                             std::to_string(idle) + " ms, limits.idle_timeout_ms)");
      return;
    }
    if (busy()) last_client_activity_ms_ = monotonic_ms();
    arm_idle_timer();
  });
}

}  // namespace pgwarden::session
