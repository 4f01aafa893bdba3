// pgwarden-dp-packet: the DPDK packet layer as a stand-alone program, until it is folded into
// `pgwarden-dp --dpdk`. Flags mirror PacketLayerConfig; see docs/packet-layer.md.
//
// Exit codes: 0 clean stop (SIGINT/SIGTERM), 2 bad flags or config, 3 EAL failure, 4 port or
// memory setup failure.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "dataplane/packet/packet_layer.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

const char kUsage[] =
    "usage: pgwarden-dp-packet --dpdk \"<EAL args>\" --agent-port DEV --db-port DEV\n"
    "         [--exception-port DEV] [--gateway-address CIDR]... [--allow-direct-source CIDR]...\n"
    "         [--rule-file PATH]... [--flow-capacity N] [--flow-idle-timeout-ms N]\n"
    "         [--reassembly-memcap BYTES] [--per-flow-cap BYTES] [--mbufs N] [--burst N]\n"
    "         [--idle-sleep-us N] [--stats-file PATH] [--audit-log PATH] [--ready-file PATH]\n";

bool parse_uint(const std::string& s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    if (v > (max - static_cast<uint64_t>(c - '0')) / 10) return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pgwarden::packet;
  PacketLayerConfig config;
  bool rule_files_given = false;
  std::string stats_file, audit_log, ready_file;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      return kExitOk;
    }
    if (i + 1 >= argc) {
      std::cerr << "pgwarden-dp-packet: " << flag << " needs a value\n" << kUsage;
      return kExitConfig;
    }
    std::string v = argv[++i];
    uint64_t n = 0;
    auto number = [&](uint64_t max) {
      if (!parse_uint(v, max, &n)) {
        std::cerr << "pgwarden-dp-packet: " << flag << ": not a number in 0.." << max << ": " << v
                  << "\n";
        std::exit(kExitConfig);
      }
      return n;
    };
    auto prefix = [&](std::vector<Prefix>* list) {
      Prefix p;
      if (!parse_prefix(v, &p)) {
        std::cerr << "pgwarden-dp-packet: " << flag << ": not an address or CIDR: " << v << "\n";
        std::exit(kExitConfig);
      }
      list->push_back(p);
    };
    if (flag == "--dpdk") {
      config.eal_args = v;
    } else if (flag == "--agent-port") {
      config.agent_port = v;
    } else if (flag == "--db-port") {
      config.database_port = v;
    } else if (flag == "--exception-port") {
      config.exception_port = v;
    } else if (flag == "--gateway-address") {
      prefix(&config.gateway_addresses);
    } else if (flag == "--allow-direct-source") {
      prefix(&config.allowed_direct_sources);
    } else if (flag == "--rule-file") {
      if (!rule_files_given) config.rule_files.clear();
      rule_files_given = true;
      config.rule_files.push_back(v);
    } else if (flag == "--flow-capacity") {
      config.flow_capacity = static_cast<uint32_t>(number(1u << 26));
    } else if (flag == "--flow-idle-timeout-ms") {
      config.flow_idle_timeout_ms = static_cast<uint32_t>(number(86400000));
    } else if (flag == "--reassembly-memcap") {
      config.reassembly_memcap = number(1ull << 40);
    } else if (flag == "--per-flow-cap") {
      config.reassembly.per_flow_cap = static_cast<uint32_t>(number(1u << 30));
    } else if (flag == "--mbufs") {
      config.mbufs = static_cast<uint32_t>(number(1u << 26));
    } else if (flag == "--burst") {
      config.burst = static_cast<uint16_t>(number(64));
    } else if (flag == "--idle-sleep-us") {
      config.idle_sleep_us = static_cast<uint32_t>(number(1000000));
    } else if (flag == "--stats-file") {
      stats_file = v;
    } else if (flag == "--audit-log") {
      audit_log = v;
    } else if (flag == "--ready-file") {
      ready_file = v;
    } else {
      std::cerr << "pgwarden-dp-packet: unknown flag " << flag << "\n" << kUsage;
      return kExitConfig;
    }
  }
  if (config.eal_args.empty()) {
    std::cerr << "pgwarden-dp-packet: --dpdk \"<EAL args>\" is required\n" << kUsage;
    return kExitConfig;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  std::ofstream audit;
  if (!audit_log.empty()) {
    audit.open(audit_log, std::ios::app);
    if (!audit) {
      std::cerr << "pgwarden-dp-packet: cannot open audit log " << audit_log << "\n";
      return kExitConfig;
    }
  }
  PacketLayerHooks hooks;
  hooks.stop = &g_stop;
  hooks.on_stats = [&](const PacketLayerStats& s) {
    if (!stats_file.empty()) write_file_atomically(stats_file, s.to_json());
  };
  hooks.on_audit = [&](const AuditEvent& ev) {
    // INTEGRATION POINT: pgwarden-dp sends this to cp as an audit event (protocol event frame).
    if (audit.is_open()) audit << ev.to_json() << std::endl;
    std::cerr << "pgwarden-dp-packet: wire deny " << ev.to_json() << "\n";
  };
  hooks.on_ready = [&]() {
    if (!ready_file.empty()) write_file_atomically(ready_file, "ready");
    std::cerr << "pgwarden-dp-packet: ports up, forwarding\n";
  };
  std::string error;
  int code = run_packet_layer(config, hooks, &error);
  if (code != kExitOk) std::cerr << "pgwarden-dp-packet: " << error << "\n";
  return code;
}
