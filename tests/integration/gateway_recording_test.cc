// Session recording end to end: pgwarden-dp sends statement / rows / statement (phase end) /
// session_end events, pgwarden-cp's Recorder writes the hash-chained file under
// <state_dir>/recordings; the test reads it back, verifies the chain and checks that the rows
// are the masked values the client saw, capped per statement by the policy's row cap.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;

constexpr const char* kRecordedPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "copy_to_stdout", "transaction", "set",
        "show", "prepare", "execute"],
        "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
        "allowed_functions": ["pg_catalog.upper"],
        "read_only": true, "rule_sets": ["deny", "approve", "pii"],
        "masks": [{"column": "crm.customers.email", "function": "email"},
                  {"column": "crm.customers.ssn", "function": "partial", "keep_last": 4}],
        "recording": {"level": "full", "required": true, "row_cap": 3}})";

// The checks run twice: with the events on the shared-memory event ring (the default), and
// with a control plane that declines the ring (PGWARDEN_CP_EVENT_RING=off, as an older cp
// would), so that the dp falls back to JSON frames. The recording must be the same.
template <typename Derived>
class RecordingSuite : public SharedGatewayTest<Derived> {
 public:
  static constexpr const char* kPolicy = kRecordedPolicy;

 protected:
  using SharedGatewayTest<Derived>::gw_;
  void check_recording();

  // The recording whose records mention `marker` and that has ended (session_end), waiting
  // for the recorder's batch sync. `until` (when given) replaces "has ended": the first
  // recording with a record mentioning `marker` for which it holds.
  static std::vector<json> wait_recording(const std::string& marker, std::string* path_out,
                                          const std::function<bool(const json&)>& until = {}) {
    namespace fs = std::filesystem;
    const fs::path dir = gw_->dir() + "/state/recordings";
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.path().extension() != ".jsonl") continue;
        auto records = recording::read_recording(e.path().string());
        if (!records.is_ok()) continue;
        bool mine = false, ended = false;
        for (const json& r : *records) {
          bool mentions = r.dump().find(marker) != std::string::npos;
          if (mentions) mine = true;
          if (until ? mentions && until(r) : r.value("kind", "") == "session_end") ended = true;
        }
        if (mine && ended) {
          *path_out = e.path().string();
          return *records;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return {};
  }
};

class GatewayRecordingTest : public RecordingSuite<GatewayRecordingTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o = RecordingSuite<GatewayRecordingTest>::gateway_options();
    o.metrics = true;  // the dp's counters
    return o;
  }
};

class GatewayRecordingJsonFallbackTest : public RecordingSuite<GatewayRecordingJsonFallbackTest> {
 public:
  static void SetUpTestSuite() {
    setenv("PGWARDEN_CP_EVENT_RING", "off", 1);
    RecordingSuite<GatewayRecordingJsonFallbackTest>::SetUpTestSuite();
    unsetenv("PGWARDEN_CP_EVENT_RING");
  }
};

constexpr const char* kRingAttached = "events on a shared-memory ring";

TEST_F(GatewayRecordingTest, StatementsAndMaskedRowsAreRecordedAndTheChainVerifies) {
  check_recording();
  EXPECT_NE(gw_->cp_log().find(kRingAttached), std::string::npos)
      << "the dp's events did not travel on the event ring";
}

// The dp publishes a statement's results together with the session's next statement record
// (one cp wake-up per statement); the results of a client's last statement before it goes
// idle must not wait for a next statement or the session's end: they are recorded while the
// session stays open and idle. (CpClientTest.ResultsRecordsOfAnIdleClientArePublishedAfterThe
// BatchWindow pins the 2 ms window itself; here the dp's once-a-second stats event would also
// publish them, on worker 0.)
TEST_F(GatewayRecordingTest, TheLastResultsOfASessionThatStaysOpenAndIdleAreRecorded) {
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res r(PQexec(c.get(), "SELECT 'idle-marker' AS m"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  std::string path;
  std::vector<json> records = wait_recording("idle-marker", &path, [](const json& rec) {
    return rec.value("kind", "") == "statement" && rec.value("phase", "") == "end";
  });
  ASSERT_FALSE(records.empty()) << "the idle session's last results were never recorded";
  bool rows = false;
  for (const json& rec : records) {
    if (rec.value("kind", "") == "rows" && rec.dump().find("idle-marker") != std::string::npos) {
      rows = true;
    }
    EXPECT_NE(rec.value("kind", ""), "session_end") << "the session was still open";
  }
  EXPECT_TRUE(rows) << "the rows record did not come with the completion";
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK);
}

// Each execution of a prepared statement waits for its write-ahead record. The Bind before
// the waiting Execute is held with it, so Bind, Execute and Sync reach PostgreSQL in one send,
// and the held bytes do not make the dp spin on a writable upstream socket meanwhile. Counted
// (dp counters), not timed: a spin would show as many upstream wake-ups per statement.
TEST_F(GatewayRecordingTest, APreparedExecutionWaitingForItsRecordIsSentUpstreamInOneWrite) {
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res p(PQprepare(c.get(), "one_row", "SELECT $1::int AS n", 1, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(p.get());
  auto counter = [&](const char* name) {
    return prometheus_sample(http_get(gw_->dp_metrics_port(), "/metrics"), name);
  };
  // The first execution is covered by the Parse's record; the others wait for their own.
  const char* one = "1";
  Res first(PQexecPrepared(c.get(), "one_row", 1, &one, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(first.get());
  const double sends0 = counter("pgwarden_dp_upstream_sends_total");
  const double wakeups0 = counter("pgwarden_dp_upstream_wakeups_total");
  ASSERT_GE(sends0, 0) << "no upstream_sends counter on the dp's /metrics";
  ASSERT_GE(wakeups0, 0);
  constexpr int kExecutions = 200;
  for (int i = 0; i < kExecutions; ++i) {
    std::string v = std::to_string(i);
    const char* value = v.c_str();
    Res r(PQexecPrepared(c.get(), "one_row", 1, &value, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    ASSERT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), v);
  }
  const double sends = counter("pgwarden_dp_upstream_sends_total") - sends0;
  const double wakeups = counter("pgwarden_dp_upstream_wakeups_total") - wakeups0;
  std::printf("[ relay ] %d prepared executions: %.0f upstream sends, %.0f upstream wake-ups\n",
              kExecutions, sends, wakeups);
  // Other sessions of the suite may add a few (none run concurrently in this test binary).
  EXPECT_LE(sends, kExecutions * 1.1) << "Bind and Execute left in separate sends";
  EXPECT_LE(wakeups, kExecutions * 3) << "the dp woke up for the upstream while it held output";
}

TEST_F(GatewayRecordingJsonFallbackTest, AnOlderControlPlaneGetsTheSameRecordingAsJson) {
  check_recording();
  EXPECT_EQ(gw_->cp_log().find(kRingAttached), std::string::npos);
}

template <typename Derived>
void RecordingSuite<Derived>::check_recording() {
  {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    Res r(PQexec(c.get(), "SELECT email, ssn, 'rec-marker-1' AS m FROM crm.customers ORDER BY id"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    ASSERT_EQ(PQntuples(r.get()), 5);
    Res b(PQexecParams(c.get(),
                       "SELECT upper(card_number) AS rec_marker_2 FROM crm.customers ORDER BY id",
                       0, nullptr, nullptr, nullptr, nullptr, 1));
    ASSERT_EQ(PQresultStatus(b.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(b.get());
    Res e(PQexec(c.get(), "SELECT 1 / 0 AS rec_marker_3"));
    ASSERT_EQ(PQresultStatus(e.get()), PGRES_FATAL_ERROR);
  }
  std::string path;
  std::vector<json> records = wait_recording("rec-marker-1", &path);
  ASSERT_FALSE(records.empty()) << "no finished recording mentions the session's statements";

  auto report = recording::verify_recording(path);
  ASSERT_TRUE(report.is_ok()) << report.status().to_string();
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_EQ(report->records, records.size());

  std::string all;
  for (const json& r : records) all += r.dump() + "\n";
  // The raw values never reach the recording; the masked ones the client saw do.
  for (const char* raw : {"ada@example.com", "123-45-6789", "ADA@EXAMPLE.COM"}) {
    EXPECT_EQ(all.find(raw), std::string::npos) << raw << " in recording:\n" << all;
  }

  EXPECT_EQ(records.front().value("kind", ""), "session_start");
  ASSERT_GE(records.size(), 2u);
  EXPECT_EQ(records[records.size() - 2].value("kind", ""), "session_end");
  EXPECT_EQ(records.back().value("kind", ""), "seal");

  // Statement 1: decision, rows (capped at 3 of 5), completion with the row count.
  size_t i = 0;
  auto find_from = [&](const std::string& kind, const std::string& needle) -> const json* {
    for (; i < records.size(); ++i) {
      std::string k = records[i].value("kind", "");
      if (records[i].value("phase", "") == "end") k += "_end";
      if (k == kind && (needle.empty() || records[i].dump().find(needle) != std::string::npos)) {
        return &records[i++];
      }
    }
    return nullptr;
  };
  const json* st = find_from("statement", "rec-marker-1");
  ASSERT_NE(st, nullptr) << all;
  EXPECT_EQ(st->value("verdict", ""), "allow");
  size_t recorded = 0;
  size_t rows_at = i;
  for (size_t k = rows_at; k < records.size() && records[k].value("kind", "") == "rows"; ++k) {
    for (const json& row : records[k]["rows"]) {
      if (recorded == 0) {
        EXPECT_EQ(row[0], "***@example.com") << all;
        EXPECT_EQ(row[1], "*******6789") << all;
      }
      ++recorded;
    }
  }
  EXPECT_EQ(recorded, 3u) << "row cap 3 applies per statement:\n" << all;
  const json* end1 = find_from("statement_end", "rec-marker-1");
  ASSERT_NE(end1, nullptr) << all;
  EXPECT_EQ(end1->value("rows", 0), 5);
  EXPECT_GE(end1->value("duration_ms", -1), 0);

  // Statement 2 (extended protocol, binary): rows masked by the detectors.
  const json* end2 = find_from("statement_end", "rec_marker_2");
  ASSERT_NE(end2, nullptr) << all;
  EXPECT_EQ(end2->value("rows", 0), 5);

  // Statement 3: the upstream error is recorded with its SQLSTATE.
  const json* end3 = find_from("statement_end", "rec_marker_3");
  ASSERT_NE(end3, nullptr) << all;
  ASSERT_TRUE(end3->contains("error")) << end3->dump();
  EXPECT_EQ((*end3)["error"].value("sqlstate", ""), "22012");
}

}  // namespace
}  // namespace pgwarden::testing
