// Screen: the dataplane's per-statement prescreen. One pass of the SQL lexer gives the shape
// key (the verdict cache key); the compiled rule sets (Hyperscan) scan the lexer's views and
// report deny / approve matches. Per worker (scratch space is not shared); the compiled rules
// are shared read-only by all workers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::session {

struct PrescreenMatch {
  std::string rule;
  std::string action;  // "deny" | "approve" | "detect"
  std::string message;
};

struct ScreenResult {
  uint64_t shape_key = 0;
  std::vector<PrescreenMatch> matches;
  const PrescreenMatch* first(std::string_view action) const {
    for (const auto& m : matches) {
      if (m.action == action) return &m;
    }
    return nullptr;
  }
};

// Compiled rules, shared read-only by every worker (swapped whole on SIGHUP).
class CompiledRules {
 public:
  virtual ~CompiledRules() = default;
};

// Loads and compiles every rule set file in `dir`.
Result<std::shared_ptr<const CompiledRules>> load_rules(const std::string& dir);

class Screen {
 public:
  Screen();
  ~Screen();
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  // Uses `rules` from now on (called when a reload lands).
  void set_rules(std::shared_ptr<const CompiledRules> rules);
  // Lexes and scans `sql` with the rule sets named in `rule_sets` (empty = all).
  void screen(std::string_view sql, const std::vector<std::string>& rule_sets, ScreenResult* out);

 private:
  struct State;
  std::shared_ptr<const CompiledRules> rules_;
  std::unique_ptr<State> state_;
};

}  // namespace pgwarden::session
