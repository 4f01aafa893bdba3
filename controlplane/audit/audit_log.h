// Structured audit log: one JSON object per line, written through a dedicated spdlog logger
// to the sinks configured in $.audit.sinks (a file in the state dir by default).
//
// Stable schema (docs/configuration.md, "Audit log"): every line has "ts" (UTC, RFC 3339
// with milliseconds) and "event"; the other keys appear when set: session_id, identity,
// issuer, groups, target, client_addr, policy, policy_version, decision, rule, reason, sql,
// plus event-specific keys from `extra`. Tokens, passwords, keys and SCRAM messages are never
// recorded: the record has no field for them and keys in `extra` whose name contains
// "token", "password", "secret" or "key" (except "shape_key") are dropped.
//
// Thread-safe: record(), record_batched() and flush() may be called from any thread. Lines from
// all callers share one buffer per sink, so they stay in call order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "controlplane/config/config.h"
#include "controlplane/recording/record_fields.h"

namespace spdlog {
class logger;
}

namespace pgwarden::audit {

struct AuditRecord {
  std::string event;  // authenticate | scram | decision | approval | config_reload | ...
  std::string session_id;
  std::string identity;  // subject
  std::string issuer;
  std::vector<std::string> groups;
  std::string target;
  std::string client_addr;
  std::string policy;
  uint64_t policy_version = 0;
  std::string decision;  // allow | deny | approve | ok | rejected | ...
  std::string rule;
  std::string reason;
  std::string sql;
  nlohmann::json extra;  // null (no keys: nothing allocated) or an object
  // More event-specific keys, already serialised, merged after `extra` under the same rules:
  // for hot paths (dp statement events) that build no JSON tree.
  recording::RecordFields fields;
};

class AuditLog {
 public:
  // Opens every sink (file sinks are created mode 0600 and appended to).
  static Result<std::unique_ptr<AuditLog>> open(const std::vector<config::AuditSink>& sinks);
  ~AuditLog();

  // Writes the line and flushes it to the sinks (the file's kernel buffer) before returning.
  void record(const AuditRecord& r);
  // Writes the line but leaves it in the sinks' user-space buffers until the next flush() or
  // record() (or a full buffer): for high-volume records whose caller flushes once per batch
  // (the escalation server flushes after every epoll batch of dataplane events), so a batch
  // costs one write(2) instead of one per line.
  void record_batched(const AuditRecord& r);
  void flush();

  // Also hands every record (the JSON line, with "ts") to `forwarder` (e.g. the PostgreSQL
  // sink, $.audit.sinks type "postgres"). It must not block. REQUIRES: called before any
  // concurrent record().
  void set_forwarder(std::function<void(const nlohmann::json&)> forwarder);

  // The JSON object written for `r` (without "ts"); exposed for tests.
  static nlohmann::json to_json(const AuditRecord& r);
  // The line written for `r` with "ts" = `ts` ("" = none): canonical JSON (sorted keys, no
  // spaces, invalid UTF-8 replaced by U+FFFD), serialised without building a tree.
  static std::string line(const AuditRecord& r, std::string_view ts);

 private:
  explicit AuditLog(std::shared_ptr<spdlog::logger> logger) : logger_(std::move(logger)) {}
  void write_line(const AuditRecord& r);
  std::shared_ptr<spdlog::logger> logger_;
  std::function<void(const nlohmann::json&)> forwarder_;
};

}  // namespace pgwarden::audit
