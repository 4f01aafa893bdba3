// Two gateway nodes sharing one state store (docs/scale-out.md), with real processes: a
// sandbox PostgreSQL as the target database, a second sandbox cluster as the store, and two
// pgwarden-cp + pgwarden-dp pairs (node-a, node-b) pointed at both. Checked: a statement held
// for approval on node-b runs when a reviewer approves it on node-a; revoking an identity or
// killing a session on node-a ends the session on node-b; a store outage (pg_ctl stop -m
// immediate) leaves running sessions working, refuses approvals, decisions and revocations
// with clear errors, and once the store is back a decision made then reaches the held
// statement. Propagation latencies are measured and printed (not asserted beyond the
// guarantee's order of magnitude: the suite runs on loaded machines).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Keeps the SQLSTATE of an ErrorResponse libpq receives outside a query (the kill's FATAL).
void capture_sqlstate(void* arg, const PGresult* r) {
  const char* st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  if (st != nullptr) *static_cast<std::string*>(arg) += st;
}

int64_t ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

class FleetTest : public ::testing::Test {
 protected:
  static GatewayOptions node_options(const std::string& node) {
    GatewayOptions o;
    o.node_id = node;
    o.state_store_conninfo = store_->conninfo();
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }
  static void SetUpTestSuite() {
    store_ = new PgSandbox();
    Status st = store_->start();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    a_ = new GatewayHarness();
    st = a_->start(node_options("node-a"));
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    b_ = new GatewayHarness();
    GatewayOptions ob = node_options("node-b");
    ob.target = &a_->pg();  // one target database behind both nodes
    st = b_->start(ob);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void TearDownTestSuite() {
    delete b_;
    delete a_;
    delete store_;
    b_ = a_ = nullptr;
    store_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- node-a cp log ----\n"
                << a_->cp_log() << "---- node-b cp log ----\n"
                << b_->cp_log() << "---- node-b dp log ----\n"
                << b_->dp_log();
    }
  }

  static std::string db(const std::string& sql) {
    auto r = a_->pg().psql(sql);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    std::string s = r.is_ok() ? *r : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  static void make_table(const std::string& name) {
    auto r = a_->pg().psql("create table public." + name + " (k int primary key, v text); " +
                           "insert into public." + name + " values (1, 'orig'), (2, 'orig'); " +
                           "alter table public." + name + " owner to app_scram");
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  }
  // Output of `sql` on the store (or the error).
  static std::string store_sql(const std::string& sql) {
    auto r = store_->psql(sql);
    return r.is_ok() ? *r : r.status().to_string();
  }
  // The pending request for `sql` as `node`'s pgwardenctl lists it ({} if none within 10 s).
  static json pending_on(GatewayHarness& node, const std::string& sql) {
    json found = json::object();
    eventually(
        [&] {
          CtlResult r = node.ctl("reviewer", {"approvals", "list", "--state", "pending", "--json"});
          json list = json::parse(r.out, nullptr, false);
          if (!list.is_object() || !list["approvals"].is_array()) return false;
          for (const json& a : list["approvals"]) {
            if (a.value("sql", "") == sql) found = a;
          }
          return found.contains("id");
        },
        10000);
    return found;
  }
  // The live session ids of `identity` on `node`.
  static std::vector<std::string> live_ids(GatewayHarness& node, const std::string& identity) {
    CtlResult r = node.ctl("reviewer", {"sessions", "list", "--json"});
    std::vector<std::string> ids;
    json j = json::parse(r.out, nullptr, false);
    if (!j.is_object() || !j["live"].is_array()) return ids;
    for (const json& s : j["live"]) {
      if (s.value("identity", "") == identity) ids.push_back(s.value("session_id", ""));
    }
    return ids;
  }
  static Conn connect(GatewayHarness& node) {
    Conn c(PQconnectdb(node.conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  static bool alive(PGconn* c) {
    Res r(PQexec(c, "select 1"));
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK;
  }
  // Waits on the socket until the server closes the connection; ms since `t0`, -1 if it stays
  // open for `timeout_ms`. `fatal` gets what the client was told.
  static int64_t wait_closed(PGconn* c, Clock::time_point t0, std::string* fatal,
                             int timeout_ms = 10000) {
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < end) {
      pollfd p{PQsocket(c), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      bool lost = PQconsumeInput(c) == 0;
      while (PQisBusy(c) == 0) {
        Res r(PQgetResult(c));
        if (!r) break;
        if (const char* m = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE)) *fatal = m;
      }
      if (lost || PQstatus(c) == CONNECTION_BAD) {
        *fatal += std::string(" ") + PQerrorMessage(c);
        return ms_since(t0);
      }
    }
    return -1;
  }

  static inline PgSandbox* store_ = nullptr;
  static inline GatewayHarness* a_ = nullptr;
  static inline GatewayHarness* b_ = nullptr;
};

TEST_F(FleetTest, StatementHeldOnNodeBRunsWhenApprovedOnNodeA) {
  ASSERT_NO_FATAL_FAILURE(make_table("fleet_once"));
  const std::string sql = "update public.fleet_once set v = 'approved'";
  PsqlProcess psql(b_->conninfo(), sql, b_->dir() + "/fleet_once.log");
  // Node A knows of the request node B made (through the store).
  json req = pending_on(*a_, sql);
  ASSERT_TRUE(req.contains("id")) << "node-a does not list the request:\n" << psql.output();
  EXPECT_TRUE(psql.running()) << psql.output();
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.fleet_once"), "orig,orig");

  CtlResult approve = a_->ctl("reviewer", {"approvals", "approve", req["id"], "--reason", "ok"});
  auto t0 = Clock::now();
  ASSERT_EQ(approve.code, 0) << approve.out << approve.err;
  ASSERT_EQ(psql.wait(10000), 0) << psql.output();
  int64_t ms = ms_since(t0);
  std::cout << "[fleet] approval on node-a -> statement on node-b released: " << ms
            << " ms (from pgwardenctl's answer to psql's exit)\n";
  EXPECT_LT(ms, 5000);
  EXPECT_NE(psql.output().find("UPDATE 2"), std::string::npos) << psql.output();
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.fleet_once"), "approved,approved");
  // Both nodes show the decision; deciding again on node B is refused (the first one won).
  CtlResult show = b_->ctl("reviewer", {"approvals", "show", req["id"], "--json"});
  json shown = json::parse(show.out, nullptr, false);
  ASSERT_TRUE(shown.is_object()) << show.out << show.err;
  EXPECT_EQ(shown.value("state", ""), "approved");
  EXPECT_EQ(shown.value("decider", ""), "reviewer");
  EXPECT_NE(b_->ctl("reviewer", {"approvals", "deny", req["id"], "--reason", "late"}).code, 0);
  // The store holds the decision, and the audit stream has both nodes' records.
  EXPECT_EQ(store_sql("select state from pgwarden_approvals where id = '" +
                      req["id"].get<std::string>() + "'"),
            "approved\n");
  EXPECT_TRUE(eventually([&] {
    auto n = store_->psql(
        "select count(*) from pgwarden_audit where event = "
        "'approval_approved' and record->>'approval_id' = '" +
        req["id"].get<std::string>() + "'");
    return n.is_ok() && *n == "1\n";
  })) << store_sql("select event, record from pgwarden_audit");
}

TEST_F(FleetTest, RevokingOnNodeAEndsTheSessionOnNodeBAndRefusesItsLogins) {
  Conn session = connect(*b_);
  ASSERT_TRUE(alive(session.get()));
  std::string fatal;
  PQsetNoticeReceiver(session.get(), capture_sqlstate, &fatal);
  // The registry knows which node holds the session.
  std::vector<std::string> ids = live_ids(*b_, "svc:agent1");
  ASSERT_FALSE(ids.empty());
  EXPECT_TRUE(eventually([&] {
    auto n =
        store_->psql("select node_id from pgwarden_sessions where session_id = '" + ids[0] + "'");
    return n.is_ok() && *n == "node-b\n";
  }));

  auto t0 = Clock::now();
  CtlResult r = a_->ctl("reviewer", {"identities", "revoke", "svc:agent1", "--reason", "leak"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  int64_t ms = wait_closed(session.get(), t0, &fatal);
  std::cout << "[fleet] revoke on node-a -> session on node-b closed: " << ms
            << " ms (from starting pgwardenctl)\n";
  ASSERT_GE(ms, 0) << "the session on node-b stayed open";
  EXPECT_LT(ms, 5000);
  EXPECT_NE(fatal.find("57P01"), std::string::npos) << fatal;
  // New logins on node B are refused while the revocation holds.
  Conn refused(PQconnectdb(b_->conninfo().c_str()));
  EXPECT_NE(PQstatus(refused.get()), CONNECTION_OK);
  EXPECT_NE(std::string(PQerrorMessage(refused.get())).find("revoked"), std::string::npos)
      << PQerrorMessage(refused.get());

  CtlResult un = a_->ctl("reviewer", {"identities", "unrevoke", "svc:agent1"});
  ASSERT_EQ(un.code, 0) << un.out << un.err;
  EXPECT_TRUE(eventually(
      [&] {
        Conn c(PQconnectdb(b_->conninfo().c_str()));
        return PQstatus(c.get()) == CONNECTION_OK;
      },
      10000));
}

TEST_F(FleetTest, KillingOnNodeAASessionOfNodeBEndsIt) {
  Conn session = connect(*b_);
  Conn bystander = connect(*b_);
  ASSERT_TRUE(alive(session.get()) && alive(bystander.get()));
  std::vector<std::string> ids = live_ids(*b_, "svc:agent1");
  ASSERT_EQ(ids.size(), 2u);
  // Wait until node A can see the session in the registry.
  ASSERT_TRUE(eventually([&] {
    auto n =
        store_->psql("select count(*) from pgwarden_sessions where session_id = '" + ids[0] + "'");
    return n.is_ok() && *n == "1\n";
  }));
  auto t0 = Clock::now();
  CtlResult r = a_->ctl("reviewer", {"sessions", "kill", ids[0], "--reason", "incident"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  std::string fatal_a, fatal_b;
  // One of the two closes (which one is ids[0] is not known to the client); the other stays.
  int64_t ms = -1;
  auto end = Clock::now() + std::chrono::seconds(10);
  while (ms < 0 && Clock::now() < end) {
    if (wait_closed(session.get(), t0, &fatal_a, 50) >= 0 ||
        wait_closed(bystander.get(), t0, &fatal_b, 50) >= 0) {
      ms = ms_since(t0);
    }
  }
  std::cout << "[fleet] kill on node-a -> session on node-b closed: " << ms << " ms\n";
  ASSERT_GE(ms, 0);
  EXPECT_EQ(live_ids(*b_, "svc:agent1").size(), 1u);
  // A session id no node holds is an error, as on one node.
  EXPECT_NE(a_->ctl("reviewer", {"sessions", "kill", "no-such-session"}).code, 0);
}

// Runs last: stops and restarts the store.
TEST_F(FleetTest, ZStoreOutageFailsClosedAndADecisionAfterItStillReleases) {
  ASSERT_NO_FATAL_FAILURE(make_table("fleet_outage"));
  ASSERT_NO_FATAL_FAILURE(make_table("fleet_outage2"));
  Conn running = connect(*b_);
  ASSERT_TRUE(alive(running.get()));
  const std::string held_sql = "update public.fleet_outage set v = 'after'";
  PsqlProcess held(b_->conninfo(), held_sql, b_->dir() + "/fleet_outage.log");
  json req = pending_on(*a_, held_sql);
  ASSERT_TRUE(req.contains("id")) << held.output();

  ASSERT_TRUE(store_->stop_immediate().is_ok());

  // Running sessions continue under their grants, and new ones are admitted.
  EXPECT_TRUE(alive(running.get()));
  Res rows(PQexec(running.get(), "select count(*) from public.fleet_outage"));
  EXPECT_EQ(PQresultStatus(rows.get()), PGRES_TUPLES_OK) << PQerrorMessage(running.get());
  Conn fresh = connect(*b_);
  EXPECT_TRUE(alive(fresh.get()));

  // A statement that needs a new approval is refused with a SQLSTATE, not held.
  Res refused(PQexec(running.get(), "update public.fleet_outage2 set v = 'x'"));
  EXPECT_EQ(PQresultStatus(refused.get()), PGRES_FATAL_ERROR);
  std::string state = sqlstate(refused.get());
  std::cout << "[fleet] approval during the outage: SQLSTATE " << state << ": "
            << PQresultErrorMessage(refused.get());
  EXPECT_FALSE(state.empty());
  EXPECT_NE(std::string(PQresultErrorMessage(refused.get())).find("state store"), std::string::npos)
      << PQresultErrorMessage(refused.get());
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.fleet_outage2"), "orig,orig");

  // Deciding and revoking are refused: the CLI fails with the reason.
  CtlResult approve = a_->ctl("reviewer", {"approvals", "approve", req["id"]});
  EXPECT_NE(approve.code, 0) << approve.out;
  EXPECT_NE(approve.err.find("state store unavailable"), std::string::npos) << approve.err;
  CtlResult revoke = a_->ctl("reviewer", {"identities", "revoke", "svc:someone"});
  EXPECT_NE(revoke.code, 0) << revoke.out;
  EXPECT_NE(revoke.err.find("state store unavailable"), std::string::npos) << revoke.err;
  // Nothing was decided: the statement is still held, the table unchanged.
  EXPECT_TRUE(held.running()) << held.output();
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.fleet_outage"), "orig,orig");
  CtlResult listed = a_->ctl("reviewer", {"identities", "list", "--json"});
  EXPECT_EQ(listed.out.find("svc:someone"), std::string::npos) << listed.out;

  ASSERT_TRUE(store_->restart().is_ok());
  // Once the store is back, the decision goes through and node B releases the statement.
  CtlResult again;
  ASSERT_TRUE(eventually([&] {
    again = a_->ctl("reviewer", {"approvals", "approve", req["id"], "--reason", "store back"});
    return again.code == 0;
  })) << again.out
      << again.err;
  auto t0 = Clock::now();
  ASSERT_EQ(held.wait(10000), 0) << held.output();
  std::cout << "[fleet] after the outage, approval on node-a -> node-b released: " << ms_since(t0)
            << " ms\n";
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.fleet_outage"), "after,after");
  EXPECT_TRUE(alive(running.get()));
}

}  // namespace
}  // namespace pgwarden::testing
