// Fuzzes the budget parsers: arbitrary JSON as $.budgets (parse_budget_rules: units, globs,
// limits), as a budget state from cp (protocol::BudgetState::from_json, which the dp trusts only
// after validation), and arbitrary text as a window or a size. None may crash or accept a
// budget without a name, window or limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "common/protocol/budget.h"
#include "controlplane/budgets/budget_rule.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  (void)pgwarden::budgets::parse_window(in);
  (void)pgwarden::budgets::parse_byte_size(nlohmann::json(in));
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return 0;
  std::vector<std::pair<std::string, std::string>> errors;
  for (const auto& r : pgwarden::budgets::parse_budget_rules(j, "$.budgets", errors)) {
    if (r.name.empty() || r.window_ms <= 0 || r.identities.empty()) abort();
  }
  auto state = pgwarden::protocol::BudgetState::from_json(j);
  if (state.is_ok()) {
    if (state->window_ms <= 0) abort();
    (void)state->refusal_message("svc:x", 0);
    (void)state->to_json();
  }
  if (j.is_array()) {
    for (const auto& e : j) (void)pgwarden::protocol::BudgetState::from_json(e);
  }
  return 0;
}
