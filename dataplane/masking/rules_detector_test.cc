// The RowMasker with the shipped PII detectors (rules/sets/pii.rules, real Hyperscan).
#include "dataplane/masking/rules_detector.h"

#include <gtest/gtest.h>

#include "common/source_root.h"
#include "dataplane/pgwire/messages.h"

namespace pgwarden::masking {
namespace {

std::shared_ptr<const rules::CompiledRuleSet> pii_set() {
  std::vector<std::string> paths = {std::string(PGW_SOURCE_ROOT) + "/rules/sets/pii.rules"};
  auto set = rules::RuleSet::load_files(paths);
  EXPECT_TRUE(set.is_ok()) << set.status().to_string();
  auto compiled = rules::CompiledRuleSet::compile(std::move(*set));
  EXPECT_TRUE(compiled.is_ok()) << compiled.status().to_string();
  return *compiled;
}

std::string mask_one(RowMasker& m, const std::string& value) {
  std::vector<std::optional<std::string_view>> cols = {value};
  std::string msg, out;
  pgwire::append_data_row(msg, cols);
  auto r = m.mask_data_row(pgwire::as_bytes(std::string_view(msg).substr(5)), out);
  EXPECT_TRUE(r.is_ok());
  const std::string& final_msg = *r ? out : msg;
  pgwire::DataRow row;
  EXPECT_TRUE(pgwire::parse(pgwire::as_bytes(std::string_view(final_msg).substr(5)), &row).ok());
  return std::string(row.columns.begin()->text());
}

struct DetectCase {
  const char* name;
  std::string value;
  std::string expected;
};

class PiiDetectTest : public ::testing::TestWithParam<DetectCase> {};

TEST_P(PiiDetectTest, MasksOnlyTheSensitiveSpan) {
  static auto set = pii_set();
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kDetect}};
  auto m = RowMasker::create(plan, make_rules_detector(set));
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(mask_one(**m, GetParam().value), GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(
    Values, PiiDetectTest,
    ::testing::Values(
        DetectCase{"Email", "contact ADA@EXAMPLE.COM today", "contact *************** today"},
        DetectCase{"LuhnValidCard", "card 4111111111111111.", "card ****************."},
        DetectCase{"LuhnInvalidCardKept", "order 4111111111111112", "order 4111111111111112"},
        DetectCase{"Ssn", "ssn: 123-45-6789", "ssn: ***********"},
        DetectCase{"PlainText", "prefers email", "prefers email"},
        DetectCase{"ContactJson",
                   R"({"phone": "+31-20-555-0104", "iban": "NL91 ABNA 0417 1643 00", )"
                   R"("card": "4111 1111 1111 1111", "since": "2026-12-06 02:10:30+00"})",
                   R"({"phone": "***************", "iban": "**********************", )"
                   R"("card": "*******************", "since": "2026-12-06 02:10:30+00"})"},
        DetectCase{"CompositeText", R"((1,"+31 20 555 0104",ada@example.com))",
                   R"((1,"***************",***************))"},
        DetectCase{"ArrayText", R"({"020-555 0104",DE89370400440532013000})",
                   R"({"************",**********************})"},
        DetectCase{"HstoreText", R"("bsn"=>"111222333", "order"=>"100234567")",
                   R"("bsn"=>"*********", "order"=>"100234567")"},
        DetectCase{"UuidAndOrderNumberKept", "550e8400-e29b-41d4-a716-446655440000 ORD-2026-000123",
                   "550e8400-e29b-41d4-a716-446655440000 ORD-2026-000123"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(RulesDetector, MissingRuleSetMasksWholeValue) {
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kDetect}};
  auto m = RowMasker::create(plan, make_rules_detector(nullptr));
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(mask_one(**m, "abc"), "***");
}

TEST(RulesDetector, MatcherWithoutSetFailsClosed) {
  rules::Matcher matcher;
  RowMaskPlan plan;
  plan.columns = {ColumnMask{MaskFunction::kDetect}};
  auto m = RowMasker::create(plan, make_matcher_detector(matcher));
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(mask_one(**m, "hello"), "*****");
  matcher.install(pii_set());
  EXPECT_EQ(mask_one(**m, "hello"), "hello");
}

}  // namespace
}  // namespace pgwarden::masking
