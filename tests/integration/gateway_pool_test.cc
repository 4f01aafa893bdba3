// Transaction pooling (target pool_mode "transaction", docs/dataplane.md "Transaction
// pooling") against the sandbox PostgreSQL through real pgwarden-cp and pgwarden-dp: many agent
// sessions over a few upstream connections, protocol-level prepared statements re-prepared on
// whatever connection a transaction lands on, session state refused with 0A000, a client killed
// mid-transaction leaves nothing open upstream, pool exhaustion waits then serves or times out
// with 53300, masking per agent, cancel reaching the backend that runs the statement.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/fd_limit.h"
#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

constexpr int kPoolSize = 5;

constexpr const char* kPoolPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "insert", "update", "delete", "transaction",
        "set", "show", "listen", "ddl_create", "prepare", "deallocate"],
        "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
        "allowed_functions": ["pg_catalog.pg_sleep", "pg_catalog.pg_backend_pid",
                              "pg_catalog.pg_advisory_lock", "pg_catalog.pg_advisory_xact_lock",
                              "pg_catalog.set_config", "pg_catalog.current_setting"],
        "read_only": false, "rule_sets": ["deny", "approve"],
        "masks": [{"column": "crm.customers.email", "function": "email"}]})";

Conn connect_to(GatewayHarness* gw) {
  Conn c(PQconnectdb(gw->conninfo().c_str()));
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  return c;
}

std::string scalar(PGconn* c, const char* sql) {
  Res r(PQexec(c, sql));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
      << sql << ": " << PQresultErrorMessage(r.get());
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) < 1) return "";
  return PQgetvalue(r.get(), 0, 0);
}

void exec_ok(PGconn* c, const char* sql) {
  Res r(PQexec(c, sql));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK)
      << sql << ": " << PQresultErrorMessage(r.get());
}

// psql's answer without its trailing newline.
std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Backends of the gateway's upstream role, asked of the sandbox directly.
int upstream_backends(GatewayHarness* gw, const std::string& extra_where = "") {
  auto out = gw->pg().psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_scram'" +
                           extra_where);
  EXPECT_TRUE(out.is_ok()) << out.status().to_string();
  return out.is_ok() ? std::stoi(*out) : -1;
}

// A table the agents write, owned by the sandbox's superuser and granted to the gateway's
// upstream role.
void create_agent_table(GatewayHarness* gw, const std::string& table) {
  auto made = gw->pg().psql("CREATE TABLE " + table + " (agent int, i int); GRANT ALL ON " + table +
                            " TO app_scram");
  ASSERT_TRUE(made.is_ok()) << made.status().to_string();
}

// One dp worker (pool_size is the whole pool) and the demo target in transaction pooling.
GatewayOptions pooled_gateway(int pool_size, int pool_wait_timeout_ms) {
  GatewayOptions o;
  o.policy_json = kPoolPolicy;
  o.workers = 1;
  o.target_extra_json = R"({"pool_mode": "transaction", "pool_size": )" +
                        std::to_string(pool_size) + R"(, "pool_wait_timeout_ms": )" +
                        std::to_string(pool_wait_timeout_ms) + "}";
  return o;
}

class GatewayPoolTest : public SharedGatewayTest<GatewayPoolTest> {
 public:
  static constexpr const char* kPolicy = kPoolPolicy;
  static GatewayOptions gateway_options() { return pooled_gateway(kPoolSize, 60000); }
  static void SetUpTestSuite() {
    SharedGatewayTest<GatewayPoolTest>::SetUpTestSuite();
    create_agent_table(gw_, "public.pool_t");
  }
};

TEST_F(GatewayPoolTest, FiftyAgentsOverFiveConnectionsAllGetTheirOwnResults) {
  constexpr int kAgents = 50;
  constexpr int kTransactions = 5;
  std::atomic<int> failures{0};
  std::atomic<int> max_backends{0};
  std::atomic<bool> running{true};
  std::thread sampler([&] {
    while (running.load()) {
      int n = upstream_backends(gw_);
      if (n > max_backends.load()) max_backends.store(n);
    }
  });
  // Logged in one after the other (50 logins at once are a login flood of their own); the
  // transactions then run all at once.
  std::vector<Conn> conns;
  for (int a = 0; a < kAgents; ++a) {
    conns.push_back(connect_to(gw_));
    ASSERT_EQ(PQstatus(conns.back().get()), CONNECTION_OK);
  }
  std::vector<std::thread> agents;
  for (int a = 0; a < kAgents; ++a) {
    agents.emplace_back([&, a] {
      PGconn* conn = conns[a].get();
      for (int i = 0; i < kTransactions; ++i) {
        std::string agent = std::to_string(1000 + a);
        Res b(PQexec(conn, "BEGIN"));
        std::string ins =
            "INSERT INTO public.pool_t VALUES (" + agent + ", " + std::to_string(i) + ")";
        Res r1(PQexec(conn, ins.c_str()));
        std::string q = "SELECT count(*) FROM public.pool_t WHERE agent = " + agent;
        Res r2(PQexec(conn, q.c_str()));
        Res e(PQexec(conn, "COMMIT"));
        if (PQresultStatus(r2.get()) != PGRES_TUPLES_OK ||
            std::string(PQgetvalue(r2.get(), 0, 0)) != std::to_string(i + 1) ||
            std::string(PQcmdStatus(e.get())) != "COMMIT") {
          ADD_FAILURE() << "agent " << a << " transaction " << i << ": "
                        << PQresultErrorMessage(r1.get()) << PQresultErrorMessage(r2.get())
                        << PQresultErrorMessage(e.get());
          ++failures;
          return;
        }
      }
    });
  }
  for (auto& t : agents) t.join();
  running = false;
  sampler.join();
  EXPECT_EQ(failures.load(), 0);
  auto total = gw_->pg().psql("SELECT count(*) FROM public.pool_t WHERE agent >= 1000");
  ASSERT_TRUE(total.is_ok());
  EXPECT_EQ(trimmed(*total), std::to_string(kAgents * kTransactions));
  // The upstream saw at most pool_size backends of the gateway's role (plus cp's catalog
  // connection, which uses the same role).
  EXPECT_LE(max_backends.load(), kPoolSize + 1);
  EXPECT_GE(max_backends.load(), 1);
}

TEST_F(GatewayPoolTest, PreparedStatementsFollowTheAgentAcrossPooledConnections) {
  constexpr int kClients = 12;  // more than the pool: transactions land on various backends
  std::vector<Conn> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_to(gw_));
    Res p(
        PQprepare(clients.back().get(), "add", "SELECT $1::int + 1, pg_backend_pid()", 1, nullptr));
    ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(p.get());
    // Another statement name per client, for the same text: the server shares it.
    Res p2(PQprepare(clients.back().get(), ("mine" + std::to_string(i)).c_str(),
                     "SELECT $1::int * 2", 1, nullptr));
    ASSERT_EQ(PQresultStatus(p2.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(p2.get());
  }
  std::set<std::string> backends;
  for (int round = 0; round < 5; ++round) {
    // Hold a few connections in open transactions so the others move around.
    std::vector<Conn> holders;
    for (int h = 0; h < round % 3; ++h) {
      holders.push_back(connect_to(gw_));
      exec_ok(holders.back().get(), "BEGIN");
      scalar(holders.back().get(), "SELECT 1");
    }
    for (int i = 0; i < kClients; ++i) {
      std::string v = std::to_string(round * 100 + i);
      const char* params[] = {v.c_str()};
      Res r(PQexecPrepared(clients[i].get(), "add", 1, params, nullptr, nullptr, 0));
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
      EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string(round * 100 + i + 1));
      backends.insert(PQgetvalue(r.get(), 0, 1));
      Res r2(PQexecPrepared(clients[i].get(), ("mine" + std::to_string(i)).c_str(), 1, params,
                            nullptr, nullptr, 0));
      ASSERT_EQ(PQresultStatus(r2.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r2.get());
      EXPECT_EQ(std::string(PQgetvalue(r2.get(), 0, 0)), std::to_string(2 * (round * 100 + i)));
      Res d(PQdescribePrepared(clients[i].get(), "add"));
      ASSERT_EQ(PQresultStatus(d.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(d.get());
      EXPECT_EQ(PQnfields(d.get()), 2);
    }
    for (auto& h : holders) exec_ok(h.get(), "COMMIT");
  }
  EXPECT_GT(backends.size(), 1u) << "the statements were never re-prepared elsewhere";
  // PostgreSQL's own answers for names the agent does not have / already has.
  Res dup(PQprepare(clients[0].get(), "add", "SELECT 2", 0, nullptr));
  EXPECT_EQ(sqlstate(dup.get()), "42P05") << PQresultErrorMessage(dup.get());
  const char* params[] = {"1"};
  Res unknown(PQexecPrepared(clients[0].get(), "mine1", 1, params, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(unknown.get()), "26000") << PQresultErrorMessage(unknown.get());
  // A failed Parse does not define the name.
  Res bad(PQprepare(clients[0].get(), "broken", "SELECT FROM WHERE", 0, nullptr));
  EXPECT_NE(PQresultStatus(bad.get()), PGRES_COMMAND_OK);
  Res later(PQprepare(clients[0].get(), "broken", "SELECT 3", 0, nullptr));
  EXPECT_EQ(PQresultStatus(later.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(later.get());
  EXPECT_EQ(scalar(clients[0].get(), "SELECT 7"), "7");
}

TEST_F(GatewayPoolTest, BindLargerThanMaxMessageBytesStreamsToTheMappedStatement) {
  Conn c = connect_to(gw_);
  Res p(PQprepare(c.get(), "len", "SELECT length($1::text)", 1, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(p.get());
  // Land the next transaction on another connection now and then: hold one meanwhile.
  Conn holder = connect_to(gw_);
  exec_ok(holder.get(), "BEGIN");
  EXPECT_EQ(scalar(holder.get(), "SELECT 1"), "1");
  std::string big(3 << 20, 'x');  // over max_message_bytes (1 MiB): streamed upstream
  const char* params[] = {big.c_str()};
  for (int i = 0; i < 2; ++i) {
    Res r(PQexecPrepared(c.get(), "len", 1, params, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string(big.size()));
  }
  exec_ok(holder.get(), "COMMIT");
  // A name the agent never prepared is refused before anything goes upstream.
  Res unknown(PQexecPrepared(c.get(), "nope", 1, params, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(unknown.get()), "26000") << PQresultErrorMessage(unknown.get());
  EXPECT_EQ(scalar(c.get(), "SELECT 8"), "8");
}

// Approvals in a pooled session: an approved prepared statement's approval covers its first
// Bind, whichever upstream connection the transaction lands on; the next Bind is refused by the
// gateway (42501) before it reaches any connection, also streamed (over max_message_bytes).
class GatewayPoolApprovalTest : public SharedGatewayTest<GatewayPoolApprovalTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o = pooled_gateway(2, 60000);
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }
};

TEST_F(GatewayPoolApprovalTest, ApprovedPreparedStatementRunsOnceOnAnyConnection) {
  create_agent_table(gw_, "public.pool_once");
  ASSERT_TRUE(gw_->pg().psql("INSERT INTO public.pool_once SELECT 1, g FROM generate_series(1, 5) g")
                  .is_ok());
  Conn c = connect_to(gw_);
  // No WHERE: held for approval (where_absent) at its Parse.
  const std::string sql = "UPDATE public.pool_once SET agent = $1";
  ASSERT_EQ(PQsendPrepare(c.get(), "upd_all", sql.c_str(), 1, nullptr), 1);
  nlohmann::json req;
  ASSERT_TRUE(eventually([&] {
    req = pending_request(*gw_, "reviewer", sql);
    return req.contains("id");
  }));
  CtlResult a = gw_->ctl("reviewer", {"approvals", "approve", req.value("id", "")});
  ASSERT_EQ(a.code, 0) << a.out << a.err;
  Res prepared = next_result(c.get(), 10000);
  ASSERT_NE(prepared, nullptr);
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK)
      << PQresultErrorMessage(prepared.get());
  drain(c.get());
  // Land the next transaction on another connection now and then: hold one meanwhile.
  Conn holder = connect_to(gw_);
  exec_ok(holder.get(), "BEGIN");
  EXPECT_EQ(scalar(holder.get(), "SELECT 1"), "1");
  const char* seven[] = {"7"};
  Res first(PQexecPrepared(c.get(), "upd_all", 1, seven, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(first.get());
  EXPECT_STREQ(PQcmdTuples(first.get()), "5");
  exec_ok(holder.get(), "COMMIT");
  const char* eight[] = {"8"};
  Res second(PQexecPrepared(c.get(), "upd_all", 1, eight, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(second.get()), "42501") << PQresultErrorMessage(second.get());
  const std::string big(2 << 20, '9');
  const char* big_values[] = {big.c_str()};
  Res streamed(PQexecPrepared(c.get(), "upd_all", 1, big_values, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(streamed.get()), "42501") << PQresultErrorMessage(streamed.get());
  auto agents = gw_->pg().psql("SELECT string_agg(DISTINCT agent::text, ',') FROM public.pool_once");
  ASSERT_TRUE(agents.is_ok());
  EXPECT_EQ(trimmed(*agents), "7");
  EXPECT_EQ(scalar(c.get(), "SELECT 8"), "8");
}

TEST_F(GatewayPoolTest, SessionStateIsRefusedWithAClearError) {
  Conn c = connect_to(gw_);
  for (const char* sql :
       {"SET search_path = crm", "LISTEN pool_chan", "SELECT pg_advisory_lock(42)",
        "CREATE TEMP TABLE pool_tmp (a int)", "PREPARE q AS SELECT 1", "DISCARD ALL",
        "SELECT set_config('app.tenant', 'a', false)"}) {
    Res r(PQexec(c.get(), sql));
    EXPECT_EQ(sqlstate(r.get()), "0A000") << sql;
    std::string msg = PQresultErrorMessage(r.get());
    EXPECT_NE(msg.find("in transaction pooling mode"), std::string::npos) << msg;
  }
  // Extended protocol too.
  Res p(PQprepare(c.get(), "s", "SET work_mem = '1MB'", 0, nullptr));
  EXPECT_EQ(sqlstate(p.get()), "0A000");
  // What to use instead works, and leaves nothing behind.
  exec_ok(c.get(), "BEGIN");
  exec_ok(c.get(), "SET LOCAL statement_timeout = '5s'");
  EXPECT_EQ(scalar(c.get(), "SHOW statement_timeout"), "5s");
  EXPECT_EQ(scalar(c.get(), "SELECT set_config('app.tenant', 'a', true)"), "a");
  exec_ok(c.get(), "COMMIT");
  EXPECT_EQ(scalar(c.get(), "SHOW statement_timeout"), "0");
  // The refusals are audited as denials.
  EXPECT_TRUE(eventually([&] {
    std::string audit = gw_->audit_log();
    return audit.find("transaction_pooling") != std::string::npos;
  }));
}

TEST_F(GatewayPoolTest, ClientKilledMidTransactionLeavesNoOpenTransactionUpstream) {
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  std::string conninfo = gw_->conninfo();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    PGconn* c = PQconnectdb(conninfo.c_str());
    PGresult* r = PQexec(c, "BEGIN");
    PQclear(r);
    r = PQexec(c, "INSERT INTO public.pool_t VALUES (-1, -1)");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    char b = ok ? 'y' : 'n';
    (void)!write(ready[1], &b, 1);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char b = 0;
  ASSERT_EQ(read(ready[0], &b, 1), 1);
  close(ready[0]);
  ASSERT_EQ(b, 'y');
  EXPECT_EQ(upstream_backends(gw_, " AND state = 'idle in transaction'"), 1);
  ::kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_TRUE(eventually(
      [&] { return upstream_backends(gw_, " AND state = 'idle in transaction'") == 0; }));
  auto rows = gw_->pg().psql("SELECT count(*) FROM public.pool_t WHERE agent = -1");
  ASSERT_TRUE(rows.is_ok());
  EXPECT_EQ(trimmed(*rows), "0");
  // The pool is whole again: pool_size transactions at once still get connections.
  std::vector<Conn> cs;
  for (int i = 0; i < kPoolSize; ++i) {
    cs.push_back(connect_to(gw_));
    exec_ok(cs.back().get(), "BEGIN");
    EXPECT_EQ(scalar(cs.back().get(), "SELECT 1"), "1");
  }
  for (auto& c : cs) exec_ok(c.get(), "COMMIT");
}

TEST_F(GatewayPoolTest, MaskingStillAppliesPerAgentSession) {
  Conn a = connect_to(gw_);
  Conn b = connect_to(gw_);
  for (int i = 0; i < 3; ++i) {
    for (PGconn* c : {a.get(), b.get()}) {
      std::string e = scalar(c, "SELECT email FROM crm.customers ORDER BY id LIMIT 1");
      EXPECT_EQ(e.find("ada@"), std::string::npos) << e;
      EXPECT_NE(e.find("***@"), std::string::npos) << e;
    }
  }
}

TEST_F(GatewayPoolTest, CancelReachesTheBackendRunningTheStatement) {
  Conn c = connect_to(gw_);
  ASSERT_TRUE(PQsendQuery(c.get(), "SELECT pg_sleep(30)"));
  // Wait until the statement runs upstream.
  ASSERT_TRUE(eventually([&] {
    return upstream_backends(gw_, " AND query LIKE 'SELECT pg_sleep(30)%' AND state = 'active'") ==
           1;
  }));
  PGcancel* cancel = PQgetCancel(c.get());
  char err[256];
  ASSERT_TRUE(PQcancel(cancel, err, sizeof(err))) << err;
  PQfreeCancel(cancel);
  Res r(PQgetResult(c.get()));
  EXPECT_EQ(sqlstate(r.get()), "57014") << PQresultErrorMessage(r.get());
  while (PGresult* more = PQgetResult(c.get())) PQclear(more);
  EXPECT_EQ(scalar(c.get(), "SELECT 1"), "1");
}

// Hundreds of agents over a pool of five, all logged in at once and running transactions at
// the same time from one thread of non-blocking libpq clients (no thread per agent): the
// pooling invariants at a scale where every transaction waits for a connection.
class GatewayPoolScaleTest : public SharedGatewayTest<GatewayPoolScaleTest> {
 public:
  static constexpr int kAgents = 500;
  static constexpr int kPool = 5;
  static constexpr const char* kPolicy = kPoolPolicy;
  static GatewayOptions gateway_options() {
    raise_fd_limit();  // 500 agent sockets here, as many in pgwarden-dp
    GatewayOptions o = pooled_gateway(kPool, 60000);
    o.max_connections = kAgents + 50;
    // A login ramp of 500 from one address is what this gateway is for, not an attack.
    o.max_pending_logins = kAgents + 50;
    o.max_pending_logins_per_source = kAgents + 50;
    o.startup_timeout_ms = 60000;
    o.auth_timeout_s = 120;
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest<GatewayPoolScaleTest>::SetUpTestSuite();
    create_agent_table(gw_, "public.pool_scale");
  }
};

// One agent: a non-blocking libpq connection and where it is in its script.
struct ScaleAgent {
  Conn conn;
  int id = 0;
  bool connecting = true;
  PostgresPollingStatusType connect_poll = PGRES_POLLING_WRITING;  // as after PQconnectStart
  bool busy = false;    // a command was sent, its results are not all in
  int step = 0;         // index into the script below
  int transaction = 0;  // transactions done
  std::string failure;  // first thing that went wrong
};

TEST_F(GatewayPoolScaleTest, FiveHundredAgentsOverFiveConnectionsStayCorrectAndIsolated) {
  constexpr int kTransactions = 3;
  const auto started = std::chrono::steady_clock::now();
  // Logins in waves of at most kLoginsInFlight (as a fleet's connection pools ramp), each
  // started when another finishes, so they overlap with the other agents' transactions.
  constexpr int kLoginsInFlight = 100;
  std::vector<ScaleAgent> agents(kAgents);
  int logged_in = 0;
  int done = 0;  // agents finished (all transactions) or failed
  int started_logins = 0;
  int connecting = 0;
  auto start_logins = [&] {
    for (; started_logins < kAgents && connecting < kLoginsInFlight; ++started_logins) {
      ScaleAgent& ag = agents[started_logins];
      ag.id = 5000 + started_logins;
      ag.conn.reset(PQconnectStart(gw_->conninfo().c_str()));
      ++connecting;
      if (ag.conn == nullptr || PQstatus(ag.conn.get()) == CONNECTION_BAD) {
        ag.failure = "cannot start a connection";
        ag.connecting = false;
        --connecting;
        ++done;
      }
    }
  };
  std::atomic<bool> running{true};
  std::atomic<int> max_backends{0};
  std::thread sampler([&] {
    while (running.load()) {
      int n = upstream_backends(gw_);
      if (n > max_backends.load()) max_backends.store(n);
      // A sampling period (not a synchronisation): psql per sample costs CPU the agents need;
      // the backend pids of every transaction, checked below, are the exact invariant.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  std::set<std::string> backend_pids;  // of every transaction's statements
  // Each agent, once logged in: prepares its own statement, then kTransactions times
  //   0 BEGIN
  //   1 SELECT set_config('app.agent', '<id>', true)            -- transaction-local state
  //   2 INSERT (<id>, i)
  //   3 SELECT count(*), current_setting('app.agent'), pg_backend_pid() ... -- own rows + state
  //   4 COMMIT
  //   5 SELECT current_setting('app.agent', true)               -- nothing left behind
  //   6 EXECUTE mine(i)                                          -- its prepared statement
  auto send_next = [&](ScaleAgent& ag) {
    PGconn* c = ag.conn.get();
    const std::string id = std::to_string(ag.id);
    const std::string i = std::to_string(ag.transaction);
    int ok = 0;
    switch (ag.step) {
      case -1: {
        std::string text = "SELECT $1::int + " + id;
        ok = PQsendPrepare(c, "mine", text.c_str(), 1, nullptr);
        break;
      }
      case 0:
        ok = PQsendQuery(c, "BEGIN");
        break;
      case 1:
        ok = PQsendQuery(c, ("SELECT set_config('app.agent', '" + id + "', true)").c_str());
        break;
      case 2:
        ok = PQsendQuery(c,
                         ("INSERT INTO public.pool_scale VALUES (" + id + ", " + i + ")").c_str());
        break;
      case 3:
        ok = PQsendQuery(c, ("SELECT count(*), current_setting('app.agent'), pg_backend_pid() "
                             "FROM public.pool_scale WHERE agent = " +
                             id)
                                .c_str());
        break;
      case 4:
        ok = PQsendQuery(c, "COMMIT");
        break;
      case 5:
        ok = PQsendQuery(c, "SELECT current_setting('app.agent', true)");
        break;
      case 6: {
        const char* params[] = {i.c_str()};
        ok = PQsendQueryPrepared(c, "mine", 1, params, nullptr, nullptr, 0);
        break;
      }
    }
    if (!ok)
      ag.failure = "send failed at step " + std::to_string(ag.step) + ": " + PQerrorMessage(c);
    ag.busy = ok != 0;
  };
  // Checks one result of the agent's current step.
  auto check = [&](ScaleAgent& ag, PGresult* r) {
    const std::string id = std::to_string(ag.id);
    const int i = ag.transaction;
    const ExecStatusType st = PQresultStatus(r);
    auto fail = [&](const std::string& what) {
      if (ag.failure.empty()) {
        ag.failure = "agent " + id + " transaction " + std::to_string(i) + " step " +
                     std::to_string(ag.step) + ": " + what + " " + PQresultErrorMessage(r);
      }
    };
    const bool tuples = st == PGRES_TUPLES_OK && PQntuples(r) == 1;
    switch (ag.step) {
      case -1:
      case 0:
      case 2:
      case 4:
        if (st != PGRES_COMMAND_OK) fail("not COMMAND_OK");
        break;
      case 1:
        if (!tuples || std::string(PQgetvalue(r, 0, 0)) != id) fail("set_config");
        break;
      case 3:
        if (!tuples || std::string(PQgetvalue(r, 0, 0)) != std::to_string(i + 1)) {
          fail("own rows (committed + this transaction's)");
        } else if (std::string(PQgetvalue(r, 0, 1)) != id) {
          fail("app.agent is \"" + std::string(PQgetvalue(r, 0, 1)) + "\" inside the transaction");
        } else {
          backend_pids.insert(PQgetvalue(r, 0, 2));
        }
        break;
      case 5:
        // Transaction-local state ended with the transaction; another agent's never shows.
        if (!tuples || (!PQgetisnull(r, 0, 0) && std::string(PQgetvalue(r, 0, 0)) != "")) {
          fail("app.agent leaked outside a transaction: \"" +
               std::string(tuples ? PQgetvalue(r, 0, 0) : "?") + "\"");
        }
        break;
      case 6:
        if (!tuples || std::string(PQgetvalue(r, 0, 0)) != std::to_string(i + ag.id)) {
          fail("prepared statement answered another agent's text");
        }
        break;
    }
  };
  std::string stuck;
  while (done < kAgents && stuck.empty()) {
    start_logins();
    std::vector<pollfd> fds;
    std::vector<ScaleAgent*> polled;
    for (int a = 0; a < started_logins; ++a) {
      ScaleAgent& ag = agents[a];
      if (!ag.failure.empty() || (!ag.connecting && !ag.busy)) continue;
      const short events = !ag.connecting                             ? POLLIN
                           : ag.connect_poll == PGRES_POLLING_WRITING ? POLLOUT
                                                                      : POLLIN;
      fds.push_back(pollfd{PQsocket(ag.conn.get()), events, 0});
      polled.push_back(&ag);
    }
    if (poll(fds.data(), fds.size(), 60000) <= 0 ||
        std::chrono::steady_clock::now() - started > std::chrono::seconds(240)) {
      stuck = std::to_string(logged_in) + " logged in, " + std::to_string(done) + " done";
      break;
    }
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      ScaleAgent& ag = *polled[k];
      PGconn* c = ag.conn.get();
      if (ag.connecting) {
        ag.connect_poll = PQconnectPoll(c);
        if (ag.connect_poll == PGRES_POLLING_FAILED) {
          ag.failure = std::string("login failed: ") + PQerrorMessage(c);
          ag.connecting = false;
          --connecting;
          ++done;
        } else if (ag.connect_poll == PGRES_POLLING_OK) {
          ag.connecting = false;
          --connecting;
          ++logged_in;
          ag.step = -1;
          send_next(ag);
          if (!ag.failure.empty()) ++done;
        }
        continue;
      }
      if (!PQconsumeInput(c)) {
        ag.failure = std::string("connection lost: ") + PQerrorMessage(c);
        ++done;
        continue;
      }
      while (!PQisBusy(c)) {
        PGresult* r = PQgetResult(c);
        if (r == nullptr) {
          // The step is complete: the next one, or the next transaction.
          ag.busy = false;
          if (!ag.failure.empty()) break;
          if (ag.step == 6) {
            ++ag.transaction;
            ag.step = 0;
          } else {
            ++ag.step;
          }
          if (ag.transaction < kTransactions) send_next(ag);
          break;
        }
        check(ag, r);
        PQclear(r);
      }
      if (!ag.busy) ++done;
    }
  }
  running = false;
  sampler.join();
  ASSERT_TRUE(stuck.empty()) << "no progress within 60 s (or 240 s in all): " << stuck;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  int failed = 0;
  for (const ScaleAgent& ag : agents) {
    if (ag.failure.empty()) continue;
    if (++failed <= 5) ADD_FAILURE() << ag.failure;
  }
  EXPECT_EQ(failed, 0) << "agents failed";
  EXPECT_EQ(logged_in, kAgents);
  auto total = gw_->pg().psql("SELECT count(*) FROM public.pool_scale");
  ASSERT_TRUE(total.is_ok());
  EXPECT_EQ(trimmed(*total), std::to_string(kAgents * kTransactions));
  // Every transaction ran on one of at most kPool backends; the upstream never saw more than
  // the pool (plus pgwarden-cp's catalog connection, which uses the same role).
  EXPECT_LE(backend_pids.size(), static_cast<size_t>(kPool));
  EXPECT_GE(backend_pids.size(), 1u);
  EXPECT_LE(max_backends.load(), kPool + 1);
  std::printf(
      "%d agents, %d transactions each, over %zu upstream backends (at most %d seen): "
      "%.1f s\n",
      kAgents, kTransactions, backend_pids.size(), max_backends.load(), seconds);
}

// A pool of one connection and a short wait: a second transaction waits for the first, and
// gets 53300 when it does not end in time.
class GatewayPoolExhaustionTest : public SharedGatewayTest<GatewayPoolExhaustionTest> {
 public:
  static constexpr const char* kPolicy = kPoolPolicy;
  static GatewayOptions gateway_options() { return pooled_gateway(1, 400); }
};

TEST_F(GatewayPoolExhaustionTest, WaitsForAFreeConnectionThenTimesOutWith53300) {
  Conn holder = connect_to(gw_);
  Conn waiter = connect_to(gw_);
  exec_ok(holder.get(), "BEGIN");
  EXPECT_EQ(scalar(holder.get(), "SELECT 1"), "1");
  // Queued: served once the holder's transaction ends.
  ASSERT_TRUE(PQsendQuery(waiter.get(), "SELECT 2"));
  exec_ok(holder.get(), "COMMIT");
  Res served(PQgetResult(waiter.get()));
  EXPECT_EQ(PQresultStatus(served.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(served.get());
  while (PGresult* more = PQgetResult(waiter.get())) PQclear(more);
  // Held past pool_wait_timeout_ms: refused, session still usable.
  exec_ok(holder.get(), "BEGIN");
  EXPECT_EQ(scalar(holder.get(), "SELECT 1"), "1");
  Res timed_out(PQexec(waiter.get(), "SELECT 3"));
  EXPECT_EQ(sqlstate(timed_out.get()), "53300") << PQresultErrorMessage(timed_out.get());
  EXPECT_NE(std::string(PQresultErrorMessage(timed_out.get())).find("pool_wait_timeout_ms"),
            std::string::npos);
  const char* params[] = {"4"};
  Res timed_out_ext(
      PQexecParams(waiter.get(), "SELECT $1::int", 1, nullptr, params, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(timed_out_ext.get()), "53300") << PQresultErrorMessage(timed_out_ext.get());
  exec_ok(holder.get(), "COMMIT");
  EXPECT_EQ(scalar(waiter.get(), "SELECT 5"), "5");
  // A login that finds the pool full waits the same way.
  exec_ok(holder.get(), "BEGIN");
  EXPECT_EQ(scalar(holder.get(), "SELECT 1"), "1");
  Conn late(PQconnectdb(gw_->conninfo().c_str()));
  EXPECT_NE(PQstatus(late.get()), CONNECTION_OK);
  EXPECT_NE(std::string(PQerrorMessage(late.get())).find("became free"), std::string::npos)
      << PQerrorMessage(late.get());
  exec_ok(holder.get(), "COMMIT");
}

}  // namespace
}  // namespace pgwarden::testing
