// pgbench through pgwarden-dp: the read-only script in simple, extended and prepared mode and
// the TPC-B-like read/write script, several clients, no failed transaction.
#include <gtest/gtest.h>

#include <string>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

// pgbench's tables (scale 1) in the harness's database, created directly in PostgreSQL.
void init_pgbench(GatewayHarness& gw) {
  auto init = run_command("PGPASSWORD=" + gw.pg().get("PGW_SCRAM_PASSWORD") +
                          " pgbench -i -q -s 1 -h 127.0.0.1 -p " + std::to_string(gw.pg().port()) +
                          " -U app_scram demo 2>&1");
  ASSERT_TRUE(init.is_ok()) << init.status().message();
}

class GatewayPgbenchTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    gw_ = new GatewayHarness();
    Status st = gw_->start();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    init_pgbench(*gw_);
  }
  static void TearDownTestSuite() {
    delete gw_;
    gw_ = nullptr;
  }
  static GatewayHarness* gw_;
};

GatewayHarness* GatewayPgbenchTest::gw_ = nullptr;

TEST_P(GatewayPgbenchTest, RunsWithoutFailedTransactions) {
  // "S-simple" = read-only script in simple mode; "tpcb-prepared" = default script, prepared.
  std::string param = GetParam();
  std::string script = param.substr(0, param.find('-'));
  std::string mode = param.substr(param.find('-') + 1);
  std::string conn = "host=127.0.0.1 port=" + std::to_string(gw_->port()) +
                     " dbname=demo user=agent sslmode=require password=" + gw_->token();
  std::string cmd = "pgbench -n " + std::string(script == "S" ? "-S " : "") + "-M " + mode +
                    " -c 4 -j 2 -T 3 '" + conn + "' 2>&1";
  auto out = run_command(cmd);
  ASSERT_TRUE(out.is_ok()) << out.status().message() << "\n" << gw_->dp_log();
  EXPECT_NE(out->find("number of failed transactions: 0 "), std::string::npos) << *out;
  auto pos = out->find("number of transactions actually processed: ");
  ASSERT_NE(pos, std::string::npos) << *out;
  EXPECT_GT(std::stol(out->substr(pos + 43)), 100) << *out;
}

INSTANTIATE_TEST_SUITE_P(Modes, GatewayPgbenchTest,
                         ::testing::Values("S-simple", "S-extended", "S-prepared", "tpcb-simple",
                                           "tpcb-prepared"),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param;
                           for (char& ch : n) {
                             if (ch == '-') ch = '_';
                           }
                           return n;
                         });

// TPC-B under a policy with a planner threshold (and approvals by effect): its writes are by
// primary key (`WHERE aid = $2` in prepared mode) on analysed tables without triggers, plus an
// INSERT into the history table, so none needs an approval. A held statement would be denied
// after 5 s and show as a failed transaction or an aborted client.
class GatewayPgbenchThresholdTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    gw_ = new GatewayHarness();
    GatewayOptions o;
    o.policy_json =
        R"({"name": "agents", "allowed_kinds": ["select", "insert", "update", "delete",
            "transaction", "prepare", "execute", "deallocate", "set", "show"],
            "allowed_relations": ["public.*", "pg_catalog.*"], "read_only": false,
            "approve_when_rows_over": 1000, "rule_sets": ["deny"]})";
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 5;
    Status st = gw_->start(o);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    init_pgbench(*gw_);
  }
  static void TearDownTestSuite() {
    delete gw_;
    gw_ = nullptr;
  }
  static GatewayHarness* gw_;
};

GatewayHarness* GatewayPgbenchThresholdTest::gw_ = nullptr;

TEST_P(GatewayPgbenchThresholdTest, TpcbNeedsNoApproval) {
  std::string conn = "host=127.0.0.1 port=" + std::to_string(gw_->port()) +
                     " dbname=demo user=agent sslmode=require password=" + gw_->token();
  auto out = run_command("pgbench -n -M " + GetParam() + " -c 2 -j 2 -T 3 '" + conn + "' 2>&1");
  ASSERT_TRUE(out.is_ok()) << out.status().message() << "\n" << gw_->cp_log();
  EXPECT_NE(out->find("number of failed transactions: 0 "), std::string::npos) << *out;
  auto pos = out->find("number of transactions actually processed: ");
  ASSERT_NE(pos, std::string::npos) << *out;
  EXPECT_GT(std::stol(out->substr(pos + 43)), 20) << *out;
}

INSTANTIATE_TEST_SUITE_P(Modes, GatewayPgbenchThresholdTest,
                         ::testing::Values("simple", "prepared"));

}  // namespace
}  // namespace pgwarden::testing
