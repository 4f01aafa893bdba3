// The upstream PostgreSQL dies under live sessions (`pg_ctl stop -m immediate`) and starts
// again, with real processes (docs/operations.md, "Upstream restarts"): the sandbox PostgreSQL,
// pgwarden-cp, pgwarden-dp and libpq clients. At the moment of the crash one session is inside
// a transaction, one inside COPY FROM STDIN, one reads a result that streams rows, one waits for
// a long statement, one is inside a transaction on a transaction-pooled target, and pooled
// sessions hold idle server connections in the pool. Checked:
//   * every client with work upstream gets an ErrorResponse (PostgreSQL's own 57P01 warning and
//     the gateway's FATAL 08006) and a closed connection within a deadline: no hang;
//   * nothing of the open transactions and the COPY is in the database after the restart;
//   * the recordings say what happened: a statement cut by the crash has a completion record
//     with the error 08006 (never a clean completion), then the upstream_closed error and the
//     seal;
//   * once PostgreSQL is back, new sessions work without restarting pgwarden, and the pool hands
//     out no dead server connection (an idle pooled session and new ones all run statements
//     at the first try).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/integration/gateway_harness.h"
#include "tests/integration/recordings.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kPoolSize = 3;

// What libpq reported outside a result (errors that arrive between queries are notices).
struct Notices {
  std::vector<std::string> sqlstates;
  std::string message;
};

void on_notice(void* arg, const PGresult* r) {
  auto* n = static_cast<Notices*>(arg);
  const char* st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (st != nullptr) n->sqlstates.push_back(st);
  if (msg != nullptr) n->message += std::string(msg) + "\n";
}

struct Client {
  Conn conn;
  Notices notices;
  std::vector<std::string> result_sqlstates;  // of the results PQgetResult returned
  std::string result_messages;
  // Everything the client was told, in order: result errors then notices.
  bool told(const std::string& state) const {
    for (const auto& s : result_sqlstates) {
      if (s == state) return true;
    }
    for (const auto& s : notices.sqlstates) {
      if (s == state) return true;
    }
    return false;
  }
};

class UpstreamRestartTest : public SharedGatewayTest<UpstreamRestartTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.extra_service_keys = {"tx", "copy", "stream", "sleep", "pooltx", "poolidle", "after", "held"};
    o.extra_targets_json =
        json{{"demo_pool", {{"pool_mode", "transaction"}, {"pool_size", kPoolSize}}}}.dump();
    return o;
  }

 protected:
  std::unique_ptr<Client> connect(const std::string& key, const std::string& extra = "") {
    auto c = std::make_unique<Client>();
    c->conn.reset(PQconnectdb(gw_->conninfo_as(key, extra).c_str()));
    EXPECT_EQ(PQstatus(c->conn.get()), CONNECTION_OK) << PQerrorMessage(c->conn.get());
    PQsetNoticeReceiver(c->conn.get(), on_notice, &c->notices);
    return c;
  }

  static void exec_ok(Client& c, const std::string& sql, ExecStatusType want) {
    Res r(PQexec(c.conn.get(), sql.c_str()));
    EXPECT_EQ(PQresultStatus(r.get()), want) << sql << ": " << PQresultErrorMessage(r.get());
  }

  // Drains every result of the query in flight until libpq has none or the connection broke
  // (noting each result's SQLSTATE); false when that did not happen within `timeout_ms`.
  static bool drain(Client& c, int timeout_ms) {
    PGconn* conn = c.conn.get();
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < end) {
      if (PQconsumeInput(conn) == 0) {
        // The connection is gone; what was parsed before is still to be collected.
        while (PGresult* r = PQgetResult(conn)) {
          Res res(r);
          c.result_sqlstates.push_back(sqlstate(r));
          c.result_messages += PQresultErrorMessage(r);
        }
        return true;
      }
      while (PQisBusy(conn) == 0) {
        PGresult* r = PQgetResult(conn);
        if (r == nullptr) return true;
        Res res(r);
        c.result_sqlstates.push_back(sqlstate(r));
        c.result_messages += PQresultErrorMessage(r);
        if (PQresultStatus(r) == PGRES_COPY_IN) return true;
      }
      pollfd p{PQsocket(conn), POLLIN, 0};
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
      (void)::poll(&p, 1, std::max(left, 1));
    }
    return false;
  }

  // Waits until the server closes the (idle, from libpq's view) connection: what arrived
  // before the close lands in the notices. False when it stays open for `timeout_ms`.
  static bool wait_closed(Client& c, int timeout_ms) {
    PGconn* conn = c.conn.get();
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < end) {
      pollfd p{PQsocket(conn), POLLIN, 0};
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
      if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
      bool lost = PQconsumeInput(conn) == 0;
      (void)PQisBusy(conn);
      if (lost || PQstatus(conn) == CONNECTION_BAD) return true;
    }
    return false;
  }

  static int count(const std::string& sql) {
    auto n = gw_->pg().psql(sql);
    return n.is_ok() ? std::atoi(n->c_str()) : -1;
  }

  static bool statement_running(const std::string& marker) {
    return count("select count(*) from pg_stat_activity where query like '%" + marker +
                 "%' and state = 'active' and pid <> pg_backend_pid()") == 1;
  }
};

// Completion records of statements whose SQL contains `marker`.
std::vector<json> ends_of(const Recording& r, const std::string& marker) {
  std::vector<json> out;
  for (const json& rec : r.records) {
    if (rec.value("kind", "") == "statement" && rec.value("phase", "") == "end" &&
        rec.value("sql", "").find(marker) != std::string::npos) {
      out.push_back(rec);
    }
  }
  return out;
}

TEST_F(UpstreamRestartTest, ImmediateStopUnderLiveSessionsErrorsEveryClientAndRestartHeals) {
  ASSERT_TRUE(gw_->pg()
                  .psql("create table public.ur_rows (v text); "
                        "grant all on public.ur_rows to app_scram;")
                  .is_ok());
  // Mid-transaction.
  auto tx = connect("tx", "application_name=ur_tx");
  exec_ok(*tx, "begin", PGRES_COMMAND_OK);
  exec_ok(*tx, "insert into public.ur_rows values ('ur-tx-row')", PGRES_COMMAND_OK);
  // Mid-COPY FROM STDIN.
  auto copy = connect("copy", "application_name=ur_copy");
  {
    Res r(PQexec(copy->conn.get(), "copy public.ur_rows from stdin -- ur-copy"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_IN) << PQresultErrorMessage(r.get());
    for (int i = 0; i < 100; ++i) {
      std::string line = "ur-copy-row-" + std::to_string(i) + "\n";
      ASSERT_EQ(PQputCopyData(copy->conn.get(), line.data(), static_cast<int>(line.size())), 1);
    }
    ASSERT_EQ(PQflush(copy->conn.get()), 0);
  }
  // Rows streaming: the client reads a few rows of an endless result, then the crash.
  auto stream = connect("stream", "application_name=ur_stream");
  ASSERT_EQ(PQsendQuery(stream->conn.get(),
                        "select g, repeat('x', 200) as pad from generate_series(1, 100000000) g "
                        "-- ur-stream"),
            1);
  ASSERT_EQ(PQsetSingleRowMode(stream->conn.get()), 1);
  for (int i = 0; i < 10; ++i) {
    Res r(PQgetResult(stream->conn.get()));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_SINGLE_TUPLE) << PQresultErrorMessage(r.get());
  }
  // A statement that runs long.
  auto sleep = connect("sleep", "application_name=ur_sleep");
  ASSERT_EQ(PQsendQuery(sleep->conn.get(), "select pg_sleep(600), 'ur-sleep'"), 1);
  // Pooled: one session inside a transaction, one idle between transactions (its server
  // connection is back in the pool, with others).
  auto pooltx = connect("pooltx", "dbname=demo_pool application_name=ur_pool");
  auto poolidle = connect("poolidle", "dbname=demo_pool application_name=ur_pool");
  exec_ok(*poolidle, "select 1", PGRES_TUPLES_OK);
  exec_ok(*pooltx, "begin", PGRES_COMMAND_OK);
  exec_ok(*pooltx, "insert into public.ur_rows values ('ur-pool-row')", PGRES_COMMAND_OK);
  ASSERT_TRUE(eventually([&] { return statement_running("ur-sleep"); }, 10000));
  ASSERT_TRUE(eventually([&] { return statement_running("ur-stream"); }, 10000));
  ASSERT_EQ(count("select count(*) from pg_stat_activity where application_name = 'ur_tx' "
                  "and state = 'idle in transaction'"),
            1);

  // The sandbox runs with synchronous_commit off: make the table's creation survive the crash
  // (what the open transactions and the COPY wrote is not committed, so it cannot).
  ASSERT_TRUE(gw_->pg().psql("checkpoint").is_ok());
  ASSERT_TRUE(gw_->pg().stop_immediate().is_ok());
  std::fprintf(stderr, "[ upstream ] PostgreSQL stopped (immediate)\n");

  // Generous: a loaded two-core box; a hang would wait forever.
  constexpr int kDeadlineMs = 15000;
  // The streaming and the sleeping clients are inside a query: the error is its result.
  EXPECT_TRUE(drain(*stream, kDeadlineMs)) << "the streaming client hangs";
  EXPECT_TRUE(drain(*sleep, kDeadlineMs)) << "the sleeping client hangs";
  // The idle-in-transaction clients are told asynchronously and disconnected.
  EXPECT_TRUE(wait_closed(*tx, kDeadlineMs)) << "the client in a transaction was not told";
  EXPECT_TRUE(wait_closed(*pooltx, kDeadlineMs))
      << "the pooled client in a transaction was not told";
  // In COPY IN, libpq reads the error once the copy ends: it is the COPY's result.
  EXPECT_TRUE(wait_closed(*copy, kDeadlineMs)) << "the client in COPY was not told";
  (void)PQputCopyEnd(copy->conn.get(), nullptr);
  EXPECT_TRUE(drain(*copy, kDeadlineMs));
  for (Client* c : {stream.get(), sleep.get(), tx.get(), pooltx.get(), copy.get()}) {
    SCOPED_TRACE(PQparameterStatus(c->conn.get(), "application_name"));
    EXPECT_TRUE(c->told("08006")) << "results: " << c->result_messages
                                  << " notices: " << c->notices.message;
    EXPECT_EQ(PQstatus(c->conn.get()), CONNECTION_BAD);
  }
  // PostgreSQL's own last words (57P01 "terminating connection due to immediate shutdown
  // command") reach the client before the gateway's FATAL.
  EXPECT_TRUE(sleep->told("57P01")) << sleep->notices.message;

  // The pooled session that held no server connection stays logged in: while PostgreSQL is
  // down its statement gets an error (not a hang) and the session survives it.
  {
    Res r(PQexec(poolidle->conn.get(), "select 'ur-during-outage'"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
    std::fprintf(stderr, "[ upstream ] pooled statement while PostgreSQL is down: %s %s",
                 sqlstate(r.get()).c_str(), PQresultErrorMessage(r.get()));
    EXPECT_EQ(sqlstate(r.get()), "08006") << PQresultErrorMessage(r.get());
  }

  ASSERT_TRUE(gw_->pg().restart().is_ok());
  std::fprintf(stderr, "[ upstream ] PostgreSQL started again\n");

  // Nothing of the transactions or the COPY was committed.
  EXPECT_EQ(count("select count(*) from public.ur_rows"), 0);

  // The idle pooled session's next transactions run at the first try, as do new sessions on
  // both targets: more statements than the pool has connections, so every slot is reused.
  for (int i = 0; i < 2 * kPoolSize; ++i) {
    Res r(PQexec(poolidle->conn.get(), "select 'ur-after'"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  std::vector<std::unique_ptr<Client>> pooled;
  for (int i = 0; i < kPoolSize; ++i) {
    pooled.push_back(connect("after", "dbname=demo_pool"));
    exec_ok(*pooled.back(), "select 1", PGRES_TUPLES_OK);
  }
  auto after = connect("after");
  exec_ok(*after, "insert into public.ur_rows values ('ur-after-row')", PGRES_COMMAND_OK);
  EXPECT_EQ(count("select count(*) from public.ur_rows"), 1);

  // The recordings: a statement the crash cut has a completion record carrying 08006 (never a
  // clean one), then the session's upstream_closed error, session_end and the seal.
  struct Expect {
    const char* marker;
    bool cut;  // in flight at the crash
  };
  for (const Expect& e : {Expect{"ur-stream", true}, Expect{"ur-sleep", true},
                          Expect{"ur-copy", true}, Expect{"'ur-tx-row'", false}}) {
    SCOPED_TRACE(e.marker);
    std::vector<Recording> recs;
    ASSERT_TRUE(eventually([&] {
      recs = recordings_with(gw_->state_dir(), e.marker);
      return recs.size() == 1 && recs[0].report.sealed;
    })) << "no sealed recording";
    const Recording& r = recs[0];
    EXPECT_TRUE(r.report.ok) << r.report.reason;
    std::vector<json> ends = ends_of(r, e.marker);
    if (e.cut) {
      ASSERT_EQ(ends.size(), 1u) << "the cut statement has no completion record";
      ASSERT_TRUE(ends[0].contains("error")) << ends[0].dump();
      EXPECT_EQ(ends[0]["error"].value("sqlstate", ""), "08006") << ends[0].dump();
    } else {
      // It completed before the crash (its transaction was lost with the backend).
      ASSERT_EQ(ends.size(), 1u);
      EXPECT_FALSE(ends[0].contains("error")) << ends[0].dump();
    }
    bool closed = false;
    for (const json& rec : r.records) {
      if (rec.value("kind", "") == "error" && rec.value("code", "") == "upstream_closed") {
        closed = true;
      }
    }
    EXPECT_TRUE(closed) << "no upstream_closed record";
  }
}

// A statement held in the dataplane for its write-ahead record (cp stopped with SIGSTOP, so the
// record is not acknowledged) when PostgreSQL dies: the client is told at once (it does not wait
// for cp), the statement never runs, and its recording has no completion record that says it
// did.
TEST_F(UpstreamRestartTest, AStatementHeldForItsRecordWhenTheUpstreamDiesNeverRunsAndIsReported) {
  ASSERT_TRUE(gw_->pg()
                  .psql("create table if not exists public.ur_held (v text); "
                        "grant all on public.ur_held to app_scram;")
                  .is_ok());
  auto held = connect("held", "application_name=ur_held");
  // The shape's verdict is cached: the next one needs only its write-ahead record.
  exec_ok(*held, "insert into public.ur_held values ('ur-held-0')", PGRES_COMMAND_OK);
  // The sandbox runs with synchronous_commit off: make what committed survive the crash.
  ASSERT_TRUE(gw_->pg().psql("checkpoint").is_ok());
  gw_->signal_cp(SIGSTOP);
  struct Resume {
    ~Resume() { gw_->signal_cp(SIGCONT); }
  } resume;
  ASSERT_EQ(PQsendQuery(held->conn.get(), "insert into public.ur_held values ('ur-held-1')"), 1);
  ASSERT_EQ(PQflush(held->conn.get()), 0);
  ASSERT_TRUE(gw_->pg().stop_immediate().is_ok());
  EXPECT_TRUE(drain(*held, 15000)) << "the client waits although its upstream is gone";
  EXPECT_TRUE(held->told("08006")) << held->result_messages << held->notices.message;
  EXPECT_EQ(PQstatus(held->conn.get()), CONNECTION_BAD);
  gw_->signal_cp(SIGCONT);
  ASSERT_TRUE(gw_->pg().restart().is_ok());
  EXPECT_EQ(count("select count(*) from public.ur_held where v = 'ur-held-1'"), 0);
  EXPECT_EQ(count("select count(*) from public.ur_held where v = 'ur-held-0'"), 1);
  std::vector<Recording> recs;
  ASSERT_TRUE(eventually([&] {
    recs = recordings_with(gw_->state_dir(), "'ur-held-0'");
    return recs.size() == 1 && recs[0].report.sealed;
  })) << "no sealed recording";
  EXPECT_TRUE(recs[0].report.ok) << recs[0].report.reason;
  for (const json& end : ends_of(recs[0], "'ur-held-1'")) {
    EXPECT_TRUE(end.contains("error")) << "recorded as completed: " << end.dump();
  }
  // And the gateway serves new sessions.
  auto after = connect("after");
  exec_ok(*after, "insert into public.ur_held values ('ur-held-after')", PGRES_COMMAND_OK);
}

}  // namespace
}  // namespace pgwarden::testing
