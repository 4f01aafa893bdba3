// Write-ahead recording under faults, with real processes: pgwarden-cp's state directory is a
// small tmpfs that the test fills up while a psql/libpq session runs statements.
//  - recording required: no statement runs upstream without its record (the rows PostgreSQL
//    has are compared with the statement records on disk); refused statements get 53100 with
//    a message that says why; `pgwardenctl status` and the audit log show the failure; once
//    space is freed the recorder recovers by itself and writes a gap record that counts what
//    was refused; the session is sealed when it ends and verifies.
//  - recording not required: statements run, every event the full disk refused is counted in
//    a gap record.
//  - prepared statements: each execution after the first has its own record (with its
//    parameters) before its Execute is forwarded; while the disk is full executions are
//    refused with 53100 and the session stays usable.
//  - kill -9 of cp: `sessions verify` reports the open session as unsealed (crash) while cp
//    is down; the client leaves during the outage, and once cp is back the dataplane
//    re-registers the ended session and its recording is sealed; truncating a recording's tail
//    or deleting its last line is detected against the checkpoint.
//  - damage found at cp start: a recording cut below its checkpointed head is reported
//    (audit recording_damaged, `sessions verify` truncated at that seq) and never extended; a
//    torn line past the head is cut off (audited) and the session goes on; a corrupt or
//    missing checkpoint is reported and cp starts.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kRequiredPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "insert", "transaction"],
        "allowed_relations": ["public.*", "pg_catalog.*"],
        "read_only": false, "rule_sets": ["deny", "approve"],
        "recording": {"level": "full", "required": true}})";
constexpr const char* kNotRequiredPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "insert", "transaction"],
        "allowed_relations": ["public.*", "pg_catalog.*"],
        "read_only": false, "rule_sets": ["deny", "approve"],
        "recording": {"level": "full", "required": false}})";

class GatewayRecordingWalTest : public SharedGatewayTest<GatewayRecordingWalTest> {
 public:
  static constexpr const char* kPolicy = kRequiredPolicy;
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = kPolicy;
    o.state_tmpfs_kib = 4096;
    o.admin_principals = {{"ops", {"ops"}}};
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest::SetUpTestSuite();
    if (gw_ == nullptr) return;
    auto made = gw_->pg().psql(
        "CREATE TABLE public.wal_t (v text PRIMARY KEY); GRANT ALL ON public.wal_t TO app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }

 protected:
  void TearDown() override {
    fs::remove(filler());
    SharedGatewayTest::TearDown();
  }
  static std::string rec_dir() { return gw_->state_dir() + "/recordings"; }
  static std::string filler() { return gw_->state_dir() + "/filler"; }

  static std::set<std::string> recordings() {
    std::set<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(rec_dir(), ec)) {
      if (e.path().extension() == ".jsonl") out.insert(e.path().stem().string());
    }
    return out;
  }
  // Connects, runs one statement, and returns the connection and its session id (the new
  // recording file).
  static std::pair<Conn, std::string> open_session() {
    std::set<std::string> before = recordings();
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    Res r(PQexec(c.get(), "SELECT 1"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    std::string id;
    eventually([&] {
      for (const auto& s : recordings()) {
        if (before.count(s) == 0) id = s;
      }
      return !id.empty();
    });
    EXPECT_FALSE(id.empty()) << "no recording appeared for the new session";
    return {std::move(c), id};
  }
  // Fills the state tmpfs, then frees `leave` bytes again.
  static void fill_disk(size_t leave) { fill_file_system(filler(), leave); }
  static std::vector<json> records(const std::string& id, recording::VerifyReport* report) {
    auto r = recording::read_recording(rec_dir() + "/" + id + ".jsonl", report);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : std::vector<json>{};
  }
  static bool sealed(const std::string& id) {
    recording::VerifyReport report;
    auto r = recording::read_recording(rec_dir() + "/" + id + ".jsonl", &report);
    return r.is_ok() && report.sealed;
  }
  static json ctl_json(std::vector<std::string> args, int* code = nullptr) {
    args.push_back("--json");
    CtlResult r = gw_->ctl("ops", args);
    if (code != nullptr) *code = r.code;
    return json::parse(r.out, nullptr, false);
  }
  // Rewrites the suite's policy, reloads cp (SIGHUP) and waits until it runs the new version.
  static bool apply_policy(const char* policy) {
    int64_t version = ctl_json({"status"}).value("policy_version", int64_t{0});
    if (!gw_->rewrite_policy(policy).is_ok()) return false;
    gw_->signal_cp(SIGHUP);
    return eventually(
        [&] { return ctl_json({"status"}).value("policy_version", int64_t{0}) != version; });
  }
  // Puts the suite's policy (recording required) back when it goes out of scope, also when the
  // test that changed it fails midway: later tests check what a required policy guarantees.
  struct RequiredPolicyRestorer {
    RequiredPolicyRestorer() = default;
    RequiredPolicyRestorer(const RequiredPolicyRestorer&) = delete;
    RequiredPolicyRestorer& operator=(const RequiredPolicyRestorer&) = delete;
    ~RequiredPolicyRestorer() {
      fs::remove(filler());  // a test that failed with the disk full: cp's reload writes too
      EXPECT_TRUE(apply_policy(kRequiredPolicy)) << "the required policy was not restored";
    }
  };
  static json recorder_status() {
    json s = ctl_json({"status"});
    return s.is_object() && s.contains("recorder") ? s["recorder"] : json::object();
  }
  static std::set<std::string> table_values() {
    return query_lines(gw_->pg(), "SELECT v FROM public.wal_t");
  }
};

TEST_F(GatewayRecordingWalTest, DiskFullRefusesUnrecordedStatementsAndRecoversWithAGapRecord) {
  auto [conn, id] = open_session();
  ASSERT_FALSE(id.empty());
  ASSERT_NO_FATAL_FAILURE(fill_disk(/*leave=*/16 * 1024));

  std::set<std::string> ok, refused;
  std::string refused_message;
  for (int i = 0; i < 2000 && refused.size() < 8; ++i) {
    std::string v = "wal-" + std::to_string(i);
    Res r(PQexec(conn.get(), ("INSERT INTO public.wal_t VALUES ('" + v + "')").c_str()));
    if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
      ok.insert(v);
    } else {
      ASSERT_EQ(sqlstate(r.get()), "53100") << PQresultErrorMessage(r.get());
      refused.insert(v);
      refused_message = PQresultErrorMessage(r.get());
    }
  }
  ASSERT_GE(refused.size(), 8u) << "the disk never filled up";
  EXPECT_GE(ok.size(), 1u);
  EXPECT_NE(refused_message.find("No space left on device"), std::string::npos) << refused_message;
  EXPECT_NE(refused_message.find("not run"), std::string::npos) << refused_message;

  // The operator sees why: status and the audit log.
  json st = recorder_status();
  EXPECT_EQ(st.value("state", ""), "failing") << st.dump();
  EXPECT_NE(st.value("last_error", "").find("ENOSPC"), std::string::npos) << st.dump();
  EXPECT_GE(st.value("records_refused", 0), 8) << st.dump();
  EXPECT_GE(st.value("gaps_pending", 0), 1) << st.dump();
  CtlResult text = gw_->ctl("ops", {"status"});
  EXPECT_NE(text.out.find("recorder:"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("state failing"), std::string::npos) << text.out;
  const std::string audit = gw_->audit_log();
  EXPECT_NE(audit.find("recording_write_failed"), std::string::npos);
  EXPECT_NE(audit.find("cp.recording_failed"), std::string::npos);

  // Space comes back: the recorder recovers by itself (no new statement needed).
  fs::remove(filler());
  EXPECT_TRUE(eventually([] {
    json s = recorder_status();
    return s.value("state", "") == "ok" && s.value("gaps_pending", 1) == 0;
  })) << recorder_status().dump();
  {
    Res r(PQexec(conn.get(), "INSERT INTO public.wal_t VALUES ('wal-after')"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    ok.insert("wal-after");
  }
  EXPECT_NE(gw_->audit_log().find("recording_write_resumed"), std::string::npos);
  conn.reset();
  ASSERT_TRUE(eventually([&] { return sealed(id); })) << "session " << id << " never sealed";

  // No statement ran without its record; none of the refused ones ran.
  recording::VerifyReport report;
  std::vector<json> recs = records(id, &report);
  EXPECT_TRUE(report.ok) << report.reason;
  EXPECT_FALSE(report.torn_tail);
  std::set<std::string> recorded;  // values of INSERTs recorded before they ran
  uint64_t not_run = 0, gap_records = 0;
  for (const json& r : recs) {
    const std::string kind = r.value("kind", "");
    if (kind == "statement" && r.value("verdict", "") == "allow" && !r.contains("phase")) {
      std::string sql = r.value("sql", "");
      auto a = sql.find("'wal-");
      if (a != std::string::npos) recorded.insert(sql.substr(a + 1, sql.find('\'', a + 1) - a - 1));
    }
    if (kind == "recording_gap") {
      ++gap_records;
      not_run += r.value("not_run", uint64_t{0});
      EXPECT_GE(r.value("records", uint64_t{0}), r.value("not_run", uint64_t{0}));
      EXPECT_LE(r.value("first_ts", int64_t{0}), r.value("last_ts", int64_t{0}));
      EXPECT_NE(r.value("reason", "").find("ENOSPC"), std::string::npos) << r.dump();
    }
  }
  EXPECT_GE(gap_records, 1u);
  EXPECT_EQ(not_run, refused.size());
  std::set<std::string> in_db = table_values();
  for (const std::string& v : in_db) {
    if (v.rfind("wal-", 0) == 0) {
      EXPECT_EQ(recorded.count(v), 1u) << v << " ran without a record";
    }
  }
  for (const std::string& v : ok) EXPECT_EQ(in_db.count(v), 1u) << v;
  for (const std::string& v : refused) EXPECT_EQ(in_db.count(v), 0u) << v << " ran";

  int code = -1;
  json v = ctl_json({"sessions", "verify", id}, &code);
  EXPECT_EQ(code, 0) << v.dump();
  EXPECT_EQ(v.value("state", ""), "sealed") << v.dump();
  EXPECT_EQ(v.value("gaps", uint64_t{0}), gap_records) << v.dump();
  EXPECT_GE(v.value("missing_records", uint64_t{0}), not_run) << v.dump();
  CtlResult shown = gw_->ctl("ops", {"sessions", "verify", id});
  EXPECT_NE(shown.out.find("gap records"), std::string::npos) << shown.out;
}

TEST_F(GatewayRecordingWalTest, PreparedExecutionsAreRecordedBeforeTheyRunOrRefused) {
  // A prepared statement is parsed (and recorded) once, then executed many times through the
  // extended protocol: every execution needs its own record, with its parameter, before the
  // Execute reaches PostgreSQL.
  auto [conn, id] = open_session();
  ASSERT_FALSE(id.empty());
  {
    Res r(PQprepare(conn.get(), "ins", "INSERT INTO public.wal_t VALUES ($1)", 1, nullptr));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  }
  auto exec = [&](const std::string& v) {
    const char* values[] = {v.c_str()};
    return Res(PQexecPrepared(conn.get(), "ins", 1, values, nullptr, nullptr, 0));
  };
  std::vector<std::string> ok;
  std::set<std::string> refused;
  for (int i = 0; i < 5; ++i) {
    std::string v = "prep-" + std::to_string(i);
    Res r = exec(v);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    ok.push_back(v);
  }
  ASSERT_NO_FATAL_FAILURE(fill_disk(/*leave=*/16 * 1024));
  for (int i = 5; i < 4000 && refused.size() < 8; ++i) {
    std::string v = "prep-" + std::to_string(i);
    Res r = exec(v);
    if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
      ok.push_back(v);
    } else {
      ASSERT_EQ(sqlstate(r.get()), "53100") << PQresultErrorMessage(r.get());
      EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("not run"), std::string::npos);
      refused.insert(v);
    }
  }
  ASSERT_GE(refused.size(), 8u) << "the disk never filled up";
  fs::remove(filler());
  ASSERT_TRUE(eventually([] { return recorder_status().value("state", "") == "ok"; }));
  {
    // The session and its prepared statement are still usable.
    Res r = exec("prep-after");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    ok.push_back("prep-after");
  }
  conn.reset();
  ASSERT_TRUE(eventually([&] { return sealed(id); })) << "session " << id << " never sealed";

  recording::VerifyReport report;
  std::vector<json> recs = records(id, &report);
  EXPECT_TRUE(report.ok) << report.reason;
  bool parse_recorded = false;
  std::set<std::string> recorded;  // parameters of executions recorded before they ran
  for (const json& r : recs) {
    if (r.value("kind", "") != "statement" || r.contains("phase")) continue;
    if (r.value("sql", "") != "INSERT INTO public.wal_t VALUES ($1)") continue;
    if (r.value("source", "") == "execute") {
      ASSERT_TRUE(r.contains("params") && r["params"].is_array() && r["params"].size() == 1)
          << r.dump();
      ASSERT_TRUE(parse_recorded) << "an execute record before the Parse record";
      recorded.insert(r["params"][0].get<std::string>());
    } else {
      parse_recorded = true;
    }
  }
  EXPECT_TRUE(parse_recorded);
  // The first execution is covered by the Parse's record; each later one by its own.
  std::set<std::string> in_db = table_values();
  for (const std::string& v : in_db) {
    if (v.rfind("prep-", 0) != 0 || v == ok.front()) continue;
    EXPECT_EQ(recorded.count(v), 1u) << v << " ran without a record";
  }
  for (const std::string& v : ok) EXPECT_EQ(in_db.count(v), 1u) << v;
  for (const std::string& v : refused) {
    EXPECT_EQ(in_db.count(v), 0u) << v << " ran";
    EXPECT_EQ(recorded.count(v), 0u) << v << " has a record but was refused";
  }
  EXPECT_EQ(recorded.size(), ok.size() - 1);
}

TEST_F(GatewayRecordingWalTest, PipelinedStatementsRunOnlyAfterTheResultsBeforeThemAreRecorded) {
  // libpq pipeline mode: five statements (Parse/Bind/Describe/Execute each) and one Sync sent
  // at once. Each statement's write-ahead record must follow the complete results of the one
  // before it in the recording, so the gateway lets the next one through only once those
  // results are in.
  auto [conn, id] = open_session();
  ASSERT_FALSE(id.empty());
  constexpr int kStatements = 5;
  ASSERT_EQ(PQenterPipelineMode(conn.get()), 1);
  for (int i = 0; i < kStatements; ++i) {
    std::string sql =
        "SELECT g AS pipelined_" + std::to_string(i) + " FROM generate_series(1, 3) AS g";
    ASSERT_EQ(PQsendQueryParams(conn.get(), sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0),
              1)
        << PQerrorMessage(conn.get());
  }
  ASSERT_EQ(PQpipelineSync(conn.get()), 1);
  for (int i = 0; i < kStatements; ++i) {
    Res r(PQgetResult(conn.get()));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    EXPECT_EQ(PQntuples(r.get()), 3);
    EXPECT_EQ(PQfname(r.get(), 0), "pipelined_" + std::to_string(i));
    EXPECT_EQ(PQgetResult(conn.get()), nullptr);  // end of this statement's results
  }
  Res sync(PQgetResult(conn.get()));
  EXPECT_EQ(PQresultStatus(sync.get()), PGRES_PIPELINE_SYNC);
  ASSERT_EQ(PQexitPipelineMode(conn.get()), 1);
  conn.reset();
  ASSERT_TRUE(eventually([&] { return sealed(id); }));

  recording::VerifyReport report;
  std::vector<std::string> order;  // "record i", "rows i", "end i"
  for (const json& r : records(id, &report)) {
    std::string kind = r.value("kind", "");
    std::string text = r.dump();
    auto at = text.find("pipelined_");
    if (at == std::string::npos) continue;
    std::string n = text.substr(at + 10, 1);
    if (kind == "statement") order.push_back((r.contains("phase") ? "end " : "record ") + n);
    if (kind == "rows") order.push_back("rows " + n);
  }
  std::vector<std::string> want;
  for (int i = 0; i < kStatements; ++i) {
    for (const char* what : {"record ", "rows ", "end "}) want.push_back(what + std::to_string(i));
  }
  EXPECT_EQ(order, want);
}

TEST_F(GatewayRecordingWalTest, NotRequiredSessionsRunButEveryDroppedEventIsCountedInAGap) {
  RequiredPolicyRestorer restore;  // before the change: a failed reload is undone too
  ASSERT_TRUE(apply_policy(kNotRequiredPolicy));

  auto [conn, id] = open_session();
  ASSERT_FALSE(id.empty());
  const char* kSelect = "SELECT v FROM public.wal_t ORDER BY v LIMIT 3";
  auto statement_records = [&] {
    recording::VerifyReport report;
    size_t n = 0;
    for (const json& r : records(id, &report)) {
      if (r.value("kind", "") == "statement" && r.value("sql", "") == kSelect) ++n;
    }
    return n;
  };
  // How many statement records one SELECT leaves (its decision and its completion).
  {
    Res r(PQexec(conn.get(), kSelect));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK);
  }
  size_t per_statement = 0;
  ASSERT_TRUE(eventually([&] {
    per_statement = statement_records();
    return per_statement >= 2;
  }));
  const uint64_t gaps_before = recorder_status().value("gaps_written", uint64_t{0});
  ASSERT_NO_FATAL_FAILURE(fill_disk(/*leave=*/0));
  constexpr int kStatements = 20;
  for (int i = 0; i < kStatements; ++i) {
    Res r(PQexec(conn.get(), kSelect));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  // Wait until the recorder has seen (and refused) them, then give the space back. Its gap
  // record may already be written: a full file system still has room in the last page of the
  // recording file, where a small gap record fits.
  ASSERT_TRUE(eventually([&] {
    json r = recorder_status();
    return r.value("gaps_pending", 0) >= 1 || r.value("gaps_written", uint64_t{0}) > gaps_before;
  }));
  fs::remove(filler());
  {
    Res r(PQexec(conn.get(), "SELECT 2"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK);
  }
  conn.reset();
  ASSERT_TRUE(eventually([&] { return sealed(id); }));
  recording::VerifyReport report;
  std::vector<json> recs = records(id, &report);
  EXPECT_TRUE(report.ok) << report.reason;
  uint64_t lost = 0, lost_statements = 0, lost_rows = 0, not_run = 0;
  for (const json& r : recs) {
    if (r.value("kind", "") != "recording_gap") continue;
    lost += r.value("records", uint64_t{0});
    not_run += r.value("not_run", uint64_t{0});
    if (r.contains("kinds")) {
      lost_statements += r["kinds"].value("statement", uint64_t{0});
      lost_rows += r["kinds"].value("rows", uint64_t{0});
    }
  }
  // Every statement record of the SELECTs that ran is either in the file or counted in a gap.
  EXPECT_EQ(lost_statements + statement_records(), per_statement * (kStatements + 1));
  EXPECT_GE(lost_statements, 1u);
  EXPECT_GE(lost, lost_statements + lost_rows);
  EXPECT_EQ(not_run, 0u);  // nothing waited: the statements ran
}

TEST_F(GatewayRecordingWalTest, KillNineLeavesAnUnsealedSessionAndTruncationIsDetected) {
  // A sealed session to tamper with later.
  std::string sealed_id;
  {
    auto [conn, id] = open_session();
    for (int i = 0; i < 3; ++i) {
      Res r(PQexec(conn.get(), "SELECT v FROM public.wal_t ORDER BY v LIMIT 2"));
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK);
    }
    sealed_id = id;
  }
  ASSERT_TRUE(eventually([&] { return sealed(sealed_id); }));
  const std::string checkpoint = gw_->state_dir() + "/recording_checkpoint.json";
  auto checkpointed = [&](const std::string& id, bool want_sealed, uint64_t min_seq = 1) {
    auto cp = recording::read_checkpoint(checkpoint);
    if (!cp.is_ok()) return false;
    auto it = cp->heads.find(id);
    return it != cp->heads.end() && it->second.sealed == want_sealed && it->second.seq >= min_seq;
  };
  ASSERT_TRUE(eventually([&] { return checkpointed(sealed_id, true); }));

  // A session open mid-stream when cp is killed: a client inserts as fast as it can while
  // cp gets SIGKILL.
  auto [conn, open_id] = open_session();
  ASSERT_FALSE(open_id.empty());
  ASSERT_TRUE(eventually([&] { return checkpointed(open_id, false); }));
  std::atomic<int> inserted{0};
  std::thread client([&, c = conn.get()] {
    for (int i = 0; i < 100000; ++i) {
      Res r(PQexec(c,
                   ("INSERT INTO public.wal_t VALUES ('kill-" + std::to_string(i) + "')").c_str()));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) break;  // cp is gone
      inserted = i + 1;
    }
  });
  // The tail check below cuts inside the last checkpointed record, which must be one of the
  // INSERTs' (seq >= 2), not the session's first record: wait for a checkpoint past it.
  ASSERT_TRUE(eventually(
      [&] { return inserted.load() >= 20 && checkpointed(open_id, false, /*min_seq=*/2); }));
  ASSERT_TRUE(gw_->stop_cp().is_ok());  // SIGKILL, mid-stream
  client.join();
  conn.reset();
  // Every INSERT that ran has its statement record: records in the page cache survive a
  // crash of cp.
  {
    recording::VerifyReport report;
    std::set<std::string> recorded;
    for (const json& r : records(open_id, &report)) {
      std::string sql = r.value("sql", "");
      if (r.value("kind", "") == "statement" && !r.contains("phase") &&
          sql.find("'kill-") != std::string::npos) {
        auto at = sql.find("'kill-");
        recorded.insert(sql.substr(at + 1, sql.find('\'', at + 1) - at - 1));
      }
    }
    EXPECT_TRUE(report.ok) << report.reason;
    size_t ran = 0;
    for (const std::string& v : table_values()) {
      if (v.rfind("kill-", 0) != 0) continue;
      ++ran;
      EXPECT_EQ(recorded.count(v), 1u) << v << " ran without a record";
    }
    EXPECT_GE(ran, 20u);
  }

  // cp down: verify straight from the state dir.
  CtlResult offline =
      gw_->ctl("ops", {"sessions", "verify", open_id, "--state-dir", gw_->state_dir()});
  EXPECT_EQ(offline.code, 6) << offline.out << offline.err;
  EXPECT_NE(offline.out.find("UNSEALED"), std::string::npos) << offline.out;

  // cp back: the session ended while cp was down (the client left); the dataplane
  // re-registers it as ended and cp records its session_end and seals it.
  ASSERT_TRUE(gw_->start_cp().is_ok());
  int code = -1;
  json v;
  EXPECT_TRUE(eventually([&] {
    v = ctl_json({"sessions", "verify", open_id}, &code);
    return v.value("state", "") == "sealed";
  })) << v.dump();
  EXPECT_EQ(code, 0) << v.dump();
  EXPECT_GE(v.value("checkpoint_seq", 0), 1) << v.dump();
  {
    recording::VerifyReport report;
    std::vector<json> recs = records(open_id, &report);
    ASSERT_GE(recs.size(), 3u);
    const json& end = recs[recs.size() - 2];
    EXPECT_EQ(end.value("kind", ""), "session_end") << end.dump();
    EXPECT_EQ(end.value("reason", "").find("abnormal"), std::string::npos) << end.dump();
  }

  // Delete the last line of the sealed session: the chain still verifies, the checkpoint
  // does not.
  const std::string path = rec_dir() + "/" + sealed_id + ".jsonl";
  std::vector<std::string> lines;
  {
    std::ifstream in(path);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  ASSERT_GE(lines.size(), 3u);
  lines.pop_back();
  {
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : lines) out << l << "\n";
  }
  CtlResult deleted = gw_->ctl("ops", {"sessions", "verify", sealed_id});
  EXPECT_EQ(deleted.code, 1) << deleted.out << deleted.err;
  EXPECT_NE(deleted.out.find("TRUNCATED"), std::string::npos) << deleted.out;

  // Cut the crashed session's tail in the middle of the checkpointed last record.
  const std::string open_path = rec_dir() + "/" + open_id + ".jsonl";
  auto cp_now = recording::read_checkpoint(checkpoint);
  ASSERT_TRUE(cp_now.is_ok());
  const uint64_t head = cp_now->heads[open_id].seq;
  ASSERT_GE(head, 2u);
  {
    std::ifstream in(open_path);
    std::string l;
    uint64_t offset = 0;
    for (uint64_t n = 1; n < head && std::getline(in, l); ++n) offset += l.size() + 1;
    fs::resize_file(open_path, offset + 10);
  }
  CtlResult cut = gw_->ctl("ops", {"sessions", "verify", open_id});
  EXPECT_EQ(cut.code, 1) << cut.out << cut.err;
  EXPECT_NE(cut.out.find("TRUNCATED"), std::string::npos) << cut.out;
}

// State directory damage found when cp starts (docs/recording.md, "Damage found at start"):
// a recording cut below its checkpointed head is reported and never extended; a torn line past
// the checkpointed head is cut off, audited, and the session goes on; a corrupt checkpoint is
// kept aside and reported, a missing one reported; cp starts in every case.
TEST_F(GatewayRecordingWalTest, DamageInTheStateDirectoryIsReportedAtStartAndNeverExtended) {
  const std::string checkpoint = gw_->state_dir() + "/recording_checkpoint.json";
  auto checkpointed = [&](const std::string& id, uint64_t min_seq) {
    auto cp = recording::read_checkpoint(checkpoint);
    if (!cp.is_ok()) return false;
    auto it = cp->heads.find(id);
    return it != cp->heads.end() && !it->second.sealed && it->second.seq >= min_seq;
  };
  auto [cut_conn, cut_id] = open_session();
  auto [torn_conn, torn_id] = open_session();
  ASSERT_FALSE(cut_id.empty());
  ASSERT_FALSE(torn_id.empty());
  for (int i = 0; i < 3; ++i) {
    for (PGconn* c : {cut_conn.get(), torn_conn.get()}) {
      Res r(PQexec(c, "SELECT v FROM public.wal_t ORDER BY v LIMIT 1"));
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    }
  }
  ASSERT_TRUE(eventually([&] { return checkpointed(cut_id, 3) && checkpointed(torn_id, 3); }));
  size_t audit_before = gw_->audit_log().size();
  uint64_t head = 0, offset = 0;
  {
    CpStartsAgain cp_back(gw_);
    ASSERT_TRUE(gw_->stop_cp().is_ok());  // kill -9, both sessions open
    // One recording loses the end of its last checkpointed record (a torn line below the
    // head); the other gets a torn line after its last record (a write cut short by a crash).
    const std::string cut_path = rec_dir() + "/" + cut_id + ".jsonl";
    head = recording::read_checkpoint(checkpoint)->heads[cut_id].seq;
    {
      std::ifstream in(cut_path);
      std::string l;
      for (uint64_t n = 1; n < head && std::getline(in, l); ++n) offset += l.size() + 1;
    }
    fs::resize_file(cut_path, offset + 10);
    const std::string torn_path = rec_dir() + "/" + torn_id + ".jsonl";
    { std::ofstream(torn_path, std::ios::app) << R"({"seq":99,"kind":"stat)"; }
    ASSERT_TRUE(cp_back.start().is_ok());
  }
  // The cut recording: reported with the file and the record, and not extended.
  int code = -1;
  json v;
  EXPECT_TRUE(eventually([&] {
    std::string audit = gw_->audit_log().substr(audit_before);
    return audit.find("recording_damaged") != std::string::npos &&
           audit.find(cut_id + ".jsonl ends at seq " + std::to_string(head - 1)) !=
               std::string::npos &&
           audit.find("torn_bytes") != std::string::npos;
  })) << gw_->audit_log().substr(audit_before);
  v = ctl_json({"sessions", "verify", cut_id}, &code);
  EXPECT_EQ(code, 1) << v.dump();
  EXPECT_EQ(v.value("state", ""), "truncated") << v.dump();
  EXPECT_EQ(v.value("bad_seq", uint64_t{0}), head) << v.dump();
  EXPECT_EQ(fs::file_size(rec_dir() + "/" + cut_id + ".jsonl"), offset + 10)
      << "a recording cut below its checkpointed head was extended";
  // The torn one: its torn line was cut off and the session goes on, chain intact.
  Res after(PQexec(torn_conn.get(), "SELECT v FROM public.wal_t ORDER BY v LIMIT 1"));
  EXPECT_EQ(PQresultStatus(after.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(after.get());
  torn_conn.reset();
  EXPECT_TRUE(eventually([&] { return sealed(torn_id); }));
  v = ctl_json({"sessions", "verify", torn_id}, &code);
  EXPECT_EQ(code, 0) << v.dump();
  EXPECT_EQ(v.value("state", ""), "sealed") << v.dump();
  // The cut session's statements cannot be recorded any more: refused, never run unrecorded.
  Res refused(PQexec(cut_conn.get(), "INSERT INTO public.wal_t VALUES ('damaged-cut')"));
  EXPECT_EQ(sqlstate(refused.get()), "58030") << PQresultErrorMessage(refused.get());
  EXPECT_NE(std::string(PQresultErrorMessage(refused.get())).find("cannot be continued"),
            std::string::npos)
      << PQresultErrorMessage(refused.get());
  EXPECT_EQ(table_values().count("damaged-cut"), 0u);
  cut_conn.reset();

  // A corrupt checkpoint: cp starts, keeps it aside and says so; a missing one too.
  audit_before = gw_->audit_log().size();
  {
    CpStartsAgain cp_back(gw_);
    ASSERT_TRUE(gw_->stop_cp().is_ok());
    { std::ofstream(checkpoint, std::ios::trunc) << "{\"version\": 1, \"sessions\": {\"x\""; }
    ASSERT_TRUE(cp_back.start().is_ok());
  }
  EXPECT_TRUE(eventually([&] {
    return gw_->audit_log()
               .substr(audit_before)
               .find("cannot be parsed (kept as " + checkpoint + ".corrupt-") != std::string::npos;
  })) << gw_->audit_log().substr(audit_before);
  bool kept = false;
  for (const auto& e : fs::directory_iterator(gw_->state_dir())) {
    kept = kept || e.path().filename().string().starts_with("recording_checkpoint.json.corrupt-");
  }
  EXPECT_TRUE(kept);
  audit_before = gw_->audit_log().size();
  {
    CpStartsAgain cp_back(gw_);
    ASSERT_TRUE(gw_->stop_cp().is_ok());
    fs::remove(checkpoint);
    ASSERT_TRUE(cp_back.start().is_ok());
  }
  EXPECT_TRUE(eventually([&] {
    return gw_->audit_log()
               .substr(audit_before)
               .find("recording checkpoint " + checkpoint + " is missing") != std::string::npos;
  })) << gw_->audit_log().substr(audit_before);
  // cp runs: new sessions are recorded and verify.
  auto [conn, id] = open_session();
  EXPECT_FALSE(id.empty());
  conn.reset();
  EXPECT_TRUE(eventually([&] { return sealed(id); }));
}

// I/O errors under the recorder, with real kernel I/O: the state dir is ext4 on a loop device
// that shrinks under it, so writes past its new end fail. With `sync: always` the fdatasync
// of each batch reports the error: the statements waiting for that batch are refused with
// 58030 (io_error) and never run.
class GatewayRecordingIoErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/loop-control", F_OK) != 0 || geteuid() != 0) {
      GTEST_SKIP() << "needs root and loop devices (/dev/loop-control) to inject I/O errors";
    }
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- cp log ----\n" << gw_.cp_log();
  }
  void start(bool journal) {
    GatewayOptions o;
    o.policy_json = kRequiredPolicy;
    o.state_loop_device = true;
    o.state_loop_journal = journal;
    o.recording_sync = "always";
    o.admin_principals = {{"ops", {"ops"}}};
    Status started = gw_.start(o);
    ASSERT_TRUE(started.is_ok()) << started.to_string();
    auto made = gw_.pg().psql(
        "CREATE TABLE public.io_t (v text PRIMARY KEY); GRANT ALL ON public.io_t TO app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
    conn_ = Conn(PQconnectdb(gw_.conninfo().c_str()));
    ASSERT_EQ(PQstatus(conn_.get()), CONNECTION_OK) << PQerrorMessage(conn_.get());
    for (int i = 0; i < 3; ++i)
      ASSERT_NO_FATAL_FAILURE(insert_expecting_ok("io-" + std::to_string(i)));
  }
  json status() {
    json s = json::parse(gw_.ctl("ops", {"status", "--json"}).out, nullptr, false);
    return s.is_object() && s.contains("recorder") ? s["recorder"] : json::object();
  }
  void insert_expecting_ok(const std::string& v) {
    Res r(PQexec(conn_.get(), ("INSERT INTO public.io_t VALUES ('" + v + "')").c_str()));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    ok_.insert(v);
  }
  // Inserts until `refusals` were refused and one refusal's message contains `wanted` (the
  // file system turns read-only at its next journal commit: within about a second).
  void insert_until_refused(size_t refusals, const std::string& wanted) {
    bool seen = false;
    auto until = Clock::now() + std::chrono::seconds(20);
    for (int i = 3; Clock::now() < until && (refused_.size() < refusals || !seen); ++i) {
      std::string v = "io-" + std::to_string(i);
      Res r(PQexec(conn_.get(), ("INSERT INTO public.io_t VALUES ('" + v + "')").c_str()));
      if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
        ok_.insert(v);
        continue;
      }
      ASSERT_EQ(sqlstate(r.get()), "58030") << PQresultErrorMessage(r.get());
      std::string message = PQresultErrorMessage(r.get());
      EXPECT_NE(message.find("not run"), std::string::npos) << message;
      seen = seen || message.find(wanted) != std::string::npos;
      refused_.insert(v);
    }
    ASSERT_GE(refused_.size(), refusals) << "no write failed on the shrunken device";
    ASSERT_TRUE(seen) << "no refusal said " << wanted;
  }
  // Every acknowledged INSERT ran and has its statement record; no refused one ran.
  void check_nothing_ran_unrecorded() {
    std::set<std::string> in_db;
    auto out = gw_.pg().psql("SELECT v FROM public.io_t");
    ASSERT_TRUE(out.is_ok());
    std::istringstream lines(*out);
    for (std::string l; std::getline(lines, l);) {
      if (!l.empty()) in_db.insert(l);
    }
    EXPECT_EQ(in_db, ok_);
    for (const std::string& v : refused_) EXPECT_EQ(in_db.count(v), 0u) << v << " ran";
    recording::VerifyReport report;
    auto recs = recording::read_recording(recording_path(), &report);
    ASSERT_TRUE(recs.is_ok()) << recs.status().to_string();
    EXPECT_TRUE(report.ok) << report.reason;
    std::set<std::string> recorded;
    for (const json& r : *recs) {
      std::string sql = r.value("sql", "");
      auto at = sql.find("'io-");
      if (r.value("kind", "") == "statement" && !r.contains("phase") && at != std::string::npos) {
        recorded.insert(sql.substr(at + 1, sql.find('\'', at + 1) - at - 1));
      }
    }
    for (const std::string& v : in_db) EXPECT_EQ(recorded.count(v), 1u) << v << " has no record";
  }
  std::string recording_path() {
    for (const auto& e : fs::directory_iterator(gw_.state_dir() + "/recordings")) {
      if (e.path().extension() == ".jsonl") return e.path().string();
    }
    return "";
  }

  GatewayHarness gw_;
  Conn conn_;
  std::set<std::string> ok_, refused_;
};

TEST_F(GatewayRecordingIoErrorTest, EioFailsClosedWith58030AndRecordingHealsWhenTheDeviceIsBack) {
  ASSERT_NO_FATAL_FAILURE(start(/*journal=*/false));
  ASSERT_TRUE(gw_.break_state_device().is_ok());
  ASSERT_NO_FATAL_FAILURE(insert_until_refused(5, "Input/output error"));
  json st = status();
  EXPECT_EQ(st.value("state", ""), "failing") << st.dump();
  EXPECT_NE(st.value("last_error", "").find("EIO"), std::string::npos) << st.dump();

  ASSERT_TRUE(gw_.heal_state_device().is_ok());
  EXPECT_TRUE(eventually([&] {
    json s = status();
    return s.value("state", "") == "ok" && s.value("gaps_pending", 1) == 0;
  })) << status().dump();
  ASSERT_NO_FATAL_FAILURE(insert_expecting_ok("io-after"));
  const std::string audit = gw_.audit_log();
  EXPECT_NE(audit.find("recording_write_failed"), std::string::npos);
  EXPECT_NE(audit.find("recording_write_resumed"), std::string::npos);

  // The session ends sealed; the gap record counts the refused statements and names EIO.
  conn_.reset();
  recording::VerifyReport report;
  ASSERT_TRUE(eventually([&] {
    return recording::read_recording(recording_path(), &report).is_ok() && report.sealed;
  })) << report.reason;
  ASSERT_NO_FATAL_FAILURE(check_nothing_ran_unrecorded());
  uint64_t not_run = 0;
  auto recs = recording::read_recording(recording_path(), &report);
  ASSERT_TRUE(recs.is_ok()) << recs.status().to_string();
  for (const json& r : *recs) {
    if (r.value("kind", "") != "recording_gap") continue;
    EXPECT_NE(r.value("reason", "").find("EIO"), std::string::npos) << r.dump();
    not_run += r.value("not_run", uint64_t{0});
  }
  EXPECT_EQ(not_run, refused_.size());
}

TEST_F(GatewayRecordingIoErrorTest, AFileSystemTurnedReadOnlyFailsClosedWith58030) {
  // ext4 with a journal: the failed journal commit makes the file system read-only (EROFS)
  // until an operator repairs it; every statement that needs recording is refused meanwhile.
  ASSERT_NO_FATAL_FAILURE(start(/*journal=*/true));
  ASSERT_TRUE(gw_.break_state_device().is_ok());
  ASSERT_NO_FATAL_FAILURE(insert_until_refused(5, "Read-only file system"));
  json st = status();
  EXPECT_EQ(st.value("state", ""), "failing") << st.dump();
  EXPECT_NE(st.value("last_error", "").find("EROFS"), std::string::npos) << st.dump();
  // Still refused however often the client retries: nothing runs unrecorded.
  Res again(PQexec(conn_.get(), "INSERT INTO public.io_t VALUES ('io-late')"));
  EXPECT_EQ(sqlstate(again.get()), "58030") << PQresultErrorMessage(again.get());
  refused_.insert("io-late");
  EXPECT_NE(gw_.audit_log().find("recording_write_failed"), std::string::npos);
  ASSERT_NO_FATAL_FAILURE(check_nothing_ran_unrecorded());
}

}  // namespace
}  // namespace pgwarden::testing
