// RateLimiter: a token bucket per key (the source IP of login requests). `per_minute`
// tokens are added per minute up to `burst`; a request takes one token or is refused with
// the time until the next token. The table is capped (idle full buckets are dropped first,
// then the oldest) so a flood of source addresses cannot grow it without bound.
//
// Thread-safety: take() may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace pgwarden::web {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  RateLimiter(int per_minute, int burst, size_t max_keys = 65536);

  // 0 when allowed; else the whole seconds (>= 1) until a token is available (Retry-After).
  int64_t take(std::string_view key, Clock::time_point now = Clock::now());

 private:
  struct Bucket {
    double tokens;
    Clock::time_point updated;
  };
  const double per_second_;
  const double burst_;
  const size_t max_keys_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace pgwarden::web
