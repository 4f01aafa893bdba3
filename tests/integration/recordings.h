#pragma once

// Reading session recordings back in fault tests: the recordings of a gateway's state
// directory whose statements mention a marker, whole, with their verification report.

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controlplane/recording/recording_file.h"

namespace pgwarden::testing {

struct Recording {
  std::string path;
  std::vector<nlohmann::json> records;
  recording::VerifyReport report;
};

// The recordings in <state_dir>/recordings with a record whose `sql` contains `marker`.
inline std::vector<Recording> recordings_with(const std::string& state_dir,
                                              const std::string& marker) {
  std::vector<Recording> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(state_dir + "/recordings", ec)) {
    if (e.path().extension() != ".jsonl") continue;
    Recording r;
    r.path = e.path().string();
    auto recs = recording::read_recording(r.path, &r.report);
    if (!recs.is_ok()) continue;
    r.records = std::move(*recs);
    for (const nlohmann::json& rec : r.records) {
      if (rec.value("sql", "").find(marker) != std::string::npos) {
        out.push_back(std::move(r));
        break;
      }
    }
  }
  return out;
}

inline size_t count_kind(const Recording& r, const std::string& kind) {
  size_t n = 0;
  for (const nlohmann::json& rec : r.records) n += rec.value("kind", "") == kind ? 1 : 0;
  return n;
}

}  // namespace pgwarden::testing
