// Fuzzes the rule-file parser (and, for small sets, the Hyperscan compile and a scan).
// Invariants: no crash; a parsed set has unique ids and non-empty patterns; a failed parse
// always carries at least one diagnostic with a reason.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "rules/lexer.h"
#include "rules/matcher.h"
#include "rules/rule_set.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Hyperscan's own analysis of huge bounded repeats is slow; the parser's logic is
  // exercised fully by small inputs.
  if (size > 4096) return 0;
  std::vector<pgwarden::rules::RuleSource> sources = {
      {"fuzz.rules", std::string(reinterpret_cast<const char*>(data), size)}};
  std::vector<pgwarden::rules::RuleDiagnostic> diags;
  auto parsed = pgwarden::rules::RuleSet::parse(sources, &diags);
  if (!parsed.is_ok()) {
    if (diags.empty() || diags[0].reason.empty()) std::abort();
    return 0;
  }
  std::set<std::string> ids;
  for (const auto& r : parsed->rules()) {
    if (!ids.insert(r.id).second || r.pattern.empty()) std::abort();
  }
  if (parsed->size() <= 4) {
    auto compiled = pgwarden::rules::CompiledRuleSet::compile(std::move(parsed).value());
    if (compiled.is_ok()) {
      struct Sink : pgwarden::rules::MatchSink {
        void on_match(const pgwarden::rules::Rule&) override {}
      } sink;
      (*compiled)->scan(pgwarden::rules::lex_sql("select 1; drop table x -- y"), sink);
    }
  }
  return 0;
}
