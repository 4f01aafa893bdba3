#include "controlplane/server/policy_analyser.h"

#include <gtest/gtest.h>

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
