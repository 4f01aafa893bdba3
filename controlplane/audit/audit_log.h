// Structured audit log: one JSON object per line, written to the sinks configured in
// $.audit.sinks (a file in the state dir by default).
//
// Stable schema (docs/configuration.md, "Audit log"): every line has "ts" (UTC, RFC 3339
// with milliseconds) and "event"; the other keys appear when set: session_id, identity,
// issuer, groups, target, client_addr, policy, policy_version, decision, rule, reason, sql,
// plus event-specific keys from `extra`. Tokens, passwords, keys and SCRAM messages are never
// recorded: the record has no field for them and keys in `extra` whose name contains
// "token", "password", "secret" or "key" (except "shape_key") are dropped.
//
// Thread-safe: record(), record_batched() and flush() may be called from any thread. Lines from
// all callers share one buffer, so they stay in call order.
//
// Write errors (docs/recording.md, "Audit log write errors"): file sinks are written with
// write(2) on a descriptor the log owns. When a write fails (ENOSPC, EDQUOT, EIO, EROFS, ...)
// the part of the batch that did reach the file is cut off again (ftruncate to the size before
// the batch), so the file stays whole JSON lines; the batch's lines are lost and counted, and
// the log is *failing* until a later write succeeds. The first line written after an outage is
// an `audit_write_resumed` record (failing_since_ms, reason, lines_lost, refused) ahead of the
// line that healed it; retry() writes it without another line (cp calls it every 500 ms); after
// ENOSPC only once the file system has kHealHeadroomBytes free again. The
// owner refuses statements while failing() (write_status(): 53100 for ENOSPC/EDQUOT, 58030 for
// other errors) and is told of each outage once (on_failure).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "controlplane/config/config.h"
#include "controlplane/recording/record_fields.h"

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

// What `pgwardenctl status` shows under `audit:`.
struct AuditHealth {
  bool failing = false;
  int64_t since_ms = 0;    // failing since (unix ms); 0 when ok
  std::string last_error;  // "write /var/lib/pgwarden/audit.log: No space left on device (ENOSPC)"
  int64_t last_error_ms = 0;
  uint64_t lines_lost = 0;  // lines that could not be written, ever
  uint64_t refused = 0;     // statements refused because the audit log failed, ever
  uint64_t outages = 0;
  nlohmann::json to_json() const;  // {state: ok|failing, since_ms, last_error, ...}
};

class AuditLog {
 public:
  // Opens every sink (file sinks are created mode 0600 and appended to).
  static Result<std::unique_ptr<AuditLog>> open(const std::vector<config::AuditSink>& sinks);
  ~AuditLog();

  // Writes the line and flushes it to the sinks (the file's kernel buffer) before returning.
  void record(const AuditRecord& r);
  // The same, and says whether the line (and everything batched before it) reached every file
  // sink: the write error (write_status()) when not.
  Status write(const AuditRecord& r);
  // Writes the line but leaves it in the sinks' user-space buffers until the next flush() or
  // record() (or a full buffer): for high-volume records whose caller flushes once per batch
  // (the escalation server flushes after every epoll batch of dataplane events), so a batch
  // costs one write(2) instead of one per line.
  void record_batched(const AuditRecord& r);
  void flush();
  // flush(), saying whether every line batched so far reached every file sink (as write()).
  Status write_batched();

  // True while the last write to a file sink failed (lock-free; any thread).
  bool failing() const { return failing_.load(std::memory_order_acquire); }
  // Ok, or why the log cannot be written: SQLSTATE 53100 (ENOSPC, EDQUOT) or 58030, with a
  // message for the client that names the file and the error.
  Status write_status() const;
  // While failing: tries to write the audit_write_resumed line (heals the log when it can be
  // written). Returns write_status().
  Status retry();
  // Counts a statement refused because the log is failing (status `refused`; the next
  // audit_write_resumed line reports those of its outage).
  void note_refused();
  AuditHealth health() const;
  // Called once per outage, when a write first fails (`why` names the file and error; never a
  // line's content). REQUIRES: set before any concurrent record().
  void set_on_failure(std::function<void(const Status& why)> on_failure);

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
  struct FileSink {
    std::string path;
    int fd = -1;
    // The file `fd` is open on: before each write the path must still name it (see
    // reopen_if_replaced).
    dev_t dev = 0;
    ino_t ino = 0;
  };
  // When `f.path` no longer names the file `f.fd` writes (deleted, renamed by a rotation,
  // replaced by a directory or another file), lines written to `f.fd` would not be where the
  // log is read: opens the path again (created 0600) and writes to that from now on
  // (*reopened). Returns 0, or the errno of the failed open (EISDIR, EACCES, ENOENT, EROFS):
  // the log is then failing, as after a write error. REQUIRES: mu_ held.
  static int reopen_if_replaced(FileSink& f, bool* reopened);
  AuditLog() = default;
  void write_line(const AuditRecord& r);
  // Writes pending_ to every sink (REQUIRES: mu_ held). Returns the first error; sets the
  // failure state, *fired when this write started an outage.
  Status flush_locked(bool* fired);
  Status status_locked() const;  // REQUIRES: mu_ held
  // After ENOSPC the log heals only once every file sink's file system has this much free
  // space (fstatvfs), so that a nearly full disk does not end and start an outage per line.
  static constexpr uint64_t kHealHeadroomBytes = 64 * 1024;
  bool room_to_heal() const;  // REQUIRES: mu_ held
  void notify(bool fired);

  mutable std::mutex mu_;
  std::string pending_;  // lines not yet written (record_batched)
  size_t pending_lines_ = 0;
  std::vector<FileSink> files_;
  bool to_stderr_ = false;
  std::atomic<bool> failing_{false};
  int failing_errno_ = 0;
  int64_t since_ms_ = 0;
  std::string last_error_;
  int64_t last_error_ms_ = 0;
  uint64_t lines_lost_ = 0;
  uint64_t outage_lines_lost_ = 0;
  std::atomic<uint64_t> refused_{0};
  uint64_t outage_refused_ = 0;
  uint64_t outages_ = 0;
  std::function<void(const nlohmann::json&)> forwarder_;
  std::function<void(const Status&)> on_failure_;
};

}  // namespace pgwarden::audit
