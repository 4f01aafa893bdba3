#include "controlplane/web/roles.h"

#include <gtest/gtest.h>

namespace pgwarden::web {
namespace {

TEST(Roles, HighestMappedRoleWins) {
  config::RoleGroups m{.viewer = {"staff"}, .reviewer = {"dba"}, .operators = {"sre"},
                       .admin = {"root"}};
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

}  // namespace
}  // namespace pgwarden::web
