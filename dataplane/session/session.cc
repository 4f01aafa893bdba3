#include "dataplane/session/session.h"

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
#include "dataplane/session/session_internal.h"
#include "dataplane/session/worker.h"

namespace pgwarden::session {

using namespace detail;  // the helpers every part of Session shares
using nlohmann::json;
namespace pw = pgwarden::pgwire;

Result<std::vector<protocol::BudgetState>> parse_budgets(const json& budgets) {
  if (!budgets.is_array()) return internal_error("control plane budgets are not an array");
  std::vector<protocol::BudgetState> out;
  for (const json& b : budgets) {
    auto state = protocol::BudgetState::from_json(b);
    if (!state.is_ok()) return internal_error("control plane " + state.status().message());
    out.push_back(std::move(*state));
  }
  return out;
}

Result<Grant> parse_grant(const json& answer) {
  auto a = protocol::AuthenticateResponse::from_json(answer);
  if (!a.is_ok())
    return internal_error("control plane grant is malformed: " + a.status().message());
  Grant g;
  g.subject = a->identity.subject;
  g.policy_name = a->policy.name;
  g.policy_version = a->policy.version;
  g.policy_hash = fnv1a(g.policy_name);
  g.read_only = a->policy.read_only;
  g.allow_function_call = a->policy.allow_function_call;
  g.recording = a->policy.recording;
  g.recording_required =
      a->policy.recording_required && g.recording != protocol::RecordingLevel::kOff;
  g.masks_values = a->policy.masks_values;
  g.masks_version = a->policy.masks_version;
  if (const json* pol = field(answer, "policy"); pol != nullptr && pol->is_object()) {
    if (const json* cap = field(*pol, "recording_row_cap");
        cap != nullptr && cap->is_number_integer()) {
      g.recording_row_cap = static_cast<int>(std::clamp<int64_t>(cap->get<int64_t>(), 0, 1000000));
    }
  }
  g.rule_sets = a->policy.rule_sets;
  if (const json* b = field(answer, "budgets"); b != nullptr) {
    auto budgets = parse_budgets(*b);
    if (!budgets.is_ok()) return budgets.status();  // fail closed: the login is refused
    g.budgets = std::move(*budgets);
  }
  if (const json* t = field(answer, "ticket"); t != nullptr && t->is_string()) {
    g.ticket = t->get<std::string>();
  }
  g.host = a->upstream.host;
  g.port = a->upstream.port;
  g.unix_socket = a->upstream.unix_socket;
  g.database = a->upstream.database;
  g.role = a->upstream.role;
  g.tls_mode = a->upstream.tls_mode;
  g.ca_file = a->upstream.ca_file;
  if (g.role.empty() || g.database.empty() || (g.host.empty() && g.unix_socket.empty())) {
    return internal_error("control plane grant lacks upstream role, database or address");
  }
  g.pool_transaction = a->upstream.pool_mode == protocol::PoolMode::kTransaction;
  g.pool_size = std::max(1, a->upstream.pool_size);
  g.pool_wait_timeout_ms = std::max(1, a->upstream.pool_wait_timeout_ms);
  for (const auto& [k, v] : a->startup_parameters) g.startup_parameters.emplace_back(k, v);
  const json* pol = field(answer, "policy");
  const json* allowed = pol != nullptr ? field(*pol, "allowed_startup_settings") : nullptr;
  if (allowed != nullptr) {
    if (!allowed->is_array()) {
      return internal_error("control plane grant has a malformed allowed_startup_settings");
    }
    for (const json& e : *allowed) {
      if (!e.is_string()) {
        return internal_error("control plane grant has a malformed allowed_startup_settings");
      }
      g.allowed_startup_settings.push_back(e.get<std::string>());
    }
  } else {
    for (std::string_view d : default_startup_settings()) {
      g.allowed_startup_settings.emplace_back(d);
    }
  }
  return g;
}

Session::Session(Worker* worker, uint64_t id, int fd, size_t listener_index,
                 const sockaddr_storage& peer)
    : worker_(worker),
      id_(id),
      listener_index_(listener_index),
      peer_(peer),
      client_(fd),
      client_framer_(pw::Direction::kFrontend,
                     pw::FramerOptions{worker->runtime().config.limits.max_message_bytes,
                                       pw::kDefaultMaxStartupBytes}),
      upstream_framer_(pw::Direction::kBackend,
                       pw::FramerOptions{kMaxInspectedUpstream, pw::kDefaultMaxStartupBytes}) {}

Session::~Session() {
  if (!destroyed_) destroy("worker shutdown");
}

std::string Session::session_id_hex() const { return sid_hex_; }

void Session::start() {
  sid_ = random64();
  sid_hex_ = protocol::session_hex(sid_);
  peer_text_ = describe_peer(peer_, &peer_loopback_);
  nonce_ = protocol::session_hex(random64()) + protocol::session_hex(random64());
  nonce_sql_ = "pgwarden_denied_" + nonce_;
  auto& limits = worker_->runtime().config.limits;
  bump(worker_->counters().sessions_accepted);
  if (!worker_->loop().add(client_.fd(), EPOLLIN, &client_io_).is_ok()) {
    destroy("epoll registration failed");
    return;
  }
  client_registered_ = true;
  client_interest_ = EPOLLIN;
  client_readable_ = true;
  auth_timer_ = worker_->loop().add_timer(monotonic_ms() + limits.auth_timeout_ms, [this] {
    auth_timer_ = 0;
    if (destroyed_ || state_ == State::kReady || state_ == State::kClosing) return;
    login_failed("08006",
                 "pgwarden: login not completed within " +
                     std::to_string(worker_->runtime().config.limits.auth_timeout_ms) +
                     " ms (limits.auth_timeout_ms)",
                 "auth_timeout");
  });
  // The client's own part of the login (TLS handshake, startup packet, password) gets a
  // short deadline of its own: an idle or trickling connection gives its pending slot back.
  startup_timer_ = worker_->loop().add_timer(monotonic_ms() + limits.startup_timeout_ms, [this] {
    startup_timer_ = 0;
    if (destroyed_ || !pending_login_ || state_ == State::kClosing) return;
    bump(worker_->counters().logins_startup_timeout);
    leave_pending();
    if (state_ == State::kSslAccept || state_ == State::kTlsHandshake) {
      destroy("TLS handshake not completed within limits.startup_timeout_ms");
      return;
    }
    send_fatal("08006", "pgwarden: login not completed within " +
                            std::to_string(worker_->runtime().config.limits.startup_timeout_ms) +
                            " ms (limits.startup_timeout_ms): send the startup packet and the "
                            "token promptly");
    close_after_flush();
  });
  pump();
}

void Session::leave_pending() {
  if (!pending_login_) return;
  pending_login_ = false;
  worker_->pending_done(id_);
  if (startup_timer_ != 0) worker_->loop().cancel_timer(startup_timer_);
  startup_timer_ = 0;
}

bool Session::take_connection_slot() {
  if (counted_) return true;
  int max = worker_->runtime().config.limits.max_connections;
  if (worker_->shared().connections.fetch_add(1) + 1 > max) {
    worker_->shared().connections.fetch_sub(1);
    return false;
  }
  counted_ = true;
  return true;
}

void Session::evict_pending(std::string_view message) {
  if (destroyed_ || state_ == State::kClosing) return;
  pending_login_ = false;  // the budget already let go of it
  if (startup_timer_ != 0) worker_->loop().cancel_timer(startup_timer_);
  startup_timer_ = 0;
  if (state_ == State::kSslAccept || state_ == State::kTlsHandshake) {
    destroy("evicted from the pending-login budget during the TLS handshake");
    return;
  }
  send_fatal("53300", message);
  close_after_flush();
}

// ---------------------------------------------------------------------------------------------
// I/O

void Session::on_client_io(uint32_t events) {
  if (destroyed_) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) client_readable_ = true;
  if ((events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLIN)) {
    destroy("client connection lost");
    return;
  }
  pump();
}

void Session::on_upstream_io(uint32_t events) {
  if (destroyed_) return;
  bump(worker_->counters().upstream_wakeups);
  if (state_ == State::kUpstreamConnect) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(upstream_.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      login_failed("08006",
                   "pgwarden: cannot reach the upstream database of target \"" + target_ +
                       "\": " + strerror(err),
                   "upstream_unreachable");
      return;
    }
    on_upstream_connected();
    if (destroyed_) return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) upstream_readable_ = true;
  if (events & (EPOLLHUP | EPOLLERR)) upstream_hup_ = true;
  pump();
}

void Session::catch_up() {
  if (destroyed_) return;
  client_readable_ = true;
  pump();
}

void Session::pump() {
  if (destroyed_) return;
  // A state change (TLS up, login complete, a decision arrived) can make bytes that are
  // already buffered processable: go round again rather than wait for an event that may
  // never come.
  for (int round = 0; round < 4; ++round) {
    State before = state_;
    bool waiting_before = waiting_cp_;
    read_client();
    if (destroyed_) return;
    process_client_input();
    if (destroyed_) return;
    bool held_before = waiting_results_;
    read_upstream();
    if (destroyed_) return;
    if (waiting_results_ && !results_->results_pending()) waiting_results_ = false;
    if (state_ == before && waiting_cp_ == waiting_before && waiting_results_ == held_before) {
      break;
    }
  }
  flush_upstream();
  if (destroyed_) return;
  // Transaction pooling: a connection whose transaction ended goes back to the pool.
  if (server_) maybe_release_server();
  flush_client();
  if (destroyed_) return;
  update_interest();
}

bool Session::client_read_allowed() const {
  if (state_ == State::kClosing || client_eof_) return false;
  if (up_out_pending() > worker_->runtime().config.limits.output_buffer_bytes) return false;
  size_t pending = client_in_pending();
  if (waiting_cp_) return pending < kClientInSoftCap;
  return pending < kClientInSoftCap || pending < client_need_;
}

bool Session::upstream_read_allowed() const {
  if (!upstream_.open() || state_ == State::kClosing) return false;
  if (state_ == State::kUpstreamConnect || state_ == State::kUpstreamTls) return false;
  if (mask_plan_pending_) return false;  // holding the session's results for a mask plan
  return client_out_pending() <= worker_->runtime().config.limits.output_buffer_bytes;
}

void Session::read_client() {
  if (state_ == State::kTlsHandshake) {
    IoStatus st = client_.handshake();
    if (st == IoStatus::kWouldBlock) {
      // What OpenSSL holds now is an incomplete record (half a ClientHello): only the socket
      // can complete it. Still "readable", update_interest() would come straight back for
      // those bytes, forever, and the worker would serve no one else.
      client_readable_ = false;
      return;
    }
    if (st != IoStatus::kOk) {
      spdlog::debug("session {}: client TLS handshake failed: {}", session_id_hex(),
                    client_.error());
      destroy("client TLS handshake failed");
      return;
    }
    bump(worker_->counters().sessions_tls);
    if (pending_login_) worker_->pending_progress(id_);
    state_ = State::kStartup;
    client_readable_ = true;
  }
  size_t budget = kReadBudget;
  while (client_readable_ && client_read_allowed() && budget > 0) {
    size_t before = client_in_.size();
    bool drained = false;
    IoStatus st = client_.read(client_in_, kReadChunk, &drained);
    if (st == IoStatus::kOk) {
      budget -= std::min(budget, client_in_.size() - before);
      if (drained) client_readable_ = false;
      continue;
    }
    if (st == IoStatus::kWouldBlock) {
      client_readable_ = false;
      break;
    }
    client_eof_ = true;
    destroy(st == IoStatus::kClosed ? "client closed the connection" : "client read error");
    return;
  }
}

void Session::read_upstream() {
  if (state_ == State::kUpstreamTls) {
    IoStatus st = upstream_.handshake();
    if (st == IoStatus::kWouldBlock) return;
    if (st != IoStatus::kOk) {
      login_failed("08006",
                   "pgwarden: TLS with the upstream database of target \"" + target_ +
                       "\" failed: " + upstream_.error(),
                   "upstream_tls_failed");
      return;
    }
    send_upstream_startup();
    if (destroyed_) return;
    // The handshake may have read ahead past its last record (it can end on EPOLLOUT).
    upstream_readable_ = true;
  }
  bool eof = false;
  size_t budget = kReadBudget;
  while (upstream_readable_ && (upstream_read_allowed() || upstream_hup_) && budget > 0) {
    if (state_ == State::kUpstreamSsl) {
      // The one-byte answer to SSLRequest: read exactly one byte, so no bytes that belong to
      // the TLS handshake are consumed as plaintext.
      bool drained = false;
      IoStatus st = upstream_.read(up_in_, 1, &drained);
      if (st == IoStatus::kWouldBlock) {
        upstream_readable_ = false;
        return;
      }
      if (st != IoStatus::kOk) {
        eof = true;
        break;
      }
      char answer = up_in_.back();
      up_in_.clear();
      if (answer != 'S') {
        login_failed("08004",
                     "pgwarden: the upstream database of target \"" + target_ +
                         "\" does not accept TLS, which its tls_mode requires",
                     "upstream_tls_refused");
        return;
      }
      bool verify = grant_.tls_mode == protocol::UpstreamTlsMode::kVerifyFull;
      auto ctx = worker_->upstream_tls(verify, grant_.ca_file);
      Status s =
          ctx.is_ok() ? upstream_.start_tls(*ctx, false, verify ? grant_.host : "") : ctx.status();
      if (!s.is_ok()) {
        login_failed("08006", "pgwarden: upstream TLS setup failed: " + s.message(),
                     "upstream_tls_failed");
        return;
      }
      state_ = State::kUpstreamTls;
      read_upstream();
      return;
    }
    size_t before = up_in_.size();
    bool drained = false;
    IoStatus st = upstream_.read(up_in_, kReadChunk, &drained);
    if (st == IoStatus::kOk) {
      budget -= std::min(budget, up_in_.size() - before);
      if (drained) upstream_readable_ = false;
      continue;
    }
    if (st == IoStatus::kWouldBlock) {
      upstream_readable_ = false;
      break;
    }
    eof = true;
    break;
  }
  if (state_ == State::kReady) {
    process_upstream_stream();
  } else if (state_ == State::kUpstreamAuth || state_ == State::kUpstreamStartup) {
    process_upstream_login();
  }
  if (destroyed_) return;
  if (eof) {
    if (state_ == State::kReady) {
      static constexpr std::string_view kClosed =
          "pgwarden: the upstream database closed the connection";
      // Statements in flight were cut: their completion records say so before the session's
      // error record (never a statement recorded as completed that did not).
      if (results_) results_->end_units_on_upstream_loss("08006", kClosed, monotonic_ms());
      emit_event({{"kind", "error"}, {"sqlstate", "08006"}, {"code", "upstream_closed"}});
      send_fatal("08006", kClosed);
      close_after_flush();
    } else if (state_ != State::kClosing) {
      // The upstream's last words may still be unread (e.g. its FATAL for a startup setting
      // arrived with AuthenticationOk while the SCRAM verification was at cp).
      if (upstream_login_last_error()) return;
      login_failed("08006",
                   "pgwarden: the upstream database of target \"" + target_ +
                       "\" closed the connection during login",
                   "upstream_closed");
    }
  }
}

void Session::flush_client() {
  if (state_ == State::kTlsHandshake) return;
  while (client_out_pending() > 0) {
    size_t n = 0;
    IoStatus st = client_.write(
        std::string_view(client_out_).substr(client_out_off_, client_out_pending()), &n);
    if (st == IoStatus::kOk) {
      client_out_off_ += n;
      continue;
    }
    if (st == IoStatus::kWouldBlock) break;
    destroy("client write failed");
    return;
  }
  if (client_out_off_ == client_out_.size()) {
    client_out_.clear();
    client_out_off_ = 0;
    if (state_ == State::kClosing) {
      destroy("closed");
      return;
    }
  } else if (client_out_off_ > (256u << 10)) {
    client_out_.erase(0, client_out_off_);
    client_out_off_ = 0;
  }
}

bool Session::upstream_output_held() const {
  return awaiting_record_ && up_out_pending() < kDeferredUpstreamCap;
}

void Session::flush_upstream() {
  if (!upstream_.open() || state_ == State::kUpstreamConnect || state_ == State::kUpstreamTls) {
    return;
  }
  if (upstream_output_held()) return;
  while (up_out_pending() > 0) {
    size_t n = 0;
    IoStatus st =
        upstream_.write(std::string_view(up_out_).substr(up_out_off_, up_out_pending()), &n);
    if (st == IoStatus::kOk) {
      bump(worker_->counters().upstream_sends);
      up_out_off_ += n;
      continue;
    }
    if (st == IoStatus::kWouldBlock) break;
    // The read side reports the loss with the upstream's own last words, if any.
    upstream_readable_ = true;
    upstream_hup_ = true;
    break;
  }
  if (up_out_off_ == up_out_.size()) {
    up_out_.clear();
    up_out_off_ = 0;
  } else if (up_out_off_ > (256u << 10)) {
    up_out_.erase(0, up_out_off_);
    up_out_off_ = 0;
  }
}

void Session::update_interest() {
  if (destroyed_) return;
  if (client_registered_) {
    uint32_t want = 0;
    if (state_ == State::kTlsHandshake) {
      want = client_.handshake_wants_write() ? EPOLLOUT : EPOLLIN;
    } else {
      if (client_read_allowed() || client_.wants_read_for_write()) want |= EPOLLIN;
      if (client_out_pending() > 0 || client_.wants_write_for_read()) want |= EPOLLOUT;
    }
    if (want != client_interest_) {
      client_interest_ = want;
      (void)worker_->loop().modify(client_.fd(), want, &client_io_);
    }
  }
  if (upstream_registered_) {
    uint32_t want = 0;
    if (state_ == State::kUpstreamConnect) {
      want = EPOLLOUT;
    } else if (state_ == State::kUpstreamTls) {
      want = upstream_.handshake_wants_write() ? EPOLLOUT : EPOLLIN;
    } else {
      if (upstream_read_allowed() || upstream_.wants_read_for_write()) {
        want |= EPOLLIN;
      } else if (upstream_interest_ & EPOLLIN) {
        bump(worker_->counters().backpressure_pauses);  // the client is not keeping up
      }
      // Held output must not ask for EPOLLOUT: the socket is writable, so a level-triggered
      // wake-up would come back at once, over and over, until the record is answered.
      if ((up_out_pending() > 0 && !upstream_output_held()) || upstream_.wants_write_for_read()) {
        want |= EPOLLOUT;
      }
    }
    if (want != upstream_interest_) {
      upstream_interest_ = want;
      (void)worker_->loop().modify(upstream_.fd(), want, &upstream_io_);
    }
  }
  // Bytes OpenSSL already holds never wake epoll: come back for them while the last read
  // left the side readable (after "want read" what OpenSSL holds is an incomplete record,
  // which waits for the socket).
  bool again =
      client_readable_ && client_read_allowed() && client_.tls() && client_.has_buffered_input();
  again |= upstream_readable_ && upstream_read_allowed() && upstream_.tls() &&
           upstream_.has_buffered_input();
  // Messages already buffered here and held back only because the other side's output was
  // full: no socket event will announce them once that output drained (often in this very
  // pump's final flush), so come back for them.
  const size_t cap = worker_->runtime().config.limits.output_buffer_bytes;
  again |= client_held_for_output_ && up_out_pending() <= cap;
  again |= upstream_held_for_output_ && client_out_pending() <= cap;
  if (again && !repump_scheduled_) {
    repump_scheduled_ = true;
    worker_->loop().defer([w = worker_, id = id_] {
      Session* s = w->find(id);
      if (s == nullptr) return;
      s->repump_scheduled_ = false;
      s->pump();
    });
  }
}

}  // namespace pgwarden::session
