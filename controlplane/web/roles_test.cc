#include "controlplane/web/roles.h"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "common/source_root.h"

namespace pgwarden::web {
namespace {

TEST(Roles, HighestMappedRoleWins) {
  config::RoleGroups m{
      .viewer = {"staff"}, .reviewer = {"dba"}, .operators = {"sre"}, .admin = {"root"}};
  EXPECT_EQ(role_for_groups(m, {"staff"}), Role::kViewer);
  EXPECT_EQ(role_for_groups(m, {"staff", "dba"}), Role::kReviewer);
  EXPECT_EQ(role_for_groups(m, {"sre", "staff"}), Role::kOperator);
  EXPECT_EQ(role_for_groups(m, {"root"}), Role::kAdmin);
  EXPECT_EQ(role_for_groups(m, {"nobody"}), Role::kNone);
  EXPECT_EQ(role_for_groups(m, {}), Role::kNone);
}

TEST(Roles, NamesRoundTrip) {
  for (Role r : {Role::kNone, Role::kViewer, Role::kReviewer, Role::kOperator, Role::kAdmin}) {
    EXPECT_EQ(parse_role(role_name(r)), r);
  }
  EXPECT_FALSE(parse_role("root").has_value());
}

TEST(Roles, CommandsHaveMinimumRoles) {
  EXPECT_EQ(command_min_role("approvals.list"), Role::kViewer);
  EXPECT_EQ(command_min_role("approvals.approve"), Role::kReviewer);
  EXPECT_EQ(command_min_role("approvals.deny"), Role::kReviewer);
  EXPECT_EQ(command_min_role("sessions.kill"), Role::kOperator);
  EXPECT_EQ(command_min_role("config.reload"), Role::kAdmin);
  EXPECT_EQ(command_min_role("tokens.inspect"), Role::kAdmin);
  EXPECT_FALSE(command_min_role("shell.exec").has_value());
  EXPECT_FALSE(command_min_role("").has_value());
}

// The HTTPS API serves the same operations as the admin socket: every command pgwardenctl
// sends (controlplane/ctl/admin_commands.cc) has a role, so `pgwardenctl --server` can run it.
TEST(Roles, EveryCommandPgwardenctlSendsHasARole) {
  std::ifstream in(std::string(PGW_SOURCE_ROOT) + "/controlplane/ctl/admin_commands.cc");
  ASSERT_TRUE(in) << "cannot read controlplane/ctl/admin_commands.cc";
  std::stringstream text;
  text << in.rdbuf();
  std::string source = text.str();
  static const std::regex kSent(R"re((?:call\(|command = )"([a-z_]+\.[a-z_]+)")re");
  std::set<std::string> commands;
  for (auto it = std::sregex_iterator(source.begin(), source.end(), kSent);
       it != std::sregex_iterator(); ++it) {
    commands.insert((*it)[1].str());
  }
  for (const char* rules :
       {"rules.list", "rules.show", "rules.test", "rules.add", "rules.remove", "rules.reload"}) {
    commands.insert(rules);  // sent as "rules." + the subcommand
  }
  EXPECT_GT(commands.size(), 20u) << "the pattern no longer finds pgwardenctl's commands";
  for (const std::string& c : commands) {
    EXPECT_TRUE(command_min_role(c).has_value()) << c << " is not reachable over HTTPS";
  }
}

}  // namespace
}  // namespace pgwarden::web
