// Session, transaction pooling: acquiring and releasing pooled upstream connections, the
// pooled login, and protocol-level prepared statements mapped to server-side names
// (server_pool.h, pooled_statements.h, docs/dataplane.md "Transaction pooling").
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "dataplane/pgwire/messages.h"
#include "dataplane/session/pooled_statements.h"
#include "dataplane/session/session.h"
#include "dataplane/session/session_internal.h"
#include "dataplane/session/worker.h"

namespace pgwarden::session {

using namespace detail;  // the helpers every part of Session shares
using nlohmann::json;
namespace pw = pgwarden::pgwire;

std::string Session::pool_key() const {
  // Everything the upstream login is made of; '\0' separates fields no value can contain.
  std::string k;
  auto add = [&k](std::string_view v) {
    k.append(v);
    k.push_back('\0');
  };
  add(grant_.unix_socket);
  add(grant_.host);
  add(std::to_string(grant_.port));
  add(protocol::enum_name(grant_.tls_mode));
  add(grant_.ca_file);
  for (const auto& [name, value] : upstream_startup_parameters()) {
    add(name);
    add(value);
  }
  return k;
}

namespace {

ServerPool::Ready pool_callback(Worker* w, uint64_t id, std::string key) {
  return [w, id, key = std::move(key)](std::unique_ptr<PooledServer> srv) {
    Session* s = w->find(id);
    if (s == nullptr) {
      // Not reached while the session lives (it stops waiting when it ends); be safe anyway.
      if (srv) {
        w->pool().release(std::move(srv));
      } else {
        w->pool().discard(key);
      }
      return;
    }
    s->on_pool_ready(std::move(srv));
  };
}

}  // namespace

void Session::pooled_login() {
  pool_key_ = pool_key();
  std::unique_ptr<PooledServer> s;
  switch (worker_->pool().acquire(pool_key_, grant_.pool_size, id_,
                                  pool_callback(worker_, id_, pool_key_), &s)) {
    case ServerPool::Outcome::kServer:
      on_pool_ready(std::move(s));
      return;
    case ServerPool::Outcome::kOpen:
      holds_slot_ = true;
      connect_upstream();
      return;
    case ServerPool::Outcome::kWait:
      break;
  }
  start_pool_wait();
}

void Session::start_pool_wait() {
  pool_waiting_ = true;
  bump(worker_->counters().pool_waits);
  pool_timer_ = worker_->loop().add_timer(monotonic_ms() + grant_.pool_wait_timeout_ms,
                                          [w = worker_, id = id_] {
                                            Session* s = w->find(id);
                                            if (s == nullptr) return;
                                            s->pool_timer_ = 0;
                                            s->on_pool_wait_timeout();
                                          });
}

bool Session::pool_attach_or_wait() {
  if (server_) return true;
  if (pool_waiting_ || holds_slot_) return false;  // waiting, or a connection is being opened
  std::unique_ptr<PooledServer> s;
  switch (worker_->pool().acquire(pool_key_, grant_.pool_size, id_,
                                  pool_callback(worker_, id_, pool_key_), &s)) {
    case ServerPool::Outcome::kServer:
      attach_server(std::move(s));
      return true;
    case ServerPool::Outcome::kOpen:
      holds_slot_ = true;
      on_pool_ready(nullptr);
      return false;
    case ServerPool::Outcome::kWait:
      break;
  }
  start_pool_wait();
  return false;
}

void Session::on_pool_ready(std::unique_ptr<PooledServer> srv) {
  pool_waiting_ = false;
  if (pool_timer_ != 0) worker_->loop().cancel_timer(pool_timer_);
  pool_timer_ = 0;
  holds_slot_ = true;
  const bool open = srv == nullptr;
  if (!open) {
    attach_server(std::move(srv));
    if (!logged_in_) {
      // Login on a connection that is already logged in: the client gets what the upstream
      // said at that connection's own login (the pool key guarantees the same parameters).
      pw::append_authentication_ok(client_out_);
      client_out_ += server_->parameter_status;
      gateway_key_ = worker_->shared().cancels.add(cancel_target_, &cancel_entry_);
      cancel_registered_ = true;
      pw::append_backend_key_data(client_out_, gateway_key_.process_id, gateway_key_.secret_key);
      pw::append_ready_for_query(client_out_, 'I');
      tx_status_ = 'I';
      on_login_complete();
    }
  }
  // Called from another session's release (or from acquire): continue from the loop, not
  // inside the caller's processing.
  worker_->loop().defer([w = worker_, id = id_, open] {
    Session* s = w->find(id);
    if (s == nullptr || s->state_ == State::kClosing) return;
    if (open) {
      // A free slot: log in a new connection (SCRAM through cp, as at login).
      if (s->logged_in_) {
        s->relogin_ = true;
        s->scram_step_ = 0;
        s->login_parameter_status_.clear();
        s->upstream_framer_ =
            pw::Framer(pw::Direction::kBackend,
                       pw::FramerOptions{kMaxInspectedUpstream, pw::kDefaultMaxStartupBytes});
        s->arm_relogin_timer();
      }
      s->connect_upstream();
      return;
    }
    s->pump();
  });
}

void Session::arm_relogin_timer() {
  if (relogin_timer_ != 0) worker_->loop().cancel_timer(relogin_timer_);
  relogin_timer_ = worker_->loop().add_timer(
      monotonic_ms() + grant_.pool_wait_timeout_ms, [w = worker_, id = id_] {
        Session* s = w->find(id);
        if (s == nullptr) return;
        s->relogin_timer_ = 0;
        if (!s->relogin_ || s->destroyed_) return;
        s->login_failed("08006",
                        "pgwarden: the upstream database of target \"" + s->target_ +
                            "\" did not complete the login of a new connection within " +
                            std::to_string(s->grant_.pool_wait_timeout_ms) +
                            " ms (pool_wait_timeout_ms, transaction pooling)",
                        "upstream_login_timeout");
      });
}

void Session::on_pool_wait_timeout() {
  if (!pool_waiting_ || destroyed_) return;
  worker_->pool().cancel_wait(pool_key_, id_);
  pool_waiting_ = false;
  bump(worker_->counters().pool_wait_timeouts);
  if (!logged_in_) {
    login_failed("53300",
                 "pgwarden: no upstream connection of target \"" + target_ +
                     "\" became free within " + std::to_string(grant_.pool_wait_timeout_ms) +
                     " ms (pool_size " + std::to_string(grant_.pool_size) +
                     ", pool_wait_timeout_ms); connect again later",
                 "pool_timeout");
    return;
  }
  pool_timed_out_ = true;
  pump();
}

void Session::refuse_pool_timeout(uint8_t type) {
  std::string message = "pgwarden: statement not run: no upstream connection of target \"" +
                        target_ + "\" became free within " +
                        std::to_string(grant_.pool_wait_timeout_ms) + " ms (pool_size " +
                        std::to_string(grant_.pool_size) +
                        ", pool_wait_timeout_ms, transaction pooling); retry later";
  emit_event(
      {{"kind", "error"}, {"sqlstate", "53300"}, {"code", "pool_timeout"}, {"message", message}});
  refuse_without_server(type, "53300", message);
}

void Session::refuse_without_server(uint8_t type, std::string_view sqlstate,
                                    std::string_view message) {
  pw::append_error_response(client_out_, "ERROR", sqlstate, message);
  if (type == 'Q' || type == 'F' || type == 'S') {
    pw::append_ready_for_query(client_out_, 'I');
  } else {
    // Extended protocol: as after any error, the rest up to Sync is skipped; that Sync is
    // answered here since no connection was had.
    skip_until_sync_ = true;
    local_sync_pending_ = true;
  }
}

void Session::attach_server(std::unique_ptr<PooledServer> s) {
  server_ = std::move(s);
  holds_slot_ = true;
  upstream_.swap(server_->stream);
  cancel_target_ = server_->cancel;
  if (cancel_registered_) cancel_entry_->set(cancel_target_);
  if (worker_->loop().add(upstream_.fd(), EPOLLIN, &upstream_io_).is_ok()) {
    upstream_registered_ = true;
    upstream_interest_ = EPOLLIN;
  }
  upstream_readable_ = true;
  upstream_hup_ = false;
  tx_status_ = 'I';
  unnamed_on_server_ = false;
  bump(worker_->counters().pool_servers_reused);
  if (logged_in_ && cancel_target_.process_id != last_backend_pid_) {
    // The recording says which upstream backend serves the session's transactions from here.
    emit_event({{"kind", "upstream_backend"}, {"backend_pid", cancel_target_.process_id}});
  }
  last_backend_pid_ = cancel_target_.process_id;
}

void Session::on_pooled_server_opened() {
  bump(worker_->counters().pool_servers_opened);
  server_ = std::make_unique<PooledServer>();
  server_->key = pool_key_;
  server_->cancel = cancel_target_;
  server_->parameter_status = std::move(login_parameter_status_);
  login_parameter_status_.clear();
  unnamed_on_server_ = false;
  if (relogin_) {
    relogin_ = false;
    if (relogin_timer_ != 0) worker_->loop().cancel_timer(relogin_timer_);
    relogin_timer_ = 0;
    state_ = State::kReady;
    if (cancel_registered_) cancel_entry_->set(cancel_target_);
    if (cancel_target_.process_id != last_backend_pid_) {
      emit_event({{"kind", "upstream_backend"}, {"backend_pid", cancel_target_.process_id}});
    }
  }
  last_backend_pid_ = cancel_target_.process_id;
}

bool Session::server_clean() const {
  return tx_status_ == 'I' && cycles_sent_ == cycles_received_ && !unsynced_ && !skip_until_sync_ &&
         up_out_pending() == 0 && up_in_off_ == up_in_.size() && up_pass_remaining_ == 0 &&
         rewrites_.empty() && parses_in_flight_.empty() && closes_in_flight_.empty() &&
         !mask_plan_pending_ && client_pass_remaining_ == 0 && !upstream_hup_ && upstream_.open() &&
         !upstream_.has_buffered_input();
}

void Session::maybe_release_server() {
  if (!pooled() || !server_ || state_ != State::kReady || !server_clean()) return;
  return_server(true);
}

void Session::return_server(bool reusable) {
  if (pool_timer_ != 0) worker_->loop().cancel_timer(pool_timer_);
  pool_timer_ = 0;
  if (pool_waiting_) worker_->pool().cancel_wait(pool_key_, id_);
  pool_waiting_ = false;
  if (!holds_slot_) return;
  if (upstream_registered_) worker_->loop().remove(upstream_.fd());
  upstream_registered_ = false;
  upstream_interest_ = 0;
  upstream_readable_ = false;
  upstream_hup_ = false;
  holds_slot_ = false;
  relogin_ = false;
  if (server_ && reusable && upstream_.open()) {
    server_->stream.swap(upstream_);
    ++server_->transactions;
    worker_->pool().release(std::move(server_));
  } else {
    if (server_ || upstream_.open()) {
      bump(worker_->counters().pool_servers_closed_dirty);
      // A statement still running would go on until it next writes: cancel it. Closing the
      // connection makes the server roll back whatever transaction is open.
      if (cycles_sent_ > cycles_received_ && cancel_target_.process_id != 0) {
        send_cancel_async(cancel_target_);
      }
    }
    upstream_.reset();
    server_.reset();
    worker_->pool().discard(pool_key_);
  }
  if (cancel_registered_) cancel_entry_->clear();
}

bool Session::refuse_pooled_statement(const pw::Message& m) {
  std::string message;
  std::string sqlstate = "26000";
  std::string_view name;
  bool is_statement_ref = false;
  if (m.type == 'P') {
    pw::Parse p;
    if (!pw::parse(m.body, &p).ok() || p.statement.empty()) return false;
    if (prepared_.count(std::string(p.statement)) == 0) return false;
    sqlstate = "42P05";
    message = "prepared statement \"" + std::string(p.statement) + "\" already exists";
  } else if (m.type == 'B') {
    pw::Bind b;
    if (!pw::parse(m.body, &b).ok()) return false;
    name = b.statement;
    is_statement_ref = true;
  } else if (m.type == 'D') {
    pw::Describe d;
    if (!pw::parse(m.body, &d).ok() || d.kind != 'S') return false;
    name = d.name;
    is_statement_ref = true;
  } else {
    return false;
  }
  if (is_statement_ref) {
    if (name.empty()) {
      // The unnamed statement left on this connection by another agent's transaction must not
      // be run by this one.
      if (unnamed_on_server_) return false;
      message = "unnamed prepared statement does not exist";
    } else {
      if (prepared_.count(std::string(name)) != 0) return false;
      message = "prepared statement \"" + std::string(name) + "\" does not exist";
    }
  }
  pw::Message stand_in;
  stand_in.type = 'P';  // fails in the extended protocol's way: skip to Sync
  apply_denial(stand_in, sqlstate, message, "transaction_pooling");
  return true;
}

bool Session::append_pooled(const pw::Message& m) {
  const uint64_t cycle = cycles_sent_ + 1;
  auto in_flight = [&](const std::string& server_name) {
    return std::any_of(parses_in_flight_.begin(), parses_in_flight_.end(),
                       [&](const InFlight& f) { return f.server_name == server_name; });
  };
  switch (m.type) {
    case 'P': {
      pw::Parse p;
      if (!pw::parse(m.body, &p).ok()) return false;
      if (p.statement.empty()) {
        unnamed_on_server_ = true;
        return false;
      }
      std::string server_name = server_statement_name(parse_tail(m));
      if (server_->prepared.count(server_name) != 0 || in_flight(server_name)) {
        // Same text already prepared here (by this or another agent): close and prepare it
        // again so the client's ParseComplete comes from the server, in order.
        pw::append_close(up_out_, 'S', server_name);
        closes_in_flight_.push_back(InFlight{server_name, "", cycle, true});
        server_->prepared.erase(server_name);
      }
      ClientStatement cs;
      cs.server_name = server_name;
      cs.rules_generation = rules_generation_;
      cs.serial = parse_serial_;
      cs.masks_version = masks_version_;
      if (!append_renamed(m, server_name, cs.parse)) return false;
      up_out_ += cs.parse;
      parses_in_flight_.push_back(InFlight{server_name, std::string(p.statement), cycle, false});
      prepared_[std::string(p.statement)] = std::move(cs);
      return true;
    }
    case 'B':
    case 'D': {
      std::string_view name;
      if (m.type == 'B') {
        pw::Bind b;
        if (!pw::parse(m.body, &b).ok()) return false;
        name = b.statement;
      } else {
        pw::Describe d;
        if (!pw::parse(m.body, &d).ok() || d.kind != 'S') return false;
        name = d.name;
      }
      if (name.empty()) return false;
      auto it = prepared_.find(std::string(name));
      if (it == prepared_.end()) return false;  // refused before (refuse_pooled_statement)
      ensure_prepared(it->second);
      return append_renamed(m, it->second.server_name, up_out_);
    }
    case 'C': {
      pw::Close c;
      if (!pw::parse(m.body, &c).ok() || c.kind != 'S') return false;
      if (c.name.empty()) return false;
      // The server statement stays (other agents may share it); the client's name goes. The
      // Close itself names a statement no connection has, so CloseComplete comes in order.
      prepared_.erase(std::string(c.name));
      closes_in_flight_.push_back(InFlight{"", std::string(c.name), cycle, false});
      return append_renamed(m, kNeverPreparedName, up_out_);
    }
    default:
      return false;
  }
}

void Session::ensure_prepared(const ClientStatement& cs) {
  for (const InFlight& f : parses_in_flight_) {
    if (f.server_name == cs.server_name) return;
  }
  if (server_->prepared.count(cs.server_name) != 0) return;
  up_out_ += cs.parse;
  parses_in_flight_.push_back(InFlight{cs.server_name, "", cycles_sent_ + 1, true});
  bump(worker_->counters().pool_statements_prepared);
}

bool Session::start_pooled_bind_stream(uint32_t length) {
  // Bind: portal name, statement name (NUL-terminated), then the parameters.
  constexpr size_t kMaxNames = 2 * 1024;
  const char* body = client_in_.data() + client_in_off_ + 5;
  const size_t avail = std::min(client_in_pending() - 5, static_cast<size_t>(length - 4));
  const size_t scan = std::min(avail, kMaxNames);
  const void* portal_end = memchr(body, 0, scan);
  const void* stmt_end = portal_end == nullptr
                             ? nullptr
                             : memchr(static_cast<const char*>(portal_end) + 1, 0,
                                      scan - (static_cast<const char*>(portal_end) + 1 - body));
  if (stmt_end == nullptr) {
    if (avail < kMaxNames) {
      client_need_ = client_in_pending() + 1;
      return false;
    }
    bump(worker_->counters().protocol_errors);
    send_fatal("08P01", "pgwarden: malformed Bind message (names too long)");
    close_after_flush();
    return true;
  }
  const size_t names = static_cast<const char*>(stmt_end) + 1 - body;
  std::string_view portal(body, static_cast<const char*>(portal_end) - body);
  std::string_view stmt(
      static_cast<const char*>(portal_end) + 1,
      static_cast<const char*>(stmt_end) - static_cast<const char*>(portal_end) - 1);
  last_client_activity_ms_ = monotonic_ms();
  auto it = stmt.empty() ? prepared_.end() : prepared_.find(std::string(stmt));
  if ((stmt.empty() && !unnamed_on_server_) || (!stmt.empty() && it == prepared_.end())) {
    client_skip_ = 1 + static_cast<size_t>(length);
    pw::Message stand_in;
    stand_in.type = 'P';
    apply_denial(stand_in, "26000",
                 stmt.empty() ? std::string("unnamed prepared statement does not exist")
                              : "prepared statement \"" + std::string(stmt) + "\" does not exist",
                 "transaction_pooling");
    return true;
  }
  {
    pw::Message stand_in;
    stand_in.type = 'B';
    if (refuse_spent_approval(stand_in, stmt)) {
      client_skip_ = 1 + static_cast<size_t>(length);
      return true;
    }
  }
  const std::string server_name = stmt.empty() ? std::string() : it->second.server_name;
  if (!stmt.empty()) ensure_prepared(it->second);
  bump(worker_->counters().messages_streamed);
  uint8_t header[5];
  header[0] = 'B';
  pw::store_be32(header + 1, static_cast<uint32_t>(length - stmt.size() + server_name.size()));
  up_out_.append(reinterpret_cast<const char*>(header), 5);
  up_out_.append(portal);
  up_out_.push_back('\0');
  up_out_.append(server_name);
  up_out_.push_back('\0');
  bind_stream_.start();
  bind_stream_.feed(std::string_view(body, names));  // the client's names, for the recording
  client_in_off_ += 5 + names;
  client_pass_remaining_ = length - 4 - names;
  client_pass_bind_ = true;
  unsynced_ = true;
  if (client_pass_remaining_ == 0) finish_client_stream();
  return true;
}

bool Session::on_pooled_completion(uint8_t type) {
  std::deque<InFlight>& q = type == '1' ? parses_in_flight_ : closes_in_flight_;
  if (q.empty()) return false;
  InFlight f = std::move(q.front());
  q.pop_front();
  if (type == '1') {
    if (server_) server_->prepared.insert(f.server_name);
    if (!f.client_name.empty()) {
      auto it = prepared_.find(f.client_name);
      if (it != prepared_.end() && it->second.server_name == f.server_name) {
        it->second.confirmed = true;
      }
    }
  }
  return f.swallow;
}

void Session::on_pooled_cycle_end() {
  // Parses of the cycle that got no ParseComplete failed or were skipped after an error: the
  // client's name was never defined.
  while (!parses_in_flight_.empty() && parses_in_flight_.front().cycle <= cycles_received_) {
    const InFlight& f = parses_in_flight_.front();
    if (!f.client_name.empty()) {
      auto it = prepared_.find(f.client_name);
      if (it != prepared_.end() && !it->second.confirmed &&
          it->second.server_name == f.server_name) {
        prepared_.erase(it);
      }
    }
    parses_in_flight_.pop_front();
  }
  while (!closes_in_flight_.empty() && closes_in_flight_.front().cycle <= cycles_received_) {
    closes_in_flight_.pop_front();
  }
}

}  // namespace pgwarden::session
