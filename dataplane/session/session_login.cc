// Session, login: startup, token authentication at cp, upstream connection, TLS and SCRAM.
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
  pick_up_masks();
  if (!admit_startup_settings()) return;
  if (pooled()) {
    pooled_login();
    return;
  }
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
  if (grant_.tls_mode != protocol::UpstreamTlsMode::kDisable && grant_.unix_socket.empty()) {
    pw::append_ssl_request(up_out_);
    state_ = State::kUpstreamSsl;
  } else {
    send_upstream_startup();
  }
}

std::vector<std::pair<std::string, std::string>> Session::upstream_startup_parameters() const {
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
  return params;
}

void Session::send_upstream_startup() {
  std::vector<std::pair<std::string, std::string>> params = upstream_startup_parameters();
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
        if (m.type == 'S' && pooled()) {
          // What a later session logging in on this pooled connection is told.
          login_parameter_status_.append(reinterpret_cast<const char*>(m.bytes.data()),
                                         m.bytes.size());
        }
        // A connection opened for a later transaction: the client had its login already.
        if (!relogin_) {
          client_out_.append(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size());
        }
        break;
      case 'K': {
        pw::BackendKeyData k;
        if (pw::parse(m.body, &k).ok()) {
          cancel_target_.process_id = k.process_id;
          cancel_target_.secret_key = k.secret_key;
          if (relogin_) break;  // the session keeps its gateway key (attach updates its target)
          gateway_key_ = worker_->shared().cancels.add(cancel_target_, &cancel_entry_);
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
        if (relogin_) {
          on_pooled_server_opened();
          process_upstream_stream();
          return;
        }
        client_out_.append(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size());
        if (pooled()) on_pooled_server_opened();
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
  if (refuse_after_failed_relogin(er.sqlstate(),
                                  "pgwarden: the upstream database of target \"" + target_ +
                                      "\" refused the login: " + what,
                                  "upstream_refused_startup")) {
    return;
  }
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
      if (auth_ok && state_ != State::kUpstreamStartup && !relogin_) {
        pw::append_authentication_ok(client_out_);
      }
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
      if (!relogin_) pw::append_authentication_ok(client_out_);
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

bool Session::refuse_after_failed_relogin(std::string_view sqlstate, std::string_view message,
                                          std::string_view code) {
  if (!relogin_ || !logged_in_) return false;
  // A pooled session between transactions could not log in a new upstream connection
  // (PostgreSQL is down or restarting, or refused the login): the statement that needed it is
  // refused with this error and the session stays, as a dedicated session's client would see a
  // statement fail; the slot is freed, so the next statement tries a new connection.
  worker_->metrics().login_failures.inc({std::string(code)});
  spdlog::info("session {}: pooled upstream login for target \"{}\" failed: {} ({})",
               session_id_hex(), target_, code, sqlstate);
  relogin_ = false;
  if (relogin_timer_ != 0) worker_->loop().cancel_timer(relogin_timer_);
  relogin_timer_ = 0;
  state_ = State::kReady;
  return_server(false);
  std::string_view why = message;
  if (why.starts_with("pgwarden: ")) why.remove_prefix(10);
  const std::string refused = "pgwarden: statement not run: " + std::string(why);
  emit_event({{"kind", "error"},
              {"sqlstate", std::string(sqlstate)},
              {"code", std::string(code)},
              {"message", refused}});
  relogin_error_sqlstate_ = std::string(sqlstate);
  relogin_error_ = refused;
  // The front message waits in the client buffer: answer it from the loop, not inside the
  // upstream handler that failed.
  worker_->loop().defer([w = worker_, id = id_] {
    Session* s = w->find(id);
    if (s != nullptr && s->state_ == State::kReady) s->pump();
  });
  return true;
}

void Session::login_failed(std::string_view sqlstate, std::string_view message,
                           std::string_view code) {
  if (destroyed_ || state_ == State::kClosing) return;
  if (refuse_after_failed_relogin(sqlstate, message, code)) return;
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
              {"policy_version", grant_.policy_version},
              {"backend_pid", cancel_target_.process_id},
              {"pool_mode", pooled() ? "transaction" : "session"}});
  ResultFilterConfig rc;
  rc.policy_hash = grant_.policy_hash;
  rc.policy_version = cache_version();
  rc.recording = grant_.recording;
  rc.row_cap = grant_.recording_row_cap;
  rc.account = !grant_.budgets.empty();
  rc.masks_values = masks_values_;
  results_ = std::make_unique<ResultFilter>(
      rc, [this](protocol::RecordType type, std::string_view payload) {
        if (type == protocol::RecordType::kStatementEnd) account_locally(payload);
        worker_->cp().post(type, sid_, payload);
      });
  results_->set_rule_set(rule_set_);
  if (worker_->draining()) on_drain();
}

}  // namespace pgwarden::session
