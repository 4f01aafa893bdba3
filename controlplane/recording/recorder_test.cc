#include "controlplane/recording/recorder.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "controlplane/recording/recording_file.h"

namespace pgwarden::recording {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class RecorderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-recorder-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = std::string(tmpl) + "/recordings";
  }
  void TearDown() override { fs::remove_all(fs::path(dir_).parent_path()); }

  RecorderOptions options() {
    RecorderOptions o;
    o.dir = dir_;
    o.clock_ms = [this] { return now_.fetch_add(10); };
    return o;
  }

  static SessionStart start(const std::string& id, int row_cap = 1000,
                            policy::RecordingLevel level = policy::RecordingLevel::kFull) {
    SessionStart s;
    s.session_id = id;
    s.identity = "agent-7";
    s.groups = {"agents"};
    s.target = "crm";
    s.client_addr = "127.0.0.1:50000";
    s.tls = true;
    s.policy = "agents";
    s.level = level;
    s.row_cap = row_cap;
    return s;
  }

  static nlohmann::json rows(int n, int from = 0) {
    nlohmann::json r = nlohmann::json::array();
    for (int i = 0; i < n; ++i) r.push_back({from + i, "***@example.com"});
    return {{"columns", {"id", "email"}}, {"rows", r}};
  }

  // Writes a session of `statements` statements with 2 rows each; returns the record count.
  int write_session(Recorder& rec, const std::string& id, int statements) {
    EXPECT_TRUE(rec.start_session(start(id)).is_ok());
    int n = 1;
    for (int i = 0; i < statements; ++i) {
      EXPECT_TRUE(rec.try_append(id, "rows", rows(2, i * 2)).is_ok());
      EXPECT_TRUE(rec.try_append(id, "statement",
                                 {{"sql", "SELECT id, email FROM crm.customers"},
                                  {"verdict", "allow"},
                                  {"rule", "allow.select"},
                                  {"duration_us", 1200},
                                  {"rows", 2}})
                      .is_ok());
      n += 2;
    }
    EXPECT_TRUE(rec.try_append(id, "session_end", {{"reason", "client closed"}}).is_ok());
    return n + 2;  // session_end and the seal
  }

  static std::vector<std::string> lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

  std::string dir_;
  std::atomic<int64_t> now_{1'767'225'600'000};
};

TEST_F(RecorderTest, SessionRecordsFormAVerifiedHashChain) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok()) << rec.status().to_string();
  int n = write_session(**rec, "sess-1", 3);
  ASSERT_TRUE((*rec)->flush().is_ok());
  EXPECT_FALSE((*rec)->session_open("sess-1"));
  auto report = verify_recording((*rec)->path_for("sess-1"));
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_EQ(report->records, static_cast<uint64_t>(n));
  EXPECT_FALSE(report->torn_tail);
  auto ls = lines((*rec)->path_for("sess-1"));
  ASSERT_EQ(ls.size(), static_cast<size_t>(n));
  auto first = nlohmann::json::parse(ls[0]);
  EXPECT_EQ(first["seq"], 1);
  EXPECT_EQ(first["kind"], "session_start");
  EXPECT_EQ(first["identity"], "agent-7");
  EXPECT_EQ(first["tls"], true);
  EXPECT_EQ(first["prev"], std::string(kGenesisHash));
  auto second = nlohmann::json::parse(ls[1]);
  EXPECT_EQ(second["prev"], first["hash"]);
  EXPECT_EQ(nlohmann::json::parse(ls[ls.size() - 2])["kind"], "session_end");
  auto seal = nlohmann::json::parse(ls.back());
  EXPECT_EQ(seal["kind"], "seal");
  EXPECT_EQ(seal["records"], n - 1);
  EXPECT_EQ(seal["head"], nlohmann::json::parse(ls[ls.size() - 2])["hash"]);
  EXPECT_TRUE(report->sealed);
  EXPECT_EQ(fs::status(dir_).permissions() & fs::perms::others_all, fs::perms::none);
}

TEST_F(RecorderTest, MetricsCountBytesWrittenFsyncsAndAnEmptyQueueAfterFlush) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok()) << rec.status().to_string();
  EXPECT_EQ((*rec)->bytes_written(), 0u);
  write_session(**rec, "sess-m", 3);
  ASSERT_TRUE((*rec)->flush().is_ok());
  EXPECT_EQ((*rec)->queue_depth(), 0u);
  // Every byte of the file went through the counted writes.
  EXPECT_EQ((*rec)->bytes_written(),
            static_cast<uint64_t>(std::filesystem::file_size((*rec)->path_for("sess-m"))));
  // Each successful fdatasync is timed before it is counted: read the count first.
  uint64_t synced = (*rec)->batches_synced();
  EXPECT_GE(synced, 1u);
  EXPECT_GE((*rec)->sync_latency().count, synced);
}

TEST_F(RecorderTest, FlippingOneByteInRecordKIsReportedAtK) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  int n = write_session(**rec, "sess-1", 4);
  ASSERT_TRUE((*rec)->flush().is_ok());
  const std::string path = (*rec)->path_for("sess-1");
  const auto original = lines(path);
  for (int k : {1, 2, 5, n}) {
    for (size_t offset : {size_t{3}, original[k - 1].size() / 2, original[k - 1].size() - 3}) {
      auto ls = original;
      ls[k - 1][offset] ^= 0x01;
      {
        std::ofstream out(path, std::ios::trunc);
        for (const auto& l : ls) out << l << '\n';
      }
      auto report = verify_recording(path);
      ASSERT_TRUE(report.is_ok());
      EXPECT_FALSE(report->ok) << "k=" << k << " offset=" << offset;
      EXPECT_EQ(report->bad_seq, static_cast<uint64_t>(k)) << report->reason;
      EXPECT_EQ(report->records, static_cast<uint64_t>(k - 1));
    }
  }
}

TEST_F(RecorderTest, DeletingOrReorderingRecordsBreaksTheChain) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  write_session(**rec, "sess-1", 3);
  ASSERT_TRUE((*rec)->flush().is_ok());
  const std::string path = (*rec)->path_for("sess-1");
  auto ls = lines(path);
  ls.erase(ls.begin() + 2);
  {
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : ls) out << l << '\n';
  }
  auto report = verify_recording(path);
  EXPECT_FALSE(report->ok);
  EXPECT_EQ(report->bad_seq, 3u);
  EXPECT_EQ(report->reason, "seq gap");
}

TEST_F(RecorderTest, TornLastLineIsIgnoredAndReported) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  int n = write_session(**rec, "sess-1", 2);
  ASSERT_TRUE((*rec)->flush().is_ok());
  const std::string path = (*rec)->path_for("sess-1");
  auto size = fs::file_size(path);
  fs::resize_file(path, size - 20);
  auto report = verify_recording(path);
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->ok);
  EXPECT_TRUE(report->torn_tail);
  EXPECT_EQ(report->records, static_cast<uint64_t>(n - 1));
  EXPECT_GT(report->torn_bytes, 0u);
}

TEST_F(RecorderTest, ReopenedSessionContinuesTheChainAfterATornTail) {
  {
    auto rec = Recorder::open(options());
    ASSERT_TRUE(rec.is_ok());
    ASSERT_TRUE((*rec)->start_session(start("sess-1")).is_ok());
    ASSERT_TRUE((*rec)->try_append("sess-1", "statement", {{"sql", "SELECT 1"}}).is_ok());
  }  // destroyed without session_end: everything queued is synced
  const std::string path = dir_ + "/sess-1.jsonl";
  { std::ofstream(path, std::ios::app) << R"({"seq":3,"half)"; }
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("sess-1")).is_ok());
  ASSERT_TRUE((*rec)->try_append("sess-1", "session_end", nlohmann::json::object()).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto report = verify_recording(path);
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_FALSE(report->torn_tail);
  EXPECT_EQ(report->records, 5u);
}

TEST_F(RecorderTest, ResumeSessionContinuesSeqAndChainWithAResumedRecord) {
  {
    auto rec = Recorder::open(options());
    ASSERT_TRUE(rec.is_ok());
    ASSERT_TRUE((*rec)->start_session(start("sess-r")).is_ok());
    ASSERT_TRUE((*rec)->try_append("sess-r", "statement", {{"sql", "SELECT 1"}}).is_ok());
  }  // a cp that stops without ending the session
  const std::string path = dir_ + "/sess-r.jsonl";
  { std::ofstream(path, std::ios::app) << R"({"seq":3,"half)"; }  // torn by the crash
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->resume_session(start("sess-r"), "control plane restart").is_ok());
  EXPECT_EQ((*rec)->resume_session(start("sess-r"), "again").code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*rec)->try_append("sess-r", "statement", {{"sql", "SELECT 2"}}).is_ok());
  ASSERT_TRUE((*rec)->try_append("sess-r", "session_end", {{"reason", "done"}}).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  VerifyReport report;
  auto records = read_recording(path, &report);
  ASSERT_TRUE(records.is_ok());
  EXPECT_TRUE(report.ok) << report.reason;
  EXPECT_FALSE(report.torn_tail);
  ASSERT_GE(records->size(), 4u);
  EXPECT_EQ((*records)[2]["kind"], "session_resumed");
  EXPECT_EQ((*records)[2]["seq"], 3);
  EXPECT_EQ((*records)[2]["reason"], "control plane restart");
  EXPECT_EQ((*records)[3]["sql"], "SELECT 2");
  // The session ended: a sealed recording is never reopened.
  EXPECT_EQ((*rec)->resume_session(start("sess-r"), "restart").code(),
            StatusCode::kFailedPrecondition);
}

// A file that lost records the checkpoint knew is not continued from its shorter end (the next
// checkpoint would agree with it and hide the cut); the damage is audited. A torn line past the
// checkpointed head is cut off and audited too, and the chain goes on.
TEST_F(RecorderTest, ACutBelowTheCheckpointedHeadIsNeverExtendedAndDamageIsAudited) {
  {
    auto rec = Recorder::open(options());
    ASSERT_TRUE(rec.is_ok());
    for (const char* id : {"sess-cut", "sess-torn"}) {
      ASSERT_TRUE((*rec)->start_session(start(id)).is_ok());
      ASSERT_TRUE((*rec)->try_append(id, "statement", {{"sql", "SELECT 1"}}).is_ok());
      ASSERT_TRUE((*rec)->try_append(id, "statement", {{"sql", "SELECT 2"}}).is_ok());
    }
  }  // destroyed without session_end: synced, checkpoint written (head seq 3 each)
  const std::string cut = dir_ + "/sess-cut.jsonl";
  std::vector<std::string> kept = lines(cut);
  ASSERT_EQ(kept.size(), 3u);
  {
    std::ofstream out(cut, std::ios::trunc);
    out << kept[0] << "\n" << kept[1] << "\n" << kept[2].substr(0, 10);  // torn inside seq 3
  }
  const uintmax_t cut_size = fs::file_size(cut);
  { std::ofstream(dir_ + "/sess-torn.jsonl", std::ios::app) << R"({"seq":4,"half)"; }
  std::vector<nlohmann::json> audited;
  std::mutex audited_mu;
  RecorderOptions o = options();
  o.audit = [&](const nlohmann::json& j) {
    std::lock_guard lock(audited_mu);
    audited.push_back(j);
  };
  auto rec = Recorder::open(o);
  ASSERT_TRUE(rec.is_ok());
  (void)(*rec)->resume_session(start("sess-cut"), "control plane restart");
  (void)(*rec)->try_append("sess-cut", "statement", {{"sql", "SELECT 3"}});
  ASSERT_TRUE((*rec)->resume_session(start("sess-torn"), "control plane restart").is_ok());
  ASSERT_TRUE((*rec)->try_append("sess-torn", "session_end", {{"reason", "done"}}).is_ok());
  (void)(*rec)->flush();
  EXPECT_EQ(fs::file_size(cut), cut_size) << "extended";
  auto torn = verify_recording(dir_ + "/sess-torn.jsonl");
  ASSERT_TRUE(torn.is_ok());
  EXPECT_TRUE(torn->ok) << torn->reason;
  EXPECT_TRUE(torn->sealed);
  std::lock_guard lock(audited_mu);
  bool cut_said = false, torn_said = false;
  for (const nlohmann::json& j : audited) {
    if (j.value("event", "") != "recording_damaged") continue;
    const std::string m = j.value("message", "");
    cut_said = cut_said || (j.value("session_id", "") == "sess-cut" &&
                            m.find("ends at seq 2 (then a torn line) but the checkpoint recorded "
                                   "seq 3") != std::string::npos);
    torn_said = torn_said || (j.value("session_id", "") == "sess-torn" && j.value("seq", 0) == 4 &&
                              j.value("torn_bytes", 0) > 0);
  }
  EXPECT_TRUE(cut_said);
  EXPECT_TRUE(torn_said);
}

// resume_session reads only the file's tail: a record forged after the seal of a session the
// checkpoint knows as sealed does not make it resumable.
TEST_F(RecorderTest, ResumeRefusesASessionTheCheckpointSaysIsSealed) {
  {
    auto rec = Recorder::open(options());
    ASSERT_TRUE(rec.is_ok());
    ASSERT_TRUE((*rec)->start_session(start("sess-s")).is_ok());
    ASSERT_TRUE((*rec)->try_append("sess-s", "session_end", {{"reason", "done"}}).is_ok());
    ASSERT_TRUE((*rec)->flush().is_ok());
  }
  const std::string path = dir_ + "/sess-s.jsonl";
  auto recs = read_recording(path);
  ASSERT_TRUE(recs.is_ok());
  ASSERT_EQ(recs->back()["kind"], "seal");
  const std::string head = recs->back()["hash"];
  nlohmann::json forged = {{"seq", recs->size() + 1}, {"ts", 1},    {"session_id", "sess-s"},
                           {"kind", "statement"},     {"sql", "x"}, {"prev", head}};
  forged["hash"] = chain_hash(head, canonical_bytes(forged));
  { std::ofstream(path, std::ios::app) << forged.dump() << "\n"; }
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  Status st = (*rec)->resume_session(start("sess-s"), "restart");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.sqlstate(), "57P01");
}

TEST_F(RecorderTest, ResumeSessionStartsAMissingRecordingAndRefusesATamperedOne) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->resume_session(start("sess-new"), "control plane restart").is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto first = read_recording(dir_ + "/sess-new.jsonl");
  ASSERT_TRUE(first.is_ok());
  ASSERT_FALSE(first->empty());
  EXPECT_EQ((*first)[0]["kind"], "session_start");

  {
    std::ofstream(dir_ + "/sess-bad.jsonl") << R"({"seq":1,"prev":"x","hash":"y"})"
                                            << "\n";
  }
  EXPECT_EQ((*rec)->resume_session(start("sess-bad"), "restart").code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ((*rec)->resume_session(start("../etc"), "restart").code(),
            StatusCode::kInvalidArgument);
}

TEST_F(RecorderTest, RowCapKeepsFirstRowsOfEachStatement) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s", /*row_cap=*/3)).is_ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*rec)->try_append("s", "rows", rows(2, i * 2)).is_ok());
  ASSERT_TRUE((*rec)->try_append("s", "statement", {{"sql", "q1"}, {"rows", 6}}).is_ok());
  ASSERT_TRUE((*rec)->try_append("s", "rows", rows(2)).is_ok());
  ASSERT_TRUE((*rec)->try_append("s", "statement", {{"sql", "q2"}, {"rows", 2}}).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto records = read_recording((*rec)->path_for("s"));
  ASSERT_TRUE(records.is_ok());
  std::vector<size_t> row_counts;
  std::vector<int64_t> truncated;
  for (const auto& r : *records) {
    if (r["kind"] == "rows") {
      row_counts.push_back(r["rows"].size());
      truncated.push_back(r.value("truncated", int64_t{0}));
    }
  }
  EXPECT_EQ(row_counts, (std::vector<size_t>{2, 1, 2}));  // third batch of q1 not recorded
  EXPECT_EQ(truncated, (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ((*rec)->rows_dropped_cap(), 3u);
}

TEST_F(RecorderTest, MetadataLevelDropsRowsAndOffRecordsNothing) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("meta", 10, policy::RecordingLevel::kMetadata)).is_ok());
  ASSERT_TRUE((*rec)->try_append("meta", "rows", rows(2)).is_ok());
  ASSERT_TRUE((*rec)->try_append("meta", "statement", {{"sql", "q"}}).is_ok());
  ASSERT_TRUE((*rec)->start_session(start("off", 10, policy::RecordingLevel::kOff)).is_ok());
  ASSERT_TRUE((*rec)->try_append("off", "statement", {{"sql", "q"}}).is_ok());
  ASSERT_TRUE((*rec)->try_append("off", "session_end", nlohmann::json::object()).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto records = read_recording((*rec)->path_for("meta"));
  ASSERT_TRUE(records.is_ok());
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[0]["recording"], "metadata");
  EXPECT_EQ((*records)[1]["kind"], "statement");
  EXPECT_FALSE(fs::exists((*rec)->path_for("off")));
  EXPECT_FALSE((*rec)->session_open("off"));
}

TEST_F(RecorderTest, BadInputIsRejected) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  EXPECT_EQ((*rec)->start_session(start("../etc/passwd")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*rec)->start_session(start("")).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*rec)->try_append("nope", "statement", nlohmann::json::object()).code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  EXPECT_EQ((*rec)->start_session(start("s")).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*rec)->try_append("s", "Statement!", nlohmann::json::object()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*rec)->try_append("s", "statement", nlohmann::json::array()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*rec)->try_append("s", "rows", {{"rows", 3}}).code(), StatusCode::kInvalidArgument);
  // Reserved keys cannot be forged by the event's sender.
  ASSERT_TRUE(
      (*rec)->try_append("s", "statement", {{"seq", 99}, {"hash", "x"}, {"sql", "q"}}).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto records = read_recording((*rec)->path_for("s"));
  ASSERT_EQ(records->size(), 2u);
  EXPECT_EQ((*records)[1]["seq"], 2);
}

TEST_F(RecorderTest, FullQueueIsReportedAndNothingAcceptedIsLost) {
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<bool> blocked{false};
  RecorderOptions o = options();
  o.queue_capacity = 16;
  o.before_sync = [&] {
    blocked = true;
    gate.wait();
  };
  auto rec = Recorder::open(o);
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  int accepted = 1;
  bool saw_full = false;
  for (int i = 0; i < 200 && !saw_full; ++i) {
    Status st = (*rec)->try_append("s", "statement", {{"sql", "SELECT " + std::to_string(i)}});
    if (st.is_ok()) {
      ++accepted;
    } else {
      EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
      EXPECT_EQ(st.sqlstate(), "54000");
      saw_full = true;
    }
    if (i == 8) {
      while (!blocked) std::this_thread::sleep_for(1ms);
    }
  }
  EXPECT_TRUE(saw_full);
  EXPECT_GE((*rec)->records_rejected_queue_full(), 1u);
  release.set_value();
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto report = verify_recording((*rec)->path_for("s"));
  EXPECT_TRUE(report->ok);
  EXPECT_EQ(report->records, static_cast<uint64_t>(accepted));
}

TEST_F(RecorderTest, ConcurrentSessionsKeepIndependentChains) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  std::vector<std::thread> threads;
  std::atomic<int> expected{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] { expected += write_session(**rec, "s" + std::to_string(t), 50); });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE((*rec)->flush().is_ok());
  uint64_t total = 0;
  for (int t = 0; t < 8; ++t) {
    auto report = verify_recording((*rec)->path_for("s" + std::to_string(t)));
    ASSERT_TRUE(report.is_ok());
    EXPECT_TRUE(report->ok) << report->reason;
    EXPECT_EQ(report->records, 103u);
    total += report->records;
  }
  EXPECT_EQ(total, static_cast<uint64_t>(expected.load()));
  EXPECT_EQ((*rec)->records_written(), total);
}

TEST_F(RecorderTest, InvalidUtf8InValuesIsRecordedVerifiably) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  ASSERT_TRUE(
      (*rec)->try_append("s", "statement", {{"sql", std::string("SELECT '\xff\xfe'")}}).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto report = verify_recording((*rec)->path_for("s"));
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_EQ(report->records, 2u);
}

// Every line the recorder writes is the canonical form of the record it holds (what the tree
// serialiser writes), whatever the keys: before "hash", between the envelope's keys, after
// "ts", forged envelope keys, non-ASCII and escaped keys, nested values, no fields at all.
TEST_F(RecorderTest, EveryLineIsTheCanonicalFormOfItsRecord) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("s")).is_ok());
  const std::vector<nlohmann::json> events = {
      nlohmann::json::object(),
      {{"a", 1}, {"hb", 2}, {"kind", "forged"}, {"kz", 3}, {"prev", "x"}, {"q", 4}, {"seq", 9}},
      {{"session_id", "other"}, {"session_idz", true}, {"t", nullptr}, {"ts", "no"}, {"tz", 1.5}},
      {{"hash", "forged"}, {"ha", {{"z", 1}, {"a", {1, "two", nullptr}}}}, {"zz", "\n\"\\"}},
      {{"é", "ü"}, {"\t", "tab key"}, {"", "empty key"}, {"A", -7}, {"~", UINT64_MAX}},
  };
  for (const auto& e : events) ASSERT_TRUE((*rec)->try_append("s", "statement", e).is_ok());
  ASSERT_TRUE((*rec)->try_append("s", "session_end", {{"reason", "done"}}).is_ok());
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto report = verify_recording((*rec)->path_for("s"));
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_TRUE(report->sealed);
  std::ifstream in((*rec)->path_for("s"));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    EXPECT_EQ(line, canonical_bytes(j)) << "record " << n + 1;
    if (n >= 1 && n <= static_cast<int>(events.size())) {
      EXPECT_EQ(j["seq"], n + 1);
      EXPECT_EQ(j["kind"], "statement");
      EXPECT_EQ(j["session_id"], "s");
      EXPECT_TRUE(j["ts"].is_number_integer());
      nlohmann::json fields = events[n - 1];
      for (const char* k : {"seq", "ts", "session_id", "kind", "prev", "hash"}) {
        fields.erase(k);
        j.erase(k);
      }
      EXPECT_EQ(j, fields) << "record " << n + 1;
    }
    ++n;
  }
  EXPECT_EQ(n, 8);  // session_start, 5 events, session_end, seal
}

// The pre-serialised overload records the same fields as the tree one, in any order of adding
// (the last of a repeated key wins), and cuts rows to the cap the same way.
TEST_F(RecorderTest, PreSerialisedFieldsRecordTheSameAsATree) {
  auto rec = Recorder::open(options());
  ASSERT_TRUE(rec.is_ok());
  ASSERT_TRUE((*rec)->start_session(start("tree", /*row_cap=*/3)).is_ok());
  ASSERT_TRUE((*rec)->start_session(start("fields", /*row_cap=*/3)).is_ok());
  nlohmann::json stmt = {{"sql", "SELECT 1"}, {"verdict", "allow"}, {"rows", 2}, {"tag", "x"}};
  RecordFields f;
  f.add("tag", "x").add("verdict", "deny").add("sql", "SELECT 1").add("rows", 2);
  f.add("verdict", "allow");
  ASSERT_TRUE((*rec)->try_append("tree", "statement", stmt).is_ok());
  ASSERT_TRUE((*rec)->append("fields", "statement", std::move(f), {}).is_ok());
  for (const std::string id : {"tree", "fields"}) {
    nlohmann::json r = rows(5);
    if (id == "tree") {
      ASSERT_TRUE((*rec)->try_append(id, "rows", r).is_ok());
    } else {
      RecordFields rf;
      rf.add("rows", r["rows"]).add("columns", r["columns"]);
      ASSERT_TRUE((*rec)->append(id, "rows", std::move(rf), {}).is_ok());
    }
  }
  EXPECT_EQ((*rec)->append("fields", "rows", RecordFields().add("rows", 3), {}).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE((*rec)->flush().is_ok());
  auto a = read_recording((*rec)->path_for("tree"));
  auto b = read_recording((*rec)->path_for("fields"));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_EQ(a->size(), 3u);
  ASSERT_EQ(b->size(), 3u);
  for (size_t i = 1; i < 3; ++i) {
    nlohmann::json x = (*a)[i];
    nlohmann::json y = (*b)[i];
    for (const char* k : {"ts", "session_id", "prev", "hash"}) {
      x.erase(k);
      y.erase(k);
    }
    EXPECT_EQ(x, y);
  }
  EXPECT_EQ((*b)[2]["rows"].size(), 3u);
  EXPECT_EQ((*b)[2]["truncated"], 2);
}

}  // namespace
}  // namespace pgwarden::recording
