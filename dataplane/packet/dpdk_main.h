// The DPDK mode of pgwarden-dp: `pgwarden-dp --dpdk "<EAL args>" ...` (dataplane/session/
// main.cc calls run_dpdk_mode when wants_dpdk_mode(args)). Parses the flags (dpdk_args.h),
// starts the audit forwarder, runs the packet layer until SIGINT/SIGTERM and cleans up.
//
// Returns the process exit code: 0 clean stop, 2 bad flags, config or rule files, 3 EAL
// failure, 4 port or memory setup failure; every failure prints one clear line on stderr.
// Nothing here calls rte_exit or exit.
//
// `stop` null: SIGINT/SIGTERM stop the packet layer (handlers installed for the run). Non-null:
// the caller owns the signals and stops the layer by setting *stop; this is how pgwarden-dp
// runs the packet layer and the session engine in one process (the session engine's signal
// loop drains its sessions first, then sets *stop).
//
// Metrics: `metrics` non-null gets every stats snapshot (the caller serves it, e.g. on the
// session engine's endpoint); null with --metrics-listen: the packet layer serves its own
// /metrics there.
#pragma once

#include <atomic>
#include <span>
#include <string>

#include "dataplane/packet/packet_metrics.h"

namespace pgwarden::packet {

int run_dpdk_mode(std::span<const std::string> args, const std::atomic<bool>* stop = nullptr,
                  PacketMetrics* metrics = nullptr);

}  // namespace pgwarden::packet
