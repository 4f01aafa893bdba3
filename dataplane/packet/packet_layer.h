// PacketLayer: DPDK ports, per-lcore workers and the forwarding loop of appliance mode.
//
// Topology (a bump in the wire with an exception path):
//   agent port  <->  [ lcore workers: flow table, reassembly, prescreen ]  <->  database port
//                               |  non-TCP for the host, flows to the gateway's address
//                         exception port (TAP) <-> the host's kernel stack (session engine)
// TCP flows must be opened (SYN) from the agent side by an allowed source; client→server bytes
// are reassembled and prescreened; a deny drops the segment and resets both ends. ARP/ND and
// other non-TCP traffic is bridged between the sides and copied to the host as needed.
//
// Threads: one worker per lcore (main lcore included, or the first `workers` lcores). Each
// worker owns its LcoreContext and sends on its own TX queue of every port; nothing on the
// packet path takes a lock. Both directions of a TCP flow are handled by one worker (its flow
// table owns the flow), by one of three SpreadModes chosen at create(): hardware RSS with a
// symmetric key, af_packet's kernel fanout (symmetric flow hash), or software steering (the
// worker that polls a port's single RX queue hashes each TCP frame's canonical FlowKey and
// hands frames of other workers' flows to their inbox, an rte_ring). stats() and
// drain_audit() may be called from the main lcore's control tick.
//
// Rule generations: publish_rules() (any thread, e.g. the SIGHUP reloader) installs a new
// compiled rule set as the current generation with one atomic pointer store. Each worker
// compares that pointer with its own once per poll round (between bursts) and, when it
// changed, switches its prescreen to the new set, sizes its Hyperscan scratch and publishes
// the generation number it now uses. A retired generation is freed by reclaim_rules() (called
// by publish_rules() and the control tick, never by a worker) once every worker reported a
// newer one, so no lcore ever scans with a freed set and no lcore takes a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "dataplane/packet/audit_event.h"
#include "dataplane/packet/flow_key.h"
#include "dataplane/packet/tcp_reassembler.h"
#include "dataplane/packet/wire_prescreen.h"

namespace pgwarden::packet {

// How frames of one flow reach the worker that owns it (PacketLayerStats::spread).
enum class SpreadMode : uint8_t {
  kSingleWorker,    // one worker: every queue is its own
  kHardwareRss,     // NIC RSS with a symmetric Toeplitz key: worker i polls queue i
  kAfPacketFanout,  // af_packet qpairs=N: the kernel's symmetric fanout hash picks the queue
  kSoftware,        // one RX queue per port; the polling worker steers TCP frames by FlowKey
};
const char* spread_mode_name(SpreadMode m);

struct PacketLayerConfig {
  // EAL arguments, e.g. "-l 0 --no-huge -m 512 --no-pci --vdev=net_af_packet0,iface=veth0".
  std::string eal_args;
  std::string agent_port;                      // DPDK device name on the agents' side
  std::string database_port;                   // DPDK device name on the databases' side
  std::string exception_port;                  // TAP device name towards the host; empty: none
  std::vector<Prefix> gateway_addresses;       // flows to these go to the exception port
  std::vector<Prefix> allowed_direct_sources;  // agents allowed to reach databases directly
  // Rule files the wire prescreen compiles once and shares read-only by every lcore.
  std::vector<std::string> rule_files = {kDefaultWireRuleFiles[0], kDefaultWireRuleFiles[1]};
  WirePrescreenOptions prescreen;

  // Worker count: 0 = one per enabled lcore. run() needs one lcore per worker; tests and
  // benchmarks that call poll_once() themselves may use more workers than lcores.
  uint32_t workers = 0;
  // Force software steering even where the ports could spread flows themselves (tests,
  // benchmarks).
  bool force_software_spread = false;
  // Benchmarks only: the agent and database ports have one RX queue per worker and whoever
  // feeds them (a replayer emulating a NIC's symmetric RSS) puts both directions of a flow on
  // the same queue number. Worker i polls queue i; nothing is steered or configured for RSS.
  bool caller_spreads_flows = false;
  uint32_t mbufs = 0;  // 0: computed from ports, queues and descriptors
  uint16_t rx_descriptors = 1024;
  uint16_t tx_descriptors = 1024;
  uint16_t burst = 32;
  uint32_t drain_us = 100;  // TX buffers are flushed at least this often
  // >0: a worker that found nothing for idle_spin_us rests until a frame arrives: blocked in
  // ppoll(2) on its queues where they have descriptors (af_packet, TAP: "interrupt" mode),
  // otherwise sleeping 1 µs at first, doubling up to this bound while it stays idle; any
  // frame resets it (docs/packet-layer.md, "Idle polling"). 0: pure polling.
  uint32_t idle_sleep_us = 100;
  // How long an idle worker keeps polling after its last frame before it rests. Auto: 0 in
  // interrupt mode (a frame wakes it at once; spinning only takes the CPU from the peers it
  // waits for), 2 ms when it sleeps for a time (the answer to what it forwarded usually
  // arrives within them).
  static constexpr uint32_t kIdleSpinAuto = UINT32_MAX;
  uint32_t idle_spin_us = kIdleSpinAuto;
  // After a poll of the exception port found nothing, it is not polled again for this long
  // (a TAP poll is a system call); while it delivers frames it is polled every round.
  uint32_t exception_poll_us = 20;
  uint32_t flow_capacity = 65536;  // per lcore
  uint32_t flow_idle_timeout_ms = 300000;
  uint32_t flow_finished_linger_ms = 2000;
  uint64_t reassembly_memcap = 256ull << 20;  // all lcores together
  ReassemblyConfig reassembly;
  uint32_t audit_queue = 1024;          // per lcore; events beyond it are dropped and counted
  uint32_t control_interval_ms = 1000;  // stats/audit callbacks period
  // Benchmark baseline only: TCP is bridged like other traffic, with no flow tracking,
  // reassembly or enforcement. Not reachable from the command line.
  bool forward_only_baseline = false;
};

struct PortStats {
  std::string role;  // agent, database, exception
  std::string name;
  uint16_t port_id = 0;
  bool link_up = false;
  uint32_t link_speed_mbps = 0;
  uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
  uint64_t rx_missed = 0, rx_errors = 0, tx_errors = 0, rx_nombuf = 0;
};

struct LcoreStats {
  unsigned lcore_id = 0;
  uint16_t queue = 0;                  // the worker's TX queue (= its number)
  std::vector<std::string> rx_queues;  // "agent:0", ... the RX queues it polls
  std::string idle_wait;               // when idle: "polling", "interrupt" or "sleep"
  uint32_t flows_active = 0;
  uint32_t flow_capacity = 0;
  uint64_t rules_generation = 0;  // the rule generation this lcore screens with
  uint64_t reassembly_memory_used = 0;
  std::vector<std::pair<std::string, uint64_t>> counters;  // PGW_PACKET_COUNTERS order
};

struct PacketLayerStats {
  SpreadMode spread = SpreadMode::kSingleWorker;
  std::vector<PortStats> ports;
  std::vector<LcoreStats> lcores;
  uint64_t rules_generation = 0;  // the current (latest published) generation; 1 at start
  std::string rules_version;      // its rule set's content hash (first 16 hex digits)
  size_t rules_retired = 0;       // older generations not yet freed (some lcore still on them)
  std::string to_json() const;
};

class PacketLayer {
 public:
  // Initialises the EAL from config.eal_args. Call once per process, before create().
  static Status init_eal(const std::string& eal_args);

  // Configures ports, mbuf pool, RSS and one LcoreContext per enabled lcore.
  // REQUIRES: init_eal() succeeded.
  static Result<std::unique_ptr<PacketLayer>> create(const PacketLayerConfig& config);
  ~PacketLayer();  // stops and closes the ports, frees every held mbuf

  // Runs the workers on every lcore until `stop` is set. The main lcore also calls
  // `on_control` every control_interval_ms (stats, audit draining).
  void run(const std::atomic<bool>& stop, const std::function<void()>& on_control);

  // One poll round of worker `worker` (its inbox and one RX burst on each of its queues,
  // process, drain timer, flow expiry); true if it found any frame. For tests and benchmarks
  // that drive the loop themselves (one thread per worker at a time).
  bool poll_once(unsigned worker);
  void flush(unsigned worker);  // send everything buffered for TX now

  unsigned worker_count() const;
  // With software steering (PacketLayerStats::spread == kSoftware): the worker that owns the
  // flow with canonical key `key`, i.e. the one both of its directions are handed to. For
  // benchmarks that replay each flow from its owner's core, as a NIC would put it there.
  unsigned software_owner(const FlowKey& key) const;
  PacketLayerStats stats() const;

  // Makes `rules` the current rule generation (see the file comment) and returns its number.
  // Thread-safe; does not wait for the workers. REQUIRES: rules non-null.
  uint64_t publish_rules(std::shared_ptr<const rules::CompiledRuleSet> rules);
  // Frees the generations every worker has moved past; returns how many are still retired.
  // Thread-safe.
  size_t reclaim_rules();
  std::vector<AuditEvent> drain_audit();

  class Impl;

 private:
  explicit PacketLayer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct PacketLayerHooks {
  const std::atomic<bool>* stop = nullptr;  // required
  std::function<void(const PacketLayerStats&)> on_stats;
  std::function<void(const AuditEvent&)> on_audit;
  // Ports are up and workers are about to start: e.g. start a rule reloader on the layer.
  std::function<void(PacketLayer&)> on_ready;
  // Workers stopped; the layer is destroyed after this returns (stop using it here).
  std::function<void()> on_stopped;
};

// Exit codes of run_packet_layer.
inline constexpr int kExitOk = 0;
inline constexpr int kExitConfig = 2;
inline constexpr int kExitEal = 3;
inline constexpr int kExitPorts = 4;

// The library entry point of `pgwarden-dp --dpdk`: EAL, ports, workers, run until
// *hooks.stop, clean up. Returns an exit code; on failure *error says why.
int run_packet_layer(const PacketLayerConfig& config, const PacketLayerHooks& hooks,
                     std::string* error);

}  // namespace pgwarden::packet
