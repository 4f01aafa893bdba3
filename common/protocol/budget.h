// Per-identity budgets as they travel between cp and dp (docs/budgets.md; docs/protocol.md,
// "budgets"): cp owns the ledger and sends a session the state of every budget that applies to
// its identity (authenticate and reregister answers, `budget` events); the dp adds what the
// session itself runs and refuses (or sends for approval) the statements that start once a
// budget is exhausted. Shared by cp, dp and pgwardenctl so the three render it one way.
//
// Windows are fixed and aligned to the unix epoch: a "1h" window runs from one full hour to the
// next (UTC), "1d" from midnight UTC to midnight UTC. A budget is exhausted when, in the current
// window, any measure with a limit has reached it; the statement that crosses a limit completes.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::protocol {

enum class BudgetMeasure : uint8_t {
  kStatements = 0,
  kRows = 1,
  kResultBytes = 2,
  kMaskedCells = 3
};
inline constexpr size_t kBudgetMeasures = 4;
inline constexpr uint64_t kNoBudgetLimit = UINT64_MAX;
// "statements", "rows_returned", "result_bytes", "masked_cells" (config keys and JSON names).
std::string_view budget_measure_name(size_t measure);

struct BudgetUsage {
  std::array<uint64_t, kBudgetMeasures> v{};
  uint64_t& operator[](BudgetMeasure m) { return v[static_cast<size_t>(m)]; }
  uint64_t operator[](BudgetMeasure m) const { return v[static_cast<size_t>(m)]; }
  void add(const BudgetUsage& o);
  bool empty() const;
  nlohmann::json to_json() const;  // {"statements": n, "rows_returned": n, ...}
};

// One budget of one identity in its current window.
struct BudgetState {
  std::string name;
  std::string window;  // as configured, e.g. "1h"
  int64_t window_ms = 0;
  int64_t window_start_ms = 0;
  bool approve = false;  // on_exceed: approve (else deny)
  std::array<uint64_t, kBudgetMeasures> limit{kNoBudgetLimit, kNoBudgetLimit, kNoBudgetLimit,
                                              kNoBudgetLimit};
  BudgetUsage used;

  int64_t resets_at_ms() const { return window_start_ms + window_ms; }
  // The first measure whose limit is reached, or -1.
  int exhausted_measure() const;
  // A later window started by `now_ms`: usage starts again from zero. True when it rolled.
  bool roll(int64_t now_ms);
  // The refusal the client gets: names the budget, the measure, the window and its reset.
  // REQUIRES: exhausted_measure() >= 0.
  std::string refusal_message(std::string_view subject, int64_t now_ms) const;
  // {"name", "window", "window_ms", "window_start_ms", "resets_at_ms", "on_exceed",
  //  "limits": {measure: n (absent: no limit)}, "used": {...}, "exhausted": measure|null}
  nlohmann::json to_json() const;
  // Validates every field (an invalid state from cp is refused: fail closed at login).
  static Result<BudgetState> from_json(const nlohmann::json& j);
};

// "2026-12-06T20:00:00Z" (UTC, second precision).
std::string utc_time_text(int64_t unix_ms);

}  // namespace pgwarden::protocol
