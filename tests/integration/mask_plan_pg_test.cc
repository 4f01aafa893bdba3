// Mask plans against a real PostgreSQL: RowDescription values taken from real results (libpq
// PQftable/PQftablecol/PQftype/PQfformat) resolve through PgCatalog to crm.customers columns,
// and the dataplane RowMasker applies the resulting plan to the real rows.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <memory>
#include <optional>

#include "common/source_root.h"
#include "controlplane/masking/catalog.h"
#include "controlplane/masking/mask_plan.h"
#include "dataplane/masking/mask_apply.h"
#include "dataplane/masking/rules_detector.h"
#include "dataplane/pgwire/messages.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden {
namespace {

using maskplan::ResultField;

class MaskPlanPgTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pg_ = new testing::PgSandbox();
    Status st = pg_->start();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  void SetUp() override {
    conn_ = PQconnectdb(pg_->conninfo("app_scram").c_str());
    ASSERT_EQ(PQstatus(conn_), CONNECTION_OK) << PQerrorMessage(conn_);
  }
  void TearDown() override { PQfinish(conn_); }

  struct QueryResult {
    std::vector<ResultField> fields;
    std::vector<std::vector<std::optional<std::string>>> rows;
  };

  QueryResult run(const std::string& sql, int result_format = 0) {
    PGresult* r =
        PQexecParams(conn_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, result_format);
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
    QueryResult out;
    for (int c = 0; c < PQnfields(r); ++c) {
      out.fields.push_back(ResultField{PQfname(r, c), PQftable(r, c),
                                       static_cast<int16_t>(PQftablecol(r, c)), PQftype(r, c),
                                       static_cast<int16_t>(PQfformat(r, c))});
    }
    for (int i = 0; i < PQntuples(r); ++i) {
      std::vector<std::optional<std::string>> row;
      for (int c = 0; c < PQnfields(r); ++c) {
        if (PQgetisnull(r, i, c)) {
          row.push_back(std::nullopt);
        } else {
          row.push_back(std::string(PQgetvalue(r, i, c), PQgetlength(r, i, c)));
        }
      }
      out.rows.push_back(std::move(row));
    }
    PQclear(r);
    return out;
  }

  static policy::Policy crm_policy() {
    policy::Policy p;
    p.name = "agents";
    auto rule = [](std::string glob, std::string name, std::string type, std::string fn) {
      policy::MaskRule r;
      r.column_glob = std::move(glob);
      r.name_pattern = std::move(name);
      r.type_name = std::move(type);
      r.function = std::move(fn);
      return r;
    };
    p.masks = {rule("crm.customers.email", "", "", "email"),
               rule("crm.*.card_number", "", "", "partial"), rule("", "*ssn*", "", "hash"),
               rule("", "", "numeric", "null")};
    return p;
  }

  // Masks `rows` as the session engine would: DataRow bytes through a RowMasker.
  static std::vector<std::vector<std::optional<std::string>>> mask_rows(
      const maskplan::MaskPlan& plan, const QueryResult& q) {
    auto row_plan = masking::RowMaskPlan::from_json(plan.to_json());
    EXPECT_TRUE(row_plan.is_ok()) << row_plan.status().to_string();
    // The shipped PII detectors (real Hyperscan) for the `detect` columns.
    static const auto pii = [] {
      std::vector<std::string> paths = {std::string(PGW_SOURCE_ROOT) + "/rules/sets/pii.rules"};
      auto set = rules::RuleSet::load_files(paths);
      EXPECT_TRUE(set.is_ok()) << set.status().to_string();
      auto compiled = rules::CompiledRuleSet::compile(std::move(*set));
      EXPECT_TRUE(compiled.is_ok()) << compiled.status().to_string();
      return *compiled;
    }();
    auto masker = masking::RowMasker::create(*row_plan, masking::make_rules_detector(pii));
    EXPECT_TRUE(masker.is_ok()) << masker.status().to_string();
    std::vector<std::vector<std::optional<std::string>>> out;
    for (const auto& row : q.rows) {
      std::vector<std::optional<std::string_view>> views(row.begin(), row.end());
      std::string msg;
      pgwire::append_data_row(msg, views);
      std::string masked;
      auto r = (*masker)->mask_data_row(pgwire::as_bytes(std::string_view(msg).substr(5)), masked);
      EXPECT_TRUE(r.is_ok()) << r.status().to_string();
      const std::string& final_msg = *r ? masked : msg;
      pgwire::DataRow dr;
      EXPECT_TRUE(pgwire::parse(pgwire::as_bytes(std::string_view(final_msg).substr(5)), &dr).ok());
      std::vector<std::optional<std::string>> values;
      for (const auto& v : dr.columns) {
        values.push_back(v.is_null ? std::nullopt
                                   : std::optional<std::string>(std::string(v.text())));
      }
      out.push_back(std::move(values));
    }
    return out;
  }

  static testing::PgSandbox* pg_;
  PGconn* conn_ = nullptr;
};

testing::PgSandbox* MaskPlanPgTest::pg_ = nullptr;

const std::string kKey(32, 'k');

TEST_F(MaskPlanPgTest, RealRowDescriptionResolvesToCrmColumnsAndMasksRows) {
  maskplan::PgCatalog catalog({.conninfo = pg_->conninfo("app_scram")});
  auto q =
      run("SELECT id, email, email AS e, upper(email) AS shout, card_number, ssn, full_name "
          "FROM crm.customers ORDER BY id LIMIT 2");
  ASSERT_EQ(q.fields.size(), 7u);
  EXPECT_NE(q.fields[1].table_oid, 0u);
  EXPECT_EQ(q.fields[3].table_oid, 0u);  // derived column: no source table
  auto plan = maskplan::build_mask_plan(q.fields, crm_policy(), catalog, kKey);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  std::map<int, std::string> fn;
  std::map<int, std::string> source;
  for (const auto& c : plan->columns) {
    fn[c.index] = c.function;
    source[c.index] = c.source;
  }
  EXPECT_EQ(fn.count(0), 0u);  // bigint id: unmasked, not text
  EXPECT_EQ(fn[1], "email");
  EXPECT_EQ(source[1], "crm.customers.email");
  EXPECT_EQ(fn[2], "email");  // alias keeps the source column
  EXPECT_EQ(fn[3], "detect");
  EXPECT_EQ(fn[4], "partial");
  EXPECT_EQ(fn[5], "hash");
  EXPECT_EQ(fn[6], "detect");  // text column without a rule
  EXPECT_TRUE(plan->detect);
  EXPECT_EQ(plan->hash_key, kKey);

  auto masked = mask_rows(*plan, q);
  ASSERT_EQ(masked.size(), 2u);
  EXPECT_EQ(masked[0][0], q.rows[0][0]);
  EXPECT_EQ(masked[0][1], "***@example.com");  // ada@example.com
  EXPECT_EQ(masked[1][2], "***@example.org");  // alan@example.org via alias
  EXPECT_EQ(masked[0][3], "***************");  // ADA@EXAMPLE.COM: the email detector
  EXPECT_EQ(masked[0][4], "************1111");
  EXPECT_EQ(masked[0][5]->size(), 64u);
  EXPECT_NE(masked[0][5], masked[1][5]);
  EXPECT_EQ(masked[0][6], "Ada Lovelace");  // detector found nothing
}

TEST_F(MaskPlanPgTest, BinaryFormatResultsMaskTextAndNullOtherTypes) {
  maskplan::PgCatalog catalog({.conninfo = pg_->conninfo("app_scram")});
  auto q =
      run("SELECT o.id, o.amount, c.email FROM crm.orders o JOIN crm.customers c "
          "ON c.id = o.customer_id ORDER BY o.id LIMIT 1",
          /*result_format=*/1);
  ASSERT_EQ(q.fields[2].format, 1);
  auto plan = maskplan::build_mask_plan(q.fields, crm_policy(), catalog, kKey);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  auto masked = mask_rows(*plan, q);
  EXPECT_EQ(masked[0][0], q.rows[0][0]);          // binary int8 untouched
  EXPECT_EQ(masked[0][1], std::nullopt);          // numeric: type_name rule -> NULL
  EXPECT_EQ(masked[0][2]->substr(0, 4), "***@");  // binary text is the string
}

TEST_F(MaskPlanPgTest, CatalogCachesUntilInvalidatedAfterDdl) {
  maskplan::PgCatalog catalog({.conninfo = pg_->conninfo("app_scram")});
  auto q = run("SELECT phone FROM crm.customers LIMIT 1");
  policy::Policy p;
  p.name = "p";
  policy::MaskRule r;
  r.column_glob = "crm.customers.phone";
  r.function = "redact";
  p.masks = {r};
  ASSERT_EQ(maskplan::build_mask_plan(q.fields, p, catalog, kKey)->columns[0].function, "redact");
  uint64_t queries = catalog.catalog_queries();
  ASSERT_EQ(maskplan::build_mask_plan(q.fields, p, catalog, kKey)->columns[0].function, "redact");
  EXPECT_EQ(catalog.catalog_queries(), queries);  // served from the cache
  EXPECT_GE(catalog.catalog_cache_hits(), 1u);

  PGresult* ddl = PQexec(conn_, "ALTER TABLE crm.customers RENAME COLUMN phone TO phone_number");
  ASSERT_EQ(PQresultStatus(ddl), PGRES_COMMAND_OK) << PQresultErrorMessage(ddl);
  PQclear(ddl);
  // Stale until told: the cached name still says phone.
  EXPECT_EQ(maskplan::build_mask_plan(q.fields, p, catalog, kKey)->columns[0].function, "redact");
  catalog.invalidate_table(q.fields[0].table_oid);
  auto after = maskplan::build_mask_plan(q.fields, p, catalog, kKey);
  ASSERT_TRUE(after.is_ok());
  EXPECT_EQ(after->columns[0].function, "detect");
  EXPECT_EQ(after->columns[0].source, "crm.customers.phone_number");
  EXPECT_GT(catalog.catalog_queries(), queries);
  ddl = PQexec(conn_, "ALTER TABLE crm.customers RENAME COLUMN phone_number TO phone");
  PQclear(ddl);
}

TEST_F(MaskPlanPgTest, UserDefinedTypesResolveThroughPgTypeButDomainsShowTheirBaseType) {
  PGresult* ddl = PQexec(conn_,
                         "CREATE TYPE public.tier AS ENUM ('gold', 'silver');"
                         "CREATE DOMAIN public.email_address AS text");
  ASSERT_EQ(PQresultStatus(ddl), PGRES_COMMAND_OK) << PQresultErrorMessage(ddl);
  PQclear(ddl);
  maskplan::PgCatalog catalog({.conninfo = pg_->conninfo("app_scram")});
  auto q = run("SELECT 'gold'::public.tier AS t, 'x@y.z'::public.email_address AS contact");
  policy::Policy p;
  p.name = "p";
  policy::MaskRule tier, domain;
  tier.type_name = "tier";
  tier.function = "redact";
  domain.type_name = "email_address";
  domain.function = "email";
  p.masks = {tier, domain};
  auto plan = maskplan::build_mask_plan(q.fields, p, catalog, kKey);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  ASSERT_EQ(plan->columns.size(), 2u);
  EXPECT_EQ(plan->columns[0].function, "redact");
  EXPECT_EQ(plan->columns[0].reason, "type_name tier");
  // PostgreSQL reports a domain's base type (text) in RowDescription: no type_name match,
  // the content detectors run instead (docs/masking.md).
  EXPECT_EQ(q.fields[1].type_oid, 25u);
  EXPECT_EQ(plan->columns[1].function, "detect");
}

TEST_F(MaskPlanPgTest, UnreachableCatalogFailsClosed) {
  maskplan::PgCatalog catalog(
      {.conninfo = "host=127.0.0.1 port=1 dbname=demo user=app_scram connect_timeout=2"});
  std::vector<ResultField> fields = {{"email", 16384, 3, 25, 0}};
  auto plan = maskplan::build_mask_plan(fields, crm_policy(), catalog, kKey);
  EXPECT_EQ(plan.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(catalog.catalog_errors(), 1u);
  EXPECT_EQ(plan.status().message().find("password"), std::string::npos);
}

}  // namespace
}  // namespace pgwarden
