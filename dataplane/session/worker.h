// Worker: one thread, one EventLoop, its own listening sockets (SO_REUSEPORT: the kernel
// spreads new connections over workers), its own sessions, cp connection, verdict cache and
// prescreen scratch. Nothing on the per-statement path is shared between workers.
//
// Cross-thread calls (drain(), stop(), set_runtime()) are safe from any thread: they post to
// the worker through its loop's wakeup.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/metrics/histogram.h"
#include "common/metrics/labeled_counters.h"
#include "common/status.h"
#include "dataplane/session/cancel_map.h"
#include "dataplane/session/cp_client.h"
#include "dataplane/session/dp_config.h"
#include "dataplane/session/event_loop.h"
#include "dataplane/session/pending_logins.h"
#include "dataplane/session/screen.h"
#include "dataplane/session/server_pool.h"
#include "dataplane/session/stream.h"
#include "dataplane/session/verdict_cache.h"

namespace pgwarden::session {

#define PGW_SESSION_COUNTERS(X) \
  X(sessions_accepted)          \
  X(sessions_tls)               \
  X(sessions_refused_limit)     \
  X(sessions_login_ok)          \
  X(sessions_login_failed)      \
  X(sessions_closed)            \
  X(statements_checked)         \
  X(statements_allowed)         \
  X(statements_denied)          \
  X(statements_escalated)       \
  X(statements_held_approval)   \
  X(statements_held_recording)  \
  X(statements_budget_refused)  \
  X(results_refused_in_tx)      \
  X(verdict_cache_hits)         \
  X(verdict_cache_misses)       \
  X(cancel_requests)            \
  X(protocol_errors)            \
  X(backpressure_pauses)        \
  X(upstream_sends)             \
  X(upstream_wakeups)           \
  X(messages_streamed)          \
  X(results_streamed)           \
  X(sessions_killed)            \
  X(sessions_reregistered)      \
  X(logins_refused_total_cap)   \
  X(logins_refused_source_cap)  \
  X(logins_evicted_total_cap)   \
  X(logins_evicted_source_cap)  \
  X(logins_startup_timeout)     \
  X(pool_servers_opened)        \
  X(pool_servers_reused)        \
  X(pool_waits)                 \
  X(pool_wait_timeouts)         \
  X(pool_servers_closed_dirty)  \
  X(pool_statements_refused)    \
  X(pool_statements_prepared)

struct Counters {
#define PGW_DECLARE_COUNTER(name) std::atomic<uint64_t> name{0};
  PGW_SESSION_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER
};

// What a worker keeps for the Prometheus endpoint beyond Counters (docs/monitoring.md). Written
// on the worker's loop thread only; read by the metrics thread.
struct WorkerMetrics {
  metrics::LatencyHistogram prescreen;  // Screen::screen() per statement
  metrics::LatencyHistogram analysis;   // `analyse` request -> cp's answer (or its failure)
  metrics::LabeledCounters statements;  // decided statements by (verdict, rule, source)
  metrics::LabeledCounters login_failures{256};  // failed logins by code (upstream_..., ...)
};

// Single-writer increment (only the owning worker writes its counters).
inline void bump(std::atomic<uint64_t>& c) {
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

// Everything a reload replaces at once. Immutable once published.
struct Runtime {
  DataplaneConfig config;
  std::vector<SslCtxPtr> listener_tls;  // per listener; null when the listener has no TLS
  std::shared_ptr<const CompiledRules> rules;
};

// State shared by all workers (not on the per-statement path).
struct Shared {
  CancelMap cancels;
  // Sessions past their password message (authenticating or logged in): max_connections.
  std::atomic<int> connections{0};
  // Set before the workers start. Called on a worker's loop thread with every `rules` event
  // cp pushes (each worker's cp connection gets it): must not block.
  std::function<void(nlohmann::json)> on_rules_pushed;
  // The dataplane_stats event worker 0 sends to cp (any thread).
  std::function<nlohmann::json()> stats_snapshot;
  // Notified (under screening_mu) whenever a worker publishes the rules it screens with
  // (Worker::screening()): the gateway acknowledges a rules generation to cp only once every
  // worker screens with it.
  std::mutex screening_mu;
  std::condition_variable screening_cv;
};

// A pending login that completed a login step less than this ago is never evicted for a
// newcomer (the newcomer is refused instead); idle ones always are (PendingLogins).
inline constexpr int64_t kMinEvictAgeMs = 250;
// A worker logs a full pending-login budget at most this often.
inline constexpr int64_t kFloodLogIntervalMs = 10000;
// Worker 0 sends a dataplane_stats snapshot to cp this often (and right after a rules swap).
inline constexpr int64_t kStatsIntervalMs = 1000;

class Session;

class Worker {
 public:
  Worker(int index, Shared* shared, std::shared_ptr<const Runtime> runtime);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds this worker's listening sockets (SO_REUSEPORT) and connects to cp. Loop thread not
  // started yet.
  Status init();
  void start_thread();
  void join();
  // After join(): closes every session, idle pooled upstream connection and listener now, so
  // that their FINs leave while the process still forwards them (the packet layer of a
  // combined `pgwarden-dp --dpdk` stops after the engine; see main.cc).
  void close_connections();

  // Thread-safe.
  void drain(int64_t deadline_ms);
  void stop();
  void set_runtime(std::shared_ptr<const Runtime> runtime);
  // Worker 0: send a dataplane_stats snapshot to cp now (e.g. a new rules generation runs).
  void request_stats();
  // Sends a dataplane-wide event to cp from the loop thread (dropped if cp is not connected).
  void post_event(nlohmann::json event);
  // The rules this worker's loop screens with: published after the swap that set_runtime()
  // asked for, before the next statement is screened. Any thread.
  const CompiledRules* screening() const { return screening_.load(std::memory_order_acquire); }
  bool finished() const { return finished_.load(); }
  size_t pending_logins() const { return pending_count_.load(); }
  const Counters& counters() const { return counters_; }
  const WorkerMetrics& metrics() const { return metrics_; }
  size_t session_count() const { return session_count_.load(); }

  // Loop-thread API used by sessions.
  int index() const { return index_; }
  EventLoop& loop() { return loop_; }
  CpClient& cp() { return *cp_; }
  VerdictCache& cache() { return cache_; }
  // Transaction pooling: this worker's upstream connections (server_pool.h).
  ServerPool& pool() { return pool_; }
  Screen& screen() { return screen_; }
  Counters& counters() { return counters_; }
  WorkerMetrics& metrics() { return metrics_; }
  Shared& shared() { return *shared_; }
  const Runtime& runtime() const { return *runtime_; }
  bool draining() const { return draining_; }
  // cp said its audit log cannot be written (event `audit`): every session sends the allowed
  // statements of its verdict cache as write-ahead records, which cp refuses while it fails.
  bool audit_write_ahead() const { return audit_write_ahead_; }
  Session* find(uint64_t id);
  // Schedules the session's destruction after the current dispatch batch.
  void release(Session* s);
  // Session `sid` (`sid_hex`) ended after its login with cp ticket `ticket`. Until cp has
  // surely recorded its session_end (it was not connected, or the event may still have been on
  // the ring when cp stopped), the next connection re-registers it as ended, so that cp
  // records the events kept for it and seals its recording (docs/protocol.md "reregister").
  void note_ended(uint64_t sid, std::string sid_hex, std::string ticket);
  // Session `id` finished its part of the login (or is ending): its pending slot is free.
  void pending_done(uint64_t id);
  // Session `id`, still pending, completed a step of its login (see PendingLogins).
  void pending_progress(uint64_t id);
  // Client TLS context for upstream connections (cached per mode and CA file).
  Result<SSL_CTX*> upstream_tls(bool verify, const std::string& ca_file);

 private:
  class Listener : public IoHandler {
   public:
    Listener(Worker* w, int fd, size_t index) : w_(w), fd_(fd), index_(index) {}
    void on_io(int, uint32_t) override { w_->accept_from(fd_, index_); }
    int fd() const { return fd_; }

   private:
    Worker* w_;
    int fd_;
    size_t index_;
  };

  void run();
  void accept_from(int fd, size_t listener_index);
  // Admits connection `id` (socket `fd`) from `peer` into the pending-login budget (evicting
  // another pending login if needed); false when it is refused (the caller closes it).
  bool admit_pending(uint64_t id, int fd, const sockaddr_storage& peer);
  void send_stats();
  void stats_tick();  // worker 0: send_stats() every kStatsIntervalMs
  void on_wake();
  void close_listeners();
  // cp pushed an event (kind "kill": end that session with its SQLSTATE and message).
  void on_cp_event(const nlohmann::json& event);
  // A new cp connection: re-registers the sessions of ended_ (note_ended()).
  void reregister_ended();
  // Forgets the entries of ended_ that cp has surely recorded: those that ended more than
  // kEndedKeepMs ago on the connection that is still up; the oldest beyond kEndedMax.
  void prune_ended();

  int index_;
  Shared* shared_;
  std::shared_ptr<const Runtime> runtime_;
  EventLoop loop_;
  ServerPool pool_{&loop_};  // before sessions_: sessions give their connections back
  std::unique_ptr<CpClient> cp_;
  VerdictCache cache_;
  Screen screen_;
  Counters counters_;
  WorkerMetrics metrics_;
  PendingLogins pending_;
  std::atomic<size_t> pending_count_{0};
  int64_t flood_reported_ms_ = -kFloodLogIntervalMs;
  uint64_t flood_unreported_ = 0;
  EventLoop::TimerId stats_timer_ = 0;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;
  uint64_t next_session_ = 1;
  struct EndedSession {
    uint64_t sid = 0;
    std::string sid_hex;
    std::string ticket;
    int64_t ended_ms = 0;
    uint64_t connection = 0;  // CpClient::connections_ready() when it ended
    bool asking = false;      // its reregister is in flight
  };
  static constexpr int64_t kEndedKeepMs = 10000;
  static constexpr size_t kEndedMax = 4096;
  std::deque<EndedSession> ended_;  // oldest first
  std::map<std::string, SslCtxPtr> upstream_tls_;
  bool draining_ = false;
  bool audit_write_ahead_ = false;
  int64_t drain_deadline_ms_ = 0;
  std::thread thread_;
  std::atomic<bool> finished_{false};
  std::atomic<size_t> session_count_{0};

  // Cross-thread mailbox.
  std::mutex mu_;
  bool stop_requested_ = false;
  bool drain_requested_ = false;
  int64_t requested_drain_deadline_ = 0;
  std::shared_ptr<const Runtime> pending_runtime_;
  bool stats_requested_ = false;
  std::vector<nlohmann::json> posted_events_;
  std::atomic<bool> stopping_{false};
  std::atomic<const CompiledRules*> screening_{nullptr};
};

}  // namespace pgwarden::session
