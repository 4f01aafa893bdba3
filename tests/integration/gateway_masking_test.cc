// Result masking end to end: sandbox PostgreSQL + pgwarden-cp (mask plans from the policy's
// `masks`) + pgwarden-dp (RowMasker on DataRows and COPY OUT lines, PII detect rules from
// rules/sets/pii.rules), driven by libpq (text and binary result formats, simple and extended
// protocol) and by psql.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <stdio.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

// The policy under test: two declared column masks and the PII detectors.
constexpr const char* kMaskingPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "copy_to_stdout", "transaction", "prepare",
        "execute", "deallocate", "set", "show"],
        "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
        "allowed_functions": ["pg_catalog.upper", "pg_catalog.row_to_json",
                              "pg_catalog.string_agg", "pg_catalog.lower"],
        "read_only": true, "rule_sets": ["deny", "approve", "pii"],
        "masks": [{"column": "crm.customers.email", "function": "email"},
                  {"column": "crm.customers.ssn", "function": "partial", "keep_last": 4}]})";

// Raw PII of the sandbox seed (scripts/sandbox-seed.sql) that must never reach the client.
const std::vector<std::string> kRawPii = {
    "ada@example.com", "alan@example.org", "grace@example.net", "123-45-6789",
    "234-56-7890",     "345-67-8901",      "4111111111111111",  "ADA@EXAMPLE.COM"};

void expect_no_raw_pii(const std::string& text, const std::string& what) {
  for (const std::string& p : kRawPii) {
    EXPECT_EQ(text.find(p), std::string::npos) << what << " leaked " << p << " in: " << text;
  }
}

class GatewayMaskingTest : public SharedGatewayTest<GatewayMaskingTest> {
 public:
  static constexpr const char* kPolicy = kMaskingPolicy;

 protected:
  Conn connect() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  // Simple Query protocol (text results).
  Res exec(PGconn* c, const std::string& sql) { return Res(PQexec(c, sql.c_str())); }
  // Extended protocol; result_format 0 = text, 1 = binary.
  Res exec_params(PGconn* c, const std::string& sql, int result_format) {
    return Res(PQexecParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, result_format));
  }
  // All values of a result, one row per line, '|' between columns.
  static std::string dump(const PGresult* r) {
    std::string out;
    for (int i = 0; i < PQntuples(r); ++i) {
      for (int j = 0; j < PQnfields(r); ++j) {
        if (j > 0) out += '|';
        out.append(PQgetvalue(r, i, j), PQgetlength(r, i, j));
      }
      out += '\n';
    }
    return out;
  }
  // psql through the gateway; returns stdout (unaligned, tuples only).
  static std::string psql(const std::string& sql) {
    return command_output("psql \"" + gw_->conninfo() + "\" -X -At -v ON_ERROR_STOP=1 -c \"" + sql +
                          "\" 2>&1");
  }
};

TEST_F(GatewayMaskingTest, DeclaredColumnMasksApplyInTextFormat) {
  Conn c = connect();
  Res r = exec(c.get(), "SELECT email, ssn FROM crm.customers ORDER BY id LIMIT 2");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  ASSERT_EQ(PQntuples(r.get()), 2);
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "***@example.com");
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 1), "*******6789");
  EXPECT_STREQ(PQgetvalue(r.get(), 1, 0), "***@example.org");
  EXPECT_STREQ(PQgetvalue(r.get(), 1, 1), "*******7890");
}

TEST_F(GatewayMaskingTest, DeclaredColumnMasksApplyInBinaryFormat) {
  Conn c = connect();
  Res r = exec_params(c.get(), "SELECT email, ssn, id FROM crm.customers ORDER BY id LIMIT 1", 1);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  ASSERT_EQ(PQntuples(r.get()), 1);
  ASSERT_EQ(PQfformat(r.get(), 0), 1);
  EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0), PQgetlength(r.get(), 0, 0)), "***@example.com");
  EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 1), PQgetlength(r.get(), 0, 1)), "*******6789");
  // An unmasked binary int8 passes through untouched (8 bytes, big-endian 1).
  ASSERT_EQ(PQgetlength(r.get(), 0, 2), 8);
  EXPECT_EQ(PQgetvalue(r.get(), 0, 2)[7], 1);
}

TEST_F(GatewayMaskingTest, AliasedColumnKeepsItsMask) {
  Conn c = connect();
  Res r = exec(c.get(), "SELECT email AS e FROM crm.customers WHERE id = 3");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "***@example.net");
}

// Functions of masked columns are refused by their lineage (gateway_lineage_test has the
// full corpus); derived columns of unmasked sources are still masked by the detectors.
TEST_F(GatewayMaskingTest, DerivedColumnsOfMaskedSourcesAreRefusedOthersDetected) {
  Conn c = connect();
  for (const std::string q : {"SELECT upper(email) FROM crm.customers ORDER BY id",
                              "SELECT row_to_json(c)::text FROM crm.customers c ORDER BY id",
                              "SELECT string_agg(ssn, ',' ORDER BY id) FROM crm.customers"}) {
    for (int format : {0, 1}) {
      Res r = format == 0 ? exec(c.get(), q) : exec_params(c.get(), q, 1);
      EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << q;
      EXPECT_EQ(sqlstate(r.get()), "42501") << q;
      EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("masked column"), std::string::npos)
          << PQresultErrorMessage(r.get());
    }
  }
  const std::string q = "SELECT string_agg(card_number, ' ' ORDER BY id) FROM crm.customers";
  for (int format : {0, 1}) {
    Res r = format == 0 ? exec(c.get(), q) : exec_params(c.get(), q, 1);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
        << q << ": " << PQresultErrorMessage(r.get());
    ASSERT_GT(PQntuples(r.get()), 0) << q;
    std::string all = dump(r.get());
    expect_no_raw_pii(all, q + " format " + std::to_string(format));
    EXPECT_NE(all.find('*'), std::string::npos) << q << ": " << all;
  }
  // Non-PII content of a derived column survives detection.
  Res r = exec(c.get(), "SELECT upper(full_name) FROM crm.customers WHERE id = 1");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "ADA LOVELACE");
}

TEST_F(GatewayMaskingTest, PreparedStatementReusedWithAndWithoutDescribe) {
  Conn c = connect();
  Res p(
      PQprepare(c.get(), "cust", "SELECT email, ssn FROM crm.customers WHERE id = $1", 1, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(p.get());
  const char* ids[] = {"1", "2", "4"};
  const char* want_email[] = {"***@example.com", "***@example.org", "***@example.com"};
  const char* want_ssn[] = {"*******6789", "*******7890", "*******9012"};
  for (int i = 0; i < 3; ++i) {
    for (int format : {0, 1}) {
      const char* vals[] = {ids[i]};
      Res r(PQexecPrepared(c.get(), "cust", 1, vals, nullptr, nullptr, format));
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
      EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0), PQgetlength(r.get(), 0, 0)), want_email[i]);
      EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 1), PQgetlength(r.get(), 0, 1)), want_ssn[i]);
    }
  }
  // The client's own Describe still gets its RowDescription (libpq describes via PQdescribe).
  Res d(PQdescribePrepared(c.get(), "cust"));
  ASSERT_EQ(PQresultStatus(d.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(d.get());
  EXPECT_EQ(PQnfields(d.get()), 2);
  EXPECT_STREQ(PQfname(d.get(), 0), "email");
}

TEST_F(GatewayMaskingTest, CopyQueryWithoutMaskedColumnsIsMaskedByDetectors) {
  Conn c = connect();
  // COPY (query) output has no column origins: cp refuses it when the query uses a masked
  // column (gateway_copy_masking_test) and otherwise the detectors scan every whole line.
  Res r = exec(c.get(),
               "COPY (SELECT id, full_name, notes, card_number FROM crm.customers ORDER BY id) "
               "TO STDOUT");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_OUT) << PQresultErrorMessage(r.get());
  std::string all;
  int lines = 0;
  for (;;) {
    char* buf = nullptr;
    int n = PQgetCopyData(c.get(), &buf, 0);
    if (n < 0) break;
    all.append(buf, n);
    PQfreemem(buf);
    ++lines;
  }
  Res done(PQgetResult(c.get()));
  EXPECT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(done.get());
  EXPECT_EQ(lines, 5);
  expect_no_raw_pii(all, "COPY");
  // Structure intact: four tab-separated fields per line, ids in clear.
  EXPECT_EQ(all.substr(0, 2), "1\t");
  EXPECT_EQ(std::count(all.begin(), all.end(), '\t'), 15);
}

TEST_F(GatewayMaskingTest, BinaryCopyToStdoutIsRefusedAndSessionStaysUsable) {
  Conn c = connect();
  Res r = exec(c.get(), "COPY (SELECT full_name FROM crm.customers) TO STDOUT (FORMAT binary)");
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "42501");
  Res ok = exec(c.get(), "SELECT email FROM crm.customers WHERE id = 5");
  ASSERT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(ok.get());
  EXPECT_STREQ(PQgetvalue(ok.get(), 0, 0), "***@example.com");
}

TEST_F(GatewayMaskingTest, PsqlSeesMaskedValues) {
  std::string out = psql("SELECT email, ssn FROM crm.customers ORDER BY id LIMIT 1");
  EXPECT_EQ(out, "***@example.com|*******6789\n");
  out = psql("SELECT upper(email), row_to_json(c) FROM crm.customers c ORDER BY id");
  expect_no_raw_pii(out, "psql derived");
  EXPECT_NE(out.find("masked column"), std::string::npos) << out;
  out = psql("COPY crm.customers (email, ssn) TO STDOUT WITH (FORMAT csv)");
  expect_no_raw_pii(out, "psql COPY csv");
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 5) << out;
}

}  // namespace
}  // namespace pgwarden::testing
