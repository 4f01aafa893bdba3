// Two gateway nodes sharing one state store (docs/scale-out.md), with real processes: a
// sandbox PostgreSQL as the target database, a second sandbox cluster as the store, and two
// pgwarden-cp + pgwarden-dp pairs (node-a, node-b) pointed at both. Checked: a statement held
// for approval on node-b runs when a reviewer approves it on node-a; revoking an identity or
// killing a session on node-a ends the session on node-b; a store outage (pg_ctl stop -m
// immediate) leaves running sessions working, refuses approvals, decisions and revocations
// with clear errors, and once the store is back a decision made then reaches the held
// statement. Propagation latencies are measured and printed (not asserted beyond the
// guarantee's order of magnitude: the suite runs on loaded machines).
// Also: a recording made on node-a is replayed and verified from node-b over node-a's HTTPS
// admin API (node-signed requests; a file altered on node-a is reported as tampered; node-a
// down is an error naming it); budgets count what an identity ran on both nodes; a 2-of-M
// approval gets one vote on each node; each node's rules generation is in `status`.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/net/http_client.h"
#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/test_pki.h"

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
  static GatewayOptions node_options(const std::string& node, int https_port) {
    GatewayOptions o;
    o.node_id = node;
    o.state_store_conninfo = store_->conninfo();
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.admin_principals = {{"reviewer", {"reviewers"}}, {"reviewer2", {"reviewers"}}};
    // svc:paired is under a policy that needs two approvals (one vote per node in the test).
    o.extra_service_keys = {"budgeted", "metered", "paired"};
    o.service_key_groups = {{"paired", {"pairs"}}};
    o.extra_policies_json = R"([{"name": "pairs", "groups": ["pairs"], "targets": ["*"],
        "allowed_kinds": ["select", "update"], "allowed_relations": ["public.*"],
        "read_only": false, "rule_sets": ["deny", "approve"],
        "approvals": {"approver_groups": ["reviewers"], "timeout_s": 120,
                      "required_approvals": 2}}])";
    o.budgets_json = R"([
        {"name": "fleet-statements", "identities": ["svc:budgeted"], "window": "1h",
         "statements": 4},
        {"name": "fleet-metered", "identities": ["svc:metered"], "window": "1h",
         "statements": 100000}])";
    // The HTTPS admin API, advertised to the other node, with the fleet's node key.
    std::string url = "https://127.0.0.1:" + std::to_string(https_port);
    json patch = {{"control_plane",
                   {{"http",
                     {{"listen", "127.0.0.1:" + std::to_string(https_port)},
                      {"tls_cert_file", pki_ + "/server.crt"},
                      {"tls_key_file", pki_ + "/server.key"},
                      {"public_url", url}}},
                    {"state_store",
                     {{"admin_url", url},
                      {"node_key_file", pki_ + "/node.key"},
                      {"node_ca_file", pki_ + "/ca.crt"}}}}}};
    o.config_merge_patch = patch.dump();
    return o;
  }
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pgw-fleet-pki-XXXXXX";
    pki_ = ::mkdtemp(tmpl);
    ASSERT_TRUE(make_test_pki(pki_)) << "openssl failed, see " << pki_ << "/openssl.log";
    {
      std::ofstream key(pki_ + "/node.key");
      key << "fleet-node-key-for-tests-0123456789abcdef\n";
    }
    std::filesystem::permissions(pki_ + "/node.key", std::filesystem::perms::owner_read |
                                                         std::filesystem::perms::owner_write);
    store_ = new PgSandbox();
    Status st = store_->start();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    a_port_ = free_tcp_port();
    b_port_ = free_tcp_port();
    a_ = new GatewayHarness();
    st = a_->start(node_options("node-a", a_port_));
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    b_ = new GatewayHarness();
    GatewayOptions ob = node_options("node-b", b_port_);
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
    std::error_code ec;
    std::filesystem::remove_all(pki_, ec);
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

  // What `node` counts of `budget` for `identity` (statements in the current window; -1 if
  // it does not show the budget).
  static int64_t used_statements(GatewayHarness& node, const std::string& identity,
                                 const std::string& budget) {
    json show = json::parse(node.ctl("reviewer", {"budgets", "show", identity, "--json"}).out,
                            nullptr, false);
    if (!show.is_object() || !show["budgets"].is_array()) return -1;
    for (const json& b : show["budgets"]) {
      if (b.value("name", "") == budget && b.contains("used")) {
        return b["used"].value("statements", int64_t{-1});
      }
    }
    return -1;
  }
  // The id of a session of svc:agent1 on `node` that ran `sql` and ended, once the store's
  // recordings index has it closed on that node; "" on failure.
  static std::string recorded_session(GatewayHarness& node, const std::string& sql) {
    std::string id;
    {
      Conn c = connect(node);
      // The one live session of svc:agent1 there (sessions of earlier tests have ended).
      std::vector<std::string> ids;
      eventually([&] {
        ids = live_ids(node, "svc:agent1");
        return ids.size() == 1;
      });
      Res r(PQexec(c.get(), sql.c_str()));
      if (ids.size() != 1 || PQresultStatus(r.get()) != PGRES_TUPLES_OK) return "";
      id = ids[0];
    }
    const std::string node_id = node_of(node);
    bool closed = eventually([&] {
      return store_sql(
                 "select node_id || ' ' || state from pgwarden_recordings where "
                 "session_id = '" +
                 id + "'") == node_id + " closed\n";
    });
    return closed ? id : "";
  }
  static std::string node_of(GatewayHarness& node) { return &node == a_ ? "node-a" : "node-b"; }
  // Runs `sql` in a new session of `node` as service key `key`; "" or the SQLSTATE it failed
  // with.
  static std::string run_as(GatewayHarness& node, const std::string& key, const std::string& sql) {
    Conn c(PQconnectdb(node.conninfo_as(key).c_str()));
    if (PQstatus(c.get()) != CONNECTION_OK) return std::string("login: ") + PQerrorMessage(c.get());
    Res r(PQexec(c.get(), sql.c_str()));
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK ? "" : sqlstate(r.get());
  }

  static inline std::string pki_;
  static inline int a_port_ = 0;
  static inline int b_port_ = 0;
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

TEST_F(FleetTest, ARecordingOfNodeAIsReplayedAndVerifiedFromNodeB) {
  const std::string id = recorded_session(*a_, "select 'recorded-on-node-a' as marker");
  ASSERT_FALSE(id.empty()) << store_sql("select * from pgwarden_recordings");
  // Node B has no such file; it fetches node-a's and verifies the hash chain itself.
  ASSERT_FALSE(std::filesystem::exists(b_->state_dir() + "/recordings/" + id + ".jsonl"));
  CtlResult verify;
  ASSERT_TRUE(eventually([&] {  // sealed once cp processed the session's end
    verify = b_->ctl("reviewer", {"sessions", "verify", id, "--json"});
    return json::parse(verify.out, nullptr, false).value("state", "") == "sealed";
  })) << verify.out
      << verify.err;
  EXPECT_EQ(verify.code, 0) << verify.out << verify.err;
  json v = json::parse(verify.out);
  EXPECT_EQ(v.value("node", ""), "node-a");
  EXPECT_EQ(v.value("fetched_from", ""), "https://127.0.0.1:" + std::to_string(a_port_));
  EXPECT_TRUE(v.value("ok", false));
  CtlResult replay = b_->ctl("reviewer", {"sessions", "replay", id});
  EXPECT_EQ(replay.code, 0) << replay.out << replay.err;
  EXPECT_NE(replay.out.find("recorded-on-node-a"), std::string::npos) << replay.out;
  CtlResult show = b_->ctl("reviewer", {"sessions", "show", id});
  EXPECT_EQ(show.code, 0) << show.out << show.err;
  EXPECT_NE(show.out.find("node-a:"), std::string::npos) << show.out;
  // Node A audited who fetched it; no copy stays on node B.
  EXPECT_TRUE(eventually([&] {
    std::string log = a_->audit_log();
    return log.find("\"node_request\"") != std::string::npos &&
           log.find("\"node-b\"") != std::string::npos;
  }));
  for (const auto& e : std::filesystem::directory_iterator(b_->state_dir())) {
    EXPECT_EQ(e.path().filename().string().find("fetched-recording-"), std::string::npos)
        << e.path();
  }

  // Someone with access to node A's disk rewrites what the agent saw: node B says tampered.
  std::string path = a_->state_dir() + "/recordings/" + id + ".jsonl";
  std::string text;
  {
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  size_t at = text.find("recorded-on-node-a");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 18, "harmless-statement");
  { std::ofstream(path, std::ios::trunc) << text; }
  CtlResult tampered = b_->ctl("reviewer", {"sessions", "verify", id, "--json"});
  EXPECT_NE(tampered.code, 0) << tampered.out;
  EXPECT_EQ(json::parse(tampered.out, nullptr, false).value("state", ""), "tampered")
      << tampered.out << tampered.err;
  CtlResult replayed = b_->ctl("reviewer", {"sessions", "replay", id});
  EXPECT_NE(replayed.code, 0) << replayed.out;
  EXPECT_NE(replayed.out.find("verification FAILED"), std::string::npos) << replayed.out;
}

TEST_F(FleetTest, NodeRequestsWithoutAValidNodeSignatureAreRefused) {
  net::HttpClientOptions options;
  options.ca_file = pki_ + "/ca.crt";
  std::string url = "https://127.0.0.1:" + std::to_string(a_port_) + "/api/v1/node/recordings/x";
  auto none = net::http_request(url, net::HttpRequest{}, options);
  ASSERT_TRUE(none.is_ok()) << none.status().to_string();
  EXPECT_EQ(none->status, 401) << none->body;
  // A signature made with another key.
  net::HttpRequest forged;
  std::string ts = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
  std::string sig(64, 'a');
  forged.headers = {{"X-Pgwarden-Node", "node-b"},
                    {"X-Pgwarden-Node-Time", ts},
                    {"X-Pgwarden-Node-Signature", sig}};
  auto bad = net::http_request(url, forged, options);
  ASSERT_TRUE(bad.is_ok()) << bad.status().to_string();
  EXPECT_EQ(bad->status, 401) << bad->body;
  EXPECT_TRUE(eventually([&] {
    return a_->audit_log().find("\"rejected\"") != std::string::npos &&
           a_->audit_log().find("bad node signature") != std::string::npos;
  })) << a_->audit_log();
}

TEST_F(FleetTest, AReplayFromNodeBWhileNodeAIsDownNamesNodeA) {
  const std::string id = recorded_session(*a_, "select 1");
  ASSERT_FALSE(id.empty()) << store_sql("select * from pgwarden_recordings");
  // A copy a crashed command left behind is removed when cp starts.
  const std::string stale = a_->state_dir() + "/fetched-recording-stale";
  std::filesystem::create_directories(stale);
  ASSERT_TRUE(a_->stop_cp().is_ok());
  CtlResult r = b_->ctl("reviewer", {"sessions", "replay", id});
  Status restarted = a_->start_cp();
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.err.find("node-a"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cannot be reached"), std::string::npos) << r.err;
  std::cout << "[fleet] replay while node-a is down: " << r.err;
  ASSERT_TRUE(restarted.is_ok()) << restarted.to_string();
  // Node A's dataplane is back with its cp (later tests log in there).
  ASSERT_TRUE(eventually([&] {
    Conn c(PQconnectdb(a_->conninfo().c_str()));
    return PQstatus(c.get()) == CONNECTION_OK;
  }));
}

TEST_F(FleetTest, ABudgetCountsWhatTheIdentityRanOnBothNodes) {
  // Two of the four statements on node A...
  EXPECT_EQ(run_as(*a_, "budgeted", "select 1"), "");
  EXPECT_EQ(run_as(*a_, "budgeted", "select 2"), "");
  ASSERT_TRUE(eventually([&] {
    return store_sql(
               "select statements from pgwarden_budget_usage where identity = "
               "'svc:budgeted'") == "2\n";
  })) << store_sql("select * from pgwarden_budget_usage");
  // ... node B knows of them (the store's notification) ...
  ASSERT_TRUE(eventually([&] {
    return used_statements(*b_, "svc:budgeted", "fleet-statements") == 2;
  })) << b_->ctl("reviewer", {"budgets", "show", "svc:budgeted", "--json"}).out;
  // ... so a session there may run two more, and the fifth is refused.
  Conn b = Conn(PQconnectdb(b_->conninfo_as("budgeted").c_str()));
  ASSERT_EQ(PQstatus(b.get()), CONNECTION_OK) << PQerrorMessage(b.get());
  for (int i = 0; i < 2; ++i) {
    Res r(PQexec(b.get(), "select 3"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(b.get());
  }
  Res refused(PQexec(b.get(), "select 5"));
  EXPECT_EQ(sqlstate(refused.get()), "53400") << PQresultErrorMessage(refused.get());
  EXPECT_NE(std::string(PQresultErrorMessage(refused.get())).find("fleet-statements"),
            std::string::npos)
      << PQresultErrorMessage(refused.get());
  // Node A learns that node B exhausted it: its sessions are refused too.
  auto t0 = Clock::now();
  EXPECT_TRUE(eventually([&] {
    json show = json::parse(a_->ctl("reviewer", {"budgets", "show", "svc:budgeted", "--json"}).out,
                            nullptr, false);
    if (!show.is_object() || !show["budgets"].is_array()) return false;
    for (const json& b : show["budgets"]) {
      if (b.value("name", "") == "fleet-statements" && b.contains("exhausted") &&
          b["exhausted"] == "statements") {
        return true;
      }
    }
    return false;
  })) << a_->ctl("reviewer", {"budgets", "show", "svc:budgeted", "--json"}).out;
  std::cout << "[fleet] budget exhausted on node-b -> known on node-a: " << ms_since(t0) << " ms\n";
  EXPECT_EQ(run_as(*a_, "budgeted", "select 6"), "53400");
  // A reset on node A lets node B's session run again.
  CtlResult reset = a_->ctl("reviewer", {"budgets", "reset", "svc:budgeted"});
  ASSERT_EQ(reset.code, 0) << reset.out << reset.err;
  EXPECT_TRUE(eventually([&] {
    Res r(PQexec(b.get(), "select 7"));
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK;
  })) << PQerrorMessage(b.get());
}

TEST_F(FleetTest, TwoOfMApprovalGetsOneVoteOnEachNode) {
  ASSERT_NO_FATAL_FAILURE(make_table("fleet_pair"));
  const std::string sql = "update public.fleet_pair set v = 'two'";
  PsqlProcess psql(b_->conninfo_as("paired"), sql, b_->dir() + "/fleet_pair.log");
  json req = pending_on(*a_, sql);
  ASSERT_TRUE(req.contains("id")) << psql.output();
  const std::string id = req["id"];
  EXPECT_EQ(req.value("required_approvals", 0), 2);
  // First vote on node A: still pending, the statement still held.
  CtlResult first = a_->ctl("reviewer", {"approvals", "approve", id, "--reason", "one"});
  ASSERT_EQ(first.code, 0) << first.out << first.err;
  EXPECT_EQ(store_sql("select state || ' ' || jsonb_array_length(snapshot->'votes') from "
                      "pgwarden_approvals where id = '" +
                      id + "'"),
            "pending 1\n");
  EXPECT_TRUE(psql.running()) << psql.output();
  // The same reviewer on node B does not count twice.
  CtlResult again = b_->ctl("reviewer", {"approvals", "approve", id});
  EXPECT_NE(again.code, 0) << again.out;
  EXPECT_NE(again.err.find("already approved by reviewer"), std::string::npos) << again.err;
  // A second reviewer on node B: two of two, the statement runs on node B.
  CtlResult second = b_->ctl("reviewer2", {"approvals", "approve", id, "--reason", "two"});
  ASSERT_EQ(second.code, 0) << second.out << second.err;
  ASSERT_EQ(psql.wait(10000), 0) << psql.output();
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.fleet_pair"), "two,two");
  EXPECT_EQ(store_sql("select state || ' ' || jsonb_array_length(snapshot->'votes') from "
                      "pgwarden_approvals where id = '" +
                      id + "'"),
            "approved 2\n");
  // Node A shows both votes.
  EXPECT_TRUE(eventually([&] {
    json shown =
        json::parse(a_->ctl("reviewer", {"approvals", "show", id, "--json"}).out, nullptr, false);
    return shown.is_object() && shown.value("state", "") == "approved" &&
           shown["votes"].size() == 2;
  }));
}

TEST_F(FleetTest, StatusShowsTheRulesGenerationOfEveryNode) {
  json status;
  ASSERT_TRUE(eventually([&] {
    status = json::parse(b_->ctl("reviewer", {"status", "--json"}).out, nullptr, false);
    if (!status.is_object() || !status.contains("fleet") || !status["fleet"].is_object()) {
      return false;
    }
    int with_rules = 0;
    for (const json& n : status["fleet"].value("nodes", json::array())) {
      if (n.contains("rules_generation")) ++with_rules;
    }
    return with_rules == 2;
  })) << status.dump(1);
  for (const json& n : status["fleet"]["nodes"]) {
    EXPECT_TRUE(n.value("same_rules", false)) << n.dump();  // one config, one rule set
    EXPECT_EQ(n.value("this_node", false), n.value("node_id", "") == "node-b") << n.dump();
  }
  EXPECT_EQ(store_sql("select count(distinct node_id) from pgwarden_rule_generations"), "2\n");
  CtlResult text = b_->ctl("reviewer", {"status"});
  EXPECT_NE(text.out.find("node-a"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("node-b"), std::string::npos) << text.out;
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
  // Budgets count locally meanwhile (written to the store once it is back: nothing is lost).
  Conn metered(PQconnectdb(b_->conninfo_as("metered").c_str()));
  ASSERT_EQ(PQstatus(metered.get()), CONNECTION_OK) << PQerrorMessage(metered.get());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(alive(metered.get()));

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
  EXPECT_TRUE(eventually([&] {
    return store_sql(
               "select statements from pgwarden_budget_usage where identity = "
               "'svc:metered'") == "3\n";
  })) << store_sql("select * from pgwarden_budget_usage");
}

}  // namespace
}  // namespace pgwarden::testing
