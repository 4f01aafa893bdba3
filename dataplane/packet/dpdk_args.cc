#include "dataplane/packet/dpdk_args.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "common/metrics/listen_address.h"

namespace pgwarden::packet {

const char kDpdkUsage[] =
    "usage: pgwarden-dp --dpdk \"<EAL args>\" [--dpdk-config FILE] --agent-port DEV --db-port DEV\n"
    "         [--exception-port DEV] [--gateway-address CIDR]... [--allow-direct-source CIDR]...\n"
    "         [--rule-file PATH]... [--max-statement-bytes N] [--flow-capacity N]\n"
    "         [--flow-idle-timeout-ms N] [--reassembly-memcap BYTES] [--per-flow-cap BYTES]\n"
    "         [--mbufs N] [--burst N] [--idle-sleep-us N] [--idle-spin-us N]\n"
    "         [--cp-socket PATH]\n"
    "         [--audit-log PATH] [--stats-file PATH] [--ready-file PATH] [--name NAME]\n"
    "         [--stats-interval-ms N] [--metrics-listen ADDRESS:PORT]\n"
    "Every EAL lcore (-l) is a worker; with several, af_packet ports need qpairs=<workers>\n"
    "(kernel fanout), NICs use symmetric RSS, other ports are spread in software.\n"
    "--idle-sleep-us N: idle workers rest after --idle-spin-us without a frame: blocked\n"
    "until a frame arrives where their queues are af_packet/TAP (spin default 0), else\n"
    "sleeping up to N us (spin default 2000); default 100; 0 = pure polling.\n"
    "SIGHUP re-reads the rule files (a bad file keeps the running rules).\n"
    "Default rule files: rules/sets/deny.rules rules/sets/approve.rules.\n";

namespace {

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

// Flattens the --dpdk-config object into "--key value" pairs.
Status config_file_args(const std::string& path, std::vector<std::string>* out) {
  std::ifstream f(path);
  if (!f) return invalid_argument("--dpdk-config: cannot read " + path);
  std::stringstream text;
  text << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return invalid_argument("--dpdk-config: " + path + " is not a JSON object");
  }
  for (const auto& [key, value] : j.items()) {
    if (key == "dpdk-config") return invalid_argument("--dpdk-config: nested dpdk-config");
    std::vector<nlohmann::json> values;
    if (value.is_array()) {
      values.assign(value.begin(), value.end());
    } else {
      values.push_back(value);
    }
    for (const nlohmann::json& v : values) {
      out->push_back("--" + key);
      if (v.is_string()) {
        out->push_back(v.get<std::string>());
      } else if (v.is_number_unsigned()) {
        out->push_back(std::to_string(v.get<uint64_t>()));
      } else {
        return invalid_argument("--dpdk-config: " + path + ": \"" + key +
                                "\" must be a string, a non-negative integer or an array");
      }
    }
  }
  return Status::ok();
}

}  // namespace

bool wants_dpdk_mode(std::span<const std::string> args) {
  for (const std::string& a : args) {
    if (a == "--dpdk" || a == "--dpdk-config") return true;
  }
  return false;
}

Result<DpdkOptions> parse_dpdk_args(std::span<const std::string> cli) {
  std::vector<std::string> args;
  for (size_t i = 0; i < cli.size(); ++i) {
    if (cli[i] == "--dpdk-config") {
      if (i + 1 >= cli.size()) return invalid_argument("--dpdk-config needs a value");
      PGW_RETURN_IF_ERROR(config_file_args(cli[i + 1], &args));
    }
  }
  size_t from_file = args.size();
  for (size_t i = 0; i < cli.size(); ++i) {
    if (cli[i] == "--dpdk-config") {
      ++i;
      continue;
    }
    args.push_back(cli[i]);
  }

  DpdkOptions o;
  PacketLayerConfig& c = o.config;
  std::vector<std::string> rule_files, gateways, sources;
  bool rules_given = false, gateways_given = false, sources_given = false;
  // Lists on the command line replace the file's lists.
  auto list = [&](std::vector<std::string>* l, bool* given, size_t at, const std::string& v) {
    if (at >= from_file && !*given) l->clear();
    if (at >= from_file) *given = true;
    l->push_back(v);
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "-h" || flag == "--help") {
      o.help = true;
      return o;
    }
    if (i + 1 >= args.size()) return invalid_argument(flag + " needs a value");
    size_t at = i;
    const std::string& v = args[++i];
    uint64_t n = 0;
    auto number = [&](uint64_t max) -> Status {
      if (!parse_uint(v, max, &n)) {
        return invalid_argument(flag + ": not a number in 0.." + std::to_string(max) + ": " + v);
      }
      return Status::ok();
    };
    if (flag == "--dpdk") {
      c.eal_args = v;
    } else if (flag == "--agent-port") {
      c.agent_port = v;
    } else if (flag == "--db-port") {
      c.database_port = v;
    } else if (flag == "--exception-port") {
      c.exception_port = v;
    } else if (flag == "--gateway-address") {
      list(&gateways, &gateways_given, at, v);
    } else if (flag == "--allow-direct-source") {
      list(&sources, &sources_given, at, v);
    } else if (flag == "--rule-file") {
      list(&rule_files, &rules_given, at, v);
    } else if (flag == "--max-statement-bytes") {
      PGW_RETURN_IF_ERROR(number(1u << 30));
      c.prescreen.max_statement_bytes = static_cast<uint32_t>(n);
    } else if (flag == "--flow-capacity") {
      PGW_RETURN_IF_ERROR(number(1u << 26));
      c.flow_capacity = static_cast<uint32_t>(n);
    } else if (flag == "--flow-idle-timeout-ms") {
      PGW_RETURN_IF_ERROR(number(86400000));
      c.flow_idle_timeout_ms = static_cast<uint32_t>(n);
    } else if (flag == "--reassembly-memcap") {
      PGW_RETURN_IF_ERROR(number(1ull << 40));
      c.reassembly_memcap = n;
    } else if (flag == "--per-flow-cap") {
      PGW_RETURN_IF_ERROR(number(1u << 30));
      c.reassembly.per_flow_cap = static_cast<uint32_t>(n);
    } else if (flag == "--mbufs") {
      PGW_RETURN_IF_ERROR(number(1u << 26));
      c.mbufs = static_cast<uint32_t>(n);
    } else if (flag == "--burst") {
      PGW_RETURN_IF_ERROR(number(64));
      c.burst = static_cast<uint16_t>(n);
    } else if (flag == "--idle-sleep-us") {
      PGW_RETURN_IF_ERROR(number(1000000));
      c.idle_sleep_us = static_cast<uint32_t>(n);
    } else if (flag == "--idle-spin-us") {
      PGW_RETURN_IF_ERROR(number(1000000));
      c.idle_spin_us = static_cast<uint32_t>(n);
    } else if (flag == "--cp-socket") {
      o.cp_socket = v;
    } else if (flag == "--audit-log") {
      o.audit_log = v;
    } else if (flag == "--stats-file") {
      o.stats_file = v;
    } else if (flag == "--ready-file") {
      o.ready_file = v;
    } else if (flag == "--name") {
      if (v.empty() || v.size() > 128) return invalid_argument("--name: 1..128 bytes");
      o.dp_name = v;
    } else if (flag == "--metrics-listen") {
      if (std::string bad = metrics::check_listen_address(v); !bad.empty()) {
        return invalid_argument("--metrics-listen: \"" + v + "\": " + bad);
      }
      o.metrics_listen = v;
    } else if (flag == "--stats-interval-ms") {
      PGW_RETURN_IF_ERROR(number(3600000));
      if (n < 100) return invalid_argument("--stats-interval-ms: at least 100");
      c.control_interval_ms = static_cast<uint32_t>(n);
    } else {
      return invalid_argument("unknown flag " + flag);
    }
  }
  for (const auto& [names, out] : {std::pair{&gateways, &c.gateway_addresses},
                                   std::pair{&sources, &c.allowed_direct_sources}}) {
    for (const std::string& s : *names) {
      Prefix p;
      if (!parse_prefix(s, &p)) return invalid_argument("not an address or CIDR: " + s);
      out->push_back(p);
    }
  }
  if (!rule_files.empty()) c.rule_files = rule_files;
  if (c.eal_args.empty()) return invalid_argument("--dpdk \"<EAL args>\" is required");
  if (c.agent_port.empty() || c.database_port.empty()) {
    return invalid_argument("--agent-port and --db-port are required");
  }
  return o;
}

}  // namespace pgwarden::packet
