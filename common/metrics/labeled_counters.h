// LabeledCounters: counters keyed by label values known only at run time (a statement's
// verdict, rule and source), for the Prometheus exposition. The owning thread increments
// without a lock; only adding a new key and reading take a mutex, so the per-statement cost
// is one hash lookup. Keys are capped: past `max_keys` distinct keys, increments go to the
// overflow counter instead (labels must stay low-cardinality even if a bug makes them not).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pgwarden::metrics {

class LabeledCounters {
 public:
  explicit LabeledCounters(size_t max_keys = 4096) : max_keys_(max_keys) {}
  LabeledCounters(const LabeledCounters&) = delete;
  LabeledCounters& operator=(const LabeledCounters&) = delete;

  // Owner thread only (one writer). `values` are the label values, in a fixed order.
  void inc(std::initializer_list<std::string_view> values);
  // Any thread: calls `fn` with each key's label values and count.
  void for_each(const std::function<void(const std::vector<std::string>&, uint64_t)>& fn) const;
  // Increments that found no room for a new key (any thread).
  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }

 private:
  size_t max_keys_;
  std::string scratch_;    // owner thread: the joined key, reused
  mutable std::mutex mu_;  // guards insertion and readers; the owner's find() needs none
  std::unordered_map<std::string, std::atomic<uint64_t>> counts_;
  std::atomic<uint64_t> overflowed_{0};
};

}  // namespace pgwarden::metrics
