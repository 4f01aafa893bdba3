#include "controlplane/web/browser_sessions.h"

#include <gtest/gtest.h>

namespace pgwarden::web {
namespace {

TEST(BrowserSessions, CreateFindRemove) {
  BrowserSessions s(std::chrono::seconds(60));
  NewBrowserSession n = s.create(Person{.name = "alice", .groups = {"dba"},
                                        .role = Role::kReviewer, .via = "oidc"},
                                 "127.0.0.1");
  EXPECT_EQ(n.cookie_value.size(), 43u);
  EXPECT_EQ(n.session.csrf_token.size(), 43u);
  EXPECT_NE(n.cookie_value, n.session.csrf_token);
  auto found = s.find(n.cookie_value);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->person.name, "alice");
  EXPECT_EQ(found->csrf_token, n.session.csrf_token);
  EXPECT_FALSE(s.find(n.session.csrf_token).has_value());
  EXPECT_FALSE(s.find("").has_value());
  EXPECT_TRUE(s.remove(n.cookie_value));
  EXPECT_FALSE(s.find(n.cookie_value).has_value());
  EXPECT_FALSE(s.remove(n.cookie_value));
}

TEST(BrowserSessions, ExpiredSessionIsGone) {
  BrowserSessions s(std::chrono::seconds(0));
  NewBrowserSession n = s.create(Person{.name = "bob", .role = Role::kViewer}, "");
  EXPECT_FALSE(s.find(n.cookie_value).has_value());
}

TEST(BrowserSessions, TableIsCapped) {
  BrowserSessions s(std::chrono::seconds(60), 3);
  std::vector<std::string> cookies;
  for (int i = 0; i < 5; ++i) {
    cookies.push_back(s.create(Person{.name = "p" + std::to_string(i)}, "").cookie_value);
  }
  EXPECT_EQ(s.size(), 3u);
  EXPECT_TRUE(s.find(cookies.back()).has_value());
}

}  // namespace
}  // namespace pgwarden::web
