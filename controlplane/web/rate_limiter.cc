#include "controlplane/web/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace pgwarden::web {

RateLimiter::RateLimiter(int per_minute, int burst, size_t max_keys)
    : per_second_(std::max(per_minute, 1) / 60.0),
      burst_(std::max(burst, 1)),
      max_keys_(std::max<size_t>(max_keys, 1)) {}

int64_t RateLimiter::take(std::string_view key, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = buckets_.find(std::string(key));
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      // Full buckets of idle keys carry no state worth keeping; if none is full, the
      // bucket updated longest ago goes.
      auto victim = buckets_.end();
      for (auto b = buckets_.begin(); b != buckets_.end(); ++b) {
        double refilled = b->second.tokens +
                          std::chrono::duration<double>(now - b->second.updated).count() *
                              per_second_;
        if (refilled >= burst_) {
          victim = b;
          break;
        }
        if (victim == buckets_.end() || b->second.updated < victim->second.updated) victim = b;
      }
      buckets_.erase(victim);
    }
    it = buckets_.emplace(std::string(key), Bucket{burst_, now}).first;
  }
  Bucket& b = it->second;
  double elapsed = std::chrono::duration<double>(now - b.updated).count();
  if (elapsed > 0) {
    b.tokens = std::min(burst_, b.tokens + elapsed * per_second_);
    b.updated = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return 0;
  }
  double wait = (1.0 - b.tokens) / per_second_;
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(wait)));
}

}  // namespace pgwarden::web
