#include "controlplane/server/effect_probe.h"

#include <libpq-fe.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "controlplane/server/mask_planner.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::server {

namespace {

using nlohmann::json;

constexpr const char* kProbeName = "pgw_effect_probe";

struct ResultCloser {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Res = std::unique_ptr<PGresult, ResultCloser>;

std::string trimmed_error(const PGresult* r, PGconn* c) {
  std::string m = r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(c);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  if (m.rfind("ERROR:  ", 0) == 0) m = m.substr(8);
  return m;
}

std::string sqlstate_of(const PGresult* r) {
  const char* s = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  return s != nullptr ? s : "";
}

bool command_ok(const PGresult* r) {
  return r != nullptr &&
         (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
}

std::string settings_key(const config::Target& t) {
  return t.name + "\n" + t.host + "\n" + std::to_string(t.port) + "\n" + t.unix_socket + "\n" +
         t.database + "\n" + t.role + "\n" + t.credential.location + "\n" +
         std::string(protocol::enum_name(t.tls_mode)) + "\n" + t.ca_file;
}

void sum_modify_rows(const json& plan, int64_t* sum, bool* found) {
  if (!plan.is_object()) return;
  const json* children =
      plan.contains("Plans") && plan["Plans"].is_array() ? &plan["Plans"] : nullptr;
  if (plan.value("Node Type", "") == "ModifyTable" && children != nullptr) {
    for (const json& c : *children) {
      std::string rel = c.is_object() ? c.value("Parent Relationship", "") : "";
      if (rel == "InitPlan" || rel == "SubPlan") continue;
      if (c.contains("Plan Rows") && c["Plan Rows"].is_number()) {
        *sum += static_cast<int64_t>(std::llround(c["Plan Rows"].get<double>()));
        *found = true;
      }
      break;
    }
  }
  if (children != nullptr) {
    for (const json& c : *children) sum_modify_rows(c, sum, found);
  }
}

// "schema.table" of every relation a plan node under `plan` reads (VERBOSE plans name the
// schema), once each.
void scanned_relations(const json& plan, std::vector<std::string>* out) {
  if (!plan.is_object()) return;
  if (plan.contains("Relation Name") && plan.contains("Schema") &&
      plan.value("Node Type", "") != "ModifyTable") {
    std::string rel = plan.value("Schema", "") + "." + plan.value("Relation Name", "");
    if (std::find(out->begin(), out->end(), rel) == out->end()) out->push_back(std::move(rel));
  }
  if (plan.contains("Plans") && plan["Plans"].is_array()) {
    for (const json& c : plan["Plans"]) scanned_relations(c, out);
  }
}

bool identifier_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_';
}

}  // namespace

namespace {

// A value EXPLAIN prints for one comparison side that reads no column: a parameter, a number
// or a string literal without quotes inside, each maybe in parentheses and cast
// (`$2`, `($1)::integer`, `'x'::text`, `42`, `'2024-01-01'::date`).
bool plain_value(std::string_view v) {
  const size_t cast = v.rfind("::");
  if (cast != std::string_view::npos) {
    std::string_view type = v.substr(cast + 2);
    if (type.empty() || !std::all_of(type.begin(), type.end(), [](char ch) {
          return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == ' ';
        })) {
      return false;
    }
    v = v.substr(0, cast);
  }
  if (v.size() >= 2 && v.front() == '(' && v.back() == ')') v = v.substr(1, v.size() - 2);
  if (v.empty()) return false;
  if (v.front() == '$') {
    return v.size() > 1 &&
           std::all_of(v.begin() + 1, v.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
  }
  if (v.front() == '\'') {
    return v.size() >= 2 && v.back() == '\'' &&
           v.substr(1, v.size() - 2).find('\'') == std::string_view::npos;
  }
  if (v.front() == '-') v = v.substr(1);
  return !v.empty() && std::all_of(v.begin(), v.end(),
                                   [](char ch) { return (ch >= '0' && ch <= '9') || ch == '.'; });
}

}  // namespace

std::vector<std::string> equated_columns(std::string_view cond) {
  // EXPLAIN prints each comparison in parentheses, an AND of them in one more pair:
  // "(k = $1)", "((a = 1) AND (b = 2))".
  auto strip = [](std::string_view v) -> std::string_view {
    if (v.size() >= 2 && v.front() == '(' && v.back() == ')') return v.substr(1, v.size() - 2);
    return {};
  };
  std::vector<std::string_view> parts;
  std::string_view inner = strip(cond);
  if (inner.empty()) return {};
  if (inner.front() == '(') {
    // Parenthesised conjuncts joined by AND at depth zero; anything else at that depth (an OR,
    // an operator) makes it not an AND: nothing. Quotes end the reading (fail closed).
    if (inner.find('\'') != std::string_view::npos) return {};
    int depth = 0;
    size_t start = 0;
    for (size_t i = 0; i < inner.size(); ++i) {
      if (inner[i] == '(') ++depth;
      if (inner[i] == ')') --depth;
      if (depth < 0) return {};
      if (depth == 0) {
        if (inner[start] != '(') return {};
        parts.push_back(inner.substr(start, i + 1 - start));
        if (i + 1 == inner.size()) break;
        if (inner.substr(i + 1, 5) != " AND ") return {};
        start = i + 6;
        i = start - 1;
      }
    }
    if (depth != 0) return {};
    for (std::string_view& p : parts) p = strip(p);
  } else {
    parts.push_back(inner);
  }
  std::vector<std::string> columns;
  for (std::string_view p : parts) {
    // Conjuncts other than `column = value` only restrict further: they are skipped.
    const size_t eq = p.find(" = ");
    if (eq == std::string_view::npos || eq == 0) continue;
    std::string_view left = p.substr(0, eq);
    if (!plain_value(p.substr(eq + 3))) continue;
    // The column: an identifier, maybe qualified with the table's name or alias.
    const size_t dot = left.rfind('.');
    std::string_view column = dot == std::string_view::npos ? left : left.substr(dot + 1);
    if (column.empty() || !std::all_of(column.begin(), column.end(), identifier_char) ||
        !std::all_of(left.begin(), left.end(),
                     [](char ch) { return identifier_char(ch) || ch == '.'; })) {
      continue;
    }
    columns.emplace_back(column);
  }
  return columns;
}

namespace {

void collect_modify_nodes(const json& plan, std::vector<ModifyNode>* out) {
  if (!plan.is_object()) return;
  const json* children =
      plan.contains("Plans") && plan["Plans"].is_array() ? &plan["Plans"] : nullptr;
  if (plan.value("Node Type", "") == "ModifyTable") {
    ModifyNode m;
    m.schema = plan.value("Schema", "");
    m.relation = plan.value("Relation Name", "");
    m.operation = plan.value("Operation", "");
    m.conflict_update = plan.value("Conflict Resolution", "") == "UPDATE";
    if (children != nullptr) {
      for (const json& c : *children) {
        std::string rel = c.is_object() ? c.value("Parent Relationship", "") : "";
        if (rel == "InitPlan" || rel == "SubPlan") continue;
        if (c.contains("Plan Rows") && c["Plan Rows"].is_number()) {
          m.rows = static_cast<int64_t>(std::llround(c["Plan Rows"].get<double>()));
        }
        // One scan of the written table itself (run once, as the ModifyTable's input): the
        // columns its conditions equate to one value.
        const std::string node = c.value("Node Type", "");
        if ((node == "Seq Scan" || node == "Index Scan" || node == "Index Only Scan") &&
            c.value("Relation Name", "") == m.relation && c.value("Schema", "") == m.schema) {
          for (const char* key : {"Index Cond", "Filter"}) {
            if (!c.contains(key) || !c[key].is_string()) continue;
            for (std::string& col : equated_columns(c[key].get<std::string>())) {
              m.equated_columns.push_back(std::move(col));
            }
          }
        }
        break;
      }
    }
    if (children != nullptr) {
      for (const json& c : *children) scanned_relations(c, &m.scanned);
    }
    out->push_back(std::move(m));
  }
  if (children != nullptr) {
    for (const json& c : *children) collect_modify_nodes(c, out);
  }
}

// The top node of every plan of an `EXPLAIN (FORMAT JSON)` output: one per query the statement
// is rewritten into (a rule on a written table adds queries before or after the statement's
// own).
Result<std::vector<json>> plans_of(const std::string& explain_json) {
  json j = json::parse(explain_json, nullptr, false);
  if (j.is_object()) j = json::array({j});
  std::vector<json> out;
  if (j.is_array()) {
    for (const json& e : j) {
      if (!e.is_object() || !e.contains("Plan") || !e["Plan"].is_object()) {
        return invalid_argument("EXPLAIN output is not a plan");
      }
      out.push_back(e["Plan"]);
    }
  }
  if (out.empty()) return invalid_argument("EXPLAIN output is not a plan");
  return out;
}

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

std::string_view action_name(char a) {
  switch (a) {
    case 'c':
      return "CASCADE";
    case 'n':
      return "SET NULL";
    case 'd':
      return "SET DEFAULT";
    default:
      return "NO ACTION";
  }
}

// Foreign keys that act on the rows referencing one table (or its partition tree), with a
// bound per referenced row (see effect_probe.h). $1 schema, $2 table.
constexpr const char* kCascadeSql =
    "WITH r AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "   WHERE n.nspname = $1 AND c.relname = $2),"
    " tree AS (SELECT oid FROM r UNION SELECT t.relid FROM r,"
    "   pg_partition_tree(pg_partition_root(r.oid)) t)"
    " SELECT cn.nspname, cc.relname, k.confdeltype::text, k.confupdtype::text,"
    // The rows C has now: like the planner, reltuples scaled to the table's current size
    // (it may have grown since its last ANALYZE), never less than reltuples.
    "   CASE WHEN cc.relkind = 'r' AND cc.reltuples >= 0 AND cc.relpages > 0"
    "     THEN greatest(cc.reltuples::float8, cc.reltuples::float8 / cc.relpages"
    "       * (pg_relation_size(cc.oid) / current_setting('block_size')::float8))"
    "     ELSE cc.reltuples::float8 END,"
    "   (SELECT min(CASE WHEN s.n_distinct > 0 THEN greatest(coalesce((SELECT max(f)"
    "       FROM unnest(s.most_common_freqs) f), 0), 1.0 / s.n_distinct)"
    "     WHEN s.n_distinct < 0 AND cc.reltuples > 0 THEN greatest(coalesce((SELECT max(f)"
    "       FROM unnest(s.most_common_freqs) f), 0), 1.0 / (-s.n_distinct * cc.reltuples))"
    "     END)"
    "    FROM pg_attribute a JOIN pg_stats s ON s.schemaname = cn.nspname"
    "     AND s.tablename = cc.relname AND s.attname = a.attname"
    "    WHERE a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey))::float8,"
    // Empty at its last ANALYZE (or VACUUM), filled since: its rows are not known.
    "   cc.relkind = 'r' AND cc.relpages = 0 AND pg_relation_size(cc.oid) > 0"
    " FROM pg_constraint k JOIN pg_class cc ON cc.oid = k.conrelid"
    " JOIN pg_namespace cn ON cn.oid = cc.relnamespace"
    " WHERE k.contype = 'f' AND k.conparentid = 0 AND k.confrelid IN (SELECT oid FROM tree)"
    "   AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))"
    " ORDER BY 1, 2";

// pg_trigger.tgtype bits of the events a trigger fires on (PostgreSQL's TRIGGER_TYPE_*).
constexpr int kTriggerInsert = 1 << 2;
constexpr int kTriggerDelete = 1 << 3;
constexpr int kTriggerUpdate = 1 << 4;

// A table the statement or its foreign keys write, with the trigger events that writing fires.
struct WrittenTable {
  std::string schema;
  std::string table;
  int events = 0;
};

void add_written(std::vector<WrittenTable>* written, const std::string& schema,
                 const std::string& table, int events) {
  for (WrittenTable& w : *written) {
    if (w.schema == schema && w.table == table) {
      w.events |= events;
      return;
    }
  }
  written->push_back({schema, table, events});
}

// Enabled user triggers (not a foreign key's internal ones) of one table, its partitions and
// inheritance children (a write to the parent reaches them) that fire on any of the events
// $3 (tgtype bits). $1 schema, $2 table.
constexpr const char* kTriggerSql =
    "WITH RECURSIVE r AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n"
    "   ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2"
    "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN r ON i.inhparent = r.oid)"
    " SELECT t.tgname, tn.nspname || '.' || tc.relname, pn.nspname, p.proname"
    " FROM pg_trigger t JOIN r ON t.tgrelid = r.oid JOIN pg_class tc ON tc.oid = t.tgrelid"
    " JOIN pg_namespace tn ON tn.oid = tc.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid"
    " JOIN pg_namespace pn ON pn.oid = p.pronamespace"
    " WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND (t.tgtype::int & $3::int) <> 0"
    " ORDER BY 2, 1";

// Appends to `est` the triggers of `w` (kTriggerSql), once each.
// REQUIRES: the probe's transaction is open on `conn`.
Status add_triggers(PGconn* conn, const WrittenTable& w, RowEstimate* est) {
  const std::string events = std::to_string(w.events);
  const char* params[] = {w.schema.c_str(), w.table.c_str(), events.c_str()};
  Res r(PQexecParams(conn, kTriggerSql, 3, nullptr, params, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    return unavailable("effect probe catalog lookup (triggers): " + trimmed_error(r.get(), conn));
  }
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    TriggerRef t{PQgetvalue(r.get(), i, 0), PQgetvalue(r.get(), i, 1), PQgetvalue(r.get(), i, 2),
                 PQgetvalue(r.get(), i, 3)};
    auto same = [&](const TriggerRef& o) {
      return o.trigger == t.trigger && o.relation == t.relation;
    };
    if (std::none_of(est->triggers.begin(), est->triggers.end(), same)) {
      est->triggers.push_back(std::move(t));
    }
  }
  return Status::ok();
}

// The tables of one table's tree (itself, its partitions and inheritance children) with their
// statistics and current size in pages. $1 schema, $2 table.
constexpr const char* kStatisticsSql =
    "WITH RECURSIVE r AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n"
    "   ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2"
    "  UNION SELECT i.inhrelid FROM pg_inherits i JOIN r ON i.inhparent = r.oid)"
    " SELECT n.nspname || '.' || c.relname,"
    // No column statistics (never analysed — VACUUM alone sets reltuples, not them — or
    // empty at its last ANALYZE, which stores none) but rows now.
    "   pg_relation_size(c.oid) > 0 AND NOT EXISTS (SELECT 1 FROM pg_stats s"
    "     WHERE s.schemaname = n.nspname AND s.tablename = c.relname),"
    "   pg_relation_size(c.oid) / current_setting('block_size')::int8,"
    "   (current_setting('block_size')::int8 - 24) / 28,"  // MaxHeapTuplesPerPage
    // Rows at the last ANALYZE, rows inserted, updated or deleted since (committed and reported
    // to the statistics system), live rows now, dead rows now, whether a VACUUM ran after the
    // last ANALYZE.
    "   greatest(c.reltuples, 0)::float8,"
    "   coalesce(pg_stat_get_mod_since_analyze(c.oid), 0)::float8,"
    "   coalesce(pg_stat_get_live_tuples(c.oid), 0)::float8,"
    "   coalesce(pg_stat_get_dead_tuples(c.oid), 0)::float8,"
    "   coalesce(greatest(pg_stat_get_last_vacuum_time(c.oid),"
    "                     pg_stat_get_last_autovacuum_time(c.oid)) >"
    "            greatest(pg_stat_get_last_analyze_time(c.oid),"
    "                     pg_stat_get_last_autoanalyze_time(c.oid)), false)"
    " FROM r JOIN pg_class c ON c.oid = r.oid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'm') ORDER BY 1";

// Statistics that exist describe the rows of the last ANALYZE. A tree changed by more rows
// since than autovacuum's default trigger for a new ANALYZE (50 rows + 10% of the rows) no
// longer estimates a predicate over its rows: `UPDATE t SET k = 1` on every row, then
// `DELETE FROM t WHERE k = 1` is estimated at the few rows k = 1 had.
constexpr double kChangedRowsBase = 50;
constexpr double kChangedRowsShare = 0.1;

// The key columns of each unique index of table $1.$2 that holds at every moment for every
// row: valid, not deferrable, not partial, over plain columns (no expressions); one row per
// (index, column).
constexpr const char* kUniqueKeysSql =
    "SELECT i.indexrelid::text, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " JOIN pg_attribute a ON a.attrelid = i.indrelid"
    "   AND a.attnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1])"
    " WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indisvalid"
    "   AND i.indimmediate AND i.indpred IS NULL"
    "   AND 0 <> ALL ((i.indkey::int2[])[0:i.indnkeyatts - 1])"
    " ORDER BY 1";

// True when `m`'s input is one scan of the written table whose conditions equate every key
// column of one of its unique indexes to one value: it changes at most one row, whatever the
// statistics say.
// REQUIRES: the probe's transaction is open on `conn`.
Result<bool> changes_one_row_by_key(PGconn* conn, const ModifyNode& m) {
  if (m.equated_columns.empty()) return false;
  const char* params[] = {m.schema.c_str(), m.relation.c_str()};
  Res r(PQexecParams(conn, kUniqueKeysSql, 2, nullptr, params, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    return unavailable("effect probe catalog lookup (unique indexes): " +
                       trimmed_error(r.get(), conn));
  }
  const int n = PQntuples(r.get());
  for (int i = 0; i < n;) {
    const std::string index = PQgetvalue(r.get(), i, 0);
    bool covered = true;
    for (; i < n && index == PQgetvalue(r.get(), i, 0); ++i) {
      const std::string key = PQgetvalue(r.get(), i, 1);
      covered = covered && std::find(m.equated_columns.begin(), m.equated_columns.end(), key) !=
                               m.equated_columns.end();
    }
    if (covered) return true;
  }
  return false;
}

struct TreeStatistics {
  std::string stale;     // a member with rows but no statistics, "schema.table"; "" for none
  int64_t pages = 0;     // heap pages of the tree
  int64_t capacity = 0;  // the most rows they can hold
  double analysed_rows = 0;  // reltuples at the members' last ANALYZE (or VACUUM)
  double modified = 0;       // rows inserted, updated or deleted since their last ANALYZE
  double live = 0;           // rows now: the larger of live rows and analysed_rows
  // Changed since its statistics by more than kChangedRowsBase + kChangedRowsShare of its rows.
  bool changed() const { return modified > kChangedRowsBase + kChangedRowsShare * analysed_rows; }
};

// Without column statistics (never analysed, or empty at its last ANALYZE and filled since) the
// planner guesses a predicate's selectivity (`v = 'x'` as 0.5% of the table whatever it
// matches): the bound is then what the written tree's pages can hold at most.
// REQUIRES: the probe's transaction is open on `conn`.
Result<TreeStatistics> tree_statistics(PGconn* conn, const std::string& schema,
                                       const std::string& table) {
  const char* params[] = {schema.c_str(), table.c_str()};
  Res r(PQexecParams(conn, kStatisticsSql, 2, nullptr, params, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    return unavailable("effect probe catalog lookup (statistics): " + trimmed_error(r.get(), conn));
  }
  TreeStatistics out;
  int64_t per_page = 0;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    if (std::string(PQgetvalue(r.get(), i, 1)) == "t" && out.stale.empty()) {
      out.stale = PQgetvalue(r.get(), i, 0);
    }
    out.pages += std::strtoll(PQgetvalue(r.get(), i, 2), nullptr, 10);
    per_page = std::strtoll(PQgetvalue(r.get(), i, 3), nullptr, 10);
    const double analysed = std::strtod(PQgetvalue(r.get(), i, 4), nullptr);
    const double live = std::strtod(PQgetvalue(r.get(), i, 6), nullptr);
    const double dead = std::strtod(PQgetvalue(r.get(), i, 7), nullptr);
    const bool vacuumed_since = std::string(PQgetvalue(r.get(), i, 8)) == "t";
    double modified = std::strtod(PQgetvalue(r.get(), i, 5), nullptr);
    // Rows loaded in the ANALYZE's own transaction are in its statistics, yet PostgreSQL counts
    // them as changed since it once it commits. Until a VACUUM clears them, the rows updated or
    // deleted since are dead rows, and the rows inserted since are those beyond the ones
    // ANALYZE saw: count those when fewer.
    if (!vacuumed_since) modified = std::min(modified, dead + std::abs(live - analysed));
    out.analysed_rows += analysed;
    out.modified += modified;
    out.live += std::max(analysed, live);
  }
  out.capacity = out.pages * per_page;
  return out;
}

// Adds to `est` the rows that foreign keys change when `rows` rows of schema.table are deleted
// and/or updated, recursively. `path`: the tables of this cascade chain (cycle detection).
// Every table a cascade changes is added to `written`.
// REQUIRES: the probe's transaction is open on `conn`.
Status add_cascades(PGconn* conn, const std::string& schema, const std::string& table, bool deletes,
                    bool updates, double rows, std::vector<std::string>* path, RowEstimate* est,
                    std::vector<WrittenTable>* written) {
  if (rows <= 0 || (!deletes && !updates)) return Status::ok();
  const std::string from = schema + "." + table;
  if (static_cast<int>(path->size()) > kMaxCascadeDepth) {
    return failed_precondition("foreign keys cascade more than " +
                               std::to_string(kMaxCascadeDepth) + " tables deep from " +
                               path->front() + ": no bound on the rows they change");
  }
  const char* params[] = {schema.c_str(), table.c_str()};
  Res r(PQexecParams(conn, kCascadeSql, 2, nullptr, params, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    return unavailable("effect probe catalog lookup (foreign keys): " +
                       trimmed_error(r.get(), conn));
  }
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    const std::string cs = PQgetvalue(r.get(), i, 0), ct = PQgetvalue(r.get(), i, 1);
    const char del = PQgetvalue(r.get(), i, 2)[0], upd = PQgetvalue(r.get(), i, 3)[0];
    const bool del_acts = deletes && (del == 'c' || del == 'n' || del == 'd');
    const bool upd_acts = updates && (upd == 'c' || upd == 'n' || upd == 'd');
    if (!del_acts && !upd_acts) continue;
    const std::string child = cs + "." + ct;
    const std::string how = del_acts ? "ON DELETE " + std::string(action_name(del))
                                     : "ON UPDATE " + std::string(action_name(upd));
    if (std::find(path->begin(), path->end(), child) != path->end()) {
      return failed_precondition("foreign keys cascade in a cycle (" + how + " from " + from +
                                 " back to " + child + "): no bound on the rows they change");
    }
    const double reltuples = std::strtod(PQgetvalue(r.get(), i, 4), nullptr);
    if (reltuples < 0) {
      return failed_precondition(child + " (" + how + " from " + from +
                                 ") has never been analysed: no bound on the rows the "
                                 "foreign key changes there (run ANALYZE " +
                                 child + ")");
    }
    if (std::string(PQgetvalue(r.get(), i, 6)) == "t") {
      return failed_precondition(child + " (" + how + " from " + from +
                                 ") had no rows at its last ANALYZE and has rows now: no bound "
                                 "on the rows the foreign key changes there (run ANALYZE " +
                                 child + ")");
    }
    double changed = reltuples;  // no statistics: every row of the child
    if (!PQgetisnull(r.get(), i, 5)) {
      changed =
          std::min(reltuples, rows * std::strtod(PQgetvalue(r.get(), i, 5), nullptr) * reltuples);
    }
    const int64_t n = static_cast<int64_t>(std::ceil(changed));
    if (n <= 0) continue;
    est->rows += n;
    est->cascaded += n;
    if (!est->cascades.empty()) est->cascades += ", ";
    est->cascades += with_commas(n) + " in " + child + " (" + how + " from " + from + ")";
    // Deleted child rows cascade as deletes; SET NULL / SET DEFAULT and ON UPDATE CASCADE
    // update them (their referencing keys may cascade on).
    const bool child_deletes = del_acts && del == 'c';
    const bool child_updates = (del_acts && del != 'c') || upd_acts;
    add_written(written, cs, ct,
                (child_deletes ? kTriggerDelete : 0) | (child_updates ? kTriggerUpdate : 0));
    path->push_back(child);
    Status s =
        add_cascades(conn, cs, ct, child_deletes, child_updates, changed, path, est, written);
    path->pop_back();
    if (!s.is_ok()) return s;
  }
  return Status::ok();
}

}  // namespace

Result<std::vector<ModifyNode>> modify_nodes_from_explain(const std::string& explain_json) {
  auto plans = plans_of(explain_json);
  if (!plans.is_ok()) return plans.status();
  std::vector<ModifyNode> out;
  for (const json& plan : *plans) collect_modify_nodes(plan, &out);
  return out;
}

struct PgEffectProbe::Connection {
  std::mutex mu;
  std::string conninfo;  // holds the password: never log
  PGconn* conn = nullptr;
  ~Connection() {
    if (conn != nullptr) PQfinish(conn);
  }
  // REQUIRES: mu held.
  Status ensure() {
    if (conn != nullptr && PQstatus(conn) == CONNECTION_OK) return Status::ok();
    if (conn != nullptr) PQfinish(conn);
    conn = PQconnectdb(conninfo.c_str());
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
      std::string msg = conn != nullptr ? PQerrorMessage(conn) : "out of memory";
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      if (conn != nullptr) PQfinish(conn);
      conn = nullptr;
      return unavailable("effect probe connection failed: " + msg);
    }
    return Status::ok();
  }
  // REQUIRES: mu held. Runs commands of pgwarden's own (never agent SQL).
  Status exec(const char* sql) {
    Res r(PQexec(conn, sql));
    if (!command_ok(r.get())) return unavailable("effect probe: " + trimmed_error(r.get(), conn));
    return Status::ok();
  }
  // REQUIRES: mu held. Ends whatever transaction is open; a connection that cannot is dropped
  // (the server then rolls the transaction back).
  void reset() {
    Res r(PQexec(conn, "ROLLBACK"));
    Res d(PQexec(conn, "DEALLOCATE ALL"));
    if (!command_ok(r.get()) || !command_ok(d.get())) {
      PQfinish(conn);
      conn = nullptr;
    }
  }
};

Result<int64_t> modify_rows_from_explain(const std::string& explain_json) {
  auto plans = plans_of(explain_json);
  if (!plans.is_ok()) return plans.status();
  int64_t total = 0;
  for (const json& plan : *plans) {
    int64_t sum = 0;
    bool found = false;
    sum_modify_rows(plan, &sum, &found);
    if (!found) {
      if (!plan.contains("Plan Rows") || !plan["Plan Rows"].is_number()) {
        return invalid_argument("EXPLAIN output has no row estimate");
      }
      sum = static_cast<int64_t>(std::llround(plan["Plan Rows"].get<double>()));
    }
    total += sum;
  }
  return total;
}

PgEffectProbe::PgEffectProbe() = default;
PgEffectProbe::~PgEffectProbe() = default;

Result<std::shared_ptr<PgEffectProbe::Connection>> PgEffectProbe::connection_for(
    const config::Target& target) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string key = settings_key(target);
  if (auto it = connections_.find(key); it != connections_.end()) return it->second;
  auto secret = vault::read_secret(target.credential);
  if (!secret.is_ok()) {
    return unavailable("cannot read the credential for target " + target.name + " (effect probe)");
  }
  for (auto it = connections_.begin(); it != connections_.end();) {
    it = it->first.substr(0, it->first.find('\n')) == target.name ? connections_.erase(it)
                                                                  : std::next(it);
  }
  auto c = std::make_shared<Connection>();
  // A later keyword wins in a libpq conninfo string.
  c->conninfo =
      metadata_conninfo(target, secret->view()) + " application_name='pgwarden-cp effect probe'";
  connections_[key] = c;
  return c;
}

Result<RowEstimate> PgEffectProbe::estimate_rows(const config::Target& target,
                                                 const std::string& sql) {
  auto c = connection_for(target);
  if (!c.is_ok()) return c.status();
  Connection& conn = **c;
  std::lock_guard<std::mutex> lock(conn.mu);
  PGW_RETURN_IF_ERROR(conn.ensure());
  Status begun = conn.exec(
      "BEGIN READ ONLY; SET LOCAL statement_timeout = 1000; "
      "SET LOCAL plan_cache_mode = force_generic_plan");
  if (!begun.is_ok()) {
    conn.reset();
    return begun;
  }
  // The extended protocol takes exactly one statement: `sql` cannot smuggle a second one.
  const std::string prepare = std::string("PREPARE ") + kProbeName + " AS " + sql;
  Res p(PQexecParams(conn.conn, prepare.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0));
  if (!command_ok(p.get())) {
    std::string msg = trimmed_error(p.get(), conn.conn);
    conn.reset();
    return invalid_argument("the planner could not plan the statement: " + msg);
  }
  Res d(PQdescribePrepared(conn.conn, kProbeName));
  int nparams = command_ok(d.get()) ? PQnparams(d.get()) : 0;
  // VERBOSE: ModifyTable nodes then name their relation's schema (for the cascades).
  std::string explain = std::string("EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE ") + kProbeName;
  for (int i = 0; i < nparams; ++i) explain += i == 0 ? "(NULL" : ", NULL";
  if (nparams > 0) explain += ")";
  Res e(PQexec(conn.conn, explain.c_str()));
  std::string text;
  Status failed = Status::ok();
  if (PQresultStatus(e.get()) != PGRES_TUPLES_OK) {
    failed = invalid_argument("the planner could not plan the statement: " +
                              trimmed_error(e.get(), conn.conn));
  } else {
    for (int i = 0; i < PQntuples(e.get()); ++i) text += PQgetvalue(e.get(), i, 0);
  }
  RowEstimate est;
  if (failed.is_ok()) {
    auto rows = modify_rows_from_explain(text);
    auto nodes = modify_nodes_from_explain(text);
    if (!rows.is_ok()) {
      failed = rows.status();
    } else if (!nodes.is_ok()) {
      failed = nodes.status();
    } else {
      est.rows = *rows;
      std::vector<WrittenTable> written;
      for (const ModifyNode& m : *nodes) {
        const bool deletes = m.operation == "Delete" || m.operation == "Merge";
        const bool updates = m.operation == "Update" || m.operation == "Merge" || m.conflict_update;
        const bool inserts = m.operation == "Insert" || m.operation == "Merge";
        if (m.schema.empty()) {
          failed = failed_precondition("the plan does not name the schema of " + m.relation);
          break;
        }
        add_written(&written, m.schema, m.relation,
                    (inserts ? kTriggerInsert : 0) | (deletes ? kTriggerDelete : 0) |
                        (updates ? kTriggerUpdate : 0));
        int64_t rows_changed = m.rows;
        if (m.operation == "Update" || m.operation == "Delete" || m.operation == "Merge") {
          // The rows a predicate chooses are estimated from the statistics of the written
          // table and of every table the plan reads to choose them (joins, sub-selects).
          auto target = tree_statistics(conn.conn, m.schema, m.relation);
          if (!target.is_ok()) {
            failed = target.status();
            break;
          }
          std::string stale = target->stale;
          std::string changed_read;  // a table read to choose the rows, changed since ANALYZE
          for (size_t i = 0; stale.empty() && i < m.scanned.size(); ++i) {
            const size_t dot = m.scanned[i].find('.');
            auto read = tree_statistics(conn.conn, m.scanned[i].substr(0, dot),
                                        m.scanned[i].substr(dot + 1));
            if (!read.is_ok()) {
              failed = read.status();
              break;
            }
            stale = read->stale;
            if (read->changed() && changed_read.empty()) changed_read = m.scanned[i];
          }
          if (!failed.is_ok()) break;
          const std::string written_table = m.schema + "." + m.relation;
          bool by_key = false;
          if (stale.empty() && (target->changed() || !changed_read.empty())) {
            auto one = changes_one_row_by_key(conn.conn, m);
            if (!one.is_ok()) {
              failed = one.status();
              break;
            }
            by_key = *one;
          }
          if (stale.empty() && !by_key && (target->changed() || !changed_read.empty())) {
            // Statistics older than the data: the rows the predicate chooses among the rows
            // of the last ANALYZE (the plan's estimate) plus every row written since, which
            // may all match now — or, when a table read to choose the rows changed, any row
            // of the written table. Never more than its rows now or its pages can hold.
            const double rows_now = std::min(target->live, static_cast<double>(target->capacity));
            const double bound =
                changed_read.empty()
                    ? std::min(static_cast<double>(rows_changed) + target->modified, rows_now)
                    : rows_now;
            if (bound > static_cast<double>(rows_changed)) {
              const auto counted = static_cast<int64_t>(std::ceil(bound));
              est.rows += counted - rows_changed;
              rows_changed = counted;
              const std::string& table = changed_read.empty() ? written_table : changed_read;
              const TreeStatistics& t = *target;
              est.unanalysed +=
                  (est.unanalysed.empty() ? "" : "; ") + table +
                  " changed since its last ANALYZE (" +
                  (changed_read.empty()
                       ? with_commas(static_cast<int64_t>(t.modified)) + " rows written, of " +
                             with_commas(static_cast<int64_t>(t.analysed_rows))
                       : std::string("more than 10% of its rows written")) +
                  "): its statistics no longer estimate the predicate, so the write to " +
                  written_table + " is counted as " + with_commas(counted) +
                  " rows (run ANALYZE for an estimate)";
            }
          }
          if (!stale.empty() && target->capacity > rows_changed) {
            est.rows += target->capacity - rows_changed;
            rows_changed = target->capacity;
            est.unanalysed +=
                (est.unanalysed.empty() ? "" : "; ") + stale +
                " has rows but no statistics (never analysed, or empty at its last ANALYZE): "
                "the write to " +
                m.schema + "." + m.relation + " is counted as the most rows its " +
                with_commas(target->pages) + " pages can hold, " + with_commas(target->capacity) +
                " (run ANALYZE for an estimate)";
          }
        }
        std::vector<std::string> path{m.schema + "." + m.relation};
        failed = add_cascades(conn.conn, m.schema, m.relation, deletes, updates,
                              static_cast<double>(rows_changed), &path, &est, &written);
        if (!failed.is_ok()) break;
      }
      for (size_t i = 0; failed.is_ok() && i < written.size(); ++i) {
        failed = add_triggers(conn.conn, written[i], &est);
      }
    }
  }
  conn.reset();
  if (!failed.is_ok()) return failed;
  return est;
}

Result<std::string> PgEffectProbe::irreversible_effects(const config::Target& target,
                                                        const std::vector<std::string>& relations,
                                                        bool adds_rows) {
  static const char* kSql =
      "SELECT c.relkind::text,"
      " EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),"
      " EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> "
      "'_RETURN'),"
      " EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
      "   AND NOT a.attisdropped AND a.attidentity <> '')"
      "  OR EXISTS (SELECT 1 FROM pg_attrdef d WHERE d.adrelid = c.oid"
      "   AND pg_get_expr(d.adbin, d.adrelid) LIKE '%nextval(%'),"
      " EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_trigger t ON t.tgrelid = k.conrelid"
      "   AND NOT t.tgisinternal WHERE k.confrelid = c.oid AND k.contype = 'f'"
      "   AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd')))"
      " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
      " WHERE n.nspname = $1 AND c.relname = $2";
  auto c = connection_for(target);
  if (!c.is_ok()) return c.status();
  Connection& conn = **c;
  std::lock_guard<std::mutex> lock(conn.mu);
  PGW_RETURN_IF_ERROR(conn.ensure());
  for (const std::string& rel : relations) {
    size_t dot = rel.find('.');
    std::string schema = dot == std::string::npos ? "public" : rel.substr(0, dot);
    std::string name = dot == std::string::npos ? rel : rel.substr(dot + 1);
    const char* params[] = {schema.c_str(), name.c_str()};
    Res r(PQexecParams(conn.conn, kSql, 2, nullptr, params, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      std::string msg = trimmed_error(r.get(), conn.conn);
      conn.reset();
      return unavailable("effect probe catalog lookup: " + msg);
    }
    if (PQntuples(r.get()) == 0) {
      return rel + " was not found by pgwarden-cp (another search_path or a temporary table)";
    }
    auto yes = [&](int col) { return std::string(PQgetvalue(r.get(), 0, col)) == "t"; };
    std::string kind = PQgetvalue(r.get(), 0, 0);
    if (kind != "r" && kind != "p") {
      return rel + " is not a plain table (relkind " + kind +
             "): writes to it may reach other systems";
    }
    if (yes(1)) return rel + " has triggers, which may do what a rollback cannot undo";
    if (yes(2)) return rel + " has rules, which may rewrite the statement";
    if (adds_rows && yes(3)) {
      return rel + " has identity or serial columns: a dry run would advance their sequences";
    }
    if (yes(4)) {
      return "tables whose foreign keys cascade from " + rel +
             " have triggers, which may do what a rollback cannot undo";
    }
  }
  return std::string();
}

Result<int64_t> PgEffectProbe::dry_run(const config::Target& target, const std::string& sql) {
  auto c = connection_for(target);
  if (!c.is_ok()) return c.status();
  Connection& conn = **c;
  std::lock_guard<std::mutex> lock(conn.mu);
  PGW_RETURN_IF_ERROR(conn.ensure());
  Status begun =
      conn.exec("BEGIN; SET LOCAL statement_timeout = 2000; SET LOCAL lock_timeout = 500");
  if (!begun.is_ok()) {
    conn.reset();
    return begun;
  }
  // Parse first (one statement, unnamed): a statement with bind parameters is not run.
  Res parsed(PQprepare(conn.conn, "", sql.c_str(), 0, nullptr));
  if (command_ok(parsed.get())) {
    Res described(PQdescribePrepared(conn.conn, ""));
    if (command_ok(described.get()) && PQnparams(described.get()) > 0) {
      conn.reset();
      return failed_precondition("the statement has bind parameters, known only when it runs");
    }
  }
  Res r(command_ok(parsed.get())
            ? PQexecPrepared(conn.conn, "", 0, nullptr, nullptr, nullptr, 0)
            : PQexecParams(conn.conn, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0));
  const bool ok = command_ok(r.get());
  const std::string state = sqlstate_of(r.get());
  // The primary message and SQLSTATE only: a constraint violation's DETAIL holds the failing
  // row, masked columns included, and the note goes to reviewers, chat and the state store.
  const char* primary =
      r != nullptr ? PQresultErrorField(r.get(), PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const std::string msg = ok        ? ""
                          : primary ? std::string(primary) + " (SQLSTATE " + state + ")"
                                    : trimmed_error(r.get(), conn.conn);
  const int64_t rows = ok ? std::strtoll(PQcmdTuples(r.get()), nullptr, 10) : -1;
  conn.reset();
  if (ok) return rows;
  if (state == "57014") return failed_precondition("the dry run was stopped after 2 s");
  if (state == "55P03") {
    return failed_precondition("rows it would change are locked by an open transaction");
  }
  return failed_precondition("the dry run failed: " + msg);
}

Result<std::string> PgEffectProbe::plan_time_functions(const config::Target& target,
                                                       const std::vector<std::string>& names) {
  static const char* kSql =
      "SELECT n.nspname || '.' || p.proname FROM pg_proc p"
      " JOIN pg_namespace n ON n.oid = p.pronamespace"
      " WHERE n.nspname <> 'pg_catalog' AND p.provolatile IN ('i', 's')"
      " AND p.proname = ANY($1::text[]) ORDER BY 1 LIMIT 1";
  // A text[] literal: every element double-quoted, with " and \ escaped.
  std::string array = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    array += i == 0 ? "\"" : ",\"";
    for (char ch : names[i]) {
      if (ch == '"' || ch == '\\') array += '\\';
      array += ch;
    }
    array += '"';
  }
  array += "}";
  auto c = connection_for(target);
  if (!c.is_ok()) return c.status();
  Connection& conn = **c;
  std::lock_guard<std::mutex> lock(conn.mu);
  PGW_RETURN_IF_ERROR(conn.ensure());
  const char* params[] = {array.c_str()};
  Res r(PQexecParams(conn.conn, kSql, 1, nullptr, params, nullptr, nullptr, 0));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    std::string msg = trimmed_error(r.get(), conn.conn);
    conn.reset();
    return unavailable("effect probe catalog lookup: " + msg);
  }
  return PQntuples(r.get()) > 0 ? std::string(PQgetvalue(r.get(), 0, 0)) : std::string();
}

Result<std::vector<TriggerRef>> PgEffectProbe::insert_triggers(const config::Target& target,
                                                               const std::string& relation) {
  auto c = connection_for(target);
  if (!c.is_ok()) return c.status();
  Connection& conn = **c;
  std::lock_guard<std::mutex> lock(conn.mu);
  PGW_RETURN_IF_ERROR(conn.ensure());
  const size_t dot = relation.find('.');
  WrittenTable w{dot == std::string::npos ? "public" : relation.substr(0, dot),
                 dot == std::string::npos ? relation : relation.substr(dot + 1), kTriggerInsert};
  RowEstimate est;
  Status s = add_triggers(conn.conn, w, &est);
  if (!s.is_ok()) {
    conn.reset();
    return s;
  }
  return est.triggers;
}

}  // namespace pgwarden::server
