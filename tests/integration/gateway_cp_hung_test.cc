// Faults of a live process that neither exits nor closes its sockets, with real processes
// (docs/operations.md, "Control-plane restarts": "A hung control plane", "Dataplane deaths"):
//  - pgwarden-cp stopped with SIGSTOP while sessions wait for it: a write-ahead record (a
//    cached statement of a recording-required session), an analyse (a new statement shape)
//    and an approval. Each client gets an ErrorResponse instead of waiting for the approval
//    timeout, nothing that was refused ran, and after SIGCONT the same sessions run
//    statements again (no restart of either process), their recordings verify with no record
//    twice, and the approval request is abandoned (audited);
//  - pgwarden-dp killed with -9 while an approval waits, while rows stream to a client and
//    while a write-ahead record is on its way to a stopped cp: cp closes each recording with
//    a session_end saying the dataplane went away and seals it; the approval is abandoned;
//    nothing that waited ran.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/recordings.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kCpWaitMs = 2000;  // limits.cp_unavailable_wait_ms

class CpHungTest : public SharedGatewayTest<CpHungTest> {
 public:
  static constexpr const char* kPolicy =
      R"({"name": "agents", "allowed_kinds": ["select", "insert", "update", "delete",
          "transaction"],
          "allowed_relations": ["public.*", "pg_catalog.*"],
          "allowed_functions": ["pg_catalog.generate_series", "pg_catalog.repeat"],
          "read_only": false, "rule_sets": ["deny", "approve"],
          "recording": {"level": "full", "required": true}})";
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = kPolicy;
    o.cp_unavailable_wait_ms = kCpWaitMs;
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 300;  // far beyond what any client below may wait
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest::SetUpTestSuite();
    if (gw_ == nullptr) return;
    auto made = gw_->pg().psql(
        "CREATE TABLE public.hung_t (k int PRIMARY KEY, v text);"
        "INSERT INTO public.hung_t SELECT g, 'orig' FROM generate_series(1, 3) g;"
        "ALTER TABLE public.hung_t OWNER TO app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }

 protected:
  static Conn connect() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  static std::string exec_state(PGconn* c, const std::string& sql) {
    Res r(PQexec(c, sql.c_str()));
    if (PQresultStatus(r.get()) == PGRES_TUPLES_OK || PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
      return "ok";
    }
    return sqlstate(r.get());
  }
  // The pending approval request of `sql`, polled until it exists (or 10 s).
  static json pending(const std::string& sql) {
    json a;
    eventually(
        [&] {
          a = pending_request(*gw_, "reviewer", sql);
          return a.contains("id");
        },
        10000);
    return a;
  }
  // The one recording whose statements mention `marker`, once `done` holds for it.
  static Recording recording_of(const std::string& marker,
                                const std::function<bool(const Recording&)>& done) {
    std::vector<Recording> recs;
    eventually(
        [&] {
          recs = recordings_with(gw_->state_dir(), marker);
          return recs.size() == 1 && done(recs[0]);
        },
        20000);
    EXPECT_EQ(recs.size(), 1u) << marker;
    return recs.empty() ? Recording{} : recs[0];
  }
  static size_t statements_mentioning(const Recording& r, const std::string& marker) {
    size_t n = 0;
    for (const json& rec : r.records) {
      if (rec.value("kind", "") == "statement" && !rec.contains("phase") &&
          rec.value("verdict", "") == "allow" &&
          rec.value("sql", "").find(marker) != std::string::npos) {
        ++n;
      }
    }
    return n;
  }
};

TEST_F(CpHungTest, AStoppedControlPlaneFailsWaitingClientsAndEverythingRecoversAfterSigcont) {
  Conn rec = connect(), ana = connect(), appr = connect();
  // A shape the verdict cache knows: after the stop, only its write-ahead record needs cp.
  ASSERT_EQ(exec_state(rec.get(), "INSERT INTO public.hung_t VALUES (100, 'hung-warm')"), "ok");
  // Held for a reviewer before cp stops.
  const std::string held_sql = "update public.hung_t set v = 'hung-approved'";
  ASSERT_EQ(PQsendQuery(appr.get(), held_sql.c_str()), 1);
  json request = pending(held_sql);
  ASSERT_TRUE(request.contains("id")) << "no approval request for the held statement";

  gw_->signal_cp(SIGSTOP);
  auto stopped = Clock::now();
  ASSERT_EQ(PQsendQuery(rec.get(), "INSERT INTO public.hung_t VALUES (101, 'hung-record')"), 1);
  ASSERT_EQ(PQsendQuery(ana.get(), "SELECT k, v, 'hung-analyse' FROM public.hung_t WHERE k > 1"),
            1);
  // Every waiting client gets an answer: cp is silent, the dp treats it as gone (after
  // limits.cp_unavailable_wait_ms) and fails closed. 60 s is only the test's own guard against
  // a hang (the approval alone would otherwise wait 300 s).
  struct Waiter {
    const char* what;
    PGconn* conn;
  };
  for (const Waiter& w : {Waiter{"record", rec.get()}, Waiter{"analyse", ana.get()},
                          Waiter{"approval", appr.get()}}) {
    Res r = next_result(w.conn, 60000);
    ASSERT_NE(r, nullptr) << w.what << ": no answer while cp is stopped";
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << w.what;
    const std::string message = PQresultErrorMessage(r.get());
    // A held statement is refused as one that got no approval (as when cp crashes); the
    // others as statements cp did not decide or record (connection failure).
    EXPECT_EQ(sqlstate(r.get()), w.conn == appr.get() ? "42501" : "08006")
        << w.what << ": " << message;
    EXPECT_NE(message.find("control plane"), std::string::npos) << w.what << ": " << message;
    drain(w.conn);
  }
  const auto answered_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - stopped).count();
  std::cout << "[ hung cp ] every waiting client answered " << answered_ms
            << " ms after SIGSTOP (limits.cp_unavailable_wait_ms = " << kCpWaitMs << ")\n";
  EXPECT_NE(gw_->dp_log().find("answered nothing for"), std::string::npos) << gw_->dp_log();

  gw_->signal_cp(SIGCONT);
  // The same sessions run again once the dp has reconnected (each statement waits up to
  // limits.cp_unavailable_wait_ms for that; 08006 only if the host is too slow for it).
  for (PGconn* c : {rec.get(), ana.get(), appr.get()}) {
    std::string state;
    EXPECT_TRUE(eventually(
        [&] {
          state = exec_state(c, "SELECT k FROM public.hung_t WHERE k = 1");
          return state != "08006";
        },
        20000));
    EXPECT_EQ(state, "ok");
    EXPECT_EQ(PQstatus(c), CONNECTION_OK);
  }
  ASSERT_EQ(exec_state(rec.get(), "INSERT INTO public.hung_t VALUES (102, 'hung-after')"), "ok");

  // Nothing that was refused ran.
  EXPECT_EQ(db_answer(*gw_, "SELECT count(*) FROM public.hung_t WHERE k = 101"), "0");
  EXPECT_EQ(db_answer(*gw_, "SELECT count(*) FROM public.hung_t WHERE v = 'hung-approved'"), "0");
  // The approval request cannot be decided any more: abandoned with its session's channel.
  json after = ctl_json_as(*gw_, "reviewer", {"approvals", "show", request.value("id", "")});
  EXPECT_EQ(after.value("state", ""), "abandoned") << after.dump();
  EXPECT_NE(gw_->audit_log().find("approval_abandoned"), std::string::npos);

  // Recordings: sealed once the sessions end, verified, every statement recorded once and
  // the refused INSERT never as one that ran.
  rec.reset();
  ana.reset();
  appr.reset();
  Recording r = recording_of("'hung-warm'", [](const Recording& x) { return x.report.sealed; });
  EXPECT_TRUE(r.report.ok) << r.path << ": " << r.report.reason;
  EXPECT_EQ(statements_mentioning(r, "'hung-warm'"), 1u);
  EXPECT_EQ(statements_mentioning(r, "'hung-after'"), 1u);
  auto v = recording::verify_session(r.path, nullptr, std::nullopt);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->state, "sealed") << v->detail;
  EXPECT_EQ(v->redelivered, 0u) << v->detail;
  bool refusal_recorded = false;
  for (const json& x : r.records) {
    if (x.value("sql", "").find("'hung-record'") != std::string::npos &&
        x.value("verdict", "") == "deny") {
      refusal_recorded = true;
    }
  }
  EXPECT_TRUE(refusal_recorded) << "the refused INSERT is not recorded as refused";
}

TEST_F(CpHungTest, ADataplaneKilledMidSessionHasEveryRecordingClosedAndItsApprovalAbandoned) {
  Conn appr = connect(), rows = connect(), rec = connect();
  ASSERT_EQ(exec_state(rec.get(), "INSERT INTO public.hung_t VALUES (200, 'kill-warm')"), "ok");
  // (A held statement is recorded once decided: this one marks the session's recording.)
  ASSERT_EQ(exec_state(appr.get(), "SELECT 'kill-held-session'"), "ok");
  const std::string held_sql = "update public.hung_t set v = 'kill-approved'";
  ASSERT_EQ(PQsendQuery(appr.get(), held_sql.c_str()), 1);
  json request = pending(held_sql);
  ASSERT_TRUE(request.contains("id"));
  // Rows streaming: the first row is in, far more are on their way.
  ASSERT_EQ(PQsendQuery(rows.get(),
                        "SELECT g, repeat('kill-rows', 20) FROM generate_series(1, 5000000) g"),
            1);
  ASSERT_EQ(PQsetSingleRowMode(rows.get()), 1);
  Res first = next_result(rows.get(), 20000);
  ASSERT_NE(first, nullptr);
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_SINGLE_TUPLE) << PQresultErrorMessage(first.get());
  // A write-ahead record on its way to a cp that does not take it now.
  gw_->signal_cp(SIGSTOP);
  ASSERT_EQ(PQsendQuery(rec.get(), "INSERT INTO public.hung_t VALUES (201, 'kill-record')"), 1);
  ASSERT_EQ(PQflush(rec.get()), 0);
  gw_->signal_dp(SIGKILL);
  ASSERT_TRUE(gw_->wait_dp_exit(10000));
  gw_->signal_cp(SIGCONT);

  // Every recording of the three sessions is closed by cp: session_end saying the dataplane
  // went away, then the seal.
  for (const char* marker : {"'kill-warm'", "'kill-held-session'", "kill-rows"}) {
    Recording r = recording_of(marker, [](const Recording& x) { return x.report.sealed; });
    ASSERT_GE(r.records.size(), 2u) << marker;
    const json& end = r.records[r.records.size() - 2];
    EXPECT_EQ(end.value("kind", ""), "session_end") << marker << ": " << end.dump();
    EXPECT_NE(end.value("reason", "").find("the dataplane process (pid "), std::string::npos)
        << end.dump();
    EXPECT_NE(end.value("reason", "").find("ended abnormally"), std::string::npos) << end.dump();
    auto v = recording::verify_session(r.path, nullptr, false);
    ASSERT_TRUE(v.is_ok());
    EXPECT_EQ(v->state, "sealed") << marker << ": " << v->detail;
  }
  Status restarted = gw_->start_dp();
  ASSERT_TRUE(restarted.is_ok()) << restarted.to_string();
  json after;
  EXPECT_TRUE(eventually(
      [&] {
        after = ctl_json_as(*gw_, "reviewer", {"approvals", "show", request.value("id", "")});
        return after.value("state", "") == "abandoned";
      },
      10000))
      << after.dump();
  EXPECT_EQ(db_answer(*gw_, "SELECT count(*) FROM public.hung_t WHERE k = 201"), "0");
  EXPECT_EQ(db_answer(*gw_, "SELECT count(*) FROM public.hung_t WHERE v = 'kill-approved'"), "0");
  // The gateway serves new sessions.
  Conn fresh = connect();
  EXPECT_EQ(exec_state(fresh.get(), "SELECT k FROM public.hung_t WHERE k = 1"), "ok");
}

}  // namespace
}  // namespace pgwarden::testing
