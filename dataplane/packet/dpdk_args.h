// Command line of `pgwarden-dp --dpdk "<EAL args>" ...` (appliance mode): flags and the
// optional `--dpdk-config FILE`, parsed into a PacketLayerConfig plus the runner's outputs.
//
// --dpdk-config FILE holds one JSON object whose keys are the flag names without "--" and
// whose values are strings, numbers or (for repeatable flags) arrays of them, e.g.
//   {"agent-port": "net_af_packet0", "db-port": "net_af_packet1",
//    "allow-direct-source": ["10.0.0.0/8"], "rule-file": ["/etc/pgwarden/deny.rules"]}
// The file is applied first; flags on the command line override its single values and
// replace its lists. See docs/packet-layer.md for every flag.
//
// Thread-safety: pure functions.
#pragma once

#include <span>
#include <string>

#include "common/status.h"
#include "dataplane/packet/packet_layer.h"

namespace pgwarden::packet {

struct DpdkOptions {
  PacketLayerConfig config;
  std::string cp_socket;       // audit events to cp; empty: JSONL file only
  std::string audit_log;       // JSONL fallback (and the only sink without cp)
  std::string stats_file;      // JSON stats, rewritten every control interval
  std::string ready_file;      // written once the ports are up
  std::string dp_name;         // names this dataplane in cp's stats (dp.name); empty: host name
  std::string metrics_listen;  // Prometheus /metrics ("ADDRESS:PORT"); empty: none
  bool help = false;
};

extern const char kDpdkUsage[];

// True if `args` (argv without the program name) asks for the DPDK mode.
bool wants_dpdk_mode(std::span<const std::string> args);

// Parses `args` (argv without the program name). Errors name the flag and the bad value.
Result<DpdkOptions> parse_dpdk_args(std::span<const std::string> args);

}  // namespace pgwarden::packet
