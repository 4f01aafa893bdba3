// pgwarden-dp: the dataplane process.
// Usage: pgwarden-dp --config FILE [--workers N] [--rules-dir DIR] [--log-level LEVEL]
//                    [--metrics-listen ADDRESS:PORT]
//        pgwarden-dp --dpdk "<EAL args>" ...   (appliance mode: docs/packet-layer.md)
//        pgwarden-dp --dpdk "<EAL args>" ... --config FILE [...]
//            (appliance mode with the session engine in the same process: the engine listens
//             on the gateway address behind the exception port; docs/packet-layer.md)
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/session/gateway.h"
#ifdef PGW_HAVE_DPDK
#include "dataplane/packet/dpdk_main.h"
#include "dataplane/packet/rule_reloader.h"
#endif

namespace {

constexpr const char* kUsage =
    "usage: pgwarden-dp --config FILE [--workers N] [--rules-dir DIR] [--log-level LEVEL]\n"
    "                   [--metrics-listen ADDRESS:PORT]\n"
    "       pgwarden-dp --dpdk \"<EAL args>\" ... [--config FILE ...]   (pgwarden-dp --dpdk "
    "\"\" --help)\n";

#ifdef PGW_HAVE_DPDK
// Packet layer and session engine in one process. The engine starts first, before the EAL
// pins the main thread to its lcore, so its threads keep the process's CPU set; it owns
// SIGINT/SIGTERM/SIGHUP. A stop signal drains the engine's sessions while the packet layer
// still forwards, then stops the packet layer. If the packet layer fails, the engine stops.
int run_combined(pgwarden::session::Gateway& gw, const std::vector<std::string>& dpdk_args) {
  // The packet layer's series join the session engine's /metrics endpoint. Static: it must
  // outlive `gw` (whose endpoint reads it until the gateway is destroyed).
  static pgwarden::packet::PacketMetrics packet_metrics;
  gw.add_metrics_source([](pgwarden::metrics::Families& f) { packet_metrics.collect(f); });
  pgwarden::Status st = gw.start();
  if (!st.is_ok()) {
    spdlog::error("cannot start: {}", st.message());
    return 1;
  }
  std::atomic<bool> stop{false};
  // The engine's signal loop consumes SIGHUP: pass it on to the wire rule reloader too.
  gw.set_sighup_hook([] { pgwarden::packet::request_sighup_reload(); });
  int engine_code = 0;
  std::thread engine([&] {
    engine_code = gw.run();
    // run() has closed the engine's client and upstream connections; their FINs (and the
    // database's answers) cross the packet layer, so it keeps forwarding a moment longer.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop.store(true);
  });
  int code = pgwarden::packet::run_dpdk_mode(dpdk_args, &stop, &packet_metrics);
  if (!stop.load()) gw.request_stop();
  engine.join();
  return code != 0 ? code : engine_code;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool dpdk = false;
  for (const std::string& a : args) dpdk = dpdk || a == "--dpdk" || a == "--dpdk-config";
#ifndef PGW_HAVE_DPDK
  if (dpdk) {
    fprintf(stderr, "pgwarden-dp: --dpdk: this build has no DPDK support (-Ddpdk=enabled)\n");
    return 2;
  }
#endif
  std::string config;
  int workers = 0;
  std::string rules_dir;
  std::string level = "info";
  std::string metrics_listen;
  std::vector<std::string> dpdk_args;  // everything that is not a session engine flag
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= args.size()) {
        fprintf(stderr, "pgwarden-dp: %s needs a value\n", name);
        exit(2);
      }
      return args[++i];
    };
    if (a == "--config") {
      config = value("--config");
    } else if (a == "--workers") {
      workers = std::atoi(value("--workers").c_str());
    } else if (a == "--rules-dir") {
      rules_dir = value("--rules-dir");
    } else if (a == "--log-level") {
      level = value("--log-level");
    } else if (a == "--metrics-listen") {
      metrics_listen = value("--metrics-listen");
    } else if (dpdk) {
      dpdk_args.push_back(a);
    } else if (a == "--help" || a == "-h") {
      fputs(kUsage, stdout);
      return 0;
    } else {
      fprintf(stderr, "pgwarden-dp: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
#ifdef PGW_HAVE_DPDK
  if (dpdk && config.empty()) {
    if (!metrics_listen.empty()) {
      dpdk_args.push_back("--metrics-listen");
      dpdk_args.push_back(metrics_listen);
    }
    return pgwarden::packet::run_dpdk_mode(dpdk_args);
  }
#endif
  if (config.empty()) {
    fputs(kUsage, stderr);
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e pgwarden-dp %l: %v");
  pgwarden::session::Gateway gw(config, rules_dir, workers);
  gw.set_metrics_listen(metrics_listen);
#ifdef PGW_HAVE_DPDK
  if (dpdk) return run_combined(gw, dpdk_args);
#endif
  pgwarden::Status st = gw.start();
  if (!st.is_ok()) {
    spdlog::error("cannot start: {}", st.message());
    return 1;
  }
  return gw.run();
}
