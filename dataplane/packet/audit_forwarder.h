// AuditForwarder: delivers the packet layer's wire-deny events to the control plane.
//
// Events are queued by submit() (called from the main lcore's control tick, which only moves
// records out of the per-lcore audit rings) and delivered by the forwarder's own thread, which
// is not an lcore: no worker ever blocks on cp. Delivery, per event:
//   * cp configured and reachable: one dp -> cp `event` frame (docs/protocol.md), on a
//     connection that starts with `hello`; counted in sent_to_cp;
//   * otherwise (no cp socket, cp down, a send failed): appended to the JSONL audit file and
//     counted in written_to_file (and in cp_unreachable when a cp socket is configured);
//   * neither possible: counted in lost.
// A lost cp connection is retried at most every reconnect_interval_ms. The queue is bounded
// (max_queue); events beyond it are counted in queue_dropped.
//
// Stats snapshots (publish_stats(), the `dataplane_stats` event) share the cp connection but
// not the fallback: only the latest snapshot is kept, it is sent after the queued events when
// cp is reachable (stats_sent) and otherwise discarded (stats_unsent), never written to the
// audit file.
//
// Thread-safety: submit(), stats() and flush() may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "common/status.h"

namespace pgwarden::packet {

struct AuditForwarderOptions {
  std::string cp_socket;      // Unix socket of pgwarden-cp; empty: file only
  std::string fallback_path;  // JSONL file; empty: none
  size_t max_queue = 4096;
  int reconnect_interval_ms = 1000;
  std::string dp_name = "pgwarden-dp/0.1 (packet layer)";
};

struct AuditForwarderStats {
  uint64_t sent_to_cp = 0;
  uint64_t written_to_file = 0;
  uint64_t cp_unreachable = 0;  // events that had to go to the file although cp is configured
  uint64_t lost = 0;            // neither cp nor file could take them
  uint64_t queue_dropped = 0;
  uint64_t cp_connects = 0;
  uint64_t cp_connect_failures = 0;
  uint64_t stats_sent = 0;    // dataplane_stats snapshots delivered to cp
  uint64_t stats_unsent = 0;  // snapshots discarded: cp not configured or not reachable
  nlohmann::json to_json() const;
};

class AuditForwarder {
 public:
  // Opens the fallback file (append) and starts the delivery thread. Fails when the file
  // cannot be opened. cp need not be up yet.
  static Result<std::unique_ptr<AuditForwarder>> start(AuditForwarderOptions options);
  ~AuditForwarder();  // delivers what is queued, then stops the thread
  AuditForwarder(const AuditForwarder&) = delete;
  AuditForwarder& operator=(const AuditForwarder&) = delete;

  // Queues one event object. Never blocks on I/O.
  void submit(nlohmann::json event);
  // Replaces the pending stats snapshot (an event object). Never blocks on I/O.
  void publish_stats(nlohmann::json snapshot);
  // Blocks until every event submitted before the call was delivered (or counted lost).
  void flush();
  AuditForwarderStats stats() const;

 private:
  class Connection;
  explicit AuditForwarder(AuditForwarderOptions options);
  void run();
  void deliver(const nlohmann::json& event);
  bool send_to_cp(const nlohmann::json& event);

  AuditForwarderOptions options_;
  std::ofstream file_;
  std::unique_ptr<Connection> cp_;  // used by the delivery thread only
  int64_t next_connect_ms_ = 0;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::deque<nlohmann::json> queue_;
  std::optional<nlohmann::json> pending_stats_;
  uint64_t submitted_ = 0;
  uint64_t finished_ = 0;  // delivered, written or lost
  bool stop_ = false;
  AuditForwarderStats stats_;
  std::thread thread_;
};

}  // namespace pgwarden::packet
