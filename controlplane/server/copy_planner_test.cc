#include "controlplane/server/copy_planner.h"

#include <gtest/gtest.h>

namespace pgwarden::server {
namespace {

using json = nlohmann::json;

constexpr uint32_t kCustomers = 16400;
constexpr uint32_t kShadow = 16500;
constexpr uint32_t kArchive = 16600;

// An in-memory catalog: crm.customers (id, email, ssn, dropped 4, gen 5 generated, note),
// shadow.customers (same columns, no ssn), archive.customers (same shape as crm.customers).
class FakeCatalog : public maskplan::Catalog {
 public:
  Result<maskplan::CatalogSnapshot> resolve(const std::vector<uint32_t>& tables,
                                            const std::vector<uint32_t>& types) override {
    maskplan::CatalogSnapshot s;
    for (uint32_t t : tables) {
      for (const auto& info : all()) {
        if (info.oid != t) continue;
        for (const auto& c : info.columns) {
          s.columns[{t, c.attnum}] = {info.schema, info.name, c.name};
        }
      }
    }
    for (uint32_t t : types) {
      if (const maskplan::TypeInfo* b = maskplan::builtin_type(t)) s.types[t] = *b;
    }
    return s;
  }
  Result<std::vector<maskplan::TableInfo>> find_tables(const std::string& schema,
                                                       const std::string& name) override {
    if (down) return unavailable("metadata connection failed");
    std::vector<maskplan::TableInfo> out;
    for (const auto& info : all()) {
      if (info.name == name && (schema.empty() || info.schema == schema)) out.push_back(info);
    }
    return out;
  }
  std::vector<maskplan::TableInfo> all() const {
    std::vector<maskplan::TableColumn> cols = {{1, "id", 23, false},
                                               {2, "email", 25, false},
                                               {3, "ssn", 25, false},
                                               {5, "gen", 23, true},
                                               {6, "note", 1043, false}};
    std::vector<maskplan::TableInfo> v = {{kCustomers, "crm", "customers", cols}};
    if (with_archive) v.push_back({kArchive, "archive", "customers", cols});
    if (with_shadow) {
      v.push_back(
          {kShadow, "shadow", "customers", {{1, "id", 23, false}, {2, "email", 25, false}}});
    }
    return v;
  }
  bool down = false;
  bool with_shadow = false;
  bool with_archive = false;
};

class CopyPlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    policy_.name = "agents";
    policy_.masks = {{"crm.customers.email", "", "", "email"}, {"", "*ssn*", "", "hash"}};
  }
  Result<protocol::MaskPlanResponse> plan(std::string sql, int columns, int format = 0,
                                          int index = 0) {
    return plan_copy({std::move(sql), index, format, columns}, policy_, catalog_, key_);
  }
  static std::string functions(const json& plan) {
    std::string out;
    for (const auto& c : plan["columns"]) {
      out += std::to_string(c["index"].get<int>()) + ":" + c["function"].get<std::string>() + " ";
    }
    return out;
  }
  policy::Policy policy_;
  FakeCatalog catalog_;
  std::string key_ = std::string(32, 'k');
};

TEST_F(CopyPlannerTest, WholeTableSkipsGeneratedColumnsAndUsesRowDescriptionRules) {
  auto r = plan("COPY crm.customers TO STDOUT", 4);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->plan["column_count"], 4);
  EXPECT_EQ(functions(r->plan), "1:email 2:hash 3:detect ");
  EXPECT_EQ(r->copy["format"], "text");
  EXPECT_EQ(r->copy["delimiter"], "\t");
  EXPECT_EQ(r->copy["null"], "\\N");
  EXPECT_EQ(r->copy["line_detect"], false);
}

TEST_F(CopyPlannerTest, ExplicitColumnListInItsOrderWithCsvOptions) {
  auto r = plan(
      "COPY crm.customers (ssn, id) TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER ';', "
      "QUOTE '''', NULL 'n/a', FORCE_QUOTE *)",
      2);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(functions(r->plan), "0:hash ");
  EXPECT_EQ(r->copy["format"], "csv");
  EXPECT_EQ(r->copy["delimiter"], ";");
  EXPECT_EQ(r->copy["quote"], "'");
  EXPECT_EQ(r->copy["escape"], "'");
  EXPECT_EQ(r->copy["null"], "n/a");
  EXPECT_EQ(r->copy["header"], true);
}

TEST_F(CopyPlannerTest, SecondCopyOfAMultiStatementQuery) {
  auto r = plan("SELECT 1; COPY crm.customers (id) TO STDOUT; COPY crm.customers (email) TO STDOUT",
                1, 0, 1);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(functions(r->plan), "0:email ");
  EXPECT_EQ(plan("COPY crm.customers TO STDOUT", 4, 0, 1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(CopyPlannerTest, BinaryWithMaskedColumnsIsRefusedButUnmaskedColumnsPass) {
  auto r = plan("COPY crm.customers TO STDOUT (FORMAT binary)", 4, 1);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().sqlstate(), "42501");
  EXPECT_NE(r.status().message().find("FORMAT csv"), std::string::npos);
  EXPECT_TRUE(plan("COPY crm.customers (id) TO STDOUT BINARY", 1, 1).is_ok());
  // The CopyOutResponse's format must agree with the statement's.
  EXPECT_FALSE(plan("COPY crm.customers (id) TO STDOUT", 1, 1).is_ok());
}

TEST_F(CopyPlannerTest, UnsupportedOptionsAreRefused) {
  for (const char* sql : {"COPY crm.customers TO STDOUT (ENCODING 'LATIN1')",
                          "COPY crm.customers TO STDOUT (DELIMITER '||')",
                          "COPY crm.customers TO STDOUT (HEADER match)",
                          "COPY crm.customers TO STDOUT (FORMAT text, QUOTE '\"')",
                          "COPY crm.customers TO STDOUT (FREEZE)"}) {
    auto r = plan(sql, 4);
    ASSERT_FALSE(r.is_ok()) << sql;
    EXPECT_EQ(r.status().sqlstate(), "42501") << sql;
  }
}

TEST_F(CopyPlannerTest, UnqualifiedNameMustPlanTheSameInEverySchema) {
  catalog_.with_archive = true;  // same columns, but crm.customers.email is masked only in crm
  auto r = plan("COPY customers TO STDOUT", 4);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("schema-qualify"), std::string::npos);
  policy_.masks = {{"*.customers.email", "", "", "email"}, {"", "*ssn*", "", "hash"}};
  EXPECT_TRUE(plan("COPY customers TO STDOUT", 4).is_ok());
  // A table lacking a listed column cannot be the one COPY reads.
  catalog_.with_archive = false;
  catalog_.with_shadow = true;
  auto listed = plan("COPY customers (ssn) TO STDOUT", 1);
  ASSERT_TRUE(listed.is_ok()) << listed.status().to_string();
  EXPECT_EQ(functions(listed->plan), "0:hash ");
}

TEST_F(CopyPlannerTest, UnknownTableColumnCountMismatchAndCatalogDownFailClosed) {
  EXPECT_EQ(plan("COPY crm.nosuch TO STDOUT", 1).status().sqlstate(), "42501");
  EXPECT_EQ(plan("COPY crm.customers TO STDOUT", 5).status().sqlstate(), "42501");
  catalog_.down = true;
  EXPECT_EQ(plan("COPY crm.customers TO STDOUT", 4).status().code(), StatusCode::kUnavailable);
}

TEST_F(CopyPlannerTest, TablesTheCatalogCannotSeePassUnlessAMaskRuleCouldCoverThem) {
  // A table created in the session (uncommitted or temporary) is invisible to the catalog.
  policy_.masks = {{"crm.*.email", "", "", "email"}};
  auto ok = plan("COPY public.fresh TO STDOUT", 3);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->plan["columns"].size(), 0u);
  EXPECT_EQ(ok->plan["column_count"], 3);
  EXPECT_EQ(ok->copy["line_detect"], true);
  EXPECT_TRUE(plan("COPY public.fresh TO STDOUT (FORMAT binary)", 3, 1).is_ok());
  // A rule that could cover it: its schema matches, or the name is unqualified (any schema).
  for (const char* sql : {"COPY crm.fresh TO STDOUT", "COPY fresh TO STDOUT"}) {
    auto r = plan(sql, 3);
    ASSERT_FALSE(r.is_ok()) << sql;
    EXPECT_EQ(r.status().sqlstate(), "42501");
    EXPECT_NE(r.status().message().find("crm.*.email"), std::string::npos) << r.status().message();
  }
  EXPECT_NE(plan("COPY fresh TO STDOUT", 3).status().message().find("schema-qualify"),
            std::string::npos);
  // Column-name and type rules could cover any table.
  policy_.masks = {{"", "*ssn*", "", "hash"}};
  EXPECT_FALSE(plan("COPY public.fresh TO STDOUT", 3).is_ok());
  policy_.masks = {{"", "", "inet", "redact"}};
  EXPECT_FALSE(plan("COPY public.fresh TO STDOUT", 3).is_ok());
  policy_.masks.clear();
  EXPECT_TRUE(plan("COPY fresh TO STDOUT", 3).is_ok());
}

TEST_F(CopyPlannerTest, CopyQueryUsingMaskedColumnIsRefused) {
  for (const char* sql : {"COPY (SELECT id, email FROM crm.customers) TO STDOUT",
                          "COPY (SELECT * FROM crm.customers) TO STDOUT",
                          "COPY (SELECT upper(c.ssn) FROM crm.customers c) TO STDOUT"}) {
    auto r = plan(sql, 2);
    ASSERT_FALSE(r.is_ok()) << sql;
    EXPECT_EQ(r.status().sqlstate(), "42501");
    EXPECT_NE(r.status().message().find("is masked"), std::string::npos) << sql;
  }
  auto ok = plan("COPY (SELECT id, note FROM crm.customers) TO STDOUT (FORMAT csv)", 2);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ(ok->plan["columns"].size(), 0u);
  EXPECT_EQ(ok->plan["column_count"], 2);
  EXPECT_EQ(ok->copy["line_detect"], true);
  policy_.masks.push_back({"", "", "inet", "null"});
  EXPECT_FALSE(plan("COPY (SELECT id FROM crm.customers) TO STDOUT", 1).is_ok());
}

}  // namespace
}  // namespace pgwarden::server
