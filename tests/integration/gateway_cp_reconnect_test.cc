// The dp <-> cp channel breaks while both processes live, and the dataplane dies, with real
// processes (docs/operations.md, "Control-plane restarts" and "Channel reconnects"):
//  - the control plane's end of every dataplane connection is shut down from outside (the
//    test takes cp's socket with pidfd_getfd(2) and calls shutdown(2) on it: cp sees its
//    connection end exactly as when it closes it itself after a protocol error). Sessions
//    whose policy requires full recording keep running, every statement is recorded exactly
//    once, in order, and each recording carries a `session_resumed` marker per break;
//  - results a statement produced while cp was down (kill -9) are not silently missing: the
//    dataplane keeps them and they are recorded once cp is back, and what does not fit in
//    what it keeps (8 MiB) is counted in a `recording_gap` record after the session_resumed;
//  - kill -9 of the dataplane: cp ends its sessions at once with a `session_end` that says
//    the session ended abnormally, and seals them; `sessions verify` passes;
//  - SIGHUP reloads of cp while the same sessions run statements as fast as they can.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/insert_load.h"
#include "tests/integration/recordings.h"

namespace pgwarden::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int kCpWaitMs = 10000;

// The pid of the process listening on Unix socket `path` (SO_PEERCRED of a connection to it).
pid_t listener_pid(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  pid_t pid = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) pid = cred.pid;
  }
  ::close(fd);
  return pid;
}

// Shuts down, inside process `pid`, every connected socket accepted on Unix socket `path`:
// the process sees its connections end as if it had closed them. Returns how many.
int shutdown_accepted_sockets(pid_t pid, const std::string& path) {
  std::set<std::string> inodes;  // connected sockets bound to `path`: the accepted ones
  std::ifstream unix_table("/proc/net/unix");
  std::string line;
  std::getline(unix_table, line);
  while (std::getline(unix_table, line)) {
    std::istringstream in(line);
    std::string num, refcount, protocol, flags, type, st, inode, name;
    in >> num >> refcount >> protocol >> flags >> type >> st >> inode >> name;
    if (name == path && st == "03") inodes.insert("socket:[" + inode + "]");
  }
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return -1;
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code lec;
    std::string target = fs::read_symlink(e.path(), lec).string();
    if (lec || inodes.count(target) == 0) continue;
    int theirs = std::stoi(e.path().filename().string());
    int mine = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, theirs, 0));
    if (mine < 0) continue;
    if (::shutdown(mine, SHUT_RDWR) == 0) ++n;
    ::close(mine);
  }
  ::close(pidfd);
  return n;
}

class CpReconnectTest : public SharedGatewayTest<CpReconnectTest> {
 public:
  static constexpr const char* kPolicy =
      R"({"name": "agents", "allowed_kinds": ["select", "insert"],
          "allowed_relations": ["public.*", "pg_catalog.*"],
          "allowed_functions": ["pg_catalog.generate_series", "pg_catalog.repeat"],
          "read_only": false, "rule_sets": ["deny", "approve"],
          "recording": {"level": "full", "required": true}})";
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = kPolicy;
    o.cp_unavailable_wait_ms = kCpWaitMs;
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest::SetUpTestSuite();
    if (gw_ == nullptr) return;
    auto made = gw_->pg().psql(
        "CREATE TABLE public.cpc_t (v text PRIMARY KEY); GRANT ALL ON public.cpc_t TO app_scram;"
        "CREATE TABLE public.cpc_lock (k int); INSERT INTO public.cpc_lock VALUES (1);"
        "GRANT ALL ON public.cpc_lock TO app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }

  // Breaks every dp <-> cp connection from cp's side; true when there was one to break.
  static bool break_channels() {
    pid_t cp = listener_pid(gw_->dir() + "/cp.sock");
    return cp > 0 && shutdown_accepted_sockets(cp, gw_->dir() + "/cp.sock") > 0;
  }
};

// Four recording-required sessions insert rows (values `tag`-N-M) in a tight loop while
// `fault` is injected `rounds` times, each after every session progressed. Then: no statement
// failed, no session ended, every row PostgreSQL has was recorded exactly once (and nothing
// that failed ran), each recording verifies, is sealed once the sessions close and has
// `resumed_per_round` x rounds session_resumed records with reason `resumed_reason`.
void inserters_through(GatewayHarness& gw, const std::string& tag, int rounds,
                       const std::function<bool()>& fault, int resumed_per_round,
                       const std::string& resumed_reason) {
  constexpr int kSessions = 4;
  InsertLoad load;
  ASSERT_TRUE(load.start(gw.conninfo(), "public.cpc_t", tag + "-", kSessions));
  auto& clients = load.clients;
  bool progressed = load.progress(20);
  int injected = 0;
  for (int round = 0; round < rounds && progressed; ++round) {
    if (fault()) ++injected;  // while every session is mid-loop
    progressed = load.progress_from(load.counts(), 20);
  }
  load.stop();
  ASSERT_TRUE(progressed) << "a session stopped making progress after a fault";
  ASSERT_EQ(injected, rounds);

  std::set<std::string> inserted;
  for (auto& c : clients) {
    EXPECT_FALSE(c->dead) << c->prefix << " ended";
    for (const Inserter::Failure& f : c->failures) {
      ADD_FAILURE() << c->prefix << ": " << f.sqlstate << " " << f.message;
    }
    inserted.insert(c->succeeded.begin(), c->succeeded.end());
  }
  for (auto& c : clients) c->conn.reset();  // the sessions end: their recordings are sealed

  const std::string marker = "'" + tag + "-";
  std::map<std::string, int> recorded;
  std::vector<Recording> recs;
  ASSERT_TRUE(eventually([&] {
    recs = recordings_with(gw.state_dir(), marker);
    if (recs.size() != static_cast<size_t>(kSessions)) return false;
    for (const Recording& r : recs) {
      if (!r.report.sealed) return false;
    }
    return true;
  })) << recs.size()
      << " sealed recordings";
  for (const Recording& r : recs) {
    EXPECT_TRUE(r.report.ok) << r.path << ": " << r.report.reason;
    EXPECT_EQ(count_kind(r, "session_resumed"), static_cast<size_t>(rounds * resumed_per_round))
        << r.path;
    EXPECT_EQ(count_kind(r, "session_start"), 1u) << r.path;
    for (const json& rec : r.records) {
      if (rec.value("kind", "") == "session_resumed") {
        EXPECT_EQ(rec.value("reason", ""), resumed_reason);
      }
      if (rec.value("kind", "") != "statement" || rec.contains("phase")) continue;
      std::string sql = rec.value("sql", "");
      auto at = sql.find(marker);
      if (at != std::string::npos) ++recorded[sql.substr(at + 1, sql.find('\'', at + 1) - at - 1)];
    }
    auto v = recording::verify_session(r.path, nullptr, std::nullopt);
    ASSERT_TRUE(v.is_ok());
    EXPECT_EQ(v->state, "sealed") << r.path << ": " << v->detail;
  }
  auto rows = gw.pg().psql("SELECT v FROM public.cpc_t WHERE v LIKE '" + tag + "-%'");
  ASSERT_TRUE(rows.is_ok());
  std::istringstream in(*rows);
  size_t ran = 0;
  for (std::string v; std::getline(in, v);) {
    if (v.rfind(tag + "-", 0) != 0) continue;
    ++ran;
    EXPECT_EQ(recorded[v], 1) << v << " recorded " << recorded[v] << " times";
  }
  EXPECT_EQ(ran, inserted.size());
  for (const auto& [v, n] : recorded) EXPECT_EQ(n, 1) << v << " recorded " << n << " times";
  std::printf("[ %s ] %d sessions, %d faults, %zu statements, each recorded once\n", tag.c_str(),
              kSessions, rounds, ran);
}

TEST_F(CpReconnectTest,
       RecordingRequiredSessionsSurviveChannelBreaksWithEveryStatementRecordedOnce) {
  inserters_through(*gw_, "cpc-break", 5, break_channels, 1,
                    "dataplane reconnected to the control plane");
}

// The same class of race: configuration reloads (SIGHUP to cp: a new policy version, every
// cached verdict escalated again) while the sessions run statements as fast as they can.
TEST_F(CpReconnectTest, SighupReloadsDuringHeavyTrafficLoseNothing) {
  auto reloads = [] {
    const std::string log = gw_->cp_log();
    size_t n = 0;
    for (size_t at = log.find("SIGHUP: reloading"); at != std::string::npos;
         at = log.find("SIGHUP: reloading", at + 1)) {
      ++n;
    }
    return n;
  };
  inserters_through(
      *gw_, "cpc-hup", 5,
      [&] {
        // One reload per round (signals sent faster than cp handles them would coalesce).
        const size_t before = reloads();
        gw_->signal_cp(SIGHUP);
        return eventually([&] { return reloads() > before; });
      },
      0, "");
}

// Runs `sql` (which reads public.cpc_lock; its shape and mask plan cached by a first run)
// while a direct connection holds that table locked, so that it waits upstream after its
// write-ahead record was written; kills cp, then releases the lock: its results reach the
// client while cp is down. Then runs `after` once cp is back. Returns the session's recording.
Recording run_through_cp_crash(GatewayHarness& gw, const std::string& sql, int expect_rows,
                               const std::string& after) {
  Recording out;
  Conn c(PQconnectdb(gw.conninfo().c_str()));
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res first(PQexec(c.get(), sql.c_str()));
  EXPECT_EQ(PQresultStatus(first.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  Conn locker(PQconnectdb(gw.pg().conninfo().c_str()));
  Res locked(PQexec(locker.get(), "BEGIN; LOCK TABLE public.cpc_lock IN ACCESS EXCLUSIVE MODE"));
  EXPECT_EQ(PQresultStatus(locked.get()), PGRES_COMMAND_OK) << PQerrorMessage(locker.get());
  EXPECT_EQ(PQsendQuery(c.get(), sql.c_str()), 1);
  auto statements = [&](const Recording& r) {
    size_t n = 0;
    for (const json& rec : r.records) {
      n += rec.value("kind", "") == "statement" && !rec.contains("phase") &&
           rec.value("sql", "") == sql;
    }
    return n;
  };
  std::vector<Recording> recs;
  EXPECT_TRUE(eventually([&] {  // the second run's write-ahead record is in the file
    recs = recordings_with(gw.state_dir(), sql.substr(0, 40));
    return recs.size() == 1 && statements(recs[0]) == 2;
  }));
  EXPECT_TRUE(gw.stop_cp().is_ok());  // kill -9 while the statement waits upstream
  Res committed(PQexec(locker.get(), "COMMIT"));
  EXPECT_EQ(PQresultStatus(committed.get()), PGRES_COMMAND_OK) << PQerrorMessage(locker.get());
  int rows = 0;
  while (Res r{PQgetResult(c.get())}) {
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    rows += PQntuples(r.get());
  }
  EXPECT_EQ(rows, expect_rows);  // the client saw its rows while cp was down
  EXPECT_TRUE(gw.start_cp().is_ok());
  // The next statement waits for cp and the session's re-registration.
  Res next(PQexec(c.get(), after.c_str()));
  EXPECT_EQ(PQresultStatus(next.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  recs = recordings_with(gw.state_dir(), sql.substr(0, 40));
  EXPECT_EQ(recs.size(), 1u);
  if (!recs.empty()) out = std::move(recs[0]);
  return out;
}

// Index of the first record matching `pred` at or after `from`; -1 when none.
int find_record(const Recording& r, size_t from, const std::function<bool(const json&)>& pred) {
  for (size_t i = from; i < r.records.size(); ++i) {
    if (pred(r.records[i])) return static_cast<int>(i);
  }
  return -1;
}

TEST_F(CpReconnectTest, ResultsProducedWhileCpIsDownAreRecordedOnceItIsBack) {
  const std::string sql = "SELECT 'cpc-late' AS m, g FROM generate_series(1, 5) g, public.cpc_lock";
  Recording r = run_through_cp_crash(*gw_, sql, 5, "SELECT 'cpc-late-next'");
  ASSERT_FALSE(r.records.empty());
  EXPECT_TRUE(r.report.ok) << r.report.reason;
  auto kind = [](const char* k) { return [k](const json& x) { return x.value("kind", "") == k; }; };
  const int resumed = find_record(r, 0, kind("session_resumed"));
  ASSERT_GE(resumed, 0);
  // The rows and the completion the dp kept while cp was down follow the restart marker, in
  // order, before the next statement; nothing is missing, so there is no gap record.
  const int rows = find_record(r, resumed, kind("rows"));
  const int end = find_record(r, resumed, [&](const json& x) {
    return x.value("kind", "") == "statement" && x.value("phase", "") == "end" &&
           x.value("sql", "") == sql;
  });
  const int next = find_record(r, resumed, [](const json& x) {
    return x.value("sql", "").find("'cpc-late-next'") != std::string::npos;
  });
  ASSERT_GT(rows, resumed);
  EXPECT_EQ(r.records[rows]["rows"].size(), 5u) << r.records[rows].dump();
  EXPECT_GT(end, rows);
  EXPECT_GT(next, end);
  EXPECT_EQ(find_record(r, 0, kind("recording_gap")), -1);
}

TEST_F(CpReconnectTest, ResultsBeyondWhatTheDataplaneKeepsAreRecordedAsAGap) {
  // ~12 MB of recorded rows (1000 rows of 12,000 bytes, the row cap) while cp is down: more
  // than the 8 MiB of events a dataplane worker keeps for it.
  const std::string sql =
      "SELECT 'cpc-gap' AS m, repeat('x', 12000) FROM generate_series(1, 1000) g, "
      "public.cpc_lock";
  Recording r = run_through_cp_crash(*gw_, sql, 1000, "SELECT 'cpc-gap-next'");
  ASSERT_FALSE(r.records.empty());
  EXPECT_TRUE(r.report.ok) << r.report.reason;
  auto kind = [](const char* k) { return [k](const json& x) { return x.value("kind", "") == k; }; };
  const int resumed = find_record(r, 0, kind("session_resumed"));
  ASSERT_GE(resumed, 0);
  const int gap = find_record(r, resumed, kind("recording_gap"));
  ASSERT_EQ(gap, resumed + 1) << "no recording_gap right after the session_resumed record";
  const json& g = r.records[gap];
  // The last rows records did not fit; the small completion that came after them did.
  EXPECT_GE(g["kinds"].value("rows", 0), 1) << g.dump();
  EXPECT_EQ(g.value("records", 0), g["kinds"].value("rows", 0)) << g.dump();
  const int end = find_record(r, gap, [&](const json& x) {
    return x.value("kind", "") == "statement" && x.value("phase", "") == "end" &&
           x.value("sql", "") == sql;
  });
  ASSERT_GT(end, gap);
  EXPECT_EQ(r.records[end].value("rows", 0), 1000) << r.records[end].dump();
  EXPECT_EQ(g.value("not_run", -1), 0) << g.dump();
  EXPECT_GT(g.value("first_ts", int64_t{0}), 0) << g.dump();
  EXPECT_GE(g.value("last_ts", int64_t{0}), g.value("first_ts", int64_t{0}));
  // What was kept is recorded after it; the rows recorded plus the rows the gap counts cover
  // the 1000 rows the client saw (each rows record holds at most 100 rows).
  size_t recorded_rows = 0;
  for (size_t i = gap; i < r.records.size(); ++i) {
    if (r.records[i].value("kind", "") == "rows") recorded_rows += r.records[i]["rows"].size();
  }
  EXPECT_GT(recorded_rows, 0u);
  EXPECT_LT(recorded_rows, 1000u);
  const int next = find_record(r, gap, [](const json& x) {
    return x.value("sql", "").find("'cpc-gap-next'") != std::string::npos;
  });
  EXPECT_GT(next, end);
  auto v = recording::verify_session(r.path, nullptr, true);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->gaps, 1u) << v->detail;
  EXPECT_EQ(v->missing_records, g.value("records", uint64_t{0}));
}

// A session runs `SELECT '<marker>'`, then the dp gets kill -9: within `timeout_ms` cp ends
// the session (session_end whose reason contains `reason_part` and "ended abnormally") and
// seals its recording. The dp is started again for the suite's other tests.
void killed_dataplane_session_is_sealed(GatewayHarness& gw, const std::string& marker,
                                        const std::string& reason_part, int timeout_ms) {
  Conn c(PQconnectdb(gw.conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res r(PQexec(c.get(), ("SELECT '" + marker + "'").c_str()));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  gw.signal_dp(SIGKILL);
  ASSERT_TRUE(gw.wait_dp_exit(10000));
  std::vector<Recording> recs;
  bool sealed = eventually(
      [&] {
        recs = recordings_with(gw.state_dir(), "'" + marker + "'");
        return recs.size() == 1 && recs[0].report.sealed;
      },
      timeout_ms);
  Status restarted = gw.start_dp();
  ASSERT_TRUE(restarted.is_ok()) << restarted.to_string();
  ASSERT_TRUE(sealed) << "the session's recording was not sealed after kill -9 of the dp";
  const Recording& rec = recs[0];
  ASSERT_GE(rec.records.size(), 2u);
  const json& end = rec.records[rec.records.size() - 2];
  EXPECT_EQ(end.value("kind", ""), "session_end");
  EXPECT_NE(end.value("reason", "").find(reason_part), std::string::npos) << end.dump();
  EXPECT_NE(end.value("reason", "").find("ended abnormally"), std::string::npos) << end.dump();
  auto v = recording::verify_session(rec.path, nullptr, false);
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->state, "sealed") << v->detail;
}

TEST_F(CpReconnectTest, KilledDataplaneSessionsEndAbnormallyAndAreSealed) {
  killed_dataplane_session_is_sealed(*gw_, "cpc-dp-kill", "the dataplane process (pid ", 20000);
}

// pgwarden-cp in a pid namespace of its own: the dataplane is outside it, so SO_PEERCRED gives
// cp pid 0 (no pidfd to watch). The dataplane's life pipe, passed with its hello, still tells
// cp the moment the process is gone: kill -9 of the dp seals its sessions at once, not after
// the 30 s reattach window.
class CpInOwnPidNamespaceTest : public SharedGatewayTest<CpInOwnPidNamespaceTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = CpReconnectTest::kPolicy;
    o.cp_unavailable_wait_ms = kCpWaitMs;
    o.cp_command_prefix = {"/usr/bin/unshare", "--pid", "--fork", "--kill-child", "--"};
    return o;
  }
  static void SetUpTestSuite() {
    if (::geteuid() != 0 || ::access("/usr/bin/unshare", X_OK) != 0) return;
    SharedGatewayTest::SetUpTestSuite();
  }
};

TEST_F(CpInOwnPidNamespaceTest, KilledDataplaneWhosePidCpCannotSeeIsKnownDeadAtOnce) {
  if (gw_ == nullptr) {
    GTEST_SKIP() << "needs root and /usr/bin/unshare to run pgwarden-cp in its own pid namespace";
  }
  // Well within the 30 s a dp that is not known dead gets; the reason shows that cp really
  // could not see the pid.
  killed_dataplane_session_is_sealed(*gw_, "cpc-pidns-kill",
                                     "pid namespace the control plane cannot see", 10000);
}

}  // namespace
}  // namespace pgwarden::testing
