#include "controlplane/policy/effect.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "controlplane/policy/sql_analysis.h"

namespace pgwarden::policy {
namespace {

// --- the folding corpus: a condition of `DELETE FROM t WHERE ...` and how it reads ---------

struct ConditionCase {
  const char* condition;
  const char* expected;  // condition_reach_name()
};

class ConditionCorpus : public ::testing::TestWithParam<ConditionCase> {};

TEST_P(ConditionCorpus, ReadsAsDocumented) {
  EXPECT_EQ(condition_reach_name(classify_condition_sql(GetParam().condition)), GetParam().expected)
      << GetParam().condition;
}

INSTANTIATE_TEST_SUITE_P(
    ConstantTrue, ConditionCorpus,
    ::testing::Values(
        ConditionCase{"true", "true"}, ConditionCase{"TRUE", "true"}, ConditionCase{"1=1", "true"},
        ConditionCase{"1 = 1", "true"}, ConditionCase{"'a'='a'", "true"},
        ConditionCase{"1<2", "true"}, ConditionCase{"2>=2", "true"}, ConditionCase{"1<>2", "true"},
        ConditionCase{"1!=2", "true"}, ConditionCase{"id = 5 OR true", "true"},
        ConditionCase{"true OR id = 5", "true"}, ConditionCase{"NOT false", "true"},
        ConditionCase{"NOT NOT true", "true"}, ConditionCase{"true AND true", "true"},
        ConditionCase{"(true)", "true"}, ConditionCase{"coalesce(true, id = 1)", "true"},
        ConditionCase{"coalesce(NULL, true)", "true"}, ConditionCase{"(SELECT true)", "true"},
        ConditionCase{"(SELECT true WHERE true)", "true"}, ConditionCase{"(SELECT 1) = 1", "true"},
        ConditionCase{"EXISTS (SELECT 1)", "true"}, ConditionCase{"'t'", "true"},
        ConditionCase{"'yes'", "true"}, ConditionCase{"'on'", "true"},
        ConditionCase{"' TRUE '", "true"}, ConditionCase{"'t'::boolean", "true"},
        ConditionCase{"'1'::bool", "true"}, ConditionCase{"1::boolean", "true"},
        ConditionCase{"CAST('tr' AS boolean)", "true"}, ConditionCase{"true IS TRUE", "true"},
        ConditionCase{"NULL IS NULL", "true"}, ConditionCase{"1 IS NOT NULL", "true"},
        ConditionCase{"false IS NOT TRUE", "true"}, ConditionCase{"NULL IS UNKNOWN", "true"},
        ConditionCase{"(1=2) IS FALSE", "true"}, ConditionCase{"1 IS DISTINCT FROM 2", "true"},
        ConditionCase{"NULL IS NOT DISTINCT FROM NULL", "true"},
        ConditionCase{"1 IN (1, 2)", "true"}, ConditionCase{"3 NOT IN (1, 2)", "true"},
        ConditionCase{"5 BETWEEN 1 AND 10", "true"},
        ConditionCase{"5 BETWEEN SYMMETRIC 10 AND 1", "true"},
        ConditionCase{"0 NOT BETWEEN 1 AND 2", "true"}, ConditionCase{"1+1 = 2", "true"},
        ConditionCase{"2*3 = 6", "true"}, ConditionCase{"-1 < 0", "true"},
        ConditionCase{"'1' = 1", "true"}, ConditionCase{"'01'::int = 1", "true"},
        ConditionCase{"1::text = '1'", "true"}, ConditionCase{"true = 't'", "true"},
        ConditionCase{"nullif(1, 2) = 1", "true"},
        ConditionCase{"10000000000 = 10000000000", "true"},
        ConditionCase{"(id = 1 AND false) IS NOT TRUE", "true"},
        ConditionCase{"NOT (id = 1 AND false)", "true"}, ConditionCase{"id > 0 OR 1 = 1", "true"},
        ConditionCase{"id > 0 OR (1 = 1)", "true"}));

INSTANTIATE_TEST_SUITE_P(
    FalseOrNull, ConditionCorpus,
    ::testing::Values(ConditionCase{"false", "false"}, ConditionCase{"1=2", "false"},
                      ConditionCase{"'a'='b'", "false"}, ConditionCase{"NOT true", "false"},
                      ConditionCase{"true AND false", "false"},
                      ConditionCase{"id = 1 AND false", "false"}, ConditionCase{"'f'", "false"},
                      ConditionCase{"'no'::boolean", "false"},
                      ConditionCase{"EXISTS (SELECT 1 WHERE false)", "false"},
                      ConditionCase{"NULL", "null"}, ConditionCase{"NULL::boolean", "null"},
                      ConditionCase{"1 = NULL", "null"}, ConditionCase{"true AND NULL", "null"},
                      ConditionCase{"NULL IN (1, 2)", "null"},
                      ConditionCase{"(SELECT true WHERE false)", "null"}));

// Constants pgwarden does not fold, parameters, functions and sub-selects over other tables:
// every row or none.
INSTANTIATE_TEST_SUITE_P(
    RowIndependent, ConditionCorpus,
    ::testing::Values(ConditionCase{"$1", "row_independent"},
                      ConditionCase{"$1 = 1", "row_independent"},
                      ConditionCase{"now() > '2000-01-01'", "row_independent"},
                      ConditionCase{"current_date IS NOT NULL", "row_independent"},
                      ConditionCase{"random() < 2", "row_independent"},
                      ConditionCase{"'b' > 'a'", "row_independent"},
                      ConditionCase{"0.1 + 0.2 = 0.3", "row_independent"},
                      ConditionCase{"1.5 > 1", "row_independent"},
                      ConditionCase{"length('abc') = 3", "row_independent"},
                      ConditionCase{"'a' LIKE 'a%'", "row_independent"},
                      ConditionCase{"'abc'::char(3) = 'abc'", "row_independent"},
                      ConditionCase{"current_user = 'app'", "row_independent"},
                      ConditionCase{"EXISTS (SELECT 1 FROM other)", "row_independent"},
                      ConditionCase{"EXISTS (SELECT 1 FROM other WHERE flag)", "row_independent"},
                      ConditionCase{"EXISTS (SELECT 1 FROM t WHERE t.id = 1)", "row_independent"},
                      ConditionCase{"(SELECT count(*) FROM other) > 0", "row_independent"},
                      ConditionCase{"CASE WHEN true THEN true END", "row_independent"},
                      ConditionCase{"id = 5 OR now() IS NOT NULL", "row_independent"},
                      ConditionCase{"other.flag", "row_independent"},
                      ConditionCase{"1 = ANY('{1}')", "row_independent"}));

INSTANTIATE_TEST_SUITE_P(
    RowDependent, ConditionCorpus,
    ::testing::Values(
        ConditionCase{"id = 5", "row_dependent"}, ConditionCase{"t.id = 5", "row_dependent"},
        ConditionCase{"status IS NOT NULL", "row_dependent"},
        ConditionCase{"active", "row_dependent"}, ConditionCase{"id = $1", "row_dependent"},
        ConditionCase{"id = 5 AND now() IS NOT NULL", "row_dependent"},
        ConditionCase{"id = 5 OR id = 6", "row_dependent"},
        ConditionCase{"id = 5 OR false", "row_dependent"},
        ConditionCase{"id IN (SELECT k FROM other)", "row_dependent"},
        ConditionCase{"EXISTS (SELECT 1 FROM other o WHERE o.k = t.id)", "row_dependent"},
        ConditionCase{"EXISTS (SELECT 1 WHERE id = 1)", "row_dependent"},
        ConditionCase{"lower(name) = 'x'", "row_dependent"},
        ConditionCase{"t IS NOT NULL", "row_dependent"},
        ConditionCase{"CURRENT OF c", "row_dependent"}));

// Conditions that read the row without choosing among rows: every row (but those with NULL in
// what they compare) is reached.
INSTANTIATE_TEST_SUITE_P(
    Tautology, ConditionCorpus,
    ::testing::Values(
        ConditionCase{"id = id", "tautology"}, ConditionCase{"t.id = id", "row_dependent"},
        ConditionCase{"t.id = t.id", "tautology"}, ConditionCase{"ctid = ctid", "tautology"},
        ConditionCase{"id >= id", "tautology"}, ConditionCase{"id <= (id)", "tautology"},
        ConditionCase{"lower(name) = lower(name)", "tautology"},
        ConditionCase{"id + 1 = id + 1", "tautology"},
        ConditionCase{"id + 1 = id + 2", "row_dependent"},
        ConditionCase{"id::text = id::text", "tautology"},
        ConditionCase{"id BETWEEN id AND id", "tautology"},
        ConditionCase{"id IS NOT DISTINCT FROM id", "true"},
        ConditionCase{"id > 0 OR id <= 0", "tautology"},
        ConditionCase{"id < 5 OR id >= 5", "tautology"},
        ConditionCase{"0 < id OR id <= 0", "tautology"},
        ConditionCase{"id > 3 OR id < 7", "tautology"},
        ConditionCase{"id < 5 OR id = 5 OR id > 5", "tautology"},
        ConditionCase{"id <> 3 OR id = 3", "tautology"},
        ConditionCase{"id <> 1 OR id <> 2", "tautology"},
        ConditionCase{"name <> 'a' OR name = 'a'", "tautology"},
        ConditionCase{"id = 1 OR (active OR NOT active)", "tautology"},
        ConditionCase{"active OR NOT active", "tautology"},
        ConditionCase{"name IS NULL OR name IS NOT NULL", "true"},
        ConditionCase{"(id = id) IS TRUE", "tautology"},
        ConditionCase{"(id = id) IS NOT FALSE", "true"},
        ConditionCase{"id = id AND true", "tautology"}, ConditionCase{"name LIKE '%'", "tautology"},
        ConditionCase{"name ILIKE '%%'", "tautology"}, ConditionCase{"name ~ ''", "tautology"},
        ConditionCase{"name ~ '.*'", "tautology"},
        ConditionCase{"id IN (SELECT id FROM t)", "tautology"},
        ConditionCase{"id IN (SELECT x.id FROM public.t x)", "tautology"},
        ConditionCase{"id = ANY (SELECT id FROM t)", "tautology"},
        ConditionCase{"EXISTS (SELECT 1 FROM t t2 WHERE t2.id = t.id)", "tautology"},
        ConditionCase{"EXISTS (SELECT 1 FROM t t2 WHERE t.id = t2.id)", "tautology"}));

// Near misses: they choose rows (or reach none), so the planner threshold decides.
INSTANTIATE_TEST_SUITE_P(
    NotTautology, ConditionCorpus,
    ::testing::Values(ConditionCase{"id <> id", "row_dependent"},
                      ConditionCase{"NOT (id = id)", "row_dependent"},
                      ConditionCase{"id > 5 OR id < 5", "row_dependent"},
                      ConditionCase{"id > 5 OR id <= 4", "row_dependent"},
                      ConditionCase{"id > 5 OR name <= 5", "row_dependent"},
                      ConditionCase{"name LIKE 'a%'", "row_dependent"},
                      ConditionCase{"name LIKE '_%'", "row_dependent"},
                      ConditionCase{"id IN (SELECT other_id FROM t)", "row_dependent"},
                      ConditionCase{"id IN (SELECT id FROM t WHERE id < 3)", "row_dependent"},
                      ConditionCase{"id IN (SELECT id FROM other)", "row_dependent"},
                      ConditionCase{"EXISTS (SELECT 1 FROM t t2 WHERE t2.id = t.other)",
                                    "row_dependent"},
                      ConditionCase{"EXISTS (SELECT 1 FROM t t2 WHERE t2.id = t.id AND t2.x = 1)",
                                    "row_dependent"}));

// --- statements: which writes need approval ---------------------------------------------

struct StatementCase {
  const char* sql;
  std::vector<std::string> rules;  // write_reach_rule of every write, in order
};

class StatementCorpus : public ::testing::TestWithParam<StatementCase> {};

std::vector<std::string> rules_of(const StatementAnalysis& st) {
  std::vector<std::string> out;
  for (const WriteEffect& e : st.write_effects) out.emplace_back(write_reach_rule(e.reach));
  return out;
}

TEST_P(StatementCorpus, ReportsEveryWrite) {
  SqlAnalysis a = analyse_sql(GetParam().sql);
  ASSERT_FALSE(a.parse_error) << GetParam().sql << ": " << a.parse_error->message;
  ASSERT_EQ(a.statements.size(), 1u);
  EXPECT_EQ(rules_of(a.statements[0]), GetParam().rules) << GetParam().sql;
}

INSTANTIATE_TEST_SUITE_P(
    Writes, StatementCorpus,
    ::testing::Values(
        StatementCase{"DELETE FROM t", {"where_absent"}},
        StatementCase{"delete from crm.orders where true", {"where_constant_true"}},
        StatementCase{"DELETE FROM t WHERE 1=1", {"where_constant_true"}},
        StatementCase{"DELETE FROM t WHERE id = 1 OR true", {"where_constant_true"}},
        StatementCase{"DELETE FROM t WHERE status IS NOT NULL", {"restricted"}},
        StatementCase{"DELETE FROM t WHERE id = 7", {"restricted"}},
        StatementCase{"DELETE FROM t WHERE id = id", {"where_tautology"}},
        StatementCase{"UPDATE t x SET c = 1 WHERE x.id > 0 OR x.id <= 0", {"where_tautology"}},
        StatementCase{"MERGE INTO t USING s ON t.id = t.id WHEN MATCHED THEN DELETE",
                      {"where_tautology"}},
        StatementCase{"UPDATE t SET c = (SELECT 'x' WHERE true)", {"where_absent"}},
        StatementCase{"UPDATE t SET c = 1 WHERE NOT false", {"where_constant_true"}},
        StatementCase{"UPDATE t x SET c = 1 WHERE x.id = 3", {"restricted"}},
        StatementCase{"UPDATE t x SET c = 1 WHERE t.id = 3", {"where_row_independent"}},
        StatementCase{"UPDATE t SET c = 1 FROM o WHERE o.k = 5", {"where_row_independent"}},
        StatementCase{"UPDATE t SET c = 1 FROM o WHERE o.k = t.id", {"restricted"}},
        StatementCase{"DELETE FROM t USING o WHERE o.k = t.id", {"restricted"}},
        StatementCase{"DELETE FROM t WHERE now() > '2000-01-01'", {"where_row_independent"}},
        StatementCase{"DELETE FROM t WHERE CURRENT OF c", {"restricted"}},
        StatementCase{"TRUNCATE t, crm.orders", {"truncate", "truncate"}},
        StatementCase{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"where_absent"}},
        StatementCase{"WITH d AS (UPDATE t SET c = 1 WHERE 1 = 1 RETURNING *) SELECT 1",
                      {"where_constant_true"}},
        StatementCase{"COPY (DELETE FROM t RETURNING *) TO STDOUT", {"where_absent"}},
        StatementCase{"MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
                      {"where_constant_true"}},
        StatementCase{"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                      {"restricted"}},
        StatementCase{"INSERT INTO t SELECT * FROM s", {}},
        StatementCase{"INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET c = 2", {}},
        StatementCase{"INSERT INTO t SELECT id, 'y' FROM t ON CONFLICT (id) DO UPDATE SET c = 2",
                      {"where_absent"}},
        StatementCase{"INSERT INTO t SELECT x.id FROM public.t x WHERE x.id = x.id "
                      "ON CONFLICT (id) DO UPDATE SET c = excluded.c",
                      {"where_tautology"}},
        StatementCase{"INSERT INTO t SELECT id FROM t WHERE id = 3 "
                      "ON CONFLICT (id) DO UPDATE SET c = 2",
                      {"restricted"}},
        StatementCase{"INSERT INTO t SELECT id FROM t ON CONFLICT (id) DO UPDATE SET c = 2 "
                      "WHERE t.c = 1",
                      {"restricted"}},
        StatementCase{"INSERT INTO t SELECT id FROM t ON CONFLICT (id) DO UPDATE SET c = 2 "
                      "WHERE true",
                      {"where_absent"}},
        StatementCase{"INSERT INTO t SELECT id FROM s ON CONFLICT (id) DO UPDATE SET c = 2", {}},
        StatementCase{"INSERT INTO t SELECT id FROM t ON CONFLICT DO NOTHING", {}},
        StatementCase{"SELECT * FROM t WHERE true", {}}, StatementCase{"EXPLAIN DELETE FROM t", {}},
        StatementCase{"PREPARE p AS DELETE FROM t", {}},
        StatementCase{"CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u",
                      {"unknown_effect"}},
        StatementCase{"CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING", {}},
        StatementCase{"CREATE TRIGGER x AFTER INSERT ON t EXECUTE FUNCTION f()",
                      {"unknown_effect"}},
        StatementCase{"DO $$ BEGIN DELETE FROM t; END $$", {"unknown_effect"}},
        StatementCase{"DROP TABLE t, crm.orders", {"drop", "drop"}},
        StatementCase{"DROP MATERIALIZED VIEW m", {"drop"}},
        StatementCase{"DROP SCHEMA crm", {"drop"}}, StatementCase{"DROP VIEW v", {}},
        StatementCase{"DROP VIEW v CASCADE", {"drop"}},
        StatementCase{"DROP FUNCTION f() CASCADE", {"drop"}}, StatementCase{"DROP INDEX i", {}},
        StatementCase{"DROP DATABASE d", {"drop"}},
        StatementCase{"ALTER TABLE t DROP COLUMN c", {"drop"}},
        StatementCase{"ALTER TABLE t ADD COLUMN c int", {}},
        // Destroys or hides stored rows without a DROP.
        StatementCase{"ALTER TABLE t ALTER COLUMN c TYPE int USING NULL", {"drop"}},
        StatementCase{"ALTER TABLE t ALTER c SET DATA TYPE date", {"drop"}},
        StatementCase{"ALTER TABLE t ADD COLUMN d int, ALTER COLUMN c TYPE text", {"drop"}},
        StatementCase{"ALTER TABLE t DETACH PARTITION t_2024", {"drop"}},
        StatementCase{"ALTER TABLE t DETACH PARTITION t_2024 CONCURRENTLY", {"drop"}},
        StatementCase{"ALTER TABLE t DETACH PARTITION t_2024 FINALIZE", {"drop"}},
        StatementCase{"ALTER TABLE t_child NO INHERIT t", {"drop"}},
        StatementCase{"ALTER TYPE comp DROP ATTRIBUTE a", {"drop"}},
        StatementCase{"ALTER TYPE comp ALTER ATTRIBUTE a TYPE int CASCADE", {"drop"}},
        StatementCase{"DROP OWNED BY app", {"drop"}},
        StatementCase{"DROP EXTENSION hstore", {"drop"}},
        // Stored data destroyed by a pg_catalog function or an emptying REFRESH.
        StatementCase{"SELECT lo_unlink(16400)", {"drop"}},
        StatementCase{"SELECT pg_catalog.lo_unlink(oid) FROM pg_largeobject_metadata", {"drop"}},
        StatementCase{"SELECT 1 FROM t WHERE lo_unlink(t.img) = 1", {"drop"}},
        StatementCase{"WITH x AS (SELECT lo_truncate(lo_open(1, 131072), 0)) SELECT * FROM x",
                      {"drop"}},
        StatementCase{"SELECT lo_truncate64(0, 0), lo_put(1, 0, '\\x00'), lowrite(0, 'x')",
                      {"drop", "drop", "drop"}},
        StatementCase{"REFRESH MATERIALIZED VIEW mv WITH NO DATA", {"drop"}},
        // Rows out of the WAL: a crash empties the table.
        StatementCase{"ALTER TABLE t SET UNLOGGED", {"drop"}},
        StatementCase{"ALTER TABLE t SET LOGGED", {}},
        // Which trigger or rule code runs on later writes.
        StatementCase{"ALTER TABLE t DISABLE TRIGGER ALL", {"unknown_effect"}},
        StatementCase{"ALTER TABLE t DISABLE TRIGGER USER", {"unknown_effect"}},
        StatementCase{"ALTER TABLE t DISABLE TRIGGER trg", {"unknown_effect"}},
        StatementCase{"ALTER TABLE t ENABLE TRIGGER trg", {"unknown_effect"}},
        StatementCase{"ALTER TABLE t ENABLE REPLICA TRIGGER trg", {"unknown_effect"}},
        StatementCase{"ALTER TABLE t ENABLE ALWAYS TRIGGER trg", {"unknown_effect"}},
        StatementCase{"ALTER TABLE t DISABLE RULE r", {"unknown_effect"}},
        StatementCase{"ALTER TABLE t ENABLE ALWAYS RULE r", {"unknown_effect"}},
        StatementCase{"DROP TRIGGER trg ON t", {"unknown_effect"}},
        StatementCase{"DROP TRIGGER IF EXISTS a ON crm.t", {"unknown_effect"}},
        StatementCase{"DROP RULE r ON t", {"unknown_effect"}},
        StatementCase{"DROP TRIGGER trg ON t CASCADE", {"drop"}},
        // Sequences and maintenance: no stored row or value changes.
        StatementCase{"SELECT setval('s', 1)", {}}, StatementCase{"SELECT nextval('s')", {}},
        StatementCase{"REINDEX TABLE t", {}}, StatementCase{"VACUUM t", {}},
        StatementCase{"ANALYZE t", {}},
        // Large objects created or read, a REFRESH that fills, a same name in another schema.
        StatementCase{"SELECT lo_create(0), lo_from_bytea(0, 'x'), lo_get(1), loread(0, 10)", {}},
        StatementCase{"REFRESH MATERIALIZED VIEW CONCURRENTLY mv", {}},
        StatementCase{"SELECT app.lo_unlink(1)", {}},
        // Not destructive: constraints, options, partitions attached, rewrites keeping values.
        StatementCase{"ALTER TABLE t DROP CONSTRAINT t_pkey CASCADE", {}},
        StatementCase{"ALTER TABLE t SET (fillfactor = 70)", {}},
        StatementCase{"ALTER TABLE t ALTER COLUMN g DROP EXPRESSION", {}},
        StatementCase{"ALTER TABLE t ATTACH PARTITION t_2025 FOR VALUES FROM (1) TO (2)", {}},
        StatementCase{"ALTER TABLE t_child INHERIT t", {}},
        StatementCase{"ALTER TABLE t SET TABLESPACE pg_default", {}},
        StatementCase{"ALTER SEQUENCE s RESTART", {}}, StatementCase{"CLUSTER t USING t_pkey", {}},
        StatementCase{"VACUUM FULL t", {}}));

TEST(WriteEffectTest, PrepareAndExplainAnalyseTheirInnerStatement) {
  SqlAnalysis a = analyse_sql("PREPARE p (int) AS DELETE FROM t WHERE $1 = $1");
  ASSERT_EQ(a.statements.size(), 1u);
  ASSERT_TRUE(a.statements[0].inner);
  EXPECT_EQ(a.statements[0].inner->text, "DELETE FROM t WHERE $1 = $1");
  EXPECT_EQ(rules_of(*a.statements[0].inner), std::vector<std::string>{"where_row_independent"});
  SqlAnalysis e = analyse_sql("EXPLAIN ANALYZE VERBOSE UPDATE t SET c = 1;");
  ASSERT_TRUE(e.statements[0].inner);
  EXPECT_EQ(e.statements[0].inner->text, "UPDATE t SET c = 1");
  EXPECT_EQ(rules_of(*e.statements[0].inner), std::vector<std::string>{"where_absent"});
}

TEST(WriteEffectTest, LiteralDecisionsAreMarkedSoTheyAreNotCachedByShape) {
  auto first = [](const char* sql) {
    return analyse_sql(sql).statements.at(0).write_effects.at(0);
  };
  EXPECT_TRUE(first("DELETE FROM t WHERE id = 1 OR 1 = 2").uses_literals);
  EXPECT_TRUE(first("DELETE FROM t WHERE 1 = 2").uses_literals);
  EXPECT_FALSE(first("DELETE FROM t WHERE id = 1").uses_literals);
  EXPECT_FALSE(first("UPDATE t SET v = 'x' WHERE k = 'y'").uses_literals);
  // Tautology checks that read constants: `k > 5 OR k <= 0` has the shape of `k > 0 OR k <= 0`.
  EXPECT_TRUE(first("DELETE FROM t WHERE k > 5 OR k <= 0").uses_literals);
  EXPECT_TRUE(first("DELETE FROM t WHERE v LIKE 'a%'").uses_literals);
  EXPECT_TRUE(first("DELETE FROM t WHERE k + 1 = k + 2").uses_literals);
  EXPECT_FALSE(first("DELETE FROM t WHERE k = k").uses_literals);
}

TEST(WriteEffectTest, BindParametersThatChooseRowsOtherThanByEqualityAreMarked) {
  auto chooses = [](const char* sql) {
    SqlAnalysis a = analyse_sql(sql);
    EXPECT_FALSE(a.parse_error) << sql;
    if (a.parse_error || a.statements.empty() || a.statements[0].write_effects.empty()) {
      ADD_FAILURE() << "no write effect: " << sql;
      return false;
    }
    return a.statements[0].write_effects[0].parameters_choose_rows;
  };
  // Whatever the value, `column = $n` chooses the rows of one value (the generic plan's
  // estimate); parameters in SET and RETURNING choose nothing.
  for (const char* sql : {"UPDATE t SET v = $1 WHERE k = $2",
                          "UPDATE t SET v = $1 WHERE $2 = k AND tenant = $3::int",
                          "DELETE FROM t WHERE k = $1 AND v IS NOT NULL RETURNING $2",
                          "UPDATE t SET v = 'x' WHERE k > 5",
                          "MERGE INTO t USING (VALUES ($1::int, $2::text)) s (k, v) ON t.k = s.k "
                          "WHEN MATCHED THEN UPDATE SET v = s.v",
                          "MERGE INTO t USING o ON t.k = o.k AND o.tenant = $1 "
                          "WHEN MATCHED AND t.v > $2 THEN DELETE"}) {
    EXPECT_FALSE(chooses(sql)) << sql;
  }
  for (const char* sql : {"DELETE FROM t WHERE k > $1",
                          "DELETE FROM t WHERE v LIKE $1",
                          "DELETE FROM t WHERE k = ANY ($1::int[])",
                          "DELETE FROM t WHERE k = $1 OR k = $2",
                          "DELETE FROM t WHERE k <> $1",
                          "DELETE FROM t WHERE lower(v) = $1",
                          "DELETE FROM t WHERE k = $1 + 0 AND v = 'a'",
                          "DELETE FROM t WHERE k BETWEEN $1 AND $2",
                          "DELETE FROM t WHERE k IN (SELECT k FROM o WHERE o.x > $1)",
                          "DELETE FROM t USING (SELECT k FROM o WHERE x > $1) s WHERE t.k = s.k",
                          "UPDATE t SET v = 'x' FROM o WHERE t.k = o.k AND o.x < $1",
                          "WITH s AS (SELECT k FROM o LIMIT $1) DELETE FROM t WHERE k IN "
                          "(SELECT k FROM s)",
                          "MERGE INTO t USING (SELECT * FROM o WHERE x > $1) s ON t.k = s.k "
                          "WHEN MATCHED THEN DELETE",
                          "MERGE INTO t USING o ON t.k > $1 WHEN MATCHED THEN DELETE"}) {
    EXPECT_TRUE(chooses(sql)) << sql;
  }
}

TEST(WriteEffectTest, DescribesTheReachForReviewers) {
  auto e = analyse_sql("delete from public.kv").statements.at(0).write_effects.at(0);
  EXPECT_EQ(e.relation, "public.kv");
  EXPECT_EQ(e.describe(), "DELETE on public.kv has no WHERE clause: it changes every row");
  auto m = analyse_sql("MERGE INTO t USING s ON 1=1 WHEN MATCHED THEN DELETE")
               .statements.at(0)
               .write_effects.at(0);
  EXPECT_EQ(m.describe(),
            "MERGE on public.t has a ON condition that is always true: it changes every row");
}

// An agent may send an OR of thousands of comparisons: reading it must not be quadratic in
// their number (cp analyses every statement).
TEST(WriteEffectTest, LongOrListsAreReadInLinearTime) {
  std::string same, ranges;
  for (int i = 0; i < 5000; ++i) {
    same += (i ? " OR id = " : "id = ") + std::to_string(i);
    ranges += (i ? " OR " : "") + std::string(i % 2 ? "id < " : "id > ") + std::to_string(i * 3);
  }
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(condition_reach_name(classify_condition_sql(same)), "row_dependent");
  EXPECT_EQ(condition_reach_name(classify_condition_sql(ranges)), "tautology");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(WriteEffectTest, DescribesDropsAndUnknownEffects) {
  auto first = [](const char* sql) {
    return analyse_sql(sql).statements.at(0).write_effects.at(0).describe();
  };
  EXPECT_EQ(first("drop table kv"),
            "DROP TABLE on public.kv destroys stored data (every row, or with CASCADE whatever "
            "depends on it)");
  EXPECT_EQ(first("drop schema crm cascade"),
            "DROP SCHEMA on crm destroys stored data (every row, or with CASCADE whatever "
            "depends on it)");
  EXPECT_EQ(first("select lo_unlink(16400)"),
            "lo_unlink() destroys or overwrites the stored contents of a large object");
  EXPECT_EQ(first("refresh materialized view mv with no data"),
            "REFRESH MATERIALIZED VIEW ... WITH NO DATA on public.mv empties the materialized "
            "view: its rows are gone until the next REFRESH");
  EXPECT_EQ(first("do $$ begin null; end $$"),
            "DO runs a code block pgwarden cannot analyse: what it changes is unknown");
  EXPECT_EQ(first("create rule r as on insert to t do also delete from u"),
            "CREATE RULE on public.t installs code that runs on later writes, which pgwarden "
            "cannot analyse");
}

TEST(InnerStatementTextTest, FindsTheStatementAfterTheWrapper) {
  EXPECT_EQ(inner_statement_text("PREPARE \"my as\" (int, text) AS SELECT $1, $2"),
            "SELECT $1, $2");
  EXPECT_EQ(inner_statement_text("prepare p as delete from t"), "delete from t");
  EXPECT_EQ(inner_statement_text("EXPLAIN (ANALYZE, FORMAT JSON) DELETE FROM t"), "DELETE FROM t");
  EXPECT_EQ(inner_statement_text("EXPLAIN DELETE FROM t"), "DELETE FROM t");
  EXPECT_EQ(inner_statement_text("SELECT 1"), "");
}

}  // namespace
}  // namespace pgwarden::policy
