#include "rules/rule_set.h"

#include <gtest/gtest.h>
#include <hs/hs.h>

#include <string>
#include <vector>

namespace pgwarden::rules {
namespace {

constexpr const char* kGood =
    "# comment\n"
    "[deny.x]\n"
    "action = deny\n"
    "view = code\n"
    "pattern = \\bdrop\\s+x\\b\n"
    "flags = caseless, dotall\n"
    "message = no x\n"
    "severity = high\n"
    "\n"
    "[detect.y]\n"
    "action = detect\n"
    "literal = a.b\n"
    "validator = luhn\n"
    "severity = low\n";

Result<RuleSet> parse_one(const std::string& content, std::vector<RuleDiagnostic>* diags) {
  std::vector<RuleSource> sources = {{"set.rules", content}};
  return RuleSet::parse(sources, diags);
}

TEST(RuleSetParse, EveryValidatorNameRoundTrips) {
  for (const char* name : {"luhn", "payment_card", "iban", "phone", "us_ssn", "uk_nino", "nl_bsn",
                           "de_steuer_id", "email"}) {
    std::string content = std::string("[d.a]\naction = detect\nseverity = low\npattern = x\n") +
                          "validator = " + name + "\n";
    Result<RuleSet> set = parse_one(content, nullptr);
    ASSERT_TRUE(set.is_ok()) << name << ": " << set.status().message();
    EXPECT_EQ(validator_name(set->rules()[0].validator), name);
  }
}

TEST(RuleSetParse, ParsesAllKeysAndImpliedFlags) {
  Result<RuleSet> set = parse_one(kGood, nullptr);
  ASSERT_TRUE(set.is_ok()) << set.status().message();
  ASSERT_EQ(set->size(), 2u);
  const Rule& deny = set->rules()[0];
  EXPECT_EQ(deny.id, "deny.x");
  EXPECT_EQ(deny.action, Action::kDeny);
  EXPECT_EQ(deny.view, View::kCode);
  EXPECT_EQ(deny.severity, Severity::kHigh);
  EXPECT_EQ(deny.message, "no x");
  EXPECT_EQ(deny.hs_flags, unsigned{HS_FLAG_CASELESS | HS_FLAG_DOTALL | HS_FLAG_SINGLEMATCH});
  EXPECT_EQ(deny.line, 2u);
  const Rule& detect = set->rules()[1];
  EXPECT_EQ(detect.view, View::kValue);
  EXPECT_EQ(detect.validator, Validator::kLuhn);
  EXPECT_EQ(detect.pattern, "a\\x2eb");
  EXPECT_EQ(detect.hs_flags, unsigned{HS_FLAG_SOM_LEFTMOST});
  EXPECT_EQ(set->content_hash().size(), 64u);
}

TEST(RuleSetParse, ContentHashChangesWithAnyRuleField) {
  Result<RuleSet> a = parse_one(kGood, nullptr);
  std::string changed = kGood;
  changed.replace(changed.find("no x"), 4, "no y");
  Result<RuleSet> b = parse_one(changed, nullptr);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_NE(a->content_hash(), b->content_hash());
  EXPECT_EQ(a->content_hash(), parse_one(kGood, nullptr)->content_hash());
}

struct BadCase {
  const char* name;
  const char* content;
  const char* expected;  // substring of the one diagnostic, including file:line
};

class RuleSetRejectTest : public ::testing::TestWithParam<BadCase> {};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

TEST_P(RuleSetRejectTest, ReportsFileLineAndReason) {
  std::vector<RuleDiagnostic> diags;
  Result<RuleSet> set = parse_one(GetParam().content, &diags);
  ASSERT_FALSE(set.is_ok());
  ASSERT_FALSE(diags.empty());
  EXPECT_NE(set.status().message().find(GetParam().expected), std::string::npos)
      << set.status().message();
}

#define RULE_HEAD "[r.a]\naction = deny\nview = code\nmessage = m\nseverity = low\n"

INSTANTIATE_TEST_SUITE_P(
    Rejects, RuleSetRejectTest,
    ::testing::Values(
        BadCase{"UnknownKey", RULE_HEAD "pattern = x\ncolour = red\n",
                "set.rules:7: unknown key 'colour'"},
        BadCase{"DuplicateId", RULE_HEAD "pattern = x\n" RULE_HEAD "pattern = y\n",
                "set.rules:7: duplicate rule id 'r.a' (first defined at set.rules:1)"},
        BadCase{"PatternRejectedByHyperscan", RULE_HEAD "pattern = (unclosed\n",
                "set.rules:1: rule r.a: pattern rejected by Hyperscan"},
        BadCase{"LookaheadRejected", RULE_HEAD "pattern = a(?=b)\n",
                "pattern rejected by Hyperscan"},
        BadCase{"EmptyMatchRejected", RULE_HEAD "pattern = a*\n", "can match an empty string"},
        BadCase{"MissingPattern", RULE_HEAD, "set.rules:1: rule r.a: missing 'pattern'"},
        BadCase{"MissingSeverity", "[r.a]\naction = deny\nview = code\nmessage = m\npattern = x\n",
                "missing 'severity'"},
        BadCase{"MissingMessageForDeny",
                "[r.a]\naction = deny\nview = code\nseverity = low\npattern = x\n",
                "missing 'message'"},
        BadCase{"UnknownAction", "[r.a]\naction = block\n", "set.rules:2: unknown action 'block'"},
        BadCase{"UnknownFlag", RULE_HEAD "pattern = x\nflags = caseless, fast\n",
                "set.rules:7: unknown flag 'fast'"},
        BadCase{"DuplicateKey", RULE_HEAD "pattern = x\npattern = y\n",
                "set.rules:7: duplicate key 'pattern' (first at line 6)"},
        BadCase{"KeyOutsideRule", "action = deny\n", "set.rules:1: key outside of a rule"},
        BadCase{"BadId", "[Bad Id]\n", "set.rules:1: invalid rule id"},
        BadCase{"ValidatorOnDeny", RULE_HEAD "pattern = x\nvalidator = luhn\n",
                "'validator' is only for detect rules"},
        BadCase{"UnknownValidatorListsTheNames",
                "[d.a]\naction = detect\nseverity = low\npattern = x\nvalidator = bic\n",
                "set.rules:5: unknown validator 'bic' (luhn, payment_card, iban, phone, us_ssn, "
                "uk_nino, nl_bsn, de_steuer_id, email)"},
        BadCase{"DetectWithCodeView",
                "[d.a]\naction = detect\nview = code\nseverity = low\n"
                "pattern = x\n",
                "view must be 'value'"},
        BadCase{"PatternAndLiteral", RULE_HEAD "pattern = x\nliteral = y\n",
                "has both 'pattern' and 'literal'"},
        BadCase{"GarbageLine", RULE_HEAD "pattern = x\njust words\n",
                "set.rules:7: expected 'key = value'"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(RuleSetParse, ReportsEveryProblemNotOnlyTheFirst) {
  std::vector<RuleDiagnostic> diags;
  Result<RuleSet> set = parse_one(RULE_HEAD "pattern = (\nfoo = 1\n[r.b]\naction = nope\n", &diags);
  ASSERT_FALSE(set.is_ok());
  EXPECT_GE(diags.size(), 3u) << set.status().message();
}

TEST(RuleSetParse, DuplicateIdAcrossFilesNamesBothFiles) {
  std::vector<RuleSource> sources = {{"a.rules", RULE_HEAD "pattern = x\n"},
                                     {"b.rules", "\n" RULE_HEAD "pattern = y\n"}};
  Result<RuleSet> set = RuleSet::parse(sources);
  ASSERT_FALSE(set.is_ok());
  EXPECT_EQ(set.status().message(),
            "b.rules:2: duplicate rule id 'r.a' (first defined at a.rules:1)");
}

TEST(RuleSetParse, MissingFileIsReported) {
  std::vector<std::string> paths = {"/nonexistent/pgwarden.rules"};
  Result<RuleSet> set = RuleSet::load_files(paths);
  ASSERT_FALSE(set.is_ok());
  EXPECT_EQ(set.status().message(), "/nonexistent/pgwarden.rules:0: cannot open file");
}

TEST(RuleSetParse, EmptySourceListIsAnError) { EXPECT_FALSE(RuleSet::parse({}).is_ok()); }

TEST(EscapeLiteral, MetacharactersMatchThemselves) {
  EXPECT_EQ(escape_literal("a.b*c"), "a\\x2eb\\x2ac");
  EXPECT_EQ(escape_literal("x y_1"), "x y_1");
}

}  // namespace
}  // namespace pgwarden::rules
