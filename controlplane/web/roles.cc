#include "controlplane/web/roles.h"

#include <algorithm>
#include <array>
#include <utility>

namespace pgwarden::web {

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kNone:
      return "none";
    case Role::kViewer:
      return "viewer";
    case Role::kReviewer:
      return "reviewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "none";
}

std::optional<Role> parse_role(std::string_view name) {
  for (Role r : {Role::kNone, Role::kViewer, Role::kReviewer, Role::kOperator, Role::kAdmin}) {
    if (role_name(r) == name) return r;
  }
  return std::nullopt;
}

Role role_for_groups(const config::RoleGroups& mapping, const std::vector<std::string>& groups) {
  auto any = [&](const std::vector<std::string>& configured) {
    return std::any_of(groups.begin(), groups.end(), [&](const std::string& g) {
      return std::find(configured.begin(), configured.end(), g) != configured.end();
    });
  };
  if (any(mapping.admin)) return Role::kAdmin;
  if (any(mapping.operators)) return Role::kOperator;
  if (any(mapping.reviewer)) return Role::kReviewer;
  if (any(mapping.viewer)) return Role::kViewer;
  return Role::kNone;
}

std::optional<Role> command_min_role(std::string_view command) {
  // Reading state is for viewers; deciding approvals and reading what a session returned
  // (replay) is for reviewers; acting on sessions, identities and budgets for operators; changing
  // the configuration or rules, and inspecting tokens, for admins.
  static constexpr std::array<std::pair<std::string_view, Role>, 28> kRoles{{
      {"status", Role::kViewer},
      {"dataplane", Role::kViewer},
      {"approvals.list", Role::kViewer},
      {"approvals.show", Role::kViewer},
      {"sessions.list", Role::kViewer},
      {"sessions.show", Role::kViewer},
      {"sessions.verify", Role::kViewer},
      {"policies.list", Role::kViewer},
      {"policies.show", Role::kViewer},
      {"rules.list", Role::kViewer},
      {"rules.show", Role::kViewer},
      {"rules.test", Role::kViewer},
      {"identities.list", Role::kViewer},
      {"audit.search", Role::kViewer},
      {"budgets.list", Role::kViewer},
      {"budgets.show", Role::kViewer},
      {"approvals.approve", Role::kReviewer},
      {"approvals.deny", Role::kReviewer},
      {"approvals.break_glass", Role::kReviewer},  // the policy's break_glass_groups decide
      {"sessions.replay", Role::kReviewer},
      {"sessions.kill", Role::kOperator},
      {"identities.revoke", Role::kOperator},
      {"identities.unrevoke", Role::kOperator},
      {"rules.reload", Role::kOperator},
      {"budgets.reset", Role::kOperator},
      {"rules.add", Role::kAdmin},
      {"rules.remove", Role::kAdmin},
      {"config.reload", Role::kAdmin},
  }};
  if (command == "tokens.inspect") return Role::kAdmin;
  for (const auto& [name, role] : kRoles) {
    if (name == command) return role;
  }
  return std::nullopt;
}

}  // namespace pgwarden::web
