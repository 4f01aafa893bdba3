#include "common/metrics/histogram.h"

namespace pgwarden::metrics {

namespace {

// The bounds in nanoseconds, so observing compares integers.
constexpr std::array<uint64_t, kLatencyBoundsSeconds.size()> bounds_ns() {
  std::array<uint64_t, kLatencyBoundsSeconds.size()> out{};
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint64_t>(kLatencyBoundsSeconds[i] * 1e9 + 0.5);
  }
  return out;
}
constexpr auto kBoundsNs = bounds_ns();

}  // namespace

void HistogramSnapshot::add(const HistogramSnapshot& other) {
  for (size_t i = 0; i < counts.size(); ++i) counts[i] += other.counts[i];
  count += other.count;
  sum_ns += other.sum_ns;
}

size_t latency_bucket(uint64_t ns) {
  size_t i = 0;
  while (i < kBoundsNs.size() && ns > kBoundsNs[i]) ++i;
  return i;
}

void LatencyHistogram::observe_ns(uint64_t ns) {
  counts_[latency_bucket(ns)].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(ns, std::memory_order_relaxed);
}

HistogramSnapshot LatencyHistogram::snapshot() const {
  HistogramSnapshot s;
  for (size_t i = 0; i < counts_.size(); ++i) {
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.count += s.counts[i];
  }
  s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace pgwarden::metrics
