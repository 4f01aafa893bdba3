#include "controlplane/server/policy_analyser.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "controlplane/policy/fake_lineage_catalog.h"

namespace pgwarden::server {
namespace {

// A fake EffectProbe: estimates and dry-run counts by statement text; records calls.
class FakeProbe : public EffectProbe {
 public:
  Result<RowEstimate> estimate_rows(const config::Target&, const std::string& sql) override {
    estimated.push_back(sql);
    auto it = estimates.find(sql);
    if (it == estimates.end()) return unavailable("target down");
    RowEstimate est{it->second, 0, "", {}};
    if (auto t = triggers.find(sql); t != triggers.end()) est.triggers = t->second;
    return est;
  }
  Result<std::string> irreversible_effects(const config::Target&,
                                           const std::vector<std::string>& relations,
                                           bool) override {
    for (const auto& r : relations) {
      if (r == "crm.audited") return std::string("crm.audited has triggers");
    }
    return std::string();
  }
  Result<int64_t> dry_run(const config::Target&, const std::string& sql) override {
    dry_runs.push_back(sql);
    return 42;
  }
  Result<std::string> plan_time_functions(const config::Target&,
                                          const std::vector<std::string>& names) override {
    for (const auto& n : names) {
      if (n == "my_stable_fn") return std::string("public.my_stable_fn");
    }
    return std::string();
  }
  Result<std::vector<TriggerRef>> insert_triggers(const config::Target&,
                                                  const std::string& relation) override {
    auto it = triggers.find(relation);
    return it == triggers.end() ? std::vector<TriggerRef>{} : it->second;
  }
  std::map<std::string, int64_t> estimates;
  // By statement text (estimate_rows) or relation (insert_triggers).
  std::map<std::string, std::vector<TriggerRef>> triggers;
  std::vector<std::string> estimated;
  std::vector<std::string> dry_runs;
};

class PolicyAnalyserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    policy_.name = "agents";
    policy_.allowed_kinds = {"select"};
    policy_.allowed_relations = {"crm.*"};
    policy_.masks = {{"crm.customers.email", "", "", "email"}, {"", "*ssn*", "", "hash"}};
    policy_.deny_masked_in_expressions = true;
  }
  // `with`: another analyser than the fixture's (one with a catalog provider).
  protocol::AnalyseResponse analyse(const std::string& sql,
                                    std::vector<protocol::PrescreenHit> prescreen = {},
                                    PolicyAnalyser* with = nullptr) {
    std::string sid = "s";
    AuthenticatedIdentity id{"alice", "iss", {"agents"}};
    SessionView view{sid, id, policy_, target_, config_, &state_};
    protocol::AnalyseRequest req;
    req.session_id = sid;
    req.sql = sql;
    req.prescreen = std::move(prescreen);
    return (with != nullptr ? *with : analyser_).analyse(view, req);
  }
  void writer_policy() {
    policy_.allowed_kinds = {"select", "write", "prepared", "explain_analyze", "truncate"};
    policy_.read_only = false;
    policy_.deny_masked_in_expressions = false;
  }
  policy::Policy policy_;
  config::Target target_;
  config::Config config_;
  std::shared_ptr<FakeProbe> probe_ = std::make_shared<FakeProbe>();
  PolicyAnalyser analyser_{probe_};
  SessionSqlState state_;
};

TEST_F(PolicyAnalyserTest, MaskedColumnInsideAnExpressionIsDenied) {
  for (const char* sql :
       {"select id from crm.customers where email like 'a%'",
        "select upper(email) from crm.customers", "select id from crm.customers order by ssn",
        "select c.id from crm.customers c where c.ssn = '1'"}) {
    auto r = analyse(sql);
    EXPECT_EQ(r.verdict, "deny") << sql;
    EXPECT_EQ(r.rule, "policy.masked_column_in_expression") << sql;
  }
}

TEST_F(PolicyAnalyserTest, PlainOutputOfMaskedColumnsAndOtherColumnsStayAllowed) {
  for (const char* sql : {"select email, ssn from crm.customers",
                          "select id from crm.customers where full_name = 'x'",
                          "select id from crm.orders where email_sent"}) {
    EXPECT_EQ(analyse(sql).verdict, "allow") << sql;
  }
  policy_.deny_masked_in_expressions = false;
  EXPECT_EQ(analyse("select upper(email) from crm.customers").verdict, "allow");
}

TEST_F(PolicyAnalyserTest, PrescreenApproveTurnsAnAllowIntoAnUncacheableApprove) {
  policy_.allowed_kinds = {"select", "update"};
  policy_.read_only = false;
  auto r = analyse("update crm.customers set notes = 'x'",
                   {{"approve.update_without_where", "approve"}, {"pii.email", "detect"}});
  EXPECT_EQ(r.verdict, "approve");
  EXPECT_EQ(r.rule, "approve.update_without_where");
  EXPECT_FALSE(r.cacheable);
  // Without the match a restricted update is a plain allow; the unrestricted one still needs
  // approval (by effect).
  EXPECT_EQ(analyse("update crm.customers set notes = 'x' where id = 1").verdict, "allow");
  EXPECT_EQ(analyse("update crm.customers set notes = 'x'").rule, "policy.where_absent");
}

TEST_F(PolicyAnalyserTest, PrescreenApproveNeverOverridesAPolicyDeny) {
  // Kind not allowed (truncate) and relation not allowed (public.kv): deny, not a request a
  // reviewer could approve into running.
  policy_.allowed_kinds = {"select", "update"};
  policy_.read_only = false;
  for (const char* sql : {"truncate crm.orders", "update public.kv set v = 'x'"}) {
    auto r = analyse(sql, {{"approve.some_rule", "approve"}});
    EXPECT_EQ(r.verdict, "deny") << sql;
    EXPECT_EQ(r.rule.rfind("policy.", 0), 0u) << sql << ": " << r.rule;
  }
}

TEST_F(PolicyAnalyserTest, PrescreenDenyWinsOverAnApproveAndTheAllow) {
  auto r = analyse("select id from crm.customers",
                   {{"approve.some_rule", "approve"}, {"deny.some_rule", "deny"}});
  EXPECT_EQ(r.verdict, "deny");
  EXPECT_EQ(r.rule, "deny.some_rule");
  EXPECT_FALSE(r.cacheable);
}

TEST_F(PolicyAnalyserTest, UnboundedWritesNeedApprovalAndAreNeverCached) {
  writer_policy();
  for (const char* sql : {"delete from crm.orders where true", "delete from crm.orders where 1=1",
                          "update crm.orders set v = (select 'x' where true)",
                          "truncate crm.orders", "delete from crm.orders where id = 1 or true"}) {
    auto r = analyse(sql);
    EXPECT_EQ(r.verdict, "approve") << sql;
    EXPECT_FALSE(r.cacheable) << sql;
  }
  // Same shape as `where 1=1`: the allow must not be cached either.
  auto r = analyse("delete from crm.orders where 1=2");
  EXPECT_EQ(r.verdict, "allow");
  EXPECT_FALSE(r.cacheable);
  EXPECT_TRUE(analyse("delete from crm.orders where id = 1").cacheable);
}

TEST_F(PolicyAnalyserTest, TriggersOfWrittenTablesLeaveNoBoundUnlessTheirFunctionIsTrusted) {
  writer_policy();
  policy_.approve_when_rows_over = 100;
  const std::string sql = "delete from crm.orders where id = 1";
  probe_->estimates[sql] = 1;
  probe_->triggers[sql] = {{"orders_audit", "crm.orders", "pg_catalog", "tsvector_update_trigger"},
                           {"orders_purge", "crm.orders", "crm", "purge_lines"}};
  // One row by the plan, but crm.purge_lines() may delete anything: no bound, approval.
  auto held = analyse(sql);
  EXPECT_EQ(held.verdict, "approve");
  EXPECT_EQ(held.rule, "policy.rows_over");
  EXPECT_NE(held.message.find("crm.orders has trigger orders_purge, which runs crm.purge_lines()"),
            std::string::npos)
      << held.message;
  auto effect = state_.take_effect(sql);
  EXPECT_EQ(effect.estimated_rows, -1);
  EXPECT_NE(effect.estimate_note.find("allowed_functions"), std::string::npos)
      << effect.estimate_note;
  // Listed in allowed_functions (qualified or bare), the trigger is judged like a call the
  // operator vouches for: the plan's estimate decides. Built-in trigger functions always are.
  policy_.allowed_functions = {"crm.purge_lines"};
  EXPECT_EQ(analyse(sql).verdict, "allow");
  policy_.allowed_functions = {"purge_lines"};
  EXPECT_EQ(analyse(sql).verdict, "allow");
  policy_.allowed_functions = {"other.purge_lines"};
  EXPECT_EQ(analyse(sql).verdict, "approve");
  // COPY ... FROM is not EXPLAINed; its table's triggers are asked for directly.
  policy_.allowed_kinds.push_back("copy_from_stdin");
  probe_->triggers["crm.orders"] = probe_->triggers[sql];
  auto copy = analyse("copy crm.orders from stdin");
  EXPECT_EQ(copy.verdict, "approve");
  EXPECT_EQ(copy.rule, "policy.rows_over");
  EXPECT_FALSE(copy.cacheable);
  EXPECT_NE(copy.message.find("crm.purge_lines()"), std::string::npos) << copy.message;
  auto plain = analyse("copy crm.lines from stdin");
  EXPECT_EQ(plain.verdict, "allow") << plain.message;
  EXPECT_FALSE(plain.cacheable);
}

TEST_F(PolicyAnalyserTest, RowsOverThresholdUsesThePlannerEstimateAndFailsClosed) {
  writer_policy();
  policy_.approve_when_rows_over = 100;
  probe_->estimates["update crm.orders set v = 1 where status = 'x'"] = 5000;
  probe_->estimates["update crm.orders set v = 1 where status = 'y'"] = 3;
  auto over = analyse("update crm.orders set v = 1 where status = 'x'");
  EXPECT_EQ(over.verdict, "approve");
  EXPECT_EQ(over.rule, "policy.rows_over");
  EXPECT_NE(over.message.find("5,000 rows"), std::string::npos) << over.message;
  EXPECT_FALSE(over.cacheable);
  auto effect = state_.take_effect("update crm.orders set v = 1 where status = 'x'");
  EXPECT_EQ(effect.estimated_rows, 5000);
  ASSERT_FALSE(effect.reasons.empty());
  EXPECT_EQ(effect.reasons[0].rfind("rows_over: ", 0), 0u) << effect.reasons[0];
  auto under = analyse("update crm.orders set v = 1 where status = 'y'");
  EXPECT_EQ(under.verdict, "allow");
  EXPECT_FALSE(under.cacheable);  // another literal may estimate more
  // No estimate (target down): approval, not a guess.
  auto unknown = analyse("update crm.orders set v = 1 where status = 'z'");
  EXPECT_EQ(unknown.rule, "policy.rows_over");
  EXPECT_NE(unknown.message.find("unavailable"), std::string::npos);
  // A user-defined function the planner could run: no EXPLAIN, so no estimate (and the call
  // itself is an unknown effect).
  probe_->estimated.clear();
  const std::string udf_sql = "update crm.orders set v = 1 where id = my_stable_fn()";
  auto udf = analyse(udf_sql);
  EXPECT_EQ(udf.rule, "policy.unknown_effect");
  EXPECT_NE(udf.message.find("my_stable_fn"), std::string::npos) << udf.message;
  EXPECT_TRUE(probe_->estimated.empty());
  auto udf_effect = state_.take_effect(udf_sql);
  ASSERT_EQ(udf_effect.reasons.size(), 2u);
  EXPECT_NE(udf_effect.reasons[1].find("public.my_stable_fn"), std::string::npos)
      << udf_effect.reasons[1];
  // Reads are never estimated.
  probe_->estimated.clear();
  EXPECT_EQ(analyse("select 1").verdict, "allow");
  EXPECT_TRUE(probe_->estimated.empty());
}

// Functions outside pg_catalog are code pgwarden cannot analyse: under a writable policy a
// call waits for approval, wherever it is and whatever the statement's kind.
TEST_F(PolicyAnalyserTest, CallsOfCodeOutsidePgCatalogNeedApprovalUnderWritablePolicies) {
  writer_policy();
  policy_.allowed_kinds.push_back("call");
  policy_.masks.clear();  // no lineage: only the effect analysis speaks
  auto catalog = std::make_shared<policy::FakeCatalog>();
  for (const char* builtin : {"lower", "upper", "now", "count"}) {
    catalog->add_function(builtin, "pg_catalog");
  }
  catalog->add_function("purge", "public");
  catalog->add_function("shadowed", "pg_catalog");
  catalog->add_function("shadowed", "public");
  bool catalog_down = false;
  PolicyAnalyser analyser(probe_, [&](const config::Config&, const config::Target&) {
    if (catalog_down) return Result<std::shared_ptr<policy::LineageCatalog>>(unavailable("down"));
    return Result<std::shared_ptr<policy::LineageCatalog>>(
        std::shared_ptr<policy::LineageCatalog>(catalog));
  });
  auto run = [&](const std::string& sql) { return analyse(sql, {}, &analyser); };
  for (const char* sql : {"select purge()", "select public.anything(1)", "call my_proc()",
                          "select * from crm.orders where id = purge()", "select shadowed()",
                          "with x as (select purge()) select * from x"}) {
    auto r = run(sql);
    EXPECT_EQ(r.verdict, "approve") << sql;
    EXPECT_EQ(r.rule, "policy.unknown_effect") << sql;
    EXPECT_FALSE(r.cacheable) << sql;
  }
  EXPECT_NE(run("select purge()").message.find("public.purge"), std::string::npos);
  EXPECT_NE(run("call my_proc()").message.find("no such function"), std::string::npos);
  // Built-in functions stay allowed (and cacheable).
  auto builtin = run("select lower('A'), pg_catalog.upper('b'), now(), count(*) from crm.orders");
  EXPECT_EQ(builtin.verdict, "allow");
  EXPECT_TRUE(builtin.cacheable);
  // PREPARE of a call waits (and so does every EXECUTE of it).
  EXPECT_EQ(run("prepare w as select purge()").rule, "policy.unknown_effect");
  // allowed_functions vouches for a function.
  policy_.allowed_functions = {"purge", "public.anything"};
  EXPECT_EQ(run("select purge(), public.anything(1)").verdict, "allow");
  // Without an answer from the catalog: approval, not a guess.
  policy_.allowed_functions.clear();
  catalog_down = true;
  auto down = run("select lower('a')");
  EXPECT_EQ(down.rule, "policy.unknown_effect");
  EXPECT_NE(down.message.find("down"), std::string::npos) << down.message;
  catalog_down = false;
  // Read-only policies run no writes at all: calls are not held there.
  policy_.read_only = true;
  policy_.allowed_kinds = {"select"};
  EXPECT_EQ(run("select purge()").verdict, "allow");
}

TEST_F(PolicyAnalyserTest, ExecuteInheritsPrepareAcrossRequestsAndIsEstimatedByItsText) {
  writer_policy();
  policy_.approve_when_rows_over = 10;
  EXPECT_EQ(analyse("execute p").rule, "policy.unknown_prepared_statement");
  auto prep = analyse("prepare p (int) as update crm.orders set v = $1 where id > 0");
  EXPECT_EQ(prep.verdict, "allow");
  EXPECT_FALSE(prep.cacheable);
  probe_->estimates["update crm.orders set v = $1 where id > 0"] = 900;
  auto exec = analyse("execute p (5)");
  EXPECT_EQ(exec.verdict, "approve");
  EXPECT_EQ(exec.rule, "policy.rows_over");
  EXPECT_FALSE(exec.cacheable);
  // EXPLAIN ANALYZE EXECUTE depends on the session's PREPARE too: never cached.
  EXPECT_FALSE(analyse("explain analyze execute p (5)").cacheable);
  EXPECT_EQ(analyse("deallocate p").verdict, "allow");
  EXPECT_EQ(analyse("execute p (5)").rule, "policy.unknown_prepared_statement");
}

TEST_F(PolicyAnalyserTest, DeniedPrepareIsNotRememberedEvenWhenOnlyTheMaskCheckDenies) {
  writer_policy();
  policy_.deny_masked_in_expressions = true;
  EXPECT_EQ(analyse("prepare q as select upper(email) from crm.customers").verdict, "deny");
  EXPECT_EQ(analyse("execute q").rule, "policy.unknown_prepared_statement");
}

TEST_F(PolicyAnalyserTest, DryRunCountsOnlyWhereARollbackUndoesEverything) {
  writer_policy();
  // Without dry_run and approve_when_rows_over nothing is sent to the database.
  analyse("delete from crm.orders");
  EXPECT_TRUE(probe_->estimated.empty());
  EXPECT_TRUE(probe_->dry_runs.empty());
  policy_.dry_run = true;
  analyse("delete from crm.orders");
  auto e = state_.take_effect("delete from crm.orders");
  EXPECT_EQ(e.dry_run_rows, 42);
  EXPECT_EQ(probe_->dry_runs, std::vector<std::string>{"delete from crm.orders"});
  analyse("update crm.orders set id = nextval('s')");
  e = state_.take_effect("update crm.orders set id = nextval('s')");
  EXPECT_EQ(e.dry_run_rows, -1);
  EXPECT_NE(e.dry_run_note.find("pg_catalog.nextval"), std::string::npos) << e.dry_run_note;
  analyse("delete from crm.audited");
  e = state_.take_effect("delete from crm.audited");
  EXPECT_NE(e.dry_run_note.find("triggers"), std::string::npos) << e.dry_run_note;
  analyse("delete from crm.orders; delete from crm.items");
  e = state_.take_effect("delete from crm.orders; delete from crm.items");
  EXPECT_NE(e.dry_run_note.find("several statements"), std::string::npos) << e.dry_run_note;
  EXPECT_EQ(probe_->dry_runs.size(), 1u);
  // Reasons name every unbounded write.
  ASSERT_EQ(e.reasons.size(), 2u);
  EXPECT_EQ(e.reasons[0].rfind("where_absent: statement 1: DELETE on crm.orders", 0), 0u)
      << e.reasons[0];
  EXPECT_EQ(e.reasons[1].rfind("where_absent: DELETE on crm.items", 0), 0u) << e.reasons[1];
}

// With a catalog provider (cp's wiring), lineage decides: derived values and predicates of
// masked sources are refused with a rule naming why; plain output and count(*) pass.
TEST_F(PolicyAnalyserTest, LineageRefusesDerivedAndPredicateUsesWithACatalog) {
  policy_.deny_masked_in_expressions = false;
  policy_.masks = {{"", "*ssn*", "", "hash"}, {"crm.customers.email", "", "", "email"}};
  auto catalog = std::make_shared<policy::FakeCatalog>();
  PolicyAnalyser analyser(nullptr, [catalog](const config::Config&, const config::Target&) {
    return Result<std::shared_ptr<policy::LineageCatalog>>(
        std::shared_ptr<policy::LineageCatalog>(catalog));
  });
  auto run = [&](const std::string& sql) {
    std::string sid = "s";
    AuthenticatedIdentity id{"alice", "iss", {"agents"}};
    SessionView view{sid, id, policy_, target_, config_};
    protocol::AnalyseRequest req;
    req.session_id = sid;
    req.sql = sql;
    return analyser.analyse(view, req);
  };
  auto r = run("SELECT md5(ssn) FROM crm.customers");
  EXPECT_EQ(r.verdict, "deny");
  EXPECT_EQ(r.rule, "policy.masked_derived");
  EXPECT_TRUE(r.cacheable);
  r = run("SELECT ident FROM crm.customers_v2 WHERE ssn = '1'");
  EXPECT_EQ(r.rule, "policy.masked_predicate");
  r = run("SELECT x FROM crm.nothing");
  EXPECT_EQ(r.rule, "policy.lineage_unknown");
  EXPECT_FALSE(r.cacheable);
  EXPECT_EQ(run("SELECT ssn, email, count(*) OVER () FROM crm.customers").verdict, "allow");
  EXPECT_EQ(run("SELECT * FROM crm.customers_v2").verdict, "allow");
}

TEST_F(PolicyAnalyserTest, UnreachableCatalogDeniesUncacheably) {
  PolicyAnalyser analyser(nullptr, [](const config::Config&, const config::Target&) {
    return Result<std::shared_ptr<policy::LineageCatalog>>(unavailable("connection refused"));
  });
  std::string sid = "s";
  AuthenticatedIdentity id{"alice", "iss", {"agents"}};
  SessionView view{sid, id, policy_, target_, config_};
  protocol::AnalyseRequest req;
  req.session_id = sid;
  req.sql = "SELECT email FROM crm.customers";
  auto r = analyser.analyse(view, req);
  EXPECT_EQ(r.verdict, "deny");
  EXPECT_EQ(r.rule, "policy.lineage_unavailable");
  EXPECT_FALSE(r.cacheable);
}

TEST_F(PolicyAnalyserTest, UnparseableSqlIsDeniedWithTheParsersSqlstateMessageAndPosition) {
  auto r = analyse("select id from crm.customers wher id = 1");
  EXPECT_EQ(r.verdict, "deny");
  EXPECT_EQ(r.rule, "policy.parse_error");
  EXPECT_EQ(r.sqlstate, "42601");
  EXPECT_EQ(r.message, "syntax error at or near \"id\"");
  EXPECT_EQ(r.position, 35);
  EXPECT_FALSE(r.cacheable);
  // Positions count characters, as PostgreSQL's do, not bytes.
  EXPECT_EQ(analyse("select 'é' from from").position, 17);
  // A policy refusal carries no sqlstate: the dp answers 42501 with its own message.
  auto denied = analyse("select * from secret.t");
  EXPECT_EQ(denied.verdict, "deny");
  EXPECT_EQ(denied.sqlstate, "");
}

TEST_F(PolicyAnalyserTest, EmptyAndCommentOnlySqlIsAllowedForPostgresToAnswer) {
  for (const char* sql : {"", " ", ";", "-- c", "/* c */ ;"}) {
    auto r = analyse(sql);
    EXPECT_EQ(r.verdict, "allow") << "[" << sql << "]";
    EXPECT_EQ(r.sqlstate, "") << sql;
  }
}

}  // namespace
}  // namespace pgwarden::server
