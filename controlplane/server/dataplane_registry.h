// DataplaneRegistry: the latest `dataplane_stats` snapshot of every dataplane that sent one
// (docs/protocol.md, event dataplane_stats), for the admin API (`pgwardenctl dataplane`).
//
// Entries are keyed by the dataplane's name (the snapshot's "dp" object, field "name"): a dp
// that reconnects replaces its entry. An entry is stale when its dp connection closed or its
// snapshot is older than kStaleIntervals times the snapshot's own interval_ms. At most
// kMaxDataplanes entries are kept; a new name beyond that evicts the entry received longest
// ago among those whose connection closed, else the snapshot is refused (update() false).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace pgwarden::server {

inline constexpr size_t kMaxDataplanes = 64;
inline constexpr int64_t kStaleIntervals = 3;
inline constexpr int64_t kDefaultStatsIntervalMs = 1000;

class DataplaneRegistry {
 public:
  // Stores `snapshot` (the event's fields) received on dp connection `connection` at
  // `now_unix_ms`. invalid_argument when the snapshot has no "dp" object with a non-empty
  // "name" (≤ 128 bytes); resource_exhausted when the registry is full (see above).
  Status update(uint64_t connection, nlohmann::json snapshot, int64_t now_unix_ms);
  // Marks every entry received on `connection` disconnected (stale).
  void disconnected(uint64_t connection);
  // {"dataplanes": [{"name", "connected", "stale", "received_unix_ms", "age_ms",
  //   "snapshot": {...}}]} sorted by name.
  nlohmann::json to_json(int64_t now_unix_ms) const;

 private:
  struct Entry {
    uint64_t connection = 0;
    bool connected = true;
    int64_t received_unix_ms = 0;
    nlohmann::json snapshot;
  };
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace pgwarden::server
