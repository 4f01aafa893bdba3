#include "controlplane/server/policy_analyser.h"

#include "controlplane/policy/evaluator.h"
#include "controlplane/policy/glob.h"
#include "controlplane/policy/sql_analysis.h"

namespace pgwarden::server {

namespace {

bool literal_sensitive(const policy::StatementAnalysis& s) {
  using policy::StatementKind;
  switch (s.kind) {
    case StatementKind::kSet:
    case StatementKind::kReset:
    case StatementKind::kPrepare:
    case StatementKind::kExecute:
    case StatementKind::kDeallocate:
    case StatementKind::kDiscard:
    case StatementKind::kDo:
    case StatementKind::kCall:
      return true;
    default:
      break;
  }
  return !s.settings.empty();
}

}  // namespace

// Mask rules name columns ASCII case-insensitively, as mask plans do.
constexpr auto kFold = policy::GlobCase::kInsensitive;

const policy::MaskRule* masked_rule_for(const policy::Policy& policy,
                                        const policy::ColumnUse& use) {
  const bool has_relation = !use.relation.name.empty();
  const std::string relation = has_relation ? use.relation.resolved() : std::string();
  for (const policy::MaskRule& rule : policy.masks) {
    if (!rule.column_glob.empty()) {
      size_t dot = rule.column_glob.rfind('.');
      std::string_view table_part = std::string_view(rule.column_glob).substr(0, dot);
      std::string_view column_part = std::string_view(rule.column_glob).substr(dot + 1);
      bool table_ok = !has_relation || policy::glob_match(table_part, relation, kFold);
      bool column_ok = use.column == "*" || policy::glob_match(column_part, use.column, kFold);
      if (dot != std::string::npos && table_ok && column_ok) return &rule;
    } else if (!rule.name_pattern.empty()) {
      if (use.column == "*" || policy::glob_match(rule.name_pattern, use.column, kFold))
        return &rule;
    }
  }
  return nullptr;
}

protocol::AnalyseResponse PolicyAnalyser::analyse(const SessionView& session,
                                                  const protocol::AnalyseRequest& request) {
  policy::SqlAnalysis analysis = policy::analyse_sql(request.sql);
  policy::Decision d = policy::evaluate(session.policy, analysis, nullptr);
  protocol::AnalyseResponse r;
  r.verdict = std::string(policy::verdict_name(d.verdict));
  r.rule = "policy." + d.rule;
  r.message = d.message;
  bool cacheable = !analysis.parse_error.has_value() && d.verdict != policy::Verdict::kApprove;
  for (const auto& s : analysis.statements) {
    if (literal_sensitive(s)) cacheable = false;
  }
  r.cacheable = cacheable;
  if (analysis.parse_error) {
    // Unparseable SQL is never forwarded, but the client gets what PostgreSQL would have said:
    // the parser's own message, its SQLSTATE and the cursor position.
    r.sqlstate = analysis.parse_error->sqlstate;
    r.message = analysis.parse_error->message;
    r.position = analysis.parse_error->cursor_position;
    return r;
  }
  if (d.verdict != policy::Verdict::kDeny && session.policy.deny_masked_in_expressions) {
    for (const auto& st : analysis.statements) {
      for (const auto& use : st.columns) {
        if (!use.in_expression) continue;
        if (const policy::MaskRule* rule = masked_rule_for(session.policy, use)) {
          std::string col =
              use.relation.name.empty() ? use.column : use.relation.resolved() + "." + use.column;
          std::string selector =
              !rule->column_glob.empty() ? rule->column_glob : rule->name_pattern;
          return {"deny", "policy.masked_column_in_expression",
                  "column " + col + " is masked (" + selector +
                      ") and may not be used inside an expression",
                  cacheable};
        }
      }
    }
  }
  if (d.verdict == policy::Verdict::kAllow) {
    // The prescreen's matches narrow what the policy allows, never widen it (deny > approve >
    // allow): a deny rule denies, an approve rule turns the allow into a reviewer's decision.
    // A policy deny stays a deny whatever matched. Neither answer is cacheable: the dp
    // consults its verdict cache only for statements without deny/approve matches.
    const protocol::PrescreenHit* approve = nullptr;
    for (const auto& hit : request.prescreen) {
      if (hit.action == "deny") {
        return {"deny", hit.rule, "statement denied by rule " + hit.rule, false};
      }
      if (hit.action == "approve" && approve == nullptr) approve = &hit;
    }
    if (approve != nullptr) {
      return {"approve", approve->rule, "statement matches approve rule " + approve->rule, false};
    }
  }
  return r;
}

}  // namespace pgwarden::server
