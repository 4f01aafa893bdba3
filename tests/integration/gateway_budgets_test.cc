// Per-identity budgets, live (docs/budgets.md): the sandbox PostgreSQL, pgwarden-cp with
// $.budgets, pgwarden-dp and real clients (libpq, simple and extended protocol) and the real
// pgwardenctl. Checked: the statement that crosses a limit completes and the next one is
// refused with 53400 naming the budget, the window and its reset (also a cached verdict and
// an Execute of a prepared statement), a large SELECT crossing the rows limit, masked cells
// under a mask policy, a short window starting again, counts kept across a cp restart,
// on_exceed "approve" holding the statement for a reviewer, reset from the CLI, the audit.
// Each test uses its own identity (budgets count per identity), so their order does not matter.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;

class GatewayBudgetsTest : public SharedGatewayTest<GatewayBudgetsTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json =
        R"({"name": "agents", "allowed_kinds": ["select", "transaction", "prepare", "execute",
            "deallocate", "set", "show"],
            "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
            "allowed_functions": ["pg_catalog.generate_series"],
            "read_only": true, "rule_sets": ["deny", "approve"],
            "masks": [{"column": "crm.customers.email", "function": "email"}]})";
    o.extra_service_keys = {"stmts", "prep", "rows", "masked", "short", "restart", "appr"};
    o.approver_groups = {"reviewers"};
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    o.budgets_json = R"([
      {"name": "stmts", "identities": ["svc:stmts"], "window": "1h", "statements": 3},
      {"name": "prep", "identities": ["svc:prep"], "window": "1h", "statements": 3},
      {"name": "rows", "identities": ["svc:rows"], "window": "1h", "rows_returned": 1000,
       "result_bytes": "1GB"},
      {"name": "masked", "identities": ["svc:masked"], "window": "1h", "masked_cells": 5},
      {"name": "short", "identities": ["svc:short"], "window": "2s", "statements": 2},
      {"name": "restart", "identities": ["svc:restart"], "window": "1h", "statements": 3},
      {"name": "appr", "identities": ["svc:appr"], "window": "1h", "statements": 1,
       "on_exceed": "approve"}])";
    return o;
  }

 protected:
  static Conn connect(const std::string& who) {
    Conn c(PQconnectdb(gw_->conninfo_as(who).c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  static Res exec(PGconn* c, const std::string& sql) { return Res(PQexec(c, sql.c_str())); }
  static json ctl_json(std::vector<std::string> args) {
    args.push_back("--json");
    CtlResult r = gw_->ctl("reviewer", args);
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    return json::parse(r.out, nullptr, false);
  }
  // The budget `name` of `identity` as `pgwardenctl budgets show` reports it.
  static json shown(const std::string& identity, const std::string& name) {
    json j = ctl_json({"budgets", "show", identity});
    if (j.is_object() && j["budgets"].is_array()) {
      for (const json& b : j["budgets"]) {
        if (b.value("name", "") == name) return b;
      }
    }
    return json::object();
  }
  static uint64_t used(const std::string& identity, const std::string& name,
                       const std::string& measure) {
    json b = shown(identity, name);
    return b.contains("used") ? b["used"].value(measure, uint64_t{0}) : 0;
  }
  static void expect_refused(const PGresult* r, const std::string& budget) {
    ASSERT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
    EXPECT_EQ(sqlstate(r), "53400");
    std::string msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    EXPECT_NE(msg.find("budget \"" + budget + "\""), std::string::npos) << msg;
    EXPECT_NE(msg.find("window; it resets at "), std::string::npos) << msg;
  }
};

TEST_F(GatewayBudgetsTest, StatementsBudgetRefusesTheStatementAfterTheOneThatCrossesIt) {
  Conn c = connect("stmts");
  for (int i = 0; i < 3; ++i) {  // the third reaches the limit and completes
    Res r = exec(c.get(), "select 1");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  Res refused = exec(c.get(), "select 1");  // its verdict is cached: the budget comes first
  expect_refused(refused.get(), "stmts");
  std::string msg = PQresultErrorField(refused.get(), PG_DIAG_MESSAGE_PRIMARY);
  EXPECT_NE(msg.find("statements 3 of 3 in the 1h window"), std::string::npos) << msg;
  // The session stays usable for what the budget allows: nothing more in this window.
  expect_refused(Res(exec(c.get(), "select 2")).get(), "stmts");

  ASSERT_TRUE(eventually(
      [] { return shown("svc:stmts", "stmts").value("exhausted", json()) == "statements"; }));
  json list = ctl_json({"budgets", "list"});
  bool listed = false;
  for (const json& e : list["usage"]) {
    listed |= e.value("identity", "") == "svc:stmts" && !e["budget"]["exhausted"].is_null();
  }
  EXPECT_TRUE(listed) << list.dump();
  CtlResult text = gw_->ctl("reviewer", {"budgets", "show", "svc:stmts"});
  EXPECT_NE(text.out.find("EXHAUSTED (statements)"), std::string::npos) << text.out;
  CtlResult status = gw_->ctl("reviewer", {"status"});
  EXPECT_NE(status.out.find("budgets: 7 configured"), std::string::npos) << status.out;

  // Audited: the crossing, and each refusal with its rule.
  ASSERT_TRUE(eventually([] {
    std::string audit = gw_->audit_log();
    return audit.find("\"budget_exhausted\"") != std::string::npos &&
           audit.find("\"budget:stmts\"") != std::string::npos;
  }));

  // A reset from the CLI reaches the live session: it may run again.
  CtlResult reset = gw_->ctl("reviewer", {"budgets", "reset", "svc:stmts"});
  ASSERT_EQ(reset.code, 0) << reset.out << reset.err;
  EXPECT_NE(reset.out.find("told 1 live session"), std::string::npos) << reset.out;
  ASSERT_TRUE(eventually([&] {
    Res r = exec(c.get(), "select 1");
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK;
  }));
}

TEST_F(GatewayBudgetsTest, ExecutionsOfAPreparedStatementAreRefusedToo) {
  Conn c = connect("prep");
  Res p(PQprepare(c.get(), "q", "select $1::int", 1, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(p.get());
  const char* one = "1";
  for (int i = 0; i < 3; ++i) {
    Res r(PQexecPrepared(c.get(), "q", 1, &one, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  // Bind/Execute of the already-allowed statement: no new check of its text, the budget holds.
  Res r(PQexecPrepared(c.get(), "q", 1, &one, nullptr, nullptr, 0));
  expect_refused(r.get(), "prep");
  // The protocol stays in step: the connection still answers (refused again, not broken).
  Res again(PQexecPrepared(c.get(), "q", 1, &one, nullptr, nullptr, 0));
  expect_refused(again.get(), "prep");
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK);
}

TEST_F(GatewayBudgetsTest, ALargeSelectCrossesTheRowsBudget) {
  Conn c = connect("rows");
  Res small = exec(c.get(), "select g from generate_series(1, 10) g");
  ASSERT_EQ(PQresultStatus(small.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(small.get());
  Res large = exec(c.get(), "select g, repeat('x', 100) from generate_series(1, 50000) g");
  ASSERT_EQ(PQresultStatus(large.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(large.get());
  EXPECT_EQ(PQntuples(large.get()), 50000);  // the crossing statement completes whole
  Res next = exec(c.get(), "select 1");
  expect_refused(next.get(), "rows");
  std::string msg = PQresultErrorField(next.get(), PG_DIAG_MESSAGE_PRIMARY);
  EXPECT_NE(msg.find("rows_returned 50010 of 1000"), std::string::npos) << msg;
  // Result bytes are counted too (not exhausted: 1 GB): at least the values' bytes.
  ASSERT_TRUE(eventually([] { return used("svc:rows", "rows", "rows_returned") == 50010; }));
  EXPECT_GT(used("svc:rows", "rows", "result_bytes"), 50000u * 100);
}

TEST_F(GatewayBudgetsTest, MaskedCellsAreCountedUnderAMaskPolicy) {
  Conn c = connect("masked");
  // Unmasked columns do not count.
  Res plain = exec(c.get(), "select id from crm.customers order by id limit 3");
  ASSERT_EQ(PQresultStatus(plain.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(plain.get());
  Res three = exec(c.get(), "select id, email from crm.customers order by id limit 3");
  ASSERT_EQ(PQresultStatus(three.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(three.get());
  EXPECT_STREQ(PQgetvalue(three.get(), 0, 1), "***@example.com");
  ASSERT_TRUE(eventually([] { return used("svc:masked", "masked", "masked_cells") == 3; }));
  Res six = exec(c.get(), "select email from crm.customers order by id limit 3");  // crosses: 6
  ASSERT_EQ(PQresultStatus(six.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(six.get());
  Res next = exec(c.get(), "select id from crm.customers limit 1");
  expect_refused(next.get(), "masked");
  std::string msg = PQresultErrorField(next.get(), PG_DIAG_MESSAGE_PRIMARY);
  EXPECT_NE(msg.find("masked_cells 6 of 5"), std::string::npos) << msg;
}

TEST_F(GatewayBudgetsTest, AShortWindowStartsAgainFromZero) {
  Conn c = connect("short");
  // Both statements in one window: retried until two in a row land in the same 2 s window.
  ASSERT_TRUE(eventually([&] {
    Res a = exec(c.get(), "select 1");
    Res b = exec(c.get(), "select 1");
    Res refused = exec(c.get(), "select 1");
    return PQresultStatus(a.get()) == PGRES_TUPLES_OK &&
           PQresultStatus(b.get()) == PGRES_TUPLES_OK && sqlstate(refused.get()) == "53400";
  }));
  // The next window: the same session runs again (no fixed sleep: polled until it does).
  ASSERT_TRUE(eventually([&] {
    Res r = exec(c.get(), "select 1");
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK;
  }));
}

TEST_F(GatewayBudgetsTest, OnExceedApproveHoldsTheStatementForAReviewer) {
  Conn c = connect("appr");
  Res first = exec(c.get(), "select 1");  // crosses the 1-statement budget
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(first.get());
  ASSERT_EQ(PQsendQuery(c.get(), "select 42"), 1);
  std::string id;
  ASSERT_TRUE(eventually([&] {
    json list = ctl_json({"approvals", "list", "--state", "pending"});
    for (const json& a : list["approvals"]) {
      if (a.value("sql", "") == "select 42" && a.value("identity", "") == "svc:appr") {
        id = a.value("id", "");
      }
    }
    return !id.empty();
  }));
  json request = ctl_json({"approvals", "show", id});
  EXPECT_EQ(request.value("rule", ""), "budget:appr") << request.dump();
  CtlResult ok = gw_->ctl("reviewer", {"approvals", "approve", id, "--reason", "one more"});
  ASSERT_EQ(ok.code, 0) << ok.out << ok.err;
  Res r = next_result(c.get(), 20000);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "42");
  drain(c.get());
}

// Runs last (it restarts cp).
TEST_F(GatewayBudgetsTest, ZzCountsSurviveAControlPlaneRestart) {
  Conn c = connect("restart");
  for (int i = 0; i < 2; ++i) {
    Res r = exec(c.get(), "select 1");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  ASSERT_TRUE(eventually([] { return used("svc:restart", "restart", "statements") == 2; }));
  ASSERT_EQ(gw_->stop_cp_gracefully(), 0);
  ASSERT_TRUE(gw_->start_cp().is_ok());
  EXPECT_EQ(used("svc:restart", "restart", "statements"), 2u);
  // The live session waits for the reconnection and its re-registration, which gives it the
  // kept count: one more statement (the crossing one), then refused. (A new shape: its analyse
  // request is ordered after the re-registration on the new connection.)
  Res third = exec(c.get(), "select 'after restart'");
  ASSERT_EQ(PQresultStatus(third.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(third.get());
  expect_refused(Res(exec(c.get(), "select 1")).get(), "restart");
  // A new session of the identity is refused from its first statement.
  Conn fresh;
  ASSERT_TRUE(eventually([&] {
    fresh.reset(PQconnectdb(gw_->conninfo_as("restart").c_str()));
    return PQstatus(fresh.get()) == CONNECTION_OK;
  }));
  expect_refused(Res(exec(fresh.get(), "select 1")).get(), "restart");
}

}  // namespace
}  // namespace pgwarden::testing
