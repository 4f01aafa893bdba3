// Initialises DPDK's EAL once per test process, without hugepages or PCI devices, so unit
// tests and benchmarks can use rte_hash, mempools and ring-backed ethdevs.
#pragma once

#include <unistd.h>

#include <string>

#include "dataplane/packet/packet_layer.h"

namespace pgwarden::packet {

// Returns the EAL status of the first call; later calls return the same.
inline const Status& init_eal_for_tests(const std::string& extra_args = "") {
  static const Status status = PacketLayer::init_eal(
      "-l 0 --no-huge -m 256 --no-pci --no-telemetry --log-level=lib.eal:error "
      "--file-prefix=pgwtest" +
      std::to_string(getpid()) + " " + extra_args);
  return status;
}

}  // namespace pgwarden::packet
