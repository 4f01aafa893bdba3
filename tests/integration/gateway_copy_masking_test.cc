// COPY TO STDOUT masking end to end: sandbox PostgreSQL + pgwarden-cp (COPY mask plans from the
// statement's table columns, controlplane/server/copy_planner.h) + pgwarden-dp (CopyData rows
// rewritten by RowMasker::mask_copy_line), driven by libpq (simple and extended protocol,
// PQgetCopyData) and psql (\copy). What COPY returns is compared with what a SELECT through the
// gateway returns for the same rows, and with a direct COPY against the sandbox.
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

struct PgConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, PgConnCloser>;
struct PgResultCloser {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Res = std::unique_ptr<PGresult, PgResultCloser>;

constexpr const char* kCopyPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "copy_to_stdout", "transaction", "set"],
        "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
        "read_only": true, "rule_sets": ["deny", "approve", "pii"],
        "masks": [{"column": "crm.customers.email", "function": "email"},
                  {"column": "crm.customers.ssn", "function": "partial", "keep_last": 4},
                  {"name": "*phone*", "function": "redact", "text": "x,\"y\"\tz"}]})";

const std::vector<std::string> kRawPii = {"ada@example.com", "alan@example.org",
                                          "123-45-6789",     "234-56-7890",
                                          "+1-202-555-0101", "4111111111111111"};

void expect_no_raw_pii(const std::string& text, const std::string& what) {
  for (const std::string& p : kRawPii) {
    EXPECT_EQ(text.find(p), std::string::npos) << what << " leaked " << p << " in: " << text;
  }
}

// One value in COPY text format (PostgreSQL's CopyAttributeOutText escapes).
std::string text_field(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return "\\N";
  std::string out;
  for (const char* p = PQgetvalue(r, row, col); *p; ++p) {
    switch (*p) {
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        out += *p;
    }
  }
  return out;
}

// One value in CSV (default options: quoted when it holds , " CR LF or is empty).
std::string csv_field(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return "";
  std::string v = PQgetvalue(r, row, col);
  if (!v.empty() && v.find_first_of(",\"\r\n") == std::string::npos) return v;
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// The rows of a result as COPY lines in `format` ("text" or "csv").
std::string as_copy(const PGresult* r, const std::string& format) {
  std::string out;
  for (int i = 0; i < PQntuples(r); ++i) {
    for (int j = 0; j < PQnfields(r); ++j) {
      if (j > 0) out += format == "csv" ? ',' : '\t';
      out += format == "csv" ? csv_field(r, i, j) : text_field(r, i, j);
    }
    out += '\n';
  }
  return out;
}

// Splits COPY text output into rows of fields (no embedded raw newlines in text format).
std::vector<std::vector<std::string>> text_rows(const std::string& copy) {
  std::vector<std::vector<std::string>> rows;
  size_t pos = 0;
  while (pos < copy.size()) {
    size_t nl = copy.find('\n', pos);
    std::string line = copy.substr(pos, nl - pos);
    pos = nl + 1;
    std::vector<std::string> fields;
    size_t f = 0;
    while (true) {
      size_t tab = line.find('\t', f);
      fields.push_back(line.substr(f, tab - f));
      if (tab == std::string::npos) break;
      f = tab + 1;
    }
    rows.push_back(std::move(fields));
  }
  return rows;
}

class GatewayCopyMaskingTest : public SharedGatewayTest<GatewayCopyMaskingTest> {
 public:
  static constexpr const char* kPolicy = kCopyPolicy;

 protected:
  Conn connect() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  Conn connect_direct() {
    Conn c(PQconnectdb(gw_->pg().conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  // Reads a COPY OUT started by the last command: all CopyData, then the final result.
  static std::string drain_copy(PGconn* c, int* messages = nullptr) {
    std::string all;
    int n = 0;
    for (;;) {
      char* buf = nullptr;
      int len = PQgetCopyData(c, &buf, 0);
      if (len < 0) break;
      all.append(buf, len);
      PQfreemem(buf);
      ++n;
    }
    if (messages != nullptr) *messages = n;
    return all;
  }
  // Runs a COPY TO STDOUT with PQexec; expects success and returns the data.
  std::string copy(PGconn* c, const std::string& sql) {
    Res r(PQexec(c, sql.c_str()));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_COPY_OUT)
        << sql << ": " << PQresultErrorMessage(r.get());
    if (PQresultStatus(r.get()) != PGRES_COPY_OUT) return "";
    std::string data = drain_copy(c);
    Res done(PQgetResult(c));
    EXPECT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(done.get());
    while (Res more{PQgetResult(c)}) {
    }
    return data;
  }
  Res select(PGconn* c, const std::string& sql) {
    Res r(PQexec(c, sql.c_str()));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
        << sql << ": " << PQresultErrorMessage(r.get());
    return r;
  }
  static std::string psql(const std::string& command) {
    return command_output("psql \"" + gw_->conninfo() + "\" -X -At -v ON_ERROR_STOP=1 -c '" +
                          command + "' 2>&1");
  }
};

TEST_F(GatewayCopyMaskingTest, WholeTableCopyEqualsSelectAndUnmaskedColumnsEqualDirectCopy) {
  Conn c = connect();
  std::string via_gateway = copy(c.get(), "COPY crm.customers TO STDOUT");
  Res sel = select(c.get(), "SELECT * FROM crm.customers ORDER BY id");
  ASSERT_EQ(PQntuples(sel.get()), 5);
  EXPECT_EQ(via_gateway, as_copy(sel.get(), "text"));
  expect_no_raw_pii(via_gateway, "COPY crm.customers");
  // A redact text holding the delimiter, quotes and a tab is escaped, not a column break.
  EXPECT_NE(via_gateway.find("x,\"y\"\\tz"), std::string::npos) << via_gateway;

  Conn direct = connect_direct();
  std::string raw = copy(direct.get(), "COPY crm.customers TO STDOUT");
  auto masked_rows = text_rows(via_gateway);
  auto raw_rows = text_rows(raw);
  ASSERT_EQ(masked_rows.size(), raw_rows.size());
  for (size_t i = 0; i < raw_rows.size(); ++i) {
    ASSERT_EQ(masked_rows[i].size(), 9u);
    ASSERT_EQ(raw_rows[i].size(), 9u);
    for (size_t col : {0, 1, 7, 8}) {  // id, full_name, notes, created_at: no mask applies
      EXPECT_EQ(masked_rows[i][col], raw_rows[i][col]) << "row " << i << " column " << col;
    }
    for (size_t col : {2, 3, 4}) {  // email, phone, ssn
      EXPECT_NE(masked_rows[i][col], raw_rows[i][col]) << "row " << i << " column " << col;
    }
  }
}

TEST_F(GatewayCopyMaskingTest, CsvWithHeaderAndColumnListEqualsSelect) {
  Conn c = connect();
  std::string out = copy(c.get(),
                         "COPY crm.customers (id, ssn, phone, email, notes) TO STDOUT "
                         "WITH (FORMAT csv, HEADER)");
  Res sel = select(c.get(), "SELECT id, ssn, phone, email, notes FROM crm.customers ORDER BY id");
  EXPECT_EQ(out, "id,ssn,phone,email,notes\n" + as_copy(sel.get(), "csv"));
  EXPECT_NE(out.find("\"x,\"\"y\"\"\tz\""), std::string::npos) << out;  // quoted replacement
  EXPECT_NE(out.find("*******6789"), std::string::npos) << out;
  expect_no_raw_pii(out, "COPY csv");
}

TEST_F(GatewayCopyMaskingTest, ExtendedProtocolAndSecondCopyOfAQueryAreMasked) {
  Conn c = connect();
  Res r(PQexecParams(c.get(), "COPY crm.customers (email) TO STDOUT", 0, nullptr, nullptr, nullptr,
                     nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_OUT) << PQresultErrorMessage(r.get());
  int messages = 0;
  std::string data = drain_copy(c.get(), &messages);
  EXPECT_EQ(messages, 5);  // one CopyData per row
  while (Res more{PQgetResult(c.get())}) {
  }
  Res sel = select(c.get(), "SELECT email FROM crm.customers ORDER BY id");
  EXPECT_EQ(data, as_copy(sel.get(), "text"));

  ASSERT_EQ(PQsendQuery(c.get(),
                        "COPY crm.customers (id) TO STDOUT; "
                        "COPY crm.customers (ssn) TO STDOUT (DELIMITER '|')"),
            1);
  std::vector<std::string> copies;
  while (Res part{PQgetResult(c.get())}) {
    if (PQresultStatus(part.get()) == PGRES_COPY_OUT) {
      copies.push_back(drain_copy(c.get()));
    } else {
      EXPECT_EQ(PQresultStatus(part.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(part.get());
    }
  }
  ASSERT_EQ(copies.size(), 2u);
  EXPECT_EQ(copies[0], "1\n2\n3\n4\n5\n");
  Res ssn = select(c.get(), "SELECT ssn FROM crm.customers ORDER BY id");
  EXPECT_EQ(copies[1], as_copy(ssn.get(), "text"));
}

TEST_F(GatewayCopyMaskingTest, PsqlBackslashCopyIsMasked) {
  std::string out = psql("\\copy crm.customers (email, ssn) to stdout");
  Conn c = connect();
  Res sel = select(c.get(), "SELECT email, ssn FROM crm.customers ORDER BY id");
  EXPECT_EQ(out, as_copy(sel.get(), "text"));
  expect_no_raw_pii(out, "psql \\copy");
}

TEST_F(GatewayCopyMaskingTest, BinaryCopyOfMaskedTableIsRefusedAndSessionStaysUsable) {
  Conn c = connect();
  Res r(PQexec(c.get(), "COPY crm.customers TO STDOUT (FORMAT binary)"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "42501");
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("FORMAT csv"), std::string::npos)
      << PQresultErrorMessage(r.get());
  Res ok = select(c.get(), "SELECT email FROM crm.customers WHERE id = 1");
  EXPECT_STREQ(PQgetvalue(ok.get(), 0, 0), "***@example.com");
}

TEST_F(GatewayCopyMaskingTest, CopyQueryUsingMaskedColumnIsRefusedOthersAllowed) {
  Conn c = connect();
  for (const char* sql : {"COPY (SELECT id, email FROM crm.customers) TO STDOUT",
                          "COPY (SELECT * FROM crm.customers) TO STDOUT (FORMAT csv)",
                          "COPY (SELECT upper(ssn) FROM crm.customers) TO STDOUT"}) {
    Res r(PQexec(c.get(), sql));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << sql;
    EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "42501") << sql;
    EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("masked column"), std::string::npos)
        << PQresultErrorMessage(r.get());
  }
  std::string out =
      copy(c.get(), "COPY (SELECT id, full_name FROM crm.customers ORDER BY id) TO STDOUT");
  EXPECT_EQ(out.substr(0, 15), "1\tAda Lovelace\n");
}

TEST_F(GatewayCopyMaskingTest, UnsupportedCopyOptionIsRefused) {
  Conn c = connect();
  Res r(PQexec(c.get(), "COPY crm.customers TO STDOUT (FORMAT csv, ENCODING 'LATIN1')"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(r.get(), PG_DIAG_SQLSTATE), "42501");
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("encoding"), std::string::npos)
      << PQresultErrorMessage(r.get());
}

}  // namespace
}  // namespace pgwarden::testing
