#include "controlplane/audit/audit_log.h"

#include <fcntl.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
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
  std::vector<spdlog::sink_ptr> out;
  try {
    for (const config::AuditSink& s : sinks) {
      if (s.kind == config::AuditSink::Kind::kStderr) {
        out.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
        continue;
      }
      // PostgreSQL sinks are attached by the owner with add_forwarder() (controlplane/server).
      if (s.kind == config::AuditSink::Kind::kPostgres) continue;
      // Create the file private before spdlog opens it for appending.
      int fd = ::open(s.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd < 0) {
        return unavailable("cannot open audit log " + s.path + ": " + std::strerror(errno), "");
      }
      ::close(fd);
      out.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(s.path, false));
    }
  } catch (const spdlog::spdlog_ex& e) {
    return unavailable(std::string("cannot open audit sink: ") + e.what(), "");
  }
  static std::atomic<int> counter{0};
  auto logger = std::make_shared<spdlog::logger>("audit-" + std::to_string(counter++), out.begin(),
                                                 out.end());
  logger->set_pattern("%v");
  logger->set_level(spdlog::level::info);
  // record() flushes each line itself; record_batched() leaves that to the caller.
  logger->flush_on(spdlog::level::off);
  return std::unique_ptr<AuditLog>(new AuditLog(std::move(logger)));
}

AuditLog::~AuditLog() {
  if (logger_) logger_->flush();
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

void AuditLog::write_line(const AuditRecord& r) {
  std::string text = line(r, utc_now());
  logger_->info(text);
  if (forwarder_) forwarder_(nlohmann::json::parse(text));
}

void AuditLog::record(const AuditRecord& r) {
  write_line(r);
  logger_->flush();
}

void AuditLog::record_batched(const AuditRecord& r) { write_line(r); }

void AuditLog::set_forwarder(std::function<void(const nlohmann::json&)> forwarder) {
  forwarder_ = std::move(forwarder);
}

void AuditLog::flush() { logger_->flush(); }

}  // namespace pgwarden::audit
