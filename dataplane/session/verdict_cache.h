// VerdictCache: bounded LRU of cp verdicts, one per worker (no lock: the per-statement path).
// Key = statement shape key x policy (name hash, version): a policy reload bumps the version,
// so stale verdicts are never hit, and sessions of different policies never share entries.
// Only verdicts cp marks `cacheable` are stored; approvals are never cached.
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>

namespace pgwarden::session {

struct CachedVerdict {
  bool allow = false;
  std::string rule;
  std::string message;
};

struct VerdictKey {
  uint64_t shape = 0;
  uint64_t policy = 0;  // hash of the policy name
  uint64_t version = 0;
  bool operator==(const VerdictKey& o) const {
    return shape == o.shape && policy == o.policy && version == o.version;
  }
};

struct VerdictKeyHash {
  size_t operator()(const VerdictKey& k) const {
    uint64_t h = k.shape * 0x9e3779b97f4a7c15ULL;
    h ^= k.policy + 0x7f4a7c159e3779b9ULL + (h << 6) + (h >> 2);
    h ^= k.version + 0x94d049bb133111ebULL + (h << 6) + (h >> 2);
    return static_cast<size_t>(h);
  }
};

class VerdictCache {
 public:
  explicit VerdictCache(size_t capacity) : capacity_(capacity) {}

  // The cached verdict (marked most recently used), or nullptr.
  const CachedVerdict* find(const VerdictKey& key);
  void put(const VerdictKey& key, CachedVerdict verdict);
  void clear();
  size_t size() const { return map_.size(); }

 private:
  using Entry = std::pair<VerdictKey, CachedVerdict>;
  size_t capacity_;
  std::list<Entry> lru_;  // front = most recent
  std::unordered_map<VerdictKey, std::list<Entry>::iterator, VerdictKeyHash> map_;
};

}  // namespace pgwarden::session
