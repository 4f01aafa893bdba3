#include "common/fd_limit.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace pgwarden {
namespace {

TEST(FdLimit, SoftLimitIsRaisedToTheHardLimit) {
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &before), 0);
  if (before.rlim_max <= 64) GTEST_SKIP() << "hard limit " << before.rlim_max << " is too low";
  rlimit lowered = before;
  lowered.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  const uint64_t now = raise_fd_limit();
  rlimit after{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(after.rlim_cur, before.rlim_max);
  EXPECT_EQ(after.rlim_max, before.rlim_max);
  EXPECT_EQ(now, before.rlim_max == RLIM_INFINITY ? UINT64_MAX : before.rlim_max);
  // Already at the hard limit: unchanged.
  EXPECT_EQ(raise_fd_limit(), now);
}

}  // namespace
}  // namespace pgwarden
