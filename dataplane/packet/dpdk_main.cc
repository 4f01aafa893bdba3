#include "dataplane/packet/dpdk_main.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>

#include "dataplane/packet/audit_forwarder.h"
#include "dataplane/packet/dpdk_args.h"
#include "dataplane/packet/packet_layer.h"

namespace pgwarden::packet {
namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

void write_file_atomically(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

int run_dpdk_mode(std::span<const std::string> args, const std::atomic<bool>* stop) {
  Result<DpdkOptions> parsed = parse_dpdk_args(args);
  if (!parsed) {
    std::fprintf(stderr, "pgwarden-dp: %s\n%s", parsed.status().message().c_str(), kDpdkUsage);
    return kExitConfig;
  }
  const DpdkOptions& o = *parsed;
  if (o.help) {
    std::fputs(kDpdkUsage, stdout);
    return kExitOk;
  }
  AuditForwarderOptions audit_options;
  audit_options.cp_socket = o.cp_socket;
  audit_options.fallback_path = o.audit_log;
  Result<std::unique_ptr<AuditForwarder>> audit = AuditForwarder::start(audit_options);
  if (!audit) {
    std::fprintf(stderr, "pgwarden-dp: %s\n", audit.status().message().c_str());
    return kExitConfig;
  }
  AuditForwarder& forwarder = **audit;
  if (stop == nullptr) {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
  }

  PacketLayerHooks hooks;
  hooks.stop = stop != nullptr ? stop : &g_stop;
  hooks.on_stats = [&](const PacketLayerStats& s) {
    if (o.stats_file.empty()) return;
    nlohmann::json j = nlohmann::json::parse(s.to_json());
    j["audit"] = forwarder.stats().to_json();
    write_file_atomically(o.stats_file, j.dump());
  };
  // Runs on the main lcore's control tick: only queues; the forwarder's thread does I/O.
  hooks.on_audit = [&](const AuditEvent& ev) { forwarder.submit(ev.to_json()); };
  hooks.on_ready = [&]() {
    if (!o.ready_file.empty()) write_file_atomically(o.ready_file, "ready");
    std::fprintf(stderr, "pgwarden-dp: packet layer up, forwarding\n");
  };
  std::string error;
  int code = run_packet_layer(o.config, hooks, &error);
  forwarder.flush();
  if (code != kExitOk) {
    std::fprintf(stderr, "pgwarden-dp: %s\n", error.c_str());
  } else if (!o.stats_file.empty()) {
    // Final audit counters after the last events were delivered.
    std::ifstream in(o.stats_file);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_object()) {
      j["audit"] = forwarder.stats().to_json();
      write_file_atomically(o.stats_file, j.dump());
    }
  }
  if (stop == nullptr) {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
  return code;
}

}  // namespace pgwarden::packet
