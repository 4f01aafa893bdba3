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

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"
#include "tests/integration/insert_load.h"

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
  std::set<std::string> recorded;
  std::map<std::string, int> resumed;  // recording -> session_resumed markers
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
      recorded.insert(sql.substr(at + 1, sql.find('\'', at + 1) - at - 1));
    }
    if (!ours) resumed.erase(e.path().stem().string());
  }
  auto rows = gw_->pg().psql("SELECT v FROM public.cpr_t");
  ASSERT_TRUE(rows.is_ok());
  std::istringstream in(*rows);
  size_t ran = 0;
  for (std::string v; std::getline(in, v);) {
    if (v.rfind("cpr-", 0) != 0) continue;
    ++ran;
    EXPECT_EQ(recorded.count(v), 1u) << v << " ran without a record";
  }
  for (auto& c : clients) {
    for (const std::string& v : c->succeeded) EXPECT_EQ(recorded.count(v), 1u) << v;
  }
  EXPECT_EQ(ran, inserted);  // and nothing that failed ran
  EXPECT_EQ(resumed.size(), static_cast<size_t>(kSessions));
  for (const auto& [id, n] : resumed) EXPECT_EQ(n, kRestarts) << id;
}

TEST_F(CpRestartTest, ALoginArrivingWhileCpIsDownWaitsForItAndSucceeds) {
  // cp runs again however this test ends: the suite's other tests need it.
  struct CpBack {
    bool started = false;
    ~CpBack() {
      if (!started) {
        EXPECT_TRUE(gw_->start_cp().is_ok());
      }
    }
  } cp_back;
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
  cp_back.started = true;
  ASSERT_TRUE(gw_->start_cp().is_ok());  // while the authenticate waits for cp
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

}  // namespace
}  // namespace pgwarden::testing
