#include "controlplane/server/dataplane_registry.h"

#include <algorithm>

namespace pgwarden::server {

using json = nlohmann::json;

Status DataplaneRegistry::update(uint64_t connection, json snapshot, int64_t now_unix_ms) {
  auto dp = snapshot.find("dp");
  if (dp == snapshot.end() || !dp->is_object() || !dp->contains("name") ||
      !(*dp)["name"].is_string()) {
    return invalid_argument("dataplane_stats without a \"dp\" object naming the dataplane");
  }
  std::string name = (*dp)["name"].get<std::string>();
  if (name.empty() || name.size() > 128) {
    return invalid_argument("dataplane_stats: dp.name must be 1..128 bytes");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!entries_.contains(name) && entries_.size() >= kMaxDataplanes) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.connected) continue;
      if (oldest == entries_.end() ||
          it->second.received_unix_ms < oldest->second.received_unix_ms) {
        oldest = it;
      }
    }
    if (oldest == entries_.end()) {
      return resource_exhausted("too many connected dataplanes report stats");
    }
    entries_.erase(oldest);
  }
  Entry& e = entries_[name];
  e.connection = connection;
  e.connected = true;
  e.received_unix_ms = now_unix_ms;
  e.snapshot = std::move(snapshot);
  return Status::ok();
}

void DataplaneRegistry::disconnected(uint64_t connection) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [name, e] : entries_) {
    if (e.connection == connection) e.connected = false;
  }
}

json DataplaneRegistry::to_json(int64_t now_unix_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  json list = json::array();
  for (const auto& [name, e] : entries_) {
    int64_t interval = kDefaultStatsIntervalMs;
    auto it = e.snapshot.find("interval_ms");
    if (it != e.snapshot.end() && it->is_number_integer() && it->get<int64_t>() > 0) {
      interval = it->get<int64_t>();
    }
    int64_t age = std::max<int64_t>(0, now_unix_ms - e.received_unix_ms);
    list.push_back({{"name", name},
                    {"connected", e.connected},
                    {"stale", !e.connected || age > kStaleIntervals * interval},
                    {"received_unix_ms", e.received_unix_ms},
                    {"age_ms", age},
                    {"snapshot", e.snapshot}});
  }
  return json{{"dataplanes", std::move(list)}};
}

}  // namespace pgwarden::server
