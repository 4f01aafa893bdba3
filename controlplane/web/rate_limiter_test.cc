#include "controlplane/web/rate_limiter.h"

#include <gtest/gtest.h>

namespace pgwarden::web {
namespace {

using namespace std::chrono_literals;

TEST(RateLimiter, BurstThenRetryAfterThenRefill) {
  RateLimiter limiter(6, 3);  // one token per 10 s
  auto t0 = RateLimiter::Clock::time_point{} + 1000s;
  EXPECT_EQ(limiter.take("10.0.0.1", t0), 0);
  EXPECT_EQ(limiter.take("10.0.0.1", t0), 0);
  EXPECT_EQ(limiter.take("10.0.0.1", t0), 0);
  EXPECT_EQ(limiter.take("10.0.0.1", t0), 10);
  EXPECT_EQ(limiter.take("10.0.0.1", t0 + 4s), 6);
  EXPECT_EQ(limiter.take("10.0.0.1", t0 + 10s), 0);
  // Another address has its own bucket.
  EXPECT_EQ(limiter.take("10.0.0.2", t0), 0);
}

TEST(RateLimiter, TableIsCapped) {
  RateLimiter limiter(60, 1, 4);
  auto t0 = RateLimiter::Clock::time_point{} + 1000s;
  for (int i = 0; i < 100; ++i) EXPECT_EQ(limiter.take("ip" + std::to_string(i), t0), 0);
  // The newest key is still tracked.
  EXPECT_GT(limiter.take("ip99", t0), 0);
}

}  // namespace
}  // namespace pgwarden::web
