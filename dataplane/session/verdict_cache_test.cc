#include "dataplane/session/verdict_cache.h"

#include <gtest/gtest.h>

namespace pgwarden::session {
namespace {

TEST(VerdictCacheTest, HitReturnsStoredVerdict) {
  VerdictCache c(4);
  c.put({1, 2, 3}, {true, "r", "m"});
  const CachedVerdict* v = c.find({1, 2, 3});
  ASSERT_NE(v, nullptr);
  EXPECT_TRUE(v->allow);
  EXPECT_EQ(v->rule, "r");
}

TEST(VerdictCacheTest, PolicyVersionAndNameArePartOfTheKey) {
  VerdictCache c(4);
  c.put({1, 2, 3}, {true, "", ""});
  EXPECT_EQ(c.find({1, 2, 4}), nullptr);  // reload bumped the version
  EXPECT_EQ(c.find({1, 9, 3}), nullptr);  // another policy
}

TEST(VerdictCacheTest, EvictsLeastRecentlyUsedAtCapacity) {
  VerdictCache c(2);
  c.put({1, 0, 0}, {true, "", ""});
  c.put({2, 0, 0}, {true, "", ""});
  ASSERT_NE(c.find({1, 0, 0}), nullptr);  // 1 is now most recent
  c.put({3, 0, 0}, {false, "", ""});
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.find({2, 0, 0}), nullptr);
  EXPECT_NE(c.find({1, 0, 0}), nullptr);
  EXPECT_NE(c.find({3, 0, 0}), nullptr);
}

TEST(VerdictCacheTest, ZeroCapacityStoresNothing) {
  VerdictCache c(0);
  c.put({1, 0, 0}, {true, "", ""});
  EXPECT_EQ(c.find({1, 0, 0}), nullptr);
}

}  // namespace
}  // namespace pgwarden::session
