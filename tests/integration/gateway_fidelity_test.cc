// Protocol fidelity (issue 14): where PostgreSQL would answer, the gateway answers as
// PostgreSQL does. Real sandbox PostgreSQL, real pgwarden-cp and pgwarden-dp, libpq and a raw
// protocol client (for what libpq hides: message sequences, login SQLSTATEs). Where the answer
// is PostgreSQL's own (syntax errors, binary COPY), the test asks the sandbox directly too and
// compares.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"

namespace pgwarden::testing {
namespace {

class GatewayFidelityTest : public SharedGatewayTest<GatewayFidelityTest> {
 public:
  // No rule sets (so no detect rules), no masks; search_path and app.* may be set at login.
  static constexpr const char* kPolicy =
      R"({"name": "agents", "allowed_kinds": ["select", "insert", "copy_to_stdout",
          "transaction", "set", "show", "ddl_create", "listen", "notify"],
          "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
          "allowed_functions": ["pg_catalog.pg_sleep"],
          "read_only": false, "rule_sets": [],
          "allowed_startup_settings": ["application_name", "client_encoding", "DateStyle",
            "TimeZone", "extra_float_digits", "search_path", "app.*"]})";
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = kPolicy;
    o.loopback_only = true;         // the raw client logs in without TLS from 127.0.0.1
    o.max_message_bytes = 4 << 20;  // 2 MB passes the framer, 10 MB does not
    return o;
  }

 protected:
  Conn connect(const std::string& extra = "") {
    Conn c(PQconnectdb(gw_->conninfo(extra).c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  Conn connect_direct() {
    Conn c(PQconnectdb(gw_->pg().conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  static Res exec(PGconn* c, const std::string& sql) { return Res(PQexec(c, sql.c_str())); }

  static std::string field(const PGresult* r, int code) {
    const char* v = r == nullptr ? nullptr : PQresultErrorField(r, code);
    return v == nullptr ? "" : v;
  }

  // A startup packet with `params` (name, value pairs) after user/database.
  static std::string startup_with(const std::vector<std::pair<std::string, std::string>>& params) {
    std::string body;
    put32(body, 196608);
    auto add = [&](const std::string& k, const std::string& v) { body += cstr(k) + cstr(v); };
    add("user", "agent");
    add("database", "demo");
    for (const auto& [k, v] : params) add(k, v);
    body.push_back('\0');
    std::string out;
    put32(out, static_cast<uint32_t>(body.size() + 4));
    return out + body;
  }

  // Raw login; returns the first message type after the token that is 'E' or 'Z' (with its
  // body), or 0/-1 on EOF/timeout. `*fd` stays open for the caller to close.
  static int raw_login(int* fd, const std::string& token, std::string* body,
                       const std::vector<std::pair<std::string, std::string>>& params = {}) {
    *fd = connect_tcp(gw_->port());
    if (*fd < 0) return -1;
    send_all(*fd, startup_with(params));
    int t = read_message(*fd, body, 10000);
    if (t != 'R') return t;
    send_all(*fd, typed_message('p', cstr(token)));
    for (;;) {
      t = read_message(*fd, body, 10000);
      if (t <= 0 || t == 'E' || t == 'Z') return t;
    }
  }

  // Message types until ReadyForQuery (included).
  static std::string types_until_ready(int fd) {
    std::string types;
    std::string body;
    for (;;) {
      int t = read_message(fd, &body, 10000);
      if (t <= 0) return types + "<eof>";
      types.push_back(static_cast<char>(t));
      if (t == 'Z') return types;
    }
  }
};

TEST_F(GatewayFidelityTest, EmptyQueriesGetEmptyQueryResponseAsFromPostgres) {
  Conn c = connect();
  for (const char* sql : {"", ";", "  ;; ", "-- only a comment", "/* block */"}) {
    Res r = exec(c.get(), sql);
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_EMPTY_QUERY)
        << "[" << sql << "] " << PQresultErrorMessage(r.get());
  }
  // Raw: exactly EmptyQueryResponse then ReadyForQuery, in the simple and extended protocol.
  int fd = -1;
  std::string body;
  ASSERT_EQ(raw_login(&fd, gw_->token(), &body), 'Z');
  send_all(fd, typed_message('Q', cstr("")));
  EXPECT_EQ(types_until_ready(fd), "IZ");
  std::string ext = typed_message('P', cstr("") + cstr("") + std::string(2, '\0')) +
                    typed_message('B', cstr("") + cstr("") + std::string(6, '\0')) +
                    typed_message('D', "P" + cstr("")) +
                    typed_message('E', cstr("") + std::string(4, '\0')) + typed_message('S', "");
  send_all(fd, ext);
  EXPECT_EQ(types_until_ready(fd), "12nIZ");  // ParseComplete BindComplete NoData Empty Ready
  close(fd);
}

TEST_F(GatewayFidelityTest, SyntaxErrorsGetPostgresSqlstateMessageAndPosition) {
  Conn gw = connect();
  Conn pg = connect_direct();
  for (const char* sql : {"SELEC 1", "select 1 +", "select * from crm.customers where",
                          "select 'abc", "select 'é' from from", "select 1; selec 2",
                          "insert into crm.customers values (1,", "select 1.2.3"}) {
    Res want = exec(pg.get(), sql);
    Res got = exec(gw.get(), sql);
    ASSERT_EQ(PQresultStatus(want.get()), PGRES_FATAL_ERROR) << sql;
    EXPECT_EQ(PQresultStatus(got.get()), PGRES_FATAL_ERROR) << sql;
    EXPECT_EQ(field(got.get(), PG_DIAG_SQLSTATE), field(want.get(), PG_DIAG_SQLSTATE)) << sql;
    EXPECT_EQ(field(got.get(), PG_DIAG_MESSAGE_PRIMARY), field(want.get(), PG_DIAG_MESSAGE_PRIMARY))
        << sql;
    EXPECT_EQ(field(got.get(), PG_DIAG_STATEMENT_POSITION),
              field(want.get(), PG_DIAG_STATEMENT_POSITION))
        << sql;
    EXPECT_EQ(field(got.get(), PG_DIAG_SEVERITY_NONLOCALIZED), "ERROR") << sql;
    // The same through Parse (extended protocol).
    Res prep(PQprepare(gw.get(), "", sql, 0, nullptr));
    EXPECT_EQ(field(prep.get(), PG_DIAG_SQLSTATE), field(want.get(), PG_DIAG_SQLSTATE)) << sql;
    EXPECT_EQ(field(prep.get(), PG_DIAG_STATEMENT_POSITION),
              field(want.get(), PG_DIAG_STATEMENT_POSITION))
        << sql;
  }
  // Never forwarded: the sandbox's log has no trace of a statement sent only to the gateway.
  Res only_gw = exec(gw.get(), "SELEC 'fid-never-forwarded'");
  EXPECT_EQ(field(only_gw.get(), PG_DIAG_SQLSTATE), "42601");
  Res ok = exec(gw.get(), "select 1");
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK);
  EXPECT_EQ(gw_->pg().server_log().find("fid-never-forwarded"), std::string::npos);
}

TEST_F(GatewayFidelityTest, FailedLoginsGet28P01LikeAWrongPassword) {
  for (const std::string& token :
       {std::string("pgw_sk_agent1_wrongsecretwrongsecretwrongsecretwrongsecr"),
        std::string("pgw_sk_nobody_k9-Zq2mP4vX7-service-secret"),
        std::string("eyJhbGciOiJSUzI1NiJ9.e30.sig"), std::string("not a token")}) {
    int fd = -1;
    std::string body;
    EXPECT_EQ(raw_login(&fd, token, &body), 'E') << token;
    EXPECT_EQ(error_sqlstate(body), "28P01") << token;
    close(fd);
  }
}

TEST_F(GatewayFidelityTest, SixtyFiveThousandFiveHundredThirtyFiveParametersPass) {
  Conn c = connect();
  for (int n : {32768, 65535}) {
    std::string sql = "select cardinality(ARRAY[";
    std::vector<Oid> types(n, 23);
    std::vector<std::string> values(n);
    std::vector<const char*> ptrs(n);
    for (int i = 0; i < n; ++i) {
      sql += (i ? ",$" : "$") + std::to_string(i + 1);
      values[i] = std::to_string(i % 10);
      ptrs[i] = values[i].c_str();
    }
    sql += "]), (select sum(x) from unnest(ARRAY[$1, $" + std::to_string(n) + "]) x)";
    Res r(PQexecParams(c.get(), sql.c_str(), n, types.data(), ptrs.data(), nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
        << n << ": " << PQresultErrorMessage(r.get());
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string(n));
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 1)), std::to_string((n - 1) % 10));
  }
}

TEST_F(GatewayFidelityTest, BigQueryBodiesPassOrGet54000AndTheSessionStaysUsable) {
  Conn c = connect();
  // 600 kB of SQL: passes.
  std::string literal(600 * 1000, 'x');
  Res big = exec(c.get(), "select length('" + literal + "')");
  ASSERT_EQ(PQresultStatus(big.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(big.get());
  EXPECT_STREQ(PQgetvalue(big.get(), 0, 0), "600000");
  // 2 MB (under max_message_bytes, over what cp can be asked about) and 10 MB (over
  // max_message_bytes): a clear 54000, never a reset, simple and extended protocol.
  for (size_t size : {size_t{2} << 20, size_t{10} << 20}) {
    // Its own shape (the alias), so the verdict is asked of cp, not the verdict cache.
    std::string sql = "select length('" + std::string(size, 'y') + "') as s" + std::to_string(size);
    Res r = exec(c.get(), sql);
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << size;
    EXPECT_EQ(sqlstate(r.get()), "54000") << size << ": " << PQresultErrorMessage(r.get());
    EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("bytes"), std::string::npos);
    Res p(PQprepare(c.get(), "big", sql.c_str(), 0, nullptr));
    EXPECT_EQ(sqlstate(p.get()), "54000") << size << ": " << PQresultErrorMessage(p.get());
    Res after = exec(c.get(), "select 1");
    ASSERT_EQ(PQresultStatus(after.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(after.get());
  }
  std::string limit_message;
  {
    Res r = exec(c.get(), "select length('" + std::string(10 << 20, 'z') + "')");
    limit_message = PQresultErrorMessage(r.get());
  }
  EXPECT_NE(limit_message.find("max_message_bytes"), std::string::npos) << limit_message;
  // A Bind whose value is over max_message_bytes: parameters are data, so it streams through
  // to PostgreSQL (tests/integration/gateway_large_values_test.cc covers 100 MB).
  std::string value(5 << 20, 'v');
  const char* values[1] = {value.c_str()};
  Res bind(PQexecParams(c.get(), "select length($1)", 1, nullptr, values, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(bind.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(bind.get());
  EXPECT_STREQ(PQgetvalue(bind.get(), 0, 0), std::to_string(5 << 20).c_str());
  std::string small(1 << 20, 's');
  values[0] = small.c_str();
  Res bind_ok(PQexecParams(c.get(), "select length($1)", 1, nullptr, values, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(bind_ok.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(bind_ok.get());
  EXPECT_STREQ(PQgetvalue(bind_ok.get(), 0, 0), std::to_string(1 << 20).c_str());
  // Raw extended protocol: after an error, an oversized message up to Sync is discarded like
  // any other (one error per cycle, as PostgreSQL), and the next cycle works.
  int fd = -1;
  std::string body;
  ASSERT_EQ(raw_login(&fd, gw_->token(), &body), 'Z');
  std::string huge_bind = typed_message(
      'B', cstr("") + cstr("") + std::string(2, '\0') + std::string("\0\1", 2) + [] {
        std::string v;
        put32(v, 5u << 20);
        return v + std::string(5u << 20, 'b');
      }() + std::string(2, '\0'));
  send_all(fd, typed_message('P', cstr("") + cstr("SELEC $1") + std::string(2, '\0')) + huge_bind +
                   typed_message('S', ""));
  std::string types;
  for (;;) {
    int t = read_message(fd, &body, 10000);
    if (t <= 0) break;
    types.push_back(static_cast<char>(t));
    if (t == 'E') {
      EXPECT_EQ(error_sqlstate(body), "42601");
    }
    if (t == 'Z') break;
  }
  EXPECT_EQ(types, "EZ");
  send_all(fd, typed_message('Q', cstr("select 1")));
  EXPECT_EQ(types_until_ready(fd), "TDCZ");
  close(fd);
  // Inside a transaction the error fails the transaction, as any PostgreSQL error does.
  ASSERT_EQ(PQresultStatus(exec(c.get(), "begin").get()), PGRES_COMMAND_OK);
  Res in_tx = exec(c.get(), "select '" + std::string(10 << 20, 'w') + "'");
  EXPECT_EQ(sqlstate(in_tx.get()), "54000");
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  EXPECT_EQ(PQresultStatus(exec(c.get(), "rollback").get()), PGRES_COMMAND_OK);
}

TEST_F(GatewayFidelityTest, TextColumnsPassWhenNoDetectorsAreConfigured) {
  Conn c = connect();
  Res r = exec(c.get(), "select full_name, email from crm.customers order by id limit 2");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  Conn pg = connect_direct();
  Res want = exec(pg.get(), "select full_name, email from crm.customers order by id limit 2");
  ASSERT_EQ(PQntuples(r.get()), PQntuples(want.get()));
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 1), PQgetvalue(want.get(), 0, 1));
}

TEST_F(GatewayFidelityTest, StartupParametersAndOptionsReachTheUpstreamWithinThePolicy) {
  Conn c = connect(
      "application_name=fid-agent options='-c search_path=crm,public --app.tenant=42 "
      "-c DateStyle=German'");
  Res r = exec(c.get(),
               "select current_setting('application_name'), current_setting('search_path'), "
               "current_setting('app.tenant'), current_setting('DateStyle')");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "fid-agent");
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 1), "crm,public");
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 2), "42");
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 3), "German, DMY");
  EXPECT_STREQ(PQparameterStatus(c.get(), "DateStyle"), "German, DMY");

  // Raw startup parameters: TimeZone and a custom GUC as separate parameters.
  int fd = -1;
  std::string body;
  ASSERT_EQ(raw_login(&fd, gw_->token(), &body, {{"TimeZone", "Asia/Tokyo"}, {"app.x", "7"}}), 'Z');
  close(fd);

  // Outside the allow-list, or never allowed: FATAL 42501 at login, audited.
  const std::vector<std::vector<std::pair<std::string, std::string>>> refused = {
      {{"options", "-c role=postgres"}},
      {{"role", "postgres"}},
      {{"options", "-c session_authorization=postgres"}},
      {{"some.var", "1"}},
      {{"options", "-c DateStyle=ISO -c work_mem=1GB"}},
      {{"options", "-d 5"}},
      {{"client_encoding", "SJIS"}}};
  for (const auto& params : refused) {
    EXPECT_EQ(raw_login(&fd, gw_->token(), &body, params), 'E') << params[0].second;
    EXPECT_EQ(error_sqlstate(body), "42501") << params[0].second;
    EXPECT_NE(body.find("FATAL"), std::string::npos);
    close(fd);
  }
  // The refusals reach cp's audit log (events are batched: wait for them).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string audit;
  while ((audit = gw_->audit_log()).find("work_mem") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_NE(audit.find("startup_setting_refused"), std::string::npos);
  EXPECT_NE(audit.find("option -c work_mem"), std::string::npos);
}

// A setting the policy lets through but PostgreSQL rejects (a bad value): the client gets
// PostgreSQL's own FATAL (SQLSTATE and message), as directly — not "the upstream closed the
// connection during login" — and the refusal is audited.
TEST_F(GatewayFidelityTest, StartupSettingsPostgresRejectsGetPostgresOwnFatal) {
  const std::string options = "options='-c DateStyle=NotAStyle'";
  Conn direct(PQconnectdb((gw_->pg().conninfo() + " " + options).c_str()));
  Conn through(PQconnectdb(gw_->conninfo(options).c_str()));
  ASSERT_EQ(PQstatus(direct.get()), CONNECTION_BAD);
  ASSERT_EQ(PQstatus(through.get()), CONNECTION_BAD);
  auto fatal_text = [](PGconn* c) {
    std::string m = PQerrorMessage(c);
    auto at = m.find("FATAL:");
    return at == std::string::npos ? m : m.substr(at);  // without host and port
  };
  EXPECT_NE(fatal_text(direct.get()).find("invalid value for parameter"), std::string::npos)
      << fatal_text(direct.get());
  EXPECT_EQ(fatal_text(through.get()), fatal_text(direct.get()));

  int fd = -1;
  std::string body;
  ASSERT_EQ(raw_login(&fd, gw_->token(), &body, {{"DateStyle", "NotAStyle"}}), 'E');
  EXPECT_EQ(error_sqlstate(body), "22023");
  EXPECT_NE(body.find("FATAL"), std::string::npos);
  close(fd);

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string audit;
  while ((audit = gw_->audit_log()).find("upstream_refused_startup") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_NE(audit.find("upstream_refused_startup"), std::string::npos);
  // The session stays usable for the next login.
  Conn ok = connect("options='-c DateStyle=ISO'");
  EXPECT_EQ(PQstatus(ok.get()), CONNECTION_OK);
}

TEST_F(GatewayFidelityTest, BackendKeyDataCarriesTheUpstreamPidAndCancelStillWorks) {
  Conn c = connect();
  Res pid = exec(c.get(), "select pg_backend_pid()");
  ASSERT_EQ(PQresultStatus(pid.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(pid.get());
  const int upstream_pid = std::stoi(PQgetvalue(pid.get(), 0, 0));
  EXPECT_EQ(PQbackendPID(c.get()), upstream_pid);

  ASSERT_EQ(PQresultStatus(exec(c.get(), "listen fid_chan").get()), PGRES_COMMAND_OK);
  ASSERT_EQ(PQresultStatus(exec(c.get(), "notify fid_chan, 'hello'").get()), PGRES_COMMAND_OK);
  PQconsumeInput(c.get());
  PGnotify* n = PQnotifies(c.get());
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->be_pid, upstream_pid);
  EXPECT_STREQ(n->extra, "hello");
  PQfreemem(n);

  // Cancel through the gateway key: wait until the sleep runs upstream, then cancel it.
  ASSERT_EQ(PQsendQuery(c.get(), "select pg_sleep(30)"), 1);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (;;) {
    auto st = gw_->pg().psql(
        "select count(*) from pg_stat_activity where pid = " + std::to_string(upstream_pid) +
        " and state = 'active' and query like '%pg_sleep%'");
    if (st.is_ok() && st->find('1') != std::string::npos) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "pg_sleep never started";
    std::this_thread::yield();
  }
  PGcancel* cancel = PQgetCancel(c.get());
  char err[256];
  ASSERT_EQ(PQcancel(cancel, err, sizeof(err)), 1) << err;
  PQfreeCancel(cancel);
  Res r(PQgetResult(c.get()));
  EXPECT_EQ(sqlstate(r.get()), "57014") << PQresultErrorMessage(r.get());
  while (Res more{PQgetResult(c.get())}) {
  }
  EXPECT_EQ(PQresultStatus(exec(c.get(), "select 1").get()), PGRES_TUPLES_OK);
}

TEST_F(GatewayFidelityTest, BinaryCopyToStdoutPassesWhenNothingIsMasked) {
  auto copy_all = [](PGconn* c, const char* sql, std::string* out) {
    Res r(PQexec(c, sql));
    if (PQresultStatus(r.get()) != PGRES_COPY_OUT)
      return std::string(PQresultErrorMessage(r.get()));
    char* buf = nullptr;
    int n = 0;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
      out->append(buf, static_cast<size_t>(n));
      PQfreemem(buf);
    }
    while (Res more{PQgetResult(c)}) {
    }
    return std::string();
  };
  Conn gw = connect();
  Conn pg = connect_direct();
  const char* sql = "COPY crm.customers TO STDOUT (FORMAT binary)";
  std::string got, want;
  ASSERT_EQ(copy_all(gw.get(), sql, &got), "");
  ASSERT_EQ(copy_all(pg.get(), sql, &want), "");
  EXPECT_EQ(got.substr(0, 11), std::string("PGCOPY\n\377\r\n\0", 11));
  EXPECT_EQ(got, want);
}

TEST_F(GatewayFidelityTest, TablesCreatedInTheSessionWorkAsInPostgres) {
  // Tables the session itself created — committed, uncommitted, temporary — are invisible to
  // any other connection (pgwarden's catalog lookups included) until committed, or forever.
  auto copy_all = [](PGconn* c, const std::string& sql) {
    Res r(PQexec(c, sql.c_str()));
    if (PQresultStatus(r.get()) != PGRES_COPY_OUT) {
      return "ERROR " + std::string(PQresultErrorMessage(r.get()));
    }
    std::string out;
    char* buf = nullptr;
    int n = 0;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
      out.append(buf, static_cast<size_t>(n));
      PQfreemem(buf);
    }
    while (Res more{PQgetResult(c)}) {
    }
    return out;
  };
  auto run = [&](PGconn* c, const std::string& table, bool temp) {
    std::vector<std::string> seen;
    auto step = [&](const std::string& sql) {
      Res r(PQexec(c, sql.c_str()));
      std::string text = PQresStatus(PQresultStatus(r.get()));
      if (PQresultStatus(r.get()) == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(r.get()); ++i) {
          for (int j = 0; j < PQnfields(r.get()); ++j)
            text += std::string(" ") + PQgetvalue(r.get(), i, j);
        }
      } else if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        text += std::string(" ") + PQresultErrorMessage(r.get());
      }
      seen.push_back(sql + " -> " + text);
    };
    step("BEGIN");
    step(std::string("CREATE ") + (temp ? "TEMP " : "") + "TABLE " + table +
         " (id int, note text)");
    step("INSERT INTO " + table + " VALUES (1, 'one'), (2, 'two')");
    step("SELECT * FROM " + table + " ORDER BY id");
    step("SELECT note, count(*) FROM " + table + " GROUP BY note ORDER BY note");
    seen.push_back(copy_all(c, "COPY " + table + " TO STDOUT"));
    seen.push_back(
        copy_all(c, "COPY (SELECT note FROM " + table + " ORDER BY id) TO STDOUT (FORMAT csv)"));
    seen.push_back(copy_all(c, "COPY " + table + " TO STDOUT (FORMAT binary)"));
    step("COMMIT");
    step("SELECT id FROM " + table + " WHERE note = 'two'");
    return seen;
  };
  Conn gw = connect();
  Conn pg = connect_direct();
  // Same names on both sides, in different schemas' worth of tables (dropped after).
  for (bool temp : {false, true}) {
    std::string gw_table = temp ? "fresh_tmp_gw" : "public.fresh_gw";
    std::string pg_table = temp ? "fresh_tmp_pg" : "public.fresh_pg";
    std::vector<std::string> got = run(gw.get(), gw_table, temp);
    std::vector<std::string> want = run(pg.get(), pg_table, temp);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      std::string w = want[i];
      for (size_t at; (at = w.find(temp ? "fresh_tmp_pg" : "fresh_pg")) != std::string::npos;) {
        w.replace(at, temp ? 12 : 8, temp ? "fresh_tmp_gw" : "fresh_gw");
      }
      EXPECT_EQ(got[i], w) << "step " << i << (temp ? " (temp table)" : "");
    }
  }
  ASSERT_TRUE(gw_->pg().psql("DROP TABLE IF EXISTS public.fresh_gw, public.fresh_pg").is_ok());
}

TEST_F(GatewayFidelityTest, CatalogConnectionReconnectsAfterTheServerClosedIt) {
  {
    // Make sure cp's catalog connection exists (a mask plan for a table's RowDescription).
    Conn c = connect();
    Res r = exec(c.get(), "select id, full_name from crm.customers limit 1");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  // Close it from the server side (as an idle timeout or a restart would). The sessions of this
  // test are closed; what is left of app_scram is cp's own connection(s).
  auto killed = gw_->pg().psql(
      "select count(*) from (select pg_terminate_backend(pid, 5000) from pg_stat_activity "
      "where usename = 'app_scram' and pid <> pg_backend_pid()) t");
  ASSERT_TRUE(killed.is_ok()) << killed.status().to_string();
  ASSERT_NE(killed->substr(0, 1), "0") << "no catalog connection to close";
  // A table the catalog has never seen: its plan needs a catalog query on the dead connection.
  Conn c = connect();
  ASSERT_EQ(
      PQresultStatus(exec(c.get(), "create table public.fid_fresh (id int, note text)").get()),
      PGRES_COMMAND_OK);
  ASSERT_EQ(PQresultStatus(exec(c.get(), "insert into public.fid_fresh values (1, 'n')").get()),
            PGRES_COMMAND_OK);
  Res r = exec(c.get(), "select id, note from public.fid_fresh");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 1), "n");
}

}  // namespace
}  // namespace pgwarden::testing
