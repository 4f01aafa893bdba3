// Initialises DPDK's EAL once per test process, without hugepages or PCI devices, so unit
// tests and benchmarks can use rte_hash, mempools and ring-backed ethdevs. The EAL runtime
// directory (/var/run/dpdk/pgwtest<pid>) is removed at exit.
#pragma once

#include <rte_eal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "dataplane/packet/packet_layer.h"

namespace pgwarden::packet {

// Returns the EAL status of the first call; later calls return the same. `lcores` is the EAL
// -l list (benchmarks run workers on several lcores).
inline const Status& init_eal_for_tests(const std::string& extra_args = "",
                                        const std::string& lcores = "0") {
  static const Status status = [&] {
    Status st = PacketLayer::init_eal(
        "-l " + lcores +
        " --no-huge -m 512 --no-pci --no-shconf --no-telemetry --log-level=lib.eal:error "
        "--file-prefix=pgwtest" +
        std::to_string(getpid()) + " " + extra_args);
    if (st.is_ok()) {
      std::atexit([] {
        std::error_code ec;
        std::filesystem::remove_all(rte_eal_get_runtime_dir(), ec);
      });
    }
    return st;
  }();
  return status;
}

}  // namespace pgwarden::packet
