// Policy evaluation: applies a session's Policy to an analysed statement string.
//
// Default deny: a statement is allowed only when the policy's allow rules match every part
// of it (its kind and nested kinds, every relation, every SET parameter, every dangerous
// function). Several statements in one string: each must be allowed, and the strictest
// verdict wins (deny > approve > allow). docs/policy.md is the operator's reference.
//
// Thread-safety: evaluate() and upstream_startup_parameters() are pure functions of their
// arguments and may run concurrently; a PreparedStatements map belongs to one session and
// must not be shared between threads without external locking.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "controlplane/policy/policy.h"
#include "controlplane/policy/sql_analysis.h"

namespace pgwarden::policy {

std::string_view verdict_name(Verdict verdict);  // "allow" | "deny" | "approve"

struct Decision {
  Verdict verdict = Verdict::kDeny;
  // What decided, stable for audit logs and tests: "parse_error", "read_only",
  // "allowed_kinds", "allowed_relations", "set_parameter", "dangerous_function",
  // "unknown_prepared_statement", "prepared_statement_limit", "approve_kinds",
  // "where_absent", "where_constant_true", "where_row_independent", "where_tautology",
  // "truncate", "drop", "unknown_effect" (approvals by effect, controlplane/policy/effect.h),
  // "allowed_kinds:<kind>" (allow), "empty_statement" (allow).
  std::string rule;
  // deny: a message a human can act on; approve: the reason approval is needed;
  // allow: a short description.
  std::string message;
  int statement_index = -1;  // 0-based statement that decided; -1 when none
  int cursor_position = 0;   // parse_error: 1-based position reported by the parser
};

// Named statements created with SQL-level PREPARE in one session, so that EXECUTE inherits
// the analysis of the statement it runs. Owned by the caller (one per client session).
//
// Conservative by construction: re-PREPARE of a known name keeps the earlier analyses as
// well (PostgreSQL rejects a duplicate name, so the earlier one may still be the live one);
// EXECUTE is evaluated against every candidate and the strictest verdict wins. DEALLOCATE
// and DISCARD ALL forget names; EXECUTE of an unknown name is denied.
class PreparedStatements {
 public:
  static constexpr size_t kMaxNames = 1000;
  static constexpr size_t kMaxCandidatesPerName = 8;
  using Candidates = std::vector<std::shared_ptr<const StatementAnalysis>>;

  // nullptr when `name` is unknown.
  const Candidates* find(std::string_view name) const;
  // Returns false (and changes nothing) when a cap would be exceeded.
  bool add(const std::string& name, std::shared_ptr<const StatementAnalysis> analysis);
  void remove(const std::string& name);
  void clear() { map_.clear(); }
  size_t size() const { return map_.size(); }

 private:
  std::unordered_map<std::string, Candidates> map_;
};

// Evaluates every statement of `analysis` against `policy`. When `session` is non-null,
// PREPARE / DEALLOCATE / DISCARD ALL of a string whose verdict is not deny update it (an
// EXECUTE in the same string sees a PREPARE before it); when null, EXECUTE is denied.
Decision evaluate(const Policy& policy, const SqlAnalysis& analysis,
                  PreparedStatements* session = nullptr);

// analyse_sql() + evaluate().
Decision evaluate_sql(const Policy& policy, std::string_view sql,
                      PreparedStatements* session = nullptr);

// Parameters the dataplane adds to the upstream StartupMessage for sessions under `policy`
// (defence in depth): {"default_transaction_read_only": "on"} for read-only grants.
std::map<std::string, std::string> upstream_startup_parameters(const Policy& policy);

// The documented function lists (docs/policy.md). Names are matched without schema.
// Write functions are denied under read-only grants, whatever allowed_functions says.
bool is_write_function(std::string_view name);
// Dangerous functions (server files, other sessions, configuration, dynamic SQL, large
// objects) are denied under every policy unless allowed_functions lists them.
bool is_dangerous_function(std::string_view name);

// True when `policy.allowed_functions` lists `f`: a glob with a dot against "schema.name"
// (unqualified calls resolve to pg_catalog), one without against the bare name.
bool function_listed(const Policy& policy, const FunctionRef& f);

// True when `entries` (allowed_kinds or approve_kinds) names `kind`: its name, "*", or a
// group alias: "ddl" (ddl_create, ddl_alter, ddl_drop), "copy" (copy_to_stdout,
// copy_from_stdin), "prepared" (prepare, execute, deallocate), "write" (insert, update,
// delete, merge); "set:<parameter>" entries count as naming kind set.
bool kind_listed(const std::vector<std::string>& entries, StatementKind kind);

// True when `entry` may appear in allowed_kinds / approve_kinds: a kind name, a group alias
// (ddl, copy, write, prepared), "*", or "set:<glob>" over parameter names ([a-z0-9_.] with
// * and ?). The config loader rejects anything else.
bool is_kind_entry(std::string_view entry);

}  // namespace pgwarden::policy
