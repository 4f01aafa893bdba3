#include "controlplane/server/policy_analyser.h"

#include "controlplane/policy/evaluator.h"
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
  return r;
}

}  // namespace pgwarden::server
