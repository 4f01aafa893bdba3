#include "controlplane/recording/recording_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "controlplane/recording/recorder.h"

namespace pgwarden::recording {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kDay = 86'400'000;
constexpr int64_t kNow = 1'767'225'600'000 + 100 * kDay;

class RecordingFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-recfile-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Records a session that starts `age_days` before kNow, with `statements` statements.
  void record(const std::string& id, int age_days, int statements, bool end = true,
              int padding = 0) {
    std::atomic<int64_t> t{kNow - age_days * kDay};
    RecorderOptions o;
    o.dir = dir_;
    o.clock_ms = [&t] { return t.fetch_add(1000); };
    auto rec = Recorder::open(o);
    ASSERT_TRUE(rec.is_ok());
    SessionStart s;
    s.session_id = id;
    s.identity = "id-" + id;
    s.target = "crm";
    ASSERT_TRUE((*rec)->start_session(s).is_ok());
    for (int i = 0; i < statements; ++i) {
      ASSERT_TRUE((*rec)
                      ->try_append(id, "statement",
                                   {{"sql", "SELECT 1"}, {"pad", std::string(padding, 'x')}})
                      .is_ok());
    }
    if (end) {
      ASSERT_TRUE((*rec)->try_append(id, "session_end", nlohmann::json::object()).is_ok());
    }
    ASSERT_TRUE((*rec)->flush().is_ok());
  }

  std::vector<std::string> remaining() {
    std::vector<std::string> ids;
    auto list = list_recordings(dir_);
    EXPECT_TRUE(list.is_ok());
    if (!list.is_ok()) return ids;
    for (const auto& s : list.value()) ids.push_back(s.session_id);
    return ids;
  }

  std::string dir_;
};

TEST_F(RecordingFileTest, ListShowsSessionsOldestFirstWithTheirSummary) {
  record("b", 2, 3);
  record("a", 5, 1, /*end=*/false);
  { std::ofstream(dir_ + "/notes.txt") << "not a recording"; }
  auto list = list_recordings(dir_);
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ(list->size(), 2u);
  const auto& a = (*list)[0];
  const auto& b = (*list)[1];
  EXPECT_EQ(a.session_id, "a");
  EXPECT_EQ(a.identity, "id-a");
  EXPECT_EQ(a.target, "crm");
  EXPECT_EQ(a.start_ms, kNow - 5 * kDay);
  EXPECT_EQ(a.end_ms, 0);  // still open
  EXPECT_EQ(a.statements, 1u);
  EXPECT_EQ(b.session_id, "b");
  EXPECT_EQ(b.statements, 3u);
  EXPECT_EQ(b.end_ms, kNow - 2 * kDay + 4000);
  EXPECT_EQ(b.size_bytes, fs::file_size(dir_ + "/b.jsonl"));
  EXPECT_TRUE(b.verified);
}

TEST_F(RecordingFileTest, RetentionByAgeDeletesOnlyOldRecordings) {
  record("old", 40, 1);
  record("mid", 20, 1);
  record("new", 1, 1);
  auto deleted = apply_retention(dir_, {.max_age_days = 30}, kNow);
  ASSERT_TRUE(deleted.is_ok());
  EXPECT_EQ(*deleted, std::vector<std::string>{"old"});
  EXPECT_EQ(remaining(), (std::vector<std::string>{"mid", "new"}));
}

TEST_F(RecordingFileTest, RetentionBySizeDeletesOldestFirstAndSparesActiveSessions) {
  record("d1", 4, 1, true, 1000);
  record("d2", 3, 1, true, 1000);
  record("d3", 2, 1, true, 1000);
  record("d4", 1, 1, true, 1000);
  uint64_t one = fs::file_size(dir_ + "/d1.jsonl");
  auto deleted = apply_retention(dir_, {.max_total_bytes = one * 2 + 10}, kNow, {"d2"});
  ASSERT_TRUE(deleted.is_ok());
  EXPECT_EQ(*deleted, (std::vector<std::string>{"d1", "d3"}));
  EXPECT_EQ(remaining(), (std::vector<std::string>{"d2", "d4"}));
}

TEST_F(RecordingFileTest, NoLimitsDeleteNothing) {
  record("x", 400, 1);
  auto deleted = apply_retention(dir_, {}, kNow);
  ASSERT_TRUE(deleted.is_ok());
  EXPECT_TRUE(deleted->empty());
}

TEST_F(RecordingFileTest, MissingFileIsAnErrorNotAReport) {
  EXPECT_EQ(verify_recording(dir_ + "/none.jsonl").status().code(), StatusCode::kNotFound);
}

TEST_F(RecordingFileTest, GarbageFileFailsAtTheFirstRecord) {
  { std::ofstream(dir_ + "/g.jsonl") << "hello\n"; }
  auto report = verify_recording(dir_ + "/g.jsonl");
  ASSERT_TRUE(report.is_ok());
  EXPECT_FALSE(report->ok);
  EXPECT_EQ(report->bad_seq, 1u);
  EXPECT_EQ(report->reason, "malformed json");
}

// The tail gives what a full read gives for the end of the chain, for a last record far
// larger than the 64 KiB blocks it is read in and for a torn partial line after it.
TEST_F(RecordingFileTest, TailMatchesAFullReadOfTheEnd) {
  record("big", 1, 3, /*end=*/false, /*padding=*/200 << 10);
  const std::string path = dir_ + "/big.jsonl";
  VerifyReport full;
  auto records = read_recording(path, &full);
  ASSERT_TRUE(records.is_ok());
  auto tail = read_recording_tail(path);
  ASSERT_TRUE(tail.is_ok());
  EXPECT_TRUE(tail->ok) << tail->reason;
  EXPECT_EQ(tail->records, full.records);
  EXPECT_EQ(tail->last_hash, full.last_hash);
  EXPECT_EQ(tail->last_kind, "statement");
  EXPECT_EQ(tail->last.value("pad", "").size(), size_t{200 << 10});
  EXPECT_EQ(tail->good_bytes, fs::file_size(path));
  EXPECT_FALSE(tail->torn_tail);

  const std::string partial = R"({"seq":5,"kind":"stat)";  // a crash in the middle of a write
  { std::ofstream(path, std::ios::app) << partial; }
  auto torn = read_recording_tail(path);
  ASSERT_TRUE(torn.is_ok());
  EXPECT_TRUE(torn->ok);
  EXPECT_EQ(torn->records, full.records);
  EXPECT_EQ(torn->last_hash, full.last_hash);
  EXPECT_TRUE(torn->torn_tail);
  EXPECT_EQ(torn->torn_bytes, partial.size());
  EXPECT_EQ(torn->good_bytes + torn->torn_bytes, fs::file_size(path));
}

TEST_F(RecordingFileTest, TailOfAnEmptyOrSingleRecordFile) {
  { std::ofstream(dir_ + "/empty.jsonl"); }
  auto empty = read_recording_tail(dir_ + "/empty.jsonl");
  ASSERT_TRUE(empty.is_ok());
  EXPECT_TRUE(empty->ok);
  EXPECT_EQ(empty->records, 0u);
  EXPECT_FALSE(empty->torn_tail);
  record("one", 1, 0, /*end=*/false);
  auto one = read_recording_tail(dir_ + "/one.jsonl");
  ASSERT_TRUE(one.is_ok());
  EXPECT_EQ(one->records, 1u);
  EXPECT_EQ(one->last_kind, "session_start");
  EXPECT_EQ(read_recording_tail(dir_ + "/none.jsonl").status().code(), StatusCode::kNotFound);
}

TEST_F(RecordingFileTest, TailWhoseLastRecordWasChangedDoesNotVerify) {
  record("t", 1, 2, /*end=*/false);
  const std::string path = dir_ + "/t.jsonl";
  std::string data;
  {
    std::ifstream in(path);
    data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const size_t at = data.rfind("SELECT 1");
  ASSERT_NE(at, std::string::npos);
  data.replace(at, 8, "SELECT 2");
  { std::ofstream(path, std::ios::trunc) << data; }
  auto tail = read_recording_tail(path);
  ASSERT_TRUE(tail.is_ok());
  EXPECT_FALSE(tail->ok);
  EXPECT_EQ(tail->reason, "hash mismatch");
  { std::ofstream(path, std::ios::app) << "not json\n"; }
  tail = read_recording_tail(path);
  ASSERT_TRUE(tail.is_ok());
  EXPECT_EQ(tail->reason, "malformed json");
}

// Events a restarted cp got again from the dataplane's ring (it was killed after writing them,
// before releasing them) follow the session_resumed record and repeat the records before it.
TEST(RedeliveredRecords, AreTheRunAfterARestartMarkerThatRepeatsTheRunBeforeIt) {
  using nlohmann::json;
  auto rec = [](uint64_t seq, const std::string& kind, json fields) {
    fields["seq"] = seq;
    fields["ts"] = 1000 + seq;
    fields["kind"] = kind;
    fields["prev"] = "p" + std::to_string(seq);
    fields["hash"] = "h" + std::to_string(seq);
    return fields;
  };
  const json rows = {{"rows", {{1}, {2}}}, {"ts_ms", 77}};
  const json end = {{"phase", "end"}, {"rows", 2}, {"ts_ms", 78}};
  const json restart = {{"reason", "control plane restart"}};
  std::vector<json> records = {rec(1, "session_start", {{"identity", "a"}}),
                               rec(2, "rows", rows),
                               rec(3, "statement", end),
                               rec(4, "session_resumed", restart),
                               rec(5, "recording_gap", {{"records", 1}}),
                               rec(6, "rows", rows),
                               rec(7, "statement", end),
                               rec(8, "statement", {{"sql", "SELECT 2"}, {"ts_ms", 79}})};
  EXPECT_EQ(redelivered_records(records), 2u);
  // Only the tail repeated (the rows record was taken off the ring before the crash).
  std::vector<json> tail_only = {records[0], records[1], records[2], records[3],
                                 rec(5, "statement", end)};
  EXPECT_EQ(redelivered_records(tail_only), 1u);
  // Nothing repeats: a new statement follows the marker.
  std::vector<json> clean = {records[0], records[1], records[2], records[3], records[7]};
  EXPECT_EQ(redelivered_records(clean), 0u);
  // A channel break (the cp did not restart) never redelivers what cp wrote.
  std::vector<json> reattach = clean;
  reattach[3] =
      rec(4, "session_resumed", {{"reason", "dataplane reconnected to the control plane"}});
  reattach[4] = rec(5, "statement", end);
  EXPECT_EQ(redelivered_records(reattach), 0u);
}

TEST(ChainHash, IsSha256OfPrevAndCanonicalBytes) {
  nlohmann::json r = {{"b", 1}, {"a", "x"}};
  EXPECT_EQ(canonical_bytes(r), R"({"a":"x","b":1})");
  // sha256("" + "abc") from FIPS 180-2.
  EXPECT_EQ(chain_hash("", "abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(chain_hash("a", "bc"), chain_hash("", "abc"));
}

}  // namespace
}  // namespace pgwarden::recording
