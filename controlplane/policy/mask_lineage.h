// Masking decisions from column lineage (docs/masking.md, "Lineage"): given a statement's
// lineage (lineage.h) and the session's policy, whether the statement may run.
//
// Under a policy with column masks (column_glob / name_pattern rules; type_name rules are
// decided on the result's types by the mask plan only), a statement is refused when:
//   * its lineage could not be determined (unknown relation or column, catalog error);
//   * it runs a DO block, creates a rule or a foreign table, or calls (or installs as a trigger,
//   operator,
//     aggregate, cast, default or constraint) a function or procedure whose body cp cannot see
//     (not in pg_catalog), or a built-in that runs SQL text or reads a relation or cursor named
//     by a value (query_to_xml, ...), that allowed_functions does not list;
//   * it changes the definition of a table with masked columns (ALTER, RENAME, SET SCHEMA,
//     CREATE INDEX / TRIGGER / POLICY / STATISTICS, CLUSTER, ATTACH / DETACH PARTITION) or
//     renames a schema a column mask names;
//   * a masked source is computed on anywhere (a function, operator or cast argument, also
//     in sub-selects and CTEs whose result is not used, and under EXPLAIN): errors and side
//     effects would show the value;
//   * an output column is *transformed* from a masked source (md5(ssn), row_to_json(c), ...):
//     a function of a masked value is never returned;
//   * an output column is a masked source *as is* where PostgreSQL reports no column origin
//     (set operations, RETURNING, outer-level references), or is masked differently by two
//     of its as-is sources: the mask plan could not apply the mask;
//   * COPY (query) TO outputs a masked source at all (COPY lines have no per-column plan);
//   * masked data is written somewhere (INSERT ... SELECT, UPDATE SET, CTAS, SELECT INTO,
//     COPY table TO a server file or program);
//   * a masked source decides which rows come back or in which order (WHERE, JOIN, HAVING,
//     GROUP BY, ORDER BY, DISTINCT [ON], window, FILTER, LIMIT), or is compared by a foreign key
//     or a row-security policy the statement declares, unless the mask allows the narrow form
//     used (`allow_predicates`: "is_null", "equality_join").
// count(*) / count(col) and plain as-is columns with a known origin pass: the mask plan masks
// the latter.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>

#include "controlplane/policy/lineage.h"
#include "controlplane/policy/policy.h"

namespace pgwarden::policy {

// The first column_glob / name_pattern rule of `policy` covering `source`, or nullptr.
const MaskRule* mask_rule_for_source(const Policy& policy, const SourceColumn& source);

// True when the policy has column_glob or name_pattern masks (lineage matters).
bool has_column_masks(const Policy& policy);

// The settings of `policy` that masking decisions (lineage refusals, mask plans, error-text
// redaction) depend on, as one string: `masks` (every field of every rule, in order) and
// `deny_masked_in_expressions`. Equal strings, equal masking decisions for a statement.
std::string masks_fingerprint(const Policy& policy);

struct LineageRefusal {
  std::string rule;     // "masked_derived", "masked_predicate", ... (prefixed "policy.")
  std::string message;  // names the output column and the masked source
};

std::optional<LineageRefusal> check_lineage(const Policy& policy, const StatementLineage& lineage);

// True when check_lineage()'s answer for `lineage` may change with a literal's value that the
// verdict cache's shape key leaves out: an output position (`ORDER BY 2`) that may name an
// output column with a masked source. Such a verdict must not be cached by shape.
bool decided_by_literals(const Policy& policy, const StatementLineage& lineage);

}  // namespace pgwarden::policy
