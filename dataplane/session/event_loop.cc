#include "dataplane/session/event_loop.h"

#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace pgwarden::session {

int64_t monotonic_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t unix_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

EventLoop::EventLoop() : events_(256) {}

EventLoop::~EventLoop() {
  run_deferred();
  if (wakefd_ >= 0) close(wakefd_);
  if (epfd_ >= 0) close(epfd_);
}

Status EventLoop::init() {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) return internal_error(std::string("epoll_create1: ") + strerror(errno));
  wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd_ < 0) return internal_error(std::string("eventfd: ") + strerror(errno));
  // Edge-triggered: every write() to an eventfd is a new edge, so the counter need never be
  // read (a read per wake-up would be one system call for nothing; it cannot overflow: it
  // saturates only after 2^64 - 2 wake-ups).
  return add(wakefd_, EPOLLIN | EPOLLET, &wake_handler_);
}

Status EventLoop::add(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    return internal_error(std::string("epoll_ctl add: ") + strerror(errno));
  }
  return Status::ok();
}

Status EventLoop::modify(int fd, uint32_t events, IoHandler* handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.ptr = handler;
  if (epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) != 0) {
    return internal_error(std::string("epoll_ctl mod: ") + strerror(errno));
  }
  return Status::ok();
}

void EventLoop::remove(int fd) { epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr); }

namespace {
// Spare timer nodes kept for reuse (enough for the timers a busy worker arms per iteration).
constexpr size_t kSpareTimerNodes = 256;
}  // namespace

EventLoop::TimerId EventLoop::add_timer(int64_t at_ms, std::function<void()> fn) {
  TimerId id = next_timer_++;
  if (spare_timers_.empty()) {
    timers_.emplace(std::make_pair(at_ms, id), std::move(fn));
    timer_at_.emplace(id, at_ms);
    return id;
  }
  TimerMap::node_type node = std::move(spare_timers_.back());
  spare_timers_.pop_back();
  node.key() = {at_ms, id};
  node.mapped() = std::move(fn);
  timers_.insert(std::move(node));
  TimerIndex::node_type index = std::move(spare_index_.back());
  spare_index_.pop_back();
  index.key() = id;
  index.mapped() = at_ms;
  timer_at_.insert(std::move(index));
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  auto it = timer_at_.find(id);
  if (it == timer_at_.end()) return;
  TimerMap::node_type node = timers_.extract({it->second, id});
  recycle(std::move(node), timer_at_.extract(it));
}

void EventLoop::recycle(TimerMap::node_type node, TimerIndex::node_type index) {
  if (spare_timers_.size() >= kSpareTimerNodes || node.empty() || index.empty()) return;
  node.mapped() = nullptr;  // the callback's captures are released now, not at reuse
  spare_timers_.push_back(std::move(node));
  spare_index_.push_back(std::move(index));
}

void EventLoop::WakeHandler::on_io(int, uint32_t) {
  // The eventfd is edge-triggered (init()): nothing to read.
  if (loop_->on_wake_) loop_->on_wake_();
}

void EventLoop::wake() {
  uint64_t one = 1;
  // A full counter already guarantees a wakeup, so a failed write needs no handling.
  [[maybe_unused]] ssize_t n = write(wakefd_, &one, sizeof(one));
}

void EventLoop::run_timers() {
  int64_t now = monotonic_ms();
  while (!timers_.empty() && timers_.begin()->first.first <= now) {
    TimerMap::node_type node = timers_.extract(timers_.begin());
    TimerIndex::node_type index = timer_at_.extract(node.key().second);
    node.mapped()();
    recycle(std::move(node), std::move(index));
  }
}

void EventLoop::run_deferred() {
  while (!deferred_.empty()) {
    // Swap in the spare vector (cleared, capacity kept) so that defer() does not allocate.
    std::vector<std::function<void()>> work = std::move(deferred_spare_);
    work.swap(deferred_);
    for (auto& fn : work) fn();
    work.clear();
    deferred_spare_ = std::move(work);
  }
}

void EventLoop::run_once(int max_wait_ms) {
  int wait = max_wait_ms;
  if (!timers_.empty()) {
    int64_t until = timers_.begin()->first.first - monotonic_ms();
    if (until < 0) until = 0;
    if (until < wait) wait = static_cast<int>(until);
  }
  if (!deferred_.empty()) wait = 0;
  int n = epoll_wait(epfd_, events_.data(), static_cast<int>(events_.size()), wait);
  for (int i = 0; i < n; ++i) {
    auto* handler = static_cast<IoHandler*>(events_[i].data.ptr);
    handler->on_io(-1, events_[i].events);
  }
  run_deferred();
  run_timers();
  run_deferred();
}

}  // namespace pgwarden::session
