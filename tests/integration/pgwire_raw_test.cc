// The pgwire codec alone against a real PostgreSQL 15: a raw TCP socket, no libpq. Proves the
// builders produce bytes PostgreSQL accepts and the framer/parsers decode what it sends back
// (authentication, Simple Query, extended query, errors). Expected values come from psql.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "dataplane/pgwire/framer.h"
#include "dataplane/pgwire/messages.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden::pgwire {
namespace {

using testing::PgSandbox;

// A received message, copied out of the framer's buffer so it outlives later reads.
struct Received {
  uint8_t type = 0;
  std::string body;
  Bytes view() const { return as_bytes(body); }
};

class RawConnection {
 public:
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }

  bool connect_to(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }

  void send(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << "send failed";
      off += static_cast<size_t>(n);
    }
  }

  // Next whole message from the server; nullopt on EOF, timeout (10 s) or framing error.
  std::optional<Received> receive() {
    while (true) {
      FrameResult r = framer_.next();
      if (r.status == FrameStatus::kMessage) {
        return Received{r.message.type, std::string(as_string_view(r.message.body))};
      }
      if (r.status == FrameStatus::kError) {
        ADD_FAILURE() << "framing error: " << r.error.message();
        return std::nullopt;
      }
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 10000) != 1) {
        ADD_FAILURE() << "timed out waiting for the server";
        return std::nullopt;
      }
      // Small reads on purpose: messages arrive split across many feeds.
      uint8_t buf[97];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return std::nullopt;
      framer_.feed(Bytes(buf, static_cast<size_t>(n)));
    }
  }

  // Receives until ReadyForQuery (inclusive).
  std::vector<Received> receive_until_ready() {
    std::vector<Received> out;
    while (auto m = receive()) {
      out.push_back(*m);
      if (m->type == ReadyForQuery::kType) break;
    }
    return out;
  }

 private:
  int fd_ = -1;
  BufferingFramer framer_{Direction::kBackend};
};

template <typename T>
T parse_as(const Received& m) {
  EXPECT_EQ(m.type, T::kType);
  T out{};
  FrameError e = parse(m.view(), &out);
  EXPECT_TRUE(e.ok()) << e.message();
  return out;
}

class PgwireRawTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sandbox_ = new PgSandbox();
    Status s = sandbox_->start();
    if (!s.is_ok()) {
      start_error_ = new std::string(s.to_string());
    }
  }
  static void TearDownTestSuite() {
    delete sandbox_;
    sandbox_ = nullptr;
  }
  void SetUp() override {
    ASSERT_EQ(start_error_, nullptr) << "PgSandbox failed to start: " << *start_error_;
  }

  // Runs psql and returns its lines.
  std::vector<std::string> psql_lines(const std::string& sql) {
    auto out = sandbox_->psql(sql);
    EXPECT_TRUE(out.is_ok()) << out.status().to_string();
    std::vector<std::string> lines;
    if (!out.is_ok()) return lines;
    std::istringstream in(*out);
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
    return lines;
  }

  // Connects and authenticates as `role`; returns after the first ReadyForQuery.
  void login(RawConnection& conn, const std::string& role) {
    ASSERT_TRUE(conn.connect_to(sandbox_->port()));
    std::string out;
    const Parameter params[] = {
        {"user", role}, {"database", "demo"}, {"application_name", "pgwire_raw_test"}};
    append_startup_message(out, params);
    conn.send(out);

    auto auth = conn.receive();
    ASSERT_TRUE(auth.has_value());
    Authentication a = parse_as<Authentication>(*auth);
    if (role == "app_clear") {
      ASSERT_EQ(a.code, kAuthCleartextPassword);
      out.clear();
      append_password_message(out, sandbox_->get("PGW_CLEAR_PASSWORD"));
      conn.send(out);
      auth = conn.receive();
      ASSERT_TRUE(auth.has_value());
      a = parse_as<Authentication>(*auth);
    }
    ASSERT_EQ(a.code, kAuthOk);

    bool saw_key = false, saw_version = false;
    std::vector<Received> rest = conn.receive_until_ready();
    ASSERT_FALSE(rest.empty());
    for (const Received& m : rest) {
      if (m.type == BackendKeyData::kType) {
        saw_key = parse_as<BackendKeyData>(m).process_id > 0;
      } else if (m.type == ParameterStatus::kType) {
        ParameterStatus ps = parse_as<ParameterStatus>(m);
        if (ps.name == "server_version") saw_version = ps.value.substr(0, 3) == "15.";
      }
    }
    EXPECT_TRUE(saw_key);
    EXPECT_TRUE(saw_version);
    EXPECT_EQ(parse_as<ReadyForQuery>(rest.back()).status, 'I');
  }

  // Checks a result of `SELECT id, email FROM crm.customers ORDER BY id`, starting at
  // `messages[first]` (the RowDescription), against psql's answer.
  void expect_customer_rows(const std::vector<Received>& messages, size_t first) {
    std::vector<std::string> expected =
        psql_lines("SELECT id || '|' || email FROM crm.customers ORDER BY id");
    ASSERT_GE(expected.size(), 1u);
    std::vector<std::string> oid = psql_lines("SELECT 'crm.customers'::regclass::oid");
    ASSERT_EQ(oid.size(), 1u);

    ASSERT_GT(messages.size(), first + expected.size() + 1);
    RowDescription t = parse_as<RowDescription>(messages[first]);
    std::vector<FieldDescription> fields(t.fields.begin(), t.fields.end());
    ASSERT_EQ(fields.size(), 2u);
    EXPECT_EQ(fields[0].name, "id");
    EXPECT_EQ(fields[0].type_oid, 20u);  // int8
    EXPECT_EQ(fields[0].typlen, 8);
    EXPECT_EQ(fields[0].attnum, 1);
    EXPECT_EQ(std::to_string(fields[0].table_oid), oid[0]);
    EXPECT_EQ(fields[1].name, "email");
    EXPECT_EQ(fields[1].type_oid, 25u);  // text
    EXPECT_EQ(fields[1].typlen, -1);
    EXPECT_EQ(fields[1].attnum, 3);
    EXPECT_EQ(std::to_string(fields[1].table_oid), oid[0]);
    EXPECT_EQ(fields[1].format, 0);

    std::vector<std::string> got;
    size_t i = first + 1;
    for (; i < messages.size() && messages[i].type == DataRow::kType; ++i) {
      DataRow row = parse_as<DataRow>(messages[i]);
      std::vector<Value> cols(row.columns.begin(), row.columns.end());
      ASSERT_EQ(cols.size(), 2u);
      ASSERT_FALSE(cols[0].is_null);
      ASSERT_FALSE(cols[1].is_null);
      got.push_back(std::string(cols[0].text()) + "|" + std::string(cols[1].text()));
    }
    EXPECT_EQ(got, expected);
    ASSERT_LT(i, messages.size());
    EXPECT_EQ(parse_as<CommandComplete>(messages[i]).tag,
              "SELECT " + std::to_string(expected.size()));
  }

  static PgSandbox* sandbox_;
  static std::string* start_error_;
};

PgSandbox* PgwireRawTest::sandbox_ = nullptr;
std::string* PgwireRawTest::start_error_ = nullptr;

constexpr char kCustomersSql[] = "SELECT id, email FROM crm.customers ORDER BY id";

TEST_F(PgwireRawTest, CleartextLoginAndSimpleQueryDecodeRowsFromPostgres) {
  RawConnection conn;
  login(conn, "app_clear");
  std::string out;
  append_query(out, kCustomersSql);
  conn.send(out);
  std::vector<Received> messages = conn.receive_until_ready();
  ASSERT_FALSE(messages.empty());
  expect_customer_rows(messages, 0);
  EXPECT_EQ(parse_as<ReadyForQuery>(messages.back()).status, 'I');

  out.clear();
  append_terminate(out);
  conn.send(out);
  EXPECT_FALSE(conn.receive().has_value());  // server closes after Terminate
}

TEST_F(PgwireRawTest, ExtendedQueryParseBindDescribeExecuteSyncDecodesRows) {
  RawConnection conn;
  login(conn, "app_clear");
  std::string out;
  append_parse(out, "", kCustomersSql);
  append_bind(out, "", "", {}, {}, {});
  append_describe(out, 'P', "");
  append_execute(out, "", 0);
  append_sync(out);
  conn.send(out);
  std::vector<Received> messages = conn.receive_until_ready();
  ASSERT_GE(messages.size(), 4u);
  parse_as<ParseComplete>(messages[0]);
  parse_as<BindComplete>(messages[1]);
  expect_customer_rows(messages, 2);
  EXPECT_EQ(parse_as<ReadyForQuery>(messages.back()).status, 'I');
}

TEST_F(PgwireRawTest, ExtendedQueryWithTextParameterAndNamedStatement) {
  RawConnection conn;
  login(conn, "app_trust");
  std::string out;
  const uint32_t types[] = {20};
  append_parse(out, "by_id", "SELECT email, phone, notes FROM crm.customers WHERE id = $1", types);
  append_describe(out, 'S', "by_id");
  const std::optional<std::string_view> params[] = {"2"};
  append_bind(out, "", "by_id", {}, params, {});
  append_execute(out, "", 0);
  append_sync(out);
  conn.send(out);
  std::vector<Received> messages = conn.receive_until_ready();
  ASSERT_EQ(messages.size(), 7u);
  parse_as<ParseComplete>(messages[0]);
  ParameterDescription pd = parse_as<ParameterDescription>(messages[1]);
  EXPECT_EQ(std::vector<uint32_t>(pd.types.begin(), pd.types.end()), std::vector<uint32_t>{20});
  EXPECT_EQ(parse_as<RowDescription>(messages[2]).fields.size(), 3u);
  parse_as<BindComplete>(messages[3]);
  DataRow row = parse_as<DataRow>(messages[4]);
  std::vector<Value> cols(row.columns.begin(), row.columns.end());
  ASSERT_EQ(cols.size(), 3u);
  std::vector<std::string> expected = psql_lines(
      "SELECT email || '|' || phone || '|' || (notes IS NULL) FROM crm.customers "
      "WHERE id = 2");
  ASSERT_EQ(expected.size(), 1u);
  EXPECT_EQ(std::string(cols[0].text()) + "|" + std::string(cols[1].text()) + "|" +
                (cols[2].is_null ? "true" : "false"),
            expected[0]);
  EXPECT_EQ(parse_as<CommandComplete>(messages[5]).tag, "SELECT 1");
}

TEST_F(PgwireRawTest, BadSqlReturnsErrorResponseWithSqlstate) {
  RawConnection conn;
  login(conn, "app_clear");
  std::string out;
  append_query(out, "SELEC id FROM crm.customers");
  conn.send(out);
  std::vector<Received> messages = conn.receive_until_ready();
  ASSERT_EQ(messages.size(), 2u);
  ErrorResponse e = parse_as<ErrorResponse>(messages[0]);
  EXPECT_EQ(e.sqlstate(), "42601");  // syntax_error
  EXPECT_EQ(e.severity(), "ERROR");
  EXPECT_NE(e.message().find("SELEC"), std::string_view::npos);
  EXPECT_FALSE(e.get(kFieldPosition).empty());

  out.clear();
  append_query(out, "SELECT * FROM crm.no_such_table");
  conn.send(out);
  messages = conn.receive_until_ready();
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(parse_as<ErrorResponse>(messages[0]).sqlstate(), "42P01");  // undefined_table
  EXPECT_EQ(parse_as<ReadyForQuery>(messages[1]).status, 'I');
}

TEST_F(PgwireRawTest, WrongCleartextPasswordIsRejectedWithInvalidPasswordSqlstate) {
  RawConnection conn;
  ASSERT_TRUE(conn.connect_to(sandbox_->port()));
  std::string out;
  const Parameter params[] = {{"user", "app_clear"}, {"database", "demo"}};
  append_startup_message(out, params);
  conn.send(out);
  auto auth = conn.receive();
  ASSERT_TRUE(auth.has_value());
  ASSERT_EQ(parse_as<Authentication>(*auth).code, kAuthCleartextPassword);
  out.clear();
  append_password_message(out, "definitely-not-the-password");
  conn.send(out);
  auto reply = conn.receive();
  ASSERT_TRUE(reply.has_value());
  ErrorResponse e = parse_as<ErrorResponse>(*reply);
  EXPECT_EQ(e.sqlstate(), "28P01");  // invalid_password
  EXPECT_EQ(e.severity(), "FATAL");
}

}  // namespace
}  // namespace pgwarden::pgwire
