// AuditPgSink: ships audit records (JSON objects) into a PostgreSQL table, buffered, on a
// background thread, without ever blocking the caller.
//
//   CREATE TABLE IF NOT EXISTS pgwarden_audit (id bigserial PRIMARY KEY,
//     ts timestamptz NOT NULL, event text NOT NULL, record jsonb NOT NULL)
//
// `ts` comes from the record's "ts" (unix ms) or the insert time, `event` from its "event".
// Records are inserted in submission order (id follows that order), in batches.
//
// Outages: while the database is unreachable, records stay in memory up to
// `memory_capacity`; beyond that the writer moves them to a spill file (JSON lines, in the
// state dir), which it drains first, in order, when the database is back. A spill file left
// by a previous process is drained at start. At shutdown, unwritten records are spilled too.
// Only when memory is at its hard cap (memory_hard_cap, while the writer has not spilled yet)
// or the spill file is full (spill_max_bytes) are records dropped, and counted. Delivery is
// at-least-once: a crash between inserting a spilled batch and truncating the spill file repeats
// that batch. A record the database refuses (e.g. a value jsonb cannot hold) is dropped and counted
// in records_rejected, so one bad record never blocks the rest.
//
// Thread-safety: submit(), flush() and the counters are safe from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace pgwarden::audit_pg {

struct AuditPgOptions {
  std::string conninfo;                  // libpq connection string: a secret, never logged
  std::string spill_path;                // e.g. <state_dir>/audit-pg-spill.jsonl
  std::string table = "pgwarden_audit";  // [a-z_][a-z0-9_]* (optionally schema-qualified)
  size_t memory_capacity = 10000;        // beyond this, a disconnected writer spills to disk
  size_t memory_hard_cap = 40000;        // submit() drops beyond this (burst headroom)
  uint64_t spill_max_bytes = uint64_t{1} << 30;
  size_t batch_size = 500;
  std::chrono::milliseconds retry_min{200};
  std::chrono::milliseconds retry_max{5000};
  int connect_timeout_s = 3;
};

#define PGW_AUDIT_PG_COUNTERS(X) \
  X(records_submitted)           \
  X(records_written)             \
  X(records_spilled)             \
  X(records_dropped)             \
  X(records_rejected)            \
  X(db_errors)

class AuditPgSink {
 public:
  // invalid_argument for a bad table name or empty paths. Does not connect yet.
  static Result<std::unique_ptr<AuditPgSink>> start(AuditPgOptions options);
  ~AuditPgSink();
  AuditPgSink(const AuditPgSink&) = delete;
  AuditPgSink& operator=(const AuditPgSink&) = delete;

  // Queues one record (an object; anything else is wrapped as {"record": value}).
  // Returns false only when it had to be dropped (all buffers full).
  bool submit(const nlohmann::json& record);

  // Waits until every record submitted so far is in the database (or rejected); false on
  // timeout.
  bool flush(std::chrono::milliseconds timeout);

  bool connected() const;
  size_t memory_records() const;

#define PGW_DECLARE_COUNTER(name) uint64_t name() const;
  PGW_AUDIT_PG_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER

 private:
  struct Impl;
  explicit AuditPgSink(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgwarden::audit_pg
