// PolicyAnalyser: the StatementAnalyser backed by controlplane/policy (libpg_query analysis +
// evaluate against the session's policy). Stateless, thread-safe.
//
// `cacheable` tells the dataplane it may reuse the verdict for every statement of the same
// shape (literals replaced) under the same policy version. It is false when literal values
// can change the verdict: SET/RESET/set_config, PREPARE/EXECUTE/DEALLOCATE/DISCARD, DO, CALL,
// parse errors, approvals.
//
// deny_masked_in_expressions: a statement the policy allows is denied (rule
// "policy.masked_column_in_expression") when it uses a column a mask rule covers inside an
// expression (StatementAnalysis.columns with in_expression), e.g. `WHERE ssn LIKE '1%'`,
// which would reveal masked values through filtering or computation. Matching: column_glob
// against "schema.table.column" (a column without a resolved relation matches on the
// column part alone: fail closed), name_pattern against the column name; `*` matches every
// rule. type_name rules are not checked here (types are known only from the result).
//
// SQL-level prepared statements: with a SessionView.sql_state, PREPARE/DEALLOCATE/DISCARD ALL
// update the session's PreparedStatements (only when the final answer is not deny) and
// EXECUTE inherits the verdict of its PREPARE (never cacheable).
//
// Approvals by effect (docs/approvals.md): the policy evaluator asks for approval of
// unbounded writes (controlplane/policy/effect.h). With `approve_when_rows_over: N`, every
// write (UPDATE/DELETE/INSERT/MERGE, also as EXECUTE, EXPLAIN ANALYZE or a data-modifying CTE)
// the policy allows is estimated with the EffectProbe (EXPLAIN, never run); over N, or no
// estimate to be had (fail closed), the answer is approve with rule "policy.rows_over", and
// such answers are never cacheable (the estimate depends on literals). Whenever the answer is
// approve, the estimate (and with `dry_run: true` the rolled-back dry run's exact count, or
// why it was skipped) is kept in sql_state for the approval request that follows.
// Dry runs happen only for one UPDATE/DELETE/INSERT/MERGE statement without data-modifying
// CTEs, calling only functions on a short side-effect-free list, on tables without triggers,
// rules or (for INSERT/UPDATE/MERGE) sequences (EffectProbe::irreversible_effects).
//
// Code analysis cannot see: under a policy that is not read_only and has
// approve_unbounded_writes, a statement that calls a function or procedure outside pg_catalog
// (schema-qualified, or an unqualified name that some function outside pg_catalog has, or no
// function at all: asked with the lineage catalog; no answer = approve) that allowed_functions
// does not list
// needs approval, rule "policy.unknown_effect" (not cacheable). DO, CREATE TRIGGER and
// writing CREATE RULE are unknown effects of the evaluator (controlplane/policy/effect.h).
//
// Column lineage (controlplane/policy/lineage.h, mask_lineage.h): when the session's policy has
// column masks and the analyser was given a catalog provider, every statement's lineage is
// computed over the target's catalog and check_lineage() refuses (deny, rule
// "policy.<masked_derived|masked_predicate|masked_origin_lost|masked_copy|masked_copied|
// opaque_function|opaque_code|lineage_unknown>", SQLSTATE 42501 at the client) what would
// reveal a masked value. If the catalog cannot be asked the statement is denied
// ("policy.lineage_unavailable", not cacheable). Lineage verdicts are cacheable like any
// other: they depend on the statement's shape and the catalog (see docs/masking.md for DDL).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "controlplane/policy/lineage.h"
#include "controlplane/policy/sql_analysis.h"
#include "controlplane/server/effect_probe.h"
#include "controlplane/server/interfaces.h"

namespace pgwarden::server {

// The first mask rule of `policy` covering `use` (see above), or nullptr.
const policy::MaskRule* masked_rule_for(const policy::Policy& policy, const policy::ColumnUse& use);

class PolicyAnalyser : public StatementAnalyser {
 public:
  // The lineage catalog of a target (the mask planner's metadata connection).
  using CatalogProvider = std::function<Result<std::shared_ptr<policy::LineageCatalog>>(
      const config::Config&, const config::Target&)>;

  // `probe` null: no estimates and no dry runs (a rows_over policy then asks for approval of
  // every write: fail closed). `catalogs` empty: no lineage (policies with column masks rely
  // on the mask plan alone; production always passes one).
  explicit PolicyAnalyser(std::shared_ptr<EffectProbe> probe = nullptr,
                          CatalogProvider catalogs = nullptr)
      : probe_(std::move(probe)), catalogs_(std::move(catalogs)) {}
  protocol::AnalyseResponse analyse(const SessionView& session,
                                    const protocol::AnalyseRequest& request) override;

 private:
  // The first of `functions` outside pg_catalog that allowed_functions does not list, as
  // "schema.name" (or the name and why it counts: not in the catalog, the catalog could not
  // be asked); "" for none.
  std::string unanalysable_function(const SessionView& session,
                                    const std::vector<policy::FunctionRef>& functions) const;

  std::shared_ptr<EffectProbe> probe_;
  CatalogProvider catalogs_;
};

}  // namespace pgwarden::server
