// Approvals by effect: how far a write reaches, read from the libpg_query parse tree.
//
// For every UPDATE, DELETE and MERGE in a statement (also inside data-modifying CTEs and
// COPY (...) TO), every INSERT ... SELECT ... ON CONFLICT DO UPDATE whose source reads the
// target itself (classified by the source's WHERE over it), and every relation of a TRUNCATE,
// find_write_effects() reports its reach:
//
//   * where_absent          UPDATE/DELETE without WHERE (a WHERE inside a sub-select, e.g.
//                           `SET c = (SELECT 'x' WHERE true)`, is not the statement's WHERE);
//   * where_constant_true   the top-level WHERE (MERGE: the ON condition) folds to constant
//                           true under the folding rules below (`true`, `1=1`, `x OR true`,
//                           `NOT false`, `'t'::bool`, `coalesce(true, x)`, `(SELECT true)`);
//   * where_row_independent the condition references no column of the target row (only
//                           constants that cannot be folded, parameters, functions, other
//                           tables, sub-selects over other tables): it selects every row or
//                           none, e.g. `WHERE now() > '2000-01-01'`, `WHERE $1`,
//                           `WHERE EXISTS (SELECT 1 FROM other)`;
//   * where_tautology       the condition reads the row but does not choose among rows: it
//                           holds on every row whose compared values are not NULL
//                           (`k = k`, `k >= k`, `k BETWEEN k AND k`, `k < 5 OR k >= 5`,
//                           `k <> 3 OR k = 3`, `p OR NOT p`, `v LIKE '%'`, `v ~ ''`,
//                           `k IN (SELECT k FROM <target>)`, `EXISTS (SELECT 1 FROM
//                           <target> s WHERE s.k = <target>.k)`); `k IS NOT DISTINCT FROM k`
//                           and `x IS NULL OR x IS NOT NULL` are constant true;
//   * truncate              TRUNCATE (one effect per relation);
//   * drop                  DROP TABLE / MATERIALIZED VIEW / SCHEMA / EXTENSION, any DROP ...
//                           CASCADE, DROP DATABASE, DROP OWNED BY, and ALTER TABLE / TYPE
//                           subcommands that destroy stored values or take rows out of the
//                           table: DROP COLUMN / ATTRIBUTE, ALTER COLUMN ... TYPE, DETACH
//                           PARTITION, NO INHERIT, SET UNLOGGED (a crash empties the
//                           table) (effect.cc alter_table_loss());
//   * unknown_effect        code analysis cannot see runs, now or on later writes: DO,
//                           CREATE TRIGGER, CREATE RULE with actions other than SELECT/NOTHING,
//                           ALTER TABLE ... ENABLE/DISABLE [REPLICA|ALWAYS] TRIGGER/RULE,
//                           DROP TRIGGER / RULE without CASCADE
//                           (calls of user-defined functions and procedures are judged by
//                           pgwarden-cp with the catalog: controlplane/server/policy_analyser.h);
//   * restricted            anything else: the condition depends on the target row, or folds
//                           to false or NULL (nothing changes).
//
// Folding rules (exact; everything else is "not constant"): boolean, integer, numeric, string
// and NULL literals; casts of constants to bool/boolean, the integer types, numeric/decimal,
// float4/float8/real/double precision and text/varchar without a type modifier (a NULL cast
// to any type is NULL); string literals read as booleans with PostgreSQL's boolean input
// rules where a boolean is expected; comparisons = <> != < > <= >= between two numbers, two
// booleans, a number and a numeric string, or two strings (= and <> only: ordering depends on
// the collation); IS [NOT] DISTINCT FROM; IN (list); [NOT] BETWEEN of numbers; unary minus and
// + - * of numbers; NULLIF; COALESCE; AND/OR/NOT with SQL's three-valued logic; IS [NOT]
// TRUE/FALSE/UNKNOWN; IS [NOT] NULL; a scalar sub-select without FROM whose WHERE is absent or
// folds to true (`(SELECT true)`), and EXISTS of one.
//
// Column references: a qualified reference belongs to the target when its qualifier is the
// target's alias (or its name when it has no alias) and no sub-select in between declares that
// name; an unqualified reference belongs to the target unless a sub-select in between has a
// FROM clause (it then binds to that FROM: the safe reading, since it makes the condition
// row-independent). WHERE CURRENT OF restricts.
//
// `uses_literals` is true when a literal's value decided part of the reach (`WHERE id = 1 OR
// 1=2`): such a verdict must not be cached by shape (`1=1` has the same shape).
//
// Thread-safety: all functions are pure and may run concurrently.
#pragma once

#include <string>
#include <string_view>
#include <vector>

struct PgQuery__Node;

namespace pgwarden::policy {

enum class WriteReach {
  kRestricted,
  kWhereAbsent,
  kWhereConstantTrue,
  kWhereRowIndependent,
  kWhereTautology,
  kTruncate,
  kDrop,
  kUnknownEffect,
};

// "restricted", "where_absent", "where_constant_true", "where_row_independent",
// "where_tautology", "truncate", "drop", "unknown_effect":
// the rule names policies and approval requests use.
std::string_view write_reach_rule(WriteReach reach);

struct WriteEffect {
  std::string verb;      // "UPDATE", "DELETE", "MERGE", "TRUNCATE", "DROP TABLE", "DO", ...
  std::string relation;  // resolved "schema.table" (docs/policy.md resolution rule); a schema
                         // or database name for DROP SCHEMA / DATABASE; "" for DO
  WriteReach reach = WriteReach::kRestricted;
  bool uses_literals = false;
  // UPDATE, DELETE, MERGE: a bind parameter ($n) helps choose the rows other than as
  // `column = $n` in a top-level AND of the WHERE (MERGE: of the ON condition, or in its
  // source other than a VALUES list), e.g. `WHERE k > $1`, `v LIKE $1`, `k = ANY ($1)`,
  // `k = $1 OR true`. A generic plan's estimate then holds for no particular value (`k > $1`
  // is a third of the table, `k > 0` may be all of it): the planner threshold has no bound.
  bool parameters_choose_rows = false;

  // A sentence for approval requests, e.g. "DELETE on public.t has no WHERE clause: it
  // changes every row".
  std::string describe() const;
  bool operator==(const WriteEffect&) const = default;
};

// Every write of one statement's parse tree, in tree order. Does not descend into EXPLAIN
// and PREPARE (their inner statements are analysed on their own), CREATE RULE or CREATE
// FUNCTION bodies (they do not run now; a CREATE RULE that writes is one unknown_effect).
std::vector<WriteEffect> find_write_effects(const PgQuery__Node* stmt);

// How a condition reads under the rules above, for tests and documentation examples.
enum class ConditionReach { kTrue, kFalse, kNull, kRowIndependent, kRowDependent, kTautology };
std::string_view condition_reach_name(ConditionReach reach);
// Parses `DELETE FROM t WHERE <condition>` and classifies the condition against target t.
// kRowDependent as well when the text does not parse (a test would notice).
ConditionReach classify_condition_sql(std::string_view condition);

// The text of the statement inside `PREPARE name [(types)] AS <statement>` or `EXPLAIN
// [ANALYZE] [VERBOSE] [(options)] <statement>`, using PostgreSQL's scanner; "" when
// `wrapper` is neither.
std::string inner_statement_text(std::string_view wrapper);

}  // namespace pgwarden::policy
