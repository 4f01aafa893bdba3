#include "controlplane/server/orphan_recordings.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "controlplane/recording/recording_file.h"

namespace pgwarden::server {
namespace {

namespace fs = std::filesystem;

class OrphanRecordingsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-orphans-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A process that has exited (and was reaped): its pid names nobody now.
  static pid_t exited_pid() {
    pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    int status = 0;
    ::waitpid(child, &status, 0);
    return child;
  }

  std::unique_ptr<recording::Recorder> open_recorder() {
    recording::RecorderOptions o;
    o.dir = dir_ + "/recordings";
    o.checkpoint_path = dir_ + "/recording_checkpoint.json";
    auto r = recording::Recorder::open(std::move(o));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? std::move(r).value() : nullptr;
  }

  static recording::SessionStart start(const std::string& id) {
    recording::SessionStart s;
    s.session_id = id;
    s.identity = "agent-7";
    s.target = "crm";
    s.policy = "agents";
    return s;
  }

  std::string dir_;
};

TEST_F(OrphanRecordingsTest, StartTimeNamesALiveProcessAndNothingForAnExitedOne) {
  EXPECT_GT(process_start_time(::getpid()), 0u);
  EXPECT_EQ(process_start_time(exited_pid()), 0u);
  EXPECT_EQ(process_start_time(0), 0u);
}

TEST_F(OrphanRecordingsTest, RosterTellsWhetherEveryDataplaneOfThePreviousCpExited) {
  const std::string path = dir_ + "/dataplanes.json";
  EXPECT_FALSE(DataplaneRoster(path).load().known);  // no file: nothing can be said
  EXPECT_FALSE(DataplaneRoster(path).load().all_exited());
  const pid_t gone = exited_pid();
  {
    DataplaneRoster roster(path);
    roster.connected(gone);  // recorded with start time 0: it was never seen running
    roster.connected(::getpid());
  }
  auto prev = DataplaneRoster(path).load();
  ASSERT_TRUE(prev.known);
  EXPECT_EQ(prev.processes.size(), 2u);
  EXPECT_FALSE(prev.all_exited());  // this process runs
  {
    DataplaneRoster roster(path);
    roster.connected(gone);
    roster.exited(gone);
  }
  EXPECT_TRUE(DataplaneRoster(path).load().known);
  EXPECT_TRUE(DataplaneRoster(path).load().processes.empty());
  EXPECT_TRUE(DataplaneRoster(path).load().all_exited());  // none was connected
  {
    DataplaneRoster roster(path);
    roster.connected(0);  // a dp in another pid namespace: its fate is unknown
  }
  EXPECT_FALSE(DataplaneRoster(path).load().all_exited());
  // A pid now used by another process than the one listed (another start time) has exited.
  std::ofstream(path) << R"({"processes":[{"pid":)" << ::getpid()
                      << R"(,"start_time":1}],"unknown_pid":false})";
  EXPECT_TRUE(DataplaneRoster(path).load().all_exited());
  std::ofstream(path) << "{not json";
  EXPECT_FALSE(DataplaneRoster(path).load().known);
}

TEST_F(OrphanRecordingsTest, OpenRecordingsAreFoundAndSealedAsEndedAbnormally) {
  {
    auto rec = open_recorder();
    ASSERT_NE(rec, nullptr);
    for (const char* id : {"open1", "open2", "ended1"}) {
      ASSERT_TRUE(rec->start_session(start(id)).is_ok());
      ASSERT_TRUE(rec->append(id, "statement", {{"sql", "SELECT 1"}}, {}).is_ok());
    }
    ASSERT_TRUE(rec->append("ended1", "session_end", {{"reason", "session_end"}}, {}).is_ok());
    ASSERT_TRUE(rec->flush().is_ok());
  }  // as a crash leaves them: open1 and open2 without a seal
  std::vector<std::string> ids =
      possibly_open_recordings(dir_ + "/recordings", dir_ + "/recording_checkpoint.json");
  std::sort(ids.begin(), ids.end());
  // The sealed one may be listed (changed recently); sealing leaves it alone.
  EXPECT_TRUE(std::find(ids.begin(), ids.end(), "open1") != ids.end());
  EXPECT_TRUE(std::find(ids.begin(), ids.end(), "open2") != ids.end());

  auto rec = open_recorder();
  ASSERT_NE(rec, nullptr);
  auto sealed = seal_orphan(*rec, "open1", "the session ended abnormally");
  ASSERT_TRUE(sealed.is_ok()) << sealed.status().to_string();
  EXPECT_TRUE(*sealed);
  auto again = seal_orphan(*rec, "ended1", "the session ended abnormally");
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(*again);
  auto missing = seal_orphan(*rec, "nosuch", "x");
  ASSERT_TRUE(missing.is_ok());
  EXPECT_FALSE(*missing);
  ASSERT_TRUE(rec->flush().is_ok());

  auto v = recording::verify_session(dir_ + "/recordings/open1.jsonl", nullptr, false);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->state, "sealed") << v->detail;
  auto records = recording::read_recording(dir_ + "/recordings/open1.jsonl", nullptr);
  ASSERT_TRUE(records.is_ok());
  ASSERT_GE(records->size(), 4u);
  const auto& end = (*records)[records->size() - 2];
  EXPECT_EQ(end.value("kind", ""), "session_end");
  EXPECT_EQ(end.value("reason", ""), "the session ended abnormally");
  EXPECT_EQ((*records)[records->size() - 3].value("kind", ""), "session_resumed");
  auto other = recording::verify_session(dir_ + "/recordings/open2.jsonl", nullptr, false);
  ASSERT_TRUE(other.is_ok());
  EXPECT_EQ(other->state, "unsealed");
}

TEST_F(OrphanRecordingsTest, RecordingsUnchangedSinceAnOlderCheckpointAreNotCandidates) {
  fs::create_directories(dir_ + "/recordings");
  std::ofstream(dir_ + "/recordings/old.jsonl") << "{}\n";
  std::ofstream(dir_ + "/recordings/listed.jsonl") << "{}\n";
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(dir_ + "/recordings/old.jsonl", old);
  fs::last_write_time(dir_ + "/recordings/listed.jsonl", old);
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  std::ofstream(dir_ + "/recording_checkpoint.json")
      << R"({"version":1,"written_ms":)" << now_ms
      << R"(,"sessions":{"listed":{"seq":1,"hash":"00","sealed":false}}})";
  auto ids = possibly_open_recordings(dir_ + "/recordings", dir_ + "/recording_checkpoint.json");
  EXPECT_EQ(ids, std::vector<std::string>{"listed"});
}

}  // namespace
}  // namespace pgwarden::server
