// Fuzzes libpg_query-based SQL analysis and policy evaluation with arbitrary statement text.
// Invariants checked beyond "no crash, no leak": a parse error means no statements, and
// evaluation of a parse error or of any string under an empty policy is a deny.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "controlplane/policy/evaluator.h"
#include "controlplane/policy/sql_analysis.h"

namespace {

using pgwarden::policy::Policy;

const Policy& read_only_policy() {
  static const Policy p = [] {
    Policy x;
    x.name = "fuzz_ro";
    x.read_only = true;
    x.allowed_kinds = {"select",          "show",          "set",
                       "transaction",     "prepared",      "explain",
                       "explain_analyze", "copy_to_stdout"};
    x.allowed_relations = {"public.*"};
    return x;
  }();
  return p;
}

const Policy& admin_policy() {
  static const Policy p = [] {
    Policy x;
    x.name = "fuzz_admin";
    x.read_only = false;
    x.allowed_kinds = {"*"};
    x.allowed_relations = {"*"};
    x.approve_kinds = {"ddl_drop"};
    return x;
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pgwarden::policy;
  const std::string_view sql(reinterpret_cast<const char*>(data), size);
  const SqlAnalysis a = analyse_sql(sql);
  if (a.parse_error && !a.statements.empty()) abort();
  PreparedStatements session;
  const Decision ro = evaluate(read_only_policy(), a, &session);
  const Decision admin = evaluate(admin_policy(), a, &session);
  if (a.parse_error && (ro.verdict != Verdict::kDeny || admin.verdict != Verdict::kDeny)) abort();
  Policy empty;
  if (!a.statements.empty() && evaluate(empty, a).verdict != Verdict::kDeny) abort();
  // Read-only must never allow a statement that writes a relation.
  if (ro.verdict == Verdict::kAllow) {
    for (const auto& st : a.statements) {
      if (!st.relations_written.empty()) abort();
    }
  }
  return 0;
}
