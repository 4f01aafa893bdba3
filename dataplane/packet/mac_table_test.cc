#include "dataplane/packet/mac_table.h"

#include <gtest/gtest.h>

#include <array>

namespace pgwarden::packet {
namespace {

using Mac = std::array<uint8_t, 6>;
constexpr Mac kAgentMac = {0x02, 0, 0, 0, 0, 0x10};
constexpr Mac kDbMac = {0x02, 0, 0, 0, 0, 0x20};

TEST(MacTableTest, UnknownAddressHasNoSide) {
  MacTable t;
  EXPECT_EQ(t.lookup(kAgentMac), MacSide::kUnknown);
}

TEST(MacTableTest, LearnedAddressesMapToTheirSide) {
  MacTable t;
  EXPECT_TRUE(t.learn(kAgentMac, MacSide::kAgent, 1));
  EXPECT_TRUE(t.learn(kDbMac, MacSide::kDatabase, 1));
  EXPECT_EQ(t.lookup(kAgentMac), MacSide::kAgent);
  EXPECT_EQ(t.lookup(kDbMac), MacSide::kDatabase);
}

TEST(MacTableTest, GroupAddressesAreNeverLearned) {
  MacTable t;
  Mac broadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  Mac multicast = {0x33, 0x33, 0, 0, 0, 1};
  EXPECT_TRUE(t.learn(broadcast, MacSide::kAgent, 1));
  EXPECT_TRUE(t.learn(multicast, MacSide::kAgent, 1));
  EXPECT_EQ(t.lookup(broadcast), MacSide::kUnknown);
  EXPECT_EQ(t.lookup(multicast), MacSide::kUnknown);
}

TEST(MacTableTest, AgentCannotTakeOverALiveDatabaseAddress) {
  MacTable t;
  ASSERT_TRUE(t.learn(kDbMac, MacSide::kDatabase, 100));
  EXPECT_FALSE(t.learn(kDbMac, MacSide::kAgent, 100 + kMacHoldSeconds - 1));
  EXPECT_EQ(t.lookup(kDbMac), MacSide::kDatabase);
}

TEST(MacTableTest, StaleAddressMovesToTheOtherSide) {
  MacTable t;
  ASSERT_TRUE(t.learn(kDbMac, MacSide::kDatabase, 100));
  EXPECT_TRUE(t.learn(kDbMac, MacSide::kAgent, 100 + kMacHoldSeconds));
  EXPECT_EQ(t.lookup(kDbMac), MacSide::kAgent);
}

TEST(MacTableTest, RefreshKeepsTheAddressFresh) {
  MacTable t;
  ASSERT_TRUE(t.learn(kDbMac, MacSide::kDatabase, 100));
  ASSERT_TRUE(t.learn(kDbMac, MacSide::kDatabase, 100 + kMacHoldSeconds - 1));
  EXPECT_FALSE(t.learn(kDbMac, MacSide::kAgent, 100 + kMacHoldSeconds + 10));
}

TEST(MacTableTest, FreshSlotIsNotEvictedByAnotherAddress) {
  MacTable t(16);
  ASSERT_TRUE(t.learn(kDbMac, MacSide::kDatabase, 5));
  // Find another address that hashes to the same slot: of 17 addresses two share a slot.
  Mac other = kAgentMac;
  bool refused = false;
  for (int i = 0; i < 256 && !refused; ++i) {
    other[5] = static_cast<uint8_t>(i);
    if (other == kDbMac) continue;
    refused = !t.learn(other, MacSide::kAgent, 6);
  }
  EXPECT_TRUE(refused);
  EXPECT_EQ(t.lookup(kDbMac), MacSide::kDatabase);
  EXPECT_EQ(t.lookup(other), MacSide::kUnknown);
}

TEST(MacTableTest, TimestampWrapStillAgesEntries) {
  MacTable t;
  ASSERT_TRUE(t.learn(kDbMac, MacSide::kDatabase, 16380));
  EXPECT_FALSE(t.learn(kDbMac, MacSide::kAgent, 16390));  // 10 s later, across the wrap
  EXPECT_TRUE(t.learn(kDbMac, MacSide::kAgent, 16380 + kMacHoldSeconds));
}

}  // namespace
}  // namespace pgwarden::packet
