#include "controlplane/budgets/budget_book.h"

#include <algorithm>

#include "controlplane/policy/glob.h"

namespace pgwarden::budgets {

using json = nlohmann::json;

namespace {

protocol::BudgetState empty_state(const BudgetRule& rule, int64_t now_ms) {
  protocol::BudgetState s;
  s.name = rule.name;
  s.window = rule.window;
  s.window_ms = rule.window_ms;
  s.window_start_ms = now_ms - now_ms % rule.window_ms;
  s.approve = rule.approve;
  s.limit = rule.limit;
  return s;
}

}  // namespace

protocol::BudgetState BudgetBook::state_of(const BudgetRule& rule, const std::string& subject,
                                           int64_t now_ms) const {
  protocol::BudgetState s = empty_state(rule, now_ms);
  s.used = ledger_->get(rule.name, subject, s.window_start_ms);
  return s;
}

std::vector<protocol::BudgetState> BudgetBook::states(const std::vector<BudgetRule>& rules,
                                                      const std::string& subject,
                                                      const std::vector<std::string>& groups,
                                                      int64_t now_ms) const {
  std::vector<protocol::BudgetState> out;
  for (const BudgetRule& r : rules) {
    if (r.applies_to(subject, groups)) out.push_back(state_of(r, subject, now_ms));
  }
  return out;
}

BudgetBook::Accounted BudgetBook::account(const std::vector<BudgetRule>& rules,
                                          const std::string& subject,
                                          const std::vector<std::string>& groups,
                                          const protocol::BudgetUsage& usage, int64_t now_ms) {
  Accounted a;
  for (const BudgetRule& r : rules) {
    if (!r.applies_to(subject, groups)) continue;
    protocol::BudgetState s = empty_state(r, now_ms);
    protocol::BudgetState before = s;
    s.used = ledger_->add(r.name, subject, s.window_start_ms, usage);
    before.used = s.used;
    for (size_t m = 0; m < protocol::kBudgetMeasures; ++m) before.used.v[m] -= usage.v[m];
    if (s.exhausted_measure() >= 0 && before.exhausted_measure() < 0) a.crossed.push_back(r.name);
    a.states.push_back(std::move(s));
  }
  return a;
}

json BudgetBook::list(const std::vector<BudgetRule>& rules, int64_t now_ms) const {
  json out = json::array();
  json exhausted = json::array();
  for (const LedgerEntry& e : ledger_->list()) {
    auto rule = std::find_if(rules.begin(), rules.end(),
                             [&](const BudgetRule& r) { return r.name == e.budget; });
    if (rule == rules.end()) continue;  // no longer configured
    protocol::BudgetState s = state_of(*rule, e.identity, now_ms);
    if (s.window_start_ms != e.window_start_ms) continue;  // an earlier window: nothing used
    json row = {{"identity", e.identity}, {"budget", s.to_json()}};
    (s.exhausted_measure() >= 0 ? exhausted : out).push_back(std::move(row));
  }
  for (auto& r : out) exhausted.push_back(std::move(r));
  return exhausted;
}

json BudgetBook::show(const std::vector<BudgetRule>& rules, const std::string& subject,
                      int64_t now_ms) const {
  json out = json::array();
  for (const BudgetRule& r : rules) {
    bool id = std::any_of(r.identities.begin(), r.identities.end(),
                          [&](const std::string& g) { return policy::glob_match(g, subject); });
    if (!id) continue;
    json row = state_of(r, subject, now_ms).to_json();
    if (!r.groups.empty()) row["groups"] = r.groups;
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace pgwarden::budgets
