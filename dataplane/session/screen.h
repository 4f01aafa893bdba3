// Screen: the dataplane's per-statement prescreen. One pass of the SQL lexer (rules/lexer.h)
// gives the shape key (the verdict cache key); the session's compiled rule sets (Hyperscan,
// rules/matcher.h) scan the lexer's views and report deny / approve matches.
// One Screen per worker (the lexer buffers are reused); CompiledRules is shared read-only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "rules/lexer.h"
#include "rules/matcher.h"
#include "rules/rule_bundle.h"

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

// The compiled rule set of every rule_sets list the policies name, keyed by the list joined
// with ','. Immutable; swapped whole when cp pushes a new generation (or on SIGHUP before
// cp pushed any).
struct CompiledRules {
  std::map<std::string, std::shared_ptr<const rules::CompiledRuleSet>> by_list;
  // Where the sets came from: "local" (the dp's own rules_dir, at start or SIGHUP, until cp
  // pushes) or "controlplane" (a generation cp validated and pushed).
  std::string source = "local";
  uint64_t generation = 0;  // cp's rules generation; 0 for local
  std::string hash;         // rules::RuleBundle content hash
  size_t rules = 0;         // rules over all lists
  size_t loaded_lists = 0;  // lists whose databases cp shipped and that loaded (no compile)
  // Policy name -> its current list key (pushed by cp; empty for local rules).
  std::map<std::string, std::string> policy_lists;
  // Policy name -> its masks version and whether it masks (pushed by cp; empty for local).
  std::map<std::string, rules::RuleBundle::PolicyMasks> policy_masks;
};

std::string rule_set_list_key(const std::vector<std::string>& names);
// Resolves a rule set name to a file in `dir`: <name>.rules, else the name without a
// "default-" prefix or a "-detect" suffix (default-deny -> deny.rules).
Result<std::string> rule_set_file(const std::string& dir, const std::string& name);
Result<std::shared_ptr<const CompiledRules>> load_rules(
    const std::string& dir, const std::vector<std::vector<std::string>>& lists);
// Compiles a bundle cp pushed (its hash already verified by RuleBundle::from_json).
Result<std::shared_ptr<const CompiledRules>> compile_pushed_rules(const rules::RuleBundle& bundle);

class Screen {
 public:
  Screen();
  ~Screen();
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  void set_rules(std::shared_ptr<const CompiledRules> rules);
  // Bumped by set_rules: sessions re-resolve their rule set when it changes.
  uint64_t generation() const { return generation_; }
  // The compiled set for a grant's rule_sets. Null for an empty list (no prescreen). A list
  // that was not compiled (config skew) resolves to an error: statements are then refused.
  Result<std::shared_ptr<const rules::CompiledRuleSet>> resolve(
      const std::vector<std::string>& rule_sets) const;
  // The set a session of `policy` uses now: the policy's current (non-empty) list when cp's
  // generation names the policy (a reload that adds a rule set to a policy reaches its live
  // sessions), else `rule_sets` (the list the session was admitted with) as resolve().
  Result<std::shared_ptr<const rules::CompiledRuleSet>> resolve_for(
      const std::string& policy, const std::vector<std::string>& rule_sets) const;
  // The masks cp's generation gives `policy` (rules::RuleBundle::policy_masks); null when it
  // names none.
  const rules::RuleBundle::PolicyMasks* policy_masks(const std::string& policy) const;
  // Lexes `sql` and scans it with `set` (may be null).
  void screen(std::string_view sql, const rules::CompiledRuleSet* set, ScreenResult* out);

 private:
  std::shared_ptr<const CompiledRules> rules_;
  uint64_t generation_ = 0;
  rules::LexedSql lexed_;
};

}  // namespace pgwarden::session
