// PacketOps: what `pgwarden-dp --dpdk` runs around a PacketLayer for operators:
//   * stats: every control tick, one `dataplane_stats` snapshot (ports with link state and
//     DPDK counters, every lcore's PGW_PACKET_COUNTERS, flow table occupancy, rule
//     generation and reload counters, the audit forwarder's counters) goes to pgwarden-cp
//     over the audit forwarder's connection (docs/protocol.md) and, optionally, to the JSON
//     stats file;
//   * audit: wire-deny events go to the AuditForwarder (cp, else the JSONL file);
//   * rule reloads: attach() starts a RuleReloader publishing into the layer and routes
//     SIGHUP to it; its wire_rules_reload events take the audit path.
//
// Thread-safety: on_stats()/on_audit() from the control tick; attach()/detach()/finish()
// from the thread that runs the layer.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "dataplane/packet/audit_forwarder.h"
#include "dataplane/packet/packet_layer.h"
#include "dataplane/packet/rule_reloader.h"

namespace pgwarden::packet {

struct PacketOpsOptions {
  std::string dp_name;  // dp.name in snapshots (how cp keys them); empty: the host name
  std::vector<std::string> rule_files;
  std::string stats_file;  // empty: none
  uint32_t interval_ms = 1000;
  AuditForwarderOptions audit;
};

class PacketOps {
 public:
  // Starts the audit forwarder (fails when the audit file cannot be opened).
  static Result<std::unique_ptr<PacketOps>> start(PacketOpsOptions options);
  ~PacketOps();  // detach()es

  // Starts the rule reloader on `layer` and routes SIGHUP to it.
  // REQUIRES: `layer` outlives the next detach().
  Status attach(PacketLayer& layer);
  void detach();  // stops the reloader (waits for a reload in progress)

  void on_audit(const AuditEvent& event);
  // Builds the snapshot, queues it for cp and rewrites the stats file.
  void on_stats(const PacketLayerStats& stats);
  // Delivers queued events, then rewrites the stats file with the final audit counters.
  void finish();

  // The dataplane_stats event for `stats` (also the stats file's content).
  nlohmann::json snapshot(const PacketLayerStats& stats) const;
  AuditForwarder& forwarder() { return *forwarder_; }
  // Null before attach() and after detach().
  RuleReloader* reloader() { return reloader_.get(); }

 private:
  explicit PacketOps(PacketOpsOptions options);
  void write_stats_file(const nlohmann::json& snapshot) const;

  PacketOpsOptions options_;
  int64_t started_unix_ms_ = 0;
  std::unique_ptr<AuditForwarder> forwarder_;
  std::unique_ptr<RuleReloader> reloader_;
  PacketLayerStats last_stats_;
  bool have_stats_ = false;
};

}  // namespace pgwarden::packet
