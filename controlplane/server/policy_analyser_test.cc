#include "controlplane/server/policy_analyser.h"

#include <gtest/gtest.h>

#include "controlplane/policy/fake_lineage_catalog.h"

namespace pgwarden::server {
namespace {

class PolicyAnalyserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    policy_.name = "agents";
    policy_.allowed_kinds = {"select"};
    policy_.allowed_relations = {"crm.*"};
    policy_.masks = {{"crm.customers.email", "", "", "email"}, {"", "*ssn*", "", "hash"}};
    policy_.deny_masked_in_expressions = true;
  }
  protocol::AnalyseResponse analyse(const std::string& sql,
                                    std::vector<protocol::PrescreenHit> prescreen = {}) {
    std::string sid = "s";
    AuthenticatedIdentity id{"alice", "iss", {"agents"}};
    SessionView view{sid, id, policy_, target_, config_};
    protocol::AnalyseRequest req;
    req.session_id = sid;
    req.sql = sql;
    req.prescreen = std::move(prescreen);
    return analyser_.analyse(view, req);
  }
  policy::Policy policy_;
  config::Target target_;
  config::Config config_;
  PolicyAnalyser analyser_;
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
  // Without the match the same statement is a plain allow.
  EXPECT_EQ(analyse("update crm.customers set notes = 'x'").verdict, "allow");
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

// With a catalog provider (cp's wiring), lineage decides: derived values and predicates of
// masked sources are refused with a rule naming why; plain output and count(*) pass.
TEST_F(PolicyAnalyserTest, LineageRefusesDerivedAndPredicateUsesWithACatalog) {
  policy_.deny_masked_in_expressions = false;
  policy_.masks = {{"", "*ssn*", "", "hash"}, {"crm.customers.email", "", "", "email"}};
  auto catalog = std::make_shared<policy::FakeCatalog>();
  PolicyAnalyser analyser([catalog](const config::Config&, const config::Target&) {
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
  PolicyAnalyser analyser([](const config::Config&, const config::Target&) {
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

}  // namespace
}  // namespace pgwarden::server
