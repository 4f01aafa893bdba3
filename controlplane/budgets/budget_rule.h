// Budget rules from the configuration ($.budgets, docs/budgets.md): which identities a budget
// applies to, its window and its limits. Parsed strictly: an unknown key, a bad unit, a
// duplicate name or a budget without any limit is a config error (the config is refused).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/protocol/budget.h"
#include "common/status.h"

namespace pgwarden::budgets {

struct BudgetRule {
  std::string name;
  std::vector<std::string> identities;  // globs over the subject (policy::glob_match)
  std::vector<std::string> groups;      // globs over the groups; empty: any
  std::string window;                   // as written ("1h")
  int64_t window_ms = 0;
  std::array<uint64_t, protocol::kBudgetMeasures> limit{
      protocol::kNoBudgetLimit, protocol::kNoBudgetLimit, protocol::kNoBudgetLimit,
      protocol::kNoBudgetLimit};
  bool approve = false;  // on_exceed: "approve" (else "deny")

  // The identity matches one of `identities` and (when `groups` is set) one of its groups
  // matches one of `groups`.
  bool applies_to(const std::string& subject, const std::vector<std::string>& groups) const;
};

// "30s", "15m", "1h", "7d" (1 second .. 366 days). Error text on failure.
Result<int64_t> parse_window(const std::string& text);
// A byte size: a non-negative integer, or a string "<n>" / "<n>B" / "<n>kB" / "<n>MB" / "<n>GB"
// / "<n>TB" (decimal: 1 MB = 1,000,000 bytes) or "<n>KiB" / "MiB" / "GiB" / "TiB" (binary).
Result<uint64_t> parse_byte_size(const nlohmann::json& value);

// Parses $.budgets (an array). Errors as (JSONPath, message) pairs appended to `errors`.
std::vector<BudgetRule> parse_budget_rules(
    const nlohmann::json& value, const std::string& path,
    std::vector<std::pair<std::string, std::string>>& errors);

}  // namespace pgwarden::budgets
