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
  protocol::AnalyseResponse analyse(const std::string& sql) {
    std::string sid = "s";
    AuthenticatedIdentity id{"alice", "iss", {"agents"}};
    SessionView view{sid, id, policy_, target_, config_};
    protocol::AnalyseRequest req;
    req.session_id = sid;
    req.sql = sql;
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

}  // namespace
}  // namespace pgwarden::server
