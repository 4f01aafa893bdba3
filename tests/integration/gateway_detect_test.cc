// Content detectors and the quoted-identifier prescreen end to end: sandbox PostgreSQL +
// pgwarden-cp + pgwarden-dp with the shipped rule sets (rules/sets/*.rules), driven by libpq
// (text and binary result formats) and psql.
//
//  * a policy that relies on detectors alone (no column masks on crm.contacts): contact data
//    written as people write it (a Dutch phone, an IBAN, a card, a German landline, a BSN) in
//    jsonb, json, text, text[] and hstore columns, in composites (whole-row references and
//    ROW(...)), and in aggregates; no raw value reaches the client, non-PII text (timestamps,
//    order numbers, UUIDs) does;
//  * a quoted identifier that spells keywords (`"drop database"`) is a column, not a
//    statement: allowed, while DROP DATABASE and SET "role" are still denied and audited.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

constexpr const char* kDetectPolicy =
    R"({"name": "agents", "allowed_kinds": ["select", "transaction", "set", "show"],
        "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
        "allowed_functions": ["pg_catalog.array_agg", "pg_catalog.string_agg",
                              "pg_catalog.row_to_json", "pg_catalog.jsonb_agg"],
        "read_only": true, "rule_sets": ["deny", "approve", "pii"],
        "masks": [{"column": "crm.customers.email", "function": "email"}],
        "recording": {"level": "full", "required": true}})";

// The raw PII in crm.contacts, as stored and as PostgreSQL prints it in JSON or arrays.
const std::vector<std::string> kRawPii = {
    "+31-20-555-0104",
    "555-0104",
    "NL91 ABNA 0417 1643 00",
    "NL91ABNA",
    "4111 1111 1111 1111",
    "1111 1111",
    "+44 (0)20 7946 0958",
    "7946 0958",
    "030/12345678",
    "12345678",
    "DE89370400440532013000",
    "111222333",
    "ada.l+crm@mail.example.org",
    "5500-0055-5555-5559",
    "0055-5555",
};

// Text around the PII that is not personal data and must survive detection.
const std::vector<std::string> kKept = {"2026-12-06 02:10:30+00", "ORD-2026-000123",
                                        "550e8400-e29b-41d4-a716-446655440000"};

void expect_no_raw_pii(const std::string& text, const std::string& what) {
  for (const std::string& p : kRawPii) {
    EXPECT_EQ(text.find(p), std::string::npos) << what << " leaked " << p << " in: " << text;
  }
}

class GatewayDetectTest : public SharedGatewayTest<GatewayDetectTest> {
 public:
  static constexpr const char* kPolicy = kDetectPolicy;

  static void SetUpTestSuite() {
    SharedGatewayTest<GatewayDetectTest>::SetUpTestSuite();
    if (gw_ == nullptr || ::testing::Test::HasFatalFailure()) return;
    auto ext = gw_->pg().psql("CREATE EXTENSION IF NOT EXISTS hstore");
    ASSERT_TRUE(ext.is_ok()) << ext.status().to_string();
    auto made = gw_->pg().psql(R"SQL(
SET ROLE app_scram;
CREATE TABLE crm.contacts (id int PRIMARY KEY, info jsonb, info_json json, note text,
                           phones text[], extra hstore);
INSERT INTO crm.contacts VALUES
 (1, '{"name": "Ada", "phone": "+31-20-555-0104", "iban": "NL91 ABNA 0417 1643 00",
       "card": "4111 1111 1111 1111", "since": "2026-12-06 02:10:30+00",
       "order": "ORD-2026-000123", "ref": "550e8400-e29b-41d4-a716-446655440000"}',
     '{"phone": "+44 (0)20 7946 0958", "since": "2026-12-06 02:10:30+00"}',
     'call 030/12345678 or mail ada.l+crm@mail.example.org, order ORD-2026-000123',
     ARRAY['+31-20-555-0104', '+44 (0)20 7946 0958 ext', '2026-12-06 02:10:30+00'],
     'bsn => "BSN 111222333", card => "5500-0055-5555-5559", ref => ORD-2026-000123'),
 (2, '{"name": "Bob", "tel": "030/12345678", "iban": "DE89370400440532013000"}',
     '{"ref": "550e8400-e29b-41d4-a716-446655440000"}', 'no contact data', '{}', '');
CREATE TABLE public.audit_words ("drop database" text, "drop" text, "truncate" text);
INSERT INTO public.audit_words VALUES ('a', 'b', 'c');
)SQL");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }

 protected:
  Conn connect() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  // format 0: Simple Query (text); 1: extended protocol with binary results.
  Res run(PGconn* c, const std::string& sql, int format) {
    if (format == 0) return Res(PQexec(c, sql.c_str()));
    return Res(PQexecParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 1));
  }
  // Every value of a result ('|' between columns, a line per row; NULL as "<null>").
  static std::string dump(const PGresult* r) {
    std::string out;
    for (int i = 0; i < PQntuples(r); ++i) {
      for (int j = 0; j < PQnfields(r); ++j) {
        if (j > 0) out += '|';
        if (PQgetisnull(r, i, j)) {
          out += "<null>";
        } else {
          out.append(PQgetvalue(r, i, j), PQgetlength(r, i, j));
        }
      }
      out += '\n';
    }
    return out;
  }
  // Polls until `done()` holds (the cp writes audit records and recordings asynchronously);
  // false after 15 s.
  template <typename Condition>
  static bool wait_until(Condition done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  }
  // The text of the finished recording (session_end written) that mentions `marker`.
  static std::string finished_recording(const std::string& marker) {
    namespace fs = std::filesystem;
    std::string found;
    wait_until([&] {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(gw_->dir() + "/state/recordings", ec)) {
        if (e.path().extension() != ".jsonl") continue;
        auto records = recording::read_recording(e.path().string());
        if (!records.is_ok()) continue;
        std::string all;
        bool ended = false;
        for (const auto& r : *records) {
          all += r.dump() + "\n";
          if (r.value("kind", "") == "session_end") ended = true;
        }
        if (ended && all.find(marker) != std::string::npos) {
          found = all;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  static std::string psql(const std::string& sql) {
    return command_output("psql \"" + gw_->conninfo() + "\" -X -At -c '" + sql + "' 2>&1");
  }
};

TEST_F(GatewayDetectTest, JsonbContactDataIsMaskedInsideInTextAndBinary) {
  Conn c = connect();
  for (int format : {0, 1}) {
    Res r = run(c.get(), "SELECT id, info, info_json FROM crm.contacts ORDER BY id", format);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    ASSERT_EQ(PQntuples(r.get()), 2);
    std::string all = dump(r.get());
    expect_no_raw_pii(all, "jsonb/json format " + std::to_string(format));
    for (const std::string& keep : kKept) {
      EXPECT_NE(all.find(keep), std::string::npos) << keep << " lost in: " << all;
    }
    // Masked inside the document, one '*' per character: the keys and the shape stay.
    std::string info(PQgetvalue(r.get(), 0, 1), PQgetlength(r.get(), 0, 1));
    if (format == 1) {
      ASSERT_FALSE(info.empty());
      EXPECT_EQ(info[0], '\x01') << "jsonb binary version byte";
      info.erase(0, 1);
    }
    EXPECT_NE(info.find(R"("phone": "***************")"), std::string::npos) << info;
    EXPECT_NE(info.find(R"("iban": "**********************")"), std::string::npos) << info;
    EXPECT_NE(info.find(R"("card": "*******************")"), std::string::npos) << info;
    EXPECT_NE(info.find(R"("name": "Ada")"), std::string::npos) << info;
  }
}

TEST_F(GatewayDetectTest, RecordingHoldsOnlyTheMaskedValues) {
  {
    Conn c = connect();
    for (int format : {0, 1}) {
      Res r = run(c.get(),
                  "SELECT 'detect-rec-marker' AS m, info, note, phones, c "
                  "FROM crm.contacts c ORDER BY id",
                  format);
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
      expect_no_raw_pii(dump(r.get()), "client, format " + std::to_string(format));
    }
  }
  std::string recorded = finished_recording("detect-rec-marker");
  ASSERT_FALSE(recorded.empty()) << "no finished recording with the marker";
  expect_no_raw_pii(recorded, "recording");
  EXPECT_NE(recorded.find("ORD-2026-000123"), std::string::npos);
}

TEST_F(GatewayDetectTest, TextArrayHstoreAndCompositeTextAreMaskedInside) {
  Conn c = connect();
  const std::vector<std::string> queries = {
      "SELECT note FROM crm.contacts ORDER BY id",
      "SELECT phones FROM crm.contacts ORDER BY id",
      "SELECT extra FROM crm.contacts ORDER BY id",
      "SELECT c FROM crm.contacts c ORDER BY id",
      "SELECT ROW(id, note, phones) FROM crm.contacts ORDER BY id",
      "SELECT array_agg(note ORDER BY id) FROM crm.contacts",
      "SELECT string_agg(info->>'phone', ';') FROM crm.contacts",
      "SELECT row_to_json(c) FROM crm.contacts c ORDER BY id",
      "SELECT jsonb_agg(info ORDER BY id) FROM crm.contacts",
      "SELECT info->'iban' AS x FROM crm.contacts ORDER BY id"};
  for (const std::string& q : queries) {
    Res r = run(c.get(), q, 0);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
        << q << ": " << PQresultErrorMessage(r.get());
    ASSERT_GT(PQntuples(r.get()), 0) << q;
    std::string all = dump(r.get());
    expect_no_raw_pii(all, q);
    EXPECT_NE(all.find('*'), std::string::npos) << q << ": " << all;
  }
  // Not personal data: kept in an array and in hstore text.
  Res r = run(c.get(), "SELECT phones, extra FROM crm.contacts WHERE id = 1", 0);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  std::string all = dump(r.get());
  EXPECT_NE(all.find("2026-12-06 02:10:30+00"), std::string::npos) << all;
  EXPECT_NE(all.find("ORD-2026-000123"), std::string::npos) << all;
}

TEST_F(GatewayDetectTest, BinaryContainersThatCannotBeInspectedBecomeNull) {
  Conn c = connect();
  // The binary forms of arrays, composites and hstore are not text: fail closed (NULL).
  for (const char* q :
       {"SELECT phones FROM crm.contacts WHERE id = 1", "SELECT c FROM crm.contacts c WHERE id = 1",
        "SELECT extra FROM crm.contacts WHERE id = 1"}) {
    Res r = run(c.get(), q, 1);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
        << q << ": " << PQresultErrorMessage(r.get());
    ASSERT_EQ(PQntuples(r.get()), 1) << q;
    EXPECT_TRUE(PQgetisnull(r.get(), 0, 0)) << q << ": " << dump(r.get());
  }
  // A binary text column is the string itself: masked inside.
  Res r = run(c.get(), "SELECT note FROM crm.contacts WHERE id = 1", 1);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  std::string note(PQgetvalue(r.get(), 0, 0), PQgetlength(r.get(), 0, 0));
  EXPECT_EQ(note, "call ************ or mail **************************, order ORD-2026-000123");
}

TEST_F(GatewayDetectTest, PsqlSeesDetectedValuesMasked) {
  std::string out = psql("SELECT info, note, phones, extra FROM crm.contacts ORDER BY id");
  expect_no_raw_pii(out, "psql");
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_NE(out.find("ORD-2026-000123"), std::string::npos) << out;
}

TEST_F(GatewayDetectTest, QuotedIdentifierSpellingKeywordsIsAColumnNotAStatement) {
  Conn c = connect();
  for (const char* q : {R"(SELECT "drop database" FROM audit_words)",
                        R"(SELECT "drop" database FROM public.audit_words)",
                        R"(SELECT "truncate", "drop" FROM audit_words)"}) {
    for (int format : {0, 1}) {
      Res r = run(c.get(), q, format);
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK)
          << q << ": " << PQresultErrorMessage(r.get());
      EXPECT_EQ(PQntuples(r.get()), 1) << q;
    }
  }
  Res named = run(c.get(), R"(SELECT "drop database" FROM audit_words)", 0);
  ASSERT_EQ(PQresultStatus(named.get()), PGRES_TUPLES_OK);
  EXPECT_STREQ(PQfname(named.get(), 0), "drop database");
  EXPECT_STREQ(PQgetvalue(named.get(), 0, 0), "a");
  EXPECT_EQ(psql(R"(SELECT "drop database", "drop" FROM audit_words)"), "a|b\n");
}

TEST_F(GatewayDetectTest, KeywordStatementsAreStillDeniedAndAudited) {
  Conn c = connect();
  struct Denied {
    const char* sql;
    const char* rule;
  };
  for (const Denied& d :
       {Denied{"DROP DATABASE detect_never_dropped", "deny.drop_database"},
        Denied{R"(SELECT "drop database" FROM audit_words; DROP DATABASE detect_never_dropped)",
               "deny.drop_database"},
        Denied{R"(SET "role" TO postgres)", "deny.set_role"},
        Denied{R"(SELECT U&"pg_read_file"('/etc/passwd'))", "deny.server_file_read"}}) {
    Res r = run(c.get(), d.sql, 0);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << d.sql;
    EXPECT_EQ(sqlstate(r.get()), "42501") << d.sql;
    EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find(d.rule), std::string::npos)
        << d.sql << ": " << PQresultErrorMessage(r.get());
    EXPECT_TRUE(wait_until([&] { return gw_->audit_log().find(d.rule) != std::string::npos; }))
        << d.sql << " not audited:\n"
        << gw_->audit_log();
  }
  EXPECT_EQ(gw_->pg().server_log().find("detect_never_dropped"), std::string::npos);
  Res ok = run(c.get(), "SELECT 1", 0);
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK);
}

}  // namespace
}  // namespace pgwarden::testing
