#include "dataplane/packet/packet_metrics.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace pgwarden::packet {
namespace {

std::string exposition(const PacketMetrics& m) {
  metrics::Families f;
  m.collect(f);
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, f.take());
  return out.str();
}

TEST(PacketMetricsTest, NothingIsExposedBeforeTheFirstStats) {
  PacketMetrics m;
  EXPECT_EQ(exposition(m), "");
}

TEST(PacketMetricsTest, LcoreCountersAreSummedAndPortsLabeledByRole) {
  PacketLayerStats s;
  s.rules_generation = 3;
  LcoreStats a, b;
  a.flows_active = 2;
  b.flows_active = 5;
  a.counters = {{"rx_packets", 10}, {"prescreen_denied", 1}, {"tcp_held_out_of_order", 4}};
  b.counters = {{"rx_packets", 7}, {"prescreen_denied", 2}};
  s.lcores = {a, b};
  PortStats agent;
  agent.role = "agent";
  agent.link_up = true;
  agent.rx_missed = 9;
  s.ports = {agent};
  PacketMetrics m;
  m.update(s);
  std::string text = exposition(m);
  EXPECT_NE(text.find("pgwarden_packet_rx_packets_total 17"), std::string::npos) << text;
  EXPECT_NE(text.find("pgwarden_packet_prescreen_denied_total 3"), std::string::npos);
  EXPECT_NE(text.find("pgwarden_packet_tcp_held_out_of_order_total 4"), std::string::npos);
  EXPECT_NE(text.find("pgwarden_packet_reassembly_memcap_global_drops_total 0"),
            std::string::npos);  // every counter, even at zero
  EXPECT_NE(text.find("pgwarden_packet_flows_active 7"), std::string::npos);
  EXPECT_NE(text.find("pgwarden_packet_port_rx_missed_total{port=\"agent\"} 9"), std::string::npos);
  EXPECT_NE(text.find("pgwarden_packet_port_link_up{port=\"agent\"} 1"), std::string::npos);
  EXPECT_NE(text.find("pgwarden_packet_rules_generation 3"), std::string::npos);
}

}  // namespace
}  // namespace pgwarden::packet
