// Recorder: per-session, hash-chained, append-only, write-ahead recordings of what agents did
// and saw.
//
// One file per session: `<dir>/<session_id>.jsonl` (dir is normally <state_dir>/recordings),
// one canonical JSON object per line:
//   {"seq": 1.., "ts": unix ms, "session_id", "kind", ...event fields, "prev": hex, "hash": hex}
// hash = hex SHA-256(prev || canonical bytes of the record without "hash"); prev of the first
// record is 64 zeros. Canonical bytes = nlohmann::json::dump() (sorted keys, no spaces, UTF-8;
// invalid UTF-8 in values is replaced by U+FFFD before hashing). See recording_file.h for
// verification, docs/recording.md for the record kinds and the guarantees.
//
// Write-ahead: append() validates, serialises the fields on the caller's thread (RecordFields,
// record_fields.h; or takes them pre-serialised), applies the session's recording level and row
// cap and queues the record; it never blocks on I/O. The queue is written in batches (group
// commit) by the writer thread, or by a caller that drains its own batch of events (pgwarden-cp's
// event-ring drain): it appends with AppendOptions::defer and then calls commit(), which writes
// the queue on the calling thread when no fdatasync is due for it — no hand-off to another
// thread and no wake-up per statement. Per file one pwritev per batch, the hash chain computed
// per record
// (the envelope merged into the sorted members, the hash computed around its placeholder;
// the bytes are those of the tree serialiser, see recording_file.h canonical_bytes), then
//  - SyncMode::kInterval: the records count as written when pwritev returned (page cache:
//    they survive a crash of pgwarden-cp); files are fdatasync'ed at most every
//    `sync_interval` (an OS crash loses at most that window);
//  - SyncMode::kAlways: the batch is fdatasync'ed before any of its records counts as written.
// The fdatasyncs of a batch (one per file) and of an interval sync run concurrently on helper
// threads: syncs of many files then share the file system's journal commits.
// Each record's `on_done` runs (on the thread that wrote it) once that has happened, or with the
// error when it could not be: this is what a recording-required statement waits for before it
// is forwarded upstream. Per session the recorder keeps watermarks (records queued, written,
// synced); watermark() reads them.
//
// Write errors (ENOSPC, EDQUOT, EIO, EROFS, ...): the failed batch is cut off the file again
// (ftruncate to the last good offset, the chain rewound), its records are refused (on_done
// gets 53100 disk_full for ENOSPC/EDQUOT, 58030 io_error otherwise) and counted in the
// session's pending gap. The next write of the session (its next record, or a retry every
// `retry_interval` while anything is pending) first appends a "recording_gap" record that says
// what was refused: {"records", "kinds": {kind: n}, "first_ts", "last_ts", "reason",
// "not_run"}. Records refused for a full queue (sessions that do not require recording; see
// AppendOptions::keep) leave the same kind of gap record. health() and the audit callback say
// when writing fails and when it works again.
//
// Seal and checkpoint: "session_end" is followed by a "seal" record {"records": n (records
// before the seal), "head": hash of record n}; nothing may follow a seal. The synced chain
// head of every session is written at most every `checkpoint_interval` to `checkpoint_path`
// (JSON, atomically replaced) and passed to the audit callback, so that verification can tell
// a truncated tail or a deleted last record (see recording_file.h verify_session()).
//
// Thread-safety: all public methods may be called from any thread; on_done and the audit
// callback run on the thread that writes (the writer thread or a caller in commit()), or inline
// in append() for records that need no write. on_done must not call flush().
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/metrics/histogram.h"
#include "common/status.h"
#include "controlplane/policy/policy.h"
#include "controlplane/recording/record_fields.h"

namespace pgwarden::recording {

// The file operations the writer uses. Each returns what the system call it stands for
// returns (-1 with errno set on failure). Tests wrap the POSIX one to inject faults.
class RecordingFs {
 public:
  virtual ~RecordingFs() = default;
  virtual int open(const std::string& path) = 0;  // write-only, created 0600, O_CLOEXEC
  virtual ssize_t pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) = 0;
  virtual int fdatasync(int fd) = 0;
  virtual int ftruncate(int fd, off_t length) = 0;
  virtual off_t size(int fd) = 0;  // fstat st_size
  virtual int close(int fd) = 0;
};
std::shared_ptr<RecordingFs> posix_recording_fs();

enum class SyncMode { kInterval, kAlways };

struct RecorderOptions {
  std::string dir;               // created (0700) if missing
  size_t queue_capacity = 8192;  // records waiting for the writer (AppendOptions::keep exceeds)
  SyncMode sync_mode = SyncMode::kInterval;
  std::chrono::milliseconds sync_interval{100};  // kInterval: fdatasync at most this late
  // While a gap or a seal is pending after a write error: how often the writer tries again
  // without a new record of the session.
  std::chrono::milliseconds retry_interval{500};
  // Chain heads of the sessions; empty: <parent of dir>/recording_checkpoint.json.
  std::string checkpoint_path;
  std::chrono::milliseconds checkpoint_interval{1000};
  // Receives {"event": "recording_write_failed" | "recording_write_resumed" | "recording_gap" |
  // "recording_checkpoint", "session_id"?, "message", ...}.
  std::function<void(const nlohmann::json&)> audit;
  std::function<int64_t()> clock_ms;  // unix ms; tests inject a fake one
  // Test hook: runs on the writer thread before each batch is written (a test can block it to
  // fill the queue). Unset in production.
  std::function<void()> before_sync;
  std::shared_ptr<RecordingFs> fs;  // default posix_recording_fs()
};

#define PGW_RECORDER_COUNTERS(X) \
  X(records_written)             \
  X(batches_written)             \
  X(batches_synced)              \
  X(records_rejected_queue_full) \
  X(records_refused)             \
  X(rows_dropped_cap)            \
  X(write_errors)                \
  X(sync_errors)                 \
  X(gaps_written)                \
  X(sessions_sealed)             \
  X(checkpoints_written)         \
  X(checkpoint_errors)           \
  X(bytes_written)

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

struct AppendOptions {
  // Never refused for a full queue (a recording-required session: its records are waited
  // for, so their number in the queue is bounded by the sessions, see docs/recording.md).
  bool keep = false;
  // Write-ahead acknowledgement: ok once the record is written (kAlways: and synced), or the
  // write error. Called exactly once when append() returns ok (inline when nothing needs to be
  // written: level off, rows below level full or past the cap).
  std::function<void(const Status&)> on_done;
  // The caller calls commit() after its batch of appends: the record waits, unseen by the
  // writer thread, until commit() or the next append without `defer` (order is kept).
  // REQUIRES: commit() follows.
  bool defer = false;
};

// Per-session progress in records the caller queued: queued >= written + refused, written >=
// synced (a record counts as written when pwritev returned, as synced after fdatasync).
struct Watermark {
  uint64_t queued = 0;
  uint64_t written = 0;
  uint64_t synced = 0;
  uint64_t refused = 0;
};

struct RecorderHealth {
  bool failing = false;    // the last write (or sync) attempt failed
  std::string last_error;  // "write <file>: No space left on device (ENOSPC)"
  int64_t since_ms = 0;    // failing since (unix ms); 0 when ok
  int64_t last_error_ms = 0;
  uint64_t records_refused = 0;  // refused for write errors, ever
  uint64_t records_dropped = 0;  // refused for a full queue, ever
  uint64_t gaps_written = 0;
  uint64_t gaps_pending = 0;  // sessions with refused records not yet recorded in a gap
  SyncMode sync_mode = SyncMode::kInterval;
  int64_t sync_interval_ms = 0;
  nlohmann::json to_json() const;  // the `recorder` section of `pgwardenctl status`
};

// The Status a refused record's on_done gets for errno `err`: 53100 for ENOSPC/EDQUOT, else
// 58030.
Status recording_write_error(int err, std::string_view what);

class Recorder {
 public:
  static Result<std::unique_ptr<Recorder>> open(RecorderOptions options);
  ~Recorder();  // writes and syncs everything queued, seals nothing, writes the checkpoint
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  // Opens the session's recording (kind "session_start"; never refused for a full queue). A
  // session with level kOff records nothing and all its later events are accepted and
  // discarded. invalid_argument for a bad session id, failed_precondition if the session is
  // already open.
  Status start_session(const SessionStart& start);

  // Continues the session's existing recording after a pgwarden-cp restart (or starts it, as
  // start_session does, when there is no file): only the file's last record is read and
  // checked (read_recording_tail: the cost does not grow with the recording), a torn last line
  // is cut, seq and hash chain continue, and a "session_resumed" record {reason} is appended.
  // invalid_argument for a bad id; failed_precondition when the session is already open here,
  // when its recording is sealed (it ended: nothing may follow the seal — its file ends in a
  // seal, it ended in this Recorder, or the checkpoint says sealed; the Status carries
  // SQLSTATE 57P01) or when the last record does not verify; unavailable if it cannot be read.
  // Damage earlier in the file stays visible to verify_recording() after the append.
  Status resume_session(const SessionStart& start, std::string_view reason);

  // Queues one event of an open session. `kind`: "statement" | "rows" | "error" |
  // "session_end" (closes the session; the writer adds the seal) | any other [a-z_]+ word
  // (kept verbatim; not "session_start" or "seal"). `fields` must be an object; reserved keys
  // (seq, ts, session_id, kind, prev, hash) are overwritten.
  // "rows" = {"columns": [name | {"name","type_oid"}], "rows": [[value|null, ...]]}: dropped
  // below level kFull, cut to the row cap per statement (the cap restarts after each
  // "statement" record; the cut is recorded as "truncated": n).
  // resource_exhausted when the queue is full and !options.keep (nothing queued; counted in
  // the session's next gap record); failed_precondition for a session that is not open.
  // The tree is serialised on the calling thread (RecordFields::from_json) before it is queued.
  Status append(const std::string& session_id, const std::string& kind, nlohmann::json fields,
                AppendOptions options);
  // The same with fields already serialised (no tree to build, copy or free): the faster
  // path for callers that produce events themselves. Same contract; a "rows" event needs a
  // "rows" member that is an array (RecordFields::rows_count() >= 0).
  Status append(const std::string& session_id, const std::string& kind, RecordFields fields,
                AppendOptions options);
  Status try_append(const std::string& session_id, const std::string& kind, nlohmann::json fields) {
    return append(session_id, kind, std::move(fields), {});
  }

  // Writes what is queued (the caller's deferred appends and anything else) on the calling
  // thread, with the same batching, chaining and error handling as the writer thread; the
  // written records' on_done run here before it returns. Hands the queue to the writer thread
  // instead (and returns at once) when it holds a record acknowledged only after an fdatasync
  // (sync "always", a session_end's seal) or a flush(), or while the writer thread is in an
  // fdatasync (it waits for the writer's other work: a batch, a timer). It wakes the writer
  // thread only when what it wrote needs a timer (interval sync, retry, checkpoint) earlier
  // than the one the writer sleeps until.
  void commit();

  // Blocks until everything queued before the call is written and synced (and the
  // checkpoint written). unavailable when any write has failed since the recorder opened.
  Status flush();

  std::string path_for(const std::string& session_id) const;
  const std::string& checkpoint_path() const;
  bool session_open(const std::string& session_id) const;
  Watermark watermark(const std::string& session_id) const;
  RecorderHealth health() const;

#define PGW_DECLARE_COUNTER(name) uint64_t name() const;
  PGW_RECORDER_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER
  // Records waiting for the writer thread (thread-safe; the Prometheus queue-depth gauge).
  size_t queue_depth() const;
  // Latency of each fdatasync the writer made, successful or not (thread-safe).
  metrics::HistogramSnapshot sync_latency() const;

 private:
  struct Impl;
  explicit Recorder(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

bool valid_session_id(std::string_view id);

}  // namespace pgwarden::recording
