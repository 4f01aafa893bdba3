// Worker: one thread, one EventLoop, its own listening sockets (SO_REUSEPORT: the kernel
// spreads new connections over workers), its own sessions, cp connection, verdict cache and
// prescreen scratch. Nothing on the per-statement path is shared between workers.
//
// Cross-thread calls (drain(), stop(), set_runtime()) are safe from any thread: they post to
// the worker through its loop's wakeup.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "dataplane/session/cancel_map.h"
#include "dataplane/session/cp_client.h"
#include "dataplane/session/dp_config.h"
#include "dataplane/session/event_loop.h"
#include "dataplane/session/screen.h"
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
  X(results_refused_in_tx)      \
  X(verdict_cache_hits)         \
  X(verdict_cache_misses)       \
  X(cancel_requests)            \
  X(protocol_errors)            \
  X(backpressure_pauses)        \
  X(sessions_killed)            \
  X(sessions_reregistered)

struct Counters {
#define PGW_DECLARE_COUNTER(name) std::atomic<uint64_t> name{0};
  PGW_SESSION_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER
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
  std::atomic<int> connections{0};
};

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

  // Thread-safe.
  void drain(int64_t deadline_ms);
  void stop();
  void set_runtime(std::shared_ptr<const Runtime> runtime);
  bool finished() const { return finished_.load(); }
  const Counters& counters() const { return counters_; }
  size_t session_count() const { return session_count_.load(); }

  // Loop-thread API used by sessions.
  int index() const { return index_; }
  EventLoop& loop() { return loop_; }
  CpClient& cp() { return *cp_; }
  VerdictCache& cache() { return cache_; }
  Screen& screen() { return screen_; }
  Counters& counters() { return counters_; }
  Shared& shared() { return *shared_; }
  const Runtime& runtime() const { return *runtime_; }
  bool draining() const { return draining_; }
  Session* find(uint64_t id);
  // Schedules the session's destruction after the current dispatch batch.
  void release(Session* s);
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
  void on_wake();
  void close_listeners();
  // cp pushed an event (kind "kill": end that session with its SQLSTATE and message).
  void on_cp_event(const nlohmann::json& event);

  int index_;
  Shared* shared_;
  std::shared_ptr<const Runtime> runtime_;
  EventLoop loop_;
  std::unique_ptr<CpClient> cp_;
  VerdictCache cache_;
  Screen screen_;
  Counters counters_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;
  uint64_t next_session_ = 1;
  std::map<std::string, SslCtxPtr> upstream_tls_;
  bool draining_ = false;
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
  std::atomic<bool> stopping_{false};
};

}  // namespace pgwarden::session
