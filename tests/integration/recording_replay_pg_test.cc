// Recording + replay with real data: rows fetched from the sandbox are recorded as a session
// would record them, and the replayed tables are byte-identical to psql's own aligned output
// for the same queries.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <sstream>

#include "controlplane/recording/recorder.h"
#include "controlplane/recording/replay.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden {
namespace {

namespace fs = std::filesystem;

// Records `sql`'s result as "rows" then "statement" events.
void record_query(PGconn* conn, recording::Recorder& rec, const std::string& session,
                  const std::string& sql) {
  PGresult* r = PQexec(conn, sql.c_str());
  ASSERT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
  nlohmann::json columns = nlohmann::json::array();
  for (int c = 0; c < PQnfields(r); ++c) {
    columns.push_back({{"name", PQfname(r, c)}, {"type_oid", PQftype(r, c)}});
  }
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < PQntuples(r); ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (int c = 0; c < PQnfields(r); ++c) {
      if (PQgetisnull(r, i, c)) {
        row.push_back(nullptr);
      } else {
        row.push_back(PQgetvalue(r, i, c));
      }
    }
    rows.push_back(row);
  }
  ASSERT_TRUE(rec.try_append(session, "rows", {{"columns", columns}, {"rows", rows}}).is_ok());
  ASSERT_TRUE(
      rec.try_append(
             session, "statement",
             {{"sql", sql}, {"verdict", "allow"}, {"rows", PQntuples(r)}, {"tag", PQcmdStatus(r)}})
          .is_ok());
  PQclear(r);
}

std::string psql_aligned(const testing::PgSandbox& pg, const std::string& sql) {
  std::string cmd = "runuser -u postgres -- psql -X -q -h " + pg.get("PGW_SOCKET_DIR") + " -p " +
                    pg.get("PGPORT") + " -U postgres -d demo -c \"" + sql + "\"";
  auto out = testing::run_command(cmd);
  EXPECT_TRUE(out.is_ok()) << out.status().to_string();
  return out.is_ok() ? *out : "";
}

TEST(RecordingReplayPg, ReplayedTablesMatchPsqlOutputForRealRows) {
  testing::PgSandbox pg;
  ASSERT_TRUE(pg.start().is_ok());
  char tmpl[] = "/tmp/pgw-replay-it-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  PGconn* conn = PQconnectdb(pg.conninfo("app_scram").c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);

  const std::vector<std::string> queries = {
      "SELECT id, full_name, email, notes FROM crm.customers ORDER BY id",
      "SELECT customer_id, sum(amount) AS total, count(*) FROM crm.orders GROUP BY 1 ORDER BY 1",
      "SELECT k, v FROM public.kv",
  };
  {
    auto rec = recording::Recorder::open({.dir = dir});
    ASSERT_TRUE(rec.is_ok());
    recording::SessionStart s;
    s.session_id = "replay-1";
    s.identity = "agent-7";
    s.target = "demo";
    ASSERT_TRUE((*rec)->start_session(s).is_ok());
    for (const auto& q : queries) record_query(conn, **rec, "replay-1", q);
    ASSERT_TRUE((*rec)->try_append("replay-1", "session_end", nlohmann::json::object()).is_ok());
  }
  PQfinish(conn);

  std::ostringstream out;
  auto report = recording::render_replay(dir + "/replay-1.jsonl", out);
  ASSERT_TRUE(report.is_ok());
  EXPECT_TRUE(report->ok);
  std::string replay = out.str();
  for (const auto& q : queries) {
    std::string prompt = "demo=> " + q + "\n";
    size_t at = replay.find(prompt);
    ASSERT_NE(at, std::string::npos) << q;
    size_t begin = at + prompt.size();
    size_t end = replay.find("\n\n", begin);
    ASSERT_NE(end, std::string::npos);
    std::string ours = replay.substr(begin, end - begin + 1);
    std::string theirs = psql_aligned(pg, q);
    while (theirs.size() > 1 && theirs.substr(theirs.size() - 2) == "\n\n") theirs.pop_back();
    EXPECT_EQ(ours, theirs) << "query: " << q;
  }
  auto list = recording::list_recordings(dir);
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].statements, 3u);
  EXPECT_EQ((*list)[0].identity, "agent-7");
  EXPECT_GT((*list)[0].end_ms, 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pgwarden
