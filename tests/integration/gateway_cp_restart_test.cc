// Control-plane restarts under load, with real processes (docs/operations.md, "Control-plane
// restarts"): several libpq sessions whose policy requires full recording insert rows in a
// tight loop — a cached statement shape, so each INSERT needs only its write-ahead record —
// while pgwarden-cp is killed with SIGKILL and started again, several times.
//  - The restart is invisible to them: every statement succeeds (cp always comes back well
//    within limits.cp_unavailable_wait_ms), none gets "the control plane did not confirm its
//    recording", no session ends.
//  - Nothing ran unrecorded: every row PostgreSQL has was recorded before it ran, and every
//    recording verifies and carries one `session_resumed` marker per restart.
// A login that arrives while cp is down is not refused: it waits for cp like a statement does
// (a raw protocol client sees the password request, then AuthenticationOk once cp is back).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"
#include "tests/integration/insert_load.h"
#include "tests/integration/recordings.h"

namespace pgwarden::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kCpWaitMs = 10000;
constexpr int kSessions = 6;
constexpr int kRestarts = 5;

int64_t ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

class CpRestartTest : public SharedGatewayTest<CpRestartTest> {
 public:
  static constexpr const char* kPolicy =
      R"({"name": "agents", "allowed_kinds": ["select", "insert"],
          "allowed_relations": ["public.*", "pg_catalog.*"],
          "read_only": false, "rule_sets": ["deny", "approve"],
          "recording": {"level": "full", "required": true}})";
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = kPolicy;
    o.cp_unavailable_wait_ms = kCpWaitMs;
    o.loopback_only = true;  // the raw login client sends its token without TLS
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest::SetUpTestSuite();
    if (gw_ == nullptr) return;
    auto made = gw_->pg().psql(
        "CREATE TABLE public.cpr_t (v text PRIMARY KEY); GRANT ALL ON public.cpr_t TO app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }
};

TEST_F(CpRestartTest, RecordingRequiredSessionsRideThroughRepeatedKillNineWithoutSpuriousErrors) {
  InsertLoad load;
  ASSERT_TRUE(load.start(gw_->conninfo(), "public.cpr_t", "cpr-", kSessions));
  auto& clients = load.clients;
  bool progressed = load.progress(20);
  std::vector<int64_t> outage_ms;
  for (int round = 0; round < kRestarts && progressed; ++round) {
    auto t0 = Clock::now();
    ASSERT_TRUE(gw_->stop_cp().is_ok());  // SIGKILL while every session is mid-loop
    ASSERT_TRUE(gw_->start_cp().is_ok());
    outage_ms.push_back(ms_since(t0));
    // Every session runs statements again before the next kill.
    progressed = load.progress_from(load.counts(), 20);
  }
  load.stop();
  for (size_t i = 0; i < outage_ms.size(); ++i) {
    std::printf("[ cp restart ] round %zu: cp down and back in %lld ms\n", i,
                static_cast<long long>(outage_ms[i]));
  }
  ASSERT_TRUE(progressed) << "a session stopped making progress after a cp restart";
  ASSERT_EQ(outage_ms.size(), static_cast<size_t>(kRestarts));

  // cp always came back within limits.cp_unavailable_wait_ms: no statement may fail. (An
  // 08006 after the whole wait would be the documented outcome of a longer outage.)
  size_t inserted = 0;
  for (auto& c : clients) {
    EXPECT_FALSE(c->dead) << "session " << c->prefix << " ended";
    inserted += c->succeeded.size();
    for (const Inserter::Failure& f : c->failures) {
      bool outage_timeout = f.sqlstate == "08006" && f.waited_ms >= kCpWaitMs - 200;
      EXPECT_TRUE(outage_timeout) << "session " << c->prefix << ": " << f.sqlstate << " after "
                                  << f.waited_ms << " ms: " << f.message;
    }
  }
  std::printf("[ cp restart ] %d sessions, %d kill -9 restarts, %zu statements ran\n", kSessions,
              kRestarts, inserted);

  // Every row that reached PostgreSQL was recorded before it ran (the recordings stay open:
  // the sessions are still connected, so cp's page-cache writes are read back as they are).
  for (auto& c : clients) c->conn.reset();
  std::map<std::string, int> recorded;  // value -> its statement records
  std::map<std::string, int> resumed;  // recording -> session_resumed markers
  uint64_t redelivered = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(gw_->state_dir() + "/recordings", ec)) {
    if (e.path().extension() != ".jsonl") continue;
    recording::VerifyReport report;
    auto recs = recording::read_recording(e.path().string(), &report);
    ASSERT_TRUE(recs.is_ok()) << recs.status().to_string();
    EXPECT_TRUE(report.ok) << e.path() << ": " << report.reason;
    bool ours = false;
    for (const json& r : *recs) {
      const std::string kind = r.value("kind", "");
      if (kind == "session_resumed") ++resumed[e.path().stem().string()];
      if (kind != "statement" || r.contains("phase") || r.value("verdict", "") != "allow") continue;
      std::string sql = r.value("sql", "");
      auto at = sql.find("'cpr-");
      if (at == std::string::npos) continue;
      ours = true;
      ++recorded[sql.substr(at + 1, sql.find('\'', at + 1) - at - 1)];
    }
    if (!ours) {
      resumed.erase(e.path().stem().string());
      continue;
    }
    // Events of a ring batch cp wrote but had not released when it was killed come again
    // (docs/operations.md, "Exactly once, and the one window that is not closed"): counted,
    // never a statement record (each INSERT is recorded once, checked below).
    auto v = recording::verify_session(e.path().string(), nullptr, true);
    ASSERT_TRUE(v.is_ok());
    redelivered += v->redelivered;
  }
  std::printf("[ cp restart ] %llu records written twice around the kills (redelivered)\n",
              static_cast<unsigned long long>(redelivered));
  auto rows = gw_->pg().psql("SELECT v FROM public.cpr_t");
  ASSERT_TRUE(rows.is_ok());
  std::istringstream in(*rows);
  size_t ran = 0;
  for (std::string v; std::getline(in, v);) {
    if (v.rfind("cpr-", 0) != 0) continue;
    ++ran;
    EXPECT_EQ(recorded[v], 1) << v << " ran with " << recorded[v] << " records";
  }
  for (auto& c : clients) {
    for (const std::string& v : c->succeeded) EXPECT_EQ(recorded[v], 1) << v;
  }
  EXPECT_EQ(ran, inserted);  // and nothing that failed ran
  EXPECT_EQ(resumed.size(), static_cast<size_t>(kSessions));
  for (const auto& [id, n] : resumed) EXPECT_EQ(n, kRestarts) << id;
}

TEST_F(CpRestartTest, ALoginArrivingWhileCpIsDownWaitsForItAndSucceeds) {
  CpStartsAgain cp_back(gw_);
  ASSERT_TRUE(gw_->stop_cp().is_ok());
  int fd = connect_tcp(gw_->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, startup_packet("agent", "demo")));
  std::string body;
  int type = read_message(fd, &body, 10000);
  // The password request, not a refusal: the login goes on while cp is away.
  EXPECT_EQ(type, 'R') << (type == 'E' ? body : std::string());
  ASSERT_EQ(body.size(), 4u);
  EXPECT_EQ(body[3], 3);  // AuthenticationCleartextPassword
  ASSERT_TRUE(send_all(fd, typed_message('p', cstr(gw_->token()))));
  auto t0 = Clock::now();
  ASSERT_TRUE(cp_back.start().is_ok());  // while the authenticate waits for cp
  bool authenticated = false;
  for (;;) {
    type = read_message(fd, &body, 15000);
    if (type == 'R' && body.size() == 4 && body[3] == 0) authenticated = true;
    if (type != 'R' && type != 'S' && type != 'K' && type != 'N') break;
  }
  ::close(fd);
  EXPECT_TRUE(authenticated);
  EXPECT_EQ(type, 'Z') << "login did not complete: " << type << " "
                       << (type == 'E' ? error_sqlstate(body) : std::string());
  std::printf("[ cp restart ] login waited for cp: done %lld ms after cp was started\n",
              static_cast<long long>(ms_since(t0)));
}

// The one recording whose statements mention `marker` (path empty when none or several).
Recording recording_with(const std::string& state_dir, const std::string& marker) {
  std::vector<Recording> found = recordings_with(state_dir, marker);
  return found.size() == 1 ? std::move(found[0]) : Recording{};
}

// The gateway's upstream connections that carry application_name `app` (run directly on
// PostgreSQL): the dp closes a session's upstream connection when the session ends.
int upstream_sessions(GatewayHarness& gw, const std::string& app) {
  auto n =
      gw.pg().psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app + "'");
  return n.is_ok() ? std::atoi(n->c_str()) : -1;
}

// A session that ends while cp is down (the client disconnects during the outage): once cp
// is back the dataplane re-registers it as ended, the session_end it kept is recorded after a
// session_resumed record, and the recording is sealed — not left "unsealed" for ever.
TEST_F(CpRestartTest, ASessionThatEndsWhileCpIsDownIsSealedOnceCpIsBack) {
  CpStartsAgain cp_back(gw_);
  {
    Conn c(PQconnectdb(gw_->conninfo("application_name=cpr_ended").c_str()));
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    Res r(PQexec(c.get(), "SELECT 'cpr-ended-while-down'"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    ASSERT_EQ(upstream_sessions(*gw_, "cpr_ended"), 1);
    ASSERT_TRUE(gw_->stop_cp().is_ok());  // kill -9
  }                                       // the client leaves while cp is down
  ASSERT_TRUE(eventually([] { return upstream_sessions(*gw_, "cpr_ended") == 0; }))
      << "the dataplane did not end the session";
  Recording before = recording_with(gw_->state_dir(), "'cpr-ended-while-down'");
  ASSERT_FALSE(before.path.empty());
  EXPECT_FALSE(before.report.sealed);
  ASSERT_TRUE(cp_back.start().is_ok());
  Recording after;
  ASSERT_TRUE(eventually([&] {
    after = recording_with(gw_->state_dir(), "'cpr-ended-while-down'");
    return after.report.sealed;
  })) << "the recording of a session that ended while cp was down was not sealed";
  EXPECT_TRUE(after.report.ok) << after.report.reason;
  ASSERT_GE(after.records.size(), 4u);
  const json& end = after.records[after.records.size() - 2];
  EXPECT_EQ(end.value("kind", ""), "session_end");
  // The dataplane's own session_end (the client closed), not an abnormal end.
  EXPECT_EQ(end.value("reason", "").find("abnormal"), std::string::npos) << end.dump();
  EXPECT_EQ(after.records[after.records.size() - 3].value("kind", ""), "session_resumed");
  auto v = recording::verify_session(after.path, nullptr, false);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->state, "sealed") << v->detail;
  EXPECT_EQ(v->redelivered, 0u) << v->detail;
}

// The dataplane dies while cp is down: nobody will re-register its sessions. cp knows from its
// state directory which recordings were open and that the dataplane process connected to it
// has exited, so it seals them at once as ended abnormally.
TEST_F(CpRestartTest, RecordingsOfADataplaneThatDiedWhileCpWasDownAreSealedWhenCpIsBack) {
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res r(PQexec(c.get(), "SELECT 'cpr-orphan'"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  ASSERT_TRUE(gw_->stop_cp().is_ok());  // kill -9
  gw_->signal_dp(SIGKILL);
  ASSERT_TRUE(gw_->wait_dp_exit(10000));
  c.reset();
  Status cp_started = gw_->start_cp();
  Recording rec;
  const bool sealed = eventually([&] {
    rec = recording_with(gw_->state_dir(), "'cpr-orphan'");
    return rec.report.sealed;
  });
  Status dp_started = gw_->start_dp();  // the suite's other tests need both
  ASSERT_TRUE(cp_started.is_ok()) << cp_started.to_string();
  ASSERT_TRUE(dp_started.is_ok()) << dp_started.to_string();
  ASSERT_TRUE(sealed) << "the recording left open by the crashed cp was not sealed";
  ASSERT_GE(rec.records.size(), 4u);
  const json& end = rec.records[rec.records.size() - 2];
  EXPECT_EQ(end.value("kind", ""), "session_end");
  EXPECT_NE(end.value("reason", "").find("ended abnormally"), std::string::npos) << end.dump();
  auto v = recording::verify_session(rec.path, nullptr, false);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->state, "sealed") << v->detail;
}

}  // namespace
}  // namespace pgwarden::testing
