// BudgetBook: budget rules (from the config snapshot in force) applied to the counters of a
// BudgetLedger — what cp asks when a session logs in (the budgets its identity has, and how much
// of each is used), when a statement completes (add its usage; which budgets it exhausted) and
// when an operator looks or resets (pgwardenctl budgets).
//
// Thread-safety: every method may be called from any thread (the ledger serialises).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/protocol/budget.h"
#include "controlplane/budgets/budget_ledger.h"
#include "controlplane/budgets/budget_rule.h"

namespace pgwarden::budgets {

class BudgetBook {
 public:
  explicit BudgetBook(std::unique_ptr<BudgetLedger> ledger) : ledger_(std::move(ledger)) {}

  // Every rule that applies to the identity, in the window of `now_ms`, with its usage.
  std::vector<protocol::BudgetState> states(const std::vector<BudgetRule>& rules,
                                            const std::string& subject,
                                            const std::vector<std::string>& groups,
                                            int64_t now_ms) const;

  struct Accounted {
    std::vector<protocol::BudgetState> states;  // after the addition
    std::vector<std::string> crossed;           // budgets this addition exhausted
  };
  // Adds one completed statement's usage to every budget that applies to the identity.
  Accounted account(const std::vector<BudgetRule>& rules, const std::string& subject,
                    const std::vector<std::string>& groups, const protocol::BudgetUsage& usage,
                    int64_t now_ms);

  // pgwardenctl budgets list: every counter of the current window of a configured budget,
  // [{"identity", "budget": BudgetState JSON}], exhausted ones first.
  nlohmann::json list(const std::vector<BudgetRule>& rules, int64_t now_ms) const;
  // pgwardenctl budgets show: the budgets whose identity globs match `subject` (group
  // conditions are not known for an identity that is not logged in: shown with "groups"),
  // with their usage.
  nlohmann::json show(const std::vector<BudgetRule>& rules, const std::string& subject,
                      int64_t now_ms) const;
  // Forgets the identity's counters (one budget's when `budget` is not empty).
  Result<size_t> reset(const std::string& subject, const std::string& budget) {
    return ledger_->reset(subject, budget);
  }
  Status flush() { return ledger_->flush(); }

 private:
  protocol::BudgetState state_of(const BudgetRule& rule, const std::string& subject,
                                 int64_t now_ms) const;
  std::unique_ptr<BudgetLedger> ledger_;
};

}  // namespace pgwarden::budgets
