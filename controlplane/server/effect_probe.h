// EffectProbe: what a write would do to the target database, asked on pgwarden-cp's own libpq
// connection (never the agent's). Used by PolicyAnalyser for approvals by effect
// (docs/approvals.md): the planner threshold `approve_when_rows_over` and `dry_run`.
//
// PgEffectProbe keeps one connection per target definition, logged in as the target's role
// with the password from the vault (like the mask planner's catalog connection; the conninfo
// is never logged), created on first use; calls on one target are serialised.
//
//   * estimate_rows: `PREPARE` the statement, then, in a READ ONLY transaction with
//     plan_cache_mode = force_generic_plan, `EXPLAIN (FORMAT JSON) EXECUTE` it with NULL for
//     every bind parameter: the planner's generic plan, which does not depend on parameter
//     values (so `$1` placeholders of the extended protocol are estimated as unknown values,
//     never as NULL). The estimate is the sum of the input rows of every ModifyTable node
//     (data-modifying CTEs included), plus the rows foreign keys change in other tables
//     (below). The statement is not executed; since planning evaluates
//     immutable and stable functions on constants, the analyser does not EXPLAIN statements
//     that call user-defined ones (plan_time_functions). statement_timeout 1 s.
//     Foreign-key cascades: for every ModifyTable node that deletes (DELETE, MERGE) or
//     updates (UPDATE, MERGE, INSERT ... ON CONFLICT DO UPDATE) rows of a table R, every
//     foreign key referencing R (or its partition tree) with ON DELETE CASCADE / SET NULL /
//     SET DEFAULT (deletes) or ON UPDATE CASCADE / SET NULL / SET DEFAULT (updates; the plan
//     does not say which columns change, so any UPDATE counts) changes, per row of R, at most
//     as many rows of the referencing table C as one key value has there by C's statistics:
//     C's rows (pg_class.reltuples scaled to the table's current size, as the planner does)
//     times the largest of the most common value's frequency and 1 / n_distinct, for the key
//     column that gives the smallest bound; capped at C's rows; C's rows when no key column
//     has statistics. Rows changed in C cascade further the same way (recursively). No bound
//     (an error, the analyser then asks for approval with the reason): C was never analysed
//     (reltuples < 0) or was empty at its last ANALYZE and has rows now, the cascade revisits
//     a table (a cycle, e.g. a self-referencing ON DELETE CASCADE), or it is deeper than
//     kMaxCascadeDepth. An UPDATE, DELETE or MERGE that reads a table without statistics
//     (never analysed, or empty at its last ANALYZE and filled since: the planner then
//     guesses selectivities) — the written tree (itself, its partitions and inheritance
//     children) or any table its plan reads to choose the rows — counts the most rows the
//     written tree's heap pages can hold (pages x MaxHeapTuplesPerPage) when that is more than
//     the plan's estimate (`unanalysed` says so). Statistics older than the data: when the
//     written tree changed since its last ANALYZE by more than 50 rows + 10% of its rows
//     (n_mod_since_analyze), the write counts the plan's estimate plus the rows written since,
//     at most the tree's rows; when a table read to choose the rows changed that much, the
//     written tree's rows — except a write whose input is one scan of the written table whose
//     conditions equate every key column of a unique index to one value (at most one row).
//     Every plan of the
//     EXPLAIN counts: a rule on a written table (DO ALSO
//     / DO INSTEAD) adds plans of its own, in any order. The user triggers that fire on the
//     written tables (their partitions and inheritance children included) and on the tables
//     foreign keys cascade to are listed in `triggers`: what their code writes is not in
//     `rows`; the caller decides whether it trusts them.
//   * irreversible_effects: catalog checks on the written relations for what a rollback
//     cannot undo: user triggers (they may call anything), rules, foreign or non-table
//     relations, identity/serial columns (sequences advance) when defaults apply, user
//     triggers on tables whose foreign keys cascade from it.
//   * dry_run: BEGIN; SET LOCAL statement_timeout = 2 s, lock_timeout = 500 ms; the statement
//     (extended protocol, so exactly one statement; not run when it has bind parameters);
//     ROLLBACK. Returns the command's row count. Rows locked by open transactions (also the
//     agent's own) stop it at lock_timeout.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "controlplane/config/config.h"

namespace pgwarden::server {

// Foreign keys cascading further than this many tables have no bound (fail closed).
inline constexpr int kMaxCascadeDepth = 8;

// A user trigger (not a foreign key's) that fires on one of the estimate's writes.
struct TriggerRef {
  std::string trigger;   // its name
  std::string relation;  // "schema.table" it is defined on
  std::string function_schema;
  std::string function_name;  // the function it runs
};

struct RowEstimate {
  int64_t rows = 0;      // every row the statement changes, cascades included; not what
                         // `triggers` write
  int64_t cascaded = 0;  // of which in tables that foreign keys cascade to
  // "12 in public.child (ON DELETE CASCADE from public.parent)", one per table; "" for none.
  std::string cascades;
  // Why some writes count the most rows their table's pages can hold instead of the plan's
  // estimate: tables without statistics, "public.t has no statistics (...) ..."; "" for none.
  std::string unanalysed;
  // Enabled user triggers on the written and cascaded-to tables for the events they see
  // (INSERT, UPDATE, DELETE), once each, ordered by relation and name.
  std::vector<TriggerRef> triggers;
};

// One ModifyTable node of an `EXPLAIN (VERBOSE, FORMAT JSON)` plan.
struct ModifyNode {
  std::string schema;  // "" without VERBOSE
  std::string relation;
  std::string operation;         // "Insert", "Update", "Delete", "Merge"
  bool conflict_update = false;  // INSERT ... ON CONFLICT DO UPDATE
  int64_t rows = 0;              // input rows (the rows it changes)
  // "schema.table" of every relation its input reads (VERBOSE plans), once each, in plan order.
  std::vector<std::string> scanned;
  // Its input is one scan of the written table (Seq Scan, Index Scan, Index Only Scan, run
  // once): the columns its Index Cond and Filter equate to one value (equated_columns()).
  // When they cover a unique index's key the write changes at most one row, whatever the
  // statistics say.
  std::vector<std::string> equated_columns;
};
// The columns that the top-level AND of a condition as EXPLAIN prints it equates to one value
// (a parameter or a literal, maybe cast): `(k = $1)`, `((t.a = 1) AND (t.b = ($2)::text) AND
// (t.c > 3))` gives a, b. Other conjuncts only restrict further and are skipped; a condition
// that is not an AND (an OR at the top) gives none, as do `= ANY (...)` and a column compared
// with a column.
std::vector<std::string> equated_columns(std::string_view condition);
// Every ModifyTable node of every plan (a rule adds plans), in plan order. invalid_argument
// for JSON that is not a plan.
Result<std::vector<ModifyNode>> modify_nodes_from_explain(const std::string& explain_json);

class EffectProbe {
 public:
  virtual ~EffectProbe() = default;
  // Rows the write statement `sql` (one statement, may contain $n) would change, by the
  // planner's estimate, with the rows foreign keys cascade to (see above). unavailable when
  // the target cannot be asked; invalid_argument when PostgreSQL rejects the statement (its
  // message); failed_precondition when a cascade has no bound (the reason).
  virtual Result<RowEstimate> estimate_rows(const config::Target& target,
                                            const std::string& sql) = 0;
  // Why a rollback could not undo everything a write to `relations` ("schema.table") does;
  // "" when no such effect was found. `adds_rows`: INSERT/UPDATE/MERGE (defaults and
  // sequences apply).
  virtual Result<std::string> irreversible_effects(const config::Target& target,
                                                   const std::vector<std::string>& relations,
                                                   bool adds_rows) = 0;
  // Runs `sql` in a transaction that is rolled back and returns the rows it changed.
  virtual Result<int64_t> dry_run(const config::Target& target, const std::string& sql) = 0;
  // The first of `names` that is a user-defined (outside pg_catalog) immutable or stable
  // function (the planner may evaluate those while planning), as "schema.name"; "" for none.
  virtual Result<std::string> plan_time_functions(const config::Target& target,
                                                  const std::vector<std::string>& names) = 0;
  // The enabled user triggers an INSERT into `relation` ("schema.table"), its partitions or
  // inheritance children fires (as RowEstimate::triggers): for COPY ... FROM, which cannot be
  // EXPLAINed. unavailable when the target cannot be asked.
  virtual Result<std::vector<TriggerRef>> insert_triggers(const config::Target& target,
                                                          const std::string& relation) = 0;
};

// The input rows of every ModifyTable node of every plan in an `EXPLAIN (FORMAT JSON)` output,
// summed; a plan without one counts its top node's rows. invalid_argument for JSON that is
// not a plan.
Result<int64_t> modify_rows_from_explain(const std::string& explain_json);

class PgEffectProbe : public EffectProbe {
 public:
  PgEffectProbe();
  ~PgEffectProbe() override;
  Result<RowEstimate> estimate_rows(const config::Target& target, const std::string& sql) override;
  Result<std::string> irreversible_effects(const config::Target& target,
                                           const std::vector<std::string>& relations,
                                           bool adds_rows) override;
  Result<int64_t> dry_run(const config::Target& target, const std::string& sql) override;
  Result<std::string> plan_time_functions(const config::Target& target,
                                          const std::vector<std::string>& names) override;
  Result<std::vector<TriggerRef>> insert_triggers(const config::Target& target,
                                                  const std::string& relation) override;

 private:
  struct Connection;
  // The connection for `target`, connected; its mutex is held by the returned lock.
  Result<std::shared_ptr<Connection>> connection_for(const config::Target& target);

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Connection>> connections_;  // by target settings
};

}  // namespace pgwarden::server
