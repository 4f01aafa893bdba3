// EventLoop: one epoll instance, its timers and a cross-thread wakeup, owned by one worker
// thread. Nothing here is thread-safe except wake().
//
// Handlers are registered per file descriptor; a handler stays valid until remove() is
// called for its fd. Objects that are destroyed while an epoll batch is being dispatched must
// be freed through defer(), which runs after the batch, so no event is delivered to freed
// memory.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <functional>
#include <map>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace pgwarden::session {

// Receives epoll events for one file descriptor.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual void on_io(int fd, uint32_t events) = 0;
};

// Milliseconds on CLOCK_MONOTONIC.
int64_t monotonic_ms();
// Milliseconds since the Unix epoch (for protocol deadlines).
int64_t unix_ms();

class EventLoop {
 public:
  using TimerId = uint64_t;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  Status init();

  // Registers `fd` with interest `events` (EPOLLIN/EPOLLOUT). `handler` must outlive the
  // registration.
  Status add(int fd, uint32_t events, IoHandler* handler);
  Status modify(int fd, uint32_t events, IoHandler* handler);
  void remove(int fd);

  // Runs `fn` once at monotonic time `at_ms`. Returns an id for cancel_timer().
  TimerId add_timer(int64_t at_ms, std::function<void()> fn);
  void cancel_timer(TimerId id);

  // Runs `fn` after the current dispatch batch (deferred frees).
  void defer(std::function<void()> fn) { deferred_.push_back(std::move(fn)); }

  // Runs one iteration: waits at most `max_wait_ms` (or until the next timer), dispatches
  // I/O events, due timers and deferred work.
  void run_once(int max_wait_ms);

  // Thread-safe: interrupts a blocked run_once(); on_wake is called in the loop thread.
  void wake();
  void set_on_wake(std::function<void()> fn) { on_wake_ = std::move(fn); }

 private:
  class WakeHandler : public IoHandler {
   public:
    explicit WakeHandler(EventLoop* loop) : loop_(loop) {}
    void on_io(int fd, uint32_t events) override;

   private:
    EventLoop* loop_;
  };

  void run_timers();
  void run_deferred();

  int epfd_ = -1;
  int wakefd_ = -1;
  WakeHandler wake_handler_{this};
  std::function<void()> on_wake_;
  TimerId next_timer_ = 1;
  using TimerMap = std::map<std::pair<int64_t, TimerId>, std::function<void()>>;
  using TimerIndex = std::unordered_map<TimerId, int64_t>;
  // A timer whose node is gone (fired or cancelled) hands it back here for the next
  // add_timer(): arming and cancelling a timer per statement allocates nothing.
  void recycle(TimerMap::node_type node, TimerIndex::node_type index);

  TimerMap timers_;
  TimerIndex timer_at_;
  std::vector<TimerMap::node_type> spare_timers_;
  std::vector<TimerIndex::node_type> spare_index_;
  std::vector<std::function<void()>> deferred_;
  std::vector<std::function<void()>> deferred_spare_;  // keeps its capacity between batches
  std::vector<epoll_event> events_;
};

}  // namespace pgwarden::session
