#include "controlplane/ctl/rules_command.h"

#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "rules/lexer.h"
#include "rules/matcher.h"
#include "rules/rule_set.h"

namespace pgwarden::ctl {
namespace {

using rules::CompiledRuleSet;
using rules::RuleDiagnostic;
using rules::RuleSet;

constexpr std::string_view kUsage =
    "usage: pgwardenctl rules check FILE...\n"
    "       pgwardenctl rules test --set FILE... SQL     (SQL '-' reads stdin)\n"
    "       pgwardenctl rules detect --set FILE... VALUE (VALUE '-' reads stdin)\n";

// Parses and compiles; prints every diagnostic to `err`. Null on failure.
std::shared_ptr<const CompiledRuleSet> load(const std::vector<std::string>& files,
                                            std::ostream& err) {
  std::vector<RuleDiagnostic> diags;
  Result<RuleSet> parsed = RuleSet::load_files(files, &diags);
  if (!parsed.is_ok()) {
    for (const RuleDiagnostic& d : diags) err << d.to_string() << "\n";
    return nullptr;
  }
  Result<std::shared_ptr<const CompiledRuleSet>> compiled =
      CompiledRuleSet::compile(std::move(parsed).value());
  if (!compiled.is_ok()) {
    err << compiled.status().message() << "\n";
    return nullptr;
  }
  return std::move(compiled).value();
}

int check(std::span<const std::string_view> args, std::ostream& out, std::ostream& err) {
  if (args.empty()) {
    err << kUsage;
    return kExitUsage;
  }
  std::vector<std::string> files(args.begin(), args.end());
  std::shared_ptr<const CompiledRuleSet> set = load(files, err);
  if (set == nullptr) return kExitFailure;
  size_t per_view[3] = {0, 0, 0};
  for (const rules::Rule& r : set->rule_set().rules()) ++per_view[static_cast<int>(r.view)];
  out << "ok: " << files.size() << " file(s), " << set->rule_set().size() << " rules (code "
      << per_view[0] << ", text " << per_view[1] << ", value " << per_view[2] << "), compiled in "
      << static_cast<long>(set->build_milliseconds()) << " ms, " << set->database_bytes()
      << " bytes\n";
  return kExitOk;
}

// Splits `--set FILE... INPUT` (also `--set A --set B INPUT`) into files and the last word.
bool split_set_args(std::span<const std::string_view> args, std::vector<std::string>& files,
                    std::string& input, std::istream& in) {
  if (args.size() < 3 || args[0] != "--set") return false;
  for (size_t k = 1; k + 1 < args.size(); ++k) {
    if (args[k] == "--set") continue;
    files.emplace_back(args[k]);
  }
  if (files.empty()) return false;
  if (args.back() == "-") {
    input.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    input = args.back();
  }
  return true;
}

int test(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
         std::ostream& err) {
  std::vector<std::string> files;
  std::string sql;
  if (!split_set_args(args, files, sql, in)) {
    err << kUsage;
    return kExitUsage;
  }
  std::shared_ptr<const CompiledRuleSet> set = load(files, err);
  if (set == nullptr) return kExitFailure;

  struct PrintingSink : rules::MatchSink {
    std::ostream* out;
    std::ostream* err;
    void on_match(const rules::Rule& r) override {
      *out << "match " << r.id << " " << rules::action_name(r.action) << " "
           << rules::severity_name(r.severity) << ": " << r.message << "\n";
    }
    void on_scan_error(std::string_view reason) override {
      *err << "scan failed: " << reason << "\n";
    }
  } sink;
  sink.out = &out;
  sink.err = &err;
  rules::LexedSql lexed = rules::lex_sql(sql);
  rules::Verdict verdict = set->scan(lexed, sink);
  const rules::LexFlags& f = lexed.flags();
  if (f.unterminated_quote) out << "note: unterminated quote\n";
  if (f.unterminated_comment) out << "note: unterminated comment\n";
  out << "verdict " << rules::verdict_name(verdict) << "\n";
  switch (verdict) {
    case rules::Verdict::kAllow:
      return kExitOk;
    case rules::Verdict::kDeny:
      return kExitDeny;
    case rules::Verdict::kApprove:
      return kExitApprove;
  }
  return kExitFailure;
}

int detect(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
           std::ostream& err) {
  std::vector<std::string> files;
  std::string value;
  if (!split_set_args(args, files, value, in)) {
    err << kUsage;
    return kExitUsage;
  }
  std::shared_ptr<const CompiledRuleSet> set = load(files, err);
  if (set == nullptr) return kExitFailure;
  std::vector<rules::DetectSpan> spans;
  Status st = set->detect(value, spans);
  if (!st.is_ok()) {
    err << st.to_string() << "\n";
    return kExitFailure;
  }
  for (const rules::DetectSpan& s : spans) {
    out << "detect " << s.rule->id << " [" << s.begin << "," << s.end << ")\n";
  }
  out << spans.size() << " match(es)\n";
  return kExitOk;
}

}  // namespace

int run_rules_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                      std::ostream& err) {
  if (args.empty()) {
    err << kUsage;
    return kExitUsage;
  }
  std::string_view sub = args[0];
  std::span<const std::string_view> rest = args.subspan(1);
  try {
    if (sub == "check") return check(rest, out, err);
    if (sub == "test") return test(rest, in, out, err);
    if (sub == "detect") return detect(rest, in, out, err);
  } catch (const std::exception& e) {
    err << "pgwardenctl rules: " << e.what() << "\n";
    return kExitFailure;
  }
  err << "unknown rules subcommand '" << sub << "'\n" << kUsage;
  return kExitUsage;
}

}  // namespace pgwarden::ctl
