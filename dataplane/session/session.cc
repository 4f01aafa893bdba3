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
#include "dataplane/session/worker.h"

namespace pgwarden::session {

namespace {

using nlohmann::json;
namespace pw = pgwarden::pgwire;

constexpr size_t kReadChunk = 32 * 1024;
constexpr size_t kReadBudget = 512 * 1024;  // per pump and side, for fairness
constexpr size_t kClientInSoftCap = 256 * 1024;
constexpr uint32_t kMaxInspectedUpstream = kMaxInspectedMessageBytes;
constexpr int64_t kCloseFlushMs = 2000;
// PostgreSQL's own cap on a client message (PQ_LARGE_MESSAGE_LIMIT): a streamed Bind or
// CopyData may be this long.
constexpr uint32_t kMaxStreamedMessageBytes = 0x3fffffff;

std::string hex64(uint64_t v) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t random64() {
  uint64_t v = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof(v));
  return v;
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

pw::Bytes bytes_of(const std::string& buf, size_t off) {
  return pw::Bytes(reinterpret_cast<const uint8_t*>(buf.data()) + off, buf.size() - off);
}

std::string describe_peer(const sockaddr_storage& ss, bool* loopback) {
  char host[INET6_ADDRSTRLEN] = {0};
  *loopback = false;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) {
    *loopback = true;
    return "unix";
  }
  return "unknown";
}

const json* field(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

std::string str_field(const json& obj, const char* key, std::string def = {}) {
  const json* v = field(obj, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : def;
}

}  // namespace

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
  g.recording = a->policy.recording.empty() ? "full" : a->policy.recording;
  g.recording_required = g.recording != "off";
  if (const json* pol = field(answer, "policy"); pol != nullptr && pol->is_object()) {
    if (const json* req = field(*pol, "recording_required");
        req != nullptr && req->is_boolean() && !req->get<bool>()) {
      g.recording_required = false;
    }
    if (const json* cap = field(*pol, "recording_row_cap");
        cap != nullptr && cap->is_number_integer()) {
      g.recording_row_cap = static_cast<int>(std::clamp<int64_t>(cap->get<int64_t>(), 0, 1000000));
    }
  }
  g.rule_sets = a->policy.rule_sets;
  if (const json* t = field(answer, "ticket"); t != nullptr && t->is_string()) {
    g.ticket = t->get<std::string>();
  }
  g.host = a->upstream.host;
  g.port = a->upstream.port;
  g.unix_socket = a->upstream.unix_socket;
  g.database = a->upstream.database;
  g.role = a->upstream.role;
  g.tls_mode = a->upstream.tls_mode.empty() ? "disable" : a->upstream.tls_mode;
  g.ca_file = a->upstream.ca_file;
  if (g.role.empty() || g.database.empty() || (g.host.empty() && g.unix_socket.empty())) {
    return internal_error("control plane grant lacks upstream role, database or address");
  }
  if (g.tls_mode != "disable" && g.tls_mode != "require" && g.tls_mode != "verify-full") {
    return internal_error("control plane grant has unknown tls_mode " + g.tls_mode);
  }
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
  sid_hex_ = hex64(sid_);
  peer_text_ = describe_peer(peer_, &peer_loopback_);
  nonce_ = hex64(random64()) + hex64(random64());
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
    if (st == IoStatus::kWouldBlock) return;
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
      bool verify = grant_.tls_mode == "verify-full";
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
      emit_event({{"kind", "error"}, {"sqlstate", "08006"}, {"code", "upstream_closed"}});
      send_fatal("08006", "pgwarden: the upstream database closed the connection");
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

void Session::flush_upstream() {
  if (!upstream_.open() || state_ == State::kUpstreamConnect || state_ == State::kUpstreamTls) {
    return;
  }
  while (up_out_pending() > 0) {
    size_t n = 0;
    IoStatus st =
        upstream_.write(std::string_view(up_out_).substr(up_out_off_, up_out_pending()), &n);
    if (st == IoStatus::kOk) {
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
      if (up_out_pending() > 0 || upstream_.wants_write_for_read()) want |= EPOLLOUT;
    }
    if (want != upstream_interest_) {
      upstream_interest_ = want;
      (void)worker_->loop().modify(upstream_.fd(), want, &upstream_io_);
    }
  }
  // Bytes OpenSSL already decrypted never wake epoll: come back for them.
  bool again = (client_readable_ || client_.has_buffered_input()) && client_read_allowed() &&
               client_.tls() && client_.has_buffered_input();
  again |= upstream_read_allowed() && upstream_.tls() && upstream_.has_buffered_input();
  // Messages already buffered here and held back only because the other side's output was
  // full: no socket event will announce them once that output drained (often in this very
  // pump's final flush), so come back for them.
  const size_t cap = worker_->runtime().config.limits.output_buffer_bytes;
  again |= client_held_for_output_ && up_out_pending() <= cap;
  again |= upstream_held_for_output_ && client_out_pending() <= cap;
  if (again && !repump_scheduled_) {
    repump_scheduled_ = true;
    client_readable_ = client_readable_ || client_.has_buffered_input();
    upstream_readable_ = upstream_readable_ || upstream_.has_buffered_input();
    worker_->loop().defer([w = worker_, id = id_] {
      Session* s = w->find(id);
      if (s == nullptr) return;
      s->repump_scheduled_ = false;
      s->pump();
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Client messages

void Session::process_client_input() {
  client_held_for_output_ = false;
  for (;;) {
    if (destroyed_ || waiting_cp_) break;
    if (state_ != State::kStartup && state_ != State::kAwaitPassword && state_ != State::kReady) {
      break;
    }
    if (state_ == State::kReady &&
        up_out_pending() > worker_->runtime().config.limits.output_buffer_bytes) {
      client_held_for_output_ = client_in_pending() > 0;  // resumed once the upstream took it
      break;
    }
    if (client_in_pending() == 0) break;
    if (client_skip_ > 0) {
      size_t n = std::min(client_skip_, client_in_pending());
      client_in_off_ += n;
      client_skip_ -= n;
      continue;
    }
    if (client_pass_remaining_ > 0) {
      relay_client_stream();
      continue;
    }
    if (state_ == State::kReady && client_in_pending() >= 5) {
      const auto* h = reinterpret_cast<const uint8_t*>(client_in_.data() + client_in_off_);
      uint32_t len = pw::load_be32(h + 1);
      if (len > worker_->runtime().config.limits.max_message_bytes &&
          (h[0] == 'd' || h[0] == 'B') && len <= kMaxStreamedMessageBytes) {
        start_client_stream(h[0], len);
        continue;
      }
      if (len > worker_->runtime().config.limits.max_message_bytes &&
          refuse_oversized_message(h[0], len)) {
        continue;
      }
    }
    pw::FrameResult r = client_framer_.next(bytes_of(client_in_, client_in_off_));
    if (r.status == pw::FrameStatus::kNeedMore) {
      client_need_ = r.need;
      break;
    }
    client_need_ = 0;
    if (r.status == pw::FrameStatus::kError) {
      bump(worker_->counters().protocol_errors);
      emit_event({{"kind", "error"},
                  {"sqlstate", std::string(r.error.sqlstate())},
                  {"code", std::string(r.error.name())}});
      pw::append_frame_error_response(client_out_, r.error);
      close_after_flush();
      break;
    }
    bool consumed = false;
    switch (state_) {
      case State::kStartup:
        consumed = handle_startup_packet(r.message);
        break;
      case State::kAwaitPassword:
        consumed = handle_login_message(r.message);
        break;
      default:
        consumed = handle_statement_message(r.message);
        break;
    }
    if (!consumed || destroyed_) break;
    client_in_off_ += r.consumed;
  }
  if (destroyed_) return;
  if (client_in_off_ == client_in_.size()) {
    client_in_.clear();
    client_in_off_ = 0;
  } else if (client_in_off_ > (64u << 10)) {
    client_in_.erase(0, client_in_off_);
    client_in_off_ = 0;
  }
}

bool Session::handle_startup_packet(const pw::Message& m) {
  if (pending_login_) worker_->pending_progress(id_);  // a complete startup-phase message
  const Runtime& rt = worker_->runtime();
  switch (m.startup) {
    case pw::StartupKind::kSslRequest: {
      SSL_CTX* ctx = rt.listener_tls[listener_index_].get();
      if (client_.tls() || ctx == nullptr) {
        client_out_.push_back('N');
        return true;
      }
      if (client_in_pending() != m.bytes.size()) {
        // Plaintext bytes after SSLRequest would be processed as if they came through TLS.
        bump(worker_->counters().protocol_errors);
        send_fatal("08P01", "pgwarden: unexpected data after SSLRequest");
        close_after_flush();
        return false;
      }
      client_in_off_ += m.bytes.size();
      // One byte on a fresh socket: written synchronously, so the TLS handshake that follows
      // never interleaves with buffered plaintext.
      flush_client();
      if (destroyed_) return false;
      char s = 'S';
      if (client_out_pending() != 0 || ::send(client_.fd(), &s, 1, MSG_NOSIGNAL) != 1) {
        destroy("cannot answer SSLRequest");
        return false;
      }
      Status st = client_.start_tls(ctx, true, "");
      if (!st.is_ok()) {
        destroy("TLS setup failed");
        return false;
      }
      state_ = State::kTlsHandshake;
      client_readable_ = true;
      return false;  // bytes already consumed above; pump() drives the handshake
    }
    case pw::StartupKind::kGssEncRequest:
      client_out_.push_back('N');
      return true;
    case pw::StartupKind::kCancel:
      handle_cancel_request(m);
      destroy("cancel request handled");
      return false;
    case pw::StartupKind::kStartupMessage:
      break;
    default:
      send_fatal("08P01", "pgwarden: invalid startup packet");
      close_after_flush();
      return false;
  }
  pw::StartupMessage sm;
  pw::FrameError fe = pw::parse(m.body, &sm);
  if (!fe.ok()) {
    bump(worker_->counters().protocol_errors);
    pw::append_frame_error_response(client_out_, fe);
    close_after_flush();
    return false;
  }
  std::vector<std::string_view> unrecognized;
  for (const auto& p : sm.parameters) {
    if (p.name == "user") {
      user_ = std::string(p.value);
    } else if (p.name == "database") {
      target_ = std::string(p.value);
    } else if (p.name == "replication") {
      if (p.value != "false" && p.value != "0" && p.value != "off" && p.value != "no") {
        send_fatal("0A000", "pgwarden: replication connections are not supported");
        close_after_flush();
        return false;
      }
    } else if (p.name.substr(0, 4) == "_pq_") {
      unrecognized.push_back(p.name);
    } else if (p.name == "options") {
      // Checked with the other settings once the policy is known (after authentication).
      auto opts = parse_startup_options(p.value);
      if (opts.is_ok()) {
        for (auto& s : *opts) client_settings_.push_back(std::move(s));
      } else if (startup_options_error_.empty()) {
        startup_options_error_ = opts.status().message();
      }
    } else {
      client_settings_.push_back(StartupSetting{std::string(p.name), std::string(p.value), false});
    }
  }
  if ((sm.protocol_version & 0xffff) != 0 || !unrecognized.empty()) {
    pw::append_negotiate_protocol_version(client_out_, 0, unrecognized);
  }
  if (user_.empty()) {
    send_fatal("28000", "pgwarden: no user name in the startup packet");
    close_after_flush();
    return false;
  }
  if (target_.empty()) target_ = user_;
  if (worker_->draining()) {
    send_fatal("57P03", "pgwarden: the gateway is shutting down; connect again shortly");
    close_after_flush();
    return false;
  }
  if (worker_->shared().connections.load() >= rt.config.limits.max_connections) {
    // Early, before the client sends its token; the slot itself is taken at the password.
    bump(worker_->counters().sessions_refused_limit);
    send_fatal("53300", "pgwarden: too many connections (limits.max_connections = " +
                            std::to_string(rt.config.limits.max_connections) + ")");
    close_after_flush();
    return false;
  }
  bool loopback_ok = rt.config.listeners[listener_index_].loopback_only && peer_loopback_;
  if (!client_.tls() && !loopback_ok) {
    login_failed("28000", "pgwarden: the token must be sent over TLS; connect with sslmode=require",
                 "tls_required");
    return false;
  }
  if (!worker_->cp().ready()) {
    login_failed("08006",
                 "pgwarden: the control plane is unreachable; new logins are refused until it "
                 "is back",
                 "controlplane_unavailable");
    return false;
  }
  pw::append_authentication_cleartext_password(client_out_);
  state_ = State::kAwaitPassword;
  return true;
}

bool Session::handle_login_message(const pw::Message& m) {
  if (m.type != 'p') {
    bump(worker_->counters().protocol_errors);
    send_fatal("08P01", "pgwarden: expected a password message carrying the token");
    close_after_flush();
    return false;
  }
  pw::PasswordMessage pm;
  if (!pw::parse(m.body, &pm).ok()) {
    send_fatal("08P01", "pgwarden: malformed password message");
    close_after_flush();
    return false;
  }
  leave_pending();  // the client has done its part of the login
  if (pm.password.empty()) {
    login_failed("28P01", "pgwarden: empty token", "empty_token");
    return false;
  }
  if (!take_connection_slot()) {
    bump(worker_->counters().sessions_refused_limit);
    OPENSSL_cleanse(const_cast<uint8_t*>(m.bytes.data()), m.bytes.size());
    send_fatal("53300", "pgwarden: too many connections (limits.max_connections = " +
                            std::to_string(worker_->runtime().config.limits.max_connections) + ")");
    close_after_flush();
    return false;
  }
  json req = {{"session_id", session_id_hex()},
              {"token", std::string(pm.password)},
              {"user", user_},
              {"target", target_},
              {"client_addr", peer_text_},
              {"tls", client_.tls()}};
  // The token is a secret: wipe it from the input buffer now that the request owns a copy.
  OPENSSL_cleanse(const_cast<uint8_t*>(m.bytes.data()), m.bytes.size());
  state_ = State::kAuthenticating;
  uint64_t seq = ++escalation_seq_;
  // A login during a short cp outage (a restart) waits for the reconnection like a statement
  // does, bounded by limits.cp_unavailable_wait_ms (and the auth timeout), then fails closed.
  worker_->cp().request(
      "authenticate", std::move(req), worker_->runtime().config.limits.escalation_timeout_ms,
      [w = worker_, id = id_, seq](Result<json> r) {
        Session* s = w->find(id);
        if (s == nullptr || s->escalation_seq_ != seq) return;
        s->on_authenticated(std::move(r));
      },
      worker_->runtime().config.limits.cp_unavailable_wait_ms);
  return true;
}

void Session::handle_cancel_request(const pw::Message& m) {
  pw::CancelRequest cr;
  if (!pw::parse(m.body, &cr).ok()) return;
  bump(worker_->counters().cancel_requests);
  auto target = worker_->shared().cancels.find(cr.process_id, cr.secret_key);
  if (target) send_cancel_async(std::move(*target));
}

bool Session::handle_statement_message(const pw::Message& m) {
  last_client_activity_ms_ = monotonic_ms();
  if (skip_until_sync_ && m.type != 'S') return true;
  switch (m.type) {
    case 'Q': {
      pw::Query q;
      if (!pw::parse(m.body, &q).ok()) break;
      return check_statement(m, q.sql);
    }
    case 'P': {
      pw::Parse p;
      if (!pw::parse(m.body, &p).ok()) break;
      return check_statement(m, p.query);
    }
    case 'F':
      if (grant_.allow_function_call) {
        return check_execution(m);
      } else {
        apply_denial(m, "42501",
                     "pgwarden: FunctionCall messages are not allowed by policy \"" +
                         grant_.policy_name + "\"",
                     "function_call");
      }
      return true;
    case 'S':
      skip_until_sync_ = false;
      forward(m);
      return true;
    case 'X':
      forward(m);
      flush_upstream();
      destroy("client terminated");
      return false;
    case 'E':
      return check_execution(m);
    case 'B':
    case 'D':
    case 'C':
    case 'H':
    case 'd':
    case 'c':
    case 'f':
      forward(m);
      return true;
    default:
      break;
  }
  bump(worker_->counters().protocol_errors);
  send_fatal("08P01", std::string("pgwarden: unexpected or malformed message type '") +
                          static_cast<char>(m.type) + "'");
  close_after_flush();
  return false;
}

bool Session::refuse_oversized_message(uint8_t type, uint32_t length) {
  const bool simple = type == 'Q' || type == 'F';
  const bool extended =
      type == 'P' || type == 'B' || type == 'D' || type == 'E' || type == 'C' || type == 'H';
  if (!simple && !extended) return false;
  last_client_activity_ms_ = monotonic_ms();
  client_skip_ = 1 + static_cast<size_t>(length);
  // After an error in the extended protocol everything up to Sync is discarded anyway (as
  // handle_statement_message does for messages that fit).
  if (skip_until_sync_) return true;
  bump(worker_->counters().protocol_errors);
  const uint32_t limit = worker_->runtime().config.limits.max_message_bytes;
  std::string message = "pgwarden: message not run: the ";
  message += type == 'Q' || type == 'P' ? "statement text" : "protocol message";
  message += " (" + std::to_string(length) + " bytes) is larger than the gateway accepts (" +
             std::to_string(limit) + " bytes, listeners.dataplane.max_message_bytes)";
  emit_event({{"kind", "error"},
              {"sqlstate", "54000"},
              {"code", "message_too_large"},
              {"message", message}});
  // The denial machinery keeps the protocol in step: a nonce Query (simple protocol) or a
  // nonce Parse that makes the upstream skip to Sync (extended protocol).
  pw::Message stand_in;
  stand_in.type = simple ? 'Q' : 'P';
  apply_denial(stand_in, "54000", message, "max_message_bytes");
  return true;
}

void Session::start_client_stream(uint8_t type, uint32_t length) {
  last_client_activity_ms_ = monotonic_ms();
  if (skip_until_sync_) {
    // After an error everything up to Sync is discarded, as for messages that fit.
    client_skip_ = 1 + static_cast<size_t>(length);
    return;
  }
  bump(worker_->counters().messages_streamed);
  up_out_.append(client_in_, client_in_off_, 5);
  client_in_off_ += 5;
  client_pass_remaining_ = length - 4;
  client_pass_bind_ = type == 'B';
  if (client_pass_bind_) bind_stream_.start();
  if (client_pass_remaining_ == 0) finish_client_stream();
}

void Session::relay_client_stream() {
  last_client_activity_ms_ = monotonic_ms();  // a long upload is not idleness
  size_t n = std::min(client_pass_remaining_, client_in_pending());
  if (client_pass_bind_) bind_stream_.feed(std::string_view(client_in_).substr(client_in_off_, n));
  up_out_.append(client_in_, client_in_off_, n);
  client_in_off_ += n;
  client_pass_remaining_ -= n;
  if (client_pass_remaining_ == 0) finish_client_stream();
}

void Session::finish_client_stream() {
  if (!std::exchange(client_pass_bind_, false)) return;
  // What forward() notes for a Bind that fits: the portal's statement (result masking) and,
  // for write-ahead recording, its parameters (large ones as prefix + length + SHA-256).
  const bool ok = bind_stream_.ok();
  if (results_ && ok) results_->on_bind_forwarded(bind_stream_.portal(), bind_stream_.statement());
  if (grant_.recording_required) {
    if (ok) {
      ledger_.on_bind_streamed(bind_stream_.portal(), bind_stream_.statement(),
                               bind_stream_.take_params(), bind_stream_.params_summarised());
    } else {
      // Malformed: PostgreSQL refuses it; the ledger forgets the portal so a later Execute of
      // that name needs a record of its own.
      ledger_.forget_portal(bind_stream_.portal());
    }
  }
}

void Session::forward(const pw::Message& m, const Decision* d) {
  if (results_) note_forwarded(m);
  if (grant_.recording_required) {
    ledger_.on_forwarded(m, d != nullptr && d->recorded, d != nullptr ? d->rule : "");
  }
  up_out_.append(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size());
  if (m.type == 'Q' || m.type == 'S' || m.type == 'F') ++cycles_sent_;
}

bool Session::check_statement(const pw::Message& m, std::string_view sql) {
  Counters& c = worker_->counters();
  if (decision_) {
    std::unique_ptr<Decision> d = std::move(decision_);
    if (d->allow) {
      bump(c.statements_allowed);
      forward(m, d.get());
    } else {
      apply_denial(m, d->sqlstate, d->message, d->rule, d->position);
    }
    return true;
  }
  if (hold_for_results()) return false;
  bump(c.statements_checked);
  ++statements_;
  Screen& screen = worker_->screen();
  if (rules_generation_ != screen.generation()) {
    // A reload landed: pick up the recompiled rules — its policy's current rule sets, else
    // the list it was admitted with; if neither is compiled any more it keeps the set it has
    // (never none).
    auto set = screen.resolve_for(grant_.policy_name, grant_.rule_sets);
    if (set.is_ok()) rule_set_ = std::move(*set);
    rules_generation_ = screen.generation();
    if (results_) results_->set_rule_set(rule_set_);
  }
  uint64_t screen_start_ns = metrics::monotonic_ns();
  screen.screen(sql, rule_set_.get(), &screen_);
  worker_->metrics().prescreen.observe_ns(metrics::monotonic_ns() - screen_start_ns);
  if (const PrescreenMatch* deny = screen_.first("deny")) {
    std::string msg = "pgwarden: statement denied by rule " + deny->rule;
    if (!deny->message.empty()) msg += ": " + deny->message;
    emit_statement(sql, "deny", deny->rule, "prescreen");
    apply_denial(m, "42501", msg, deny->rule);
    return true;
  }
  if (screen_.first("approve") != nullptr) {
    // An approve rule adds a reviewer to what the policy allows; it must not replace the
    // policy (deny > approve > allow). cp weighs the match (it is in `prescreen`) against the
    // policy and answers approve or deny; the verdict cache is skipped because a cached allow
    // would run the statement without the reviewer.
    escalate_analyse(std::string(sql), screen_);
    return false;
  }
  VerdictKey key{screen_.shape_key, grant_.policy_hash, grant_.policy_version};
  if (const CachedVerdict* v = worker_->cache().find(key)) {
    bump(c.verdict_cache_hits);
    if (v->allow && grant_.recording_required) {
      record_then_resume(sql, Decision{.allow = true, .rule = v->rule}, "cache");
      return false;
    }
    if (v->allow) {
      bump(c.statements_allowed);
      emit_statement(sql, "allow", v->rule, "cache");
      forward(m);
    } else {
      emit_statement(sql, "deny", v->rule, "cache");
      apply_denial(m, "42501", v->message, v->rule);
    }
    return true;
  }
  bump(c.verdict_cache_misses);
  escalate_analyse(std::string(sql), screen_);
  return false;
}

bool Session::hold_for_results() {
  // "Results are recorded as the client saw them, in order, before the session's next
  // statement is forwarded": the next statement's record travels after the earlier results'
  // events on the same ordered channel, so it is enough that those events were sent — which
  // happens as the results arrive. Pipelining clients wait here; one-at-a-time clients never do.
  if (!grant_.recording_required || !results_ || !results_->results_pending()) return false;
  if (!waiting_results_) {
    waiting_results_ = true;
    // Within an unsynced pipeline PostgreSQL keeps the earlier results buffered until a Flush
    // or Sync: ask for them (a Flush has no reply of its own).
    pw::append_flush(up_out_);
  }
  return true;
}

bool Session::check_execution(const pw::Message& m) {
  if (decision_) {
    std::unique_ptr<Decision> d = std::move(decision_);
    if (d->allow) {
      forward(m, d.get());
    } else {
      apply_denial(m, d->sqlstate, d->message, d->rule, d->position);
    }
    return true;
  }
  if (!grant_.recording_required) {
    forward(m);
    return true;
  }
  protocol::StatementFields rec;
  rec.verdict = protocol::Verdict::kAllow;
  Decision d{.allow = true};
  std::string sql, params;
  if (m.type == 'F' && hold_for_results()) return false;
  if (m.type == 'E') {
    pw::Execute e;
    const ExecutionLedger::Portal* portal = nullptr;
    if (!pw::parse(m.body, &e).ok() || (portal = ledger_.uncovered(e.portal)) == nullptr) {
      forward(m);  // covered by its Parse's record (or malformed: PostgreSQL answers it)
      return true;
    }
    if (hold_for_results()) return false;
    d.rule = portal->rule;
    rec.sql = portal->sql;
    rec.portal = e.portal;
    if (!portal->params.is_null()) {
      params = portal->params.dump(-1, ' ', false, json::error_handler_t::replace);
      rec.params_json = params;
    }
    rec.params_truncated = portal->truncated;
    rec.source = protocol::DecisionSource::kExecute;
  } else {
    pw::FunctionCall f;
    if (!pw::parse(m.body, &f).ok()) {
      forward(m);
      return true;
    }
    d.rule = "allow_function_call";
    sql = "-- FunctionCall message, function oid " + std::to_string(f.function_oid);
    rec.sql = sql;
    rec.source = protocol::DecisionSource::kFunctionCall;
  }
  rec.rule = d.rule;
  rec.ts_ms = unix_ms();
  std::string payload;
  rec.encode(payload);
  waiting_cp_ = true;
  send_record(std::move(payload), std::move(d));
  return false;
}

void Session::apply_denial(const pw::Message& m, const std::string& sqlstate,
                           const std::string& message, const std::string& rule, int position) {
  bump(worker_->counters().statements_denied);
  Rewrite r;
  r.cycle = cycles_sent_ + 1;
  r.sqlstate = sqlstate;
  r.message = message;
  r.rule = rule;
  r.position = position;
  if (m.type == 'P' || m.type == 'E') {
    // Extended protocol: a nonce Parse fails in its place and the server skips to Sync.
    pw::append_parse(up_out_, "pgwarden_denied_" + nonce_, nonce_sql_);
    skip_until_sync_ = true;
  } else {
    pw::append_query(up_out_, nonce_sql_);
    ++cycles_sent_;
  }
  rewrites_.push_back(std::move(r));
}

void Session::escalate_analyse(std::string sql, const ScreenResult& screen) {
  bump(worker_->counters().statements_escalated);
  json prescreen = json::array();
  for (const auto& mt : screen.matches) {
    prescreen.push_back({{"rule", mt.rule}, {"action", mt.action}});
  }
  waiting_cp_ = true;
  uint64_t seq = ++escalation_seq_;
  uint64_t shape = screen.shape_key;
  const PrescreenMatch* approve = screen.first("approve");
  PrescreenMatch approve_match = approve != nullptr ? *approve : PrescreenMatch{};
  json req = {{"session_id", session_id_hex()},
              {"sql", sql},
              {"shape_key", hex64(shape)},
              {"prescreen", std::move(prescreen)}};
  worker_->cp().request(
      "analyse", std::move(req), worker_->runtime().config.limits.escalation_timeout_ms,
      [w = worker_, id = id_, seq, shape, sql = std::move(sql),
       approve_match = std::move(approve_match),
       t0 = metrics::monotonic_ns()](Result<json> r) mutable {
        w->metrics().analysis.observe_ns(metrics::monotonic_ns() - t0);
        Session* s = w->find(id);
        if (s == nullptr || s->escalation_seq_ != seq) return;
        s->on_analysed(std::move(r), std::move(sql), shape, approve_match);
      },
      worker_->runtime().config.limits.cp_unavailable_wait_ms);
}

void Session::on_analysed(Result<json> r, std::string sql, uint64_t shape,
                          const PrescreenMatch& approve_match) {
  if (!r.is_ok()) {
    const Status& st = r.status();
    Decision d;
    d.sqlstate = st.code() == StatusCode::kDeadlineExceeded || st.code() == StatusCode::kUnavailable
                     ? "08006"
                     : (st.sqlstate().empty() ? "42501" : st.sqlstate());
    d.message =
        "pgwarden: statement refused: it needs a control plane decision and " + st.message();
    d.rule = "escalation_failed";
    if (st.sqlstate() == "54000") {
      d.message = "pgwarden: statement not run: its text (" + std::to_string(sql.size()) +
                  " bytes) is too large to be checked: " + st.message();
      d.rule = "statement_too_large";
    }
    if (st.sqlstate() == "53000") {
      // cp's recorder cannot keep up and the policy requires recording: hold, do not run.
      if (hold_for_recording([this, sql] { escalate_analyse(sql, screen_); })) return;
      d = hold_timeout_decision(st.message());
    }
    emit_statement(sql, "deny", d.rule, "cp_error");
    return resume_with(std::move(d));
  }
  const json& a = *r;
  std::string verdict = str_field(a, "verdict", "deny");
  std::string rule = str_field(a, "rule");
  std::string message = str_field(a, "message");
  bool cacheable = false;
  if (const json* v = field(a, "cacheable"); v != nullptr && v->is_boolean()) {
    cacheable = v->get<bool>();
  }
  if (verdict == "approve") {
    // The reviewer sees the approve rule's own message when that rule asked for approval.
    if (!approve_match.rule.empty() && approve_match.rule == rule) message = approve_match.message;
    escalate_approval(std::move(sql), shape, rule, message);
    return;
  }
  Decision d;
  d.allow = verdict == "allow";
  d.rule = rule;
  d.sqlstate = "42501";
  d.message = "pgwarden: statement denied by rule " + (rule.empty() ? "default_deny" : rule);
  if (!message.empty()) d.message += ": " + message;
  if (std::string sqlstate = str_field(a, "sqlstate"); !d.allow && !sqlstate.empty()) {
    // An error PostgreSQL itself would have raised (a syntax error): its SQLSTATE, the parser's
    // message verbatim and the cursor position, as the server would have answered.
    d.sqlstate = sqlstate;
    d.message = message;
    if (const json* pos = field(a, "position"); pos != nullptr && pos->is_number_integer()) {
      d.position = static_cast<int>(std::clamp<int64_t>(pos->get<int64_t>(), 0, INT32_MAX));
    }
  }
  if (cacheable && (verdict == "allow" || verdict == "deny")) {
    worker_->cache().put(VerdictKey{shape, grant_.policy_hash, grant_.policy_version},
                         CachedVerdict{d.allow, d.rule, d.message});
  }
  if (d.allow && grant_.recording_required) return record_then_resume(sql, std::move(d), "cp");
  emit_statement(sql, d.allow ? "allow" : "deny", rule, "cp");
  resume_with(std::move(d));
}

void Session::escalate_approval(std::string sql, uint64_t shape_key, std::string rule,
                                std::string reason) {
  bump(worker_->counters().statements_held_approval);
  waiting_cp_ = true;
  uint64_t seq = ++escalation_seq_;
  json req = {{"session_id", session_id_hex()},
              {"sql", sql},
              {"shape_key", hex64(shape_key)},
              {"rule", rule},
              {"reason", reason}};
  worker_->cp().request(
      "approval", std::move(req), worker_->runtime().config.limits.approval_timeout_ms,
      [w = worker_, id = id_, seq, rule, sql = std::move(sql)](Result<json> r) {
        Session* s = w->find(id);
        if (s == nullptr || s->escalation_seq_ != seq) return;
        Decision d;
        d.rule = rule;
        d.sqlstate = "42501";
        if (!r.is_ok()) {
          d.message = "pgwarden: statement needs an approval (rule " + rule +
                      ") and none was given: " + r.status().message();
        } else {
          d.allow = str_field(*r, "verdict") == "allow";
          std::string why = str_field(*r, "reason");
          d.message = "pgwarden: approval for rule " + rule + " was denied";
          if (!why.empty()) d.message += ": " + why;
        }
        if (r.is_ok()) s->approval_id_ = str_field(*r, "approval_id");
        if (d.allow && s->grant_.recording_required) {
          s->record_then_resume(sql, std::move(d), "approval");
          s->approval_id_.clear();
          return;
        }
        s->emit_statement(sql, d.allow ? "allow" : "deny", rule, "approval");
        s->approval_id_.clear();
        s->resume_with(std::move(d));
      },
      worker_->runtime().config.limits.cp_unavailable_wait_ms);
}

void Session::resume_with(Decision d) {
  waiting_cp_ = false;
  hold_.reset();
  decision_ = std::make_unique<Decision>(std::move(d));
  pump();
}

void Session::record_then_resume(std::string_view sql, Decision d, const char* source) {
  waiting_cp_ = true;
  if (results_) results_->note_decision("allow", d.rule, approval_id_);
  worker_->metrics().statements.inc({"allow", d.rule, source});
  protocol::StatementFields rec;
  rec.verdict = protocol::Verdict::kAllow;
  auto src = protocol::source_from(source);
  rec.source = src.is_ok() ? *src : protocol::DecisionSource::kCp;
  rec.has_shape_key = true;
  rec.shape_key = screen_.shape_key;
  rec.ts_ms = unix_ms();
  rec.sql = sql;
  rec.rule = d.rule;
  rec.approval_id = approval_id_;
  std::string payload;
  rec.encode(payload);
  send_record(std::move(payload), std::move(d));
}

void Session::send_record(std::string payload, Decision d) {
  uint64_t seq = ++escalation_seq_;
  std::string body = payload;
  worker_->cp().record(
      sid_, std::move(body), worker_->runtime().config.limits.escalation_timeout_ms,
      [w = worker_, id = id_, seq, payload = std::move(payload),
       d = std::move(d)](Result<json> r) mutable {
        Session* s = w->find(id);
        if (s == nullptr || s->escalation_seq_ != seq) return;
        if (r.is_ok()) {
          d.recorded = true;
          return s->resume_with(std::move(d));
        }
        const Status& st = r.status();
        Decision refused;
        if (st.sqlstate() == "53000") {
          if (s->hold_for_recording([s, payload, d] { s->send_record(payload, d); })) return;
          refused = s->hold_timeout_decision(st.message());
        } else if (st.sqlstate() == "53100" || st.sqlstate() == "58030") {
          // cp could not write the record (disk full / I/O error): fail closed, say why.
          refused.sqlstate = st.sqlstate();
          refused.rule = "recording_failed";
          refused.message = "pgwarden: statement not run: " + st.message();
        } else {
          bool down =
              st.code() == StatusCode::kDeadlineExceeded || st.code() == StatusCode::kUnavailable;
          refused.sqlstate = down ? "08006" : (st.sqlstate().empty() ? "XX000" : st.sqlstate());
          refused.rule = "recording_unconfirmed";
          refused.message =
              "pgwarden: statement not run: the control plane did not confirm its "
              "recording (" +
              st.message() + ")";
        }
        auto rec = protocol::StatementFields::decode(payload);
        s->emit_statement(rec.is_ok() ? rec->sql : std::string_view(), "deny", refused.rule,
                          "recording");
        s->resume_with(std::move(refused));
      },
      worker_->runtime().config.limits.cp_unavailable_wait_ms);
}

bool Session::hold_for_recording(std::function<void()> retry) {
  int64_t now = monotonic_ms();
  std::optional<int64_t> delay =
      hold_.next_retry(now, worker_->runtime().config.limits.recording_hold_timeout_ms);
  if (!delay) return false;
  if (hold_.attempts() == 1) bump(worker_->counters().statements_held_recording);
  hold_timer_ = worker_->loop().add_timer(
      now + *delay, [w = worker_, id = id_, seq = escalation_seq_, retry = std::move(retry)] {
        Session* s = w->find(id);
        if (s == nullptr) return;
        s->hold_timer_ = 0;
        if (s->escalation_seq_ == seq) retry();
      });
  return true;
}

Session::Decision Session::hold_timeout_decision(std::string_view detail) {
  Decision d;
  d.sqlstate = "53000";
  d.rule = "recording_backpressure";
  d.message = "pgwarden: statement not run: the session recording could not keep up for " +
              std::to_string(worker_->runtime().config.limits.recording_hold_timeout_ms) +
              " ms (recording.hold_timeout_ms): " + std::string(detail) + "; retry later";
  return d;
}

// ---------------------------------------------------------------------------------------------
// Login

void Session::on_authenticated(Result<json> answer) {
  if (state_ != State::kAuthenticating) return;
  if (!answer.is_ok()) {
    const Status& st = answer.status();
    std::string sqlstate = st.sqlstate().empty() ? "28000" : st.sqlstate();
    if (st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded) {
      login_failed("08006", "pgwarden: the control plane is unreachable: " + st.message(),
                   "controlplane_unavailable");
    } else {
      login_failed(sqlstate, "pgwarden: login refused: " + st.message(), "auth_failed");
    }
    return;
  }
  auto grant = parse_grant(*answer);
  if (!grant.is_ok()) {
    login_failed("08004", "pgwarden: " + grant.status().message(), "bad_grant");
    return;
  }
  grant_ = std::move(*grant);
  authenticated_ = true;
  auto set = worker_->screen().resolve_for(grant_.policy_name, grant_.rule_sets);
  if (!set.is_ok()) {
    login_failed("08004", "pgwarden: " + set.status().message(), "rule_sets_unavailable");
    return;
  }
  rule_set_ = std::move(*set);
  rules_generation_ = worker_->screen().generation();
  if (!admit_startup_settings()) return;
  connect_upstream();
}

bool Session::admit_startup_settings() {
  auto refuse = [&](const std::string& what, const std::string& setting) {
    // login_failed audits the refusal (an `error` event with this message and code).
    login_failed("42501",
                 "pgwarden: login refused: " + what + " (startup " + setting + ", policy \"" +
                     grant_.policy_name + "\", allowed_startup_settings)",
                 "startup_setting_refused");
    return false;
  };
  if (!startup_options_error_.empty()) return refuse(startup_options_error_, "options");
  client_params_.clear();
  for (const StartupSetting& s : client_settings_) {
    std::string why = startup_setting_refusal(s, grant_.allowed_startup_settings);
    if (!why.empty())
      return refuse(why, s.from_options ? "option -c " + s.name : "parameter " + s.name);
    client_params_.emplace_back(s.name, s.value);
  }
  return true;
}

void Session::connect_upstream() {
  int fd = -1;
  int rc = -1;
  std::string err;
  if (!grant_.unix_socket.empty()) {
    std::string path = grant_.unix_socket;
    if (path.find(".s.PGSQL.") == std::string::npos) {
      path += "/.s.PGSQL." + std::to_string(grant_.port);
    }
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (path.size() >= sizeof(sa.sun_path)) {
      err = "unix socket path too long";
    } else {
      memcpy(sa.sun_path, path.data(), path.size());
      fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd >= 0) rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
      cancel_target_.unix_path = path;
    }
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* res = nullptr;
    std::string port = std::to_string(grant_.port);
    int gai = getaddrinfo(grant_.host.c_str(), port.c_str(), &hints, &res);
    if (gai != 0 || res == nullptr) {
      err = std::string("cannot resolve ") + grant_.host + ": " + gai_strerror(gai);
    } else {
      fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
      }
      freeaddrinfo(res);
    }
    cancel_target_.host = grant_.host;
    cancel_target_.port = grant_.port;
  }
  if (fd < 0 || (rc != 0 && errno != EINPROGRESS && errno != EAGAIN)) {
    if (err.empty()) err = strerror(errno);
    if (fd >= 0) close(fd);
    login_failed(
        "08006",
        "pgwarden: cannot reach the upstream database of target \"" + target_ + "\": " + err,
        "upstream_unreachable");
    return;
  }
  upstream_.set_fd(fd);
  state_ = State::kUpstreamConnect;
  if (!worker_->loop().add(fd, EPOLLOUT, &upstream_io_).is_ok()) {
    login_failed("08006", "pgwarden: internal error registering the upstream connection",
                 "internal");
    return;
  }
  upstream_registered_ = true;
  upstream_interest_ = EPOLLOUT;
  if (rc == 0) {
    on_upstream_connected();
    pump();
  }
}

void Session::on_upstream_connected() {
  upstream_readable_ = true;
  if (grant_.tls_mode != "disable" && grant_.unix_socket.empty()) {
    pw::append_ssl_request(up_out_);
    state_ = State::kUpstreamSsl;
  } else {
    send_upstream_startup();
  }
}

void Session::send_upstream_startup() {
  std::vector<std::pair<std::string, std::string>> params = {{"user", grant_.role},
                                                             {"database", grant_.database}};
  for (const auto& p : client_params_) {
    bool overridden = false;
    for (const auto& g : grant_.startup_parameters) {
      if (strcasecmp(g.first.c_str(), p.first.c_str()) == 0) overridden = true;
    }
    if (!overridden) params.push_back(p);
  }
  for (const auto& g : grant_.startup_parameters) {
    if (g.first != "user" && g.first != "database") params.push_back(g);
  }
  std::vector<pw::Parameter> view;
  view.reserve(params.size());
  for (const auto& p : params) view.push_back(pw::Parameter{p.first, p.second});
  pw::append_startup_message(up_out_, view);
  state_ = State::kUpstreamAuth;
  upstream_readable_ = true;
}

void Session::process_upstream_login() {
  while (!destroyed_ && !waiting_cp_ &&
         (state_ == State::kUpstreamAuth || state_ == State::kUpstreamStartup)) {
    if (up_in_off_ == up_in_.size()) break;
    pw::FrameResult r = upstream_framer_.next(bytes_of(up_in_, up_in_off_));
    if (r.status == pw::FrameStatus::kNeedMore) break;
    if (r.status == pw::FrameStatus::kError) {
      login_failed("08006",
                   "pgwarden: protocol error from the upstream database: " + r.error.message(),
                   "upstream_protocol_error");
      return;
    }
    const pw::Message& m = r.message;
    up_in_off_ += r.consumed;
    switch (m.type) {
      case 'R':
        handle_upstream_auth(m);
        break;
      case 'E':
        upstream_login_error(m, state_ == State::kUpstreamStartup);
        return;
      case 'S':
      case 'N':
        client_out_.append(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size());
        break;
      case 'K': {
        pw::BackendKeyData k;
        if (pw::parse(m.body, &k).ok()) {
          cancel_target_.process_id = k.process_id;
          cancel_target_.secret_key = k.secret_key;
          gateway_key_ = worker_->shared().cancels.add(cancel_target_);
          cancel_registered_ = true;
          pw::append_backend_key_data(client_out_, gateway_key_.process_id,
                                      gateway_key_.secret_key);
        }
        break;
      }
      case 'v':
        break;
      case 'Z': {
        pw::ReadyForQuery z;
        if (pw::parse(m.body, &z).ok()) tx_status_ = z.status;
        client_out_.append(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size());
        on_login_complete();
        process_upstream_stream();
        return;
      }
      default:
        login_failed("08006",
                     std::string("pgwarden: unexpected message '") + static_cast<char>(m.type) +
                         "' from the upstream database during login",
                     "upstream_protocol_error");
        return;
    }
  }
  if (up_in_off_ == up_in_.size()) {
    up_in_.clear();
    up_in_off_ = 0;
  }
}

// An ErrorResponse of the upstream during login. Before AuthenticationOk it is about
// pgwarden's own credential or the target (the agent's token was fine): 08004 naming it. After
// it, it answers the client's own startup request — a setting's value (22023), an unknown
// setting (42704), too many connections (53300), a database starting up (57P03) — and the client
// gets PostgreSQL's ErrorResponse unchanged, as PostgreSQL would answer it.
void Session::upstream_login_error(const pw::Message& m, bool after_auth_ok) {
  pw::ErrorResponse er;
  bool parsed = pw::parse(m.body, &er).ok();
  std::string what = "(unreadable error)";
  if (parsed) what = std::string(er.message()) + " (SQLSTATE " + std::string(er.sqlstate()) + ")";
  if (!after_auth_ok || !parsed || er.sqlstate().size() != 5) {
    login_failed(
        "08004",
        "pgwarden: the upstream database of target \"" + target_ + "\" refused the login: " + what,
        "upstream_refused");
    return;
  }
  if (destroyed_ || state_ == State::kClosing) return;
  bump(worker_->counters().sessions_login_failed);
  spdlog::info(
      "session {}: login of user \"{}\" to target \"{}\" from {} refused by the upstream "
      "database: {}",
      session_id_hex(), user_, target_, peer_text_, what);
  emit_event({{"kind", "error"},
              {"phase", "login"},
              {"sqlstate", std::string(er.sqlstate())},
              {"code", "upstream_refused_startup"},
              {"message", std::string(er.message())},
              {"user", user_},
              {"target", target_},
              {"client_addr", peer_text_}});
  client_out_.append(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size());
  close_after_flush();
}

// At the upstream's EOF during login: answers with the first ErrorResponse still unread in
// up_in_ (true), or returns false when there is none.
bool Session::upstream_login_last_error() {
  bool auth_ok = state_ == State::kUpstreamStartup;
  size_t off = up_in_off_;
  while (off < up_in_.size()) {
    pw::Framer framer = upstream_framer_;
    pw::FrameResult r = framer.next(bytes_of(up_in_, off));
    if (r.status != pw::FrameStatus::kMessage) return false;
    off += r.consumed;
    if (r.message.type == 'R') {
      pw::Authentication a;
      if (pw::parse(r.message.body, &a).ok() && a.code == pw::kAuthOk) auth_ok = true;
    } else if (r.message.type == 'E') {
      // PostgreSQL's order: AuthenticationOk, then the FATAL (libpq reacts to some of them —
      // 42704, its pre-9.0 application_name retry — only after AuthenticationOk). The client's
      // token was accepted before the upstream login began.
      if (auth_ok && state_ != State::kUpstreamStartup) pw::append_authentication_ok(client_out_);
      upstream_login_error(r.message, auth_ok);
      return true;
    }
  }
  return false;
}

void Session::handle_upstream_auth(const pw::Message& m) {
  pw::Authentication a;
  if (!pw::parse(m.body, &a).ok()) {
    login_failed("08006", "pgwarden: malformed authentication request from upstream",
                 "upstream_protocol_error");
    return;
  }
  auto relay = [this](const char* type, json req) {
    waiting_cp_ = true;
    uint64_t seq = ++escalation_seq_;
    req["session_id"] = session_id_hex();
    std::string step = type;
    worker_->cp().request(type, std::move(req),
                          worker_->runtime().config.limits.escalation_timeout_ms,
                          [w = worker_, id = id_, seq, step](Result<json> r) {
                            Session* s = w->find(id);
                            if (s == nullptr || s->escalation_seq_ != seq) return;
                            s->waiting_cp_ = false;
                            s->on_scram_answer(step, std::move(r));
                          });
  };
  switch (a.code) {
    case pw::kAuthOk:
      if (scram_step_ != 0 && scram_step_ != 3) {
        login_failed("08006", "pgwarden: the upstream database skipped SCRAM server verification",
                     "upstream_scram_incomplete");
        return;
      }
      pw::append_authentication_ok(client_out_);
      state_ = State::kUpstreamStartup;
      return;
    case pw::kAuthSasl: {
      json mechs = json::array();
      for (std::string_view mech : a.mechanisms) mechs.push_back(std::string(mech));
      scram_step_ = 1;
      relay("scram_start", {{"mechanisms", std::move(mechs)}});
      return;
    }
    case pw::kAuthSaslContinue:
      if (scram_step_ != 1) break;
      scram_step_ = 2;
      relay("scram_continue", {{"server_first", std::string(pw::as_string_view(a.data))}});
      return;
    case pw::kAuthSaslFinal:
      if (scram_step_ != 2) break;
      relay("scram_finish", {{"server_final", std::string(pw::as_string_view(a.data))}});
      return;
    default:
      login_failed("08004",
                   "pgwarden: the upstream database asks for an authentication method pgwarden "
                   "does not relay (code " +
                       std::to_string(a.code) + "); use scram-sha-256 for the gateway role",
                   "upstream_auth_unsupported");
      return;
  }
  login_failed("08006", "pgwarden: unexpected SCRAM message from the upstream database",
               "upstream_protocol_error");
}

void Session::on_scram_answer(const std::string& step, Result<json> answer) {
  if (destroyed_ || state_ != State::kUpstreamAuth) return;
  if (!answer.is_ok()) {
    const Status& st = answer.status();
    bool down = st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded;
    login_failed(down ? "08006" : "08004",
                 "pgwarden: upstream login (" + step + ") failed: " + st.message(),
                 down ? "controlplane_unavailable" : "upstream_scram_failed");
    return;
  }
  if (step == "scram_start") {
    scram_mechanism_ = str_field(*answer, "mechanism", "SCRAM-SHA-256");
    std::string first = str_field(*answer, "client_first");
    pw::append_sasl_initial_response(up_out_, scram_mechanism_, first);
  } else if (step == "scram_continue") {
    pw::append_sasl_response(up_out_, str_field(*answer, "client_final"));
  } else {
    scram_step_ = 3;
  }
  pump();
}

void Session::login_failed(std::string_view sqlstate, std::string_view message,
                           std::string_view code) {
  if (destroyed_ || state_ == State::kClosing) return;
  bump(worker_->counters().sessions_login_failed);
  worker_->metrics().login_failures.inc({code});
  spdlog::info("session {}: login failed for user \"{}\" target \"{}\" from {}: {} ({})",
               session_id_hex(), user_, target_, peer_text_, code, sqlstate);
  emit_event({{"kind", "error"},
              {"phase", "login"},
              {"sqlstate", std::string(sqlstate)},
              {"code", std::string(code)},
              {"message", std::string(message)},
              {"user", user_},
              {"target", target_},
              {"client_addr", peer_text_}});
  send_fatal(sqlstate, message);
  close_after_flush();
}

void Session::on_login_complete() {
  state_ = State::kReady;
  logged_in_ = true;
  if (auth_timer_ != 0) worker_->loop().cancel_timer(auth_timer_);
  auth_timer_ = 0;
  bump(worker_->counters().sessions_login_ok);
  last_client_activity_ms_ = monotonic_ms();
  arm_idle_timer();
  spdlog::info("session {}: {} logged in as \"{}\" to target \"{}\" (policy {})", session_id_hex(),
               peer_text_, grant_.subject, target_, grant_.policy_name);
  emit_event({{"kind", "session_start"},
              {"subject", grant_.subject},
              {"user", user_},
              {"target", target_},
              {"client_addr", peer_text_},
              {"tls", client_.tls()},
              {"policy", grant_.policy_name},
              {"policy_version", grant_.policy_version}});
  ResultFilterConfig rc;
  rc.policy_hash = grant_.policy_hash;
  rc.policy_version = grant_.policy_version;
  rc.recording = grant_.recording;
  rc.row_cap = grant_.recording_row_cap;
  results_ = std::make_unique<ResultFilter>(
      rc, [this](protocol::RecordType type, std::string_view payload) {
        worker_->cp().post(type, sid_, payload);
      });
  results_->set_rule_set(rule_set_);
  if (worker_->draining()) on_drain();
}

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
    bool filtered = results_ != nullptr && results_->needs_whole(type);
    if (filtered && type != 'E' && type != 'Z' && len >= results_->whole_limit(type)) {
      // Too large to hold whole (a big row or COPY line): streamed, recorded as it passes, or
      // refused in step when it would need masking.
      if (mask_plan_pending_) break;
      bump(worker_->counters().results_streamed);
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
      }
      if (a == ResultFilter::Action::kForward) {
        if (type == 'E' || type == 'Z') {
          on_upstream_message(type, whole);
        } else {
          client_out_.append(whole);
        }
      }
      up_in_off_ += 1 + len;
      if (destroyed_ || state_ != State::kReady) return;
      continue;
    }
    // Pass through without buffering the whole message (DataRows may be large).
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
    client_out_.append(whole);
    return;
  }
  // 'Z': one request cycle ended.
  ++cycles_received_;
  if (whole.size() >= 6) tx_status_ = whole[5];
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
  if (state_ != State::kReady || grant_.ticket.empty()) {
    authenticated_ = false;
    terminate("57P01",
              "pgwarden: terminating connection: the control plane restarted and this session "
              "cannot be re-registered; connect again");
    return;
  }
  worker_->cp().request(
      "reregister", json{{"session_id", sid_hex_}, {"ticket", grant_.ticket}},
      worker_->runtime().config.limits.escalation_timeout_ms,
      [w = worker_, id = id_](Result<json> r) {
        Session* s = w->find(id);
        if (s == nullptr || s->state_ == State::kClosing) return;
        if (r.is_ok()) {
          bump(w->counters().sessions_reregistered);
          // The policy as cp now has it: cached verdicts of the old version are not reused.
          if (const json* pol = field(*r, "policy"); pol != nullptr && pol->is_object()) {
            if (const json* v = field(*pol, "version"); v != nullptr && v->is_number_unsigned()) {
              s->grant_.policy_version = v->get<uint64_t>();
            }
          }
          if (const json* req = field(*r, "recording_required");
              req != nullptr && req->is_boolean() && s->grant_.recording != "off") {
            s->grant_.recording_required = req->get<bool>();
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
  state_ = State::kClosing;
  waiting_cp_ = false;
  ++escalation_seq_;  // late cp answers are ignored
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
  for (EventLoop::TimerId* t : {&auth_timer_, &idle_timer_, &close_timer_, &hold_timer_}) {
    if (*t != 0) loop.cancel_timer(*t);
    *t = 0;
  }
  if (client_registered_) loop.remove(client_.fd());
  if (upstream_registered_) loop.remove(upstream_.fd());
  client_registered_ = upstream_registered_ = false;
  client_.reset();
  upstream_.reset();
  if (cancel_registered_) worker_->shared().cancels.remove(gateway_key_);
  cancel_registered_ = false;
  if (counted_) worker_->shared().connections.fetch_sub(1);
  counted_ = false;
  bump(worker_->counters().sessions_closed);
  if (authenticated_) {
    // Ends the session in cp too (it exists there since authenticate succeeded).
    emit_event(
        {{"kind", "session_end"}, {"statements", statements_}, {"reason", std::string(reason)}});
  }
  spdlog::debug("session {}: closed ({})", session_id_hex(), reason);
  worker_->release(this);
}

void Session::emit_event(json ev) {
  ev["session_id"] = session_id_hex();
  ev["ts_ms"] = unix_ms();
  worker_->cp().event(std::move(ev));
}

void Session::emit_statement(std::string_view sql, const char* verdict, const std::string& rule,
                             const char* source) {
  if (results_) results_->note_decision(verdict, rule, approval_id_);
  worker_->metrics().statements.inc({verdict, rule, source});
  if (grant_.recording == "off") return;
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
    if (destroyed_ || state_ != State::kReady) return;
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
