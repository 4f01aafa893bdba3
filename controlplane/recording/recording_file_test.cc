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
