#include "controlplane/budgets/budget_rule.h"

#include <gtest/gtest.h>

namespace pgwarden::budgets {
namespace {

using json = nlohmann::json;
using Errors = std::vector<std::pair<std::string, std::string>>;

TEST(BudgetRule, ParsesAFullBudget) {
  Errors errors;
  auto rules = parse_budget_rules(json::parse(R"([{"name": "svc-hourly", "identities": ["svc:*"],
      "groups": ["agents"], "window": "1h", "rows_returned": 100000, "result_bytes": "50MB",
      "masked_cells": 1000, "statements": 5000, "on_exceed": "approve"}])"),
                                  "$.budgets", errors);
  ASSERT_TRUE(errors.empty()) << errors[0].first << ": " << errors[0].second;
  ASSERT_EQ(rules.size(), 1u);
  const BudgetRule& r = rules[0];
  EXPECT_EQ(r.window_ms, 3600000);
  EXPECT_EQ(r.limit[0], 5000u);
  EXPECT_EQ(r.limit[1], 100000u);
  EXPECT_EQ(r.limit[2], 50000000u);
  EXPECT_EQ(r.limit[3], 1000u);
  EXPECT_TRUE(r.approve);
  EXPECT_TRUE(r.applies_to("svc:ci", {"x", "agents"}));
  EXPECT_FALSE(r.applies_to("svc:ci", {"x"}));
  EXPECT_FALSE(r.applies_to("alice", {"agents"}));
}

TEST(BudgetRule, UnitsOfWindowsAndSizes) {
  EXPECT_EQ(*parse_window("30s"), 30000);
  EXPECT_EQ(*parse_window("15m"), 900000);
  EXPECT_EQ(*parse_window("7d"), 7LL * 86400000);
  for (const char* bad : {"", "1", "h", "0s", "1w", "1.5h", "-1h", "367d", "1 h"}) {
    EXPECT_FALSE(parse_window(bad).is_ok()) << bad;
  }
  EXPECT_EQ(*parse_byte_size(json(123)), 123u);
  EXPECT_EQ(*parse_byte_size(json("2kB")), 2000u);
  EXPECT_EQ(*parse_byte_size(json("2KiB")), 2048u);
  EXPECT_EQ(*parse_byte_size(json("1GiB")), 1u << 30);
  for (json bad : {json(-1), json("50mb"), json("50 MB"), json("MB"), json(1.5), json(true),
                   json("99999999999999999999TB")}) {
    EXPECT_FALSE(parse_byte_size(bad).is_ok()) << bad.dump();
  }
}

struct BadCase {
  const char* json;
  const char* path;
};
class BudgetRuleErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(BudgetRuleErrors, AreReportedWithTheirPath) {
  Errors errors;
  json j = json::parse(GetParam().json);
  auto rules = parse_budget_rules(j, "$.budgets", errors);
  EXPECT_LT(rules.size(), j.is_array() ? j.size() : 1u);  // the bad entry is not kept
  ASSERT_FALSE(errors.empty());
  EXPECT_EQ(errors[0].first, GetParam().path) << errors[0].second;
}

INSTANTIATE_TEST_SUITE_P(
    Config, BudgetRuleErrors,
    ::testing::Values(
        BadCase{R"({})", "$.budgets"},
        BadCase{R"([{"name":"a","identities":["x"],"window":"1h","statements":1,"extra":1}])",
                "$.budgets[0].extra"},
        BadCase{R"([{"identities":["x"],"window":"1h","statements":1}])", "$.budgets[0].name"},
        BadCase{R"([{"name":"a b","identities":["x"],"window":"1h","statements":1}])",
                "$.budgets[0].name"},
        BadCase{R"([{"name":"a","window":"1h","statements":1}])", "$.budgets[0].identities"},
        BadCase{R"([{"name":"a","identities":[],"window":"1h","statements":1}])",
                "$.budgets[0].identities"},
        BadCase{R"([{"name":"a","identities":["x"],"statements":1}])", "$.budgets[0].window"},
        BadCase{R"([{"name":"a","identities":["x"],"window":"1fortnight","statements":1}])",
                "$.budgets[0].window"},
        BadCase{R"([{"name":"a","identities":["x"],"window":"1h"}])", "$.budgets[0]"},
        BadCase{R"([{"name":"a","identities":["x"],"window":"1h","statements":-3}])",
                "$.budgets[0].statements"},
        BadCase{R"([{"name":"a","identities":["x"],"window":"1h","rows_returned":"10"}])",
                "$.budgets[0].rows_returned"},
        BadCase{R"([{"name":"a","identities":["x"],"window":"1h","result_bytes":"5XB"}])",
                "$.budgets[0].result_bytes"},
        BadCase{
            R"([{"name":"a","identities":["x"],"window":"1h","statements":1,"on_exceed":"warn"}])",
            "$.budgets[0].on_exceed"},
        BadCase{R"([{"name":"a","identities":["x"],"window":"1h","statements":1},
                    {"name":"a","identities":["y"],"window":"1h","statements":1}])",
                "$.budgets[1].name"}));

}  // namespace
}  // namespace pgwarden::budgets
