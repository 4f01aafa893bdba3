#include "controlplane/policy/glob.h"

#include <gtest/gtest.h>

#include <string>

namespace pgwarden::policy {
namespace {

TEST(GlobMatch, LiteralsMatchExactly) {
  EXPECT_TRUE(glob_match("crm.customers", "crm.customers"));
  EXPECT_FALSE(glob_match("crm.customers", "crm.customers2"));
  EXPECT_FALSE(glob_match("crm.customers", "CRM.customers"));
  EXPECT_TRUE(glob_match("", ""));
  EXPECT_FALSE(glob_match("", "x"));
}

TEST(GlobMatch, StarMatchesAnyRunIncludingDots) {
  EXPECT_TRUE(glob_match("crm.*", "crm.customers"));
  EXPECT_TRUE(glob_match("crm.*", "crm."));
  EXPECT_FALSE(glob_match("crm.*", "crmx.customers"));
  EXPECT_TRUE(glob_match("*", "a.b"));
  EXPECT_TRUE(glob_match("*.orders", "crm.orders"));
  EXPECT_TRUE(glob_match("*ssn*", "customer_ssn_hash"));
  EXPECT_TRUE(glob_match("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXXbYY"));
}

TEST(GlobMatch, QuestionMarkMatchesOneCharacter) {
  EXPECT_TRUE(glob_match("public.kv?", "public.kv2"));
  EXPECT_FALSE(glob_match("public.kv?", "public.kv"));
  EXPECT_FALSE(glob_match("public.kv?", "public.kv22"));
}

TEST(GlobMatch, PathologicalPatternsStayFast) {
  const std::string text(5000, 'a');
  const std::string pattern = std::string(50, '*') + "a" + std::string(50, '*') + "b";
  EXPECT_FALSE(glob_match(pattern, text));
}

}  // namespace
}  // namespace pgwarden::policy
