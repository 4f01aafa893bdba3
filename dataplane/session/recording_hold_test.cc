#include "dataplane/session/recording_hold.h"

#include <gtest/gtest.h>

namespace pgwarden::session {
namespace {

TEST(RecordingHoldTest, BackoffDoublesUpToTheCapWhileHolding) {
  RecordingHold h;
  EXPECT_FALSE(h.holding());
  int64_t now = 1000;
  std::vector<int64_t> delays;
  for (int i = 0; i < 9; ++i) {
    auto d = h.next_retry(now, 30000);
    ASSERT_TRUE(d.has_value());
    delays.push_back(*d);
    now += *d;
  }
  EXPECT_EQ(delays, (std::vector<int64_t>{2, 4, 8, 16, 32, 64, 100, 100, 100}));
  EXPECT_TRUE(h.holding());
  EXPECT_EQ(h.held_ms(now), now - 1000);
  EXPECT_EQ(h.attempts(), 9);
}

TEST(RecordingHoldTest, NeverWaitsPastTheDeadlineThenRefusesAndResets) {
  RecordingHold h;
  ASSERT_EQ(h.next_retry(0, 50), 2);
  ASSERT_EQ(h.next_retry(40, 50), 4);
  EXPECT_EQ(h.next_retry(48, 50), 2);  // 8 would overshoot the 50 ms deadline
  EXPECT_EQ(h.next_retry(50, 50), std::nullopt);
  EXPECT_FALSE(h.holding());
  // A later hold starts a fresh deadline and backoff.
  EXPECT_EQ(h.next_retry(1000, 50), 2);
  EXPECT_EQ(h.held_ms(1010), 10);
}

TEST(RecordingHoldTest, ZeroTimeoutRefusesAtOnce) {
  RecordingHold h;
  EXPECT_EQ(h.next_retry(5, 0), std::nullopt);
  EXPECT_FALSE(h.holding());
}

TEST(RecordingHoldTest, ResetAfterAcceptanceRestartsTheBackoff) {
  RecordingHold h;
  (void)h.next_retry(0, 1000);
  (void)h.next_retry(2, 1000);
  h.reset();
  EXPECT_FALSE(h.holding());
  EXPECT_EQ(h.held_ms(100), 0);
  EXPECT_EQ(h.next_retry(100, 1000), 2);
}

}  // namespace
}  // namespace pgwarden::session
