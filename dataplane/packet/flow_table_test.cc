#include "dataplane/packet/flow_table.h"

#include <gtest/gtest.h>
#include <rte_cycles.h>

#include "dataplane/packet/eal_for_tests.h"

namespace pgwarden::packet {
namespace {

class FlowTableTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(init_eal_for_tests().is_ok()); }
  void SetUp() override {
    static int n = 0;
    auto t = FlowTable::create("ft_test_" + std::to_string(n++), 16, 0);
    ASSERT_TRUE(t.is_ok()) << t.status().to_string();
    table_ = std::move(*t);
  }
  FlowKey key(uint16_t port) {
    bool a = false;
    return make_flow_key(Address::v4(0xC612000A), port, Address::v4(0xC6120014), 5432, 6, &a);
  }
  std::unique_ptr<FlowTable> table_;
};

TEST_F(FlowTableTest, InsertedFlowIsFoundFromBothDirections) {
  FlowEntry* e = table_->insert(key(40000));
  ASSERT_NE(e, nullptr);
  bool a = false;
  FlowKey reverse =
      make_flow_key(Address::v4(0xC6120014), 5432, Address::v4(0xC612000A), 40000, 6, &a);
  EXPECT_EQ(table_->lookup(reverse), e);
  EXPECT_EQ(table_->lookup(key(40001)), nullptr);
  EXPECT_EQ(table_->size(), 1u);
}

TEST_F(FlowTableTest, CapacityIsHardAndRemovalFreesASlot) {
  for (uint16_t i = 0; i < 16; ++i) ASSERT_NE(table_->insert(key(1000 + i)), nullptr) << i;
  EXPECT_EQ(table_->insert(key(2000)), nullptr);
  table_->remove(table_->lookup(key(1000)));
  EXPECT_EQ(table_->size(), 15u);
  EXPECT_NE(table_->insert(key(2000)), nullptr);
}

TEST_F(FlowTableTest, IdleFlowsExpireFinishedFlowsLingerLess) {
  FlowEntry* idle = table_->insert(key(1));
  idle->last_seen_tsc = 100;
  FlowEntry* fresh = table_->insert(key(2));
  fresh->last_seen_tsc = 900;
  EXPECT_EQ(table_->expire(1000, 500, 50, 1000), 1u);
  EXPECT_EQ(table_->lookup(key(1)), nullptr);
  EXPECT_NE(table_->lookup(key(2)), nullptr);
}

TEST_F(FlowTableTest, ExpirySweepIsBoundedByBudget) {
  for (uint16_t i = 0; i < 16; ++i) table_->insert(key(3000 + i))->last_seen_tsc = 0;
  uint32_t removed = 0;
  int rounds = 0;
  while (table_->size() > 0 && rounds < 1000) {
    uint32_t n = table_->expire(1000, 10, 10, 4);
    EXPECT_LE(n, 4u);
    removed += n;
    ++rounds;
  }
  EXPECT_EQ(removed, 16u);
  EXPECT_GT(rounds, 3);
}

}  // namespace
}  // namespace pgwarden::packet
