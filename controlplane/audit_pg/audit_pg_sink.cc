#include "controlplane/audit_pg/audit_pg_sink.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

namespace pgwarden::audit_pg {

namespace {

bool valid_identifier_part(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z'))) return false;
  for (char c : s) {
    if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return true;
}

bool valid_table(std::string_view t) {
  size_t dot = t.find('.');
  if (dot == std::string_view::npos) return valid_identifier_part(t);
  return valid_identifier_part(t.substr(0, dot)) && valid_identifier_part(t.substr(dot + 1));
}

// jsonb cannot hold U+0000: replace it in every string (keys included).
nlohmann::json sanitize(const nlohmann::json& j) {
  auto fix = [](std::string s) {
    for (size_t at = s.find('\0'); at != std::string::npos; at = s.find('\0', at)) {
      s.replace(at, 1, "\xef\xbf\xbd");
    }
    return s;
  };
  if (j.is_string()) return fix(j.get<std::string>());
  if (j.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : j) out.push_back(sanitize(v));
    return out;
  }
  if (j.is_object()) {
    nlohmann::json out = nlohmann::json::object();
    for (auto it = j.begin(); it != j.end(); ++it) out[fix(it.key())] = sanitize(it.value());
    return out;
  }
  return j;
}

enum class InsertOutcome { kOk, kRetryLater };

}  // namespace

struct AuditPgSink::Impl {
  AuditPgOptions options;
  std::string insert_sql;
  std::string create_sql;

  mutable std::mutex mu;
  std::condition_variable cv;        // wakes the writer
  std::condition_variable flush_cv;  // wakes flush()
  std::deque<std::string> memory;    // serialized records, oldest first
  bool stopping = false;
  std::thread writer;
  std::atomic<bool> is_connected{false};
  std::atomic<uint64_t> spill_pending{0};  // bytes of spill file not yet inserted

  // Writer thread only.
  PGconn* conn = nullptr;
  uint64_t spill_offset = 0;
  uint64_t spill_size = 0;

#define PGW_DEFINE_COUNTER(name) std::atomic<uint64_t> name{0};
  PGW_AUDIT_PG_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER

  void disconnect() {
    if (conn != nullptr) PQfinish(conn);
    conn = nullptr;
    is_connected = false;
  }

  bool connect() {
    std::string timeout = std::to_string(options.connect_timeout_s);
    const char* keys[] = {"dbname", "connect_timeout", nullptr};
    const char* values[] = {options.conninfo.c_str(), timeout.c_str(), nullptr};
    conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
      disconnect();
      return false;
    }
    PGresult* r = PQexec(conn, create_sql.c_str());
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
      disconnect();
      return false;
    }
    is_connected = true;
    return true;
  }

  // Inserts `lines` (serialized records) in order. A data error falls back to one record at a
  // time and drops only the records the database refuses.
  InsertOutcome insert(const std::vector<std::string>& lines) {
    if (lines.empty()) return InsertOutcome::kOk;
    std::string array = "[";
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) array += ',';
      array += lines[i];
    }
    array += ']';
    const char* params[1] = {array.c_str()};
    PGresult* r = PQexecParams(conn, insert_sql.c_str(), 1, nullptr, params, nullptr, nullptr, 0);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
      PQclear(r);
      records_written += lines.size();
      return InsertOutcome::kOk;
    }
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    bool data_error = state != nullptr && std::strncmp(state, "22", 2) == 0;
    PQclear(r);
    ++db_errors;
    if (!data_error || PQstatus(conn) != CONNECTION_OK) {
      disconnect();
      return InsertOutcome::kRetryLater;
    }
    if (lines.size() == 1) {
      ++records_rejected;
      return InsertOutcome::kOk;
    }
    for (const auto& line : lines) {
      if (insert({line}) == InsertOutcome::kRetryLater) return InsertOutcome::kRetryLater;
    }
    return InsertOutcome::kOk;
  }

  // Appends records to the spill file; drops (and counts) what does not fit.
  void spill(std::deque<std::string>& records) {
    if (records.empty()) return;
    std::string data;
    size_t taken = 0;
    for (const auto& r : records) {
      if (spill_size + data.size() + r.size() + 1 > options.spill_max_bytes) break;
      data += r;
      data += '\n';
      ++taken;
    }
    records_dropped += records.size() - taken;
    records.clear();
    if (data.empty()) return;
    int fd = ::open(options.spill_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    bool ok = fd >= 0;
    std::string_view rest = data;
    while (ok && !rest.empty()) {
      ssize_t n = ::write(fd, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ok = false;
      if (n > 0) rest.remove_prefix(static_cast<size_t>(n));
    }
    if (ok && ::fdatasync(fd) != 0) ok = false;
    if (fd >= 0) ::close(fd);
    if (!ok) {
      records_dropped += taken;
      return;
    }
    spill_size += data.size();
    spill_pending = spill_size - spill_offset;
    records_spilled += taken;
  }

  // Reads up to batch_size complete lines from the spill file at spill_offset.
  std::vector<std::string> read_spill(uint64_t* next_offset) {
    std::vector<std::string> lines;
    std::ifstream in(options.spill_path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(spill_offset));
    uint64_t offset = spill_offset;
    std::string line;
    while (lines.size() < options.batch_size && offset < spill_size && std::getline(in, line)) {
      bool complete = !in.eof();
      offset += line.size() + (complete ? 1 : 0);
      if (!complete) {
        ++records_rejected;  // torn last line from a crash mid-spill
        break;
      }
      if (nlohmann::json::accept(line)) {
        lines.push_back(std::move(line));
      } else {
        ++records_rejected;
      }
    }
    if (!in && lines.empty() && offset == spill_offset) offset = spill_size;  // unreadable
    *next_offset = offset;
    return lines;
  }

  void finish_spill_batch(uint64_t next_offset) {
    spill_offset = next_offset;
    if (spill_offset >= spill_size) {
      (void)::truncate(options.spill_path.c_str(), 0);
      spill_offset = spill_size = 0;
    }
    spill_pending = spill_size - spill_offset;
  }

  void run() {
    auto backoff = options.retry_min;
    while (true) {
      {
        std::lock_guard lock(mu);
        if (stopping) break;
      }
      if (conn == nullptr && !connect()) {
        ++db_errors;
        std::deque<std::string> overflow;
        {
          std::lock_guard lock(mu);
          if (memory.size() > options.memory_capacity) overflow.swap(memory);
        }
        spill(overflow);
        std::unique_lock lock(mu);
        // Wake early to spill a burst rather than let it reach the hard cap.
        cv.wait_for(lock, backoff,
                    [&] { return stopping || memory.size() > options.memory_capacity; });
        backoff = std::min(backoff * 2, options.retry_max);
        continue;
      }
      backoff = options.retry_min;
      if (spill_size > spill_offset) {
        uint64_t next = 0;
        auto lines = read_spill(&next);
        if (insert(lines) == InsertOutcome::kOk) {
          finish_spill_batch(next);
          flush_cv.notify_all();
        }
        continue;
      }
      std::vector<std::string> batch;
      {
        std::unique_lock lock(mu);
        if (memory.empty()) {
          flush_cv.notify_all();
          cv.wait_for(lock, std::chrono::seconds(1), [&] { return stopping || !memory.empty(); });
          continue;
        }
        for (size_t i = 0; i < memory.size() && i < options.batch_size; ++i) {
          batch.push_back(memory[i]);
        }
      }
      if (insert(batch) == InsertOutcome::kOk) {
        std::lock_guard lock(mu);
        memory.erase(memory.begin(), memory.begin() + static_cast<std::ptrdiff_t>(batch.size()));
        flush_cv.notify_all();
      }
    }
    disconnect();
  }
};

AuditPgSink::AuditPgSink(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AuditPgSink::~AuditPgSink() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
  // Nothing submitted is lost at shutdown: it waits in the spill file for the next start.
  std::deque<std::string> rest;
  rest.swap(impl_->memory);
  impl_->spill(rest);
}

Result<std::unique_ptr<AuditPgSink>> AuditPgSink::start(AuditPgOptions options) {
  if (!valid_table(options.table)) return invalid_argument("audit table name is not valid");
  if (options.spill_path.empty()) return invalid_argument("audit spill path is empty");
  if (options.memory_capacity == 0 || options.batch_size == 0 ||
      options.memory_hard_cap < options.memory_capacity) {
    return invalid_argument(
        "audit memory_capacity and batch_size must be positive, memory_hard_cap >= capacity");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  const std::string& t = impl->options.table;
  impl->create_sql = "CREATE TABLE IF NOT EXISTS " + t +
                     " (id bigserial PRIMARY KEY, ts timestamptz NOT NULL, event text NOT NULL,"
                     " record jsonb NOT NULL)";
  impl->insert_sql =
      "INSERT INTO " + t +
      " (ts, event, record) SELECT CASE WHEN jsonb_typeof(e.r->'ts') = 'number' AND "
      "abs((e.r->>'ts')::float8) < 1e15 THEN to_timestamp((e.r->>'ts')::float8 / 1000.0) "
      "ELSE now() END, COALESCE(e.r->>'event', ''), e.r "
      "FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY e.n";
  // A spill file from a previous process is drained first.
  std::ifstream prev(impl->options.spill_path, std::ios::binary | std::ios::ate);
  if (prev) {
    impl->spill_size = static_cast<uint64_t>(prev.tellg());
    impl->spill_pending = impl->spill_size;
  }
  std::unique_ptr<AuditPgSink> sink(new AuditPgSink(std::move(impl)));
  Impl* raw = sink->impl_.get();
  raw->writer = std::thread([raw] { raw->run(); });
  return sink;
}

bool AuditPgSink::submit(const nlohmann::json& record) {
  nlohmann::json obj =
      record.is_object() ? sanitize(record) : nlohmann::json{{"record", sanitize(record)}};
  std::string line = obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  ++impl_->records_submitted;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->memory.size() >= impl_->options.memory_hard_cap) {
      ++impl_->records_dropped;
      return false;
    }
    impl_->memory.push_back(std::move(line));
  }
  impl_->cv.notify_one();
  return true;
}

bool AuditPgSink::flush(std::chrono::milliseconds timeout) {
  // Polls in short waits: the writer updates spill progress outside the lock.
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(impl_->mu);
  while (true) {
    if (impl_->memory.empty() && impl_->spill_pending.load() == 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    impl_->cv.notify_one();
    impl_->flush_cv.wait_for(lock, std::chrono::milliseconds(20));
  }
}

bool AuditPgSink::connected() const { return impl_->is_connected.load(); }

size_t AuditPgSink::memory_records() const {
  std::lock_guard lock(impl_->mu);
  return impl_->memory.size();
}

#define PGW_DEFINE_GETTER(name) \
  uint64_t AuditPgSink::name() const { return impl_->name.load(); }
PGW_AUDIT_PG_COUNTERS(PGW_DEFINE_GETTER)
#undef PGW_DEFINE_GETTER

}  // namespace pgwarden::audit_pg
