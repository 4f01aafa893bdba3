// Proves the sandbox itself: it starts, seeds, authenticates with SCRAM, and goes away.
#include "tests/support/pg_sandbox.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sys/stat.h>

namespace pgwarden::testing {
namespace {

TEST(PgSandbox, StartsSeedsAndStopsLeavingNothingBehind) {
  PgSandbox pg;
  ASSERT_TRUE(pg.start().is_ok());
  std::string dir = pg.get("PGW_SANDBOX_DIR");
  auto count = pg.psql("SELECT count(*) FROM crm.customers");
  ASSERT_TRUE(count.is_ok()) << count.status().to_string();
  EXPECT_EQ(*count, "5\n");

  PGconn* conn = PQconnectdb(pg.conninfo("app_scram").c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  PGresult* res = PQexec(conn, "SHOW password_encryption");
  EXPECT_STREQ(PQgetvalue(res, 0, 0), "scram-sha-256");
  PQclear(res);
  PQfinish(conn);

  pg.stop();
  struct stat st;
  EXPECT_NE(stat(dir.c_str(), &st), 0) << dir << " still exists";
}

TEST(PgSandbox, WrongPasswordIsRejected) {
  PgSandbox pg;
  ASSERT_TRUE(pg.start().is_ok());
  std::string ci = "host=127.0.0.1 port=" + pg.get("PGPORT") +
                   " dbname=demo user=app_scram password=wrong";
  PGconn* conn = PQconnectdb(ci.c_str());
  EXPECT_NE(PQstatus(conn), CONNECTION_OK);
  EXPECT_NE(std::string(PQerrorMessage(conn)).find("password authentication failed"),
            std::string::npos);
  PQfinish(conn);
}

TEST(PgSandbox, TlsModeServesVerifiableCertificate) {
  PgSandbox pg;
  ASSERT_TRUE(pg.start({.tls = true}).is_ok());
  std::string ci = pg.conninfo("app_scram") + " sslmode=verify-full sslrootcert=" +
                   pg.get("PGW_CA_FILE");
  PGconn* conn = PQconnectdb(ci.c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  EXPECT_EQ(PQsslInUse(conn), 1);
  PQfinish(conn);
}

}  // namespace
}  // namespace pgwarden::testing
