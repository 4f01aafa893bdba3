// Exact SQL analysis with libpg_query (PostgreSQL 15's own parser).
//
// analyse_sql() parses a statement string (possibly several statements separated by ';') and
// reports, per statement: its kind (the vocabulary below, documented in docs/policy.md),
// the relations it reads and writes, the functions it calls, the columns it references and
// utility details (COPY direction, SET parameter, transaction modes, EXPLAIN/PREPARE inner
// statement). It makes no decision; controlplane/policy/evaluator.h applies a Policy.
//
// Thread-safety: analyse_sql() may be called concurrently from any number of threads.
// libpg_query keeps a per-thread memory context that is released when the thread exits
// (pg_query_exit() is only needed to release it early).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controlplane/policy/effect.h"
#include "controlplane/policy/lineage.h"

namespace pgwarden::policy {

// Statement kinds. The string form (statement_kind_name) is what policies list in
// allowed_kinds / approve_kinds.
#define PGW_STATEMENT_KINDS(X)             \
  X(kSelect, "select")                     \
  X(kSelectForUpdate, "select_for_update") \
  X(kInsert, "insert")                     \
  X(kUpdate, "update")                     \
  X(kDelete, "delete")                     \
  X(kMerge, "merge")                       \
  X(kCopyToStdout, "copy_to_stdout")       \
  X(kCopyFromStdin, "copy_from_stdin")     \
  X(kCopyProgram, "copy_program")          \
  X(kCopyFile, "copy_file")                \
  X(kDdlCreate, "ddl_create")              \
  X(kDdlAlter, "ddl_alter")                \
  X(kDdlDrop, "ddl_drop")                  \
  X(kTruncate, "truncate")                 \
  X(kGrant, "grant")                       \
  X(kSet, "set")                           \
  X(kReset, "reset")                       \
  X(kShow, "show")                         \
  X(kTransaction, "transaction")           \
  X(kPrepare, "prepare")                   \
  X(kExecute, "execute")                   \
  X(kDeallocate, "deallocate")             \
  X(kExplain, "explain")                   \
  X(kExplainAnalyze, "explain_analyze")    \
  X(kDo, "do")                             \
  X(kCall, "call")                         \
  X(kCreateFunction, "create_function")    \
  X(kListen, "listen")                     \
  X(kNotify, "notify")                     \
  X(kVacuum, "vacuum")                     \
  X(kAnalyze, "analyze")                   \
  X(kLock, "lock")                         \
  X(kDiscard, "discard")                   \
  X(kOther, "other")

enum class StatementKind {
#define PGW_KIND_ENUM(id, name) id,
  PGW_STATEMENT_KINDS(PGW_KIND_ENUM)
#undef PGW_KIND_ENUM
};

std::string_view statement_kind_name(StatementKind kind);
// Parses a kind name; nullopt for names outside the vocabulary.
std::optional<StatementKind> statement_kind_from_name(std::string_view name);
// Every kind, in declaration order.
const std::vector<StatementKind>& all_statement_kinds();

// A relation as written in the statement. schema is empty when the statement did not
// qualify the name; resolved() applies pgwarden's resolution rule (docs/policy.md).
struct RelationRef {
  std::string schema;
  std::string name;

  // "schema.name"; unqualified names resolve to "pg_catalog" when they start with "pg_"
  // (PostgreSQL searches pg_catalog first) and to "public" otherwise.
  std::string resolved() const;
  bool operator==(const RelationRef&) const = default;
};

// A function call; schema empty when unqualified. Names are as the parser folded them.
struct FunctionRef {
  std::string schema;
  std::string name;

  // "schema.name"; unqualified names resolve to "pg_catalog" (searched first).
  std::string resolved() const;
  bool operator==(const FunctionRef&) const = default;
};

// A column referenced by name (ColumnRef). relation is resolved through FROM-clause aliases
// where the statement makes that unambiguous; it is empty (schema and name) when the column
// could belong to several relations or to a subquery/CTE.
struct ColumnUse {
  RelationRef relation;
  std::string column;  // "*" for t.* / *
  // false only when the column is the whole value of a SELECT/RETURNING output entry
  // (`SELECT ssn FROM t`); true when used in a function call, operator, cast, WHERE, JOIN,
  // ORDER BY, GROUP BY, ... (anything that computes on the value or filters by it).
  bool in_expression = false;
  bool operator==(const ColumnUse&) const = default;
};

// A run-time parameter change (SET, RESET, SET TRANSACTION, set_config()).
struct SettingChange {
  std::string parameter;  // lower-case; "transaction_read_only" for SET TRANSACTION READ ..;
                          // "*" for RESET ALL or a set_config() with a non-constant name
  std::string value;      // textual value; empty for RESET / DEFAULT; "?" if not constant
  bool operator==(const SettingChange&) const = default;
};

enum class CopyDirection { kNone, kTo, kFrom };

// One COPY option (WITH (...) or the legacy syntax, which the parser maps to the same names:
// CSV -> format 'csv', BINARY -> format 'binary', HEADER -> header, ...).
struct CopyOption {
  std::string name;      // lower-case, e.g. "format", "delimiter", "null", "force_quote"
  std::string value;     // the constant's text; "" when the option has no argument
  bool constant = true;  // false for a list or '*' argument (FORCE_QUOTE (a, b) / *)
  bool operator==(const CopyOption&) const = default;
};

struct StatementAnalysis {
  StatementKind kind = StatementKind::kOther;
  // Parse node name for kOther / DDL (e.g. "CreateStmt", "ClusterStmt"), for messages.
  std::string node;
  std::string text;  // the statement's own text (trimmed slice of the input); for the `inner`
                     // of PREPARE/EXPLAIN, the inner statement's text
  // Kinds of statements executed inside this one: data-modifying CTEs
  // (`WITH d AS (DELETE ...) SELECT` has kind select and nested kind delete), row locks in
  // subqueries (select_for_update), the inner statement of EXPLAIN ANALYZE / PREPARE / COPY.
  // A policy must allow each of them as well as `kind`.
  std::vector<StatementKind> nested_kinds;
  // Utility detail: SHOW/SET TRANSACTION parameter, DISCARD target ("all", "plans",
  // "sequences", "temp"), "declare_cursor" / "cursor" for cursor statements.
  std::string detail;
  std::vector<RelationRef> relations_read;
  std::vector<RelationRef> relations_written;
  std::vector<FunctionRef> functions;
  std::vector<ColumnUse> columns;
  std::vector<SettingChange> settings;

  // COPY: direction and target.
  CopyDirection copy_direction = CopyDirection::kNone;
  std::string copy_target;  // program command or file name; empty for STDIN/STDOUT
  // COPY table: the table (also in relations_read/written) and its column list as written
  // (empty = all columns). COPY (query): copy_query is true and copy_relation is empty.
  RelationRef copy_relation;
  std::vector<std::string> copy_columns;
  bool copy_query = false;
  std::vector<CopyOption> copy_options;
  // Transaction statements: "begin", "start", "commit", "rollback", "savepoint", "release",
  // "rollback_to", "prepare_transaction", "commit_prepared", "rollback_prepared".
  std::string transaction_action;
  // Transaction modes given: "read only", "read write", "isolation level ...",
  // "deferrable", "not deferrable".
  std::vector<std::string> transaction_modes;
  // PREPARE / EXECUTE / DEALLOCATE: the statement name ("" for DEALLOCATE ALL).
  std::string prepared_name;
  // EXPLAIN (ANALYZE) and PREPARE: the analysed inner statement. Its relations, functions and
  // columns are also merged into this statement's lists (EXPLAIN without ANALYZE reports the
  // inner statement's written relations as read: nothing is executed).
  std::shared_ptr<const StatementAnalysis> inner;
  // Every UPDATE/DELETE/MERGE/TRUNCATE this statement runs, with how far it reaches
  // (controlplane/policy/effect.h); empty for EXPLAIN/PREPARE (see `inner`).
  std::vector<WriteEffect> write_effects;
  // Column lineage (lineage.h); computed only when analyse_sql() is given a catalog. PREPARE's
  // and EXPLAIN's `inner` carry the inner statement's lineage as well.
  std::shared_ptr<const StatementLineage> lineage;
};

struct ParseError {
  std::string message;      // the parser's message, e.g. `syntax error at or near "FORM"`
  int cursor_position = 0;  // 1-based character position in the input, 0 if unknown
};

struct SqlAnalysis {
  std::vector<StatementAnalysis> statements;  // empty for an empty/comment-only string
  std::optional<ParseError> parse_error;      // set: statements is empty
};

// Caps: inputs longer than this are reported as a parse error without parsing.
inline constexpr size_t kMaxSqlBytes = 1 << 20;

// Parses and analyses `sql`. Never throws; unparseable SQL yields parse_error.
SqlAnalysis analyse_sql(std::string_view sql);
// The same, plus each statement's column lineage computed over `catalog` (lineage.h).
SqlAnalysis analyse_sql(std::string_view sql, LineageCatalog* catalog);

}  // namespace pgwarden::policy
