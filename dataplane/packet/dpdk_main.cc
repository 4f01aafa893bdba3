#include "dataplane/packet/dpdk_main.h"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>

#include "dataplane/packet/dpdk_args.h"
#include "dataplane/packet/packet_layer.h"
#include "dataplane/packet/packet_ops.h"

namespace pgwarden::packet {
namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

}  // namespace

int run_dpdk_mode(std::span<const std::string> args, const std::atomic<bool>* stop,
                  PacketMetrics* metrics) {
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
  PacketOpsOptions ops_options;
  ops_options.dp_name = o.dp_name;
  ops_options.rule_files = o.config.rule_files;
  ops_options.stats_file = o.stats_file;
  ops_options.interval_ms = o.config.control_interval_ms;
  ops_options.audit.cp_socket = o.cp_socket;
  ops_options.audit.fallback_path = o.audit_log;
  Result<std::unique_ptr<PacketOps>> started = PacketOps::start(ops_options);
  if (!started) {
    std::fprintf(stderr, "pgwarden-dp: %s\n", started.status().message().c_str());
    return kExitConfig;
  }
  PacketOps& ops = **started;
  PacketMetrics own_metrics;
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (metrics == nullptr && !o.metrics_listen.empty()) {
    metrics = &own_metrics;
    auto server = metrics::MetricsServer::start(
        o.metrics_listen, [&own_metrics](metrics::Families& f) { own_metrics.collect(f); });
    if (!server) {
      std::fprintf(stderr, "pgwarden-dp: %s\n", server.status().message().c_str());
      return kExitConfig;
    }
    metrics_server = std::move(*server);
  }
  if (stop == nullptr) {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
  }

  PacketLayerHooks hooks;
  hooks.stop = stop != nullptr ? stop : &g_stop;
  // Both run on the main lcore's control tick: they only queue; the forwarder's thread does
  // the I/O to cp.
  hooks.on_stats = [&](const PacketLayerStats& s) {
    ops.on_stats(s);
    if (metrics != nullptr) metrics->update(s);
  };
  hooks.on_audit = [&](const AuditEvent& ev) { ops.on_audit(ev); };
  hooks.on_ready = [&](PacketLayer& layer) {
    if (Status st = ops.attach(layer); !st) {
      std::fprintf(stderr, "pgwarden-dp: no SIGHUP rule reload: %s\n", st.message().c_str());
    }
    if (!o.ready_file.empty()) std::ofstream(o.ready_file, std::ios::trunc) << "ready\n";
    std::fprintf(stderr, "pgwarden-dp: packet layer up, forwarding\n");
  };
  hooks.on_stopped = [&]() { ops.detach(); };
  std::string error;
  int code = run_packet_layer(o.config, hooks, &error);
  ops.finish();
  if (code != kExitOk) std::fprintf(stderr, "pgwarden-dp: %s\n", error.c_str());
  if (stop == nullptr) {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
  return code;
}

}  // namespace pgwarden::packet
