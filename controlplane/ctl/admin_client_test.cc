#include "controlplane/ctl/admin_client.h"

#include <gtest/gtest.h>

#include <sstream>

namespace pgwarden::ctl {
namespace {

TEST(AdminClientTest, ParseArgsSplitsOptionsFlagsAndPositionals) {
  std::vector<std::string_view> words = {"approve",  "abc",    "--scope",  "shape",
                                         "--for=1h", "--json", "--offline"};
  auto p = parse_args(words, {"--offline"});
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->positional, (std::vector<std::string>{"approve", "abc"}));
  EXPECT_EQ(p->get("--scope"), "shape");
  EXPECT_EQ(p->get("--for"), "1h");
  EXPECT_TRUE(p->has("--json"));
  EXPECT_TRUE(p->has("--offline"));
  std::vector<std::string_view> dangling = {"deny", "x", "--reason"};
  EXPECT_FALSE(parse_args(dangling, {}).is_ok());
  // After `--` a word that looks like an option is an argument (an id, a reason).
  std::vector<std::string_view> ended = {"deny", "--reason", "r", "--", "--abc", "--json"};
  p = parse_args(ended, {});
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->positional, (std::vector<std::string>{"deny", "--abc", "--json"}));
  EXPECT_EQ(p->get("--reason"), "r");
  EXPECT_FALSE(p->has("--json"));
}

TEST(AdminClientTest, DurationsAcceptUnitsAndRejectJunk) {
  EXPECT_EQ(parse_duration_s("90"), 90);
  EXPECT_EQ(parse_duration_s("90s"), 90);
  EXPECT_EQ(parse_duration_s("15m"), 900);
  EXPECT_EQ(parse_duration_s("1h"), 3600);
  EXPECT_EQ(parse_duration_s("2d"), 172800);
  EXPECT_FALSE(parse_duration_s("").has_value());
  EXPECT_FALSE(parse_duration_s("h").has_value());
  EXPECT_FALSE(parse_duration_s("-1h").has_value());
  EXPECT_FALSE(parse_duration_s("0").has_value());
  EXPECT_FALSE(parse_duration_s("9999999999h").has_value());
}

TEST(AdminClientTest, ErrorCodesMapToDocumentedExitCodes) {
  EXPECT_EQ(exit_code_for("unauthenticated"), kExitAdminDenied);
  EXPECT_EQ(exit_code_for("permission_denied"), kExitAdminDenied);
  EXPECT_EQ(exit_code_for("not_found"), kExitAdminNotFound);
  EXPECT_EQ(exit_code_for("invalid_argument"), kExitAdminFailure);
  EXPECT_EQ(exit_code_for(unavailable("down")), kExitAdminUnreachable);
}

TEST(AdminClientTest, UnreachableSocketIsExitCodeFive) {
  ParsedArgs a;
  a.options["--socket"] = "/nonexistent/pgw-admin.sock";
  a.options["--principal"] = "alice";
  setenv("PGWARDEN_ADMIN_CREDENTIAL", "x", 1);
  auto c = AdminClient::from_args(a);
  ASSERT_TRUE(c.is_ok());
  auto r = c->call("status");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(exit_code_for(r.status()), kExitAdminUnreachable);
  unsetenv("PGWARDEN_ADMIN_CREDENTIAL");
  EXPECT_FALSE(AdminClient::from_args(a).is_ok());
}

TEST(AdminClientTest, TableAlignsColumns) {
  std::ostringstream out;
  print_table(out, {"ID", "STATE"}, {{"a", "pending"}, {"long-id", "x"}});
  EXPECT_EQ(out.str(), "ID       STATE\na        pending\nlong-id  x\n");
  EXPECT_EQ(format_time_ms(0), "-");
  EXPECT_EQ(format_time_ms(1000), "1970-01-01 00:00:01Z");
}

}  // namespace
}  // namespace pgwarden::ctl
