// AuditPgSink against the sandbox cluster: records arrive in order, keep arriving across a
// server stop/start (spilled to disk meanwhile), and the caller is never blocked.
#include "controlplane/audit_pg/audit_pg_sink.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <thread>

#include "tests/support/pg_sandbox.h"

namespace pgwarden {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const char kPgCtl[] = "/usr/lib/postgresql/15/bin/pg_ctl";

Status pg_ctl(const testing::PgSandbox& pg, const std::string& action) {
  std::string dir = pg.get("PGW_SANDBOX_DIR");
  std::string cmd =
      "runuser -u postgres -- " + std::string(kPgCtl) + " -D " + dir + "/data -w -t 30 ";
  if (action == "stop") {
    cmd += "-m fast stop";
  } else {
    cmd += "-l " + dir + "/server.log -o '-p " + pg.get("PGPORT") + "' start";
  }
  auto out = testing::run_command(cmd + " >/dev/null 2>&1");
  return out.is_ok() ? Status::ok() : out.status();
}

nlohmann::json record(int n) {
  return {{"event", n % 2 ? "statement" : "session_start"},
          {"ts", int64_t{1'767'225'600'000} + n},
          {"session_id", "s" + std::to_string(n % 7)},
          {"n", n}};
}

TEST(AuditPgSinkIntegration, RecordsSurviveAServerRestartAndArriveInOrder) {
  testing::PgSandbox pg;
  ASSERT_TRUE(pg.start().is_ok());
  char tmpl[] = "/tmp/pgw-auditpg-it-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;

  audit_pg::AuditPgOptions o;
  o.conninfo = pg.conninfo("app_scram");
  o.spill_path = dir + "/audit-pg-spill.jsonl";
  o.memory_capacity = 50;
  o.batch_size = 64;
  o.retry_min = 50ms;
  o.retry_max = 500ms;
  o.connect_timeout_s = 2;
  auto sink = audit_pg::AuditPgSink::start(o);
  ASSERT_TRUE(sink.is_ok());

  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*sink)->submit(record(i)));
  ASSERT_TRUE((*sink)->flush(20s));
  EXPECT_TRUE((*sink)->connected());
  EXPECT_EQ(*pg.psql("SELECT count(*) FROM pgwarden_audit"), "100\n");

  ASSERT_TRUE(pg_ctl(pg, "stop").is_ok());
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 100; i < 400; ++i) ASSERT_TRUE((*sink)->submit(record(i)));
  // A submit that waited for the database would wait at least one retry (retry_min 50 ms)
  // for each of the 250 records beyond memory_capacity: >= 12 s. 3 s leaves room for a loaded
  // machine (a 200 ms bound failed under load) and still catches that.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << "submit blocked while the DB is down";
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while ((*sink)->records_spilled() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GT((*sink)->records_spilled(), 0u);
  EXPECT_GT(fs::file_size(o.spill_path), 0u);
  EXPECT_FALSE((*sink)->flush(100ms));
  // A record with a NUL character (jsonb cannot store U+0000) while still down.
  ASSERT_TRUE(
      (*sink)->submit({{"event", "statement"}, {"n", 400}, {"sql", std::string("x\0y", 3)}}));

  ASSERT_TRUE(pg_ctl(pg, "start").is_ok());
  ASSERT_TRUE((*sink)->flush(60s)) << "records still pending after restart";
  EXPECT_EQ(fs::file_size(o.spill_path), 0u);
  auto order = pg.psql("SELECT string_agg(record->>'n', ',' ORDER BY id) FROM pgwarden_audit");
  ASSERT_TRUE(order.is_ok()) << order.status().to_string();
  std::string expected;
  for (int i = 0; i <= 400; ++i) expected += (i ? "," : "") + std::to_string(i);
  EXPECT_EQ(*order, expected + "\n");
  EXPECT_EQ(*pg.psql("SELECT count(DISTINCT record->>'n') FROM pgwarden_audit"), "401\n");
  EXPECT_EQ(
      *pg.psql("SELECT event || ' ' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') "
               "FROM pgwarden_audit WHERE record->>'n' = '3'"),
      "statement 2026-01-01 00:00:00.003\n");
  EXPECT_EQ((*sink)->records_rejected(), 0u);
  EXPECT_EQ((*sink)->records_dropped(), 0u);
  sink->reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pgwarden
