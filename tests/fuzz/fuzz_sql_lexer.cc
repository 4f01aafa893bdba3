// Fuzzes the SQL lexer and the prescreen scan over the default rule sets.
// Invariants: no crash or sanitizer report; views are bounded by 2 * input size + 2; lexing is
// deterministic (same views, shape key and flags for the same bytes, reused buffers or not).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "rules/lexer.h"
#include "rules/matcher.h"
#include "common/source_root.h"

namespace {

using pgwarden::rules::CompiledRuleSet;

std::shared_ptr<const CompiledRuleSet> default_sets() {
  static std::shared_ptr<const CompiledRuleSet> set = [] {
    std::vector<std::string> files = {PGW_SOURCE_ROOT "/rules/sets/deny.rules",
                                      PGW_SOURCE_ROOT "/rules/sets/approve.rules",
                                      PGW_SOURCE_ROOT "/rules/sets/pii.rules"};
    auto parsed = pgwarden::rules::RuleSet::load_files(files);
    if (!parsed.is_ok()) std::abort();
    auto compiled = CompiledRuleSet::compile(std::move(parsed).value());
    if (!compiled.is_ok()) std::abort();
    return std::move(compiled).value();
  }();
  return set;
}

struct NullSink : pgwarden::rules::MatchSink {
  void on_match(const pgwarden::rules::Rule&) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view sql(reinterpret_cast<const char*>(data), size);
  static pgwarden::rules::LexedSql reused;
  pgwarden::rules::lex_sql(sql, reused);
  pgwarden::rules::LexedSql fresh = pgwarden::rules::lex_sql(sql);
  if (reused.code() != fresh.code() || reused.text() != fresh.text() ||
      reused.shape_key() != fresh.shape_key() ||
      reused.statement_count() != fresh.statement_count() ||
      reused.flags().unterminated_quote != fresh.flags().unterminated_quote ||
      reused.flags().unterminated_comment != fresh.flags().unterminated_comment) {
    std::abort();
  }
  if (fresh.code().size() > 2 * size + 2 || fresh.text().size() > 2 * size + 2) std::abort();
  NullSink sink;
  default_sets()->scan(fresh, sink);
  std::vector<pgwarden::rules::DetectSpan> spans;
  if (!default_sets()->detect(sql, spans).is_ok()) std::abort();
  for (const auto& s : spans) {
    if (s.begin >= s.end || s.end > size) std::abort();
  }
  return 0;
}
