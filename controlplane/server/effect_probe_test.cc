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

TEST(ModifyRowsFromExplain, CountsEveryPlanARuleAdds) {
  // `INSERT INTO logt ...` with `CREATE RULE ... ON INSERT TO logt DO ALSO DELETE FROM big`:
  // PostgreSQL plans the statement first and the rule's action after it, in one array.
  const char* also = R"([{"Plan": {"Node Type": "ModifyTable", "Operation": "Insert",
      "Relation Name": "logt", "Schema": "public", "Plan Rows": 0, "Plans": [
      {"Node Type": "Result", "Parent Relationship": "Outer", "Plan Rows": 1}]}},
    {"Plan": {"Node Type": "ModifyTable", "Operation": "Delete", "Relation Name": "big",
      "Schema": "public", "Plan Rows": 0, "Plans": [
      {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Plan Rows": 5000}]}}])";
  EXPECT_EQ(*modify_rows_from_explain(also), 5001);
  auto nodes = modify_nodes_from_explain(also);
  ASSERT_TRUE(nodes.is_ok());
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[1].relation, "big");
  EXPECT_EQ((*nodes)[1].rows, 5000);
  // A rule action that is not a write counts its rows (never fewer than the writes).
  const char* select = R"([{"Plan": {"Node Type": "ModifyTable", "Operation": "Delete",
      "Plans": [{"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Plan Rows": 2}]}},
    {"Plan": {"Node Type": "Seq Scan", "Plan Rows": 40}}])";
  EXPECT_EQ(*modify_rows_from_explain(select), 42);
  // One element that is not a plan makes the whole output unreadable.
  EXPECT_FALSE(modify_rows_from_explain(R"([{"Plan": {"Plan Rows": 1}}, {"x": 1}])").is_ok());
  EXPECT_FALSE(modify_nodes_from_explain(R"([{"Plan": {"Plan Rows": 1}}, 3])").is_ok());
}

TEST(ModifyNodesFromExplain, NamesEachWrittenRelationWithItsOperationAndRows) {
  // A data-modifying CTE deleting from one table under an UPDATE of another (VERBOSE plans
  // name the schema), and an upsert.
  const char* plan = R"([{"Plan": {"Node Type": "ModifyTable", "Operation": "Update",
      "Relation Name": "a", "Schema": "public", "Plans": [
      {"Node Type": "ModifyTable", "Parent Relationship": "InitPlan", "Operation": "Delete",
       "Relation Name": "b", "Schema": "crm",
       "Plans": [{"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Plan Rows": 7}]},
      {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Plan Rows": 3}]}}])";
  auto nodes = modify_nodes_from_explain(plan);
  ASSERT_TRUE(nodes.is_ok());
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].operation, "Update");
  EXPECT_EQ((*nodes)[0].schema + "." + (*nodes)[0].relation, "public.a");
  EXPECT_EQ((*nodes)[0].rows, 3);
  EXPECT_EQ((*nodes)[1].operation, "Delete");
  EXPECT_EQ((*nodes)[1].schema + "." + (*nodes)[1].relation, "crm.b");
  EXPECT_EQ((*nodes)[1].rows, 7);
  EXPECT_TRUE((*nodes)[0].scanned.empty());  // its Seq Scan names no relation here
  const char* join = R"([{"Plan": {"Node Type": "ModifyTable", "Operation": "Delete",
      "Relation Name": "t", "Schema": "public", "Plans": [
      {"Node Type": "Hash Join", "Parent Relationship": "Outer", "Plan Rows": 3, "Plans": [
        {"Node Type": "Seq Scan", "Relation Name": "t", "Schema": "public"},
        {"Node Type": "Hash", "Plans": [{"Node Type": "Seq Scan", "Relation Name": "o",
          "Schema": "crm"}]}]},
      {"Node Type": "Index Scan", "Parent Relationship": "SubPlan", "Relation Name": "o",
       "Schema": "crm"}]}}])";
  nodes = modify_nodes_from_explain(join);
  ASSERT_TRUE(nodes.is_ok());
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].scanned, (std::vector<std::string>{"public.t", "crm.o"}));
  const char* upsert = R"([{"Plan": {"Node Type": "ModifyTable", "Operation": "Insert",
      "Relation Name": "t", "Schema": "public", "Conflict Resolution": "UPDATE", "Plans": [
      {"Node Type": "Result", "Parent Relationship": "Outer", "Plan Rows": 1}]}}])";
  nodes = modify_nodes_from_explain(upsert);
  ASSERT_TRUE(nodes.is_ok());
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_TRUE((*nodes)[0].conflict_update);
  EXPECT_FALSE(modify_nodes_from_explain("[]").is_ok());
}

TEST(EquatedColumns, ReadsTheColumnsAnAndEquatesToOneValue) {
  using V = std::vector<std::string>;
  EXPECT_EQ(equated_columns("(pgbench_accounts.aid = $2)"), V{"aid"});
  EXPECT_EQ(equated_columns("(k = 1)"), V{"k"});
  EXPECT_EQ(equated_columns("(t.k = ($1)::integer)"), V{"k"});
  EXPECT_EQ(equated_columns("(v = 'x'::text)"), V{"v"});
  EXPECT_EQ(equated_columns("((t.a = 1) AND (t.b = ($2)::text))"), (V{"a", "b"}));
  // Other conjuncts restrict further: skipped.
  EXPECT_EQ(equated_columns("((k = 1) AND (j > 2) AND (lower(v) = $1))"), V{"k"});
  // A quote inside an AND is not read (a literal could hide a parenthesis): nothing.
  EXPECT_TRUE(equated_columns("((k = 1) AND (v = 'a) OR (b'::text))").empty());
  // Nothing that may choose several rows: a set, a range, an OR, a column compared with a
  // column, an expression of a column, a sub-select.
  for (const char* cond : {"(k = ANY ($1))", "(k = ANY ('{1,2}'::integer[]))", "(k > $1)",
                           "(k >= 1)", "((k = 1) OR (k = 2))", "(lower(v) = 'x'::text)", "(k = j)",
                           "(t.k = t.j)", "(k = (SubPlan 1))", "(k = ($1 + j))", "k = 1", "", "()",
                           "((k = 1) AND (j = 2)", "((k = 1) OR (k = 2) AND (j = 1))"}) {
    EXPECT_TRUE(equated_columns(cond).empty()) << cond;
  }
}

TEST(ModifyNodesFromExplain, NotesTheColumnsItsScanOfTheTargetEquates) {
  const char* plan = R"json([{"Plan": {"Node Type": "ModifyTable", "Operation": "Update",
      "Relation Name": "a", "Schema": "public", "Plans": [
      {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Plan Rows": 1,
       "Index Name": "a_pkey", "Relation Name": "a", "Schema": "public",
       "Index Cond": "(a.k = $2)", "Filter": "(a.j = 3)"}]}}])json";
  auto nodes = modify_nodes_from_explain(plan);
  ASSERT_TRUE(nodes.is_ok());
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].equated_columns, (std::vector<std::string>{"k", "j"}));
  // A scan of another table (a join's side) says nothing about the written one.
  const char* other = R"json([{"Plan": {"Node Type": "ModifyTable", "Operation": "Delete",
      "Relation Name": "a", "Schema": "public", "Plans": [
      {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Plan Rows": 1,
       "Relation Name": "b", "Schema": "public", "Filter": "(b.k = 1)"}]}}])json";
  nodes = modify_nodes_from_explain(other);
  ASSERT_TRUE(nodes.is_ok());
  EXPECT_TRUE((*nodes)[0].equated_columns.empty());
}

}  // namespace
}  // namespace pgwarden::server
