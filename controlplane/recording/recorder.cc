#include "controlplane/recording/recorder.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <thread>

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

}  // namespace

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

  struct Item {
    std::string session_id;
    std::string kind;
    nlohmann::json fields;
    int64_t ts = 0;
    std::promise<void>* barrier = nullptr;  // flush marker when set
  };
  // Caller-side view of a session (level, cap accounting).
  struct SessionPolicy {
    policy::RecordingLevel level;
    int row_cap;
    int64_t rows_in_statement = 0;
    bool cap_noted = false;
  };
  // Writer-side state of an open file.
  struct SessionFile {
    int fd = -1;
    uint64_t seq = 0;
    std::string prev;
    std::string pending;
    bool failed = false;
    bool closing = false;
  };

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  std::map<std::string, SessionPolicy> sessions;
  bool stopping = false;
  std::thread writer;
  // What the writer is waiting for (guarded by mu), so that push() wakes it only when the
  // record changes what it does: the first record after idling starts the batch_interval
  // clock; otherwise only reaching batch_records unsynced records does (one futex wake and
  // context switch per group commit instead of one per record).
  enum class WriterState { kBusy, kIdle, kTimedWait };
  WriterState writer_state = WriterState::kBusy;
  size_t writer_unsynced = 0;  // unsynced records when it started a timed wait

  // Writer thread only.
  std::map<std::string, SessionFile> files;
  size_t unsynced = 0;
  std::chrono::steady_clock::time_point first_unsynced;

#define PGW_DEFINE_COUNTER(name) std::atomic<uint64_t> name{0};
  PGW_RECORDER_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER

  int64_t now() const { return options.clock_ms ? options.clock_ms() : system_now_ms(); }
  std::string path_for(const std::string& id) const { return options.dir + "/" + id + ".jsonl"; }

  void report_failure(const std::string& session_id, const std::string& message) {
    ++write_errors;
    if (options.audit) {
      options.audit({{"event", "recording_write_failed"},
                     {"session_id", session_id},
                     {"message", message},
                     {"ts", now()}});
    }
  }

  // Opens (or resumes, continuing its chain) the session's file.
  void open_file(const std::string& id, SessionFile* f) {
    std::string path = path_for(id);
    if (::access(path.c_str(), F_OK) == 0) {
      VerifyReport report;
      auto existing = read_recording(path, &report);
      if (!existing || !report.ok) {
        f->failed = true;
        report_failure(id, "existing recording does not verify; refusing to append");
        return;
      }
      if (report.torn_tail) {
        struct stat st;
        if (::stat(path.c_str(), &st) == 0) {
          (void)::truncate(path.c_str(), st.st_size - static_cast<off_t>(report.torn_bytes));
        }
      }
      f->seq = report.records;
      f->prev = report.records > 0 ? report.last_hash : std::string(kGenesisHash);
    } else {
      f->prev = std::string(kGenesisHash);
    }
    f->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (f->fd < 0) {
      f->failed = true;
      report_failure(id, "cannot open " + path + ": " + std::strerror(errno));
    }
  }

  void append_record(Item& item) {
    auto [it, inserted] = files.try_emplace(item.session_id);
    SessionFile& f = it->second;
    if (inserted) open_file(item.session_id, &f);
    if (f.failed) {
      if (item.kind == "session_end") files.erase(it);
      return;
    }
    nlohmann::json rec = std::move(item.fields);
    rec["seq"] = f.seq + 1;
    rec["ts"] = item.ts;
    rec["session_id"] = item.session_id;
    rec["kind"] = item.kind;
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
    f.pending += '{';
    f.pending += lo_in;
    if (!lo_in.empty()) f.pending += ',';
    f.pending += R"("hash":")";
    f.pending += hash;
    f.pending += '"';
    if (!hi_in.empty()) f.pending += ',';
    f.pending += hi_in;
    f.pending += "}\n";
    f.prev = std::move(hash);
    ++f.seq;
    ++records_written;
    if (unsynced++ == 0) first_unsynced = std::chrono::steady_clock::now();
    if (item.kind == "session_end") f.closing = true;
  }

  void sync_all() {
    if (unsynced > 0 && options.before_sync) options.before_sync();
    for (auto it = files.begin(); it != files.end();) {
      SessionFile& f = it->second;
      if (!f.failed && !f.pending.empty()) {
        std::string_view data = f.pending;
        while (!data.empty()) {
          ssize_t n = ::write(f.fd, data.data(), data.size());
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            f.failed = true;
            report_failure(it->first, std::string("write failed: ") + std::strerror(errno));
            break;
          }
          data.remove_prefix(static_cast<size_t>(n));
        }
        if (!f.failed && ::fdatasync(f.fd) != 0) {
          f.failed = true;
          report_failure(it->first, std::string("fsync failed: ") + std::strerror(errno));
        }
        f.pending.clear();
      }
      if (f.closing) {
        if (f.fd >= 0) ::close(f.fd);
        it = files.erase(it);
      } else {
        ++it;
      }
    }
    if (unsynced > 0) ++batches_synced;
    unsynced = 0;
  }

  void run() {
    std::unique_lock lock(mu);
    while (true) {
      if (queue.empty()) {
        if (stopping) break;
        if (unsynced > 0) {
          auto deadline = first_unsynced + options.batch_interval;
          writer_state = WriterState::kTimedWait;
          writer_unsynced = unsynced;
          bool timed_out = cv.wait_until(lock, deadline) == std::cv_status::timeout;
          writer_state = WriterState::kBusy;
          if (timed_out && queue.empty()) {
            lock.unlock();
            sync_all();
            lock.lock();
          }
        } else {
          writer_state = WriterState::kIdle;
          cv.wait(lock);
          writer_state = WriterState::kBusy;
        }
        continue;
      }
      std::deque<Item> batch;
      batch.swap(queue);
      lock.unlock();
      for (auto& item : batch) {
        if (item.barrier != nullptr) {
          sync_all();
          item.barrier->set_value();
          continue;
        }
        append_record(item);
      }
      // Group commit: everything drained in one go shares one write + fdatasync per file.
      // Syncing every batch_records inside a large drain made the writer fall behind under
      // load (one fdatasync per 64 records), which held statements of recording-required
      // sessions; a crash still loses at most what was drained since the last sync.
      if (unsynced >= options.batch_records ||
          (unsynced > 0 &&
           std::chrono::steady_clock::now() - first_unsynced >= options.batch_interval)) {
        sync_all();
      }
      lock.lock();
    }
    lock.unlock();
    sync_all();
    for (auto& [id, f] : files) {
      if (f.fd >= 0) ::close(f.fd);
    }
    files.clear();
  }

  // REQUIRES: mu held.
  Status push(Item item) {
    if (queue.size() >= options.queue_capacity) {
      ++records_rejected_queue_full;
      return resource_exhausted("recording queue is full");
    }
    queue.push_back(std::move(item));
    // A half-full queue wakes it too: with a queue smaller than batch_records the writer would
    // otherwise sit out the batch interval while producers are refused (queue full).
    if (writer_state == WriterState::kIdle ||
        (writer_state == WriterState::kTimedWait &&
         (writer_unsynced + queue.size() >= options.batch_records ||
          queue.size() * 2 >= options.queue_capacity))) {
      writer_state = WriterState::kBusy;  // woken once; it rechecks the queue before waiting
      cv.notify_one();
    }
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
  if (options.queue_capacity == 0 || options.batch_records == 0) {
    return invalid_argument("recording queue_capacity and batch_records must be positive");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return unavailable("cannot create " + options.dir + ": " + ec.message());
  ::chmod(options.dir.c_str(), 0700);
  if (::access(options.dir.c_str(), W_OK) != 0) {
    return unavailable("recording dir " + options.dir + " is not writable");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
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
  if (s.level != policy::RecordingLevel::kOff) {
    nlohmann::json fields = {{"identity", s.identity},
                             {"groups", s.groups},
                             {"target", s.target},
                             {"client_addr", s.client_addr},
                             {"tls", s.tls},
                             {"policy", s.policy},
                             {"recording", recording_level_name(s.level)},
                             {"row_cap", s.row_cap}};
    PGW_RETURN_IF_ERROR(
        impl_->push(Impl::Item{s.session_id, "session_start", std::move(fields), impl_->now()}));
  }
  impl_->sessions[s.session_id] = Impl::SessionPolicy{s.level, std::max(s.row_cap, 0), 0, false};
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
  PGW_RETURN_IF_ERROR(impl_->push(Impl::Item{
      s.session_id, "session_resumed", {{"reason", std::string(reason)}}, impl_->now()}));
  impl_->sessions[s.session_id] = Impl::SessionPolicy{s.level, std::max(s.row_cap, 0), 0, false};
  return Status::ok();
}

Status Recorder::try_append(const std::string& session_id, const std::string& kind,
                            nlohmann::json fields) {
  if (!fields.is_object()) return invalid_argument("recording event fields must be an object");
  if (!valid_kind(kind) || kind == "session_start") {
    return invalid_argument("bad recording event kind");
  }
  std::lock_guard lock(impl_->mu);
  auto it = impl_->sessions.find(session_id);
  if (it == impl_->sessions.end()) {
    return failed_precondition("session " + session_id + " is not recording");
  }
  Impl::SessionPolicy& sp = it->second;
  if (sp.level == policy::RecordingLevel::kOff) {
    if (kind == "session_end") impl_->sessions.erase(it);
    return Status::ok();
  }
  if (kind == "rows") {
    if (sp.level != policy::RecordingLevel::kFull) return Status::ok();
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
      return Status::ok();
    }
    if (cut > 0) {
      rows->erase(rows->begin() + keep, rows->end());
      fields["truncated"] = cut;
    }
    PGW_RETURN_IF_ERROR(impl_->push(Impl::Item{session_id, kind, std::move(fields), impl_->now()}));
    sp.rows_in_statement += n;
    if (cut > 0) {
      sp.cap_noted = true;
      impl_->rows_dropped_cap += static_cast<uint64_t>(cut);
    }
    return Status::ok();
  }
  PGW_RETURN_IF_ERROR(impl_->push(Impl::Item{session_id, kind, std::move(fields), impl_->now()}));
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

bool Recorder::session_open(const std::string& session_id) const {
  std::lock_guard lock(impl_->mu);
  return impl_->sessions.count(session_id) != 0;
}

#define PGW_DEFINE_GETTER(name) \
  uint64_t Recorder::name() const { return impl_->name.load(); }
PGW_RECORDER_COUNTERS(PGW_DEFINE_GETTER)
#undef PGW_DEFINE_GETTER

}  // namespace pgwarden::recording
