// Fail-closed behaviour and limits of pgwarden-dp against the real control plane and
// PostgreSQL: cp outage, unreachable or dying upstream, connection/auth/idle limits, drain on
// SIGTERM, reload on SIGHUP.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <string>
#include <thread>

#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"

namespace pgwarden::testing {
namespace {

class GatewayFailClosedTest : public ::testing::Test {
 protected:
  void start(const GatewayOptions& options = {}) {
    Status st = gw_.start(options);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "---- dp log ----\n" << gw_.dp_log() << "---- cp log ----\n" << gw_.cp_log();
    }
  }
  PGconn* connect() { return PQconnectdb(gw_.conninfo().c_str()); }

  GatewayHarness gw_;
};

TEST_F(GatewayFailClosedTest, ControlPlaneOutageRefusesLoginsAndUncachedStatementsOnly) {
  // Recording not required: a cached verdict needs nothing from cp.
  GatewayOptions o;
  o.policy_json = R"({"name": "agents", "allowed_kinds": ["select"],
      "allowed_relations": ["crm.*", "pg_catalog.*"], "read_only": true,
      "rule_sets": ["deny", "approve"], "recording": {"level": "metadata", "required": false}})";
  o.cp_unavailable_wait_ms = 300;  // statements that need cp wait this long, then 08006
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* c = connect();
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "select id from crm.customers where id = 1");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  PQclear(r);
  ASSERT_TRUE(gw_.stop_cp().is_ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Same shape (literals differ): decided before, still runs.
  r = PQexec(c, "select id from crm.customers where id = 2");
  EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  PQclear(r);
  // A new shape needs cp: refused, the session stays usable.
  r = PQexec(c, "select count(*) from crm.orders");
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(r), "08006") << PQresultErrorMessage(r);
  PQclear(r);
  EXPECT_EQ(PQstatus(c), CONNECTION_OK);
  // New logins are refused with a clear message.
  PGconn* c2 = connect();
  EXPECT_EQ(PQstatus(c2), CONNECTION_BAD);
  EXPECT_NE(std::string(PQerrorMessage(c2)).find("control plane is unreachable"), std::string::npos)
      << PQerrorMessage(c2);
  PQfinish(c2);
  // cp comes back: the dp reconnects (backoff) and logins work again.
  ASSERT_TRUE(gw_.start_cp().is_ok());
  bool ok = false;
  for (int i = 0; i < 100 && !ok; ++i) {
    PGconn* c3 = connect();
    ok = PQstatus(c3) == CONNECTION_OK;
    PQfinish(c3);
    if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(ok);
  PQfinish(c);
}

TEST_F(GatewayFailClosedTest,
       ControlPlaneOutageRefusesEvenCachedStatementsWhenRecordingIsRequired) {
  GatewayOptions o;  // default policy: recording level full, required
  o.cp_unavailable_wait_ms = 300;
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* c = connect();
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "select id from crm.customers where id = 1");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  PQclear(r);
  ASSERT_TRUE(gw_.stop_cp().is_ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // The verdict is cached, but nobody can record the statement: it does not run.
  r = PQexec(c, "select id from crm.customers where id = 2");
  EXPECT_EQ(PQresultStatus(r), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(r), "08006") << PQresultErrorMessage(r);
  EXPECT_NE(std::string(PQresultErrorMessage(r)).find("did not confirm its recording"),
            std::string::npos)
      << PQresultErrorMessage(r);
  PQclear(r);
  EXPECT_EQ(PQstatus(c), CONNECTION_OK);
  PQfinish(c);
}

TEST_F(GatewayFailClosedTest, UnreachableUpstreamRefusesLoginWithClearError) {
  GatewayOptions o;
  o.target_port = free_tcp_port();
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* c = connect();
  EXPECT_EQ(PQstatus(c), CONNECTION_BAD);
  EXPECT_NE(std::string(PQerrorMessage(c)).find("cannot reach the upstream database"),
            std::string::npos)
      << PQerrorMessage(c);
  PQfinish(c);
}

TEST_F(GatewayFailClosedTest, UpstreamTlsVerifyFullCarriesTheSessionOverTls) {
  GatewayOptions o;
  o.upstream_tls_mode = "verify-full";
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* c = connect();
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "select ssl from pg_catalog.pg_stat_ssl where pid = pg_backend_pid()");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  EXPECT_STREQ(PQgetvalue(r, 0, 0), "t");
  PQclear(r);
  PQfinish(c);
}

TEST_F(GatewayFailClosedTest, UpstreamCertificateFromAnUntrustedCaIsRefused) {
  GatewayOptions o;
  o.upstream_tls_mode = "verify-full";
  // The gateway's own self-signed listener certificate did not sign the upstream's.
  o.upstream_ca_file = "/etc/ssl/certs/ca-certificates.crt";
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* c = connect();
  EXPECT_EQ(PQstatus(c), CONNECTION_BAD);
  EXPECT_NE(std::string(PQerrorMessage(c)).find("TLS with the upstream database"),
            std::string::npos)
      << PQerrorMessage(c);
  PQfinish(c);
}

TEST_F(GatewayFailClosedTest, HeldStatementWaitsForApprovalWithoutBlockingTheWorker) {
  GatewayOptions o;
  o.workers = 1;  // both sessions on the same event loop
  o.policy_json = R"({"name": "agents", "allowed_kinds": ["select", "delete"],
      "allowed_relations": ["public.*"], "read_only": false, "approve_kinds": ["delete"],
      "approvals": {"approver_groups": ["reviewers"], "timeout_s": 2}, "rule_sets": []})";
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* held = connect();
  PGconn* other = connect();
  ASSERT_EQ(PQstatus(held), CONNECTION_OK) << PQerrorMessage(held);
  ASSERT_EQ(PQstatus(other), CONNECTION_OK) << PQerrorMessage(other);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(PQsendQuery(held, "delete from public.kv where k = 'never-approved'"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // While the first session waits for a reviewer, the worker keeps serving the other one.
  for (int i = 0; i < 5; ++i) {
    PGresult* r = PQexec(other, "select count(*) from public.kv");
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
    PQclear(r);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1500));
  // Nobody approves: the approval times out and the statement is denied, not run.
  PGresult* r = PQgetResult(held);
  EXPECT_EQ(sqlstate(r), "42501") << PQresultErrorMessage(r);
  // Expiry says so: which request expired and that the statement did not run.
  EXPECT_NE(std::string(PQresultErrorMessage(r)).find("expired: no reviewer decided"),
            std::string::npos)
      << PQresultErrorMessage(r);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1500));
  PQclear(r);
  while ((r = PQgetResult(held)) != nullptr) PQclear(r);
  EXPECT_EQ(gw_.pg().server_log().find("never-approved"), std::string::npos);
  PQfinish(held);
  PQfinish(other);
}

TEST_F(GatewayFailClosedTest, UpstreamDeathEndsTheSessionWithAnError) {
  ASSERT_NO_FATAL_FAILURE(start());
  PGconn* c = connect();
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, "select pg_backend_pid()");
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  std::string pid = PQgetvalue(r, 0, 0);
  PQclear(r);
  ASSERT_TRUE(gw_.pg().psql("select pg_terminate_backend(" + pid + ")").is_ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  r = PQexec(c, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  EXPECT_EQ(PQstatus(c), CONNECTION_BAD);
  PQfinish(c);
  // The gateway itself is fine.
  PGconn* c2 = connect();
  EXPECT_EQ(PQstatus(c2), CONNECTION_OK) << PQerrorMessage(c2);
  PQfinish(c2);
}

TEST_F(GatewayFailClosedTest, ConnectionsBeyondMaxConnectionsGet53300) {
  GatewayOptions o;
  o.max_connections = 2;
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* a = connect();
  PGconn* b = connect();
  ASSERT_EQ(PQstatus(a), CONNECTION_OK);
  ASSERT_EQ(PQstatus(b), CONNECTION_OK);
  PGconn* c = connect();
  EXPECT_EQ(PQstatus(c), CONNECTION_BAD);
  EXPECT_NE(std::string(PQerrorMessage(c)).find("too many connections"), std::string::npos)
      << PQerrorMessage(c);
  PQfinish(c);
  PQfinish(b);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  PGconn* d = connect();
  EXPECT_EQ(PQstatus(d), CONNECTION_OK) << PQerrorMessage(d);
  PQfinish(d);
  PQfinish(a);
}

TEST_F(GatewayFailClosedTest, SilentClientIsClosedAtTheAuthTimeout) {
  GatewayOptions o;
  o.auth_timeout_s = 1;
  ASSERT_NO_FATAL_FAILURE(start(o));
  int fd = connect_tcp(gw_.port());
  ASSERT_GE(fd, 0);
  auto t0 = std::chrono::steady_clock::now();
  std::string body;
  int type = read_message(fd, &body, 5000);
  EXPECT_EQ(type, 'E');
  EXPECT_NE(body.find("login not completed"), std::string::npos) << body;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4));
  EXPECT_EQ(read_message(fd, &body, 2000), 0);  // then closed
  close(fd);
}

TEST_F(GatewayFailClosedTest, IdleSessionEndsAtTheIdleTimeout) {
  GatewayOptions o;
  o.idle_timeout_s = 1;
  ASSERT_NO_FATAL_FAILURE(start(o));
  PGconn* c = connect();
  ASSERT_EQ(PQstatus(c), CONNECTION_OK);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  PGresult* r = PQexec(c, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  EXPECT_NE(std::string(PQerrorMessage(c)).find("idle timeout"), std::string::npos)
      << PQerrorMessage(c);
  PQclear(r);
  PQfinish(c);
}

TEST_F(GatewayFailClosedTest, SigtermLetsTheInFlightStatementFinishThenExits) {
  ASSERT_NO_FATAL_FAILURE(start());
  PGconn* busy = connect();
  PGconn* idle = connect();
  ASSERT_EQ(PQstatus(busy), CONNECTION_OK);
  ASSERT_EQ(PQstatus(idle), CONNECTION_OK);
  ASSERT_EQ(PQsendQuery(busy, "select pg_sleep(1.5), 7"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  gw_.signal_dp(SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  PGresult* r = PQgetResult(busy);
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  EXPECT_STREQ(PQgetvalue(r, 0, 1), "7");
  PQclear(r);
  // The idle session was told the gateway is going away.
  r = PQexec(idle, "select 1");
  EXPECT_NE(PQresultStatus(r), PGRES_TUPLES_OK);
  PQclear(r);
  int status = 0;
  EXPECT_TRUE(gw_.wait_dp_exit(10000, &status));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  PQfinish(busy);
  PQfinish(idle);
}

TEST_F(GatewayFailClosedTest, SighupReloadsRuleSetsWithoutDroppingSessions) {
  ASSERT_NO_FATAL_FAILURE(start());
  PGconn* c = connect();
  ASSERT_EQ(PQstatus(c), CONNECTION_OK);
  PGresult* r = PQexec(c, "select pg_read_file('/etc/hostname')");
  EXPECT_NE(std::string(PQresultErrorMessage(r)).find("deny.server_file_read"), std::string::npos)
      << PQresultErrorMessage(r);
  PQclear(r);
  // Same policy without the prescreen rule sets: cp's analysis decides instead.
  GatewayOptions o;
  std::string policy = o.policy_json;
  policy.replace(policy.find(R"("rule_sets": ["deny", "approve"])"),
                 std::string(R"("rule_sets": ["deny", "approve"])").size(), R"("rule_sets": [])");
  ASSERT_TRUE(gw_.rewrite_policy(policy).is_ok());
  gw_.signal_cp(SIGHUP);
  gw_.signal_dp(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  // The open session survived the reload.
  r = PQexec(c, "select 1");
  EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  PQclear(r);
  PGconn* c2 = connect();
  ASSERT_EQ(PQstatus(c2), CONNECTION_OK) << PQerrorMessage(c2);
  r = PQexec(c2, "select pg_read_file('/etc/hostname')");
  EXPECT_EQ(sqlstate(r), "42501");
  EXPECT_EQ(std::string(PQresultErrorMessage(r)).find("deny.server_file_read"), std::string::npos)
      << PQresultErrorMessage(r);
  PQclear(r);
  PQfinish(c2);
  PQfinish(c);
}

}  // namespace
}  // namespace pgwarden::testing
