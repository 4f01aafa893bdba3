#include "controlplane/audit/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

namespace pgwarden::audit {

namespace {

// RFC 3339 UTC with milliseconds. Every audited statement takes a timestamp, so the
// calendar part (gmtime_r + strftime) is formatted once per second per thread.
std::string utc_now() {
  auto now = std::chrono::system_clock::now();
  auto ms_total = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(ms_total.count() % 1000);
  if (ms < 0) ms += 1000;  // before 1970: to_time_t rounded down already
  thread_local std::time_t cached_second = -1;
  thread_local char cached[32];
  thread_local size_t cached_len = 0;
  if (t != cached_second) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    cached_len = std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_second = t;
  }
  std::string out;
  out.reserve(cached_len + 5);
  out.append(cached, cached_len);
  out += '.';
  out += static_cast<char>('0' + ms / 100);
  out += static_cast<char>('0' + ms / 10 % 10);
  out += static_cast<char>('0' + ms % 10);
  out += 'Z';
  return out;
}

bool secret_key_name(std::string_view k) {
  if (k == "shape_key") return false;
  for (const char* bad : {"token", "password", "secret", "key", "credential"}) {
    if (k.find(bad) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<AuditLog>> AuditLog::open(const std::vector<config::AuditSink>& sinks) {
  std::unique_ptr<AuditLog> log(new AuditLog());
  for (const config::AuditSink& s : sinks) {
    if (s.kind == config::AuditSink::Kind::kStderr) {
      log->to_stderr_ = true;
      continue;
    }
    // PostgreSQL sinks are attached by the owner with set_forwarder() (controlplane/server).
    if (s.kind == config::AuditSink::Kind::kPostgres) continue;
    // Private, appended to.
    int fd = ::open(s.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
      return unavailable("cannot open audit log " + s.path + ": " + std::strerror(errno), "");
    }
    struct stat st {};
    (void)::fstat(fd, &st);
    log->files_.push_back(FileSink{s.path, fd, st.st_dev, st.st_ino});
  }
  return log;
}

AuditLog::~AuditLog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool fired = false;
    (void)flush_locked(&fired);
  }
  for (FileSink& f : files_) {
    if (f.fd >= 0) ::close(f.fd);
  }
}

nlohmann::json AuditHealth::to_json() const {
  nlohmann::json j{{"state", failing ? "failing" : "ok"},
                   {"lines_lost", lines_lost},
                   {"refused", refused},
                   {"outages", outages}};
  if (!last_error.empty()) {
    j["last_error"] = last_error;
    j["last_error_ms"] = last_error_ms;
  }
  if (failing) j["since_ms"] = since_ms;
  return j;
}

std::string AuditLog::line(const AuditRecord& r, std::string_view ts) {
  // The record's own keys are added last: a key added twice keeps its last value, so they win
  // over event-specific keys of the same name (only when set, as the schema says).
  thread_local recording::RecordFields scratch;  // its buffers are reused line after line
  recording::RecordFields& f = scratch;
  f.clear();
  if (r.extra.is_object()) {
    for (const auto& [k, v] : r.extra.items()) {
      if (k != "ts" && !secret_key_name(k)) f.add(k, v);
    }
  }
  for (const auto& m : r.fields.members()) {
    std::string_view k = r.fields.key(m);
    if (k != "ts" && !secret_key_name(k)) f.add_canonical(k, r.fields.value(m));
  }
  f.add("event", r.event);
  auto put = [&f](std::string_view k, const std::string& v) {
    if (!v.empty()) f.add(k, v);
  };
  put("session_id", r.session_id);
  put("identity", r.identity);
  put("issuer", r.issuer);
  if (!r.groups.empty()) f.add("groups", nlohmann::json(r.groups));
  put("target", r.target);
  put("client_addr", r.client_addr);
  put("policy", r.policy);
  if (r.policy_version != 0) f.add("policy_version", r.policy_version);
  put("decision", r.decision);
  put("rule", r.rule);
  put("reason", r.reason);
  put("sql", r.sql);
  if (!ts.empty()) f.add("ts", ts);
  f.sort();
  std::string out;
  out.reserve(f.byte_size() + 2);
  out += '{';
  bool first = true;
  for (const auto& m : f.members()) {
    if (!first) out += ',';
    first = false;
    out += f.text(m);
  }
  out += '}';
  return out;
}

nlohmann::json AuditLog::to_json(const AuditRecord& r) {
  return nlohmann::json::parse(line(r, ""));
}

namespace {

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Writes all of `data` to `fd` (O_APPEND); on failure cuts the file back to its size before
// the call, so no torn line stays. Returns 0 or the errno.
int append_whole(int fd, std::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : ENOSPC;
      // The torn part ends the file (O_APPEND): cut it back (shrinking needs no space). The
      // size is asked only now, not before every write: one system call less per batch, and
      // right even after logrotate's copytruncate.
      struct stat st;
      if (off > 0 && ::fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(off)) {
        (void)!::ftruncate(fd, st.st_size - static_cast<off_t>(off));
      }
      return err;
    }
    off += static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

int AuditLog::reopen_if_replaced(FileSink& f, bool* reopened) {
  struct stat st;
  if (::stat(f.path.c_str(), &st) == 0 && st.st_dev == f.dev && st.st_ino == f.ino) return 0;
  int fd = ::open(f.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return errno;  // a directory at the path: EISDIR
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return err;
  }
  ::close(f.fd);
  f.fd = fd;
  f.dev = st.st_dev;
  f.ino = st.st_ino;
  *reopened = true;
  return 0;
}

Status AuditLog::status_locked() const {
  if (!failing_.load(std::memory_order_relaxed)) return Status::ok();
  return storage_write_error(failing_errno_,
                             "the audit log could not be written (" + last_error_ +
                                 "); statements are refused until it can be written again");
}

Status AuditLog::flush_locked(bool* fired) {
  // While failing, an empty batch still tries the audit_write_resumed line (retry()).
  if (pending_.empty() && !failing_.load(std::memory_order_relaxed)) return Status::ok();
  if (to_stderr_ && !pending_.empty()) {
    // Best effort: stderr is a diagnostic copy, never the record of what ran.
    size_t off = 0;
    while (off < pending_.size()) {
      ssize_t n = ::write(2, pending_.data() + off, pending_.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
  }
  if (files_.empty()) {
    pending_.clear();
    pending_lines_ = 0;
    return Status::ok();
  }
  if (failing_.load(std::memory_order_relaxed) && failing_errno_ == ENOSPC && !room_to_heal()) {
    // A nearly full disk would take a short line and refuse the next one: the outage would
    // flap with every statement. It ends once there is room again.
    lines_lost_ += pending_lines_;
    outage_lines_lost_ += pending_lines_;
    pending_.clear();
    pending_lines_ = 0;
    return status_locked();
  }
  std::string resumed;
  if (failing_.load(std::memory_order_relaxed)) {
    // The outage's record goes first, so the first line after it says what was lost.
    AuditRecord r{.event = "audit_write_resumed", .decision = "ok", .reason = last_error_};
    r.extra = {{"failing_since_ms", since_ms_},
               {"lines_lost", outage_lines_lost_},
               {"refused", outage_refused_}};
    resumed = line(r, utc_now());
    resumed += '\n';
  }
  int err = 0;
  std::string failed_path;
  std::string failed_op = "write ";
  for (FileSink& f : files_) {
    bool reopened = false;
    int e = reopen_if_replaced(f, &reopened);
    if (e != 0) {
      if (err == 0) {
        err = e;
        failed_path = f.path;
        failed_op = "open ";
      }
      continue;
    }
    if (reopened) {
      // The new file says why it starts here: the one before it was replaced or removed.
      AuditRecord r{.event = "audit_file_reopened",
                    .decision = "ok",
                    .reason =
                        "the audit log path no longer named the file being written "
                        "(removed, rotated or replaced); writing continues in a new "
                        "file at the path"};
      r.extra = {{"path", f.path}};
      e = append_whole(f.fd, line(r, utc_now()) + "\n");
    }
    if (e == 0 && !resumed.empty()) e = append_whole(f.fd, resumed);
    if (e == 0 && !pending_.empty()) e = append_whole(f.fd, pending_);
    if (e != 0 && err == 0) {
      err = e;
      failed_path = f.path;
    }
  }
  if (err == 0) {
    if (failing_.load(std::memory_order_relaxed)) {
      failing_.store(false, std::memory_order_release);
      since_ms_ = 0;
      failing_errno_ = 0;
      outage_lines_lost_ = 0;
      outage_refused_ = 0;
    }
    pending_.clear();
    pending_lines_ = 0;
    return Status::ok();
  }
  lines_lost_ += pending_lines_;
  outage_lines_lost_ += pending_lines_;
  pending_.clear();
  pending_lines_ = 0;
  last_error_ = failed_op + failed_path + ": " + errno_text(err);
  last_error_ms_ = unix_ms_now();
  failing_errno_ = err;
  if (!failing_.load(std::memory_order_relaxed)) {
    since_ms_ = last_error_ms_;
    ++outages_;
    failing_.store(true, std::memory_order_release);
    *fired = true;
  }
  return status_locked();
}

bool AuditLog::room_to_heal() const {
  for (const FileSink& f : files_) {
    struct statvfs vfs;
    if (::fstatvfs(f.fd, &vfs) != 0) continue;  // unknown: try the write
    if (static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < kHealHeadroomBytes) return false;
  }
  return true;
}

void AuditLog::notify(bool fired) {
  if (!fired || !on_failure_) return;
  on_failure_(write_status());
}

void AuditLog::write_line(const AuditRecord& r) {
  std::string text = line(r, utc_now());
  if (forwarder_) forwarder_(nlohmann::json::parse(text));
  text += '\n';
  std::lock_guard<std::mutex> lock(mu_);
  pending_ += text;
  ++pending_lines_;
}

void AuditLog::record(const AuditRecord& r) { (void)write(r); }

Status AuditLog::write(const AuditRecord& r) {
  write_line(r);
  return write_batched();
}

void AuditLog::record_batched(const AuditRecord& r) {
  write_line(r);
  // A batch is bounded: a caller that never flushes still writes every 64 KiB.
  bool fired = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.size() < 64 * 1024) return;
    (void)flush_locked(&fired);
  }
  notify(fired);
}

void AuditLog::set_forwarder(std::function<void(const nlohmann::json&)> forwarder) {
  forwarder_ = std::move(forwarder);
}

void AuditLog::set_on_failure(std::function<void(const Status&)> on_failure) {
  on_failure_ = std::move(on_failure);
}

void AuditLog::flush() { (void)write_batched(); }

Status AuditLog::write_batched() {
  bool fired = false;
  Status st;
  {
    std::lock_guard<std::mutex> lock(mu_);
    st = flush_locked(&fired);
  }
  notify(fired);
  return st;
}

Status AuditLog::write_status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_locked();
}

Status AuditLog::retry() {
  if (!failing()) return Status::ok();
  bool fired = false;
  Status st;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failing_.load(std::memory_order_relaxed)) return Status::ok();
    st = flush_locked(&fired);
  }
  notify(fired);
  return st;
}

void AuditLog::note_refused() {
  refused_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mu_);
  ++outage_refused_;
}

AuditHealth AuditLog::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  AuditHealth h;
  h.failing = failing_.load(std::memory_order_relaxed);
  h.since_ms = since_ms_;
  h.last_error = last_error_;
  h.last_error_ms = last_error_ms_;
  h.lines_lost = lines_lost_;
  h.refused = refused_.load();
  h.outages = outages_;
  return h;
}

}  // namespace pgwarden::audit
