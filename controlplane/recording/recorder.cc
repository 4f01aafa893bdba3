#include "controlplane/recording/recorder.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "common/atomic_file.h"
#include "controlplane/recording/recording_file.h"

namespace pgwarden::recording {

namespace {

int64_t system_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool valid_kind(std::string_view k) {
  if (k.empty() || k.size() > 64) return false;
  return std::all_of(k.begin(), k.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; });
}

class PosixFs final : public RecordingFs {
 public:
  int open(const std::string& path) override {
    return ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  }
  ssize_t pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) override {
    return ::pwritev(fd, iov, iovcnt, offset);
  }
  int fdatasync(int fd) override { return ::fdatasync(fd); }
  int ftruncate(int fd, off_t length) override { return ::ftruncate(fd, length); }
  off_t size(int fd) override {
    struct stat st;
    if (::fstat(fd, &st) != 0) return -1;
    return st.st_size;
  }
  int close(int fd) override { return ::close(fd); }
};

// Runs the fdatasyncs of many files at once. Concurrent fdatasyncs on one file system share
// its journal commits, so syncing N session files costs little more than syncing one, where
// one after the other they cost N commits (milliseconds each) during which nothing is written.
class ParallelSync {
 public:
  // `latency` (may be null) observes every fdatasync.
  ParallelSync(RecordingFs* fs, int helpers, metrics::LatencyHistogram* latency)
      : fs_(fs), latency_(latency) {
    for (int i = 0; i < helpers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~ParallelSync() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // fdatasync of every fd; (*errs)[i] = errno of fds[i] (0: synced). The calling thread syncs
  // too; returns when all are done.
  void run(const std::vector<int>& fds, std::vector<int>* errs) {
    errs->assign(fds.size(), 0);
    if (fds.empty()) return;
    std::unique_lock lock(mu_);
    fds_ = &fds;
    errs_ = errs;
    next_ = 0;
    done_ = 0;
    if (fds.size() > 1) wake_.notify_all();
    drain(lock);
    finished_.wait(lock, [&] { return done_ == fds.size(); });
    fds_ = nullptr;
    errs_ = nullptr;
  }

 private:
  // REQUIRES: lock held. Syncs files of the current run until none is left to start.
  void drain(std::unique_lock<std::mutex>& lock) {
    while (fds_ != nullptr && next_ < fds_->size()) {
      const size_t i = next_++;
      const int fd = (*fds_)[i];
      lock.unlock();
      auto t0 = std::chrono::steady_clock::now();
      const int err = fs_->fdatasync(fd) == 0 ? 0 : errno;
      if (latency_ != nullptr) {
        latency_->observe_ns(
            static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::steady_clock::now() - t0)
                                      .count()));
      }
      lock.lock();
      (*errs_)[i] = err;
      if (++done_ == fds_->size()) finished_.notify_all();
    }
  }

  void work() {
    std::unique_lock lock(mu_);
    while (true) {
      wake_.wait(lock, [&] { return stop_ || (fds_ != nullptr && next_ < fds_->size()); });
      if (stop_) return;
      drain(lock);
    }
  }

  RecordingFs* fs_;
  metrics::LatencyHistogram* latency_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable finished_;
  const std::vector<int>* fds_ = nullptr;
  std::vector<int>* errs_ = nullptr;
  size_t next_ = 0;
  size_t done_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Records refused (write errors) or dropped (full queue) and not yet recorded in a gap record.
struct GapInfo {
  uint64_t records = 0;
  uint64_t not_run = 0;  // refused records someone waited for: their statements did not run
  std::map<std::string, uint64_t> kinds;
  int64_t first_ts = 0;
  int64_t last_ts = 0;
  std::string reason;

  bool empty() const { return records == 0; }
  void add(const std::string& kind, int64_t ts, bool waited, const std::string& why) {
    if (records == 0) first_ts = ts;
    ++records;
    if (waited) ++not_run;
    ++kinds[kind];
    last_ts = std::max(last_ts, ts);
    reason = why;
  }
  nlohmann::json to_json() const {
    return {{"records", records},   {"not_run", not_run}, {"kinds", kinds},
            {"first_ts", first_ts}, {"last_ts", last_ts}, {"reason", reason}};
  }
};

}  // namespace

std::shared_ptr<RecordingFs> posix_recording_fs() { return std::make_shared<PosixFs>(); }

Status recording_write_error(int err, std::string_view what) {
  return storage_write_error(
      err, "the session recording could not be written (" + std::string(what) + ": " +
               errno_text(err) +
               "); statements that need recording are refused until it can be written "
               "again, then recording resumes with a gap record");
}

nlohmann::json RecorderHealth::to_json() const {
  nlohmann::json j{{"state", failing ? "failing" : "ok"},
                   {"records_refused", records_refused},
                   {"records_dropped", records_dropped},
                   {"gaps_written", gaps_written},
                   {"gaps_pending", gaps_pending},
                   {"sync", sync_mode == SyncMode::kAlways ? std::string("always")
                                                           : std::to_string(sync_interval_ms)}};
  if (!last_error.empty()) {
    j["last_error"] = last_error;
    j["last_error_ms"] = last_error_ms;
  }
  if (failing) j["since_ms"] = since_ms;
  return j;
}

bool valid_session_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

struct Recorder::Impl {
  RecorderOptions options;
  RecordingFs* fs = nullptr;

  struct Item {
    std::string session_id;
    std::string kind;
    RecordFields fields;
    int64_t ts = 0;
    std::function<void(const Status&)> on_done;
    std::promise<void>* barrier = nullptr;  // flush marker when set
  };
  // Caller-side view of a session (level, cap accounting, queue-full drops, watermarks).
  struct SessionPolicy {
    policy::RecordingLevel level;
    int row_cap;
    int64_t rows_in_statement = 0;
    bool cap_noted = false;
    GapInfo dropped;
    Watermark wm;
  };
  // Writer-side state of a session's file.
  struct SessionFile {
    int fd = -1;
    bool loaded = false;  // the existing file was verified (or there was none)
    std::string broken;   // the existing file cannot be appended to (why)
    off_t size = 0;       // written state: everything up to here is good records
    uint64_t seq = 0;
    std::string prev;
    off_t synced_size = 0;
    uint64_t synced_seq = 0;
    std::string synced_prev;
    bool dirty = false;               // written, not yet synced
    bool truncate_pending = false;    // a failed write could not be cut off yet
    GapInfo gap;                      // refused by write errors, not yet in a gap record
    std::optional<Item> pending_end;  // a session_end that could not be written yet
    bool sealed = false;
    uint64_t written_items = 0, refused_items = 0, synced_items = 0;
  };
  struct Head {
    uint64_t seq = 0;
    std::string hash;
    bool sealed = false;
  };

  // Lock order: write_mu before mu.
  mutable std::mutex mu;
  std::condition_variable cv;
  // The writer swaps it with its drained (cleared) batch: in steady state neither side
  // allocates for queueing (the capacity of the largest batch is kept).
  std::vector<Item> queue;
  // Appended with AppendOptions::defer and not yet committed: invisible to the writer thread
  // until commit() (or a later append that is not deferred) moves them to the queue.
  std::vector<Item> deferred;
  std::map<std::string, SessionPolicy> sessions;
  // Sessions that ended (session_end appended here, or sealed in the checkpoint loaded at
  // open), the last kEndedKept: resume_session() refuses them without reading their file.
  std::set<std::string> ended;
  std::deque<std::string> ended_order;
  bool stopping = false;
  // The queue holds something only the writer thread handles: a record acknowledged after an
  // fdatasync (sync "always", a session_end and its seal) or a flush barrier.
  bool queue_needs_writer = false;
  // When the writer thread wakes by itself: time_point::max() when it waits without a
  // deadline, min() while it is awake (it computes its next deadline before it waits again).
  std::chrono::steady_clock::time_point writer_wakes_at =
      std::chrono::steady_clock::time_point::min();
  std::thread writer;

  // Held by whichever thread writes: the writer thread, or a caller in commit(). It guards
  // the writer-side state below.
  std::mutex write_mu;
  // The holder of write_mu is in an fdatasync.
  std::atomic<bool> syncing{false};
  std::map<std::string, SessionFile> files;
  // How many `files` are dirty, have a gap not yet written, have a gap or a session_end
  // pending: kept by difference for the files of a batch (count/uncount), recounted by
  // publish(), so a batch costs the same with 10 or 10,000 sessions open.
  size_t files_dirty = 0, files_with_gap = 0, files_pending = 0;
  std::chrono::steady_clock::time_point last_sync = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_failure;
  std::chrono::steady_clock::time_point last_checkpoint;
  std::map<std::string, Head> heads;
  std::deque<std::string> sealed_order;  // bounded memory of sealed sessions' heads
  nlohmann::json heads_changed = nlohmann::json::object();
  ChainHasher hasher;
  std::string batch_buf;  // one file's records of one batch (capacity kept across batches)
  std::map<std::string, std::vector<Item*>> per_file;  // of the batch being written
  std::vector<int> sync_fds;
  std::vector<int> sync_errs;
  std::vector<Item> batch_items;  // the drained queue being written
  std::unique_ptr<ParallelSync> syncer;

  // Guarded by mu.
  RecorderHealth health;

#define PGW_DEFINE_COUNTER(name) std::atomic<uint64_t> name{0};
  PGW_RECORDER_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER
  metrics::LatencyHistogram sync_latency;

  static constexpr size_t kSealedHeadsKept = 1024;
  static constexpr size_t kEndedKept = 4096;

  // REQUIRES: mu held (or no other thread yet).
  void note_ended(const std::string& id) {
    if (!ended.insert(id).second) return;
    ended_order.push_back(id);
    if (ended_order.size() > kEndedKept) {
      ended.erase(ended_order.front());
      ended_order.pop_front();
    }
  }
  static constexpr int kSyncHelpers = 7;  // threads syncing files beside the writer

  int64_t now() const { return options.clock_ms ? options.clock_ms() : system_now_ms(); }
  std::string path_for(const std::string& id) const { return options.dir + "/" + id + ".jsonl"; }
  void audit(nlohmann::json j) {
    if (!options.audit) return;
    j["ts"] = now();
    options.audit(j);
  }

  // The audit event `recording_damaged` for `path` (a recording or the checkpoint): what was
  // found, and `extra` fields (session_id, seq, ...).
  void audit_damage(const std::string& path, std::string message,
                    nlohmann::json extra = nlohmann::json::object()) {
    extra["event"] = "recording_damaged";
    extra["path"] = path;
    extra["message"] = std::move(message);
    audit(std::move(extra));
  }

  // ------------------------------------------------------------------ health (writer thread)

  void note_failure(const std::string& session_id, const std::string& message) {
    last_failure = std::chrono::steady_clock::now();
    bool first = false;
    {
      std::lock_guard lock(mu);
      first = !health.failing;
      if (first) health.since_ms = now();
      health.failing = true;
      health.last_error = message;
      health.last_error_ms = now();
    }
    if (first) {
      audit(
          {{"event", "recording_write_failed"}, {"session_id", session_id}, {"message", message}});
    }
  }

  void note_success() {
    int64_t since = 0;
    {
      std::lock_guard lock(mu);
      if (!health.failing) return;
      since = health.since_ms;
      health.failing = false;
      health.since_ms = 0;
    }
    audit({{"event", "recording_write_resumed"},
           {"message", "recording writes work again (failing since " + std::to_string(since) + ")"},
           {"failing_since_ms", since}});
  }

  // ------------------------------------------------------------------- records (writer)

  // Chains and serialises one record onto f's written state, appending its line to `out`.
  // The fields' members are merged with the envelope in key order (the canonical order), the
  // "hash" member written as a placeholder, and the hash computed over the line without it
  // (prev || canonical bytes without "hash") and filled in: one pass, no tree, no copy.
  void format_record(SessionFile& f, const std::string& id, std::string_view kind,
                     RecordFields& fields, int64_t ts, std::string& out) {
    static constexpr std::string_view kEnvelope[] = {"hash", "kind",       "prev",
                                                     "seq",  "session_id", "ts"};
    constexpr size_t kEnvelopeSize = std::size(kEnvelope);
    fields.sort();
    const auto& members = fields.members();
    const size_t line_start = out.size();
    out.reserve(out.size() + fields.byte_size() + 256 + id.size() + kind.size());
    out += '{';
    size_t cut_begin = 0;  // the `,"hash":"..."` (or `"hash":"...",`) span left out of the hash
    size_t cut_end = 0;
    size_t placeholder = 0;
    bool hash_first = false;
    bool first = true;
    size_t m = 0;
    size_t e = 0;
    while (m < members.size() || e < kEnvelopeSize) {
      const bool envelope = e < kEnvelopeSize && (m == members.size() ||
                                                  !key_less(fields.key(members[m]), kEnvelope[e]));
      if (!envelope) {
        const RecordFields::Member& mem = members[m++];
        // Members are sorted and unique: one equal to an envelope key comes right after it.
        if (e > 0 && fields.key(mem) == kEnvelope[e - 1]) continue;  // the envelope wins
        if (!first) out += ',';
        first = false;
        out += fields.text(mem);
        continue;
      }
      const size_t at = out.size();
      if (!first) out += ',';
      switch (e) {
        case 0:
          cut_begin = at;
          hash_first = first;
          out += "\"hash\":\"";
          placeholder = out.size();
          out.append(64, '0');
          out += '"';
          cut_end = out.size() + (hash_first ? 1 : 0);  // the comma before "kind" goes too
          break;
        case 1:
          out += "\"kind\":";
          append_canonical_string(out, kind);
          break;
        case 2:
          out += "\"prev\":";
          append_canonical_string(out, f.prev);
          break;
        case 3: {
          out += "\"seq\":";
          char b[24];
          out.append(b, std::to_chars(b, b + sizeof b, f.seq + 1).ptr);
          break;
        }
        case 4:
          out += "\"session_id\":";
          append_canonical_string(out, id);
          break;
        default: {
          out += "\"ts\":";
          char b[24];
          out.append(b, std::to_chars(b, b + sizeof b, ts).ptr);
          break;
        }
      }
      first = false;
      ++e;
    }
    out += '}';
    const std::string_view line(out.data() + line_start, out.size() - line_start);
    hasher.begin(f.prev);
    hasher.update(line.substr(0, cut_begin - line_start));
    hasher.update(line.substr(cut_end - line_start));
    hasher.finish_hex(out.data() + placeholder);
    out += '\n';
    f.prev.assign(out, placeholder, 64);
    ++f.seq;
  }

  // Verifies an existing file and positions f after its last good record; opens it.
  bool ensure_open(const std::string& id, SessionFile& f, int* err, std::string* what) {
    // Open and in order (every record but a file's first): no path to build.
    if (f.loaded && f.broken.empty() && f.fd >= 0 && !f.truncate_pending) return true;
    const std::string path = path_for(id);
    if (!f.loaded) {
      f.prev = std::string(kGenesisHash);
      if (::access(path.c_str(), F_OK) == 0) {
        // Only the last record is read (O(1) in the file's size): the chain continues from it.
        auto tail = read_recording_tail(path);
        if (!tail.is_ok() || !tail->ok) {
          f.broken = "the existing recording " + path + " does not verify; not appended to";
        } else if (tail->last_kind == "seal") {
          f.broken = "the recording " + path + " is sealed; nothing may follow its seal";
        } else if (std::string cut = cut_off_before(id, *tail); !cut.empty()) {
          // The checkpoint knew records the file no longer has: continuing the chain from
          // what is left would hide that (the next checkpoint would agree with the shorter
          // file). The file stays as it is for `sessions verify` to report.
          f.broken = "the recording " + path + " " + cut + "; not appended to";
          audit_damage(path, f.broken, {{"session_id", id}});
        } else {
          if (tail->torn_tail) {
            // A line cut short by a crash mid-write, past the checkpointed head (otherwise
            // cut_off_before would have refused): it was never confirmed durable. Cut off so
            // that the chain goes on from the last whole record; said in the audit log.
            audit_damage(path,
                         "the recording " + path + " ended in a torn line (" +
                             std::to_string(tail->torn_bytes) + " bytes of record seq " +
                             std::to_string(tail->records + 1) +
                             ", after the checkpointed head): cut off, the chain goes on from "
                             "seq " +
                             std::to_string(tail->records),
                         {{"session_id", id},
                          {"seq", tail->records + 1},
                          {"torn_bytes", tail->torn_bytes}});
          }
          f.size = static_cast<off_t>(tail->good_bytes);
          f.truncate_pending = tail->torn_tail;
          f.seq = tail->records;
          if (tail->records > 0) f.prev = tail->last_hash;
        }
      }
      f.synced_size = f.size;
      f.synced_seq = f.seq;
      f.synced_prev = f.prev;
      f.loaded = true;
    }
    if (!f.broken.empty()) {
      *err = EPERM;
      *what = f.broken;
      return false;
    }
    if (f.fd < 0) {
      f.fd = fs->open(path);
      if (f.fd < 0) {
        *err = errno;
        *what = "open " + path;
        return false;
      }
    }
    if (f.truncate_pending) {
      if (fs->ftruncate(f.fd, f.size) != 0) {
        *err = errno;
        *what = "ftruncate " + path;
        return false;
      }
      f.truncate_pending = false;
    }
    return true;
  }

  // One pwritev per batch and file (more only after a short write).
  bool write_buffer(SessionFile& f, std::string_view buf, int* err) {
    off_t off = f.size;
    size_t done = 0;
    while (done < buf.size()) {
      struct iovec iov = {const_cast<char*>(buf.data()) + done, buf.size() - done};
      ssize_t n = fs->pwritev(f.fd, &iov, 1, off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        *err = n < 0 ? errno : ENOSPC;
        return false;
      }
      off += n;
      done += static_cast<size_t>(n);
      bytes_written += static_cast<uint64_t>(n);
    }
    return true;
  }

  void update_head(const std::string& id, SessionFile& f) {
    Head& h = heads[id];
    if (h.seq == f.synced_seq && h.sealed == f.sealed) return;
    h.seq = f.synced_seq;
    h.hash = f.synced_prev;
    if (f.sealed && !h.sealed) {
      sealed_order.push_back(id);
      if (sealed_order.size() > kSealedHeadsKept) {
        heads.erase(sealed_order.front());
        heads_changed.erase(sealed_order.front());
        sealed_order.pop_front();
      }
    }
    h.sealed = f.sealed;
    heads_changed[id] = {{"seq", h.seq}, {"hash", h.hash}, {"sealed", h.sealed}};
  }

  // After a successful fdatasync of f: what was written is synced.
  void mark_synced(const std::string& id, SessionFile& f) {
    ++batches_synced;  // fdatasync calls (one per file and group commit)
    f.dirty = false;
    f.synced_size = f.size;
    f.synced_seq = f.seq;
    f.synced_prev = f.prev;
    f.synced_items = f.written_items;
    update_head(id, f);
  }

  // One file's part of a batch between its pwritev and its acknowledgement.
  struct Staged {
    std::string id;
    SessionFile* f = nullptr;
    std::vector<Item*>* items = nullptr;
    bool ok = false;
    int err = 0;
    std::string what;
    off_t start_size = 0;
    uint64_t start_seq = 0;
    std::string start_prev;
    GapInfo gap_before;
    uint64_t lines = 0;
    bool wrote_gap = false;
    bool sealing = false;
    std::optional<Item> end_item;
    const Item* end_ptr = nullptr;  // moved into end_item
    // Written and to be fdatasync'ed before it is acknowledged (kAlways, or a seal).
    bool needs_sync() const { return ok && lines > 0; }
  };

  // Writes the pending gap record (if any), `items`, a pending session_end and its seal: the
  // records are formatted and written with one pwritev; finish() acknowledges or refuses them
  // (after the fdatasync, when one is needed: the caller runs those of a batch together).
  Staged stage(const std::string& id, std::vector<Item*>& items) {
    Staged st;
    st.id = id;
    SessionFile& f = files[id];
    st.f = &f;
    st.items = &items;
    // First load: positions f after the file's last good record, so the starting point
    // below (what a failed batch is cut back to) is the file's real end.
    st.ok = ensure_open(id, f, &st.err, &st.what);
    st.start_size = f.size;
    st.start_seq = f.seq;
    st.start_prev = f.prev;
    st.gap_before = f.gap;
    std::string& buf = batch_buf;
    buf.clear();
    st.end_item = std::move(f.pending_end);
    f.pending_end.reset();
    for (Item* it : items) {
      if (it->kind == "session_end") {
        st.end_ptr = it;
        st.end_item = std::move(*it);
      }
    }
    if (st.ok) {
      if (!f.gap.empty()) {
        RecordFields gap = RecordFields::from_json(f.gap.to_json());
        format_record(f, id, "recording_gap", gap, now(), buf);
        ++st.lines;
        st.wrote_gap = true;
      }
      for (Item* it : items) {
        if (it == st.end_ptr) continue;
        format_record(f, id, it->kind, it->fields, it->ts, buf);
        ++st.lines;
      }
      if (st.end_item) {
        format_record(f, id, "session_end", st.end_item->fields, st.end_item->ts, buf);
        RecordFields seal;
        seal.add("head", f.prev).add("records", f.seq);
        format_record(f, id, "seal", seal, st.end_item->ts, buf);
        st.lines += 2;
        st.sealing = true;
      }
      if (st.lines > 0) {
        st.ok = write_buffer(f, buf, &st.err);
        if (!st.ok) st.what = "write " + path_for(id);
      }
    }
    if (st.ok && st.lines > 0) {
      f.size = st.start_size + static_cast<off_t>(buf.size());
      f.dirty = true;
    }
    return st;
  }

  bool wants_sync(const Staged& st) const {
    return st.needs_sync() && (options.sync_mode == SyncMode::kAlways || st.sealing);
  }

  // `sync_err`: the fdatasync's errno (0: synced), when wants_sync(st).
  void finish(Staged& st, int sync_err) {
    SessionFile& f = *st.f;
    const std::string& id = st.id;
    std::vector<Item*>& items = *st.items;
    bool sync_failed = false;
    if (wants_sync(st)) {
      if (sync_err == 0) {
        mark_synced(id, f);
      } else {
        ++sync_errors;
        st.err = sync_err;
        st.what = "fdatasync " + path_for(id);
        if (options.sync_mode == SyncMode::kAlways) {
          st.ok = false;  // not acknowledged: cut back to what is known to be synced
        } else {
          sync_failed = true;
          note_failure(id, st.what + ": " + errno_text(st.err));  // records stay: page cache
        }
      }
    }
    if (!st.ok) {
      // Cut the failed batch off (never leave a torn or unacknowledged record as the end).
      const off_t good = options.sync_mode == SyncMode::kAlways ? f.synced_size : st.start_size;
      if (f.fd >= 0 && fs->ftruncate(f.fd, good) != 0) f.truncate_pending = true;
      if (options.sync_mode == SyncMode::kAlways) {
        f.size = f.synced_size;
        f.seq = f.synced_seq;
        f.prev = f.synced_prev;
        f.dirty = false;
      } else {
        f.size = st.start_size;
        f.seq = st.start_seq;
        f.prev = st.start_prev;
      }
      f.gap = st.gap_before;
      ++write_errors;
      const std::string message = st.what + ": " + errno_text(st.err);
      Status refused =
          f.broken.empty()
              ? recording_write_error(st.err, st.what)
              : Status(StatusCode::kInternal,
                       "the session recording cannot be continued: " + f.broken, "58030");
      for (Item* it : items) {
        if (it == st.end_ptr) continue;
        f.gap.add(it->kind, it->ts, static_cast<bool>(it->on_done), message);
        ++f.refused_items;
        ++records_refused;
        if (it->on_done) it->on_done(refused);
      }
      if (st.end_item && f.broken.empty()) f.pending_end = std::move(st.end_item);
      note_failure(id, message);
      return;
    }
    if (st.lines == 0) return;
    records_written += st.lines;
    ++batches_written;
    if (st.wrote_gap) {
      ++gaps_written;
      nlohmann::json a = f.gap.to_json();
      a["event"] = "recording_gap";
      a["session_id"] = id;
      a["message"] = "recording resumed after " + std::to_string(f.gap.records) +
                     " refused records (" + f.gap.reason + ")";
      audit(std::move(a));
      f.gap = GapInfo{};
    }
    if (!sync_failed) note_success();
    for (Item* it : items) {
      if (it == st.end_ptr) continue;
      ++f.written_items;
    }
    // Synced above (before the items were counted as written): they are synced too.
    if (wants_sync(st) && sync_err == 0) f.synced_items = f.written_items;
    for (Item* it : items) {
      if (it == st.end_ptr) continue;
      if (it->on_done) it->on_done(Status::ok());
    }
    if (st.sealing) {
      f.sealed = true;
      ++sessions_sealed;
      update_head(id, f);
    }
  }

  void write_file(const std::string& id, std::vector<Item*>& items) {
    Staged st = stage(id, items);
    int err = 0;
    if (wants_sync(st)) {
      syncing = true;
      if (fs->fdatasync(st.f->fd) != 0) err = errno;
      syncing = false;
    }
    finish(st, err);
  }

  // fdatasync of sync_fds (errors in sync_errs), all at once.
  void run_syncs() {
    if (sync_fds.empty()) return;
    syncing = true;
    syncer->run(sync_fds, &sync_errs);
    syncing = false;
  }

  // Groups a drained batch per session (order kept within a session), writes each file's part
  // with one pwritev, runs the fdatasyncs the batch needs together (group commit), then
  // acknowledges.
  void process(std::vector<Item>& batch) {
    if (options.before_sync) options.before_sync();
    per_file.clear();
    std::vector<std::promise<void>*> barriers;
    for (Item& item : batch) {
      if (item.barrier != nullptr) {
        barriers.push_back(item.barrier);
      } else {
        per_file[item.session_id].push_back(&item);
      }
    }
    std::vector<Staged> staged;
    staged.reserve(per_file.size());
    sync_fds.clear();
    for (auto& [id, items] : per_file) {
      if (auto f = files.find(id); f != files.end()) uncount(f->second);
      staged.push_back(stage(id, items));
      if (wants_sync(staged.back())) sync_fds.push_back(staged.back().f->fd);
    }
    run_syncs();
    size_t k = 0;
    for (Staged& st : staged) finish(st, wants_sync(st) ? sync_errs[k++] : 0);
    publish_batch();
    if (!barriers.empty()) {
      sync_all();
      retry_pending(/*force=*/true);
      write_checkpoint(/*force=*/true);
      for (auto* b : barriers) b->set_value();
    }
  }

  void close_sealed() {
    for (auto it = files.begin(); it != files.end();) {
      SessionFile& f = it->second;
      if (f.sealed && !f.dirty) {
        if (f.fd >= 0) fs->close(f.fd);
        it = files.erase(it);
      } else {
        ++it;
      }
    }
  }

  void count(const SessionFile& f, int sign) {
    auto add = [sign](size_t& n, bool yes) { n += yes ? static_cast<size_t>(sign) : 0; };
    add(files_dirty, f.dirty);
    add(files_with_gap, !f.gap.empty());
    add(files_pending, !f.gap.empty() || f.pending_end.has_value());
  }
  void count(const SessionFile& f) { count(f, 1); }
  void uncount(const SessionFile& f) { count(f, -1); }

  // REQUIRES: mu held.
  void publish_watermarks(const std::string& id, const SessionFile& f) {
    auto s = sessions.find(id);
    if (s == sessions.end()) return;
    s->second.wm.written = f.written_items;
    s->second.wm.refused = f.refused_items;
    s->second.wm.synced = f.synced_items;
  }

  // Watermarks and pending gaps for the callers, after every file was looked at.
  void publish() {
    files_dirty = files_with_gap = files_pending = 0;
    std::lock_guard lock(mu);
    for (auto& [id, f] : files) {
      count(f);
      publish_watermarks(id, f);
    }
    health.gaps_pending = files_with_gap;
  }

  // close_sealed() and publish() for the files of the batch just processed (per_file; each
  // was uncounted before it was staged).
  void publish_batch() {
    for (auto& [id, items] : per_file) {
      auto it = files.find(id);
      if (it == files.end()) continue;
      if (it->second.sealed && !it->second.dirty) {
        if (it->second.fd >= 0) fs->close(it->second.fd);
        files.erase(it);
      } else {
        count(it->second);
      }
    }
    std::lock_guard lock(mu);
    for (auto& [id, items] : per_file) {
      if (auto it = files.find(id); it != files.end()) publish_watermarks(id, it->second);
    }
    health.gaps_pending = files_with_gap;
  }

  // fdatasync of every written file, all at once.
  void sync_all() {
    sync_fds.clear();
    std::vector<std::pair<const std::string*, SessionFile*>> dirty;
    for (auto& [id, f] : files) {
      if (!f.dirty) continue;
      dirty.emplace_back(&id, &f);
      sync_fds.push_back(f.fd);
    }
    run_syncs();
    for (size_t i = 0; i < dirty.size(); ++i) {
      const std::string& id = *dirty[i].first;
      if (sync_errs[i] == 0) {
        mark_synced(id, *dirty[i].second);
      } else {
        ++sync_errors;
        note_failure(id, "fdatasync " + path_for(id) + ": " + errno_text(sync_errs[i]));
      }
    }
    last_sync = std::chrono::steady_clock::now();
    close_sealed();
    publish();
  }

  bool has_pending() const { return files_pending > 0; }

  // Writes pending gap records and seals (after a write error) without waiting for a new
  // record of the session: recording resumes by itself once writing works again.
  void retry_pending(bool force) {
    if (!has_pending()) return;
    if (!force && std::chrono::steady_clock::now() - last_failure < options.retry_interval) return;
    std::vector<std::string> ids;
    for (auto& [id, f] : files) {
      if (!f.gap.empty() || f.pending_end) ids.push_back(id);
    }
    for (const auto& id : ids) {
      std::vector<Item*> none;
      write_file(id, none);
    }
    close_sealed();
    publish();
  }

  bool any_dirty() const { return files_dirty > 0; }

  // Writer-side timers: interval sync, retries, checkpoint.
  void timers() {
    auto t = std::chrono::steady_clock::now();
    if (any_dirty() && t - last_sync >= options.sync_interval) sync_all();
    retry_pending(/*force=*/false);
    write_checkpoint(/*force=*/false);
  }

  std::optional<std::chrono::steady_clock::time_point> next_deadline() const {
    std::optional<std::chrono::steady_clock::time_point> d;
    auto take = [&](std::chrono::steady_clock::time_point t) {
      if (!d || t < *d) d = t;
    };
    if (any_dirty()) take(last_sync + options.sync_interval);
    if (has_pending()) take(last_failure + options.retry_interval);
    if (!heads_changed.empty()) take(last_checkpoint + options.checkpoint_interval);
    return d;
  }

  // ------------------------------------------------------------------------- checkpoint

  // Non-empty (what is wrong) when the checkpoint has a head for `id` that the file's end
  // `tail` does not reach, or reaches with another hash.
  std::string cut_off_before(const std::string& id, const RecordingTail& tail) const {
    auto it = heads.find(id);
    if (it == heads.end()) return "";
    const Head& h = it->second;
    if (h.seq > tail.records) {
      return "ends at seq " + std::to_string(tail.records) +
             (tail.torn_tail ? " (then a torn line)" : "") + " but the checkpoint recorded seq " +
             std::to_string(h.seq) + ": records were cut off";
    }
    if (h.seq == tail.records && h.seq > 0 && h.hash != tail.last_hash) {
      return "has another record at seq " + std::to_string(h.seq) +
             " than the checkpointed chain head";
    }
    return "";
  }

  void load_checkpoint() {
    auto cp = read_checkpoint(options.checkpoint_path);
    if (!cp.is_ok()) {
      std::error_code ec;
      size_t recordings = 0;
      for (const auto& e : std::filesystem::directory_iterator(options.dir, ec)) {
        recordings += e.path().extension() == ".jsonl" ? 1 : 0;
      }
      if (cp.status().code() == StatusCode::kNotFound) {
        if (recordings == 0) return;  // a first start
        audit_damage(options.checkpoint_path,
                     "the recording checkpoint " + options.checkpoint_path + " is missing while " +
                         std::to_string(recordings) +
                         " recordings exist: their ends cannot be compared with a checkpointed "
                         "head (a truncation of them goes unnoticed)");
        return;
      }
      // Corrupt: kept aside (the next checkpoint replaces the file) and said.
      const std::string kept = options.checkpoint_path + ".corrupt-" + std::to_string(now());
      std::filesystem::rename(options.checkpoint_path, kept, ec);
      audit_damage(options.checkpoint_path,
                   cp.status().message() + " (kept as " + (ec ? std::string("-") : kept) +
                       "): the " + std::to_string(recordings) +
                       " recordings written before cannot be compared with a checkpointed head "
                       "(a truncation of them goes unnoticed)");
      return;
    }
    for (const auto& [id, h] : cp->heads) {
      if (::access(path_for(id).c_str(), F_OK) != 0) continue;  // deleted by retention
      heads[id] = Head{h.seq, h.hash, h.sealed};
      if (h.sealed) {
        sealed_order.push_back(id);
        note_ended(id);
      }
    }
  }

  void write_checkpoint(bool force) {
    if (heads_changed.empty()) return;
    auto t = std::chrono::steady_clock::now();
    if (!force && t - last_checkpoint < options.checkpoint_interval) return;
    last_checkpoint = t;
    nlohmann::json sessions_json = nlohmann::json::object();
    for (const auto& [id, h] : heads) {
      sessions_json[id] = {{"seq", h.seq}, {"hash", h.hash}, {"sealed", h.sealed}};
    }
    const int64_t ts = now();
    const std::string body =
        nlohmann::json{{"version", 1}, {"written_ms", ts}, {"sessions", std::move(sessions_json)}}
            .dump() +
        "\n";
    syncing = true;  // the replacement is fsync'ed
    const bool replaced = replace_file_atomically(options.checkpoint_path, body, 0600).is_ok();
    syncing = false;
    if (!replaced) {
      ++checkpoint_errors;
      return;  // retried at the next interval; the old checkpoint is still a valid lower bound
    }
    ++checkpoints_written;
    audit({{"event", "recording_checkpoint"},
           {"message", "recording chain heads"},
           {"heads", std::move(heads_changed)}});
    heads_changed = nlohmann::json::object();
  }

  // ---------------------------------------------------------------------------- loop

  // REQUIRES: write_mu held, `lock` holds mu and the queue is not empty. Group commit:
  // everything drained in one go shares one pwritev (and in kAlways one fdatasync) per file.
  void write_queue(std::unique_lock<std::mutex>& lock) {
    batch_items.swap(queue);
    queue_needs_writer = false;
    lock.unlock();
    process(batch_items);
    batch_items.clear();
  }

  void run() {
    std::unique_lock wlock(write_mu);
    std::unique_lock lock(mu);
    while (true) {
      if (stopping) take_deferred();
      if (!queue.empty()) {
        write_queue(lock);
      } else if (stopping) {
        break;
      } else {
        lock.unlock();
      }
      timers();
      lock.lock();
      if (!queue.empty() || stopping) continue;
      auto deadline = next_deadline();
      writer_wakes_at = deadline.value_or(std::chrono::steady_clock::time_point::max());
      // Callers may write (commit()) while this thread sleeps; they wake it when what they
      // wrote needs a timer earlier than writer_wakes_at.
      wlock.unlock();
      if (deadline) {
        cv.wait_until(lock, *deadline);
      } else {
        cv.wait(lock);
      }
      writer_wakes_at = std::chrono::steady_clock::time_point::min();
      lock.unlock();
      wlock.lock();
      lock.lock();
    }
    lock.unlock();
    sync_all();
    retry_pending(/*force=*/true);
    sync_all();
    write_checkpoint(/*force=*/true);
    for (auto& [id, f] : files) {
      if (f.fd >= 0) fs->close(f.fd);
    }
    files.clear();
    files_dirty = files_with_gap = files_pending = 0;
  }

  // REQUIRES: mu held. `defer`: the caller calls commit() after its batch of appends.
  Status push(Item item, bool keep, bool defer = false) {
    auto s = sessions.find(item.session_id);
    if (!keep && queue.size() + deferred.size() >= options.queue_capacity) {
      ++records_rejected_queue_full;
      {
        if (s != sessions.end()) {
          s->second.dropped.add(item.kind, item.ts, static_cast<bool>(item.on_done),
                                "recording queue full");
        }
      }
      return resource_exhausted("recording queue is full");
    }
    if (s != sessions.end() && !s->second.dropped.empty()) {
      // The drops are recorded before the next record of the session: nothing goes missing
      // without a mark.
      Item gap{item.session_id,
               "recording_gap",
               RecordFields::from_json(s->second.dropped.to_json()),
               item.ts,
               {},
               nullptr};
      s->second.dropped = GapInfo{};
      ++s->second.wm.queued;
      if (defer) {
        deferred.push_back(std::move(gap));
      } else {
        enqueue(std::move(gap));
      }
    }
    if (s != sessions.end()) ++s->second.wm.queued;
    if (defer) {
      deferred.push_back(std::move(item));
      return Status::ok();
    }
    // A queue that was not empty has a wake-up or a commit() coming already.
    const bool was_empty = queue.empty();
    take_deferred();  // the records appended before this one are written before it
    enqueue(std::move(item));
    if (was_empty) cv.notify_one();
    return Status::ok();
  }

  // REQUIRES: mu held.
  void enqueue(Item item) {
    if (options.sync_mode == SyncMode::kAlways || item.kind == "session_end" ||
        item.barrier != nullptr) {
      queue_needs_writer = true;
    }
    queue.push_back(std::move(item));
  }
  void take_deferred() {
    for (Item& item : deferred) enqueue(std::move(item));
    deferred.clear();
  }

  void commit() {
    // An fdatasync (milliseconds) is not waited for here: the writer thread writes the queue
    // once it is done (it looks at the queue before it sleeps).
    if (syncing.load()) {
      {
        std::lock_guard lock(mu);
        take_deferred();
      }
      cv.notify_one();
      return;
    }
    std::unique_lock wlock(write_mu);
    std::unique_lock lock(mu);
    take_deferred();
    if (queue.empty()) return;
    if (queue_needs_writer) {
      lock.unlock();
      cv.notify_one();
      return;
    }
    write_queue(lock);
    const auto deadline = next_deadline();
    lock.lock();
    const bool wake = deadline && *deadline < writer_wakes_at;
    lock.unlock();
    wlock.unlock();
    if (wake) cv.notify_one();
  }
};

Recorder::Recorder(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Recorder::~Recorder() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
}

Result<std::unique_ptr<Recorder>> Recorder::open(RecorderOptions options) {
  if (options.dir.empty()) return invalid_argument("recording dir is empty");
  if (options.queue_capacity == 0) {
    return invalid_argument("recording queue_capacity must be positive");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return unavailable("cannot create " + options.dir + ": " + ec.message());
  ::chmod(options.dir.c_str(), 0700);
  if (::access(options.dir.c_str(), W_OK) != 0) {
    return unavailable("recording dir " + options.dir + " is not writable");
  }
  if (options.checkpoint_path.empty()) {
    std::filesystem::path d(options.dir);
    while (!d.empty() && d.filename().empty()) d = d.parent_path();  // trailing '/'
    options.checkpoint_path = (d.parent_path() / "recording_checkpoint.json").string();
  }
  if (!options.fs) options.fs = posix_recording_fs();
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->fs = impl->options.fs.get();
  impl->syncer = std::make_unique<ParallelSync>(impl->fs, Impl::kSyncHelpers, &impl->sync_latency);
  impl->health.sync_mode = impl->options.sync_mode;
  impl->health.sync_interval_ms = impl->options.sync_interval.count();
  impl->load_checkpoint();
  std::unique_ptr<Recorder> r(new Recorder(std::move(impl)));
  Impl* raw = r->impl_.get();
  raw->writer = std::thread([raw] { raw->run(); });
  return r;
}

Status Recorder::start_session(const SessionStart& s) {
  if (!valid_session_id(s.session_id)) return invalid_argument("bad recording session id");
  std::lock_guard lock(impl_->mu);
  if (impl_->sessions.count(s.session_id) != 0) {
    return failed_precondition("session " + s.session_id + " is already recording");
  }
  impl_->sessions[s.session_id] = Impl::SessionPolicy{s.level, std::max(s.row_cap, 0), 0, false};
  if (s.level != policy::RecordingLevel::kOff) {
    nlohmann::json fields = {{"identity", s.identity},
                             {"groups", s.groups},
                             {"target", s.target},
                             {"client_addr", s.client_addr},
                             {"tls", s.tls},
                             {"policy", s.policy},
                             {"recording", protocol::enum_name(s.level)},
                             {"row_cap", s.row_cap}};
    Status st = impl_->push(Impl::Item{s.session_id,
                                       "session_start",
                                       RecordFields::from_json(fields),
                                       impl_->now(),
                                       {},
                                       nullptr},
                            /*keep=*/true);
    if (!st.is_ok()) impl_->sessions.erase(s.session_id);
    return st;
  }
  return Status::ok();
}

Status Recorder::resume_session(const SessionStart& s, std::string_view reason) {
  if (!valid_session_id(s.session_id)) return invalid_argument("bad recording session id");
  const std::string path = impl_->path_for(s.session_id);
  if (s.level == policy::RecordingLevel::kOff || ::access(path.c_str(), F_OK) != 0) {
    return start_session(s);
  }
  auto sealed = [&] {
    return Status(
        StatusCode::kFailedPrecondition,
        "recording of session " + s.session_id + " is sealed; a sealed session cannot be resumed",
        "57P01");
  };
  {
    std::lock_guard lock(impl_->mu);
    // Ended here or sealed per the checkpoint, whatever follows the seal in the file now.
    if (impl_->ended.count(s.session_id) != 0) return sealed();
  }
  // The last record only: re-registering many sessions with long recordings must not read
  // them whole (the caller is cp's event loop). The writer continues the chain from it.
  auto tail = read_recording_tail(path);
  if (!tail.is_ok()) return tail.status();
  if (!tail->ok) {
    return failed_precondition("the last record of the recording of session " + s.session_id +
                               " does not verify (" + tail->reason + "); not resumed");
  }
  if (tail->last_kind == "seal" || tail->last_kind == "session_end") return sealed();
  std::lock_guard lock(impl_->mu);
  if (impl_->sessions.count(s.session_id) != 0) {
    return failed_precondition("session " + s.session_id + " is already recording");
  }
  impl_->sessions[s.session_id] = Impl::SessionPolicy{s.level, std::max(s.row_cap, 0), 0, false};
  RecordFields fields;
  fields.add("reason", reason);
  return impl_->push(
      Impl::Item{s.session_id, "session_resumed", std::move(fields), impl_->now(), {}, nullptr},
      /*keep=*/true);
}

Status Recorder::append(const std::string& session_id, const std::string& kind,
                        nlohmann::json fields, AppendOptions options) {
  if (!fields.is_object()) return invalid_argument("recording event fields must be an object");
  // Serialised here, on the caller's thread: the tree is freed by the thread that built it and
  // the writer only merges, hashes and writes.
  return append(session_id, kind, RecordFields::from_json(fields), std::move(options));
}

Status Recorder::append(const std::string& session_id, const std::string& kind, RecordFields fields,
                        AppendOptions options) {
  if (!valid_kind(kind) || kind == "session_start" || kind == "seal") {
    return invalid_argument("bad recording event kind");
  }
  auto done_now = [&options] {
    if (options.on_done) options.on_done(Status::ok());
    return Status::ok();
  };
  std::unique_lock lock(impl_->mu);
  auto it = impl_->sessions.find(session_id);
  if (it == impl_->sessions.end()) {
    return failed_precondition("session " + session_id + " is not recording");
  }
  Impl::SessionPolicy& sp = it->second;
  if (sp.level == policy::RecordingLevel::kOff) {
    if (kind == "session_end") impl_->sessions.erase(it);
    lock.unlock();
    return done_now();
  }
  const int64_t ts = impl_->now();
  if (kind == "rows") {
    if (sp.level != policy::RecordingLevel::kFull) {
      lock.unlock();
      return done_now();
    }
    const int64_t n = fields.rows_count();
    if (n < 0) return invalid_argument("rows event without a rows array");
    const int64_t keep = std::min(n, std::max<int64_t>(sp.row_cap - sp.rows_in_statement, 0));
    const int64_t cut = n - keep;
    if (cut > 0 && keep == 0 && sp.cap_noted) {
      // Past the cap and the cut already recorded for this statement: count only.
      sp.rows_in_statement += n;
      impl_->rows_dropped_cap += static_cast<uint64_t>(cut);
      lock.unlock();
      return done_now();
    }
    if (cut > 0) {
      fields.cut_rows(keep);
      fields.add("truncated", cut);
    }
    PGW_RETURN_IF_ERROR(impl_->push(
        Impl::Item{session_id, kind, std::move(fields), ts, std::move(options.on_done), nullptr},
        options.keep, options.defer));
    sp.rows_in_statement += n;
    if (cut > 0) {
      sp.cap_noted = true;
      impl_->rows_dropped_cap += static_cast<uint64_t>(cut);
    }
    return Status::ok();
  }
  // session_end is never refused: the session must be sealed.
  PGW_RETURN_IF_ERROR(impl_->push(
      Impl::Item{session_id, kind, std::move(fields), ts, std::move(options.on_done), nullptr},
      options.keep || kind == "session_end", options.defer));
  if (kind == "statement") {
    sp.rows_in_statement = 0;
    sp.cap_noted = false;
  }
  if (kind == "session_end") {
    impl_->sessions.erase(it);
    impl_->note_ended(session_id);
  }
  return Status::ok();
}

Status Recorder::flush() {
  std::promise<void> done;
  auto f = done.get_future();
  {
    std::lock_guard lock(impl_->mu);
    Impl::Item item;
    item.barrier = &done;
    impl_->take_deferred();
    impl_->enqueue(std::move(item));  // a barrier is never refused
  }
  impl_->cv.notify_one();
  f.wait();
  return impl_->write_errors.load() == 0 ? Status::ok()
                                         : unavailable("recording writes have failed");
}

void Recorder::commit() { impl_->commit(); }

std::string Recorder::path_for(const std::string& session_id) const {
  return impl_->path_for(session_id);
}

const std::string& Recorder::checkpoint_path() const { return impl_->options.checkpoint_path; }

bool Recorder::session_open(const std::string& session_id) const {
  std::lock_guard lock(impl_->mu);
  return impl_->sessions.count(session_id) != 0;
}

Watermark Recorder::watermark(const std::string& session_id) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->sessions.find(session_id);
  return it == impl_->sessions.end() ? Watermark{} : it->second.wm;
}

RecorderHealth Recorder::health() const {
  std::lock_guard lock(impl_->mu);
  RecorderHealth h = impl_->health;
  h.records_refused = impl_->records_refused.load();
  h.records_dropped = impl_->records_rejected_queue_full.load();
  h.gaps_written = impl_->gaps_written.load();
  return h;
}

size_t Recorder::queue_depth() const {
  std::lock_guard lock(impl_->mu);
  return impl_->queue.size() + impl_->deferred.size();
}

metrics::HistogramSnapshot Recorder::sync_latency() const { return impl_->sync_latency.snapshot(); }

#define PGW_DEFINE_GETTER(name) \
  uint64_t Recorder::name() const { return impl_->name.load(); }
PGW_RECORDER_COUNTERS(PGW_DEFINE_GETTER)
#undef PGW_DEFINE_GETTER

}  // namespace pgwarden::recording
