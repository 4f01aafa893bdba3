#include "controlplane/audit/audit_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace pgwarden::audit {
namespace {

std::string temp_path() {
  char tmpl[] = "/tmp/pgw-audit-XXXXXX";
  int fd = mkstemp(tmpl);
  close(fd);
  unlink(tmpl);
  return tmpl;
}

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(AuditLogTest, WritesOneJsonObjectPerLineWithStableKeys) {
  std::string path = temp_path();
  {
    auto log = AuditLog::open({{config::AuditSink::Kind::kFile, path}});
    ASSERT_TRUE(log.is_ok()) << log.status().to_string();
    AuditRecord r;
    r.event = "decision";
    r.session_id = "s1";
    r.identity = "svc:x";
    r.target = "demo";
    r.decision = "deny";
    r.rule = "no-drop";
    r.reason = "DROP is not allowed";
    r.sql = "DROP TABLE crm.customers";
    r.extra = {{"shape_key", "ab12"}, {"token", "eyJsecret"}, {"api_key", "k"}, {"rows", 3}};
    (*log)->record(r);
    (*log)->record(AuditRecord{.event = "config_reload", .decision = "rejected"});
  }
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  const auto& j = lines[0];
  EXPECT_EQ(j["event"], "decision");
  EXPECT_EQ(j["sql"], "DROP TABLE crm.customers");
  EXPECT_EQ(j["shape_key"], "ab12");
  EXPECT_EQ(j["rows"], 3);
  EXPECT_FALSE(j.contains("token"));
  EXPECT_FALSE(j.contains("api_key"));
  // "ts": RFC 3339 in UTC with milliseconds, the time the line was written.
  for (const auto& line : lines) {
    std::string ts = line["ts"].get<std::string>();
    ASSERT_EQ(ts.size(), std::string("2026-01-01T00:00:00.000Z").size()) << ts;
    std::tm tm{};
    const char* rest = strptime(ts.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    ASSERT_NE(rest, nullptr) << ts;
    EXPECT_TRUE(rest[0] == '.' && isdigit(rest[1]) && isdigit(rest[2]) && isdigit(rest[3]) &&
                rest[4] == 'Z' && rest[5] == '\0')
        << ts;
    EXPECT_LE(std::llabs(static_cast<long long>(timegm(&tm) - time(nullptr))), 300) << ts;
  }
  EXPECT_LE(lines[0]["ts"].get<std::string>(), lines[1]["ts"].get<std::string>());
  EXPECT_FALSE(lines[1].contains("session_id"));
  std::ifstream raw(path);
  std::stringstream ss;
  ss << raw.rdbuf();
  EXPECT_EQ(ss.str().find("eyJsecret"), std::string::npos);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 077, 0u);
  unlink(path.c_str());
}

TEST(AuditLogTest, ConcurrentWritersNeverInterleaveLines) {
  std::string path = temp_path();
  {
    auto log = AuditLog::open({{config::AuditSink::Kind::kFile, path}});
    ASSERT_TRUE(log.is_ok());
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 200; ++i) {
          (*log)->record(AuditRecord{.event = "statement",
                                     .session_id = std::to_string(t),
                                     .sql = std::string(500, 'a' + t)});
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  EXPECT_EQ(read_lines(path).size(), 800u);
  unlink(path.c_str());
}

TEST(AuditLogTest, RecordFlushesBatchedLinesBeforeItInCallOrder) {
  std::string path = temp_path();
  auto log = AuditLog::open({{config::AuditSink::Kind::kFile, path}});
  ASSERT_TRUE(log.is_ok());
  (*log)->record_batched(AuditRecord{.event = "statement", .session_id = "1"});
  (*log)->record_batched(AuditRecord{.event = "statement", .session_id = "2"});
  (*log)->record(AuditRecord{.event = "decision", .session_id = "3"});
  // Readable while the log is still open: record() flushed the batched lines with its own.
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["session_id"], "1");
  EXPECT_EQ(lines[1]["session_id"], "2");
  EXPECT_EQ(lines[2]["event"], "decision");
  (*log)->record_batched(AuditRecord{.event = "statement", .session_id = "4"});
  (*log)->flush();
  lines = read_lines(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[3]["session_id"], "4");
  EXPECT_TRUE(lines[3].contains("ts"));
  unlink(path.c_str());
}

// The file-size limit makes a real write(2) fail part way (a short write, then EFBIG): the
// kernel error path without a file system to fill. SIGXFSZ is ignored so write returns it.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old_);
    struct rlimit l = old_;
    l.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &l);
  }
  ~FileSizeLimit() { lift(); }
  void lift() {
    if (lifted_) return;
    lifted_ = true;
    setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }

 private:
  struct rlimit old_ {};
  sighandler_t old_handler_ = SIG_DFL;
  bool lifted_ = false;
};

TEST(AuditLogTest, AFailedWriteCutsTheTornLineFailsAndHealsWithAnOutageRecord) {
  std::string path = temp_path();
  auto log = AuditLog::open({{config::AuditSink::Kind::kFile, path}});
  ASSERT_TRUE(log.is_ok());
  std::vector<Status> told;
  (*log)->set_on_failure([&](const Status& why) { told.push_back(why); });
  ASSERT_TRUE((*log)->write(AuditRecord{.event = "decision", .session_id = "1"}).is_ok());
  const auto good_size = std::filesystem::file_size(path);
  {
    FileSizeLimit limit(good_size + 10);  // room for 10 bytes of the next line: a torn write
    Status st = (*log)->write(AuditRecord{.event = "decision", .session_id = "2", .sql = "x"});
    EXPECT_FALSE(st.is_ok());
    EXPECT_EQ(st.sqlstate(), "58030") << st.to_string();  // EFBIG is not a full disk
    EXPECT_NE(st.message().find("audit log could not be written"), std::string::npos);
    EXPECT_NE(st.message().find(path), std::string::npos);
    EXPECT_TRUE((*log)->failing());
    EXPECT_EQ(std::filesystem::file_size(path), good_size) << "the torn line was not cut";
    // Still failing: no second notice for the same outage.
    EXPECT_FALSE((*log)->write(AuditRecord{.event = "decision", .session_id = "3"}).is_ok());
    (*log)->note_refused();
    EXPECT_FALSE((*log)->retry().is_ok());
    AuditHealth h = (*log)->health();
    EXPECT_TRUE(h.failing);
    EXPECT_EQ(h.lines_lost, 2u);
    EXPECT_EQ(h.refused, 1u);
    EXPECT_EQ(h.outages, 1u);
    EXPECT_NE(h.last_error.find("EFBIG"), std::string::npos) << h.last_error;
    EXPECT_EQ(h.to_json()["state"], "failing");
  }
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0].sqlstate(), "58030");
  EXPECT_TRUE((*log)->retry().is_ok());  // the limit is lifted: heals without a new line
  EXPECT_FALSE((*log)->failing());
  ASSERT_TRUE((*log)->write(AuditRecord{.event = "decision", .session_id = "4"}).is_ok());
  auto lines = read_lines(path);  // every line parses
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["session_id"], "1");
  EXPECT_EQ(lines[1]["event"], "audit_write_resumed");
  EXPECT_EQ(lines[1]["lines_lost"], 2);
  EXPECT_EQ(lines[1]["refused"], 1);
  EXPECT_TRUE(lines[1].contains("failing_since_ms"));
  EXPECT_EQ(lines[2]["session_id"], "4");
  EXPECT_EQ((*log)->health().to_json()["state"], "ok");
  unlink(path.c_str());
}

TEST(AuditLogTest, AFileReplacedByADirectoryFailsClosedAndHealsInANewFile) {
  std::string path = temp_path();
  auto log = AuditLog::open({{config::AuditSink::Kind::kFile, path}});
  ASSERT_TRUE(log.is_ok());
  std::vector<Status> told;
  (*log)->set_on_failure([&](const Status& why) { told.push_back(why); });
  ASSERT_TRUE((*log)->write(AuditRecord{.event = "decision", .session_id = "1"}).is_ok());
  // The file is moved away and a directory takes its name: writing on to the old descriptor
  // would put the lines where nobody reads the log.
  ASSERT_EQ(std::rename(path.c_str(), (path + ".old").c_str()), 0);
  ASSERT_EQ(mkdir(path.c_str(), 0700), 0);
  Status st = (*log)->write(AuditRecord{.event = "decision", .session_id = "2"});
  EXPECT_EQ(st.sqlstate(), "58030") << st.to_string();
  EXPECT_NE(st.message().find("open " + path), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("EISDIR"), std::string::npos) << st.message();
  EXPECT_TRUE((*log)->failing());
  EXPECT_FALSE((*log)->retry().is_ok());
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(read_lines(path + ".old").size(), 1u) << "a line went to the moved file";
  // The directory goes: the next write opens a new file at the path.
  ASSERT_EQ(rmdir(path.c_str()), 0);
  ASSERT_TRUE((*log)->write(AuditRecord{.event = "decision", .session_id = "3"}).is_ok());
  EXPECT_FALSE((*log)->failing());
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["event"], "audit_file_reopened");
  EXPECT_EQ(lines[0]["path"], path);
  EXPECT_EQ(lines[1]["event"], "audit_write_resumed");
  EXPECT_EQ(lines[1]["lines_lost"], 1);
  EXPECT_EQ(lines[2]["session_id"], "3");
  unlink(path.c_str());
  unlink((path + ".old").c_str());
}

TEST(AuditLogTest, ARemovedOrRotatedFileIsReopenedAtThePath) {
  std::string path = temp_path();
  auto log = AuditLog::open({{config::AuditSink::Kind::kFile, path}});
  ASSERT_TRUE(log.is_ok());
  ASSERT_TRUE((*log)->write(AuditRecord{.event = "decision", .session_id = "1"}).is_ok());
  ASSERT_EQ(unlink(path.c_str()), 0);  // removed (or rotated away): nothing is lost silently
  ASSERT_TRUE((*log)->write(AuditRecord{.event = "decision", .session_id = "2"}).is_ok());
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["event"], "audit_file_reopened");
  EXPECT_EQ(lines[1]["session_id"], "2");
  EXPECT_FALSE((*log)->failing());
  unlink(path.c_str());
}

TEST(AuditLogTest, AFullDiskIsSqlstate53100) {
  // /dev/full answers every write with ENOSPC.
  auto log = AuditLog::open({{config::AuditSink::Kind::kFile, "/dev/full"}});
  ASSERT_TRUE(log.is_ok());
  Status st = (*log)->write(AuditRecord{.event = "decision"});
  EXPECT_EQ(st.sqlstate(), "53100") << st.to_string();
  EXPECT_NE(st.message().find("ENOSPC"), std::string::npos);
  EXPECT_TRUE((*log)->failing());
  EXPECT_EQ((*log)->write_status().sqlstate(), "53100");
}

TEST(AuditLogTest, UnwritableSinkIsAnError) {
  auto log = AuditLog::open({{config::AuditSink::Kind::kFile, "/nonexistent-dir/audit.log"}});
  EXPECT_FALSE(log.is_ok());
}

}  // namespace
}  // namespace pgwarden::audit
