// Column lineage: for every output column of a statement, the source columns it derives from
// and how (as is, or transformed), plus the source columns that decide which rows come back
// (predicates) and the ones copied into written data. Works on libpg_query's protobuf parse
// tree, like sql_analysis.cc, and needs a catalog for `*`, `t.*`, whole-row references, views
// (whose definitions are analysed recursively) and to tell built-in functions from opaque ones.
//
// Derivation (docs/masking.md, "Lineage"):
//   as is        a plain column reference, through aliases, sub-selects in FROM, CTEs, joins,
//                view columns and set-operation branches;
//   transformed  everything else: any function, operator, cast, COLLATE, aggregate, row /
//                array / JSON constructor, whole-row reference, (c).field, CASE, COALESCE,
//                scalar sub-select, and every node type this file does not know (fail closed).
// `count(*)` / `count(x)` reveal no value: their arguments are not sources of the output (a
// FILTER or ORDER BY inside them still counts as a predicate).
//
// `origin_lost` marks an as-is output whose RowDescription PostgreSQL sends without the
// source's table OID/attnum (set operations, VALUES lists, RETURNING, references to an outer
// query level):
// the result-set mask plan cannot see its source there.
//
// Thread-safety: compute_lineage() is reentrant; the catalog must be safe to call from the
// calling thread.
#pragma once

#include <compare>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

struct PgQuery__Node;

namespace pgwarden::policy {

// A column of a relation as the catalog names it.
struct SourceColumn {
  std::string schema;
  std::string table;
  std::string column;
  std::string qualified() const { return schema + "." + table + "." + column; }
  auto operator<=>(const SourceColumn&) const = default;
  bool operator==(const SourceColumn&) const = default;
};

struct ColumnLineage {
  std::set<SourceColumn> as_is;
  std::set<SourceColumn> transformed;
  bool origin_lost = false;  // see the file comment

  bool empty() const { return as_is.empty() && transformed.empty(); }
  // Every source of `other` becomes a transformed source of this one.
  void add_transformed(const ColumnLineage& other);
  // Sources keep their derivation.
  void add(const ColumnLineage& other);
  std::set<SourceColumn> all() const;
};

struct OutputColumn {
  std::string name;  // the result column name PostgreSQL will report ("?column?" if none)
  ColumnLineage lineage;
};

// How a masked column is used in a predicate; a mask rule may allow the narrow forms.
enum class PredicateForm {
  kGeneral,       // anything that compares or computes on the value
  kIsNull,        // `col IS [NOT] NULL`
  kEqualityJoin,  // `a.col = b.col`, both sides plain columns
};

struct PredicateUse {
  SourceColumn source;
  std::string clause;  // "WHERE", "JOIN ON", "HAVING", "ORDER BY", "GROUP BY", "DISTINCT ON",
                       // "window", "FILTER", "LIMIT", "aggregate ORDER BY", "MERGE ON",
                       // "aggregate DISTINCT", "UNION" (without ALL), "INTERSECT", "EXCEPT"
                       // (set operations compare whole rows), "SEARCH", "CYCLE",
                       // "FOREIGN KEY" (a constraint that references the column: every write
                       // of the referencing table compares a value with it)
  PredicateForm form = PredicateForm::kGeneral;
  // kEqualityJoin: the column on the other side of `=`.
  SourceColumn other;
  auto operator<=>(const PredicateUse&) const = default;
  bool operator==(const PredicateUse&) const = default;
};

struct FunctionName {
  std::string schema;  // empty when unqualified
  std::string name;
  auto operator<=>(const FunctionName&) const = default;
  bool operator==(const FunctionName&) const = default;
};

struct StatementLineage {
  // Output columns returned to the client: SELECT / VALUES / TABLE list, RETURNING, DECLARE
  // CURSOR's query, PREPARE's statement. Empty for statements that return no rows.
  std::vector<OutputColumn> outputs;
  // Where the outputs go when not to the client: "" (the client), "COPY (query) TO",
  // "CREATE TABLE AS", "SELECT INTO", "CREATE VIEW" (outputs are copied, not returned).
  std::string sink;
  std::set<PredicateUse> predicates;
  // Source columns whose values (or functions of them) are written into a relation or a
  // server file: INSERT ... SELECT / VALUES, UPDATE SET, MERGE, ON CONFLICT DO UPDATE, CTAS,
  // SELECT INTO, COPY table TO 'file' / PROGRAM.
  std::set<SourceColumn> written_from;
  std::string written_to;  // the relation written, for messages
  // Source columns some expression computes on anywhere in the statement (a function,
  // operator or cast argument, a row value, the value of a sub-select used as one, ...),
  // whether or not the result is returned:
  // including sub-select and CTE columns nobody references and EXPLAIN's query. Such an
  // expression can show the value in an error (`ssn::int`: invalid input syntax for type
  // integer: "123-45-6789") or a side effect (pg_notify, set_config). Not collected from the
  // definitions of views (PostgreSQL evaluates a view column only when it is used).
  std::set<SourceColumn> computed;
  // Functions and procedures whose body cp cannot see (not in pg_catalog), called anywhere.
  std::set<FunctionName> opaque_functions;
  // Built-in functions that run SQL given as text or read a relation or cursor named by a
  // value (query_to_xml, table_to_xml, cursor_to_xml, ts_stat, ...): what they read is not
  // in the parse tree.
  std::set<FunctionName> query_text_functions;
  // Code cp cannot see that the statement runs or installs: "DO", "CREATE RULE", or a
  // relation whose reads it cannot see: "CREATE FOREIGN TABLE", "IMPORT FOREIGN SCHEMA";
  // "" = none.
  std::string opaque_code;
  // DDL that changes the definition of a table (ALTER TABLE, RENAME, SET SCHEMA, CREATE INDEX,
  // TRIGGER, POLICY, STATISTICS), or attaches it as a partition of another table (whose name
  // then shows its rows): the table's columns, and what was done ("ALTER TABLE", ...).
  std::set<SourceColumn> altered;
  std::string altered_by;
  // ALTER SCHEMA s RENAME: the old name (column_glob masks name schemas).
  std::set<std::string> renamed_schemas;
  // Sources of output columns that an output position (`ORDER BY 2`, `GROUP BY 1`,
  // `DISTINCT ON (2)`, grouping sets) may name. Which of them is a predicate depends on the
  // number, a literal, and statements that differ only in literals share a verdict-cache shape:
  // when one of these is masked, the verdict must not be cached by shape.
  std::set<SourceColumn> by_position;
  // Non-empty: the lineage could not be determined (unknown relation or column, catalog
  // error, views nested too deeply, ...). Callers must fail closed.
  std::string error;
};

// What the analysis needs to know about the database.
struct CatalogRelation {
  std::string schema;
  std::string name;
  char kind = 'r';  // pg_class.relkind: r table, p partitioned, v view, m matview, f foreign
  std::vector<std::string> columns;  // live columns in attnum order
  std::string view_definition;       // views and matviews: pg_get_viewdef()
};

class LineageCatalog {
 public:
  virtual ~LineageCatalog() = default;
  // Relations named `name` (exactly as the parser folded it) in `schema`, or in every schema
  // when `schema` is empty (cp cannot know the session's search_path: the union of all
  // candidates is used, which is fail closed). Empty when none exists.
  virtual Result<std::vector<CatalogRelation>> relations(const std::string& schema,
                                                         const std::string& name) = 0;
  // The schemas holding a function or procedure named `name`.
  virtual Result<std::vector<std::string>> function_schemas(const std::string& name) = 0;
};

// Views nested deeper than this make the lineage fail (closed).
inline constexpr int kMaxViewDepth = 8;

// Lineage of one parsed statement (a RawStmt's stmt).
StatementLineage compute_lineage(const PgQuery__Node* stmt, LineageCatalog& catalog);

// Parses `sql` (one statement) and computes its lineage; error set on a parse failure.
StatementLineage lineage_of_sql(std::string_view sql, LineageCatalog& catalog);

// The output columns of view `schema.name` (its definition analysed recursively); error when
// the relation is not a view or its lineage cannot be determined.
Result<std::vector<OutputColumn>> view_lineage(const std::string& schema, const std::string& name,
                                               LineageCatalog& catalog);

}  // namespace pgwarden::policy
