// LatencyHistogram: a fixed-bucket latency histogram for the Prometheus exposition
// (metrics_server.h). Writers add observations with relaxed atomics (no lock, no allocation);
// any thread may take a snapshot at any time. A snapshot taken while a writer runs may see the
// count before the sum or the bucket: each series is monotonic, which is all Prometheus needs.
#pragma once

#include <time.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace pgwarden::metrics {

// Upper bounds in seconds: 10 us .. 10 s, roughly 1-2.5-5 per decade. Prescreen runs in
// microseconds, analysis and fsync in milliseconds; approvals are not timed here.
inline constexpr std::array<double, 19> kLatencyBoundsSeconds = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,     0.1,     0.25,   0.5,     1.0,    2.5,   5.0,    10.0};
inline constexpr size_t kLatencyBuckets = kLatencyBoundsSeconds.size() + 1;  // + Inf

struct HistogramSnapshot {
  std::array<uint64_t, kLatencyBuckets> counts{};  // per bucket, not cumulative
  uint64_t count = 0;  // the sum of `counts` (so _count always equals the +Inf bucket)
  uint64_t sum_ns = 0;
  // Adds `other` (e.g. summing the workers' histograms).
  void add(const HistogramSnapshot& other);
};

class LatencyHistogram {
 public:
  // Thread-safe (any number of writers).
  void observe_ns(uint64_t ns);
  HistogramSnapshot snapshot() const;

 private:
  std::array<std::atomic<uint64_t>, kLatencyBuckets> counts_{};
  std::atomic<uint64_t> sum_ns_{0};
};

// Nanoseconds on CLOCK_MONOTONIC (for timing an observation).
inline uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// The bucket index of an observation of `ns` nanoseconds (le semantics: value <= bound).
size_t latency_bucket(uint64_t ns);

}  // namespace pgwarden::metrics
