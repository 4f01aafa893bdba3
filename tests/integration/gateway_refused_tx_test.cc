// A result dp refuses inside an explicit transaction: the upstream transaction must fail as
// well, so the client's COMMIT answers ROLLBACK and the work done earlier in the transaction is
// not committed — PostgreSQL's own semantics after an error. Outside a transaction nothing
// changes: the refused SELECT leaves the autocommitted INSERT in place. Driven with libpq and
// with psql; the table is checked directly against the sandbox.
//
// How results get refused: the policy has a `hash` mask, so every mask plan needs the masking
// key; the key file exists when pgwarden-cp loads its config and is deleted right after, so cp
// answers every `mask_plan` with `unavailable` and the dataplane refuses every result set
// (08006) while statements without a result (INSERT, BEGIN, COMMIT) run normally.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

struct PgConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, PgConnCloser>;
struct PgResultCloser {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Res = std::unique_ptr<PGresult, PgResultCloser>;

class GatewayRefusedTxTest : public SharedGatewayTest<GatewayRefusedTxTest> {
 public:
  static constexpr const char* kPolicy =
      R"({"name": "agents", "allowed_kinds": ["select", "insert", "transaction"],
          "allowed_relations": ["public.*", "crm.*", "pg_catalog.*"],
          "read_only": false, "rule_sets": ["deny", "approve"],
          "masks": [{"column": "crm.customers.email", "function": "hash"}]})";

  static void SetUpTestSuite() {
    char key_path[] = "/tmp/pgw-refused-tx-key-XXXXXX";
    int fd = mkstemp(key_path);
    ASSERT_GE(fd, 0);
    std::string key(32, 'k');
    ASSERT_EQ(write(fd, key.data(), key.size()), static_cast<ssize_t>(key.size()));
    close(fd);
    gw_ = new GatewayHarness();
    GatewayOptions o;
    o.policy_json = kPolicy;
    o.masking_key_file = key_path;
    Status st = gw_->start(o);
    unlink(key_path);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    auto made =
        gw_->pg().psql("CREATE TABLE public.tx_t (v text); GRANT ALL ON public.tx_t TO app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }

 protected:
  // Rows of public.tx_t with value `v`, asked of the sandbox directly.
  static int count(const std::string& v) {
    auto out = gw_->pg().psql("SELECT count(*) FROM public.tx_t WHERE v = '" + v + "'");
    EXPECT_TRUE(out.is_ok()) << out.status().to_string();
    return out.is_ok() ? std::stoi(*out) : -1;
  }
  static Conn connect() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  static std::string exec_ok(PGconn* c, const char* sql) {
    Res r(PQexec(c, sql));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK)
        << sql << ": " << PQresultErrorMessage(r.get());
    return PQcmdStatus(r.get());
  }
  static void expect_refused_select(PGconn* c) {
    Res r(PQexec(c, "SELECT v FROM public.tx_t"));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
    EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "08006");
    EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("result refused"), std::string::npos)
        << PQresultErrorMessage(r.get());
  }
};

TEST_F(GatewayRefusedTxTest, RefusedResultInsideTransactionAbortsItAndCommitRollsBack) {
  Conn c = connect();
  exec_ok(c.get(), "BEGIN");
  exec_ok(c.get(), "INSERT INTO public.tx_t VALUES ('libpq-tx')");
  expect_refused_select(c.get());
  // The ReadyForQuery after the refusal says the transaction failed, as after any error.
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  {
    Res r(PQexec(c.get(), "INSERT INTO public.tx_t VALUES ('libpq-tx-after')"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
    EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "25P02");
  }
  EXPECT_EQ(exec_ok(c.get(), "COMMIT"), "ROLLBACK");
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  EXPECT_EQ(count("libpq-tx"), 0);
  EXPECT_EQ(count("libpq-tx-after"), 0);
  // The session goes on normally.
  exec_ok(c.get(), "INSERT INTO public.tx_t VALUES ('libpq-next')");
  EXPECT_EQ(count("libpq-next"), 1);
}

TEST_F(GatewayRefusedTxTest, RefusedResultOutsideTransactionLeavesAutocommittedWorkAlone) {
  Conn c = connect();
  exec_ok(c.get(), "INSERT INTO public.tx_t VALUES ('libpq-auto')");
  expect_refused_select(c.get());
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  EXPECT_EQ(count("libpq-auto"), 1);
  exec_ok(c.get(), "BEGIN");
  exec_ok(c.get(), "INSERT INTO public.tx_t VALUES ('libpq-auto-tx')");
  EXPECT_EQ(exec_ok(c.get(), "COMMIT"), "COMMIT");
  EXPECT_EQ(count("libpq-auto-tx"), 1);
}

TEST_F(GatewayRefusedTxTest, ExtendedProtocolRefusalInsideTransactionAlsoRollsBack) {
  Conn c = connect();
  exec_ok(c.get(), "BEGIN");
  {
    const char* params[] = {"ext-tx"};
    Res r(PQexecParams(c.get(), "INSERT INTO public.tx_t VALUES ($1)", 1, nullptr, params, nullptr,
                       nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  }
  {
    Res r(PQexecParams(c.get(), "SELECT v FROM public.tx_t", 0, nullptr, nullptr, nullptr, nullptr,
                       0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
    EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "08006");
  }
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  EXPECT_EQ(exec_ok(c.get(), "COMMIT"), "ROLLBACK");
  EXPECT_EQ(count("ext-tx"), 0);
}

TEST_F(GatewayRefusedTxTest, PsqlScriptCommitAfterRefusedSelectPrintsRollback) {
  std::string script = gw_->dir() + "/refused_tx.sql";
  std::ofstream(script) << "BEGIN;\nINSERT INTO public.tx_t VALUES ('psql-tx');\n"
                           "SELECT v FROM public.tx_t;\nCOMMIT;\n"
                           "INSERT INTO public.tx_t VALUES ('psql-auto');\n"
                           "SELECT v FROM public.tx_t;\n";
  std::string out = command_output("psql \"" + gw_->conninfo() + "\" -X -f " + script + " 2>&1");
  EXPECT_NE(out.find("result refused"), std::string::npos) << out;
  EXPECT_NE(out.find("ROLLBACK"), std::string::npos) << out;
  EXPECT_EQ(out.find("\nCOMMIT"), std::string::npos) << out;
  EXPECT_EQ(count("psql-tx"), 0) << out;
  EXPECT_EQ(count("psql-auto"), 1) << out;
}

// A refused result inside a pipeline is an error there: the statements after it up to the
// Sync are skipped as after any error, and the Sync still answers (it used to hang: the
// swallowed result never ended, so the held next statement and the Sync were never sent).
TEST_F(GatewayRefusedTxTest, RefusedResultInsideAPipelineStillAnswersTheSync) {
  Conn c = connect();
  PGconn* conn = c.get();
  ASSERT_EQ(PQenterPipelineMode(conn), 1);
  ASSERT_EQ(PQsendQueryParams(conn, "SELECT v FROM public.tx_t", 0, nullptr, nullptr, nullptr,
                              nullptr, 0),
            1);
  ASSERT_EQ(PQsendQueryParams(conn, "INSERT INTO public.tx_t VALUES ('pipeline-skipped')", 0,
                              nullptr, nullptr, nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQpipelineSync(conn), 1);
  std::vector<ExecStatusType> seen;
  bool synced = false;
  int idle_polls = 0;
  while (!synced) {
    // Read without blocking: a gateway that never answers fails the test instead of hanging it.
    ASSERT_EQ(PQconsumeInput(conn), 1) << PQerrorMessage(conn);
    if (PQisBusy(conn)) {
      pollfd p{PQsocket(conn), POLLIN, 0};
      int n = ::poll(&p, 1, 1000);
      if (n == 0) {
        ASSERT_LT(++idle_polls, 15) << "no answer to the Sync; seen " << seen.size();
      }
      continue;
    }
    PGresult* r = PQgetResult(conn);
    if (r == nullptr) continue;  // the end of one query's results
    seen.push_back(PQresultStatus(r));
    if (seen.back() == PGRES_FATAL_ERROR) {
      EXPECT_STREQ(PQresultErrorField(r, PG_DIAG_SQLSTATE), "08006");
    }
    synced = seen.back() == PGRES_PIPELINE_SYNC;
    PQclear(r);
  }
  EXPECT_EQ(seen, (std::vector<ExecStatusType>{PGRES_FATAL_ERROR, PGRES_PIPELINE_ABORTED,
                                               PGRES_PIPELINE_SYNC}));
  ASSERT_EQ(PQexitPipelineMode(conn), 1);
  // As after an error PostgreSQL raised: the rest of the pipeline did not run.
  EXPECT_EQ(count("pipeline-skipped"), 0);
  exec_ok(conn, "INSERT INTO public.tx_t VALUES ('pipeline-after')");
  EXPECT_EQ(count("pipeline-after"), 1);
}

}  // namespace
}  // namespace pgwarden::testing
