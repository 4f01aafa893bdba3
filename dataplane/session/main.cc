// pgwarden-dp: the dataplane process.
// Usage: pgwarden-dp --config FILE [--workers N] [--rules-dir DIR] [--log-level LEVEL]
//        pgwarden-dp --dpdk "<EAL args>" ...   (appliance mode: docs/packet-layer.md)
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dataplane/session/gateway.h"
#ifdef PGW_HAVE_DPDK
#include "dataplane/packet/dpdk_main.h"
#endif

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& a : args) {
    if (a != "--dpdk" && a != "--dpdk-config") continue;
#ifdef PGW_HAVE_DPDK
    return pgwarden::packet::run_dpdk_mode(args);
#else
    fprintf(stderr, "pgwarden-dp: %s: this build has no DPDK support (-Ddpdk=enabled)\n",
            a.c_str());
    return 2;
#endif
  }
  std::string config;
  int workers = 0;
  std::string rules_dir;
  std::string level = "info";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) {
        fprintf(stderr, "pgwarden-dp: %s needs a value\n", name);
        exit(2);
      }
      return argv[++i];
    };
    if (a == "--config") {
      config = value("--config");
    } else if (a == "--workers") {
      workers = std::atoi(value("--workers").c_str());
    } else if (a == "--rules-dir") {
      rules_dir = value("--rules-dir");
    } else if (a == "--log-level") {
      level = value("--log-level");
    } else if (a == "--help" || a == "-h") {
      printf(
          "usage: pgwarden-dp --config FILE [--workers N] [--rules-dir DIR] [--log-level LEVEL]\n");
      return 0;
    } else {
      fprintf(stderr, "pgwarden-dp: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (config.empty()) {
    fprintf(
        stderr,
        "usage: pgwarden-dp --config FILE [--workers N] [--rules-dir DIR] [--log-level LEVEL]\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e pgwarden-dp %l: %v");
  pgwarden::session::Gateway gw(config, rules_dir, workers);
  pgwarden::Status st = gw.start();
  if (!st.is_ok()) {
    spdlog::error("cannot start: {}", st.message());
    return 1;
  }
  return gw.run();
}
