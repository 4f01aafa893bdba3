// Recorder: per-session, hash-chained, append-only recordings of what agents did and saw.
//
// One file per session: `<dir>/<session_id>.jsonl` (dir is normally <state_dir>/recordings),
// one canonical JSON object per line:
//   {"seq": 1.., "ts": unix ms, "session_id", "kind", ...event fields, "prev": hex, "hash": hex}
// hash = hex SHA-256(prev || canonical bytes of the record without "hash"); prev of the first
// record is 64 zeros. Canonical bytes = nlohmann::json::dump() (sorted keys, no spaces, UTF-8;
// invalid UTF-8 in values is replaced by U+FFFD before hashing). See recording_file.h for
// verification, docs/recording.md for the record kinds.
//
// Writes: try_append() validates, applies the session's recording level and row cap, and
// pushes onto a bounded queue; it never blocks on I/O. One writer thread chains, appends and
// fdatasyncs in group commits: after draining the queue, once at least `batch_records` records
// or `batch_interval` are unsynced, whichever comes first.
// A crash loses at most the last unsynced batch; a partially written last line is detected
// and ignored by readers. When the queue is full try_append returns resource_exhausted: a
// session whose policy requires recording must then hold its statements.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "controlplane/policy/policy.h"

namespace pgwarden::recording {

struct RecorderOptions {
  std::string dir;               // created (0700) if missing
  size_t queue_capacity = 8192;  // records waiting for the writer
  size_t batch_records = 64;
  std::chrono::milliseconds batch_interval{200};
  // Receives {"event": "recording_write_failed", "session_id", "message"} when the disk fails.
  std::function<void(const nlohmann::json&)> audit;
  std::function<int64_t()> clock_ms;  // unix ms; tests inject a fake one
  // Test hook: runs on the writer thread before each batch is written (a test can block it to
  // fill the queue). Unset in production.
  std::function<void()> before_sync;
};

#define PGW_RECORDER_COUNTERS(X) \
  X(records_written)             \
  X(batches_synced)              \
  X(records_rejected_queue_full) \
  X(rows_dropped_cap)            \
  X(write_errors)

struct SessionStart {
  std::string session_id;  // REQUIRES: [A-Za-z0-9_-]{1,128} (it names the file)
  std::string identity;
  std::vector<std::string> groups;
  std::string target;
  std::string client_addr;
  bool tls = false;
  std::string policy;
  policy::RecordingLevel level = policy::RecordingLevel::kFull;
  int row_cap = 1000;  // result rows kept per statement (policy recording_row_cap)
};

class Recorder {
 public:
  static Result<std::unique_ptr<Recorder>> open(RecorderOptions options);
  ~Recorder();  // writes and syncs everything queued, then closes all files
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Opens the session's recording (kind "session_start"). A session with level kOff records
  // nothing and all its later events are accepted and discarded. invalid_argument for a bad
  // session id, failed_precondition if the session is already open.
  Status start_session(const SessionStart& start);

  // Continues the session's existing recording after a pgwarden-cp restart (or starts it, as
  // start_session does, when there is no file): the file is verified, a torn last line is cut,
  // seq and hash chain continue, and a "session_resumed" record {reason} is appended.
  // invalid_argument for a bad id; failed_precondition when the session is already open here,
  // when its recording is sealed (it ended: nothing may follow the seal) or when the existing
  // file does not verify (appending would hide the damage); unavailable if it cannot be read.
  Status resume_session(const SessionStart& start, std::string_view reason);

  // Queues one event of an open session. `kind`: "statement" | "rows" | "error" |
  // "session_end" (closes the session) | any other [a-z_]+ word (kept verbatim). `fields`
  // must be an object; reserved keys (seq, ts, session_id, kind, prev, hash) are overwritten.
  // "rows" = {"columns": [name | {"name","type_oid"}], "rows": [[value|null, ...]]}: dropped
  // below level kFull, cut to the row cap per statement (the cap restarts after each
  // "statement" record; the cut is recorded as "truncated": n).
  // resource_exhausted when the queue is full (nothing queued); failed_precondition for a
  // session that is not open.
  Status try_append(const std::string& session_id, const std::string& kind, nlohmann::json fields);

  // Blocks until everything queued before the call is written and synced.
  Status flush();

  std::string path_for(const std::string& session_id) const;
  bool session_open(const std::string& session_id) const;

#define PGW_DECLARE_COUNTER(name) uint64_t name() const;
  PGW_RECORDER_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER

 private:
  struct Impl;
  explicit Recorder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

bool valid_session_id(std::string_view id);
std::string_view recording_level_name(policy::RecordingLevel level);

}  // namespace pgwarden::recording
