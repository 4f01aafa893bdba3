// Catalog: resolves the table OIDs/attnums and type OIDs of a RowDescription to names, so mask
// rules written as "schema.table.column" and type names can be applied to result columns, and
// finds a table's columns by name (COPY TO STDOUT, which carries no OIDs).
//
// PgCatalog asks the target database itself over a libpq "metadata connection" (pg_attribute
// joined to pg_class/pg_namespace, and pg_type) and caches answers with a TTL. Built-in type
// OIDs are known without a query. invalidate() drops cached tables when DDL is seen (a table
// OID is never reused for another table while it exists, but columns can be renamed).
//
// Thread-safety: PgCatalog is safe to call from many threads; queries are serialised on its
// one connection (metadata lookups are rare thanks to the cache and the dp's plan cache).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "controlplane/policy/lineage.h"

struct pg_result;  // libpq's PGresult

namespace pgwarden::maskplan {

struct ColumnName {
  std::string schema;
  std::string table;
  std::string column;
  std::string qualified() const { return schema + "." + table + "." + column; }
};

struct TypeInfo {
  std::string name;   // pg_type.typname, e.g. "varchar", "inet"
  char category = 0;  // pg_type.typcategory: 'S' string, 'N' numeric, 'U' user, ...
};

struct CatalogSnapshot {
  // (table_oid, attnum) -> name; missing when the table no longer exists.
  std::map<std::pair<uint32_t, int16_t>, ColumnName> columns;
  std::map<uint32_t, TypeInfo> types;
};

// A live (not dropped) column of a table, for COPY planning.
struct TableColumn {
  int16_t attnum = 0;
  std::string name;
  uint32_t type_oid = 0;
  bool generated = false;  // GENERATED ... STORED: not in COPY TO output without a column list
};

struct TableInfo {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
  std::vector<TableColumn> columns;  // by ascending attnum
};

class Catalog {
 public:
  virtual ~Catalog() = default;
  // Names for every given table's columns and every given type. OIDs the database does not
  // know are simply absent. unavailable when the database cannot be asked.
  virtual Result<CatalogSnapshot> resolve(const std::vector<uint32_t>& table_oids,
                                          const std::vector<uint32_t>& type_oids) = 0;
  // The ordinary and partitioned tables named `name` (exact, as the parser folded it) in
  // `schema`, or in every schema when `schema` is empty (cp cannot know the session's
  // search_path), with their live columns. Not cached: COPY plans are cached by the dp.
  // This default is unavailable (a catalog that cannot look tables up fails COPY closed).
  virtual Result<std::vector<TableInfo>> find_tables(const std::string& schema,
                                                     const std::string& name);
};

// Built-in type OIDs (pg_type.dat) with their names and categories; nullptr when unknown.
const TypeInfo* builtin_type(uint32_t type_oid);

#define PGW_CATALOG_COUNTERS(X) \
  X(catalog_queries)            \
  X(catalog_cache_hits)         \
  X(catalog_errors)

struct PgCatalogOptions {
  std::string conninfo;  // libpq connection string; a secret (holds the password): never log
  std::chrono::seconds ttl{300};
  int statement_timeout_ms = 5000;
};

// PgCatalog is also the column-lineage catalog (policy::LineageCatalog): relations by name with
// their columns and view definitions (pg_get_viewdef), and the schemas of functions by name.
// Found relations and functions are cached with the same TTL; lookups that find nothing are
// not cached (a table created a moment ago must be seen).
class PgCatalog : public Catalog, public policy::LineageCatalog {
 public:
  // Connects lazily on first use (so cp starts while a target is down).
  explicit PgCatalog(PgCatalogOptions options);
  ~PgCatalog() override;
  PgCatalog(const PgCatalog&) = delete;
  PgCatalog& operator=(const PgCatalog&) = delete;

  Result<CatalogSnapshot> resolve(const std::vector<uint32_t>& table_oids,
                                  const std::vector<uint32_t>& type_oids) override;
  Result<std::vector<TableInfo>> find_tables(const std::string& schema,
                                             const std::string& name) override;

  Result<std::vector<policy::CatalogRelation>> relations(const std::string& schema,
                                                         const std::string& name) override;
  Result<std::vector<std::string>> function_schemas(const std::string& name) override;

  void invalidate();                    // all tables, types, relations and functions
  void invalidate_table(uint32_t oid);  // one table

#define PGW_DECLARE_COUNTER(name) \
  uint64_t name() const {         \
    std::lock_guard lock(mu_);    \
    return name##_;               \
  }
  PGW_CATALOG_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER

 private:
  using Clock = std::chrono::steady_clock;
  struct TableEntry {
    Clock::time_point expires;
    bool exists = false;
    std::map<int16_t, ColumnName> columns;
  };
  struct TypeEntry {
    Clock::time_point expires;
    bool exists = false;
    TypeInfo info;
  };
  // REQUIRES: mu_ held.
  Status ensure_connected();
  // Runs one catalog query on the metadata connection (REQUIRES: mu_ held), connecting first;
  // a connection the server closed is replaced once and the query retried (exec_retrying).
  // The tuples (the caller PQclear()s them), or unavailable "`what` failed: ..." with the
  // connection dropped; counts the query and any error.
  Result<pg_result*> query(const char* sql, int nparams, const char* const* params,
                           std::string_view what);
  Status query_tables(const std::vector<uint32_t>& oids);
  Status query_types(const std::vector<uint32_t>& oids);

  PgCatalogOptions options_;
  mutable std::mutex mu_;
  struct Connection;
  std::unique_ptr<Connection> conn_;
  std::map<uint32_t, TableEntry> tables_;
  std::map<uint32_t, TypeEntry> types_;
  template <typename T>
  struct NamedEntry {
    Clock::time_point expires;
    T value;
  };
  std::map<std::string, NamedEntry<std::vector<policy::CatalogRelation>>> relations_;
  std::map<std::string, NamedEntry<std::vector<std::string>>> functions_;
#define PGW_DEFINE_COUNTER(name) uint64_t name##_ = 0;
  PGW_CATALOG_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER
};

}  // namespace pgwarden::maskplan
