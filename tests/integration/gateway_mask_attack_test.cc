// Masking under hostile SQL, one test per class of leak (docs/masking.md, "Lineage" and
// "Errors, notices and notifications"): sandbox PostgreSQL with an attack row whose masked
// values are distinctive literals no content detector recognises, the quick-start masks on
// crm.customers, a policy that also allows EXPLAIN, LISTEN/NOTIFY, SET and DDL; real
// pgwarden-cp and pgwarden-dp; libpq (simple query, extended text and binary, prepared
// statements, pipelining) and psql. Every byte the client gets — rows, every error and notice
// field, notification payloads, COPY data — is scanned for the raw values; the recordings are
// scanned at the end.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"
#include "tests/integration/leak_probe.h"

namespace pgwarden::testing {
namespace {

constexpr const char* kAttackPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "insert", "update", "delete", "merge",
        "copy_to_stdout", "copy_file", "transaction", "prepare", "execute", "deallocate", "set", "show",
        "explain", "explain_analyze", "listen", "notify", "ddl_create", "ddl_alter",
        "create_function"],
        "allowed_relations": ["crm.*", "public.*", "pg_catalog.*", "pg_temp.*"],
        "read_only": false, "rule_sets": ["pii"],
        "masks": [{"column": "crm.customers.email", "function": "email"},
                  {"column": "crm.customers.ssn", "function": "partial", "keep_last": 4},
                  {"column": "crm.customers.phone", "function": "hash"},
                  {"column": "crm.customers.card_number", "function": "partial", "keep_last": 4},
                  {"column": "crm.customers.iban", "function": "redact", "text": "[iban]"}],
        "recording": {"level": "full", "required": true, "row_cap": 100}})";

// The attack rows (ids 101, 102) and what the database owner sets up around them: constraints
// that echo rows in errors, a table referencing a masked column, a trigger that raises a
// notice with a masked value (detectable, so the detectors have something to find).
constexpr const char* kSchema = R"(SET ROLE app_scram;
INSERT INTO crm.customers (id, full_name, email, phone, ssn, card_number, iban, notes) VALUES
  (101, 'Mallory Attack', 'zq.leak.mail@attack.example', 'ZQPHONE-4417', 'ZQSSN-77-3141',
   'ZQCARD-9902', 'ZQIBAN-5521', 'attack row'),
  (102, 'Trudy Attack', 'zq.other.mail@attack.example', 'ZQPHONE-4418', 'ZQSSN-77-3141',
   'ZQCARD-9903', 'ZQIBAN-5522', 'attack row 2');
ALTER TABLE crm.customers ADD CONSTRAINT notes_short CHECK (length(notes) < 100);
CREATE UNIQUE INDEX customers_notes_ssn ON crm.customers (notes, ssn);
CREATE UNIQUE INDEX customers_email ON crm.customers (email);
CREATE TABLE crm.contacts (id int PRIMARY KEY, email text REFERENCES crm.customers (email));
INSERT INTO crm.contacts VALUES (1, 'zq.leak.mail@attack.example');
CREATE FUNCTION crm.note_contact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'new order for %', (SELECT email FROM crm.customers WHERE id = NEW.customer_id);
  RETURN NEW;
END $$;
CREATE TRIGGER note_contact BEFORE INSERT ON crm.orders FOR EACH ROW
  EXECUTE FUNCTION crm.note_contact();
CREATE TABLE public.attack_log (k text, v text);
RESET ROLE;
GRANT pg_write_server_files TO app_scram;)";

// Raw masked values of the attack rows: none may appear anywhere the client looks.
const std::vector<std::string> kRaw = {"ZQSSN",  "zq.leak", "zq.other", "ZQPHONE",
                                       "ZQCARD", "ZQIBAN",  "zqssn",    "ZQ.LEAK"};

class GatewayMaskAttackTest : public SharedGatewayTest<GatewayMaskAttackTest> {
 public:
  static constexpr const char* kPolicy = kAttackPolicy;

  // The policy's `hash` mask needs a masking key.
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = kPolicy;
    o.loopback_only = true;  // the raw protocol client logs in without TLS from 127.0.0.1
    char path[] = "/tmp/pgw-mask-attack-key-XXXXXX";
    int fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    std::string key(32, 'k');
    EXPECT_EQ(write(fd, key.data(), key.size()), static_cast<ssize_t>(key.size()));
    close(fd);
    key_file_ = path;
    o.masking_key_file = key_file_;
    return o;
  }

  static void SetUpTestSuite() {
    SharedGatewayTest<GatewayMaskAttackTest>::SetUpTestSuite();
    if (gw_ == nullptr) return;
    auto st = gw_->pg().psql(kSchema);
    ASSERT_TRUE(st.is_ok()) << st.status().to_string();
  }

  static void TearDownTestSuite() {
    SharedGatewayTest<GatewayMaskAttackTest>::TearDownTestSuite();
    if (!key_file_.empty()) unlink(key_file_.c_str());  // cp reads it when it needs it
  }

 protected:
  static inline std::string key_file_;

  // A client whose every received byte is kept in seen_: values, all error and notice fields
  // (verbose), notifications.
  struct Client {
    Conn conn;
    std::string seen;
  };

  static void on_notice(void* arg, const PGresult* r) {
    auto* c = static_cast<Client*>(arg);
    char* text = PQresultVerboseErrorMessage(r, PQERRORS_VERBOSE, PQSHOW_CONTEXT_ALWAYS);
    c->seen += "NOTICE: ";
    if (text != nullptr) c->seen += text;
    PQfreemem(text);
  }

  std::unique_ptr<Client> connect() {
    auto c = std::make_unique<Client>();
    c->conn.reset(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c->conn.get()), CONNECTION_OK) << PQerrorMessage(c->conn.get());
    PQsetErrorVerbosity(c->conn.get(), PQERRORS_VERBOSE);
    PQsetErrorContextVisibility(c->conn.get(), PQSHOW_CONTEXT_ALWAYS);
    PQsetNoticeReceiver(c->conn.get(), &GatewayMaskAttackTest::on_notice, c.get());
    return c;
  }

  static std::string bytes(const PGresult* r) { return result_bytes(r); }

  static void expect_clean(const std::string& text, const std::string& what) {
    for (const std::string& raw : kRaw) {
      EXPECT_EQ(text.find(raw), std::string::npos) << what << " leaked " << raw << " in:\n" << text;
    }
  }

  // 0: simple query; 1: extended, text results; 2: extended, binary results.
  static Res run(Client& c, const std::string& sql, int mode) {
    Res r = run_in_mode(c.conn.get(), sql, mode);
    c.seen += bytes(r.get());
    return r;
  }

  // Drains pending notifications into seen; returns their payloads.
  static std::vector<std::string> notifications(Client& c) {
    std::vector<std::string> out;
    PQconsumeInput(c.conn.get());
    while (PGnotify* n = PQnotifies(c.conn.get())) {
      out.emplace_back(n->extra);
      c.seen += std::string("NOTIFY ") + n->relname + ": " + n->extra + "\n";
      PQfreemem(n);
    }
    return out;
  }

  // Waits (on the socket, up to 10 s) until a notification with `payload` arrives; returns all
  // payloads received meanwhile.
  static std::vector<std::string> wait_notification(Client& c, const std::string& payload) {
    std::vector<std::string> all;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      for (std::string& p : notifications(c)) all.push_back(std::move(p));
      if (std::find(all.begin(), all.end(), payload) != all.end()) return all;
      pollfd pfd{PQsocket(c.conn.get()), POLLIN, 0};
      poll(&pfd, 1, 200);
    }
    ADD_FAILURE() << "no notification " << payload;
    return all;
  }

  // Every mode refuses `sql` with 42501 before it runs.
  void expect_refused(Client& c, const std::string& sql) {
    for (int mode : {0, 1, 2}) {
      Res r = run(c, sql, mode);
      EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << sql << " mode " << mode;
      EXPECT_EQ(sqlstate(r.get()), "42501")
          << sql << " mode " << mode << ": " << PQresultErrorMessage(r.get());
    }
    expect_clean(c.seen, sql);
  }

  // Every mode returns rows; returns mode 0's bytes.
  std::string expect_rows(Client& c, const std::string& sql) {
    std::string text;
    for (int mode : {0, 1, 2}) {
      Res r = run(c, sql, mode);
      EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
          << sql << " mode " << mode << ": " << PQresultErrorMessage(r.get());
      if (mode == 0) text = bytes(r.get());
    }
    expect_clean(c.seen, sql);
    return text;
  }

  // A raw protocol client (for messages libpq never sends, such as Execute with max_rows):
  // logs in over plaintext from loopback; returns the socket after ReadyForQuery, or -1.
  static int raw_login() {
    int fd = connect_tcp(gw_->port());
    if (fd >= 0 && !login_plaintext(fd, gw_->token())) {
      close(fd);
      fd = -1;
    }
    return fd;
  }

  static std::string psql(const std::string& sql) {
    return command_output("psql \"" + gw_->conninfo() + "\" -X -At -v VERBOSITY=verbose -c \"" +
                          sql + "\" 2>&1");
  }
};

// Constraint violations echo rows and keys in DETAIL, including columns the statement never
// named; values that reach a cast or a date function show up in the error message.
TEST_F(GatewayMaskAttackTest, ErrorsCarryNoMaskedValue) {
  auto c = connect();
  for (int mode : {0, 1, 2}) {
    for (const char* sql : {
             // NOT NULL, CHECK: "Failing row contains (101, null, zq.leak..., ZQSSN...)".
             "UPDATE crm.customers SET full_name = NULL WHERE id = 101",
             "UPDATE crm.customers SET notes = repeat('x', 200) WHERE id = 101",
             // Unique index over a masked column: "Key (notes, ssn)=(attack row, ZQSSN...)".
             "UPDATE crm.customers SET notes = 'attack row' WHERE id = 102",
             // Foreign key to a masked column: "Key (email)=(zq.leak...) is still referenced".
             "DELETE FROM crm.customers WHERE id = 101",
         }) {
      Res r = run(*c, sql, mode);
      EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << sql;
      EXPECT_EQ(sqlstate(r.get()).substr(0, 2), "23") << sql << ": " << bytes(r.get());
      const char* detail = PQresultErrorField(r.get(), PG_DIAG_MESSAGE_DETAIL);
      EXPECT_NE(std::string(detail ? detail : "").find("pgwarden: detail removed"),
                std::string::npos)
          << sql << ": " << bytes(r.get());
    }
  }
  expect_clean(c->seen, "constraint violations");
  // Computations on masked values are refused before they run, even when their result is
  // not returned: the error would show the value.
  for (const char* sql : {
           "SELECT ssn::int FROM crm.customers",
           "SELECT 1/0 FROM crm.customers WHERE ssn > ''",
           "SELECT count(*) FROM (SELECT DISTINCT ssn::int FROM crm.customers) s",
           "SELECT count(*) FROM (SELECT to_date(ssn, 'YYYY-MM') AS d, id FROM crm.customers "
           "OFFSET 0) s",
           "WITH x AS MATERIALIZED (SELECT make_date(card_number::int, 1, 1) AS d, id FROM "
           "crm.customers) SELECT count(id) FROM x",
           "SELECT c.id FROM crm.customers c, LATERAL (SELECT c.iban::numeric) l",
           "EXPLAIN ANALYZE SELECT ssn::int FROM crm.customers",
           "EXPLAIN (ANALYZE, VERBOSE) SELECT count(*) FROM (SELECT phone::int FROM "
           "crm.customers OFFSET 0) s",
           "SELECT id FROM crm.customers WHERE id = 101 AND EXISTS (SELECT ssn::int)",
       }) {
    expect_refused(*c, sql);
  }
  // Prepared statements are decided at PREPARE / Parse.
  Res p(PQexec(c->conn.get(), "PREPARE p1 AS SELECT $1::text || ssn FROM crm.customers"));
  c->seen += bytes(p.get());
  EXPECT_EQ(sqlstate(p.get()), "42501") << PQresultErrorMessage(p.get());
  Res pp(PQprepare(c->conn.get(), "p2",
                   "SELECT count(*) FROM (SELECT ssn::int FROM crm.customers WHERE id = $1) s", 1,
                   nullptr));
  c->seen += bytes(pp.get());
  EXPECT_EQ(sqlstate(pp.get()), "42501") << PQresultErrorMessage(pp.get());
  // psql (verbose errors) sees the same.
  std::string out = psql("UPDATE crm.customers SET full_name = NULL WHERE id = 101");
  EXPECT_NE(out.find("23502"), std::string::npos) << out;
  c->seen += out;
  expect_clean(c->seen, "errors");
  // Nothing was changed by the refused or failed statements.
  auto row = gw_->pg().psql("SELECT full_name, notes FROM crm.customers WHERE id = 101");
  ASSERT_TRUE(row.is_ok());
  EXPECT_EQ(*row, "Mallory Attack|attack row\n");
}

// Errors inside a pipeline and inside a transaction keep the protocol in step and carry no
// value either.
// A view WITH CHECK OPTION over unmasked columns of a masked table: a write through it that
// leaves the view's WHERE fails with 44000 (not class 23), and PostgreSQL's DETAIL shows the
// whole row of the base table, masked columns included ("Failing row contains (101, Mallory
// Attack, zq.leak.mail@..., ZQPHONE-4417, ZQSSN-77-3141, ...)").
TEST_F(GatewayMaskAttackTest, CheckOptionViolationsThroughViewsCarryNoMaskedValue) {
  auto c = connect();
  Res v(PQexec(c->conn.get(),
               "CREATE OR REPLACE VIEW public.attack_notes AS SELECT id, notes FROM crm.customers "
               "WHERE notes <> 'moved away' WITH CHECK OPTION"));
  ASSERT_EQ(PQresultStatus(v.get()), PGRES_COMMAND_OK) << PQerrorMessage(c->conn.get());
  for (int mode : {0, 1, 2}) {
    for (const char* sql : {
             "UPDATE public.attack_notes SET notes = 'moved away' WHERE id = 101",
             "INSERT INTO public.attack_notes (id, notes) VALUES (900, 'moved away')",
         }) {
      Res r = run(*c, sql, mode);
      EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << sql;
      // 44000 for the UPDATE; the INSERT may fail on NOT NULL first (class 23): both redacted.
      const std::string state = sqlstate(r.get());
      EXPECT_TRUE(state == "44000" || state.substr(0, 2) == "23") << sql << ": " << state;
      const char* detail = PQresultErrorField(r.get(), PG_DIAG_MESSAGE_DETAIL);
      EXPECT_NE(std::string(detail ? detail : "").find("pgwarden: detail removed"),
                std::string::npos)
          << sql << ": " << bytes(r.get());
    }
  }
  expect_clean(c->seen, "check option violations");
}

// Row choices that compare a masked column with a value the client picked without naming the
// comparison: USING / NATURAL against a literal column (an equality test per row), and a
// TABLESAMPLE seed computed from a masked value (the sampled rows tell the seed).
TEST_F(GatewayMaskAttackTest, JoinsOnLiteralColumnsAndSampleSeedsAreRefused) {
  auto c = connect();
  // The guesses are not the raw markers: statement texts are recorded (RecordingsHoldNoRawValue).
  for (const char* sql : {
           "SELECT id FROM crm.customers NATURAL JOIN (SELECT 'GUESS-77-3141'::text AS ssn) g",
           "SELECT id FROM crm.customers JOIN (SELECT 'GUESS-77-3141'::text AS ssn) g USING (ssn)",
           "SELECT id FROM crm.customers JOIN (VALUES ('GUESS-77-3141')) g(ssn) USING (ssn)",
           "SELECT id FROM crm.customers TABLESAMPLE BERNOULLI (50) REPEATABLE ((SELECT "
           "ascii(ssn) FROM crm.customers WHERE id = 101))",
       }) {
    expect_refused(*c, sql);
  }
  // Joins on unmasked columns and constant seeds still run.
  expect_rows(*c, "SELECT c.id FROM crm.customers c JOIN (SELECT 101::bigint AS id) g USING (id)");
  expect_rows(*c, "SELECT id FROM crm.customers TABLESAMPLE BERNOULLI (50) REPEATABLE (7)");
}

TEST_F(GatewayMaskAttackTest, PipelinedErrorsCarryNoMaskedValue) {
  auto c = connect();
  PGconn* conn = c->conn.get();
  ASSERT_EQ(PQenterPipelineMode(conn), 1);
  const char* sqls[] = {"SELECT id, ssn FROM crm.customers WHERE id = 101",
                        "UPDATE crm.customers SET full_name = NULL WHERE id = 101",
                        "SELECT md5(ssn) FROM crm.customers"};
  for (const char* sql : sqls) {
    ASSERT_EQ(PQsendQueryParams(conn, sql, 0, nullptr, nullptr, nullptr, nullptr, 0), 1);
  }
  ASSERT_EQ(PQpipelineSync(conn), 1);
  int results = 0;
  bool synced = false;
  while (!synced) {
    Res r(PQgetResult(conn));
    if (!r) continue;  // the end of one query's results
    c->seen += bytes(r.get());
    if (PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) synced = true;
    ++results;
  }
  EXPECT_GE(results, 2);
  ASSERT_EQ(PQexitPipelineMode(conn), 1);
  expect_clean(c->seen, "pipeline");
  EXPECT_NE(c->seen.find("*********3141"), std::string::npos) << c->seen;
  Res b(PQexec(conn, "BEGIN"));
  Res u(PQexec(conn, "UPDATE crm.customers SET notes = repeat('y', 300) WHERE id = 101"));
  c->seen += bytes(u.get());
  EXPECT_EQ(sqlstate(u.get()), "23514");
  Res after(PQexec(conn, "SELECT 1"));
  EXPECT_EQ(sqlstate(after.get()), "25P02");
  Res rb(PQexec(conn, "ROLLBACK"));
  expect_clean(c->seen, "transaction");
}

// pg_notify of a masked value is refused wherever it hides; notices raised by the owner's
// triggers and notifications from outside the gateway go through the detectors.
TEST_F(GatewayMaskAttackTest, NoticesAndNotificationsCarryNoMaskedValue) {
  auto listener = connect();
  auto attacker = connect();
  Res l(PQexec(listener->conn.get(), "LISTEN attack_chan"));
  ASSERT_EQ(PQresultStatus(l.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(l.get());
  for (const char* sql : {
           "SELECT pg_notify('attack_chan', ssn) FROM crm.customers",
           "SELECT count(*) FROM (SELECT pg_notify('attack_chan', ssn) FROM crm.customers "
           "OFFSET 0) s",
           "SELECT c.id FROM crm.customers c, LATERAL (SELECT pg_notify('attack_chan', c.email)) "
           "n",
           "EXPLAIN ANALYZE SELECT pg_notify('attack_chan', phone) FROM crm.customers",
           "SELECT id FROM crm.customers WHERE pg_notify('attack_chan', iban) IS NULL",
           "WITH n AS MATERIALIZED (SELECT pg_notify('attack_chan', card_number) FROM "
           "crm.customers) SELECT count(*) FROM n",
       }) {
    expect_refused(*attacker, sql);
  }
  // A notification from outside the gateway (the database owner) with a detectable value.
  auto direct = gw_->pg().psql(
      "SELECT pg_notify('attack_chan', 'contact ' || email) FROM crm.customers WHERE id = 101");
  ASSERT_TRUE(direct.is_ok()) << direct.status().to_string();
  Res done(PQexec(attacker->conn.get(), "NOTIFY attack_chan, 'attack_done'"));
  ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(done.get());
  std::vector<std::string> got = wait_notification(*listener, "attack_done");
  ASSERT_EQ(got.size(), 2u) << listener->seen;
  EXPECT_EQ(got[0].substr(0, 8), "contact ");
  EXPECT_NE(got[0].find('*'), std::string::npos) << got[0];
  expect_clean(listener->seen, "notifications");
  // The owner's trigger raises a NOTICE with the customer's e-mail.
  Res ins(
      PQexec(attacker->conn.get(), "INSERT INTO crm.orders (customer_id, amount) VALUES (101, 1)"));
  ASSERT_EQ(PQresultStatus(ins.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(ins.get());
  EXPECT_NE(attacker->seen.find("new order for "), std::string::npos) << attacker->seen;
  expect_clean(attacker->seen, "notices");
}

// Built-in functions that run SQL given as text or read a relation or cursor by name.
TEST_F(GatewayMaskAttackTest, FunctionsThatRunSqlFromStringsAreRefused) {
  auto c = connect();
  for (const char* sql : {
           "SELECT query_to_xml('SELECT ssn FROM crm.customers', true, false, '')",
           "SELECT query_to_xml_and_xmlschema('SELECT * FROM crm.customers', true, false, '')",
           "SELECT table_to_xml('crm.customers', true, false, '')",
           "SELECT pg_catalog.table_to_xml('crm.customers'::regclass, false, true, '')",
           "SELECT schema_to_xml('crm', true, false, '')",
           "SELECT database_to_xml(true, false, '')",
           "SELECT xpath('//ssn/text()', query_to_xml('SELECT ssn FROM crm.customers', true, "
           "false, ''))",
           "SELECT * FROM ts_stat('SELECT to_tsvector(ssn) FROM crm.customers')",
           "SELECT format('%s', query_to_xml('SELECT iban FROM crm.customers', true, false, ''))",
       }) {
    expect_refused(*c, sql);
  }
  // A cursor over masked columns is masked when fetched, and refused to cursor_to_xml.
  Res b(PQexec(c->conn.get(), "BEGIN"));
  Res d(PQexec(c->conn.get(),
               "DECLARE cur CURSOR FOR SELECT ssn, email FROM crm.customers WHERE id = 101"));
  ASSERT_EQ(PQresultStatus(d.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(d.get());
  Res x(PQexec(c->conn.get(), "SELECT cursor_to_xml('cur', 10, false, false, '')"));
  c->seen += bytes(x.get());
  EXPECT_EQ(sqlstate(x.get()), "42501") << PQresultErrorMessage(x.get());
  Res rb(PQexec(c->conn.get(), "ROLLBACK"));
  Res b2(PQexec(c->conn.get(), "BEGIN"));
  Res d2(PQexec(c->conn.get(),
                "DECLARE cur CURSOR FOR SELECT ssn, email FROM crm.customers WHERE id = 101"));
  Res f(PQexec(c->conn.get(), "FETCH ALL FROM cur"));
  c->seen += bytes(f.get());
  ASSERT_EQ(PQresultStatus(f.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(f.get());
  EXPECT_STREQ(PQgetvalue(f.get(), 0, 0), "*********3141");
  Res rb2(PQexec(c->conn.get(), "ROLLBACK"));
  // User functions (security definer or not), operators, triggers and rules: the function is
  // refused wherever it would run without a call the analysis sees.
  Res fn(PQexec(c->conn.get(),
                "CREATE FUNCTION public.attack_f(int, int) RETURNS text SECURITY DEFINER "
                "LANGUAGE sql AS 'SELECT ssn FROM crm.customers WHERE id = 101'"));
  ASSERT_EQ(PQresultStatus(fn.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(fn.get());
  for (const char* sql : {
           "SELECT public.attack_f(1, 2)",
           "SELECT attack_f(1, 2)",
           "CREATE OPERATOR public.### (function = public.attack_f, leftarg = int, "
           "rightarg = int)",
           "CREATE TABLE public.attack_defaults (x text DEFAULT public.attack_f(1, 2))",
           "CREATE RULE attack_rule AS ON INSERT TO public.attack_log DO ALSO "
           "INSERT INTO public.attack_log SELECT 'r', ssn FROM crm.customers",
       }) {
    Res r = run(*c, sql, 0);
    EXPECT_EQ(sqlstate(r.get()), "42501") << sql << ": " << PQresultErrorMessage(r.get());
  }
  auto ops = gw_->pg().psql("SELECT count(*) FROM pg_operator WHERE oprname = '###'");
  ASSERT_TRUE(ops.is_ok());
  EXPECT_EQ(*ops, "0\n");
  expect_clean(c->seen, "query text functions");
}

// Whole rows, composites, JSON, aggregates, set operations, RETURNING, MERGE, COPY (query),
// EXPLAIN: refused, or masked column by column.
TEST_F(GatewayMaskAttackTest, WholeRowsAndCompositesNeverCarryRawValues) {
  auto c = connect();
  for (const char* sql : {
           "SELECT t FROM crm.customers t",
           "SELECT (t).ssn FROM crm.customers t",
           "SELECT row(t.*) FROM crm.customers t",
           "SELECT to_json(t) FROM crm.customers t",
           "SELECT row_to_json(t) FROM crm.customers t",
           "SELECT jsonb_build_object('s', ssn) FROM crm.customers",
           "SELECT hstore(t) FROM crm.customers t",
           "SELECT array_agg(t) FROM crm.customers t",
           "SELECT string_agg(ssn, ',') FROM crm.customers",
           "SELECT t::text FROM crm.customers t",
           "SELECT (SELECT x FROM (SELECT t) x) FROM crm.customers t",
           "SELECT l.v FROM crm.customers t, LATERAL (SELECT t.email AS v) l",
           "SELECT first_value(ssn) OVER () FROM crm.customers",
           "SELECT id, ssn FROM crm.customers GROUP BY GROUPING SETS ((id), (id, ssn))",
           "SELECT DISTINCT ON (email) id FROM crm.customers",
           "SELECT id::text FROM crm.customers UNION SELECT ssn FROM crm.customers",
           "SELECT full_name FROM crm.customers INTERSECT SELECT iban FROM crm.customers",
           "VALUES ((SELECT ssn FROM crm.customers WHERE id = 101))",
           "WITH RECURSIVE r(n, s) AS (SELECT 1, card_number FROM crm.customers UNION ALL "
           "SELECT n + 1, s FROM r WHERE n < 2) SELECT s FROM r",
           "UPDATE crm.customers SET notes = notes WHERE id = 101 RETURNING ssn",
           "INSERT INTO public.attack_log SELECT 'x', 'y' RETURNING (SELECT email FROM "
           "crm.customers WHERE id = 101)",
           "DELETE FROM crm.customers WHERE id = -1 RETURNING iban",
           "MERGE INTO public.attack_log a USING crm.customers c ON a.k = c.id::text "
           "WHEN NOT MATCHED THEN INSERT VALUES (c.id::text, c.ssn)",
           "SELECT DISTINCT ssn FROM crm.customers",
       }) {
    expect_refused(*c, sql);
  }
  // Masked column by column.
  std::string out = expect_rows(*c, "SELECT t.* FROM crm.customers t WHERE id = 101");
  EXPECT_NE(out.find("*********3141"), std::string::npos) << out;
  EXPECT_NE(out.find("[iban]"), std::string::npos) << out;
  expect_rows(*c, "TABLE crm.customers");
  out = expect_rows(*c, "SELECT v.ssn FROM (SELECT * FROM crm.customers WHERE id = 101) v");
  EXPECT_EQ(out, "*********3141|\n");
  // EXPLAIN shows the plan, never values.
  out = expect_rows(*c, "EXPLAIN (ANALYZE, VERBOSE) SELECT ssn, email FROM crm.customers");
  // COPY: the table masked per column; a query over masked columns refused.
  Res copy(PQexec(c->conn.get(), "COPY (SELECT id, ssn FROM crm.customers) TO STDOUT"));
  c->seen += bytes(copy.get());
  EXPECT_EQ(sqlstate(copy.get()), "42501") << PQresultErrorMessage(copy.get());
  Res table(PQexec(c->conn.get(), "COPY crm.customers (id, ssn, email, iban) TO STDOUT"));
  ASSERT_EQ(PQresultStatus(table.get()), PGRES_COPY_OUT) << PQresultErrorMessage(table.get());
  std::string lines;
  char* buf = nullptr;
  for (int n; (n = PQgetCopyData(c->conn.get(), &buf, 0)) > 0; PQfreemem(buf)) lines.append(buf, n);
  Res end(PQgetResult(c->conn.get()));
  EXPECT_EQ(PQresultStatus(end.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(end.get());
  EXPECT_NE(lines.find("101\t*********3141\t***@attack.example\t[iban]"), std::string::npos)
      << lines;
  c->seen += lines;
  expect_clean(c->seen, "whole rows");
}

// Functions of the value, compared or sorted: each would reveal it a bit at a time.
TEST_F(GatewayMaskAttackTest, SideChannelsThatComputeOnTheValueAreRefused) {
  auto c = connect();
  for (const char* sql : {
           "SELECT id FROM crm.customers WHERE ssn LIKE 'ZQ%'",
           "SELECT length(ssn) FROM crm.customers",
           "SELECT md5(email) FROM crm.customers",
           "SELECT substr(card_number, 1, 1) FROM crm.customers",
           "SELECT ascii(iban) FROM crm.customers",
           "SELECT id, ssn = 'guess-3141' FROM crm.customers",
           "SELECT id, ssn IS NULL FROM crm.customers",
           "SELECT id FROM crm.customers ORDER BY ssn",
           "SELECT id, ssn FROM crm.customers ORDER BY 2",
           "SELECT id, row_number() OVER (ORDER BY phone) FROM crm.customers",
           "SELECT id FROM crm.customers ORDER BY email LIMIT 1",
           "SELECT min(ssn) FROM crm.customers",
           "SELECT greatest(ssn, 'M') FROM crm.customers",
           "SELECT count(*) FROM crm.customers GROUP BY left(ssn, 1)",
           "SELECT id FROM crm.customers WHERE id IN (SELECT id FROM crm.customers WHERE "
           "iban > 'M')",
       }) {
    expect_refused(*c, sql);
  }
}

// Lineage holes: a masked value carried through VALUES (PostgreSQL reports no origin there, so
// no mask plan could mask it), set operations and aggregates that compare raw values (rows 101
// and 102 share one ssn: count(DISTINCT ssn) over them would say so), grouping sets, whole
// rows and recursive CTE SEARCH/CYCLE columns. Each near miss that shows no masked value
// still runs.
TEST_F(GatewayMaskAttackTest, LineageHolesThroughValuesSetOperationsAndAggregatesAreClosed) {
  auto c = connect();
  for (const char* sql : {
           "SELECT * FROM (VALUES ((SELECT ssn FROM crm.customers WHERE id = 101))) v(x)",
           "SELECT v.x FROM crm.customers c, LATERAL (VALUES (c.ssn)) v(x) WHERE c.id = 101",
           "SELECT v.* FROM crm.customers c CROSS JOIN LATERAL (VALUES (c.email, 1)) v "
           "WHERE c.id = 101",
           "SELECT count(DISTINCT ssn) FROM crm.customers WHERE id IN (101, 102)",
           "SELECT array_agg(DISTINCT ssn) FROM crm.customers",
           "SELECT string_agg(full_name, ',' ORDER BY ssn) FROM crm.customers",
           "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn) FROM crm.customers",
           "SELECT count(*) FROM (SELECT ssn FROM crm.customers INTERSECT "
           "SELECT 'guess-3141') s",
           "SELECT count(*) FROM (SELECT ssn FROM crm.customers EXCEPT ALL SELECT 'guess') s",
           "SELECT count(*) FROM (SELECT ssn FROM crm.customers WHERE id = 101 UNION "
           "SELECT ssn FROM crm.customers WHERE id = 102) s",
           "SELECT count(*) FROM crm.customers GROUP BY ROLLUP (ssn)",
           "SELECT ssn, count(*) FROM crm.customers GROUP BY GROUPING SETS ((1), ())",
           "SELECT c FROM crm.customers c WHERE id = 101",
           "SELECT c.*::text FROM crm.customers c WHERE id = 101",
           "SELECT row_to_json(c) FROM crm.customers c WHERE id = 101",
           "SELECT jsonb_path_query(to_jsonb(c), '$.ssn') FROM crm.customers c",
           "SELECT regexp_replace(ssn, 'x', 'y') FROM crm.customers",
           "WITH RECURSIVE t(id, s) AS (SELECT id, ssn FROM crm.customers WHERE id = 101 "
           "UNION ALL SELECT id, s FROM t) CYCLE s SET m USING p SELECT * FROM t",
           "WITH RECURSIVE t(id, s) AS (SELECT id, ssn FROM crm.customers WHERE id = 101 "
           "UNION ALL SELECT id + 1, s FROM t WHERE id < 103) SEARCH DEPTH FIRST BY s SET o "
           "SELECT id FROM t",
       }) {
    expect_refused(*c, sql);
  }
  for (const char* sql : {
           "SELECT ssn, email FROM crm.customers WHERE id = 101",
           "SELECT count(*) FROM (SELECT ssn FROM crm.customers UNION ALL SELECT 'x') s",
           "SELECT v.x FROM crm.customers c, LATERAL (VALUES (c.full_name)) v(x) "
           "WHERE c.id = 101",
           "SELECT id FROM crm.customers UNION SELECT id FROM crm.customers",
           "SELECT full_name, count(*) FROM crm.customers GROUP BY ROLLUP (1)",
           "SELECT count(DISTINCT full_name) FROM crm.customers",
       }) {
    expect_rows(*c, sql);
  }
}

// Names that resolve to the masked columns by other spellings or paths, DDL that would rename
// or copy them, and copies into unmasked tables.
TEST_F(GatewayMaskAttackTest, SchemaAndIdentityTricksKeepTheMask) {
  auto c = connect();
  std::string out =
      expect_rows(*c, "SELECT \"ssn\", U&\"\\0065mail\" FROM crm.\"customers\" WHERE id = 101");
  EXPECT_EQ(out, "*********3141|***@attack.example|\n");
  Res sp(PQexec(c->conn.get(), "SET search_path = crm, public"));
  ASSERT_EQ(PQresultStatus(sp.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(sp.get());
  out = expect_rows(*c, "SELECT ssn FROM customers WHERE id = 101");
  EXPECT_EQ(out, "*********3141|\n");
  // A temporary table of the same name first in the search path.
  Res tmp(PQexec(c->conn.get(), "CREATE TEMP TABLE customers (id int, ssn text)"));
  ASSERT_EQ(PQresultStatus(tmp.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(tmp.get());
  Res sp2(PQexec(c->conn.get(), "SET search_path = pg_temp, crm, public"));
  expect_refused(*c, "SELECT md5(ssn) FROM customers");
  Res reset(PQexec(c->conn.get(), "RESET search_path"));
  for (const char* sql : {
           "ALTER TABLE crm.customers RENAME COLUMN ssn TO harmless",
           "ALTER TABLE crm.customers RENAME TO harmless",
           "ALTER TABLE crm.customers SET SCHEMA public",
           "ALTER SCHEMA crm RENAME TO harmless",
           "ALTER TABLE crm.customers ADD COLUMN harmless text GENERATED ALWAYS AS (ssn) STORED",
           "ALTER TABLE crm.customers ALTER COLUMN ssn TYPE int USING ssn::int",
           "CREATE INDEX ON crm.customers ((ssn::int))",
           "CREATE TABLE public.stolen AS SELECT ssn FROM crm.customers",
           "CREATE MATERIALIZED VIEW public.stolen_mv AS SELECT email FROM crm.customers",
           "SELECT phone INTO public.stolen2 FROM crm.customers",
           "INSERT INTO public.attack_log SELECT id::text, ssn FROM crm.customers",
           "UPDATE public.attack_log SET v = (SELECT iban FROM crm.customers WHERE id = 101)",
           "CREATE VIEW public.attack_v AS SELECT ssn::int AS n FROM crm.customers",
       }) {
    Res r = run(*c, sql, 0);
    EXPECT_EQ(sqlstate(r.get()), "42501") << sql << ": " << PQresultErrorMessage(r.get());
  }
  auto columns = gw_->pg().psql(
      "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = "
      "'crm.customers'::regclass AND attnum > 0 AND NOT attisdropped");
  ASSERT_TRUE(columns.is_ok());
  EXPECT_NE(columns->find(",ssn,"), std::string::npos) << *columns;
  EXPECT_EQ(columns->find("harmless"), std::string::npos) << *columns;
  auto copied = gw_->pg().psql(
      "SELECT count(*) FROM pg_class WHERE relname IN ('stolen', 'stolen2', 'stolen_mv', "
      "'attack_v')");
  ASSERT_TRUE(copied.is_ok());
  EXPECT_EQ(*copied, "0\n");
  // Swapping a relation whose statements were already checked (cached verdict, prepared
  // statement) for a view over the masked table: the view is refused.
  Res t(PQexec(c->conn.get(), "CREATE TABLE public.attack_swap (x text)"));
  ASSERT_EQ(PQresultStatus(t.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(t.get());
  expect_rows(*c, "SELECT upper(x) FROM public.attack_swap");
  Res prep(
      PQprepare(c->conn.get(), "swap_p", "SELECT upper(x) FROM public.attack_swap", 0, nullptr));
  ASSERT_EQ(PQresultStatus(prep.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(prep.get());
  Res mv(PQexec(c->conn.get(), "ALTER TABLE public.attack_swap RENAME TO attack_swap_old"));
  ASSERT_EQ(PQresultStatus(mv.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(mv.get());
  for (const char* sql : {"CREATE VIEW public.attack_swap AS SELECT ssn AS x FROM crm.customers",
                          "CREATE VIEW public.attack_swap AS SELECT x FROM (SELECT email AS x "
                          "FROM crm.customers) s"}) {
    Res r = run(*c, sql, 0);
    EXPECT_EQ(sqlstate(r.get()), "42501") << sql << ": " << PQresultErrorMessage(r.get());
  }
  Res gone(PQexec(c->conn.get(), "SELECT upper(x) FROM public.attack_swap"));
  EXPECT_EQ(sqlstate(gone.get()), "42P01") << PQresultErrorMessage(gone.get());
  Res exec_p(PQexecPrepared(c->conn.get(), "swap_p", 0, nullptr, nullptr, nullptr, 0));
  c->seen += bytes(exec_p.get());
  // A view created in the same transaction is unknown to cp's catalog: refused.
  Res b(PQexec(c->conn.get(), "BEGIN"));
  Res v(PQexec(c->conn.get(), "CREATE VIEW public.attack_tx AS SELECT 'x'::text AS x"));
  EXPECT_EQ(PQresultStatus(v.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(v.get());
  Res s(PQexec(c->conn.get(), "SELECT x FROM public.attack_tx"));
  c->seen += bytes(s.get());
  EXPECT_EQ(sqlstate(s.get()), "42501") << PQresultErrorMessage(s.get());
  Res rb(PQexec(c->conn.get(), "ROLLBACK"));
  auto log = gw_->pg().psql("SELECT count(*) FROM public.attack_log WHERE v LIKE 'ZQ%'");
  ASSERT_TRUE(log.is_ok());
  EXPECT_EQ(*log, "0\n");
  expect_clean(c->seen, "schema tricks");
}

// Channels other than result rows: a sub-select's value handed to a function whose result
// nobody returns — a session setting read back later, a notification, an advisory lock other
// sessions can test for a guessed key — was not "computed on" while the sub-select returned
// the column as is, so a FROM function, an unused sub-select column or a CTE carried it out.
TEST_F(GatewayMaskAttackTest, MaskedValuesNeverLeaveThroughSessionStateOrSideEffects) {
  auto c = connect();
  Res listen(PQexec(c->conn.get(), "LISTEN pgw_leak"));
  ASSERT_EQ(PQresultStatus(listen.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(listen.get());
  for (const char* sql : {
           "SELECT 1 FROM set_config('pgw.leak', (SELECT ssn FROM crm.customers WHERE id = 101), "
           "false) f",
           "SELECT id FROM (SELECT id, set_config('pgw.leak', (SELECT d.email FROM crm.customers "
           "d WHERE d.id = c.id), false) FROM crm.customers c WHERE id = 101 OFFSET 0) s",
           "WITH x AS (SELECT pg_notify('pgw_leak', (SELECT iban FROM crm.customers WHERE "
           "id = 101))) SELECT 1 FROM x",
           "SELECT 1 FROM pg_try_advisory_lock(hashtext((SELECT card_number FROM crm.customers "
           "WHERE id = 101))) l",
           "SELECT 1 FROM (SELECT ARRAY(SELECT phone FROM crm.customers) a) s",
           // Already closed by earlier rounds, kept here as the rest of the class: writes into
           // the same table or another one, RETURNING, MERGE, sequences by value.
           "UPDATE crm.customers SET notes = ssn WHERE id = 101",
           "UPDATE crm.customers SET notes = notes WHERE id = 101 RETURNING ssn",
           "DELETE FROM crm.customers WHERE id = 999 RETURNING *",
           "INSERT INTO public.attack_log SELECT 'k', email FROM crm.customers WHERE id = 101 "
           "RETURNING k",
           "MERGE INTO public.attack_log l USING crm.customers c ON l.k = c.id::text WHEN NOT "
           "MATCHED THEN INSERT VALUES (c.id::text, c.iban)",
           "SELECT 1 FROM (SELECT setval('crm.customers_id_seq', ascii(ssn)) FROM crm.customers "
           "OFFSET 0) s",
       }) {
    expect_refused(*c, sql);
  }
  // Nothing reached the setting, a notification or a lock.
  std::string out = expect_rows(*c, "SELECT current_setting('pgw.leak', true) IS NULL");
  EXPECT_EQ(out, "t|\n");
  auto locks = gw_->pg().psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'");
  ASSERT_TRUE(locks.is_ok());
  EXPECT_EQ(*locks, "0\n");
  Res n(PQexec(c->conn.get(), "NOTIFY pgw_leak, 'end'"));
  ASSERT_EQ(PQresultStatus(n.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(n.get());
  EXPECT_EQ(wait_notification(*c, "end"), std::vector<std::string>{"end"});
  // Near misses that hand on no masked value run; so does EXISTS over the masked table (it
  // tells whether a row exists, which its own WHERE decides, whatever its columns are).
  expect_rows(*c,
              "SELECT 1 FROM set_config('pgw.ok', (SELECT full_name FROM crm.customers WHERE "
              "id = 101), false) f");
  out = expect_rows(*c, "SELECT current_setting('pgw.ok')");
  EXPECT_EQ(out, "Mallory Attack|\n");
  out = expect_rows(*c,
                    "SELECT id FROM crm.customers c WHERE id = 101 AND EXISTS (SELECT * FROM "
                    "crm.customers d WHERE d.id = c.id)");
  EXPECT_EQ(out, "101|\n");
  expect_clean(c->seen, "session state");
}

// `ORDER BY 1` and `ORDER BY 2` differ only in a number, which the verdict cache's shape key
// leaves out: a cached verdict for one must never answer the other when a position may name
// a masked column. Each order (allowed first, refused first) twice, so the second round meets
// whatever the first left in the caches.
TEST_F(GatewayMaskAttackTest, OutputPositionsAreCheckedForEveryNumber) {
  auto c = connect();
  for (int round = 0; round < 2; ++round) {
    std::string out =
        expect_rows(*c, "SELECT id, ssn FROM crm.customers WHERE id IN (101, 102) ORDER BY 1");
    EXPECT_EQ(out, "101|*********3141|\n102|*********3141|\n");
    expect_refused(*c, "SELECT id, ssn FROM crm.customers WHERE id IN (101, 102) ORDER BY 2");
    expect_refused(*c, "SELECT DISTINCT ON (2) id, ssn FROM crm.customers WHERE id = 101");
    out = expect_rows(*c, "SELECT DISTINCT ON (1) id, ssn FROM crm.customers WHERE id = 101");
    EXPECT_EQ(out, "101|*********3141|\n");
  }
}

// Schema changes that reach masked columns from a table the masks do not name: a foreign key
// that references one (every insert into the referencing table then tells whether a guessed
// value exists: an equality oracle), a row-security policy whose USING filters by one (the
// same oracle, through which guesses stay visible), a default or CHECK that runs SQL text,
// attaching the masked table as a partition of another table (whose name then shows its rows,
// with the parent as their origin), and CLUSTER by an index on a masked column (every scan
// without ORDER BY then returns the rows in the value's order).
TEST_F(GatewayMaskAttackTest, ConstraintsPoliciesAndPartitionsThatReachMaskedColumnsAreRefused) {
  auto c = connect();
  Res parent(
      PQexec(c->conn.get(),
             "CREATE TABLE public.attack_parts (LIKE crm.customers) PARTITION BY LIST (id)"));
  ASSERT_EQ(PQresultStatus(parent.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(parent.get());
  for (const char* sql : {
           "CREATE TABLE public.attack_fk (e text REFERENCES crm.customers (email))",
           "CREATE TABLE public.attack_fk (n text, s text, FOREIGN KEY (n, s) REFERENCES "
           "crm.customers (notes, ssn))",
           "ALTER TABLE public.attack_log ADD FOREIGN KEY (v) REFERENCES crm.customers (email)",
           "ALTER TABLE public.attack_parts ATTACH PARTITION crm.customers DEFAULT",
           "CREATE POLICY attack_rls ON public.attack_log USING (k IN (SELECT ssn FROM "
           "crm.customers))",
           "CREATE TABLE public.attack_def (x text DEFAULT query_to_xml('select ssn from "
           "crm.customers', true, false, '')::text)",
           "CLUSTER crm.customers USING customers_email",
       }) {
    Res r = run(*c, sql, 0);
    EXPECT_EQ(sqlstate(r.get()), "42501") << sql << ": " << PQresultErrorMessage(r.get());
  }
  auto state = gw_->pg().psql(
      "SELECT (SELECT count(*) FROM pg_class WHERE relname IN ('attack_fk', 'attack_def')), "
      "(SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.attack_log'::regclass), "
      "(SELECT relispartition FROM pg_class WHERE oid = 'crm.customers'::regclass), (SELECT "
      "count(*) FROM pg_policy WHERE polname = 'attack_rls'), (SELECT count(*) FROM pg_index "
      "WHERE indrelid = 'crm.customers'::regclass AND indisclustered)");
  ASSERT_TRUE(state.is_ok());
  EXPECT_EQ(*state, "0|0|f|0|0\n");
  // A key on a column no mask covers is an ordinary schema change.
  Res ok(PQexec(c->conn.get(),
                "CREATE TABLE public.attack_fk_ok (c int REFERENCES crm.customers (id))"));
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(ok.get());
  expect_clean(c->seen, "constraints");
}

// COPY table TO a server file: the file is outside the result masking, and COPY ... FROM or a
// file reader brings it back raw. Copying only unmasked columns still works.
TEST_F(GatewayMaskAttackTest, CopyOfMaskedColumnsToServerFilesIsRefused) {
  auto c = connect();
  const std::string dir = gw_->pg().get("PGW_SOCKET_DIR");  // the server (postgres) writes here
  const std::string leak = dir + "/attack-copy-leak.csv";
  const std::string ok = dir + "/attack-copy-ok.csv";
  for (const std::string& sql : {"COPY crm.customers TO '" + leak + "'",
                                 "COPY crm.customers (id, ssn) TO '" + leak + "' (FORMAT csv)"}) {
    Res r = run(*c, sql, 0);
    EXPECT_EQ(sqlstate(r.get()), "42501") << sql << ": " << PQresultErrorMessage(r.get());
  }
  EXPECT_NE(access(leak.c_str(), F_OK), 0) << leak << " was written";
  Res r = run(*c, "COPY crm.customers (id, full_name) TO '" + ok + "'", 0);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_EQ(access(ok.c_str(), F_OK), 0) << ok << " was not written";
  expect_clean(c->seen, "COPY to a server file");
}

// Rows that reach the client other than as the answer to one simple statement: a cursor
// declared WITH HOLD in an earlier transaction, fetched in text and binary; a BINARY cursor
// (binary rows over the simple query protocol); a portal executed
// in parts (Execute with max_rows, no Describe: the client never asked for a RowDescription),
// in text and binary result format.
TEST_F(GatewayMaskAttackTest, HeldCursorsAndPartlyExecutedPortalsAreMasked) {
  auto c = connect();
  for (const char* sql :
       {"BEGIN",
        "DECLARE attack_held SCROLL CURSOR WITH HOLD FOR SELECT id, ssn, email FROM crm.customers "
        "WHERE id IN (101, 102) ORDER BY id",
        "COMMIT"}) {
    Res r(PQexec(c->conn.get(), sql));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << sql << PQresultErrorMessage(r.get());
  }
  // Three modes, one row each: 101 (text), 102 (extended text), none left (binary).
  std::string out = expect_rows(*c, "FETCH 1 FROM attack_held");
  EXPECT_EQ(out, "101|*********3141|***@attack.example|\n");
  Res back(PQexecParams(c->conn.get(), "FETCH BACKWARD 1 FROM attack_held", 0, nullptr, nullptr,
                        nullptr, nullptr, 1));
  ASSERT_EQ(PQresultStatus(back.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(back.get());
  ASSERT_EQ(PQntuples(back.get()), 1);
  EXPECT_EQ(std::string(PQgetvalue(back.get(), 0, 1), PQgetlength(back.get(), 0, 1)),
            "*********3141");
  c->seen += bytes(back.get());
  // The cursor's own text in pg_cursors is what the client sent: no value.
  out = expect_rows(*c, "SELECT statement FROM pg_cursors WHERE name = 'attack_held'");
  EXPECT_NE(out.find("WITH HOLD"), std::string::npos) << out;
  Res close_cursor(PQexec(c->conn.get(), "CLOSE attack_held"));
  EXPECT_EQ(PQresultStatus(close_cursor.get()), PGRES_COMMAND_OK);
  // A BINARY cursor: binary rows over the simple query protocol.
  for (const char* sql : {"BEGIN",
                          "DECLARE attack_bin BINARY CURSOR FOR SELECT ssn, phone, iban FROM "
                          "crm.customers WHERE id = 101"}) {
    Res r(PQexec(c->conn.get(), sql));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << sql << PQresultErrorMessage(r.get());
  }
  Res bin(PQexec(c->conn.get(), "FETCH 1 FROM attack_bin"));
  ASSERT_EQ(PQresultStatus(bin.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(bin.get());
  ASSERT_EQ(PQntuples(bin.get()), 1);
  EXPECT_EQ(PQfformat(bin.get(), 0), 1);
  EXPECT_EQ(std::string(PQgetvalue(bin.get(), 0, 0), PQgetlength(bin.get(), 0, 0)),
            "*********3141");
  EXPECT_EQ(std::string(PQgetvalue(bin.get(), 0, 2), PQgetlength(bin.get(), 0, 2)), "[iban]");
  c->seen += bytes(bin.get());
  Res end_bin(PQexec(c->conn.get(), "COMMIT"));
  EXPECT_EQ(PQresultStatus(end_bin.get()), PGRES_COMMAND_OK);
  expect_clean(c->seen, "held cursor");

  for (int format : {0, 1}) {
    int fd = raw_login();
    ASSERT_GE(fd, 0);
    auto int16 = [](uint16_t v) { return std::string{char(v >> 8), char(v & 0xff)}; };
    std::string max_rows;
    put32(max_rows, 1);
    std::string msgs =
        typed_message('P', cstr("") +
                               cstr("SELECT id, ssn, iban FROM crm.customers WHERE id IN (101, "
                                    "102) ORDER BY id") +
                               int16(0)) +
        typed_message('B', cstr("") + cstr("") + int16(0) + int16(0) + int16(1) +
                               int16(static_cast<uint16_t>(format))) +
        typed_message('E', cstr("") + max_rows) + typed_message('E', cstr("") + max_rows) +
        typed_message('S', "");
    ASSERT_TRUE(send_all(fd, msgs));
    std::string seen;
    int rows = 0, suspended = 0, descriptions = 0;
    for (;;) {
      std::string body;
      int t = read_message(fd, &body, 30000);
      ASSERT_GT(t, 0) << "no ReadyForQuery; format " << format;
      seen += body;
      if (t == 'D') ++rows;
      if (t == 's') ++suspended;
      if (t == 'T') ++descriptions;
      if (t == 'E') ADD_FAILURE() << "error " << error_sqlstate(body) << " format " << format;
      if (t == 'Z') break;
    }
    close(fd);
    EXPECT_EQ(rows, 2) << "format " << format;
    EXPECT_EQ(suspended, 2) << "format " << format;
    EXPECT_EQ(descriptions, 0) << "the client sent no Describe; format " << format;
    EXPECT_NE(seen.find("*********3141"), std::string::npos) << "format " << format;
    EXPECT_NE(seen.find("[iban]"), std::string::npos) << "format " << format;
    expect_clean(seen, "portal executed in parts, format " + std::to_string(format));
  }
}

// The recordings of every session of the suite hold no raw value either.
TEST_F(GatewayMaskAttackTest, RecordingsHoldNoRawValue) {
  {
    auto c = connect();
    Res a = run(*c, "SELECT ssn, email, 'rec_attack_marker' FROM crm.customers WHERE id = 101", 0);
    ASSERT_EQ(PQresultStatus(a.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(a.get());
    Res u = run(*c, "UPDATE crm.customers SET full_name = NULL WHERE id = 101", 0);
    EXPECT_EQ(sqlstate(u.get()), "23502");
  }
  ASSERT_FALSE(finished_recording(*gw_, "rec_attack_marker").empty())
      << "no finished recording of the session";
  for_each_recording(*gw_, [](const std::string& path, const std::string& text) {
    expect_clean(text, "recording " + path);
  });
}

// An approval's dry run runs the held statement on cp's own connection: a constraint
// violation there must not put the failing row (masked columns included) into the approval
// request that reviewers, chat and the state store see.
class GatewayMaskAttackApprovalTest : public SharedGatewayTest<GatewayMaskAttackApprovalTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = R"({"name": "agents", "allowed_kinds": ["select", "update"],
        "allowed_relations": ["crm.*"], "read_only": false, "approve_kinds": ["update"],
        "dry_run": true, "rule_sets": ["pii"],
        "masks": [{"column": "crm.customers.ssn", "function": "redact"}]})";
    o.approver_groups = {"reviewers"};
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest<GatewayMaskAttackApprovalTest>::SetUpTestSuite();
    if (gw_ == nullptr) return;
    auto st = gw_->pg().psql(
        "SET ROLE app_scram; INSERT INTO crm.customers (id, full_name, email, ssn) VALUES "
        "(101, 'Mallory Attack', 'm@attack.example', 'ZQSSN-77-3141'); RESET ROLE;");
    ASSERT_TRUE(st.is_ok()) << st.status().to_string();
  }
};

TEST_F(GatewayMaskAttackApprovalTest, DryRunErrorsShowNoRowValues) {
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  const std::string sql = "UPDATE crm.customers SET full_name = NULL WHERE id = 101";
  ASSERT_EQ(PQsendQuery(c.get(), sql.c_str()), 1);
  nlohmann::json request;
  ASSERT_TRUE(eventually([&] {
    CtlResult r = gw_->ctl("reviewer", {"approvals", "list", "--state", "pending", "--json"});
    auto list = nlohmann::json::parse(r.out, nullptr, false);
    if (!list.is_object() || !list["approvals"].is_array()) return false;
    for (const auto& a : list["approvals"]) {
      if (a.value("sql", "") == sql) request = a;
    }
    return request.contains("id");
  }));
  std::string text = request.dump();
  CtlResult show = gw_->ctl("reviewer", {"approvals", "show", request["id"]});
  text += show.out + show.err;
  EXPECT_NE(text.find("SQLSTATE 23502"), std::string::npos) << text;
  EXPECT_EQ(text.find("ZQSSN"), std::string::npos) << text;
  EXPECT_EQ(text.find("Failing row"), std::string::npos) << text;
  CtlResult d = gw_->ctl("reviewer", {"approvals", "deny", request["id"], "--reason", "no"});
  ASSERT_EQ(d.code, 0) << d.out << d.err;
  Res r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(sqlstate(r.get()), "42501");
  drain(c.get());
}

}  // namespace
}  // namespace pgwarden::testing
