#include "dataplane/session/pending_logins.h"

namespace pgwarden::session {

uint64_t PendingLogins::evictable(const std::string& source, int64_t now_ms,
                                  const Limits& limits) const {
  auto it = by_source_.find(source);
  if (it == by_source_.end() || it->second.empty()) return 0;
  const auto& [steps, progress_ms, id] = *it->second.begin();
  if (steps == 0) return id;
  return now_ms - progress_ms >= limits.min_evict_age_ms ? id : 0;
}

PendingLogins::Decision PendingLogins::choose(const std::string& source, int64_t now_ms,
                                              const Limits& limits) const {
  Decision d;
  if (from(source) >= limits.per_source) {
    d.cap = Cap::kPerSource;
    d.evict = evictable(source, now_ms, limits);
  } else if (size() >= limits.total) {
    d.cap = Cap::kTotal;
    // Of the addresses that hold an evictable pending login, the one with the most pending
    // logins (ties: the one whose victim did least) pays. An address whose pending logins
    // are all real ones making progress is passed over, not a reason to refuse: while any
    // address holds an idle or stalled connection, that one goes.
    const Queue* worst = nullptr;
    uint64_t worst_victim = 0;
    for (const auto& [src, queue] : by_source_) {
      if (queue.empty()) continue;
      if (worst != nullptr && (queue.size() < worst->size() ||
                               (queue.size() == worst->size() && *worst->begin() < *queue.begin()))) {
        continue;
      }
      if (uint64_t victim = evictable(src, now_ms, limits); victim != 0) {
        worst = &queue;
        worst_victim = victim;
      }
    }
    d.evict = worst_victim;
  }
  return d;
}

uint64_t PendingLogins::victim(const std::string& source, int64_t now_ms,
                               const Limits& limits) const {
  return choose(source, now_ms, limits).evict;
}

PendingLogins::Decision PendingLogins::admit(uint64_t id, const std::string& source, int64_t now_ms,
                                             const Limits& limits) {
  Decision d = choose(source, now_ms, limits);
  if (d.cap != Cap::kNone) {
    if (d.evict == 0) return d;
    remove(d.evict);
  }
  by_id_[id] = Entry{source, 0, now_ms};
  by_source_[source].insert({0, now_ms, id});
  d.admitted = true;
  return d;
}

void PendingLogins::progress(uint64_t id, int64_t now_ms) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  Entry& e = it->second;
  Queue& q = by_source_[e.source];
  q.erase({e.steps, e.progress_ms, id});
  if (e.steps < kMaxSteps) ++e.steps;
  e.progress_ms = now_ms;
  q.insert({e.steps, e.progress_ms, id});
}

void PendingLogins::remove(uint64_t id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  auto src = by_source_.find(it->second.source);
  if (src != by_source_.end()) {
    src->second.erase({it->second.steps, it->second.progress_ms, id});
    if (src->second.empty()) by_source_.erase(src);
  }
  by_id_.erase(it);
}

size_t PendingLogins::from(const std::string& source) const {
  auto it = by_source_.find(source);
  return it == by_source_.end() ? 0 : it->second.size();
}

}  // namespace pgwarden::session
