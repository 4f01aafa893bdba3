#include "controlplane/recording/replay.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "controlplane/recording/recorder.h"

namespace pgwarden::recording {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

TEST(RenderTable, MatchesPsqlAlignedLayout) {
  // psql -c "SELECT id, email FROM crm.customers WHERE id < 3" prints exactly this.
  std::string t = render_table({"id", "email"}, {true, false},
                               {{"1", "ada@example.com"}, {"2", "alan@example.org"}});
  EXPECT_EQ(t,
            " id |      email       \n"
            "----+------------------\n"
            "  1 | ada@example.com\n"
            "  2 | alan@example.org\n");
}

TEST(RenderTable, NullsAreEmptyAndWidthCountsCharacters) {
  std::string t =
      render_table({"name", "n"}, {false, false}, {{"Zo\xc3\xab", std::nullopt}, {"Al", "x"}});
  EXPECT_EQ(t,
            " name | n \n"
            "------+---\n"
            " Zo\xc3\xab  | \n"
            " Al   | x\n");
}

class ReplayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-replay-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    RecorderOptions o;
    o.dir = dir_;
    o.clock_ms = [this] { return now_.fetch_add(250); };
    auto rec = Recorder::open(o);
    ASSERT_TRUE(rec.is_ok());
    rec_ = std::move(*rec);
  }
  void TearDown() override {
    rec_.reset();
    fs::remove_all(dir_);
  }
  std::string dir_;
  std::atomic<int64_t> now_{1'767'225'600'000};
  std::unique_ptr<Recorder> rec_;
};

TEST_F(ReplayTest, RendersSessionAsTheClientSawIt) {
  SessionStart s;
  s.session_id = "sess-42";
  s.identity = "agent-7";
  s.target = "crm";
  s.client_addr = "10.1.2.3:5555";
  s.tls = true;
  s.policy = "agents";
  s.row_cap = 2;
  ASSERT_TRUE(rec_->start_session(s).is_ok());
  nlohmann::json cols = {{{"name", "id"}, {"type_oid", 20}}, {{"name", "email"}, {"type_oid", 25}}};
  ASSERT_TRUE(
      rec_->try_append(
              "sess-42", "rows",
              {{"columns", cols},
               {"rows", nlohmann::json::array({nlohmann::json::array({"1", "***@example.com"}),
                                               nlohmann::json::array({"2", "***@example.org"}),
                                               nlohmann::json::array({"3", "***@example.net"})})}})
          .is_ok());
  ASSERT_TRUE(rec_->try_append("sess-42", "statement",
                               {{"sql", "SELECT id, email FROM crm.customers LIMIT 3"},
                                {"verdict", "allow"},
                                {"rows", 3},
                                {"duration_us", 900}})
                  .is_ok());
  ASSERT_TRUE(rec_->try_append("sess-42", "statement",
                               {{"sql", "DROP TABLE crm.customers"},
                                {"verdict", "deny"},
                                {"rule", "deny.ddl"},
                                {"message", "DDL is not allowed for agents"}})
                  .is_ok());
  ASSERT_TRUE(rec_->try_append("sess-42", "statement",
                               {{"sql", "DELETE FROM crm.orders WHERE id = 7"},
                                {"verdict", "allow"},
                                {"approval_id", "AbC123"},
                                {"tag", "DELETE 1"}})
                  .is_ok());
  ASSERT_TRUE(rec_->try_append("sess-42", "session_end", {{"reason", "client closed"}}).is_ok());
  ASSERT_TRUE(rec_->flush().is_ok());

  std::ostringstream out;
  auto report = render_replay(rec_->path_for("sess-42"), out);
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->ok);
  EXPECT_EQ(out.str(),
            "-- session sess-42: agent-7 -> crm from 10.1.2.3:5555 (tls), policy agents, started "
            "2026-01-01 00:00:00.000Z\n"
            "crm=> SELECT id, email FROM crm.customers LIMIT 3\n"
            " id |      email      \n"
            "----+-----------------\n"
            "  1 | ***@example.com\n"
            "  2 | ***@example.org\n"
            "(3 rows; 2 recorded)\n"
            "\n"
            "crm=> DROP TABLE crm.customers\n"
            "ERROR:  DDL is not allowed for agents (rule deny.ddl)\n"
            "\n"
            "crm=> DELETE FROM crm.orders WHERE id = 7\n"
            "-- held for approval AbC123\n"
            "DELETE 1\n"
            "\n"
            "-- session ended 2026-01-01 00:00:01.250Z (client closed)\n"
            "-- sealed after 6 records\n");
}

TEST_F(ReplayTest, GapAndResumedRecordsAreShown) {
  SessionStart s;
  s.session_id = "sess-gap";
  s.target = "crm";
  ASSERT_TRUE(rec_->start_session(s).is_ok());
  ASSERT_TRUE(rec_->try_append("sess-gap", "recording_gap",
                               {{"records", 7},
                                {"not_run", 3},
                                {"first_ts", 1'767'225'600'000},
                                {"last_ts", 1'767'225'601'000},
                                {"reason", "write x: No space left on device (ENOSPC)"}})
                  .is_ok());
  ASSERT_TRUE(rec_->try_append("sess-gap", "session_resumed", {{"reason", "control plane restart"}})
                  .is_ok());
  ASSERT_TRUE(rec_->flush().is_ok());
  std::ostringstream out;
  ASSERT_TRUE(render_replay(rec_->path_for("sess-gap"), out).is_ok());
  EXPECT_NE(out.str().find("-- RECORDING GAP: 7 records not recorded between 2026-01-01 "
                           "00:00:00.000Z and 2026-01-01 00:00:01.000Z (3 statements refused, "
                           "not run): write x: No space left on device (ENOSPC)\n"),
            std::string::npos)
      << out.str();
  EXPECT_NE(out.str().find("-- recording resumed"), std::string::npos) << out.str();
}

TEST_F(ReplayTest, SpeedFactorWaitsOriginalGapsScaledAndCapped) {
  SessionStart s;
  s.session_id = "timed";
  ASSERT_TRUE(rec_->start_session(s).is_ok());
  ASSERT_TRUE(rec_->try_append("timed", "statement", {{"sql", "SELECT 1"}}).is_ok());
  now_ += 60'000;  // a minute of thinking
  ASSERT_TRUE(rec_->try_append("timed", "statement", {{"sql", "SELECT 2"}}).is_ok());
  ASSERT_TRUE(rec_->flush().is_ok());
  std::vector<std::chrono::milliseconds> waits;
  ReplayOptions opts;
  opts.speed = 2;
  opts.max_gap = 10s;
  opts.sleep = [&](std::chrono::milliseconds d) { waits.push_back(d); };
  std::ostringstream out;
  ASSERT_TRUE(render_replay(rec_->path_for("timed"), out, opts).is_ok());
  EXPECT_EQ(waits, (std::vector<std::chrono::milliseconds>{125ms, 10s}));
}

TEST_F(ReplayTest, PreparedExecutionsShowTheirParameters) {
  SessionStart s;
  s.session_id = "prep";
  s.target = "crm";
  ASSERT_TRUE(rec_->start_session(s).is_ok());
  ASSERT_TRUE(rec_->try_append("prep", "statement",
                               {{"sql", "UPDATE t SET v = $1 WHERE id = $2"},
                                {"verdict", "allow"},
                                {"source", "execute"},
                                {"params", nlohmann::json::array({"x\ny", nullptr})},
                                {"params_truncated", true}})
                  .is_ok());
  ASSERT_TRUE(rec_->flush().is_ok());
  std::ostringstream out;
  ASSERT_TRUE(render_replay(rec_->path_for("prep"), out).is_ok());
  EXPECT_NE(out.str().find("crm=> UPDATE t SET v = $1 WHERE id = $2\n"
                           "-- params: [\"x\\ny\",null] (truncated)\n"),
            std::string::npos)
      << out.str();
}

TEST_F(ReplayTest, SummarisedLargeValuesShowPrefixLengthAndDigest) {
  SessionStart s;
  s.session_id = "big";
  s.target = "crm";
  ASSERT_TRUE(rec_->start_session(s).is_ok());
  nlohmann::json big = {{"length", 104857600}, {"sha256", "ab12"}, {"prefix", "\\x0102"}};
  ASSERT_TRUE(rec_->try_append("big", "rows",
                               {{"columns", {{{"name", "b"}, {"type_oid", 17}}}},
                                {"rows", nlohmann::json::array({nlohmann::json::array({big})})}})
                  .is_ok());
  ASSERT_TRUE(
      rec_->try_append(
              "big", "statement",
              {{"sql", "SELECT b FROM t"}, {"verdict", "allow"}, {"rows", 1}, {"phase", "end"}})
          .is_ok());
  ASSERT_TRUE(rec_->flush().is_ok());
  std::ostringstream out;
  ASSERT_TRUE(render_replay(rec_->path_for("big"), out).is_ok());
  EXPECT_NE(out.str().find("\\x0102... (104857600 bytes, sha256 ab12)"), std::string::npos)
      << out.str();
}

TEST_F(ReplayTest, TamperedRecordingIsRenderedUpToTheBreakAndFlagged) {
  SessionStart s;
  s.session_id = "t";
  ASSERT_TRUE(rec_->start_session(s).is_ok());
  ASSERT_TRUE(rec_->try_append("t", "statement", {{"sql", "SELECT 1"}}).is_ok());
  ASSERT_TRUE(rec_->try_append("t", "statement", {{"sql", "SELECT 2"}}).is_ok());
  ASSERT_TRUE(rec_->flush().is_ok());
  std::string path = rec_->path_for("t");
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  std::string data = buf.str();
  data.replace(data.find("SELECT 2"), 8, "SELECT 3");
  std::ofstream(path, std::ios::trunc) << data;
  std::ostringstream out;
  auto report = render_replay(path, out);
  ASSERT_TRUE(report.is_ok());
  EXPECT_FALSE(report->ok);
  EXPECT_NE(out.str().find("=> SELECT 1"), std::string::npos);
  EXPECT_EQ(out.str().find("SELECT 3"), std::string::npos);
  EXPECT_NE(out.str().find("-- recording fails verification at seq 3: hash mismatch"),
            std::string::npos);
}

}  // namespace
}  // namespace pgwarden::recording
