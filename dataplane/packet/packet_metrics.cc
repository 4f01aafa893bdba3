#include "dataplane/packet/packet_metrics.h"

#include <map>
#include <string>

#include "dataplane/packet/counters.h"

namespace pgwarden::packet {

void PacketMetrics::update(const PacketLayerStats& stats) {
  std::lock_guard<std::mutex> lock(mu_);
  last_ = stats;
}

void PacketMetrics::collect(metrics::Families& f) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!last_) return;
  const PacketLayerStats& s = *last_;
  std::map<std::string, uint64_t> sums;
  for (std::string_view name : kPacketCounterNames) sums[std::string(name)] = 0;
  uint64_t flows = 0, capacity = 0, reassembly = 0;
  for (const LcoreStats& l : s.lcores) {
    for (const auto& [name, value] : l.counters) sums[name] += value;
    flows += l.flows_active;
    capacity += l.flow_capacity;
    reassembly += l.reassembly_memory_used;
  }
  for (std::string_view name : kPacketCounterNames) {
    std::string n(name);
    f.counter("pgwarden_packet_" + n,
              "Packet layer counter " + n + ", summed over the lcores (docs/packet-layer.md).",
              static_cast<double>(sums[n]));
  }
  f.gauge("pgwarden_packet_flows_active", "TCP flows tracked by the lcores.",
          static_cast<double>(flows));
  f.gauge("pgwarden_packet_flow_capacity", "Flow table capacity of all lcores.",
          static_cast<double>(capacity));
  f.gauge("pgwarden_packet_reassembly_memory_bytes", "Bytes held for TCP reassembly.",
          static_cast<double>(reassembly));
  f.gauge("pgwarden_packet_rules_generation", "The wire rules generation (1 at start).",
          static_cast<double>(s.rules_generation));
  f.gauge("pgwarden_packet_rules_retired", "Older rule generations not yet freed.",
          static_cast<double>(s.rules_retired));
  for (const PortStats& p : s.ports) {
    metrics::Labels port{{"port", p.role}};
    f.gauge("pgwarden_packet_port_link_up", "1 while the port's link is up.", p.link_up ? 1 : 0,
            port);
    for (auto [name, value] :
         {std::pair{"rx_packets", p.rx_packets}, std::pair{"tx_packets", p.tx_packets},
          std::pair{"rx_bytes", p.rx_bytes}, std::pair{"tx_bytes", p.tx_bytes},
          std::pair{"rx_missed", p.rx_missed}, std::pair{"rx_errors", p.rx_errors},
          std::pair{"tx_errors", p.tx_errors}, std::pair{"rx_nombuf", p.rx_nombuf}}) {
      f.counter(std::string("pgwarden_packet_port_") + name,
                std::string("Port hardware counter ") + name + " (rte_eth_stats).",
                static_cast<double>(value), port);
    }
  }
}

}  // namespace pgwarden::packet
