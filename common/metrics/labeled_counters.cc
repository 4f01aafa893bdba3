#include "common/metrics/labeled_counters.h"

namespace pgwarden::metrics {

namespace {
constexpr char kSeparator = '\x1f';  // never in a label value we produce (rule names are words)
}  // namespace

void LabeledCounters::inc(std::initializer_list<std::string_view> values) {
  scratch_.clear();
  bool first = true;
  for (std::string_view v : values) {
    if (!first) scratch_ += kSeparator;
    first = false;
    scratch_.append(v);
  }
  auto it = counts_.find(scratch_);
  if (it == counts_.end()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (counts_.size() >= max_keys_) {
      overflowed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    it = counts_.try_emplace(scratch_, 0).first;
  }
  std::atomic<uint64_t>& c = it->second;
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void LabeledCounters::for_each(
    const std::function<void(const std::vector<std::string>&, uint64_t)>& fn) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> values;
  for (const auto& [key, count] : counts_) {
    values.clear();
    size_t start = 0;
    for (;;) {
      size_t sep = key.find(kSeparator, start);
      values.push_back(
          key.substr(start, sep == std::string::npos ? std::string::npos : sep - start));
      if (sep == std::string::npos) break;
      start = sep + 1;
    }
    fn(values, count.load(std::memory_order_relaxed));
  }
}

}  // namespace pgwarden::metrics
