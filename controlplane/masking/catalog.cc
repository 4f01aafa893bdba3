#include "controlplane/masking/catalog.h"

#include <libpq-fe.h>

#include <array>
#include <cstdlib>
#include <functional>
#include <set>

namespace pgwarden::maskplan {

namespace {

struct BuiltinType {
  uint32_t oid;
  TypeInfo info;
};

// From PostgreSQL's src/include/catalog/pg_type.dat (stable across versions).
const std::array<BuiltinType, 30> kBuiltinTypes = {{
    {16, {"bool", 'B'}},       {17, {"bytea", 'U'}},       {18, {"char", 'Z'}},
    {19, {"name", 'S'}},       {20, {"int8", 'N'}},        {21, {"int2", 'N'}},
    {23, {"int4", 'N'}},       {25, {"text", 'S'}},        {26, {"oid", 'N'}},
    {114, {"json", 'U'}},      {142, {"xml", 'U'}},        {650, {"cidr", 'I'}},
    {700, {"float4", 'N'}},    {701, {"float8", 'N'}},     {705, {"unknown", 'X'}},
    {774, {"macaddr8", 'U'}},  {829, {"macaddr", 'U'}},    {869, {"inet", 'I'}},
    {1042, {"bpchar", 'S'}},   {1043, {"varchar", 'S'}},   {1082, {"date", 'D'}},
    {1083, {"time", 'D'}},     {1114, {"timestamp", 'D'}}, {1184, {"timestamptz", 'D'}},
    {1186, {"interval", 'T'}}, {1266, {"timetz", 'D'}},    {1700, {"numeric", 'N'}},
    {2950, {"uuid", 'U'}},     {3802, {"jsonb", 'U'}},     {1009, {"_text", 'A'}},
}};

std::string oid_array_literal(const std::vector<uint32_t>& oids) {
  std::string s = "{";
  for (size_t i = 0; i < oids.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(oids[i]);
  }
  return s + "}";
}

// Runs a catalog query. When it fails because the server closed the connection (an idle
// timeout, a server restart, pg_terminate_backend), reconnects once and runs it again on the
// fresh connection; any other failure (or a failed reconnect) returns the failed result.
PGresult* exec_retrying(const std::function<Status()>& reconnect,
                        const std::function<PGconn*()>& conn, const char* sql, int nparams,
                        const char* const* params) {
  PGresult* r = PQexecParams(conn(), sql, nparams, nullptr, params, nullptr, nullptr, 0);
  if (PQresultStatus(r) == PGRES_TUPLES_OK || PQstatus(conn()) != CONNECTION_BAD) return r;
  if (!reconnect().is_ok()) return r;
  PQclear(r);
  return PQexecParams(conn(), sql, nparams, nullptr, params, nullptr, nullptr, 0);
}

}  // namespace

const TypeInfo* builtin_type(uint32_t type_oid) {
  for (const auto& t : kBuiltinTypes) {
    if (t.oid == type_oid) return &t.info;
  }
  return nullptr;
}

Result<std::vector<TableInfo>> Catalog::find_tables(const std::string&, const std::string&) {
  return unavailable("this catalog cannot look tables up by name");
}

struct PgCatalog::Connection {
  PGconn* conn = nullptr;
  ~Connection() {
    if (conn) PQfinish(conn);
  }
};

PgCatalog::PgCatalog(PgCatalogOptions options) : options_(std::move(options)) {}
PgCatalog::~PgCatalog() = default;

Result<PGresult*> PgCatalog::query(const char* sql, int nparams, const char* const* params,
                                   std::string_view what) {
  Status st = ensure_connected();
  if (!st.is_ok()) {
    ++catalog_errors_;
    return st;
  }
  ++catalog_queries_;
  PGresult* r = exec_retrying(
      [this] {
        conn_.reset();
        return ensure_connected();
      },
      [this] { return conn_->conn; }, sql, nparams, params);
  if (PQresultStatus(r) == PGRES_TUPLES_OK) return r;
  std::string msg = PQresultErrorMessage(r);
  PQclear(r);
  conn_.reset();  // reconnect next time: the session may be broken
  ++catalog_errors_;
  return unavailable(std::string(what) + " failed: " + msg);
}

Status PgCatalog::ensure_connected() {
  if (conn_ && PQstatus(conn_->conn) == CONNECTION_OK) return Status::ok();
  conn_.reset();
  auto c = std::make_unique<Connection>();
  c->conn = PQconnectdb(options_.conninfo.c_str());
  if (c->conn == nullptr || PQstatus(c->conn) != CONNECTION_OK) {
    std::string msg = c->conn ? PQerrorMessage(c->conn) : "out of memory";
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    return unavailable("mask plan metadata connection failed: " + msg);
  }
  std::string set = "SET statement_timeout = " + std::to_string(options_.statement_timeout_ms);
  PGresult* r = PQexec(c->conn, set.c_str());
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  if (!ok) return unavailable("mask plan metadata connection: cannot set statement_timeout");
  conn_ = std::move(c);
  return Status::ok();
}

Status PgCatalog::query_tables(const std::vector<uint32_t>& oids) {
  static constexpr char kSql[] =
      "SELECT a.attrelid::int8, n.nspname, c.relname, a.attnum, a.attname "
      "FROM pg_catalog.pg_attribute a "
      "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
      "WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped";
  std::string arr = oid_array_literal(oids);
  const char* params[1] = {arr.c_str()};
  auto q = query(kSql, 1, params, "mask plan catalog query");
  if (!q.is_ok()) return q.status();
  PGresult* r = *q;
  auto expires = Clock::now() + options_.ttl;
  for (uint32_t oid : oids) tables_[oid] = TableEntry{expires, false, {}};
  for (int i = 0; i < PQntuples(r); ++i) {
    uint32_t oid = static_cast<uint32_t>(std::strtoull(PQgetvalue(r, i, 0), nullptr, 10));
    auto& e = tables_[oid];
    e.exists = true;
    int16_t attnum = static_cast<int16_t>(std::atoi(PQgetvalue(r, i, 3)));
    e.columns[attnum] = ColumnName{PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 4)};
  }
  PQclear(r);
  return Status::ok();
}

Status PgCatalog::query_types(const std::vector<uint32_t>& oids) {
  static constexpr char kSql[] =
      "SELECT t.oid::int8, t.typname, t.typcategory FROM pg_catalog.pg_type t "
      "WHERE t.oid = ANY($1::oid[])";
  std::string arr = oid_array_literal(oids);
  const char* params[1] = {arr.c_str()};
  auto q = query(kSql, 1, params, "mask plan type query");
  if (!q.is_ok()) return q.status();
  PGresult* r = *q;
  auto expires = Clock::now() + options_.ttl;
  for (uint32_t oid : oids) types_[oid] = TypeEntry{expires, false, {}};
  for (int i = 0; i < PQntuples(r); ++i) {
    uint32_t oid = static_cast<uint32_t>(std::strtoull(PQgetvalue(r, i, 0), nullptr, 10));
    const char* cat = PQgetvalue(r, i, 2);
    types_[oid] = TypeEntry{expires, true, TypeInfo{PQgetvalue(r, i, 1), cat[0]}};
  }
  PQclear(r);
  return Status::ok();
}

Result<CatalogSnapshot> PgCatalog::resolve(const std::vector<uint32_t>& table_oids,
                                           const std::vector<uint32_t>& type_oids) {
  std::lock_guard lock(mu_);
  auto now = Clock::now();
  std::set<uint32_t> missing_tables, missing_types;
  for (uint32_t oid : table_oids) {
    if (oid == 0) continue;
    auto it = tables_.find(oid);
    if (it == tables_.end() || it->second.expires <= now) missing_tables.insert(oid);
  }
  for (uint32_t oid : type_oids) {
    if (builtin_type(oid) != nullptr) continue;
    auto it = types_.find(oid);
    if (it == types_.end() || it->second.expires <= now) missing_types.insert(oid);
  }
  if (missing_tables.empty() && missing_types.empty()) {
    ++catalog_cache_hits_;
  } else {
    Status st;
    if (!missing_tables.empty()) st = query_tables({missing_tables.begin(), missing_tables.end()});
    if (st.is_ok() && !missing_types.empty()) {
      st = query_types({missing_types.begin(), missing_types.end()});
    }
    if (!st.is_ok()) return st;
  }
  CatalogSnapshot snap;
  for (uint32_t oid : table_oids) {
    auto it = tables_.find(oid);
    if (it == tables_.end() || !it->second.exists) continue;
    for (const auto& [attnum, name] : it->second.columns) snap.columns[{oid, attnum}] = name;
  }
  for (uint32_t oid : type_oids) {
    if (const TypeInfo* b = builtin_type(oid)) {
      snap.types[oid] = *b;
      continue;
    }
    auto it = types_.find(oid);
    if (it != types_.end() && it->second.exists) snap.types[oid] = it->second.info;
  }
  return snap;
}

Result<std::vector<TableInfo>> PgCatalog::find_tables(const std::string& schema,
                                                      const std::string& name) {
  static constexpr char kSql[] =
      "SELECT c.oid::int8, n.nspname, c.relname, a.attnum, a.attname, a.atttypid::int8, "
      "a.attgenerated <> '' "
      "FROM pg_catalog.pg_class c "
      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
      "LEFT JOIN pg_catalog.pg_attribute a "
      "  ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
      "WHERE c.relname = $1 AND ($2 = '' OR n.nspname = $2) AND c.relkind IN ('r', 'p') "
      "ORDER BY c.oid, a.attnum";
  std::lock_guard lock(mu_);
  const char* params[2] = {name.c_str(), schema.c_str()};
  auto q = query(kSql, 2, params, "mask plan table lookup");
  if (!q.is_ok()) return q.status();
  PGresult* r = *q;
  std::vector<TableInfo> tables;
  for (int i = 0; i < PQntuples(r); ++i) {
    uint32_t oid = static_cast<uint32_t>(std::strtoull(PQgetvalue(r, i, 0), nullptr, 10));
    if (tables.empty() || tables.back().oid != oid) {
      tables.push_back(TableInfo{oid, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), {}});
    }
    if (PQgetisnull(r, i, 3)) continue;  // a table without columns
    tables.back().columns.push_back(
        TableColumn{static_cast<int16_t>(std::atoi(PQgetvalue(r, i, 3))), PQgetvalue(r, i, 4),
                    static_cast<uint32_t>(std::strtoull(PQgetvalue(r, i, 5), nullptr, 10)),
                    PQgetvalue(r, i, 6)[0] == 't'});
  }
  PQclear(r);
  return tables;
}

Result<std::vector<policy::CatalogRelation>> PgCatalog::relations(const std::string& schema,
                                                                  const std::string& name) {
  static constexpr char kSql[] =
      "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text, "
      "CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END, a.attname "
      "FROM pg_catalog.pg_class c "
      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
      "LEFT JOIN pg_catalog.pg_attribute a "
      "  ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
      "WHERE c.relname = $1 AND ($2 = '' OR n.nspname = $2) "
      "AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') "
      "ORDER BY n.nspname, c.oid, a.attnum";
  const std::string key = schema + "\n" + name;
  std::lock_guard lock(mu_);
  if (auto it = relations_.find(key); it != relations_.end() && it->second.expires > Clock::now()) {
    ++catalog_cache_hits_;
    return it->second.value;
  }
  const char* params[2] = {name.c_str(), schema.c_str()};
  auto q = query(kSql, 2, params, "lineage relation lookup");
  if (!q.is_ok()) return q.status();
  PGresult* r = *q;
  std::vector<policy::CatalogRelation> out;
  uint64_t last_oid = 0;
  for (int i = 0; i < PQntuples(r); ++i) {
    uint64_t oid = std::strtoull(PQgetvalue(r, i, 0), nullptr, 10);
    if (out.empty() || oid != last_oid) {
      policy::CatalogRelation rel;
      rel.schema = PQgetvalue(r, i, 1);
      rel.name = PQgetvalue(r, i, 2);
      rel.kind = PQgetvalue(r, i, 3)[0];
      if (!PQgetisnull(r, i, 4)) rel.view_definition = PQgetvalue(r, i, 4);
      out.push_back(std::move(rel));
      last_oid = oid;
    }
    if (!PQgetisnull(r, i, 5)) out.back().columns.emplace_back(PQgetvalue(r, i, 5));
  }
  PQclear(r);
  if (!out.empty()) relations_[key] = {Clock::now() + options_.ttl, out};
  return out;
}

Result<std::vector<std::string>> PgCatalog::function_schemas(const std::string& name) {
  static constexpr char kSql[] =
      "SELECT DISTINCT n.nspname FROM pg_catalog.pg_proc p "
      "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = $1 "
      "ORDER BY 1";
  std::lock_guard lock(mu_);
  if (auto it = functions_.find(name);
      it != functions_.end() && it->second.expires > Clock::now()) {
    ++catalog_cache_hits_;
    return it->second.value;
  }
  const char* params[1] = {name.c_str()};
  auto q = query(kSql, 1, params, "lineage function lookup");
  if (!q.is_ok()) return q.status();
  PGresult* r = *q;
  std::vector<std::string> out;
  for (int i = 0; i < PQntuples(r); ++i) out.emplace_back(PQgetvalue(r, i, 0));
  PQclear(r);
  if (!out.empty()) functions_[name] = {Clock::now() + options_.ttl, out};
  return out;
}

void PgCatalog::invalidate() {
  std::lock_guard lock(mu_);
  tables_.clear();
  types_.clear();
  relations_.clear();
  functions_.clear();
}

void PgCatalog::invalidate_table(uint32_t oid) {
  std::lock_guard lock(mu_);
  tables_.erase(oid);
}

}  // namespace pgwarden::maskplan
