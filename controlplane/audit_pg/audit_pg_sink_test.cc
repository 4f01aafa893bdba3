// AuditPgSink without a database: an unreachable server (nothing listens on 127.0.0.1:1).
// The sandbox-backed outage/recovery test is tests/integration/audit_pg_sink_test.cc.
#include "controlplane/audit_pg/audit_pg_sink.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace pgwarden::audit_pg {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class AuditPgSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-auditpg-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  AuditPgOptions options() {
    AuditPgOptions o;
    o.conninfo = "host=127.0.0.1 port=1 dbname=audit user=nobody";
    o.spill_path = dir_ + "/audit-pg-spill.jsonl";
    o.memory_capacity = 50;
    o.retry_min = 10ms;
    o.retry_max = 20ms;
    o.connect_timeout_s = 1;
    return o;
  }

  std::vector<nlohmann::json> spilled() {
    std::ifstream in(dir_ + "/audit-pg-spill.jsonl");
    std::vector<nlohmann::json> out;
    for (std::string l; std::getline(in, l);) out.push_back(nlohmann::json::parse(l));
    return out;
  }

  std::string dir_;
};

TEST_F(AuditPgSinkTest, UnreachableDatabaseSpillsInOrderWithoutBlockingTheCaller) {
  auto sink = AuditPgSink::start(options());
  ASSERT_TRUE(sink.is_ok());
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 150; ++i) {
    ASSERT_TRUE((*sink)->submit({{"event", "statement"}, {"n", i}}));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  // The writer moves the overflow to disk while it retries.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  // It may spill in more than one pass, depending on when it wakes up.
  while ((*sink)->records_spilled() < 100 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE((*sink)->records_spilled(), 100u);
  EXPECT_LE((*sink)->memory_records(), 50u);
  EXPECT_FALSE((*sink)->connected());
  EXPECT_GE((*sink)->db_errors(), 1u);
  EXPECT_FALSE((*sink)->flush(50ms));
  for (int i = 150; i < 170; ++i) ASSERT_TRUE((*sink)->submit({{"event", "statement"}, {"n", i}}));
  sink->reset();  // shutdown spills what is still in memory
  auto records = spilled();
  ASSERT_EQ(records.size(), 170u);
  for (int i = 0; i < 170; ++i) EXPECT_EQ(records[i]["n"], i);
}

TEST_F(AuditPgSinkTest, DropsAndCountsOnlyWhenEveryBufferIsFull) {
  AuditPgOptions o = options();
  o.spill_max_bytes = 200;  // room for a handful of records
  o.memory_capacity = 5;
  o.memory_hard_cap = 20;
  auto sink = AuditPgSink::start(o);
  ASSERT_TRUE(sink.is_ok());
  // Which submissions the memory buffer refused depends on how far the writer got, so the
  // test follows what submit() answered rather than assuming a schedule.
  std::vector<int> accepted;
  for (int i = 0; i < 100; ++i) {
    if ((*sink)->submit({{"n", i}})) accepted.push_back(i);
  }
  EXPECT_GE((*sink)->records_dropped(), 100 - accepted.size());  // refusals are counted
  sink->reset();
  auto records = spilled();
  EXPECT_LE(fs::file_size(dir_ + "/audit-pg-spill.jsonl"), 200u);
  EXPECT_GT(records.size(), 0u);
  EXPECT_LT(records.size(), 100u);
  // The spill keeps the oldest accepted records, in order; the rest are dropped.
  ASSERT_LE(records.size(), accepted.size());
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(records[i]["n"], accepted[i]);
}

TEST_F(AuditPgSinkTest, NonObjectsAreWrappedAndNulCharactersReplaced) {
  auto sink = AuditPgSink::start(options());
  ASSERT_TRUE(sink.is_ok());
  (*sink)->submit(nlohmann::json::array({1, 2}));
  (*sink)->submit({{"sql", std::string("a\0b", 3)}});
  sink->reset();
  auto records = spilled();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["record"], nlohmann::json::array({1, 2}));
  EXPECT_EQ(records[1]["sql"],
            "a\xef\xbf\xbd"
            "b");
}

TEST_F(AuditPgSinkTest, BadOptionsAreRejected) {
  AuditPgOptions o = options();
  o.table = "audit; DROP TABLE x";
  EXPECT_EQ(AuditPgSink::start(o).status().code(), StatusCode::kInvalidArgument);
  o = options();
  o.spill_path.clear();
  EXPECT_FALSE(AuditPgSink::start(o).is_ok());
  o = options();
  o.table = "audit.events_2026";
  EXPECT_TRUE(AuditPgSink::start(o).is_ok());
}

}  // namespace
}  // namespace pgwarden::audit_pg
