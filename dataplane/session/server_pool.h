// ServerPool: the upstream connections of transaction pooling (a target with pool_mode
// "transaction"), per worker. A logged-in upstream connection (PooledServer) serves one agent
// session at a time, from the first message of a transaction until the ReadyForQuery 'I' that
// ends it; then it goes back to the pool for any session with the same pool key.
//
// The pool key is everything the upstream login was made of: address, TLS mode and CA,
// database, role and the complete list of startup parameters (the policy's own, e.g.
// default_transaction_read_only, and the agent's admitted settings). Sessions whose logins
// would differ in any of them never share a connection. `pool_size` caps the live connections
// (idle + serving + logging in) of one key in one worker.
//
// Per worker, not per process: a connection is registered in its worker's epoll loop and is
// handed between that worker's sessions without a lock; moving sockets and OpenSSL state
// between threads would put a lock on every transaction start.
//
// Loop-thread only; not thread-safe. The pool owns idle connections; a session owns the one it
// holds (its Stream moves into the session while it serves it).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "dataplane/session/cancel_map.h"
#include "dataplane/session/event_loop.h"
#include "dataplane/session/stream.h"

namespace pgwarden::session {

// Server-side prepared statements one connection may hold; a connection with more is closed
// when it is released (its statements die with it) instead of going back to the pool.
inline constexpr size_t kMaxPreparedPerServer = 1000;

class ServerPool;

// One logged-in upstream connection of a pool.
struct PooledServer {
  std::string key;
  Stream stream;        // empty (moved into the session) while a session holds it
  CancelTarget cancel;  // address + the backend's own BackendKeyData
  // The ParameterStatus messages of its login, as the server sent them: what a session that
  // logs in on this connection receives.
  std::string parameter_status;
  // Server-side names of the protocol-level prepared statements it holds (pgw_<hash>).
  std::unordered_set<std::string> prepared;
  uint64_t transactions = 0;  // transactions served (for logs and the recording)

 private:
  friend class ServerPool;
  class IdleWatch : public IoHandler {
   public:
    IdleWatch(ServerPool* pool, PooledServer* s) : pool_(pool), s_(s) {}
    void on_io(int, uint32_t) override;

   private:
    ServerPool* pool_;
    PooledServer* s_;
  };
  std::unique_ptr<IdleWatch> watch_;
  bool watched_ = false;
};

class ServerPool {
 public:
  // What acquire() found.
  enum class Outcome {
    kServer,  // an idle connection (in *out)
    kOpen,    // none idle but room: the caller opens (logs in) a new one; its slot is reserved
    kWait,    // full: `on_ready` runs later with a connection, or with null = "open one"
  };
  using Ready = std::function<void(std::unique_ptr<PooledServer>)>;

  explicit ServerPool(EventLoop* loop) : loop_(loop) {}
  ~ServerPool();
  ServerPool(const ServerPool&) = delete;
  ServerPool& operator=(const ServerPool&) = delete;

  // REQUIRES: `waiter` is not already waiting on `key`. `pool_size` >= 1.
  Outcome acquire(const std::string& key, int pool_size, uint64_t waiter, Ready on_ready,
                  std::unique_ptr<PooledServer>* out);
  // The waiter gave up (timeout, session ended). No-op when it is not waiting.
  void cancel_wait(const std::string& key, uint64_t waiter);
  // A clean connection (ReadyForQuery 'I', nothing in flight, its Stream back in `s->stream`)
  // returns: the first waiter gets it, else it is kept idle (and closed if the server speaks
  // while idle). One with too many prepared statements is closed instead.
  void release(std::unique_ptr<PooledServer> s);
  // A live connection or a reserved slot of `key` is gone (closed dirty, login failed): frees
  // its slot; the first waiter, if any, is told to open a new connection.
  void discard(const std::string& key);

  // Counters for tests, logs and metrics.
  size_t idle(const std::string& key) const;
  int live(const std::string& key) const;
  size_t waiting(const std::string& key) const;
  size_t idle_total() const;
  uint64_t closed_idle() const { return closed_idle_; }
  // Closes every idle connection (shutdown).
  void close_idle();

 private:
  struct Waiter {
    uint64_t id;
    Ready on_ready;
  };
  struct Group {
    int live = 0;  // idle + held by sessions + logging in
    std::deque<std::unique_ptr<PooledServer>> idle;
    std::deque<Waiter> waiters;
  };
  friend struct PooledServer;
  void on_idle_event(PooledServer* s);
  void unwatch(PooledServer& s);

  EventLoop* loop_;
  std::unordered_map<std::string, Group> groups_;
  uint64_t closed_idle_ = 0;
};

}  // namespace pgwarden::session
