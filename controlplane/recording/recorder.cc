#include "controlplane/recording/recorder.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <optional>
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

std::string errno_text(int err) {
  const char* name = ::strerrorname_np(err);
  return std::string(std::strerror(err)) + " (" + (name != nullptr ? name : "?") + ")";
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
  std::string msg = "the session recording could not be written (" + std::string(what) + ": " +
                    errno_text(err) +
                    "); statements that need recording are refused until it can be written "
                    "again, then recording resumes with a gap record";
  if (err == ENOSPC || err == EDQUOT) {
    return Status(StatusCode::kResourceExhausted, std::move(msg), "53100");
  }
  return Status(StatusCode::kInternal, std::move(msg), "58030");
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

std::string_view recording_level_name(policy::RecordingLevel level) {
  switch (level) {
    case policy::RecordingLevel::kOff:
      return "off";
    case policy::RecordingLevel::kMetadata:
      return "metadata";
    case policy::RecordingLevel::kFull:
      return "full";
  }
  return "off";
}

struct Recorder::Impl {
  RecorderOptions options;
  RecordingFs* fs = nullptr;

  struct Item {
    std::string session_id;
    std::string kind;
    nlohmann::json fields;
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

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  std::map<std::string, SessionPolicy> sessions;
  bool stopping = false;
  std::thread writer;

  // Writer thread only.
  std::map<std::string, SessionFile> files;
  std::chrono::steady_clock::time_point last_sync = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_failure;
  std::chrono::steady_clock::time_point last_checkpoint;
  std::map<std::string, Head> heads;
  std::deque<std::string> sealed_order;  // bounded memory of sealed sessions' heads
  nlohmann::json heads_changed = nlohmann::json::object();

  // Guarded by mu.
  RecorderHealth health;

#define PGW_DEFINE_COUNTER(name) std::atomic<uint64_t> name{0};
  PGW_RECORDER_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER
  metrics::LatencyHistogram sync_latency;

  static constexpr size_t kSealedHeadsKept = 1024;

  int64_t now() const { return options.clock_ms ? options.clock_ms() : system_now_ms(); }
  std::string path_for(const std::string& id) const { return options.dir + "/" + id + ".jsonl"; }
  void audit(nlohmann::json j) {
    if (!options.audit) return;
    j["ts"] = now();
    options.audit(j);
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

  // Chains and serialises one record onto f's written state.
  std::string format_record(SessionFile& f, const std::string& id, std::string_view kind,
                            nlohmann::json rec, int64_t ts) {
    rec["seq"] = f.seq + 1;
    rec["ts"] = ts;
    rec["session_id"] = id;
    rec["kind"] = kind;
    rec["prev"] = f.prev;
    rec.erase("hash");
    // Canonical order is alphabetical, so "hash" goes between the members that sort before it
    // and those after it: serialize the two halves once and splice, instead of serializing
    // the record twice (without "hash" to chain it, then with it to write it).
    auto& members = rec.get_ref<nlohmann::json::object_t&>();
    nlohmann::json before = nlohmann::json::object();
    auto& before_members = before.get_ref<nlohmann::json::object_t&>();
    while (!members.empty() && members.begin()->first < "hash") {
      before_members.insert(members.extract(members.begin()));
    }
    const std::string lo = canonical_bytes(before);  // "{...}"
    const std::string hi = canonical_bytes(rec);
    const std::string_view lo_in = std::string_view(lo).substr(1, lo.size() - 2);
    const std::string_view hi_in = std::string_view(hi).substr(1, hi.size() - 2);
    std::string canon;
    canon.reserve(lo.size() + hi.size());
    canon += '{';
    canon += lo_in;
    if (!lo_in.empty() && !hi_in.empty()) canon += ',';
    canon += hi_in;
    canon += '}';
    std::string hash = chain_hash(f.prev, canon);
    std::string line;
    line.reserve(canon.size() + 80);
    line += '{';
    line += lo_in;
    if (!lo_in.empty()) line += ',';
    line += R"("hash":")";
    line += hash;
    line += '"';
    if (!hi_in.empty()) line += ',';
    line += hi_in;
    line += "}\n";
    f.prev = std::move(hash);
    ++f.seq;
    return line;
  }

  // Verifies an existing file and positions f after its last good record; opens it.
  bool ensure_open(const std::string& id, SessionFile& f, int* err, std::string* what) {
    const std::string path = path_for(id);
    if (!f.loaded) {
      f.prev = std::string(kGenesisHash);
      if (::access(path.c_str(), F_OK) == 0) {
        VerifyReport report;
        auto existing = read_recording(path, &report);
        if (!existing.is_ok() || !report.ok) {
          f.broken = "the existing recording " + path + " does not verify; not appended to";
        } else if (!existing->empty() && existing->back().value("kind", "") == "seal") {
          f.broken = "the recording " + path + " is sealed; nothing may follow its seal";
        } else {
          struct stat st;
          off_t size = ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
          f.size = size - static_cast<off_t>(report.torn_bytes);
          f.truncate_pending = report.torn_tail;
          f.seq = report.records;
          if (report.records > 0) f.prev = report.last_hash;
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

  // One pwritev per batch (more only for short writes or more than IOV_MAX lines).
  bool write_lines(SessionFile& f, const std::vector<std::string>& lines, int* err) {
    off_t off = f.size;
    size_t idx = 0;
    size_t skip = 0;
    std::vector<struct iovec> iov;
    while (idx < lines.size()) {
      iov.clear();
      for (size_t i = idx; i < lines.size() && iov.size() < IOV_MAX; ++i) {
        const std::string& l = lines[i];
        size_t from = i == idx ? skip : 0;
        iov.push_back({const_cast<char*>(l.data()) + from, l.size() - from});
      }
      ssize_t n = fs->pwritev(f.fd, iov.data(), static_cast<int>(iov.size()), off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        *err = n < 0 ? errno : ENOSPC;
        return false;
      }
      off += n;
      bytes_written += static_cast<uint64_t>(n);
      size_t left = static_cast<size_t>(n);
      while (left > 0) {
        size_t rest = lines[idx].size() - skip;
        if (left >= rest) {
          left -= rest;
          ++idx;
          skip = 0;
        } else {
          skip += left;
          left = 0;
        }
      }
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

  // fdatasync of a written file. False (and the error noted) when it failed.
  bool sync_file(const std::string& id, SessionFile& f, int* err) {
    if (!f.dirty) return true;
    auto t0 = std::chrono::steady_clock::now();
    int rc = fs->fdatasync(f.fd);
    int saved = errno;
    sync_latency.observe_ns(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count()));
    if (rc != 0) {
      *err = saved;
      ++sync_errors;
      return false;
    }
    ++batches_synced;  // fdatasync calls (one per file and group commit)
    f.dirty = false;
    f.synced_size = f.size;
    f.synced_seq = f.seq;
    f.synced_prev = f.prev;
    f.synced_items = f.written_items;
    update_head(id, f);
    return true;
  }

  // Writes the pending gap record (if any), `items`, a pending session_end and its seal.
  void write_file(const std::string& id, std::vector<Item*>& items) {
    SessionFile& f = files[id];
    int err = 0;
    std::string what;
    // First load: positions f after the file's last good record, so the starting point
    // below (what a failed batch is cut back to) is the file's real end.
    bool ok = ensure_open(id, f, &err, &what);
    const off_t start_size = f.size;
    const uint64_t start_seq = f.seq;
    const std::string start_prev = f.prev;
    const GapInfo gap_before = f.gap;
    std::vector<std::string> lines;
    bool wrote_gap = false;
    bool sealing = false;
    std::optional<Item> end_item = std::move(f.pending_end);
    f.pending_end.reset();
    const Item* end_ptr = nullptr;  // moved into end_item
    for (Item* it : items) {
      if (it->kind == "session_end") {
        end_ptr = it;
        end_item = std::move(*it);
      }
    }
    if (ok) {
      if (!f.gap.empty()) {
        lines.push_back(format_record(f, id, "recording_gap", f.gap.to_json(), now()));
        wrote_gap = true;
      }
      for (Item* it : items) {
        if (it == end_ptr) continue;
        lines.push_back(format_record(f, id, it->kind, std::move(it->fields), it->ts));
      }
      if (end_item) {
        lines.push_back(
            format_record(f, id, "session_end", std::move(end_item->fields), end_item->ts));
        nlohmann::json seal = {{"records", f.seq}, {"head", f.prev}};
        lines.push_back(format_record(f, id, "seal", std::move(seal), end_item->ts));
        sealing = true;
      }
      if (!lines.empty()) {
        ok = write_lines(f, lines, &err);
        if (!ok) what = "write " + path_for(id);
      }
    }
    bool sync_failed = false;
    if (ok && !lines.empty()) {
      f.size = start_size;
      for (const auto& l : lines) f.size += static_cast<off_t>(l.size());
      f.dirty = true;
      if (options.sync_mode == SyncMode::kAlways || sealing) {
        if (!sync_file(id, f, &err)) {
          what = "fdatasync " + path_for(id);
          if (options.sync_mode == SyncMode::kAlways) {
            ok = false;  // not acknowledged: cut back to what is known to be synced
          } else {
            sync_failed = true;
            note_failure(id, what + ": " + errno_text(err));  // records stay: in page cache
          }
        }
      }
    }
    if (!ok) {
      // Cut the failed batch off (never leave a torn or unacknowledged record as the end).
      const off_t good = options.sync_mode == SyncMode::kAlways ? f.synced_size : start_size;
      if (f.fd >= 0 && fs->ftruncate(f.fd, good) != 0) f.truncate_pending = true;
      if (options.sync_mode == SyncMode::kAlways) {
        f.size = f.synced_size;
        f.seq = f.synced_seq;
        f.prev = f.synced_prev;
        f.dirty = false;
      } else {
        f.size = start_size;
        f.seq = start_seq;
        f.prev = start_prev;
      }
      f.gap = gap_before;
      ++write_errors;
      const std::string message = what + ": " + errno_text(err);
      Status refused =
          f.broken.empty()
              ? recording_write_error(err, what)
              : Status(StatusCode::kInternal,
                       "the session recording cannot be continued: " + f.broken, "58030");
      for (Item* it : items) {
        if (it == end_ptr) continue;
        f.gap.add(it->kind, it->ts, static_cast<bool>(it->on_done), message);
        ++f.refused_items;
        ++records_refused;
        if (it->on_done) it->on_done(refused);
      }
      if (end_item && f.broken.empty()) f.pending_end = std::move(end_item);
      note_failure(id, message);
      return;
    }
    if (lines.empty()) return;
    records_written += lines.size();
    ++batches_written;
    if (wrote_gap) {
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
      if (it == end_ptr) continue;
      ++f.written_items;
      if (it->on_done) it->on_done(Status::ok());
    }
    if (sealing) {
      f.sealed = true;
      ++sessions_sealed;
      update_head(id, f);
    }
  }

  // Groups a drained batch per session (order kept within a session) and writes it.
  void process(std::deque<Item>& batch) {
    if (options.before_sync) options.before_sync();
    std::map<std::string, std::vector<Item*>> per_file;
    std::vector<std::promise<void>*> barriers;
    for (Item& item : batch) {
      if (item.barrier != nullptr) {
        barriers.push_back(item.barrier);
      } else {
        per_file[item.session_id].push_back(&item);
      }
    }
    for (auto& [id, items] : per_file) write_file(id, items);
    close_sealed();
    publish();
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

  // Watermarks and pending gaps for the callers.
  void publish() {
    uint64_t pending = 0;
    std::lock_guard lock(mu);
    for (auto& [id, f] : files) {
      if (!f.gap.empty()) ++pending;
      auto s = sessions.find(id);
      if (s == sessions.end()) continue;
      s->second.wm.written = f.written_items;
      s->second.wm.refused = f.refused_items;
      s->second.wm.synced = f.synced_items;
    }
    health.gaps_pending = pending;
  }

  void sync_all() {
    for (auto& [id, f] : files) {
      int err = 0;
      if (!f.dirty) continue;
      if (!sync_file(id, f, &err))
        note_failure(id, "fdatasync " + path_for(id) + ": " + errno_text(err));
    }
    last_sync = std::chrono::steady_clock::now();
    close_sealed();
    publish();
  }

  bool has_pending() const {
    return std::any_of(files.begin(), files.end(), [](const auto& e) {
      return !e.second.gap.empty() || e.second.pending_end.has_value();
    });
  }

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

  bool any_dirty() const {
    return std::any_of(files.begin(), files.end(), [](const auto& e) { return e.second.dirty; });
  }

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

  void load_checkpoint() {
    auto cp = read_checkpoint(options.checkpoint_path);
    if (!cp.is_ok()) return;
    for (const auto& [id, h] : cp->heads) {
      if (::access(path_for(id).c_str(), F_OK) != 0) continue;  // deleted by retention
      heads[id] = Head{h.seq, h.hash, h.sealed};
      if (h.sealed) sealed_order.push_back(id);
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
    if (!replace_file_atomically(options.checkpoint_path, body, 0600).is_ok()) {
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

  void run() {
    std::unique_lock lock(mu);
    while (true) {
      if (queue.empty()) {
        if (stopping) break;
        auto deadline = next_deadline();
        if (deadline) {
          cv.wait_until(lock, *deadline);
        } else {
          cv.wait(lock);
        }
        if (queue.empty()) {
          lock.unlock();
          timers();
          lock.lock();
        }
        continue;
      }
      std::deque<Item> batch;
      batch.swap(queue);
      lock.unlock();
      // Group commit: everything drained in one go shares one pwritev (and in kAlways one
      // fdatasync) per file.
      process(batch);
      timers();
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
  }

  // REQUIRES: mu held.
  Status push(Item item, bool keep) {
    auto s = sessions.find(item.session_id);
    if (!keep && queue.size() >= options.queue_capacity) {
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
      Item gap{item.session_id, "recording_gap", s->second.dropped.to_json(), item.ts, {}, nullptr};
      s->second.dropped = GapInfo{};
      ++s->second.wm.queued;
      queue.push_back(std::move(gap));
    }
    if (s != sessions.end()) ++s->second.wm.queued;
    const bool was_empty = queue.empty();
    queue.push_back(std::move(item));
    if (was_empty) cv.notify_one();
    return Status::ok();
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
                             {"recording", recording_level_name(s.level)},
                             {"row_cap", s.row_cap}};
    Status st = impl_->push(
        Impl::Item{s.session_id, "session_start", std::move(fields), impl_->now(), {}, nullptr},
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
  VerifyReport report;
  auto records = read_recording(path, &report);
  if (!records.is_ok()) return records.status();
  if (!report.ok) {
    return failed_precondition("recording of session " + s.session_id + " does not verify at seq " +
                               std::to_string(report.bad_seq) + " (" + report.reason +
                               "); not resumed");
  }
  if (!records->empty()) {
    const std::string last = records->back().value("kind", "");
    if (last == "seal" || last == "session_end") {
      return failed_precondition("recording of session " + s.session_id +
                                 " is sealed; a sealed session cannot be resumed");
    }
  }
  std::lock_guard lock(impl_->mu);
  if (impl_->sessions.count(s.session_id) != 0) {
    return failed_precondition("session " + s.session_id + " is already recording");
  }
  impl_->sessions[s.session_id] = Impl::SessionPolicy{s.level, std::max(s.row_cap, 0), 0, false};
  return impl_->push(Impl::Item{s.session_id,
                                "session_resumed",
                                {{"reason", std::string(reason)}},
                                impl_->now(),
                                {},
                                nullptr},
                     /*keep=*/true);
}

Status Recorder::append(const std::string& session_id, const std::string& kind,
                        nlohmann::json fields, AppendOptions options) {
  if (!fields.is_object()) return invalid_argument("recording event fields must be an object");
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
    auto rows = fields.find("rows");
    if (rows == fields.end() || !rows->is_array()) {
      return invalid_argument("rows event without a rows array");
    }
    const int64_t n = static_cast<int64_t>(rows->size());
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
      rows->erase(rows->begin() + keep, rows->end());
      fields["truncated"] = cut;
    }
    PGW_RETURN_IF_ERROR(impl_->push(
        Impl::Item{session_id, kind, std::move(fields), ts, std::move(options.on_done), nullptr},
        options.keep));
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
      options.keep || kind == "session_end"));
  if (kind == "statement") {
    sp.rows_in_statement = 0;
    sp.cap_noted = false;
  }
  if (kind == "session_end") impl_->sessions.erase(it);
  return Status::ok();
}

Status Recorder::flush() {
  std::promise<void> done;
  auto f = done.get_future();
  {
    std::lock_guard lock(impl_->mu);
    Impl::Item item;
    item.barrier = &done;
    impl_->queue.push_back(std::move(item));  // a barrier is never refused
  }
  impl_->cv.notify_one();
  f.wait();
  return impl_->write_errors.load() == 0 ? Status::ok()
                                         : unavailable("recording writes have failed");
}

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
  return impl_->queue.size();
}

metrics::HistogramSnapshot Recorder::sync_latency() const { return impl_->sync_latency.snapshot(); }

#define PGW_DEFINE_GETTER(name) \
  uint64_t Recorder::name() const { return impl_->name.load(); }
PGW_RECORDER_COUNTERS(PGW_DEFINE_GETTER)
#undef PGW_DEFINE_GETTER

}  // namespace pgwarden::recording
