#include "dataplane/session/screen.h"

#include <gtest/gtest.h>

#include "common/source_root.h"

namespace pgwarden::session {
namespace {

const std::string kSets = std::string(PGW_SOURCE_ROOT) + "/rules/sets";

TEST(ScreenTest, RuleSetNamesResolveToFilesIncludingDefaultAliases) {
  EXPECT_TRUE(rule_set_file(kSets, "deny").is_ok());
  auto aliased = rule_set_file(kSets, "default-deny");
  ASSERT_TRUE(aliased.is_ok());
  EXPECT_EQ(*aliased, kSets + "/deny.rules");
  EXPECT_EQ(*rule_set_file(kSets, "pii-detect"), kSets + "/pii.rules");
  EXPECT_FALSE(rule_set_file(kSets, "no-such-set").is_ok());
}

TEST(ScreenTest, DenyRuleMatchesAndLiteralsDoNotChangeTheShapeKey) {
  auto rules = load_rules(kSets, {{"deny", "approve"}});
  ASSERT_TRUE(rules.is_ok()) << rules.status().to_string();
  Screen screen;
  screen.set_rules(*rules);
  auto set = screen.resolve({"deny", "approve"});
  ASSERT_TRUE(set.is_ok());
  ScreenResult a, b, d;
  screen.screen("select * from crm.customers where id = 1", set->get(), &a);
  screen.screen("SELECT *   FROM crm.customers WHERE id = 42", set->get(), &b);
  EXPECT_EQ(a.shape_key, b.shape_key);
  EXPECT_EQ(a.first("deny"), nullptr);
  screen.screen("DROP /* x */ DATABASE demo", set->get(), &d);
  ASSERT_NE(d.first("deny"), nullptr);
  EXPECT_EQ(d.first("deny")->rule, "deny.drop_database");
}

TEST(ScreenTest, UnknownRuleSetListIsAnErrorAndEmptyListMeansNoPrescreen) {
  auto rules = load_rules(kSets, {{"deny"}});
  ASSERT_TRUE(rules.is_ok());
  Screen screen;
  screen.set_rules(*rules);
  EXPECT_FALSE(screen.resolve({"approve"}).is_ok());
  auto none = screen.resolve({});
  ASSERT_TRUE(none.is_ok());
  EXPECT_EQ(none->get(), nullptr);
  ScreenResult r;
  screen.screen("drop database demo", nullptr, &r);
  EXPECT_TRUE(r.matches.empty());
  EXPECT_NE(r.shape_key, 0u);
}

}  // namespace
}  // namespace pgwarden::session
