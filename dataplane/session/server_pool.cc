#include "dataplane/session/server_pool.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace pgwarden::session {

void PooledServer::IdleWatch::on_io(int, uint32_t) { pool_->on_idle_event(s_); }

ServerPool::~ServerPool() { close_idle(); }

void ServerPool::close_idle() {
  for (auto& [key, g] : groups_) {
    for (auto& s : g.idle) unwatch(*s);
    g.live -= static_cast<int>(g.idle.size());
    g.idle.clear();
  }
}

ServerPool::Outcome ServerPool::acquire(const std::string& key, int pool_size, uint64_t waiter,
                                        Ready on_ready, std::unique_ptr<PooledServer>* out) {
  Group& g = groups_[key];
  // Waiters are served first: a newcomer must not overtake them.
  if (g.waiters.empty()) {
    if (!g.idle.empty()) {
      *out = std::move(g.idle.front());
      g.idle.pop_front();
      unwatch(**out);
      return Outcome::kServer;
    }
    if (g.live < pool_size) {
      ++g.live;
      return Outcome::kOpen;
    }
  }
  g.waiters.push_back(Waiter{waiter, std::move(on_ready)});
  return Outcome::kWait;
}

void ServerPool::cancel_wait(const std::string& key, uint64_t waiter) {
  auto it = groups_.find(key);
  if (it == groups_.end()) return;
  auto& w = it->second.waiters;
  for (auto i = w.begin(); i != w.end(); ++i) {
    if (i->id == waiter) {
      w.erase(i);
      return;
    }
  }
}

void ServerPool::release(std::unique_ptr<PooledServer> s) {
  Group& g = groups_[s->key];
  if (!s->stream.open() || s->prepared.size() > kMaxPreparedPerServer) {
    std::string key = s->key;
    s.reset();  // closes the socket
    discard(key);
    return;
  }
  if (!g.waiters.empty()) {
    Waiter w = std::move(g.waiters.front());
    g.waiters.pop_front();
    w.on_ready(std::move(s));
    return;
  }
  if (!s->watch_) s->watch_ = std::make_unique<PooledServer::IdleWatch>(this, s.get());
  // An idle server has nothing to say: any byte (a FATAL from pg_terminate_backend, a shutdown)
  // or a hang-up closes it.
  if (loop_->add(s->stream.fd(), EPOLLIN | EPOLLRDHUP, s->watch_.get()).is_ok()) {
    s->watched_ = true;
  }
  g.idle.push_back(std::move(s));
}

void ServerPool::discard(const std::string& key) {
  Group& g = groups_[key];
  if (g.live > 0) --g.live;
  if (g.waiters.empty()) return;
  Waiter w = std::move(g.waiters.front());
  g.waiters.pop_front();
  ++g.live;  // the slot is the waiter's now
  w.on_ready(nullptr);
}

void ServerPool::on_idle_event(PooledServer* s) {
  auto it = groups_.find(s->key);
  if (it == groups_.end()) return;
  auto& idle = it->second.idle;
  for (auto i = idle.begin(); i != idle.end(); ++i) {
    if (i->get() != s) continue;
    std::unique_ptr<PooledServer> gone = std::move(*i);
    idle.erase(i);
    unwatch(*gone);
    ++closed_idle_;
    spdlog::debug("pool: idle upstream connection (backend pid {}) closed by the server",
                  gone->cancel.process_id);
    std::string key = gone->key;
    // Freed after the current dispatch batch: its watch is the handler being run.
    loop_->defer([g = std::shared_ptr<PooledServer>(std::move(gone))] {});
    discard(key);
    return;
  }
}

void ServerPool::unwatch(PooledServer& s) {
  if (s.watched_) loop_->remove(s.stream.fd());
  s.watched_ = false;
}

size_t ServerPool::idle(const std::string& key) const {
  auto it = groups_.find(key);
  return it == groups_.end() ? 0 : it->second.idle.size();
}

int ServerPool::live(const std::string& key) const {
  auto it = groups_.find(key);
  return it == groups_.end() ? 0 : it->second.live;
}

size_t ServerPool::waiting(const std::string& key) const {
  auto it = groups_.find(key);
  return it == groups_.end() ? 0 : it->second.waiters.size();
}

size_t ServerPool::idle_total() const {
  size_t n = 0;
  for (const auto& [k, g] : groups_) n += g.idle.size();
  return n;
}

}  // namespace pgwarden::session
