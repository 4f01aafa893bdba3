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
  return add(wakefd_, EPOLLIN, &wake_handler_);
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

EventLoop::TimerId EventLoop::add_timer(int64_t at_ms, std::function<void()> fn) {
  TimerId id = next_timer_++;
  timers_.emplace(std::make_pair(at_ms, id), std::move(fn));
  timer_at_.emplace(id, at_ms);
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  auto it = timer_at_.find(id);
  if (it == timer_at_.end()) return;
  timers_.erase({it->second, id});
  timer_at_.erase(it);
}

void EventLoop::WakeHandler::on_io(int, uint32_t) {
  // run_once() passes no fd: drain the loop's own eventfd (an undrained, level-triggered
  // eventfd would wake epoll_wait at once, forever: a busy loop on an idle worker). One read
  // empties it: a non-semaphore eventfd returns the whole counter and resets it to zero.
  uint64_t v;
  [[maybe_unused]] ssize_t n = read(loop_->wakefd_, &v, sizeof(v));
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
    auto node = timers_.extract(timers_.begin());
    timer_at_.erase(node.key().second);
    node.mapped()();
  }
}

void EventLoop::run_deferred() {
  while (!deferred_.empty()) {
    std::vector<std::function<void()>> work;
    work.swap(deferred_);
    for (auto& fn : work) fn();
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
