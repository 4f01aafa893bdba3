#include "controlplane/server/effect_probe.h"

#include <gtest/gtest.h>

namespace pgwarden::server {
namespace {

TEST(ModifyRowsFromExplain, TakesTheRowsFeedingEachModifyTable) {
  // UPDATE without RETURNING: ModifyTable itself reports 0 rows; its input is the estimate.
  const char* update = R"([{"Plan": {"Node Type": "ModifyTable", "Operation": "Update",
      "Plan Rows": 0, "Plans": [{"Node Type": "Seq Scan", "Parent Relationship": "Outer",
      "Plan Rows": 1234}]}}])";
  EXPECT_EQ(*modify_rows_from_explain(update), 1234);
  // A data-modifying CTE under a SELECT: the nested ModifyTable counts; its InitPlan sibling
  // does not feed the write.
  const char* cte = R"([{"Plan": {"Node Type": "CTE Scan", "Plan Rows": 50, "Plans": [
      {"Node Type": "ModifyTable", "Parent Relationship": "InitPlan", "Plan Rows": 50,
       "Plans": [{"Node Type": "Result", "Parent Relationship": "InitPlan", "Plan Rows": 1},
                 {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Plan Rows": 77}]}]}}])";
  EXPECT_EQ(*modify_rows_from_explain(cte), 77);
  // No ModifyTable: the top plan's rows.
  EXPECT_EQ(*modify_rows_from_explain(R"([{"Plan": {"Node Type": "Result", "Plan Rows": 3}}])"), 3);
  EXPECT_FALSE(modify_rows_from_explain("not json").is_ok());
  EXPECT_FALSE(modify_rows_from_explain(R"([{"Planx": {}}])").is_ok());
}

}  // namespace
}  // namespace pgwarden::server
