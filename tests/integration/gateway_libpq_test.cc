// pgwarden-dp end to end with libpq: sandbox PostgreSQL + pgwarden-cp + pgwarden-dp, real TLS,
// real Hyperscan rules. Each test drives the gateway the way an agent's client library does.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

class GatewayLibpqTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gw_ = new GatewayHarness();
    Status st = gw_->start();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void TearDownTestSuite() {
    delete gw_;
    gw_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure() && gw_ != nullptr) {
      std::cerr << "---- dp log ----\n" << gw_->dp_log() << "---- cp log ----\n" << gw_->cp_log();
    }
  }

  Conn connect(const std::string& extra = "") {
    Conn c(PQconnectdb(gw_->conninfo(extra).c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  Res exec(PGconn* c, const std::string& sql) { return Res(PQexec(c, sql.c_str())); }

  static GatewayHarness* gw_;
};

GatewayHarness* GatewayLibpqTest::gw_ = nullptr;

TEST_F(GatewayLibpqTest, LoginOverTlsAndSelectReachesPostgres) {
  Conn c = connect();
  EXPECT_EQ(PQsslInUse(c.get()), 1);
  Res r = exec(c.get(), "select count(*) from crm.customers");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_GT(std::stoi(PQgetvalue(r.get(), 0, 0)), 0);
  // BackendKeyData carries the upstream backend's real pid (the secret is the gateway's own).
  Res pid = exec(c.get(), "select pg_backend_pid()");
  ASSERT_EQ(PQresultStatus(pid.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(pid.get());
  EXPECT_EQ(PQbackendPID(c.get()), std::stoi(PQgetvalue(pid.get(), 0, 0)));
  // ParameterStatus passed through.
  EXPECT_NE(PQparameterStatus(c.get(), "server_version"), nullptr);
}

TEST_F(GatewayLibpqTest, WrongTokenIsRefused) {
  std::string ci = gw_->conninfo();
  ci.replace(ci.find(gw_->token()), gw_->token().size(),
             "pgw_sk_agent1_wrongsecretwrongsecretwrongsecretwrongsecr");
  Conn c(PQconnectdb(ci.c_str()));
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_BAD);
  EXPECT_NE(std::string(PQerrorMessage(c.get())).find("pgwarden: login refused"), std::string::npos)
      << PQerrorMessage(c.get());
}

TEST_F(GatewayLibpqTest, TokenWithoutTlsIsRefusedOnANonLoopbackListener) {
  Conn c(PQconnectdb(gw_->conninfo("sslmode=disable").c_str()));
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_BAD);
  EXPECT_NE(std::string(PQerrorMessage(c.get())).find("must be sent over TLS"), std::string::npos)
      << PQerrorMessage(c.get());
}

TEST_F(GatewayLibpqTest, InsertInTransactionCommitsAndRollbackDiscards) {
  Conn c = connect();
  ASSERT_EQ(PQresultStatus(exec(c.get(), "begin").get()), PGRES_COMMAND_OK);
  Res ins = exec(c.get(), "insert into public.kv(k, v) values ('libpq-commit', '1')");
  ASSERT_EQ(PQresultStatus(ins.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(ins.get());
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INTRANS);
  ASSERT_EQ(PQresultStatus(exec(c.get(), "commit").get()), PGRES_COMMAND_OK);
  ASSERT_EQ(PQresultStatus(exec(c.get(), "begin").get()), PGRES_COMMAND_OK);
  exec(c.get(), "insert into public.kv(k, v) values ('libpq-rollback', '1')");
  ASSERT_EQ(PQresultStatus(exec(c.get(), "rollback").get()), PGRES_COMMAND_OK);
  auto rows = gw_->pg().psql("select k from public.kv where k like 'libpq-%' order by k");
  ASSERT_TRUE(rows.is_ok());
  EXPECT_EQ(*rows, "libpq-commit\n");
}

TEST_F(GatewayLibpqTest, DeniedStatementGets42501NamingTheRuleAndNeverReachesPostgres) {
  Conn c = connect();
  Res r = exec(c.get(), "DROP DATABASE demo_never_dropped");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(r.get()), "42501");
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("deny.drop_database"),
            std::string::npos)
      << PQresultErrorMessage(r.get());
  EXPECT_EQ(gw_->pg().server_log().find("demo_never_dropped"), std::string::npos);
  // The session goes on.
  Res ok = exec(c.get(), "select 1");
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK);
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
}

TEST_F(GatewayLibpqTest, MultiStatementStringWithOneDeniedPartIsRefusedWhole) {
  Conn c = connect();
  Res r = exec(c.get(),
               "insert into public.kv(k, v) values ('multi-never', '1'); "
               "select pg_read_file('/etc/passwd')");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(r.get()), "42501");
  auto rows = gw_->pg().psql("select count(*) from public.kv where k = 'multi-never'");
  ASSERT_TRUE(rows.is_ok());
  EXPECT_EQ(*rows, "0\n");
}

TEST_F(GatewayLibpqTest, DenyInsideExplicitTransactionLeavesItFailedUntilRollback) {
  Conn c = connect();
  ASSERT_EQ(PQresultStatus(exec(c.get(), "begin").get()), PGRES_COMMAND_OK);
  exec(c.get(), "insert into public.kv(k, v) values ('tx-denied', '1')");
  Res d = exec(c.get(), "select pg_read_file('/etc/passwd')");
  EXPECT_EQ(sqlstate(d.get()), "42501");
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  Res after = exec(c.get(), "select 1");
  EXPECT_EQ(sqlstate(after.get()), "25P02");  // PostgreSQL's own failed-transaction answer
  ASSERT_EQ(PQresultStatus(exec(c.get(), "rollback").get()), PGRES_COMMAND_OK);
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  auto rows = gw_->pg().psql("select count(*) from public.kv where k = 'tx-denied'");
  ASSERT_TRUE(rows.is_ok());
  EXPECT_EQ(*rows, "0\n");
}

TEST_F(GatewayLibpqTest, PreparedStatementIsReusedAndUnnamedStatementsWork) {
  Conn c = connect();
  Res p = Res(
      PQprepare(c.get(), "by_id", "select full_name from crm.customers where id = $1", 1, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(p.get());
  for (const char* id : {"1", "2", "1"}) {
    const char* params[] = {id};
    Res r(PQexecPrepared(c.get(), "by_id", 1, params, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    EXPECT_EQ(PQntuples(r.get()), 1);
  }
  const char* params[] = {"20"};
  Res u(PQexecParams(c.get(), "select $1::int + 1", 1, nullptr, params, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(u.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(u.get());
  EXPECT_STREQ(PQgetvalue(u.get(), 0, 0), "21");
  Res denied(PQprepare(c.get(), "bad", "select pg_read_file($1)", 1, nullptr));
  EXPECT_EQ(sqlstate(denied.get()), "42501");
  Res again(PQexecPrepared(c.get(), "by_id", 1, params, nullptr, nullptr, 0));
  EXPECT_EQ(PQresultStatus(again.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(again.get());
}

TEST_F(GatewayLibpqTest, PipelineWithDeniedParseAnswersInOrderAndSkipsToSync) {
  Conn c = connect();
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  const char* queries[] = {"insert into public.kv(k, v) values ('pipe-1', '1')",
                           "select pg_read_file('/etc/passwd')",
                           "insert into public.kv(k, v) values ('pipe-3', '1')"};
  for (const char* q : queries) {
    ASSERT_EQ(PQsendQueryParams(c.get(), q, 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  }
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  ASSERT_EQ(PQsendQueryParams(c.get(), "select 42", 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  std::vector<std::string> seen;
  int syncs = 0;
  while (syncs < 2) {
    Res r(PQgetResult(c.get()));
    if (!r) continue;
    ExecStatusType st = PQresultStatus(r.get());
    std::string what = PQresStatus(st);
    if (st == PGRES_FATAL_ERROR) what += ":" + sqlstate(r.get());
    if (st == PGRES_TUPLES_OK) what += ":" + std::string(PQgetvalue(r.get(), 0, 0));
    seen.push_back(what);
    if (st == PGRES_PIPELINE_SYNC) ++syncs;
  }
  std::vector<std::string> want = {"PGRES_COMMAND_OK",       "PGRES_FATAL_ERROR:42501",
                                   "PGRES_PIPELINE_ABORTED", "PGRES_PIPELINE_SYNC",
                                   "PGRES_TUPLES_OK:42",     "PGRES_PIPELINE_SYNC"};
  EXPECT_EQ(seen, want);
  ASSERT_EQ(PQexitPipelineMode(c.get()), 1);
  // Like PostgreSQL on error, the implicit transaction of the pipeline was rolled back.
  auto rows = gw_->pg().psql("select count(*) from public.kv where k like 'pipe-%'");
  ASSERT_TRUE(rows.is_ok());
  EXPECT_EQ(*rows, "0\n");
}

TEST_F(GatewayLibpqTest, LongPipelineReturnsEveryResultInOrder) {
  Conn c = connect();
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  PQsetnonblocking(c.get(), 1);
  const int n = 200;
  for (int i = 0; i < n; ++i) {
    std::string v = std::to_string(i);
    const char* params[] = {v.c_str()};
    ASSERT_EQ(PQsendQueryParams(c.get(), "select $1::int", 1, nullptr, params, nullptr, nullptr, 0),
              1);
  }
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  while (PQflush(c.get()) == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  PQsetnonblocking(c.get(), 0);
  for (int i = 0; i < n; ++i) {
    Res r(PQgetResult(c.get()));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << i;
    EXPECT_EQ(std::stoi(PQgetvalue(r.get(), 0, 0)), i);
    Res end(PQgetResult(c.get()));
    EXPECT_EQ(end, nullptr);
  }
  Res sync(PQgetResult(c.get()));
  EXPECT_EQ(PQresultStatus(sync.get()), PGRES_PIPELINE_SYNC);
}

TEST_F(GatewayLibpqTest, CopyOutAndCopyInPassThrough) {
  Conn c = connect();
  Res out = exec(c.get(), "copy (select id, email from crm.customers order by id) to stdout");
  ASSERT_EQ(PQresultStatus(out.get()), PGRES_COPY_OUT) << PQresultErrorMessage(out.get());
  int rows = 0;
  char* buf = nullptr;
  int n;
  while ((n = PQgetCopyData(c.get(), &buf, 0)) > 0) {
    ++rows;
    PQfreemem(buf);
  }
  Res done(PQgetResult(c.get()));
  EXPECT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK);
  EXPECT_GT(rows, 0);

  Res in = exec(c.get(), "copy public.kv(k, v) from stdin");
  ASSERT_EQ(PQresultStatus(in.get()), PGRES_COPY_IN) << PQresultErrorMessage(in.get());
  std::string data;
  for (int i = 0; i < 1000; ++i) data += "copy-" + std::to_string(i) + "\tv\n";
  ASSERT_EQ(PQputCopyData(c.get(), data.data(), static_cast<int>(data.size())), 1);
  ASSERT_EQ(PQputCopyEnd(c.get(), nullptr), 1);
  Res fin(PQgetResult(c.get()));
  EXPECT_EQ(PQresultStatus(fin.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(fin.get());
  auto count = gw_->pg().psql("select count(*) from public.kv where k like 'copy-%'");
  ASSERT_TRUE(count.is_ok());
  EXPECT_EQ(*count, "1000\n");
}

TEST_F(GatewayLibpqTest, CancelRequestStopsPgSleep) {
  Conn c = connect();
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(PQsendQuery(c.get(), "select pg_sleep(30)"), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  PGcancel* cancel = PQgetCancel(c.get());
  char err[256];
  ASSERT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  Res r(PQgetResult(c.get()));
  EXPECT_EQ(sqlstate(r.get()), "57014") << PQresultErrorMessage(r.get());
  while (Res more{PQgetResult(c.get())}) {
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  Res ok = exec(c.get(), "select 1");
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK);
}

TEST_F(GatewayLibpqTest, FunctionCallMessageIsDeniedByDefault) {
  Conn c = connect();
  int result = 0;
  int len = 0;
  PQArgBlock arg;
  arg.isint = 1;
  arg.len = 4;
  arg.u.integer = -5;
  // 1397 = int4abs(int4) in pg_proc.
  Res r(PQfn(c.get(), 1397, &result, &len, 1, &arg, 1));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(r.get()), "42501");
  Res ok = exec(c.get(), "select 1");
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK);
}

TEST_F(GatewayLibpqTest, ClientStartupParametersAreForwardedButSearchPathIsRefusedByDefault) {
  Conn c = connect("application_name=agent-x");
  Res r = exec(c.get(), "select current_setting('application_name')");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "agent-x");
  // search_path is not in the default allowed_startup_settings: the login is refused rather
  // than run with a search_path the client did not get.
  Conn refused(PQconnectdb(gw_->conninfo("options='-c search_path=crm'").c_str()));
  EXPECT_EQ(PQstatus(refused.get()), CONNECTION_BAD);
  EXPECT_NE(std::string(PQerrorMessage(refused.get())).find("search_path"), std::string::npos)
      << PQerrorMessage(refused.get());
}

}  // namespace
}  // namespace pgwarden::testing
