#include "controlplane/server/effect_probe.h"

#include <libpq-fe.h>

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
         std::string(config::upstream_tls_mode_name(t.tls_mode)) + "\n" + t.ca_file;
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

}  // namespace

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
  json j = json::parse(explain_json, nullptr, false);
  if (j.is_array() && !j.empty()) j = j[0];
  if (!j.is_object() || !j.contains("Plan") || !j["Plan"].is_object()) {
    return invalid_argument("EXPLAIN output is not a plan");
  }
  int64_t sum = 0;
  bool found = false;
  sum_modify_rows(j["Plan"], &sum, &found);
  if (found) return sum;
  const json& top = j["Plan"];
  if (!top.contains("Plan Rows") || !top["Plan Rows"].is_number()) {
    return invalid_argument("EXPLAIN output has no row estimate");
  }
  return static_cast<int64_t>(std::llround(top["Plan Rows"].get<double>()));
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

Result<int64_t> PgEffectProbe::estimate_rows(const config::Target& target, const std::string& sql) {
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
  std::string explain = std::string("EXPLAIN (FORMAT JSON) EXECUTE ") + kProbeName;
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
  conn.reset();
  if (!failed.is_ok()) return failed;
  return modify_rows_from_explain(text);
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

}  // namespace pgwarden::server
