#include "controlplane/server/orphan_recordings.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/atomic_file.h"
#include "controlplane/recording/recording_file.h"

namespace pgwarden::server {

namespace fs = std::filesystem;

uint64_t process_start_time(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; fields after the last
  // ')' are numbered from 3 (state).
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  }
  return 0;
}

bool DataplaneRoster::Previous::all_exited() const {
  if (!known || unknown_pid) return false;
  for (const auto& [pid, start] : processes) {
    if (start == 0 || process_start_time(pid) == start) return false;
  }
  return true;
}

DataplaneRoster::Previous DataplaneRoster::load() const {
  Previous p;
  if (path_.empty()) return p;
  std::ifstream in(path_);
  if (!in) return p;
  std::stringstream body;
  body << in.rdbuf();
  auto j = nlohmann::json::parse(body.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("processes") || !j["processes"].is_array()) return p;
  for (const auto& e : j["processes"]) {
    if (!e.is_object()) return p;
    p.processes.emplace_back(e.value("pid", pid_t{0}), e.value("start_time", uint64_t{0}));
  }
  p.unknown_pid = j.value("unknown_pid", false);
  p.known = true;
  return p;
}

void DataplaneRoster::connected(pid_t pid) {
  if (path_.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (pid <= 0) {
    if (unknown_pid_) return;
    unknown_pid_ = true;  // for this cp's lifetime: it cannot tell when such a dp exits
  } else {
    if (processes_.count(pid) != 0) return;
    processes_[pid] = process_start_time(pid);
  }
  save();
}

void DataplaneRoster::exited(pid_t pid) {
  if (path_.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (processes_.erase(pid) == 0) return;
  save();
}

void DataplaneRoster::save() {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [pid, start] : processes_) {
    list.push_back({{"pid", pid}, {"start_time", start}});
  }
  nlohmann::json body = {{"processes", std::move(list)}, {"unknown_pid", unknown_pid_}};
  if (Status st = replace_file_atomically(path_, body.dump() + "\n", 0600); !st.is_ok()) {
    spdlog::warn(
        "{} not updated ({}): after a crash the next pgwarden-cp waits the full "
        "reattach window before it seals recordings nobody re-registers",
        path_, st.message());
  }
}

std::vector<std::string> possibly_open_recordings(const std::string& dir,
                                                  const std::string& checkpoint_path) {
  std::vector<std::string> out;
  auto checkpoint = recording::read_checkpoint(checkpoint_path);
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  // The checkpoint is written at most every checkpoint interval (1 s by default) and only
  // when a head changed: a session that started after it is not in it, but its file changed
  // after it was written. The margin covers coarse file time stamps.
  constexpr int64_t kMarginMs = 5000;
  constexpr int64_t kNoCheckpointMs = 24 * 3600 * 1000;
  const int64_t since_ms =
      checkpoint.is_ok() ? checkpoint->written_ms - kMarginMs : now_ms - kNoCheckpointMs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".jsonl") continue;
    const std::string id = e.path().stem().string();
    if (!recording::valid_session_id(id)) continue;
    bool candidate = false;
    if (checkpoint.is_ok()) {
      auto h = checkpoint->heads.find(id);
      candidate = h != checkpoint->heads.end() && !h->second.sealed;
    }
    if (!candidate) {
      std::error_code tec;
      auto t = fs::last_write_time(e.path(), tec);
      if (tec) continue;
      const int64_t mtime_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::file_clock::to_sys(t).time_since_epoch())
                                   .count();
      candidate = mtime_ms >= since_ms;
    }
    if (candidate) out.push_back(id);
  }
  return out;
}

Result<bool> seal_orphan(recording::Recorder& recorder, const std::string& id,
                         const std::string& reason) {
  if (::access(recorder.path_for(id).c_str(), F_OK) != 0) return false;
  recording::SessionStart start;
  start.session_id = id;
  Status st = recorder.resume_session(start, "control plane restart");
  if (st.sqlstate() == "57P01") return false;  // sealed: it ended properly
  PGW_RETURN_IF_ERROR(st);
  PGW_RETURN_IF_ERROR(
      recorder.append(id, "session_end", nlohmann::json{{"reason", reason}}, {.keep = true}));
  return true;
}

}  // namespace pgwarden::server
