#include "dataplane/session/startup_settings.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace pgwarden::session {
namespace {

std::vector<std::string> defaults() {
  std::vector<std::string> out;
  for (std::string_view s : default_startup_settings()) out.emplace_back(s);
  return out;
}

TEST(StartupOptionsTest, ReadsDashCAndDoubleDashSettingsAsPostgreSQLDoes) {
  auto r = parse_startup_options("-c search_path=crm  --statement-timeout=5s -capp.x=1");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].name, "search_path");
  EXPECT_EQ((*r)[0].value, "crm");
  EXPECT_EQ((*r)[1].name, "statement_timeout");  // '-' becomes '_' as in ParseLongOption
  EXPECT_EQ((*r)[1].value, "5s");
  EXPECT_EQ((*r)[2].name, "app.x");
  EXPECT_TRUE((*r)[2].from_options);
}

TEST(StartupOptionsTest, BackslashKeepsASpaceInsideAValue) {
  auto r = parse_startup_options(R"(-c application_name=my\ agent\\x)");
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].value, R"(my agent\x)");
}

TEST(StartupOptionsTest, OtherSwitchesAndMalformedSettingsAreRefused) {
  for (const char* bad : {"-d 5", "-B 100", "-c", "-c noequals", "--=x", "plain"}) {
    auto r = parse_startup_options(bad);
    EXPECT_FALSE(r.is_ok()) << bad;
    if (!r.is_ok()) {
      EXPECT_EQ(r.status().sqlstate(), "42501") << bad;
    }
  }
  auto empty = parse_startup_options("   ");
  ASSERT_TRUE(empty.is_ok());
  EXPECT_TRUE(empty->empty());
}

TEST(StartupSettingsTest, DefaultListAdmitsTheCommonClientSettingsCaseInsensitively) {
  auto allowed = defaults();
  for (const char* name : {"application_name", "datestyle", "TimeZone", "extra_float_digits",
                           "client_encoding", "IntervalStyle", "statement_timeout"}) {
    EXPECT_EQ(startup_setting_refusal({name, "x", false}, allowed), "") << name;
  }
  for (const char* name : {"search_path", "some.var", "default_transaction_read_only", "foo"}) {
    EXPECT_NE(startup_setting_refusal({name, "x", false}, allowed), "") << name;
  }
}

TEST(StartupSettingsTest, IdentityAndLexerSettingsAreRefusedWhateverTheList) {
  std::vector<std::string> everything = {"*"};
  EXPECT_NE(startup_setting_refusal({"role", "postgres", true}, everything), "");
  EXPECT_NE(startup_setting_refusal({"ROLE", "postgres", false}, everything), "");
  EXPECT_NE(startup_setting_refusal({"session_authorization", "x", true}, everything), "");
  EXPECT_NE(startup_setting_refusal({"standard_conforming_strings", "off", true}, everything), "");
  EXPECT_EQ(startup_setting_refusal({"standard_conforming_strings", "on", true}, everything), "");
  EXPECT_NE(startup_setting_refusal({"client_encoding", "SJIS", false}, everything), "");
  EXPECT_NE(startup_setting_refusal({"client_encoding", "gb-18030", false}, everything), "");
  EXPECT_EQ(startup_setting_refusal({"client_encoding", "UTF8", false}, everything), "");
  EXPECT_EQ(startup_setting_refusal({"search_path", "crm", false}, everything), "");
}

TEST(StartupSettingsTest, GlobsMatchCustomSettingFamilies) {
  std::vector<std::string> allowed = {"app.*", "search_path"};
  EXPECT_EQ(startup_setting_refusal({"app.tenant", "1", true}, allowed), "");
  EXPECT_EQ(startup_setting_refusal({"APP.Tenant", "1", true}, allowed), "");
  EXPECT_NE(startup_setting_refusal({"other.tenant", "1", true}, allowed), "");
  EXPECT_NE(startup_setting_refusal({"application_name", "a", false}, allowed), "");
  EXPECT_TRUE(startup_glob_match("*.*", "some.var"));
  EXPECT_FALSE(startup_glob_match("*.*", "somevar"));
  EXPECT_TRUE(startup_glob_match("lock_?imeout", "LOCK_TIMEOUT"));
  EXPECT_FALSE(startup_glob_match("lock", "lock_timeout"));
}

}  // namespace
}  // namespace pgwarden::session
