#include "dataplane/session/worker.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "dataplane/pgwire/messages.h"
#include "dataplane/session/session.h"

namespace pgwarden::session {

namespace pw = pgwarden::pgwire;

namespace {

Result<int> bind_listener(const ListenerConfig& l) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(l.port);
  int gai = getaddrinfo(l.address.c_str(), port.c_str(), &hints, &res);
  if (gai != 0 || res == nullptr) {
    return invalid_argument("cannot resolve listener address " + l.address + ": " +
                            gai_strerror(gai));
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return internal_error(std::string("socket: ") + strerror(errno));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  int rc = bind(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  // A login ramp of thousands of agents arrives faster than one accept batch: ask for the
  // longest accept queue the kernel allows (it caps the backlog at net.core.somaxconn, 4096 by
  // default since Linux 5.4; per worker, SO_REUSEPORT gives each its own queue).
  constexpr int kListenBacklog = 65535;
  if (rc != 0 || listen(fd, kListenBacklog) != 0) {
    std::string err = strerror(errno);
    close(fd);
    return unavailable("cannot listen on " + l.address + ":" + std::to_string(l.port) + ": " + err);
  }
  return fd;
}

// The client's IP address without its port: the unit of the per-source pending-login cap.
std::string source_address(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, host, sizeof host);
  } else if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, host, sizeof host);
  } else {
    return "local";
  }
  return host;
}

// Each worker enforces its share of a process-wide limit (SO_REUSEPORT spreads connections
// evenly over the workers).
size_t worker_share(int limit, int workers) {
  int w = std::max(1, workers);
  return static_cast<size_t>(std::max(1, (limit + w - 1) / w));
}

}  // namespace

Worker::Worker(int index, Shared* shared, std::shared_ptr<const Runtime> runtime)
    : index_(index),
      shared_(shared),
      runtime_(std::move(runtime)),
      cache_(runtime_->config.limits.verdict_cache_entries),
      screening_(runtime_->rules.get()) {}

Worker::~Worker() {
  join();
  sessions_.clear();
  close_listeners();
}

Status Worker::init() {
  PGW_RETURN_IF_ERROR(loop_.init());
  loop_.set_on_wake([this] { on_wake(); });
  for (size_t i = 0; i < runtime_->config.listeners.size(); ++i) {
    auto fd = bind_listener(runtime_->config.listeners[i]);
    if (!fd.is_ok()) return fd.status();
    auto l = std::make_unique<Listener>(this, *fd, i);
    PGW_RETURN_IF_ERROR(loop_.add(*fd, EPOLLIN, l.get()));
    listeners_.push_back(std::move(l));
  }
  screen_.set_rules(runtime_->rules);
  cp_ = std::make_unique<CpClient>(&loop_, runtime_->config.controlplane_socket);
  cp_->set_silence_limit_ms(runtime_->config.limits.cp_unavailable_wait_ms);
  cp_->set_on_ready_change([this](bool up) {
    if (index_ == 0) {
      if (up)
        spdlog::info("connected to the control plane");
      else
        spdlog::warn(
            "control plane connection lost; logins and statements that need it wait for it "
            "(limits.cp_unavailable_wait_ms)");
    }
    if (!up) return;
    // A (re)connected cp tells us after its hello answer if its audit log is failing.
    audit_write_ahead_ = false;
    // A restarted cp knows none of our sessions: re-register each live one with its ticket
    // before any of its queued requests goes out (CpClient sends those after this callback).
    std::vector<Session*> live;
    for (auto& [id, s] : sessions_) {
      if (!s->destroyed()) live.push_back(s.get());
    }
    for (Session* s : live) s->reregister();
    reregister_ended();
    if (index_ == 0) send_stats();
  });
  // cp -> dp events: `kill` ends a session, `rules` installs a pushed rules generation,
  // `approval_waiting` tells a held client which approval request it waits for.
  cp_->set_on_event([this](nlohmann::json ev) {
    if (ev.value("kind", "") == "rules") {
      if (shared_->on_rules_pushed) shared_->on_rules_pushed(std::move(ev));
      return;
    }
    on_cp_event(ev);
  });
  return Status::ok();
}

void Worker::start_thread() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::close_connections() {
  sessions_.clear();
  session_count_.store(0);
  pool_.close_idle();
  close_listeners();
}

void Worker::drain(int64_t deadline_ms) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    drain_requested_ = true;
    requested_drain_deadline_ = deadline_ms;
  }
  loop_.wake();
}

void Worker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested_ = true;
  }
  loop_.wake();
}

void Worker::set_runtime(std::shared_ptr<const Runtime> runtime) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_runtime_ = std::move(runtime);
  }
  loop_.wake();
}

void Worker::request_stats() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_requested_ = true;
  }
  loop_.wake();
}

void Worker::post_event(nlohmann::json event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    posted_events_.push_back(std::move(event));
  }
  loop_.wake();
}

void Worker::stats_tick() {
  send_stats();
  stats_timer_ = loop_.add_timer(monotonic_ms() + kStatsIntervalMs, [this] { stats_tick(); });
}

void Worker::send_stats() {
  if (index_ != 0 || !shared_->stats_snapshot || !cp_ || !cp_->ready()) return;
  cp_->event(shared_->stats_snapshot());
}

void Worker::close_listeners() {
  for (auto& l : listeners_) {
    loop_.remove(l->fd());
    close(l->fd());
  }
  listeners_.clear();
}

void Worker::on_wake() {
  bool stop = false;
  bool drain = false;
  int64_t deadline = 0;
  std::shared_ptr<const Runtime> rt;
  std::vector<nlohmann::json> events;
  bool stats = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop = stop_requested_;
    drain = drain_requested_ && !draining_;
    deadline = requested_drain_deadline_;
    rt = std::move(pending_runtime_);
    events.swap(posted_events_);
    stats = stats_requested_;
    stats_requested_ = false;
  }
  if (rt) {
    // Sessions read limits from the runtime on every use; swapping the pointer is the whole
    // reload (connections already open keep their TLS state, new ones get the new context).
    runtime_ = std::move(rt);
    if (cp_) cp_->set_silence_limit_ms(runtime_->config.limits.cp_unavailable_wait_ms);
    screen_.set_rules(runtime_->rules);
    cache_.clear();
    {
      std::lock_guard<std::mutex> lock(shared_->screening_mu);
      screening_.store(runtime_->rules.get(), std::memory_order_release);
    }
    shared_->screening_cv.notify_all();
  }
  // Outside mu_: the stats snapshot takes the gateway's runtime lock, which is held while
  // the gateway posts to this worker.
  for (auto& ev : events) cp_->event(std::move(ev));
  if (stats) send_stats();
  if (drain) {
    draining_ = true;
    drain_deadline_ms_ = deadline;
    close_listeners();
    std::vector<Session*> all;
    for (auto& [id, s] : sessions_) all.push_back(s.get());
    for (Session* s : all) s->on_drain();
    loop_.add_timer(deadline, [this] {
      std::vector<Session*> rest;
      for (auto& [id, s] : sessions_) rest.push_back(s.get());
      for (Session* s : rest) {
        s->terminate("57P01",
                     "pgwarden: terminating connection because the gateway is shutting down");
      }
    });
  }
  if (stop) stopping_ = true;
}

void Worker::run() {
  cp_->start();
  if (index_ == 0) stats_tick();
  for (;;) {
    loop_.run_once(1000);
    if (stopping_) break;
    if (draining_ && sessions_.empty()) break;
    // Sessions that did not finish flushing within the deadline are cut.
    if (draining_ && monotonic_ms() > drain_deadline_ms_ + 3000) break;
  }
  sessions_.clear();
  loop_.run_once(0);
  cp_->stop();
  finished_ = true;
}

void Worker::accept_from(int listen_fd, size_t listener_index) {
  for (int i = 0; i < 64; ++i) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    int fd =
        accept4(listen_fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        spdlog::warn("accept: {}", strerror(errno));
      }
      return;
    }
    // Far beyond the limit, do not even read the startup packet: protects file descriptors.
    if (shared_->connections.load() > 2 * runtime_->config.limits.max_connections + 64) {
      bump(counters_.sessions_refused_limit);
      close(fd);
      continue;
    }
    uint64_t id = next_session_++;
    if (!admit_pending(id, fd, peer)) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto s = std::make_unique<Session>(this, id, fd, listener_index, peer);
    Session* raw = s.get();
    sessions_.emplace(id, std::move(s));
    session_count_.store(sessions_.size());
    raw->start();
  }
}

void Worker::on_cp_event(const nlohmann::json& ev) {
  const std::string kind = ev.value("kind", std::string());
  if (kind == "audit") {
    audit_write_ahead_ = ev.value("failing", false);
    return;
  }
  if (kind == "approval_waiting") {
    std::string sid = ev.value("session_id", std::string());
    auto num = [&](const char* key) {
      auto it = ev.find(key);
      return it != ev.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t{0};
    };
    for (auto& [id, s] : sessions_) {
      if (!s->destroyed() && s->cp_session_id() == sid) {
        s->on_approval_waiting(ev.value("approval_id", std::string()),
                               ev.value("notice", std::string()), num("reminder_ms"),
                               num("deadline_ms"));
        return;
      }
    }
    return;
  }
  if (kind == "budget") {
    std::string sid = ev.value("session_id", std::string());
    auto budgets = ev.contains("budgets") ? parse_budgets(ev["budgets"])
                                          : Result<std::vector<protocol::BudgetState>>(
                                                internal_error("budget event without budgets"));
    for (auto& [id, s] : sessions_) {
      if (s->destroyed() || s->cp_session_id() != sid) continue;
      if (!budgets.is_ok()) {
        // The session would run on stale budgets: end it rather than guess (fail closed).
        s->kill("57P01", "pgwarden: terminating connection: " + budgets.status().message());
      } else {
        s->set_budgets(std::move(*budgets));
      }
      return;
    }
    return;
  }
  if (kind != "kill") return;
  std::string sid = ev.value("session_id", std::string());
  std::string sqlstate = ev.value("sqlstate", std::string("57P01"));
  std::string message = ev.value("message", std::string("pgwarden: terminating connection"));
  for (auto& [id, s] : sessions_) {
    if (!s->destroyed() && s->cp_session_id() == sid) {
      bump(counters_.sessions_killed);
      s->kill(sqlstate, message);
      return;
    }
  }
}

bool Worker::admit_pending(uint64_t id, int fd, const sockaddr_storage& peer) {
  const Limits& limits = runtime_->config.limits;
  const int workers = runtime_->config.workers;
  PendingLogins::Limits share{worker_share(limits.max_pending_logins, workers),
                              worker_share(limits.max_pending_logins_per_source, workers),
                              kMinEvictAgeMs};
  const std::string source = source_address(peer);
  // A victim whose first message already arrived is a real client the loop has not served
  // yet: let it complete its step (then it is no longer the one that did least) — a few times
  // at most, each a non-blocking read.
  for (int i = 0; i < 4; ++i) {
    uint64_t v = pending_.victim(source, monotonic_ms(), share);
    Session* s = v != 0 ? find(v) : nullptr;
    if (s == nullptr) break;
    s->catch_up();
    if (pending_.victim(source, monotonic_ms(), share) == v) break;  // it had nothing to say
  }
  PendingLogins::Decision d = pending_.admit(id, source, monotonic_ms(), share);
  pending_count_.store(pending_.size());
  const bool per_source = d.cap == PendingLogins::Cap::kPerSource;
  const std::string limit_text =
      per_source ? "limits.max_pending_logins_per_source = " +
                       std::to_string(limits.max_pending_logins_per_source)
                 : "limits.max_pending_logins = " + std::to_string(limits.max_pending_logins);
  if (d.cap != PendingLogins::Cap::kNone) {
    // One log line per worker per kFloodLogIntervalMs, not one per connection.
    ++flood_unreported_;
    int64_t now = monotonic_ms();
    if (now - flood_reported_ms_ >= kFloodLogIntervalMs) {
      spdlog::warn(
          "worker {}: pending-login budget full ({}): {} connection(s) refused or "
          "evicted since the last report, {} pending",
          index_, limit_text, flood_unreported_, pending_.size());
      flood_reported_ms_ = now;
      flood_unreported_ = 0;
    }
  }
  if (d.evict != 0) {
    bump(per_source ? counters_.logins_evicted_source_cap : counters_.logins_evicted_total_cap);
    if (Session* victim = find(d.evict)) {
      victim->evict_pending("pgwarden: too many connections that have not completed their login" +
                            std::string(per_source ? " from this address" : "") + " (" +
                            limit_text + "); this one had made the least progress, connect again");
    }
  }
  if (d.admitted) return true;
  bump(per_source ? counters_.logins_refused_source_cap : counters_.logins_refused_total_cap);
  // No session exists for it: a best-effort FATAL 53300 (libpq shows it whether it sent an
  // SSLRequest or a StartupMessage first), then the caller closes.
  std::string out;
  pw::append_error_response(out, "FATAL", "53300",
                            "pgwarden: too many connections that have not completed their login" +
                                std::string(per_source ? " from this address" : "") + " (" +
                                limit_text + "); connect again shortly");
  (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  return false;
}

void Worker::pending_done(uint64_t id) {
  pending_.remove(id);
  pending_count_.store(pending_.size());
}

void Worker::pending_progress(uint64_t id) { pending_.progress(id, monotonic_ms()); }

void Worker::note_ended(uint64_t sid, std::string sid_hex, std::string ticket) {
  prune_ended();
  ended_.push_back(EndedSession{.sid = sid,
                                .sid_hex = std::move(sid_hex),
                                .ticket = std::move(ticket),
                                .ended_ms = monotonic_ms(),
                                .connection = cp_->connections_ready()});
}

void Worker::prune_ended() {
  const int64_t now = monotonic_ms();
  const uint64_t connection = cp_->connections_ready();
  const bool up = cp_->ready();
  size_t excess = ended_.size() > kEndedMax ? ended_.size() - kEndedMax : 0;
  std::erase_if(ended_, [&](const EndedSession& e) {
    const bool drop =
        !e.asking &&
        (excess > 0 || (up && e.connection == connection && now - e.ended_ms > kEndedKeepMs));
    if (!drop) return false;
    if (excess > 0) --excess;
    cp_->forget_lost(e.sid);
    return true;
  });
}

void Worker::reregister_ended() {
  prune_ended();
  for (EndedSession& e : ended_) {
    if (e.asking) continue;
    e.asking = true;
    nlohmann::json request{{"session_id", e.sid_hex}, {"ticket", e.ticket}, {"ended", true}};
    nlohmann::json lost = cp_->take_lost(e.sid);
    if (!lost.is_null()) request["lost"] = lost;
    cp_->request("reregister", std::move(request), runtime_->config.limits.escalation_timeout_ms,
                 [this, sid = e.sid, lost = std::move(lost)](Result<nlohmann::json> r) {
                   auto it = std::find_if(ended_.begin(), ended_.end(),
                                          [sid](const EndedSession& x) { return x.sid == sid; });
                   if (it == ended_.end()) return;
                   if (!r.is_ok() && r.status().code() == StatusCode::kUnavailable &&
                       r.status().sqlstate() != "57P01") {
                     // cp went away again: the next connection asks again.
                     cp_->restore_lost(sid, lost);
                     it->asking = false;
                     return;
                   }
                   // Recorded (its events follow the answer), or cp will not take it.
                   if (!r.is_ok()) {
                     spdlog::warn("session {:016x}: its end was not recorded: {}", sid,
                                  r.status().message());
                   }
                   cp_->forget_lost(sid);
                   ended_.erase(it);
                 });
  }
}

Session* Worker::find(uint64_t id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->destroyed()) return nullptr;
  return it->second.get();
}

void Worker::release(Session* s) {
  uint64_t id = s->id();
  loop_.defer([this, id] {
    sessions_.erase(id);
    session_count_.store(sessions_.size());
  });
}

Result<SSL_CTX*> Worker::upstream_tls(bool verify, const std::string& ca_file) {
  std::string key = (verify ? "v:" : "n:") + ca_file;
  auto it = upstream_tls_.find(key);
  if (it != upstream_tls_.end()) return it->second.get();
  auto ctx = make_client_tls_context(verify, ca_file);
  if (!ctx.is_ok()) return ctx.status();
  SSL_CTX* raw = ctx->get();
  upstream_tls_.emplace(key, std::move(*ctx));
  return raw;
}

}  // namespace pgwarden::session
