#include "dataplane/session/pending_logins.h"

#include <gtest/gtest.h>

namespace pgwarden::session {
namespace {

using Cap = PendingLogins::Cap;

PendingLogins::Limits limits(size_t total, size_t per_source, int64_t min_age = 100) {
  return PendingLogins::Limits{total, per_source, min_age};
}

TEST(PendingLoginsTest, AdmitsUnderBothCapsAndForgetsRemovedLogins) {
  PendingLogins p;
  for (uint64_t id = 1; id <= 3; ++id) {
    auto d = p.admit(id, "10.0.0.1", 0, limits(10, 5));
    EXPECT_TRUE(d.admitted);
    EXPECT_EQ(d.evict, 0u);
    EXPECT_EQ(d.cap, Cap::kNone);
  }
  EXPECT_EQ(p.size(), 3u);
  p.remove(2);
  p.remove(2);
  EXPECT_EQ(p.size(), 2u);
  EXPECT_EQ(p.from("10.0.0.1"), 2u);
  p.remove(1);
  p.remove(3);
  EXPECT_EQ(p.sources(), 0u);
}

TEST(PendingLoginsTest, VictimNamesWhomAdmitWouldEvictAndProgressSparesIt) {
  PendingLogins p;
  for (uint64_t id = 1; id <= 3; ++id)
    ASSERT_TRUE(p.admit(id, "10.0.0.1", 0, limits(10, 3)).admitted);
  EXPECT_EQ(p.victim("10.0.0.2", 5, limits(10, 3)), 0u);  // no cap reached for that address
  EXPECT_EQ(p.victim("10.0.0.1", 5, limits(10, 3)), 1u);
  p.progress(1, 5);  // its first message was there: it is no longer the one that did least
  EXPECT_EQ(p.victim("10.0.0.1", 6, limits(10, 3)), 2u);
  auto d = p.admit(4, "10.0.0.1", 6, limits(10, 3));
  EXPECT_EQ(d.evict, 2u);
  EXPECT_TRUE(d.admitted);
}

TEST(PendingLoginsTest, PerSourceCapEvictsThatSourcesIdleConnectionFirst) {
  PendingLogins p;
  auto l = limits(100, 2);
  p.admit(1, "a", 0, l);
  p.admit(2, "a", 10, l);
  p.admit(3, "b", 0, l);
  auto d = p.admit(4, "a", 11, l);  // idle ones are evictable at any age
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(d.cap, Cap::kPerSource);
  EXPECT_EQ(d.evict, 1u);
  EXPECT_EQ(p.from("a"), 2u);
  EXPECT_EQ(p.from("b"), 1u);  // another address is never touched by a's cap
}

TEST(PendingLoginsTest, ProgressingLoginsAreEvictedOnlyAfterStallingTheNewcomerIsRefused) {
  PendingLogins p;
  auto l = limits(100, 1, 100);
  p.admit(1, "a", 1000, l);
  p.progress(1, 1005);
  auto d = p.admit(2, "a", 1050, l);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.cap, Cap::kPerSource);
  EXPECT_EQ(d.evict, 0u);
  EXPECT_EQ(p.size(), 1u);
  d = p.admit(3, "a", 1105, l);  // stalled 100 ms since its last step
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(d.evict, 1u);
}

TEST(PendingLoginsTest, TotalCapEvictsFromTheAddressWithTheMostPendingLogins) {
  PendingLogins p;
  auto l = limits(4, 10);
  p.admit(1, "quiet", 0, l);  // the oldest overall, but its address holds one
  p.admit(2, "flood", 10, l);
  p.admit(3, "flood", 20, l);
  p.admit(4, "flood", 30, l);
  auto d = p.admit(5, "agent", 1000, l);
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(d.cap, Cap::kTotal);
  EXPECT_EQ(d.evict, 2u);
  EXPECT_EQ(p.from("quiet"), 1u);
  EXPECT_EQ(p.from("agent"), 1u);
  EXPECT_EQ(p.size(), 4u);
}

// Seen in CI (gateway_login_flood): the agents' own address held the most pending logins,
// all real and making progress, so the newcomer was refused although other addresses held
// idle flood connections. The address that pays is the largest one with an evictable login.
TEST(PendingLoginsTest, TotalCapPassesOverAnAddressWhoseLoginsAreAllProgressing) {
  PendingLogins p;
  auto l = limits(5, 10, 250);
  for (uint64_t id : {1, 2, 3}) {
    p.admit(id, "agents", 1000, l);
    p.progress(id, 1010);  // SSLRequest answered: real logins on their way
  }
  p.admit(4, "flood-a", 900, l);  // idle since accept
  p.admit(5, "flood-b", 950, l);
  auto d = p.admit(6, "agents", 1020, l);
  EXPECT_TRUE(d.admitted);
  EXPECT_EQ(d.cap, Cap::kTotal);
  EXPECT_EQ(d.evict, 4u);  // flood-a: as many pending as flood-b, idle for longer
  EXPECT_EQ(p.from("agents"), 4u);
  // Only when every pending login is progressing is the newcomer refused.
  PendingLogins q;
  for (uint64_t id : {1, 2}) {
    q.admit(id, "agents", 1000, l);
    q.progress(id, 1010);
  }
  for (uint64_t id : {3, 4, 5}) {
    q.admit(id, "others", 1000, l);
    q.progress(id, 1010);
  }
  d = q.admit(6, "late", 1020, l);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.evict, 0u);
  EXPECT_EQ(q.size(), 5u);
}

TEST(PendingLoginsTest, AReconnectingFloodFromTheSameAddressNeverEvictsARealLogin) {
  PendingLogins p;
  auto l = limits(100, 8, 250);
  int64_t now = 0;
  uint64_t id = 1;
  for (int i = 0; i < 8; ++i) p.admit(id++, "nat", now++, l);
  const uint64_t agent = id++;
  auto d = p.admit(agent, "nat", now, l);
  ASSERT_TRUE(d.admitted);
  p.progress(agent, now + 1);  // its SSLRequest
  // A new idle connection every millisecond for two seconds: each evicts another idle one.
  for (int i = 0; i < 2000; ++i) {
    now += 1;
    auto f = p.admit(id++, "nat", now, l);
    EXPECT_TRUE(f.admitted);
    EXPECT_NE(f.evict, agent);
    if (i % 50 == 0) p.progress(agent, now);  // the real client keeps completing steps
  }
  EXPECT_EQ(p.from("nat"), 8u);
}

TEST(PendingLoginsTest, AFloodCannotKeepANewLoginOut) {
  // 500 connections from 50 addresses against a budget of 64 (8 per address): every new
  // connection gets in, the flood's oldest ones pay.
  PendingLogins p;
  auto l = limits(64, 8);
  int64_t now = 0;
  uint64_t id = 1;
  for (int i = 0; i < 500; ++i, now += 1) {
    auto d = p.admit(id++, "10.0.1." + std::to_string(i % 50), now, l);
    if (d.evict != 0) {
      EXPECT_TRUE(d.admitted);
    }
  }
  EXPECT_LE(p.size(), 64u);
  auto d = p.admit(id, "127.0.0.1", now + 1000, l);
  EXPECT_TRUE(d.admitted);
  EXPECT_NE(d.evict, 0u);
}

}  // namespace
}  // namespace pgwarden::session
