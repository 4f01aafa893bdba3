// Verdicts across a policy reload (docs/masking.md, "Verdicts across a policy reload"): a
// statement prepared (SQL PREPARE, protocol-level Parse) or a cursor declared before
// `pgwardenctl config reload` adds a mask is analysed again by cp under the new masks at its
// next EXECUTE / Bind / FETCH, and refused (42501, "... before the policy changed", audited)
// when it would compute on the newly masked column; statements that do not are run, and a
// reload that leaves the masks as they were re-checks nothing. Open sessions also follow the
// new masks for new statements, mask plans and error-text redaction (masks_values).
// Real pgwarden-cp, pgwarden-dp, PostgreSQL sandbox and pgwardenctl; libpq.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <string>
#include <string_view>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

// The same policy with and without masks on crm.customers (ssn and email).
std::string policy(bool masked, const std::string& extra_relation = "") {
  std::string p =
      R"({"name": "agents", "allowed_kinds": ["select", "insert", "transaction", "prepare",
          "execute", "deallocate", "set", "show"],
          "allowed_relations": ["crm.*", "public.*", "pg_catalog.*")" +
      (extra_relation.empty() ? std::string() : ", \"" + extra_relation + "\"") +
      R"(], "read_only": false, "rule_sets": ["pii"])";
  if (masked) {
    p += R"(, "masks": [{"column": "crm.customers.ssn", "function": "partial", "keep_last": 4},
                       {"column": "crm.customers.email", "function": "email"}])";
  }
  return p + "}";
}

class GatewayMaskReloadTest : public SharedGatewayTest<GatewayMaskReloadTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = policy(false);
    o.admin_principals = {{"ops", {"operators"}}};
    return o;
  }

 protected:
  void TearDown() override {
    // The next test starts without masks again.
    EXPECT_TRUE(gw_->rewrite_policy(policy(false)).is_ok());
    EXPECT_EQ(gw_->ctl("ops", {"config", "reload"}).code, 0);
    SharedGatewayTest::TearDown();
  }
  void reload_with(const std::string& policy_json) {
    ASSERT_TRUE(gw_->rewrite_policy(policy_json).is_ok());
    CtlResult r = gw_->ctl("ops", {"config", "reload"});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }
  Conn connect() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  static std::string value(PGconn* c, const std::string& sql) {
    Res r(PQexec(c, sql.c_str()));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << sql << ": " << PQerrorMessage(c);
    return PQntuples(r.get()) > 0 ? PQgetvalue(r.get(), 0, 0) : "";
  }
  // cp's analyses of statements containing `needle`: audit lines of event "decision", each
  // written before cp answers (the dataplane's statement events arrive later, on their own).
  static size_t analyses(const std::string& audit, const std::string& needle) {
    size_t n = 0;
    size_t start = 0;
    while (start < audit.size()) {
      size_t end = audit.find('\n', start);
      if (end == std::string::npos) end = audit.size();
      std::string_view line(audit.data() + start, end - start);
      if (line.find("\"event\":\"decision\"") != std::string_view::npos &&
          line.find(needle) != std::string_view::npos) {
        ++n;
      }
      start = end + 1;
    }
    return n;
  }
};

constexpr const char* kMd5 = "SELECT md5(ssn) AS h FROM crm.customers WHERE id = 1";
constexpr const char* kIds = "SELECT id, full_name FROM crm.customers WHERE id = 1";

TEST_F(GatewayMaskReloadTest, ParsedStatementComputingOnANewlyMaskedColumnIsRefusedAtItsBind) {
  Conn c = connect();
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK);
  Res p1(PQprepare(c.get(), "md5_ssn", kMd5, 0, nullptr));
  ASSERT_EQ(PQresultStatus(p1.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res p2(PQprepare(c.get(), "ids", kIds, 0, nullptr));
  ASSERT_EQ(PQresultStatus(p2.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  // Without masks the derivation runs (what leaked before this guarantee).
  Res before(PQexecPrepared(c.get(), "md5_ssn", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(before.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  const std::string raw_md5 = PQgetvalue(before.get(), 0, 0);

  reload_with(policy(true));

  Res after(PQexecPrepared(c.get(), "md5_ssn", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(after.get()), "42501");
  const std::string message = PQresultErrorMessage(after.get());
  EXPECT_NE(message.find("policy.masked_derived"), std::string::npos) << message;
  EXPECT_NE(message.find("crm.customers.ssn"), std::string::npos) << message;
  EXPECT_NE(message.find("prepared statement \"md5_ssn\" was prepared before the policy changed"),
            std::string::npos)
      << message;
  // Refused every time, not only once.
  Res again(PQexecPrepared(c.get(), "md5_ssn", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(again.get()), "42501");
  // A statement the new masks do not concern runs (it was analysed again and allowed).
  Res ids(PQexecPrepared(c.get(), "ids", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(ids.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  EXPECT_EQ(std::string(PQgetvalue(ids.get(), 0, 0)), "1");
  // The session itself follows the new masks: new statements and mask plans.
  Res fresh(PQexec(c.get(), kMd5));
  EXPECT_EQ(sqlstate(fresh.get()), "42501");
  EXPECT_EQ(value(c.get(), "SELECT ssn FROM crm.customers WHERE id = 1"), "*******6789");
  // Audited: cp's decision on the kept text under the new masks (written before cp answered),
  // and the dataplane's refusal with its reason (an event that reaches the log on its own).
  EXPECT_GE(analyses(gw_->audit_log(), "SELECT md5(ssn) AS h FROM crm.customers"), 2u);
  EXPECT_TRUE(eventually([&] {
    return gw_->audit_log().find("was prepared before the policy changed") != std::string::npos;
  }));
  EXPECT_EQ(gw_->audit_log().find(raw_md5), std::string::npos);
}

TEST_F(GatewayMaskReloadTest, SqlPrepareComputingOnANewlyMaskedColumnIsRefusedAtExecute) {
  Conn c = connect();
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK);
  Res prep(PQexec(c.get(), "PREPARE sql_md5 AS SELECT md5(email) AS h FROM crm.customers"));
  ASSERT_EQ(PQresultStatus(prep.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res prep_ok(PQexec(c.get(), "PREPARE sql_ids AS SELECT id FROM crm.customers WHERE id = 2"));
  ASSERT_EQ(PQresultStatus(prep_ok.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res before(PQexec(c.get(), "EXECUTE sql_md5"));
  ASSERT_EQ(PQresultStatus(before.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());

  reload_with(policy(true));

  Res after(PQexec(c.get(), "EXECUTE sql_md5"));
  EXPECT_EQ(sqlstate(after.get()), "42501");
  const std::string message = PQresultErrorMessage(after.get());
  EXPECT_NE(message.find("crm.customers.email"), std::string::npos) << message;
  EXPECT_NE(message.find("prepared before the policy changed"), std::string::npos) << message;
  EXPECT_EQ(value(c.get(), "EXECUTE sql_ids"), "2");
}

TEST_F(GatewayMaskReloadTest, CursorDeclaredBeforeTheMaskIsRefusedAtItsFetch) {
  Conn c = connect();
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK);
  // A cursor that outlives its transaction, and one inside an open transaction.
  Res held(PQexec(c.get(),
                  "DECLARE held CURSOR WITH HOLD FOR SELECT ssn::bytea AS b FROM crm.customers"));
  ASSERT_EQ(PQresultStatus(held.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res plain(PQexec(c.get(), "DECLARE ids CURSOR WITH HOLD FOR SELECT id FROM crm.customers "
                            "ORDER BY id"));
  ASSERT_EQ(PQresultStatus(plain.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res begin(PQexec(c.get(), "BEGIN"));
  ASSERT_EQ(PQresultStatus(begin.get()), PGRES_COMMAND_OK);
  Res open(PQexec(c.get(), "DECLARE inside CURSOR FOR SELECT upper(email) AS u FROM crm.customers"));
  ASSERT_EQ(PQresultStatus(open.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res first(PQexec(c.get(), "FETCH 1 FROM inside"));
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());

  reload_with(policy(true));

  Res fetched(PQexec(c.get(), "FETCH 1 FROM inside"));
  EXPECT_EQ(sqlstate(fetched.get()), "42501");
  std::string message = PQresultErrorMessage(fetched.get());
  EXPECT_NE(message.find("cursor \"inside\" was declared before the policy changed"),
            std::string::npos)
      << message;
  // As after any error inside a transaction block: aborted until it ends.
  Res aborted(PQexec(c.get(), "SELECT 1"));
  EXPECT_EQ(sqlstate(aborted.get()), "25P02");
  Res rollback(PQexec(c.get(), "ROLLBACK"));
  EXPECT_EQ(PQresultStatus(rollback.get()), PGRES_COMMAND_OK);
  // The WITH HOLD cursors live on: the derived one is refused, the plain one runs.
  Res held_fetch(PQexec(c.get(), "FETCH 1 FROM held"));
  EXPECT_EQ(sqlstate(held_fetch.get()), "42501");
  message = PQresultErrorMessage(held_fetch.get());
  EXPECT_NE(message.find("before the policy changed"), std::string::npos) << message;
  EXPECT_EQ(value(c.get(), "FETCH 1 FROM ids"), "1");
  Res close(PQexec(c.get(), "CLOSE ALL"));
  EXPECT_EQ(PQresultStatus(close.get()), PGRES_COMMAND_OK);
}

TEST_F(GatewayMaskReloadTest, AReloadThatLeavesTheMasksAsTheyWereRechecksNothing) {
  reload_with(policy(true));
  Conn c = connect();
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK);
  const std::string sql = "SELECT id, ssn FROM crm.customers WHERE id = 3 -- unrelated";
  Res p(PQprepare(c.get(), "kept", sql.c_str(), 0, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  const size_t analysed = analyses(gw_->audit_log(), "-- unrelated");
  ASSERT_EQ(analysed, 1u);  // its Parse was analysed by cp

  // Another relation allowed: the policy changed, its masks did not.
  reload_with(policy(true, "sales.*"));

  Res r(PQexecPrepared(c.get(), "kept", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 1)), "*******8901");  // still masked
  // cp was not asked again (cp audits each analysis before it answers).
  EXPECT_EQ(analyses(gw_->audit_log(), "-- unrelated"), analysed);
}

TEST_F(GatewayMaskReloadTest, ErrorTextRedactionFollowsTheReloadInOpenSessions) {
  Conn c = connect();
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK);
  Res setup(PQexec(c.get(), "INSERT INTO public.kv VALUES ('mask_reload_key', 'v') "
                            "ON CONFLICT DO NOTHING"));
  ASSERT_EQ(PQresultStatus(setup.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  auto detail = [&] {
    Res dup(PQexec(c.get(), "INSERT INTO public.kv VALUES ('mask_reload_key', 'w')"));
    EXPECT_EQ(sqlstate(dup.get()), "23505");
    const char* d = PQresultErrorField(dup.get(), PG_DIAG_MESSAGE_DETAIL);
    return std::string(d != nullptr ? d : "");
  };
  // No masks: PostgreSQL's DETAIL as it is.
  EXPECT_NE(detail().find("mask_reload_key"), std::string::npos);
  reload_with(policy(true));
  const std::string redacted = detail();
  EXPECT_EQ(redacted.find("mask_reload_key"), std::string::npos) << redacted;
  EXPECT_NE(redacted.find("detail removed"), std::string::npos) << redacted;
}

// Transaction pooling: the session's named statements live in the gateway and are prepared on
// whichever server connection a transaction borrows; their kept Parse is analysed again too.
class GatewayPooledMaskReloadTest : public SharedGatewayTest<GatewayPooledMaskReloadTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o = GatewayMaskReloadTest::gateway_options();
    o.target_extra_json = R"({"pool_mode": "transaction", "pool_size": 2})";
    return o;
  }

 protected:
  void TearDown() override {
    EXPECT_TRUE(gw_->rewrite_policy(policy(false)).is_ok());
    EXPECT_EQ(gw_->ctl("ops", {"config", "reload"}).code, 0);
    SharedGatewayTest::TearDown();
  }
};

TEST_F(GatewayPooledMaskReloadTest, APooledSessionsStatementIsAnalysedAgainUnderTheNewMasks) {
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res p1(PQprepare(c.get(), "pooled_md5", kMd5, 0, nullptr));
  ASSERT_EQ(PQresultStatus(p1.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res p2(PQprepare(c.get(), "pooled_ids", kIds, 0, nullptr));
  ASSERT_EQ(PQresultStatus(p2.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res before(PQexecPrepared(c.get(), "pooled_md5", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(before.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());

  ASSERT_TRUE(gw_->rewrite_policy(policy(true)).is_ok());
  CtlResult r = gw_->ctl("ops", {"config", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;

  Res after(PQexecPrepared(c.get(), "pooled_md5", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(after.get()), "42501");
  const std::string message = PQresultErrorMessage(after.get());
  EXPECT_NE(message.find("prepared statement \"pooled_md5\" was prepared before the policy "
                         "changed"),
            std::string::npos)
      << message;
  Res ids(PQexecPrepared(c.get(), "pooled_ids", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(ids.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  EXPECT_EQ(std::string(PQgetvalue(ids.get(), 0, 0)), "1");
}

}  // namespace
}  // namespace pgwarden::testing
