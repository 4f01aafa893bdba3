#include "controlplane/masking/mask_plan.h"

#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include "controlplane/policy/glob.h"

namespace pgwarden::maskplan {
namespace {

constexpr uint32_t kCustomers = 16400;
constexpr uint32_t kOrders = 16410;

// An in-memory catalog shaped like the sandbox's crm schema (fakes over mocks for I/O).
class FakeCatalog : public Catalog {
 public:
  Result<CatalogSnapshot> resolve(const std::vector<uint32_t>& tables,
                                  const std::vector<uint32_t>& types) override {
    ++calls;
    if (down) return unavailable("metadata connection failed");
    CatalogSnapshot s;
    const char* customer_cols[] = {"id", "full_name", "email", "phone", "ssn", "card_number"};
    for (uint32_t t : tables) {
      if (t == kCustomers) {
        for (int i = 0; i < 6; ++i) {
          s.columns[{t, static_cast<int16_t>(i + 1)}] = {"crm", "customers", customer_cols[i]};
        }
      } else if (t == kOrders) {
        s.columns[{t, 1}] = {"crm", "orders", "id"};
        s.columns[{t, 2}] = {"crm", "orders", "client_ip"};
      }
    }
    for (uint32_t t : types) {
      if (const TypeInfo* b = builtin_type(t)) s.types[t] = *b;
      if (t == 90001) s.types[t] = {"citext", 'S'};
    }
    return s;
  }
  bool down = false;
  int calls = 0;
};

policy::Policy crm_policy() {
  policy::Policy p;
  p.name = "agents";
  policy::MaskRule email;
  email.column_glob = "crm.*.email";
  email.function = "email";
  policy::MaskRule card;
  card.column_glob = "CRM.customers.card_*";
  card.function = "partial";
  card.keep_last = 4;
  policy::MaskRule ssn;
  ssn.name_pattern = "*ssn*";
  ssn.function = "hash";
  policy::MaskRule ip;
  ip.type_name = "inet";
  ip.function = "null";
  policy::MaskRule phone;
  phone.column_glob = "crm.customers.phone";
  phone.function = "redact";
  phone.text = "[phone]";
  p.masks = {email, card, ssn, ip, phone};
  return p;
}

const std::string kKey(32, 'k');

const PlannedColumn* find(const MaskPlan& plan, int index) {
  for (const auto& c : plan.columns) {
    if (c.index == index) return &c;
  }
  return nullptr;
}

TEST(BuildMaskPlan, ColumnGlobMasksResolvedSourceColumns) {
  FakeCatalog cat;
  std::vector<ResultField> fields = {{"id", kCustomers, 1, 23, 0},
                                     {"email", kCustomers, 3, 25, 0},
                                     {"card_number", kCustomers, 6, 25, 1},
                                     {"phone", kCustomers, 4, 1043, 0}};
  auto plan = build_mask_plan(fields, crm_policy(), cat, kKey);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  EXPECT_EQ(plan->column_count, 4u);
  EXPECT_EQ(find(*plan, 0), nullptr);  // int4 id: no rule, not text -> untouched
  ASSERT_NE(find(*plan, 1), nullptr);
  EXPECT_EQ(find(*plan, 1)->function, "email");
  EXPECT_EQ(find(*plan, 1)->source, "crm.customers.email");
  EXPECT_EQ(find(*plan, 1)->reason, "column_glob crm.*.email");
  EXPECT_EQ(find(*plan, 2)->function, "partial");  // glob is case-insensitive
  EXPECT_EQ(find(*plan, 2)->keep_last, 4);
  EXPECT_EQ(find(*plan, 2)->format, 1);
  EXPECT_EQ(find(*plan, 3)->function, "redact");
  EXPECT_EQ(find(*plan, 3)->text, "[phone]");
  EXPECT_FALSE(plan->detect);
  EXPECT_TRUE(plan->hash_key.empty());  // no hash column in this result
}

TEST(BuildMaskPlan, AliasKeepsTheSourceColumnsMask) {
  FakeCatalog cat;
  auto plan = build_mask_plan({{"e", kCustomers, 3, 25, 0}}, crm_policy(), cat, kKey);
  ASSERT_TRUE(plan.is_ok());
  ASSERT_EQ(plan->columns.size(), 1u);
  EXPECT_EQ(plan->columns[0].function, "email");
}

TEST(BuildMaskPlan, DerivedTextColumnNeedsDetectors) {
  FakeCatalog cat;
  auto plan =
      build_mask_plan({{"upper", 0, 0, 25, 0}, {"n", 0, 0, 20, 0}}, crm_policy(), cat, kKey);
  ASSERT_TRUE(plan.is_ok());
  ASSERT_EQ(plan->columns.size(), 1u);
  EXPECT_EQ(plan->columns[0].index, 0);
  EXPECT_EQ(plan->columns[0].function, "detect");
  EXPECT_TRUE(plan->detect);
}

TEST(BuildMaskPlan, DetectCanBeTurnedOff) {
  FakeCatalog cat;
  auto plan = build_mask_plan({{"upper", 0, 0, 25, 0}}, crm_policy(), cat, kKey,
                              {.detect_text_columns = false});
  ASSERT_TRUE(plan.is_ok());
  EXPECT_TRUE(plan->columns.empty());
  EXPECT_FALSE(plan->detect);
}

TEST(BuildMaskPlan, NamePatternMatchesSourceNameAndFieldName) {
  FakeCatalog cat;
  std::vector<ResultField> fields = {{"x", kCustomers, 5, 25, 0},              // ssn AS x
                                     {"ssn_upper", 0, 0, 25, 0},               // upper(ssn) AS ..
                                     {"full_name", kCustomers, 2, 90001, 0}};  // citext: detect
  auto plan = build_mask_plan(fields, crm_policy(), cat, kKey);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(find(*plan, 0)->function, "hash");
  EXPECT_EQ(find(*plan, 1)->function, "hash");
  EXPECT_EQ(find(*plan, 2)->function, "detect");
  EXPECT_EQ(plan->hash_key, kKey);
}

TEST(BuildMaskPlan, TypeNameRuleMasksByType) {
  FakeCatalog cat;
  auto plan = build_mask_plan({{"client_ip", kOrders, 2, 869, 0}}, crm_policy(), cat, kKey);
  ASSERT_TRUE(plan.is_ok());
  ASSERT_EQ(plan->columns.size(), 1u);
  EXPECT_EQ(plan->columns[0].function, "null");
  EXPECT_EQ(plan->columns[0].reason, "type_name inet");
}

TEST(BuildMaskPlan, FirstMatchingRuleWins) {
  FakeCatalog cat;
  policy::Policy p = crm_policy();
  policy::MaskRule all;
  all.column_glob = "crm.customers.*";
  all.function = "redact";
  p.masks.insert(p.masks.begin(), all);
  auto plan = build_mask_plan({{"email", kCustomers, 3, 25, 0}}, p, cat, kKey);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(plan->columns[0].function, "redact");
}

TEST(BuildMaskPlan, HashWithoutKeyIsAnError) {
  FakeCatalog cat;
  auto plan = build_mask_plan({{"ssn", kCustomers, 5, 25, 0}}, crm_policy(), cat, "");
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
}

TEST(BuildMaskPlan, CatalogOutageFailsClosed) {
  FakeCatalog cat;
  cat.down = true;
  auto plan = build_mask_plan({{"email", kCustomers, 3, 25, 0}}, crm_policy(), cat, kKey);
  EXPECT_EQ(plan.status().code(), StatusCode::kUnavailable);
}

TEST(BuildMaskPlan, DroppedTableFallsBackToFieldNameAndDetectors) {
  FakeCatalog cat;
  auto plan = build_mask_plan({{"email", 99999, 3, 25, 0}, {"ssn", 99999, 5, 25, 0}}, crm_policy(),
                              cat, kKey);
  ASSERT_TRUE(plan.is_ok());
  EXPECT_EQ(find(*plan, 0)->function, "detect");
  EXPECT_EQ(find(*plan, 1)->function, "hash");  // name_pattern on the field name
}

TEST(BuildMaskPlan, JsonIsTheProtocolResponse) {
  FakeCatalog cat;
  auto plan = build_mask_plan({{"id", kCustomers, 1, 23, 0}, {"ssn", kCustomers, 5, 25, 1}},
                              crm_policy(), cat, kKey);
  ASSERT_TRUE(plan.is_ok());
  auto j = plan->to_json();
  EXPECT_EQ(j["column_count"], 2);
  ASSERT_EQ(j["columns"].size(), 1u);
  EXPECT_EQ(j["columns"][0]["index"], 1);
  EXPECT_EQ(j["columns"][0]["function"], "hash");
  EXPECT_EQ(j["columns"][0]["format"], 1);
  EXPECT_EQ(j["hash_key"], std::string(64, '6').replace(0, 64, [] {
    std::string s;
    for (int i = 0; i < 32; ++i) s += "6b";
    return s;
  }()));
}

std::string hmac(std::string_view key, std::string_view data) {
  unsigned char out[32];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &n);
  return std::string(reinterpret_cast<char*>(out), n);
}

TEST(DerivePolicyKey, IsHkdfSha256PerPolicy) {
  std::string master(32, 'M');
  auto k = derive_policy_key(master, "agents");
  ASSERT_TRUE(k.is_ok());
  // RFC 5869 by hand: PRK = HMAC(salt, IKM); OKM(32) = HMAC(PRK, info || 0x01).
  std::string prk = hmac("pgwarden/mask/v1", master);
  std::string okm = hmac(prk, std::string("policy:agents") + '\x01');
  EXPECT_EQ(*k, okm);
  EXPECT_EQ(*derive_policy_key(master, "agents"), *k);
  EXPECT_NE(*derive_policy_key(master, "analysts"), *k);
  EXPECT_NE(*derive_policy_key(std::string(32, 'N'), "agents"), *k);
  EXPECT_FALSE(derive_policy_key("short", "agents").is_ok());
}

struct GlobExample {
  const char* pattern;
  const char* text;
  bool match;
};

class GlobTest : public ::testing::TestWithParam<GlobExample> {};

TEST_P(GlobTest, Matches) {
  EXPECT_EQ(policy::glob_match(GetParam().pattern, GetParam().text, policy::GlobCase::kInsensitive),
            GetParam().match)
      << GetParam().pattern << " vs " << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(
    Globs, GlobTest,
    ::testing::Values(GlobExample{"crm.*.email", "crm.customers.email", true},
                      GlobExample{"crm.*.email", "crm.customers.email2", false},
                      GlobExample{"*ssn*", "customer_ssn_hash", true},
                      GlobExample{"*ssn*", "sn", false},
                      GlobExample{"CRM.Customers.EMAIL", "crm.customers.email", true},
                      GlobExample{"crm.customers.?d", "crm.customers.id", true},
                      GlobExample{"crm.customers.?d", "crm.customers.uid", false},
                      GlobExample{"*", "", true}, GlobExample{"", "", true},
                      GlobExample{"", "x", false}, GlobExample{"a*b*c", "aXXbYYbZc", true},
                      GlobExample{"a*b*c", "aXXbYY", false}, GlobExample{"***a", "bbba", true}));

}  // namespace
}  // namespace pgwarden::maskplan

namespace pgwarden::maskplan {
namespace {

constexpr uint32_t kView = 16500;

// A view crm.customer_contacts(id, phone, mail_domain) over crm.customers: its columns'
// origins in a RowDescription are the view's, which the planner resolves through lineage.
class ViewCatalog : public FakeCatalog, public policy::LineageCatalog {
 public:
  Result<CatalogSnapshot> resolve(const std::vector<uint32_t>& tables,
                                  const std::vector<uint32_t>& types) override {
    auto s = FakeCatalog::resolve(tables, types);
    if (!s.is_ok()) return s;
    for (uint32_t t : tables) {
      if (t != kView) continue;
      s->columns[{t, 1}] = {"crm", "customer_contacts", "id"};
      s->columns[{t, 2}] = {"crm", "customer_contacts", "phone"};
      s->columns[{t, 3}] = {"crm", "customer_contacts", "mail_domain"};
    }
    return s;
  }
  Result<std::vector<policy::CatalogRelation>> relations(const std::string& schema,
                                                         const std::string& name) override {
    if (name == "customers" && (schema.empty() || schema == "crm")) {
      return std::vector<policy::CatalogRelation>{
          {"crm",
           "customers",
           'r',
           {"id", "full_name", "email", "phone", "ssn", "card_number"},
           ""}};
    }
    if (name == "customer_contacts" && (schema.empty() || schema == "crm")) {
      return std::vector<policy::CatalogRelation>{
          {"crm", "customer_contacts", 'v', {"id", "phone", "mail_domain"}, view_sql}};
    }
    return std::vector<policy::CatalogRelation>{};
  }
  Result<std::vector<std::string>> function_schemas(const std::string&) override {
    return std::vector<std::string>{"pg_catalog"};
  }
  std::string view_sql =
      " SELECT c.id, c.phone, split_part(c.email, '@', 2) AS mail_domain FROM crm.customers c;";
};

TEST(BuildMaskPlan, ViewColumnsAreResolvedThroughTheViewDefinition) {
  ViewCatalog cat;
  MaskPlanOptions options;
  options.lineage = &cat;
  auto plan = build_mask_plan(
      {{"id", kView, 1, 23, 0}, {"phone", kView, 2, 25, 0}, {"mail_domain", kView, 3, 25, 0}},
      crm_policy(), cat, kKey, options);
  ASSERT_TRUE(plan.is_ok()) << plan.status().message();
  EXPECT_EQ(find(*plan, 0), nullptr);
  ASSERT_NE(find(*plan, 1), nullptr);
  EXPECT_EQ(find(*plan, 1)->function, "redact");
  EXPECT_EQ(find(*plan, 1)->text, "[phone]");  // the source column's own mask
  ASSERT_NE(find(*plan, 2), nullptr);
  EXPECT_EQ(find(*plan, 2)->function, "redact");  // computed from masked email: whole value
  EXPECT_EQ(find(*plan, 2)->text, "****");
}

TEST(BuildMaskPlan, UnresolvableViewFailsThePlan) {
  ViewCatalog cat;
  cat.view_sql = "SELECT nothing FROM crm.missing";
  MaskPlanOptions options;
  options.lineage = &cat;
  auto plan = build_mask_plan({{"phone", kView, 2, 25, 0}}, crm_policy(), cat, kKey, options);
  EXPECT_FALSE(plan.is_ok());
}

}  // namespace
}  // namespace pgwarden::maskplan
