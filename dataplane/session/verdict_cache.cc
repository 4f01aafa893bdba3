#include "dataplane/session/verdict_cache.h"

namespace pgwarden::session {

const CachedVerdict* VerdictCache::find(const VerdictKey& key) {
  auto it = map_.find(key);
  if (it == map_.end()) return nullptr;
  if (it->second != lru_.begin()) lru_.splice(lru_.begin(), lru_, it->second);
  return &it->second->second;
}

void VerdictCache::put(const VerdictKey& key, CachedVerdict verdict) {
  if (capacity_ == 0) return;
  auto it = map_.find(key);
  if (it != map_.end()) {
    it->second->second = std::move(verdict);
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  if (map_.size() >= capacity_) {
    map_.erase(lru_.back().first);
    lru_.pop_back();
  }
  lru_.emplace_front(key, std::move(verdict));
  map_.emplace(key, lru_.begin());
}

void VerdictCache::clear() {
  map_.clear();
  lru_.clear();
}

}  // namespace pgwarden::session
