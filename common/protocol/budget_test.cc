#include "common/protocol/budget.h"

#include <gtest/gtest.h>

namespace pgwarden::protocol {
namespace {

BudgetState hourly() {
  BudgetState b;
  b.name = "svc-hourly";
  b.window = "1h";
  b.window_ms = 3600000;
  b.window_start_ms = 1796000400000;  // a full hour
  b.limit[static_cast<size_t>(BudgetMeasure::kStatements)] = 3;
  b.limit[static_cast<size_t>(BudgetMeasure::kResultBytes)] = 1000;
  return b;
}

TEST(BudgetState, ExhaustedWhenAnyLimitedMeasureReachesItsLimit) {
  BudgetState b = hourly();
  EXPECT_EQ(b.exhausted_measure(), -1);
  b.used[BudgetMeasure::kRows] = 1u << 30;  // no limit on rows
  EXPECT_EQ(b.exhausted_measure(), -1);
  b.used[BudgetMeasure::kResultBytes] = 1000;
  EXPECT_EQ(b.exhausted_measure(), static_cast<int>(BudgetMeasure::kResultBytes));
  std::string msg = b.refusal_message("svc:ci", b.window_start_ms + 1000);
  EXPECT_NE(msg.find("budget \"svc-hourly\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("result_bytes 1000 of 1000 in the 1h window"), std::string::npos) << msg;
  EXPECT_NE(msg.find("resets at " + utc_time_text(b.window_start_ms + 3600000)), std::string::npos);
  EXPECT_NE(msg.find("(in 3599 s)"), std::string::npos) << msg;
}

TEST(BudgetState, RollStartsTheWindowOfNowWithZeroUsage) {
  BudgetState b = hourly();
  b.used[BudgetMeasure::kStatements] = 3;
  EXPECT_FALSE(b.roll(b.resets_at_ms() - 1));
  EXPECT_EQ(b.exhausted_measure(), 0);
  int64_t later = b.window_start_ms + 3 * 3600000 + 17;
  EXPECT_TRUE(b.roll(later));
  EXPECT_EQ(b.window_start_ms, b.window_start_ms - b.window_start_ms % 3600000);
  EXPECT_EQ(b.window_start_ms, later - 17);
  EXPECT_EQ(b.exhausted_measure(), -1);
}

TEST(BudgetState, JsonRoundTripAndMalformedStatesAreRefused) {
  BudgetState b = hourly();
  b.approve = true;
  b.used[BudgetMeasure::kStatements] = 2;
  auto back = BudgetState::from_json(b.to_json());
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(back->name, "svc-hourly");
  EXPECT_TRUE(back->approve);
  EXPECT_EQ(back->limit, b.limit);
  EXPECT_EQ(back->used.v, b.used.v);
  auto j = b.to_json();
  j["on_exceed"] = "allow";
  EXPECT_FALSE(BudgetState::from_json(j).is_ok());
  j = b.to_json();
  j["limits"]["statements"] = -1;
  EXPECT_FALSE(BudgetState::from_json(j).is_ok());
  j = b.to_json();
  j.erase("window_ms");
  EXPECT_FALSE(BudgetState::from_json(j).is_ok());
}

}  // namespace
}  // namespace pgwarden::protocol
