// Session, client messages: statements checked, escalated, recorded write-ahead, forwarded or
// refused.
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
#include "dataplane/session/cursor_statements.h"
#include "dataplane/session/pool_restrictions.h"
#include "dataplane/session/pooled_statements.h"
#include "dataplane/session/session.h"
#include "dataplane/session/session_internal.h"
#include "dataplane/session/worker.h"

namespace pgwarden::session {

using namespace detail;  // the helpers every part of Session shares
using nlohmann::json;
namespace pw = pgwarden::pgwire;

namespace {

// How messages name a prepared statement: `prepared statement "s"`, or the unnamed one.
std::string statement_label(std::string_view statement) {
  return statement.empty() ? std::string("unnamed prepared statement")
                           : "prepared statement \"" + std::string(statement) + "\"";
}

}  // namespace

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
        if (pooled()) {
          // A connection first; a Bind's statement name is mapped before its header goes.
          if (!server_ && !skip_until_sync_) {
            if (pool_timed_out_) {
              pool_timed_out_ = false;
              client_skip_ = 1 + static_cast<size_t>(len);
              refuse_pool_timeout(h[0]);
              continue;
            }
            if (!pool_attach_or_wait()) break;
          }
          if (h[0] == 'B' && !skip_until_sync_) {
            if (!start_pooled_bind_stream(len)) break;
            continue;
          }
        } else if (h[0] == 'B' && !skip_until_sync_) {
          // The names lead the body: a statement no Parse prepared is refused before any byte
          // goes upstream (as for a Bind that fits).
          std::string_view body(client_in_.data() + client_in_off_ + 5, client_in_pending() - 5);
          size_t portal_end = body.find('\0');
          size_t name_end =
              portal_end == std::string_view::npos ? portal_end : body.find('\0', portal_end + 1);
          if (name_end == std::string_view::npos) {
            if (body.size() < kMaxBindNamesBytes) break;  // wait for the names
            // Longer names than that are not SQL PREPARE names: relayed below, unless an
            // approved statement's one Bind may be at stake (its name is not read: refused).
            if (!approved_statements_.empty()) {
              pw::Message stand_in;
              stand_in.type = 'B';
              const std::string message =
                  "pgwarden: Bind refused: its names are longer than the gateway reads "
                  "(" +
                  std::to_string(kMaxBindNamesBytes) +
                  " bytes) while this session holds "
                  "approved prepared statements, whose approval covers one Bind each";
              emit_statement("-- Bind with unreadable names", "deny", "approval_spent", "execute",
                             message);
              apply_denial(stand_in, "42501", message, "approval_spent");
              client_skip_ = 1 + static_cast<size_t>(len);
              continue;
            }
          } else {
            pw::Message stand_in;
            stand_in.type = 'B';
            std::string_view statement = body.substr(portal_end + 1, name_end - portal_end - 1);
            if (decision_) {
              // cp refused the statement under the session's new masks.
              Decision d = std::move(*decision_);
              decision_.reset();
              client_skip_ = 1 + static_cast<size_t>(len);
              apply_denial(stand_in, d.sqlstate, d.message, d.rule, d.position);
              continue;
            }
            if (refuse_unparsed_bind(stand_in, statement) ||
                refuse_stale_prepared(stand_in, statement)) {
              client_skip_ = 1 + static_cast<size_t>(len);
              continue;
            }
            MasksCheck masks = recheck_prepared_masks(stand_in, statement);
            if (masks == MasksCheck::kWaiting) break;
            // After the masks check, as for a Bind that fits: one that waited for cp comes
            // through here again, and this one counts the approved statement's execution.
            if (masks == MasksCheck::kRefused || refuse_spent_approval(stand_in, statement)) {
              client_skip_ = 1 + static_cast<size_t>(len);
              continue;
            }
          }
        }
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
  // cp unreachable (a restart, or this worker's reconnection still in its backoff): the
  // login goes on; its authenticate waits up to limits.cp_unavailable_wait_ms for cp.
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
  if (pooled() && !server_) {
    // Between transactions a pooled session has no upstream connection.
    if (m.type == 'X') {
      destroy("client terminated");
      return false;
    }
    if (m.type == 'S' && local_sync_pending_) {
      local_sync_pending_ = false;
      skip_until_sync_ = false;
      pw::append_ready_for_query(client_out_, 'I');
      return true;
    }
    if (m.type == 'H') return true;  // nothing to flush
    if (pool_timed_out_) {
      pool_timed_out_ = false;
      refuse_pool_timeout(m.type);
      return true;
    }
    if (!relogin_error_.empty()) {
      std::string sqlstate = std::exchange(relogin_error_sqlstate_, std::string());
      std::string message = std::exchange(relogin_error_, std::string());
      refuse_without_server(m.type, sqlstate, message);
      return true;
    }
    if (!pool_attach_or_wait()) return false;
  }
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
        const std::string message = "pgwarden: FunctionCall messages are not allowed by policy \"" +
                                    grant_.policy_name + "\"";
        emit_statement("-- FunctionCall message", "deny", "function_call", "function_call",
                       message);
        apply_denial(m, "42501", message, "function_call");
      }
      return true;
    case 'S':
      skip_until_sync_ = false;
      forward(m);
      return true;
    case 'X':
      if (!pooled()) {
        forward(m);
        flush_upstream();
      }
      // Pooled: the connection is not the client's to end; destroy() returns it when clean.
      destroy("client terminated");
      return false;
    case 'E':
      if (!decision_) {
        if (refuse_stale_portal(m)) return true;
        switch (recheck_portal_masks(m)) {
          case MasksCheck::kRefused:
            return true;
          case MasksCheck::kWaiting:
            return false;
          case MasksCheck::kCurrent:
            break;
        }
      }
      return check_execution(m);
    case 'B': {
      if (decision_) {
        // cp refused the statement under the session's new masks (recheck_prepared_masks).
        Decision d = std::move(*decision_);
        decision_.reset();
        apply_denial(m, d.sqlstate, d.message, d.rule, d.position);
        return true;
      }
      pw::Bind b;
      // Malformed: PostgreSQL answers it.
      if (pw::parse(m.body, &b).ok()) {
        if (refuse_unparsed_bind(m, b.statement) || refuse_stale_prepared(m, b.statement)) {
          return true;
        }
        switch (recheck_prepared_masks(m, b.statement)) {
          case MasksCheck::kRefused:
            return true;
          case MasksCheck::kWaiting:
            return false;
          case MasksCheck::kCurrent:
            break;
        }
        // After the masks check: a Bind that waited for cp comes through here again, and this
        // one counts the approved statement's execution.
        if (refuse_spent_approval(m, b.statement)) return true;
      }
      forward(m);
      return true;
    }
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
  if (ok) note_portal(bind_stream_.portal(), bind_stream_.statement());
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

bool Session::refuse_spent_approval(const pw::Message& m, std::string_view statement) {
  auto it = approved_statements_.find(std::string(statement));
  if (it == approved_statements_.end()) return false;
  if (!it->second.bound) {
    it->second.bound = true;
    return false;
  }
  const std::string name =
      statement.empty() ? "the " + statement_label(statement) : statement_label(statement);
  std::string approval = it->second.approval_id.empty() ? std::string("an approval")
                                                        : "approval " + it->second.approval_id;
  const std::string message =
      "pgwarden: " + name + " ran by " + approval +
      ", which covers one execution (the Bind that followed it); it has run: prepare the "
      "statement again (Parse) to ask for a new approval for other values";
  emit_statement("-- Bind of " + name, "deny", "approval_spent", "execute", message);
  apply_denial(m, "42501", message, "approval_spent");
  return true;
}

void Session::note_approved_statement(const pw::Message& m, const Decision* d) {
  if (m.type == 'C') {
    pw::Close c;
    if (pw::parse(m.body, &c).ok() && c.kind == 'S')
      approved_statements_.erase(std::string(c.name));
    return;
  }
  if (m.type != 'P') return;
  pw::Parse p;
  if (!pw::parse(m.body, &p).ok()) return;  // PostgreSQL refuses it
  const std::string name(p.statement);
  if (d != nullptr && d->approved) {
    // A named statement already approved keeps its state: this Parse fails upstream
    // ("already exists") and the earlier statement stays.
    if (name.empty() || approved_statements_.count(name) == 0) {
      approved_statements_[name] = ApprovedStatement{d->approval_id, false};
    }
  } else if (name.empty()) {
    approved_statements_.erase(name);  // a Parse of the unnamed statement replaces it
  }
}

bool Session::refuse_unparsed_bind(const pw::Message& m, std::string_view statement) {
  // Pooled sessions map every name they Parse and refuse SQL PREPARE (pool_restrictions.h).
  if (pooled() || statement.empty() || parsed_statements_.contains(std::string(statement))) {
    return false;
  }
  const std::string what = "-- Bind of prepared statement \"" + std::string(statement) + "\"";
  const std::string message =
      "pgwarden: prepared statement \"" + std::string(statement) +
      "\" was not prepared with a Parse message in this session (a SQL PREPARE is run with "
      "EXECUTE, which is decided each time)";
  emit_statement(what, "deny", "unknown_prepared_statement", "execute", message);
  apply_denial(m, "42501", message, "unknown_prepared_statement");
  return true;
}

void Session::note_statement_names(const pw::Message& m) {
  if (pooled()) return;
  std::string_view text, name;
  if (m.type == 'P') {
    pw::Parse p;
    if (!pw::parse(m.body, &p).ok()) return;
    text = p.query;
    name = p.statement;
  } else if (m.type == 'Q') {
    pw::Query q;
    if (!pw::parse(m.body, &q).ok()) return;
    text = q.sql;
  } else if (m.type == 'C') {
    pw::Close c;
    if (pw::parse(m.body, &c).ok() && c.kind == 'S') forget_parsed(std::string(c.name));
    return;
  } else {
    return;
  }
  // Keywords cannot be quoted or escaped: a text without these words deallocates nothing.
  auto mentions = [&](std::string_view word) {
    auto it = std::search(text.begin(), text.end(), word.begin(), word.end(), [](char a, char b) {
      return (a >= 'A' && a <= 'Z' ? a - 'A' + 'a' : a) == b;
    });
    return it != text.end();
  };
  if (!parsed_statements_.empty() && (mentions("deallocate") || mentions("discard"))) {
    forget_named_parsed();
  }
  if (m.type != 'P') return;
  // Over the cap the names are forgotten: later Binds of them are refused (fail closed).
  if (parsed_statements_.size() >= kMaxParsedStatements) forget_named_parsed();
  forget_parsed(std::string(name));
  ParsedStatement& p = parsed_statements_[std::string(name)];
  p.rules_generation = rules_generation_;
  p.serial = parse_serial_;
  p.masks_version = masks_version_;
  if (parsed_text_bytes_ + text.size() <= kMaxParsedTextBytes) {
    p.sql = std::string(text);
    p.text_kept = true;
    parsed_text_bytes_ += text.size();
  }
}

void Session::forget_parsed(const std::string& name) {
  auto it = parsed_statements_.find(name);
  if (it == parsed_statements_.end()) return;
  parsed_text_bytes_ -= it->second.sql.size();
  parsed_statements_.erase(it);
}

void Session::forget_named_parsed() {
  // The unnamed statement is not deallocated by name: it stays until the next Parse.
  auto unnamed = parsed_statements_.extract(std::string());
  parsed_statements_.clear();
  parsed_text_bytes_ = 0;
  if (!unnamed.empty()) {
    parsed_text_bytes_ = unnamed.mapped().sql.size();
    parsed_statements_.insert(std::move(unnamed));
  }
}

void Session::pick_up_rules() {
  Screen& screen = worker_->screen();
  if (rules_generation_ == screen.generation()) return;
  // A reload landed: pick up the recompiled rules — its policy's current rule sets, else
  // the list it was admitted with; if neither is compiled any more it keeps the set it has
  // (never none).
  auto set = screen.resolve_for(grant_.policy_name, grant_.rule_sets);
  if (set.is_ok()) rule_set_ = std::move(*set);
  rules_generation_ = screen.generation();
  if (results_) results_->set_rule_set(rule_set_);
  pick_up_masks();
}

void Session::pick_up_masks() {
  uint64_t version = grant_.masks_version;
  bool values = grant_.masks_values;
  if (const auto* m = worker_->screen().policy_masks(grant_.policy_name);
      m != nullptr && m->version > version) {
    version = m->version;
    values = m->masks_values;
  }
  if (version == masks_version_ && values == masks_values_) return;
  masks_version_ = version;
  masks_values_ = values;
  if (results_) results_->set_masks(cache_version(), masks_values_);
}

uint64_t Session::cache_version() const {
  // Sessions admitted under version V whose masks changed at M > V decide with V's policy and
  // M's masks: a key no session admitted under V or M shares.
  if (masks_version_ <= grant_.policy_version) return grant_.policy_version;
  uint64_t h = 1469598103934665603ULL;
  for (uint64_t v : {grant_.policy_version, masks_version_}) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ULL;
    }
  }
  return h;
}

uint64_t* Session::masks_version_of(const MasksTarget& t) {
  switch (t.kind) {
    case MasksTarget::Kind::kPrepared:
      if (pooled()) {
        auto it = t.name.empty() ? prepared_.end() : prepared_.find(t.name);
        return it != prepared_.end() ? &it->second.masks_version : nullptr;
      } else {
        auto it = parsed_statements_.find(t.name);
        return it != parsed_statements_.end() ? &it->second.masks_version : nullptr;
      }
    case MasksTarget::Kind::kPortal: {
      auto it = portals_.find(t.name);
      return it != portals_.end() ? &it->second.masks_version : nullptr;
    }
    case MasksTarget::Kind::kCursor: {
      auto it = cursors_.find(t.name);
      return it != cursors_.end() ? &it->second.masks_version : nullptr;
    }
  }
  return nullptr;
}

Session::MasksCheck Session::recheck_prepared_masks(const pw::Message& m,
                                                    std::string_view statement) {
  MasksTarget target{MasksTarget::Kind::kPrepared, std::string(statement)};
  uint64_t* version = masks_version_of(target);
  if (version == nullptr) return MasksCheck::kCurrent;
  pick_up_rules();
  if (*version == masks_version_) return MasksCheck::kCurrent;
  std::string_view sql;
  bool text_kept = false;
  if (pooled()) {
    text_kept = kept_parse_query(prepared_.find(target.name)->second.parse, &sql);
  } else {
    const ParsedStatement& p = parsed_statements_.find(target.name)->second;
    sql = p.sql;
    text_kept = p.text_kept;
  }
  // A FETCH it runs reads a cursor that may have been declared under the older masks too.
  if (text_kept) {
    MasksCheck cursors = recheck_cursor_masks(m, sql);
    if (cursors != MasksCheck::kCurrent) return cursors;
  }
  return reanalyse_for_masks(m, std::move(target), sql, text_kept, statement_label(statement),
                             "prepared", "prepare it again");
}

bool Session::kept_portal_text(const BoundPortal& b, std::string_view* sql) const {
  // The text of the Parse the portal runs, if that Parse is still the statement's.
  if (pooled()) {
    auto st = b.statement.empty() ? prepared_.end() : prepared_.find(b.statement);
    return st != prepared_.end() && st->second.serial == b.serial &&
           kept_parse_query(st->second.parse, sql);
  }
  auto st = parsed_statements_.find(b.statement);
  if (st == parsed_statements_.end() || st->second.serial != b.serial) return false;
  *sql = st->second.sql;
  return st->second.text_kept;
}

Session::MasksCheck Session::recheck_portal_masks(const pw::Message& m) {
  if (portals_.empty()) return MasksCheck::kCurrent;
  pw::Execute e;
  if (!pw::parse(m.body, &e).ok()) return MasksCheck::kCurrent;  // PostgreSQL answers it
  auto it = portals_.find(std::string(e.portal));
  if (it == portals_.end()) return MasksCheck::kCurrent;  // refuse_stale_portal decided
  pick_up_rules();
  if (it->second.masks_version == masks_version_) return MasksCheck::kCurrent;
  const BoundPortal& b = it->second;
  std::string_view sql;
  const bool text_kept = kept_portal_text(b, &sql);
  if (text_kept) {
    MasksCheck cursors = recheck_cursor_masks(m, sql);
    if (cursors != MasksCheck::kCurrent) return cursors;
  }
  const std::string what =
      e.portal.empty() ? std::string("unnamed portal") : "portal \"" + std::string(e.portal) + "\"";
  return reanalyse_for_masks(m, MasksTarget{MasksTarget::Kind::kPortal, std::string(e.portal)},
                             sql, text_kept, what, "bound", "bind it again");
}

Session::MasksCheck Session::recheck_cursor_masks(const pw::Message& m, std::string_view sql) {
  if (cursors_.empty()) return MasksCheck::kCurrent;
  if (!may_touch_cursor(sql, true)) return MasksCheck::kCurrent;
  pick_up_rules();
  rules::lex_sql(sql, cursor_lexed_);
  for (const CursorStatement& c : cursor_statements(cursor_lexed_.code())) {
    if (c.kind != CursorStatement::Kind::kFetch) continue;
    auto it = cursors_.find(c.name);
    // Not declared by a text this session sent, or forgotten over the caps (refuse_stale_cursor
    // refused it after the reload that changed the masks: that reload was a new generation).
    if (it == cursors_.end() || it->second.masks_version == masks_version_) continue;
    const std::string declare = it->second.sql;  // a copy: the answer may change cursors_
    return reanalyse_for_masks(m, MasksTarget{MasksTarget::Kind::kCursor, c.name}, declare,
                               it->second.text_kept, "cursor \"" + c.name + "\"", "declared",
                               "declare it again");
  }
  return MasksCheck::kCurrent;
}

Session::MasksCheck Session::reanalyse_for_masks(const pw::Message& m, MasksTarget target,
                                                 std::string_view sql, bool text_kept,
                                                 const std::string& what, std::string_view decided,
                                                 std::string_view redo) {
  const std::string changed =
      " (" + what + " was " + std::string(decided) + " before the policy changed)";
  if (!text_kept) {
    refuse_text_not_kept(m, what, decided, "before the policy's masks changed", redo,
                         "masks_changed");
    return MasksCheck::kRefused;
  }
  bump(worker_->counters().statements_escalated);
  waiting_cp_ = true;
  const uint64_t seq = ++escalation_seq_;
  const uint64_t under = masks_version_;
  json req = {{"session_id", session_id_hex()},
              {"sql", std::string(sql)},
              {"shape_key", protocol::session_hex(fnv1a(sql))},
              {"prescreen", json::array()}};
  worker_->cp().request(
      "analyse", std::move(req), worker_->runtime().config.limits.escalation_timeout_ms,
      [w = worker_, id = id_, seq, under, target = std::move(target), sql = std::string(sql),
       changed, redo = std::string(redo)](Result<json> r) {
        Session* s = w->find(id);
        if (s == nullptr || s->escalation_seq_ != seq) return;
        std::string verdict, rule, message;
        if (!r.is_ok()) {
          rule = "escalation_failed";
          message = "pgwarden: statement refused: it needs a control plane decision and " +
                    r.status().message();
        } else {
          verdict = str_field(*r, "verdict", "deny");
          rule = str_field(*r, "rule");
          message = str_field(*r, "message");
          if (verdict == "allow") {
            // Allowed under the masks it was checked with: up to date (the next check sees it).
            if (uint64_t* v = s->masks_version_of(target); v != nullptr) *v = under;
            s->waiting_cp_ = false;
            s->pump();
            return;
          }
          if (verdict == "approve") {
            message = "pgwarden: statement needs an approval under the policy's new masks (rule " +
                      rule + "): " + redo + " to ask for one";
          } else {
            message = "pgwarden: statement denied by rule " +
                      (rule.empty() ? std::string("default_deny") : rule) +
                      (message.empty() ? std::string() : ": " + message);
          }
        }
        message += changed;
        s->emit_statement(sql, "deny", rule, "cp", message);
        s->resume_with(Decision{.allow = false, .sqlstate = "42501", .rule = rule,
                                .message = message});
      },
      worker_->runtime().config.limits.cp_unavailable_wait_ms);
  return MasksCheck::kWaiting;
}

bool Session::refuse_stale_prepared(const pw::Message& m, std::string_view statement) {
  uint64_t* generation = nullptr;
  const ParsedStatement* parsed = nullptr;
  const std::string* kept_parse = nullptr;  // pooled: the Parse message under its server name
  if (pooled()) {
    auto it = statement.empty() ? prepared_.end() : prepared_.find(std::string(statement));
    if (it == prepared_.end()) return false;
    generation = &it->second.rules_generation;
    kept_parse = &it->second.parse;
  } else {
    auto it = parsed_statements_.find(std::string(statement));
    if (it == parsed_statements_.end()) return false;
    generation = &it->second.rules_generation;
    parsed = &it->second;
  }
  pick_up_rules();
  if (*generation == rules_generation_) return false;
  // Stale: only now is the text looked at.
  std::string_view sql;
  bool text_kept = false;
  if (parsed != nullptr) {
    sql = parsed->sql;
    text_kept = parsed->text_kept;
  } else {
    text_kept = kept_parse_query(*kept_parse, &sql);
  }
  if (refuse_under_current_rules(m, sql, text_kept, statement_label(statement), "prepared",
                                 "prepare it again")) {
    return true;
  }
  *generation = rules_generation_;
  return false;
}

void Session::refuse_text_not_kept(const pw::Message& m, const std::string& what,
                                   std::string_view decided, std::string_view when,
                                   std::string_view redo, const char* rule) {
  const std::string message = "pgwarden: " + what + " was " + std::string(decided) + " " +
                              std::string(when) +
                              " and its text was not kept to be checked again: " +
                              std::string(redo);
  emit_statement("-- " + what, "deny", rule, "prescreen", message);
  apply_denial(m, "42501", message, rule);
}

bool Session::refuse_under_current_rules(const pw::Message& m, std::string_view sql, bool text_kept,
                                         const std::string& what, std::string_view decided,
                                         std::string_view redo) {
  if (!text_kept) {
    refuse_text_not_kept(m, what, decided, "under an earlier rules generation", redo,
                         "rules_reloaded");
    return true;
  }
  ScreenResult again;
  worker_->screen().screen(sql, rule_set_.get(), &again);
  if (const PrescreenMatch* deny = again.first("deny")) {
    std::string msg = "pgwarden: statement denied by rule " + deny->rule;
    if (!deny->message.empty()) msg += ": " + deny->message;
    msg += " (" + what + " was " + std::string(decided) + " before the rules changed)";
    emit_statement(sql, "deny", deny->rule, "prescreen", msg);
    apply_denial(m, "42501", msg, deny->rule);
    return true;
  }
  if (const PrescreenMatch* approve = again.first("approve")) {
    std::string msg = "pgwarden: " + what + " needs an approval under the current rules (rule " +
                      approve->rule + "); " + std::string(redo) + " to ask for one";
    emit_statement(sql, "deny", approve->rule, "prescreen", msg);
    apply_denial(m, "42501", msg, approve->rule);
    return true;
  }
  // A FETCH in a statement decided earlier reads a cursor that may be stale too.
  return refuse_stale_cursor(m, sql);
}

void Session::note_portal(std::string_view portal, std::string_view statement) {
  if (portals_.size() >= kMaxParsedStatements && portals_.count(std::string(portal)) == 0) {
    portals_.clear();
    portals_lost_generation_ = rules_generation_;
  }
  BoundPortal& b = portals_[std::string(portal)];
  b.statement = std::string(statement);
  b.serial = 0;
  if (pooled()) {
    auto it = statement.empty() ? prepared_.end() : prepared_.find(b.statement);
    if (it != prepared_.end()) b.serial = it->second.serial;
  } else {
    auto it = parsed_statements_.find(b.statement);
    if (it != parsed_statements_.end()) b.serial = it->second.serial;
  }
  // The Bind passed under the session's current generation (refuse_stale_prepared brought it
  // up to date, or it was not stale).
  b.rules_generation = rules_generation_;
  b.cycle = cycles_sent_ + 1;
  // Bound under the current masks: recheck_prepared_masks brought its statement up to date.
  b.masks_version = masks_version_;
}

bool Session::refuse_stale_portal(const pw::Message& m) {
  if (portals_.empty() && portals_lost_generation_ == 0) return false;
  pw::Execute e;
  if (!pw::parse(m.body, &e).ok()) return false;  // PostgreSQL answers it
  pick_up_rules();
  const std::string what =
      e.portal.empty() ? std::string("unnamed portal") : "portal \"" + std::string(e.portal) + "\"";
  auto it = portals_.find(std::string(e.portal));
  if (it == portals_.end()) {
    // Unknown here: never bound (PostgreSQL refuses the Execute), or forgotten over the cap.
    if (portals_lost_generation_ == 0 || portals_lost_generation_ == rules_generation_) {
      return false;
    }
    return refuse_under_current_rules(m, {}, false, what, "bound", "bind it again");
  }
  BoundPortal& b = it->second;
  if (b.rules_generation == rules_generation_) return false;
  // Stale: screen the text of the Parse the portal runs again.
  std::string_view sql;
  const bool text_kept = kept_portal_text(b, &sql);
  if (refuse_under_current_rules(m, sql, text_kept, what, "bound", "bind it again")) return true;
  b.rules_generation = rules_generation_;
  return false;
}

void Session::note_cursors(std::string_view sql) {
  // Without remembered cursors only a DECLARE matters (one scan of the text per statement).
  if (cursors_.empty() ? !may_declare_cursor(sql) : !may_touch_cursor(sql, false)) return;
  rules::lex_sql(sql, cursor_lexed_);
  for (const CursorStatement& c : cursor_statements(cursor_lexed_.code())) {
    switch (c.kind) {
      case CursorStatement::Kind::kDeclare: {
        auto old = cursors_.find(c.name);
        if (old != cursors_.end()) {
          cursor_text_bytes_ -= old->second.sql.size();
          cursors_.erase(old);
        }
        if (cursors_.size() >= kMaxCursors) {
          // Fail closed: a FETCH after a reload of a cursor not remembered is refused.
          cursors_lost_generation_ = rules_generation_;
          break;
        }
        DeclaredCursor& d = cursors_[c.name];
        d.with_hold = c.with_hold;
        d.rules_generation = rules_generation_;
        d.cycle = cycles_sent_ + 1;
        d.masks_version = masks_version_;
        if (cursor_text_bytes_ + sql.size() <= kMaxCursorTextBytes) {
          d.sql = std::string(sql);  // the whole text, as it was screened
          d.text_kept = true;
          cursor_text_bytes_ += sql.size();
        }
        break;
      }
      case CursorStatement::Kind::kClose: {
        auto it = cursors_.find(c.name);
        if (it != cursors_.end()) {
          cursor_text_bytes_ -= it->second.sql.size();
          cursors_.erase(it);
        }
        break;
      }
      case CursorStatement::Kind::kCloseAll:
        cursors_.clear();
        cursor_text_bytes_ = 0;
        cursors_lost_generation_ = 0;
        break;
      case CursorStatement::Kind::kFetch:
        break;
    }
  }
}

bool Session::refuse_stale_cursor(const pw::Message& m, std::string_view sql) {
  if (cursors_.empty() && cursors_lost_generation_ == 0) return false;
  if (!may_touch_cursor(sql, true)) return false;
  pick_up_rules();
  rules::lex_sql(sql, cursor_lexed_);
  for (const CursorStatement& c : cursor_statements(cursor_lexed_.code())) {
    if (c.kind != CursorStatement::Kind::kFetch) continue;
    const std::string what = "cursor \"" + c.name + "\"";
    auto it = cursors_.find(c.name);
    if (it == cursors_.end()) {
      if (cursors_lost_generation_ != 0 && cursors_lost_generation_ != rules_generation_) {
        return refuse_under_current_rules(m, {}, false, what, "declared", "declare it again");
      }
      continue;  // not declared by a text this session sent (see docs: limits)
    }
    const uint64_t declared_under = it->second.rules_generation;
    if (declared_under == rules_generation_) continue;
    // Marked current before its DECLARE is screened again: a DECLARE text that also FETCHes
    // the cursor (one Query, several statements) is not checked a second time. A copy: the
    // re-screen may change cursors_ (it never does today, but the entry must not dangle).
    it->second.rules_generation = rules_generation_;
    const std::string declare = it->second.sql;
    const bool text_kept = it->second.text_kept;
    if (refuse_under_current_rules(m, declare, text_kept, what, "declared", "declare it again")) {
      it = cursors_.find(c.name);
      if (it != cursors_.end()) it->second.rules_generation = declared_under;  // still stale
      return true;
    }
  }
  return false;
}

void Session::note_transaction_objects(const pw::Message& m) {
  if (m.type == 'B') {
    pw::Bind b;
    if (pw::parse(m.body, &b).ok()) note_portal(b.portal, b.statement);
  } else if (m.type == 'C') {
    pw::Close c;
    if (pw::parse(m.body, &c).ok() && c.kind == 'P') portals_.erase(std::string(c.name));
  } else if (m.type == 'Q') {
    pw::Query q;
    if (pw::parse(m.body, &q).ok()) note_cursors(q.sql);
  } else if (m.type == 'P') {
    pw::Parse p;
    if (pw::parse(m.body, &p).ok()) note_cursors(p.query);
  }
}

void Session::forget_transaction_objects() {
  for (auto it = portals_.begin(); it != portals_.end();) {
    it = it->second.cycle <= cycles_received_ ? portals_.erase(it) : std::next(it);
  }
  for (auto it = cursors_.begin(); it != cursors_.end();) {
    if (!it->second.with_hold && it->second.cycle <= cycles_received_) {
      cursor_text_bytes_ -= it->second.sql.size();
      it = cursors_.erase(it);
    } else {
      ++it;
    }
  }
}

void Session::forward(const pw::Message& m, const Decision* d) {
  if (pooled() && refuse_pooled_statement(m)) return;
  if (m.type == 'P') ++parse_serial_;
  note_statement_names(m);
  note_approved_statement(m, d);
  note_transaction_objects(m);
  // Masking and recording know the client's names; the server gets its own (pooled).
  if (results_) note_forwarded(m);
  if (grant_.recording_required) {
    ledger_.on_forwarded(m, d != nullptr && d->recorded, d != nullptr ? d->rule : "");
  }
  if (!pooled() || !append_pooled(m)) {
    up_out_.append(reinterpret_cast<const char*>(m.bytes.data()), m.bytes.size());
  }
  if (m.type == 'Q' || m.type == 'S' || m.type == 'F') ++cycles_sent_;
  if (m.type == 'S') {
    unsynced_ = false;
  } else if (m.type == 'P' || m.type == 'B' || m.type == 'D' || m.type == 'E' || m.type == 'C' ||
             m.type == 'H') {
    unsynced_ = true;
  }
}

bool Session::check_statement(const pw::Message& m, std::string_view sql) {
  Counters& c = worker_->counters();
  if (decision_) {
    Decision d = std::move(*decision_);
    decision_.reset();
    if (d.allow && d.approved && m.type == 'P' &&
        approved_statements_.size() >= kMaxParsedStatements) {
      // Never forget an approved statement (its next Bind would run unchecked): refuse more.
      pw::Parse p;
      if (pw::parse(m.body, &p).ok() && !approved_statements_.contains(std::string(p.statement))) {
        d.allow = false;
        d.sqlstate = "54000";
        d.rule = "approval_spent";
        d.message = "pgwarden: this session holds " + std::to_string(kMaxParsedStatements) +
                    " approved prepared statements: close some (Close) before preparing more";
        emit_statement(p.query, "deny", d.rule, "execute", d.message);
      }
    }
    if (d.allow) {
      bump(c.statements_allowed);
      forward(m, &d);
    } else {
      apply_denial(m, d.sqlstate, d.message, d.rule, d.position);
    }
    return true;
  }
  if (hold_for_results()) return false;
  bump(c.statements_checked);
  ++statements_;
  Screen& screen = worker_->screen();
  pick_up_rules();
  if (pooled()) {
    // Session state would outlive the transaction on a shared connection (pool_restrictions.h).
    rules::lex_sql(sql, pool_lexed_);
    std::string why = transaction_pooling_refusal(pool_lexed_.code());
    if (!why.empty()) {
      bump(c.pool_statements_refused);
      screen_.shape_key = pool_lexed_.shape_key();
      emit_statement(sql, "deny", "transaction_pooling", "prescreen", why);
      apply_denial(m, "0A000", why, "transaction_pooling");
      return true;
    }
  }
  uint64_t screen_start_ns = metrics::monotonic_ns();
  screen.screen(sql, rule_set_.get(), &screen_);
  worker_->metrics().prescreen.observe_ns(metrics::monotonic_ns() - screen_start_ns);
  if (const PrescreenMatch* deny = screen_.first("deny")) {
    std::string msg = "pgwarden: statement denied by rule " + deny->rule;
    if (!deny->message.empty()) msg += ": " + deny->message;
    emit_statement(sql, "deny", deny->rule, "prescreen", msg);
    apply_denial(m, "42501", msg, deny->rule);
    return true;
  }
  if (refuse_stale_cursor(m, sql)) return true;
  switch (recheck_cursor_masks(m, sql)) {
    case MasksCheck::kRefused:
      return true;
    case MasksCheck::kWaiting:
      return false;  // checked again from the start once cp answered
    case MasksCheck::kCurrent:
      break;
  }
  if (const protocol::BudgetState* b = exhausted_budget()) return refuse_for_budget(m, sql, *b);
  if (screen_.first("approve") != nullptr) {
    // An approve rule adds a reviewer to what the policy allows; it must not replace the
    // policy (deny > approve > allow). cp weighs the match (it is in `prescreen`) against the
    // policy and answers approve or deny; the verdict cache is skipped because a cached allow
    // would run the statement without the reviewer.
    escalate_analyse(std::string(sql), screen_);
    return false;
  }
  VerdictKey key{screen_.shape_key, grant_.policy_hash, cache_version()};
  if (const CachedVerdict* v = worker_->cache().find(key)) {
    bump(c.verdict_cache_hits);
    // While cp's audit log fails, a cached allow is confirmed by cp (write-ahead) like a
    // recording-required one: cp refuses it rather than run it unaudited.
    if (v->allow && (grant_.recording_required || worker_->audit_write_ahead())) {
      record_then_resume(sql, Decision{.allow = true, .rule = v->rule}, "cache");
      return false;
    }
    if (v->allow) {
      bump(c.statements_allowed);
      emit_statement(sql, "allow", v->rule, "cache");
      forward(m);
    } else {
      emit_statement(sql, "deny", v->rule, "cache", v->message);
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
    Decision d = std::move(*decision_);
    decision_.reset();
    if (d.allow) {
      forward(m, &d);
    } else {
      apply_denial(m, d.sqlstate, d.message, d.rule, d.position);
    }
    return true;
  }
  if (const protocol::BudgetState* b = exhausted_budget()) {
    std::string what;
    if (m.type == 'E') {
      pw::Execute e;
      std::string_view sql = results_ && pw::parse(m.body, &e).ok() ? results_->portal_sql(e.portal)
                                                                    : std::string_view();
      what = sql.empty() ? "-- Execute of a prepared statement" : std::string(sql);
    } else {
      what = "-- FunctionCall message";
    }
    return refuse_for_budget(m, what, *b);
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

const protocol::BudgetState* Session::exhausted_budget() {
  if (grant_.budgets.empty()) return nullptr;
  const int64_t now = unix_ms();
  for (protocol::BudgetState& b : grant_.budgets) {
    b.roll(now);
    if (b.exhausted_measure() >= 0) return &b;
  }
  return nullptr;
}

bool Session::refuse_for_budget(const pw::Message& m, std::string_view sql,
                                const protocol::BudgetState& b) {
  bump(worker_->counters().statements_budget_refused);
  std::string rule = "budget:" + b.name;
  std::string message = b.refusal_message(grant_.subject, unix_ms());
  if (b.approve) {
    // Each statement past the budget needs a reviewer (the approval request says why).
    escalate_approval(std::string(sql), screen_.shape_key, rule, message);
    return false;
  }
  emit_statement(sql, "deny", rule, "budget", message);
  apply_denial(m, "53400", message, rule);
  return true;
}

void Session::account_locally(std::string_view payload) {
  if (grant_.budgets.empty()) return;
  auto end = protocol::StatementEndFields::decode(payload);
  if (!end.is_ok()) return;
  protocol::BudgetUsage usage;
  usage[protocol::BudgetMeasure::kStatements] = end->executed ? 1 : 0;
  usage[protocol::BudgetMeasure::kRows] = end->rows;
  usage[protocol::BudgetMeasure::kResultBytes] = end->result_bytes;
  usage[protocol::BudgetMeasure::kMaskedCells] = end->masked_cells;
  const int64_t now = unix_ms();
  for (protocol::BudgetState& b : grant_.budgets) {
    b.roll(now);
    b.used.add(usage);
  }
}

void Session::set_budgets(std::vector<protocol::BudgetState> budgets) {
  grant_.budgets = std::move(budgets);
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
  if (m.type == 'P' || m.type == 'E' || m.type == 'B') {
    // Extended protocol: a nonce Parse fails in its place and the server skips to Sync.
    pw::append_parse(up_out_, "pgwarden_denied_" + nonce_, nonce_sql_);
    skip_until_sync_ = true;
    unsynced_ = true;
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
              {"shape_key", protocol::session_hex(shape)},
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
    emit_statement(sql, "deny", d.rule, "cp_error", d.message);
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
    worker_->cache().put(VerdictKey{shape, grant_.policy_hash, cache_version()},
                         CachedVerdict{d.allow, d.rule, d.message});
  }
  if (d.allow && grant_.recording_required) return record_then_resume(sql, std::move(d), "cp");
  emit_statement(sql, d.allow ? "allow" : "deny", rule, "cp",
                 d.allow ? std::string_view() : std::string_view(d.message));
  resume_with(std::move(d));
}

void Session::escalate_approval(std::string sql, uint64_t shape_key, std::string rule,
                                std::string reason) {
  bump(worker_->counters().statements_held_approval);
  waiting_cp_ = true;
  uint64_t seq = ++escalation_seq_;
  json req = {{"session_id", session_id_hex()},
              {"sql", sql},
              {"shape_key", protocol::session_hex(shape_key)},
              {"rule", rule},
              {"reason", reason}};
  end_approval_wait();
  approval_wait_.seq = seq;
  worker_->cp().request(
      "approval", std::move(req), worker_->runtime().config.limits.approval_timeout_ms,
      [w = worker_, id = id_, seq, rule, sql = std::move(sql)](Result<json> r) {
        Session* s = w->find(id);
        if (s == nullptr || s->escalation_seq_ != seq) return;
        s->end_approval_wait();
        Decision d;
        d.rule = rule;
        d.sqlstate = "42501";
        if (!r.is_ok()) {
          d.message = "pgwarden: statement needs an approval (rule " + rule +
                      ") and none was given: " + r.status().message();
          if (const std::string& state = r.status().sqlstate();
              state == "53100" || state == "58030") {
            // cp could not record the request (or audit it): not run, and the client learns
            // it is the gateway's disk, not a reviewer's no.
            d.sqlstate = state;
            d.message = "pgwarden: statement not run: it needs an approval (rule " + rule +
                        ") and " + r.status().message();
          }
        } else {
          d.allow = str_field(*r, "verdict") == "allow";
          d.approved = d.allow;
          d.approval_id = str_field(*r, "approval_id");
          std::string why = str_field(*r, "reason");
          std::string approval = str_field(*r, "approval_id");
          d.message = "pgwarden: approval for rule " + rule + " was denied";
          if (!why.empty()) d.message += ": " + why;
          if (!d.allow && why == "timed out" && !approval.empty()) {
            // Expiry: nobody decided in time. Same SQLSTATE as a denial (the statement was
            // refused, not cancelled by the client), a message that says what happened.
            d.message = "pgwarden: approval request " + approval +
                        " expired: no reviewer decided before its deadline (rule " + rule +
                        "); the statement was not run";
          }
        }
        if (r.is_ok()) s->approval_id_ = str_field(*r, "approval_id");
        if (d.allow && s->grant_.recording_required) {
          s->record_then_resume(sql, std::move(d), "approval");
          s->approval_id_.clear();
          return;
        }
        s->emit_statement(sql, d.allow ? "allow" : "deny", rule, "approval",
                          d.allow ? std::string_view() : std::string_view(d.message));
        s->approval_id_.clear();
        s->resume_with(std::move(d));
      },
      worker_->runtime().config.limits.cp_unavailable_wait_ms);
}

void Session::on_approval_waiting(std::string approval_id, std::string notice, int64_t reminder_ms,
                                  int64_t deadline_unix_ms) {
  if (destroyed_ || state_ == State::kClosing || !waiting_cp_ || approval_wait_.seq == 0 ||
      approval_wait_.seq != escalation_seq_) {
    return;
  }
  approval_wait_.id = std::move(approval_id);
  approval_wait_.notice = std::move(notice);
  approval_wait_.since_ms = monotonic_ms();
  approval_wait_.reminder_ms = reminder_ms;
  approval_wait_.deadline_unix_ms = deadline_unix_ms;
  send_client_notice(approval_wait_.notice);
  arm_approval_reminder();
}

void Session::arm_approval_reminder() {
  if (approval_wait_.reminder_ms <= 0) return;
  reminder_timer_ = worker_->loop().add_timer(
      monotonic_ms() + approval_wait_.reminder_ms,
      [w = worker_, id = id_, seq = approval_wait_.seq] {
        Session* s = w->find(id);
        if (s == nullptr) return;
        s->reminder_timer_ = 0;
        if (s->approval_wait_.seq != seq || s->escalation_seq_ != seq) return;
        int64_t waited_s = (monotonic_ms() - s->approval_wait_.since_ms) / 1000;
        std::string text =
            "still " + s->approval_wait_.notice + " (waited " + std::to_string(waited_s) + " s";
        if (s->approval_wait_.deadline_unix_ms > 0) {
          int64_t left = std::max<int64_t>(0, s->approval_wait_.deadline_unix_ms - unix_ms());
          text += ", expires in " + std::to_string((left + 999) / 1000) + " s";
        }
        text += ")";
        s->send_client_notice(text);
        s->arm_approval_reminder();
      });
}

void Session::end_approval_wait() {
  if (reminder_timer_ != 0) worker_->loop().cancel_timer(reminder_timer_);
  reminder_timer_ = 0;
  approval_wait_ = ApprovalWait{};
}

void Session::send_client_notice(std::string_view message) {
  // Never between the bytes of a message still being relayed (a large row streams through):
  // that notice is skipped; the next reminder comes at a message boundary.
  if (up_pass_remaining_ != 0 || destroyed_ || state_ == State::kClosing) return;
  pw::append_notice_response(client_out_, "NOTICE", "00000", message);
  flush_client();
  if (!destroyed_) update_interest();
}

void Session::resume_with(Decision d) {
  waiting_cp_ = false;
  awaiting_record_ = false;
  hold_.reset();
  decision_ = std::move(d);
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
  awaiting_record_ = true;
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
          // Held for longer than a record's round trip: what waits upstream goes now.
          s->awaiting_record_ = false;
          s->flush_upstream();
          s->update_interest();
          if (s->hold_for_recording([s, payload, d] { s->send_record(payload, d); })) return;
          refused = s->hold_timeout_decision(st.message());
        } else if (st.sqlstate() == "53100" || st.sqlstate() == "58030") {
          // cp could not write the record (disk full / I/O error): fail closed, say why.
          refused.sqlstate = st.sqlstate();
          // cp says which log failed: the session recording, or the audit log.
          refused.rule =
              st.message().starts_with("the audit log") ? "audit_failed" : "recording_failed";
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
                          "recording", refused.message);
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

}  // namespace pgwarden::session
