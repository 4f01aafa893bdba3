// Roles of people on the HTTPS admin API (docs/api.md): viewer < reviewer < operator < admin.
// A person's role is the highest role any of their SSO groups is mapped to in
// $.control_plane.http.role_groups; a person whose groups map to no role is refused.
// Every admin command (the same names as on the admin Unix socket) has a minimum role.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controlplane/config/config.h"

namespace pgwarden::web {

enum class Role { kNone = 0, kViewer = 1, kReviewer = 2, kOperator = 3, kAdmin = 4 };

// "none", "viewer", "reviewer", "operator", "admin".
std::string_view role_name(Role role);
std::optional<Role> parse_role(std::string_view name);

// The highest role any of `groups` maps to; kNone when none does.
Role role_for_groups(const config::RoleGroups& mapping, const std::vector<std::string>& groups);

// The minimum role for admin command `command` ("approvals.approve" -> kReviewer); nullopt for
// a command the HTTPS API does not offer (answered 404).
std::optional<Role> command_min_role(std::string_view command);

}  // namespace pgwarden::web
