// PacketMetrics: the packet layer's Prometheus series (docs/monitoring.md). The main lcore's
// control tick hands it each PacketLayerStats (every --stats-interval-ms); a scrape reads the
// latest one: the per-lcore PGW_PACKET_COUNTERS summed (pgwarden_packet_<name>_total), the
// ports' hardware counters labeled by port role (agent, database, exception), active flows
// and reassembly memory. Nothing is kept per flow or per address.
//
// Thread-safety: update() and collect() may run on different threads.
#pragma once

#include <mutex>
#include <optional>

#include "common/metrics/metrics_server.h"
#include "dataplane/packet/packet_layer.h"

namespace pgwarden::packet {

class PacketMetrics {
 public:
  void update(const PacketLayerStats& stats);
  // Writes nothing before the first update().
  void collect(metrics::Families& f) const;

 private:
  mutable std::mutex mu_;
  std::optional<PacketLayerStats> last_;
};

}  // namespace pgwarden::packet
