#include "dataplane/packet/packet_layer.h"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_hash_crc.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dataplane/packet/counters.h"
#include "dataplane/packet/flow_steer.h"
#include "dataplane/packet/flow_table.h"
#include "dataplane/packet/mac_table.h"
#include "dataplane/packet/packet_parser.h"
#include "dataplane/packet/queue_wait.h"
#include "dataplane/packet/tcp_reset.h"
#include "dataplane/packet/wire_prescreen.h"

namespace pgwarden::packet {
namespace {

enum PortRole : uint8_t { kAgent = 0, kDatabase = 1, kException = 2 };
constexpr unsigned kMaxPorts = 3;
constexpr const char* kRoleNames[kMaxPorts] = {"agent", "database", "exception"};
constexpr uint16_t kMaxBurst = 64;
constexpr uint32_t kMbufCache = 256;
constexpr uint32_t kInboxSize = 4096;  // frames steered to one worker, waiting for it
// A steered frame travels as its mbuf pointer with the port role it came from (kAgent or
// kDatabase) in the low bit: mbufs are cache-line aligned, and the receiving worker writes
// nothing into the mbuf (its lines stay clean for the owner).
constexpr uintptr_t kSteerRoleBit = 1;
static_assert(alignof(rte_mbuf) > kSteerRoleBit);

// Flow slots the expiry sweep examines per tick, and how often it runs: a full sweep of a
// 65,536-slot table every ~256 ms (idle timeouts are minutes, the finished linger seconds).
constexpr uint32_t kExpireBudget = 256;
constexpr uint32_t kExpireIntervalUs = 1000;
// The idle spin of workers that sleep for a time (PacketLayerConfig::kIdleSpinAuto): 2 ms is
// about what the former 512 empty rounds lasted while every round read the TAP (a system
// call); 500 µs was tried and not shown to be better (docs/benchmarks.md).
constexpr uint32_t kSleepIdleSpinUs = 2000;
// Interrupt mode: the longest an idle worker blocks in ppoll(2) on its queues before it runs
// its periodic work (flow expiry every millisecond, the control tick, a new rule generation).
// A frame wakes it at once.
constexpr uint32_t kIdleWaitUs = 1000;

// Prefetches the mbuf headers of a burst, then its frames' first lines: the misses of a whole
// burst overlap instead of being taken one frame at a time.
void prefetch_burst(rte_mbuf* const* pkts, unsigned n) {
  for (unsigned i = 0; i < n; ++i) rte_prefetch0(pkts[i]);
  for (unsigned i = 0; i < n; ++i) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void*));
}

// Symmetric Toeplitz key: hashing (src, dst) and (dst, src) gives the same value, so both
// directions of a flow land in the same RX queue and therefore on the same lcore.
constexpr uint8_t kSymmetricRssKey[40] = {
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a};

// Fixed-size audit record carried by the per-lcore rte_ring (size a multiple of 4).
struct AuditRecord {
  uint64_t unix_ms;
  uint8_t client[16];
  uint8_t server[16];
  uint16_t client_port;
  uint16_t server_port;
  uint8_t family;
  uint8_t pad[3];
  char reason[88];
};
static_assert(sizeof(AuditRecord) % 4 == 0);

uint64_t unix_ms_now() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

bool any_contains(const std::vector<Prefix>& prefixes, const Address& a) {
  for (const Prefix& p : prefixes) {
    if (p.contains(a)) return true;
  }
  return false;
}

void free_unsent(rte_mbuf** unsent, uint16_t count, void* userdata) {
  rte_pktmbuf_free_bulk(unsent, count);
  static_cast<PacketCounters*>(userdata)->tx_dropped.inc(count);
}

std::string available_ports() {
  std::string names;
  uint16_t id;
  RTE_ETH_FOREACH_DEV(id) {
    char name[RTE_ETH_NAME_MAX_LEN];
    if (rte_eth_dev_get_name_by_port(id, name) == 0) {
      names += names.empty() ? "" : ", ";
      names += name;
    }
  }
  return names.empty() ? "none" : names;
}

}  // namespace

namespace {

// Maps RSS hash h to queue (h mod reta_size) mod workers on every port, so that ports with
// the same key and table size send both directions of a flow to the same queue number.
Status program_reta(uint16_t port, uint16_t reta_size, unsigned workers, const std::string& what) {
  std::vector<rte_eth_rss_reta_entry64> reta(reta_size / RTE_ETH_RETA_GROUP_SIZE);
  for (uint16_t i = 0; i < reta_size; ++i) {
    rte_eth_rss_reta_entry64& group = reta[i / RTE_ETH_RETA_GROUP_SIZE];
    group.mask |= 1ull << (i % RTE_ETH_RETA_GROUP_SIZE);
    group.reta[i % RTE_ETH_RETA_GROUP_SIZE] = static_cast<uint16_t>(i % workers);
  }
  if (int rc = rte_eth_dev_rss_reta_update(port, reta.data(), reta_size); rc != 0) {
    return unavailable("cannot program the RSS redirection table of " + what + ": " +
                       rte_strerror(-rc) + " (run one worker lcore)");
  }
  return Status::ok();
}

}  // namespace

const char* spread_mode_name(SpreadMode m) {
  switch (m) {
    case SpreadMode::kSingleWorker:
      return "single_worker";
    case SpreadMode::kHardwareRss:
      return "hardware_rss";
    case SpreadMode::kAfPacketFanout:
      return "af_packet_fanout";
    case SpreadMode::kSoftware:
      return "software";
  }
  return "unknown";
}

// One RX queue a worker polls.
struct RxSource {
  PortRole role;
  uint16_t port_id;
  uint16_t queue;
  uint64_t next_poll_tsc = 0;  // exception port: not polled again before this (see poll())
};

// One published rule set. Immutable once published; freed by reclaim_rules().
struct RuleGeneration {
  uint64_t number = 0;
  std::shared_ptr<const rules::CompiledRuleSet> set;
  std::string version;
};

// One worker's state. Cache-aligned so that no two workers share a line.
struct alignas(RTE_CACHE_LINE_SIZE) LcoreContext {
  unsigned lcore_id = 0;
  unsigned index = 0;           // worker number
  uint16_t queue = 0;           // this worker's TX queue on every port
  std::vector<RxSource> rx;     // the RX queues this worker polls
  rte_ring* inbox = nullptr;    // frames other workers steered to this one (software mode)
  bool idle = false;            // the last poll round found nothing
  uint64_t idle_since_tsc = 0;  // when the current idle period began
  uint64_t idle_spin_tsc = 0;   // how long it keeps polling after its last frame
  uint32_t idle_sleeps = 0;     // sleeps in the current idle period
  // Interrupt mode: every queue this worker polls has a descriptor and it has no inbox, so
  // when idle it blocks until a frame arrives. Null: it sleeps for a time (or polls).
  std::unique_ptr<QueueWaiter> waiter;
  PacketCounters counters;
  std::unique_ptr<ReassemblyMemory> memory;
  std::unique_ptr<WirePrescreen> sink;  // before flows: their streams point into it
  std::unique_ptr<FlowTable> flows;
  const RuleGeneration* generation = nullptr;  // the one `sink` screens with
  std::atomic<uint64_t> rules_generation{0};
  rte_eth_dev_tx_buffer* tx[kMaxPorts] = {};
  rte_ring* audit = nullptr;
  // Frames of other workers' flows found in the current RX burst (mbuf pointers tagged with
  // kSteerRoleBit), per owning worker; handed to their inboxes in bulk before this worker
  // handles the burst's own frames.
  std::vector<std::vector<void*>> steer_out;
  // Every worker's inbox, copied here once at setup: steering reads only this worker's own
  // lines, never the line of another worker's context that its owner writes every round.
  std::vector<rte_ring*> peer_inbox;
  uint64_t last_drain_tsc = 0;
  uint64_t last_expire_tsc = 0;
  uint32_t now_s = 0;  // TSC seconds, for MAC learning; updated per RX burst
  std::atomic<uint64_t> memory_used{0};
};

class PacketLayer::Impl {
 public:
  ~Impl();
  Status setup(const PacketLayerConfig& config);
  bool poll(LcoreContext& c);
  void flush(LcoreContext& c);
  // `may_steer`: the frame came off this worker's RX queue and was not steered yet (software
  // spread): a TCP frame of another worker's flow goes to its inbox.
  void handle(LcoreContext& c, PortRole in, rte_mbuf* m, uint64_t now, bool may_steer);
  void steer(LcoreContext& c, PortRole in, rte_mbuf* m, unsigned owner);
  void handle_from_host(LcoreContext& c, rte_mbuf* m);
  void handle_tcp(LcoreContext& c, PortRole in, rte_mbuf* m, const ParsedPacket& p,
                  std::span<const uint8_t> frame, uint64_t now);
  void idle(LcoreContext& c, bool found_work);
  void flush_steered(LcoreContext& c);
  Status choose_spread(const rte_eth_dev_info* info, unsigned workers);
  uint16_t rx_queue_count(PortRole role, const rte_eth_dev_info& info, unsigned workers) const;
  void send(LcoreContext& c, PortRole out, rte_mbuf* m);
  void send_resets(LcoreContext& c, const ParsedPacket& p, std::span<const uint8_t> frame);
  void audit(LcoreContext& c, const FlowEntry& e, const ParsedPacket& p);
  void adopt_rules(LcoreContext& c, const RuleGeneration* g);
  uint64_t publish_rules(std::shared_ptr<const rules::CompiledRuleSet> rules);
  size_t reclaim_rules();

  PacketLayerConfig config_;
  uint16_t port_ids_[kMaxPorts] = {};
  bool port_used_[kMaxPorts] = {};
  bool port_started_[kMaxPorts] = {};
  uint16_t rx_queues_[kMaxPorts] = {};
  std::string port_names_[kMaxPorts];
  SpreadMode spread_ = SpreadMode::kSingleWorker;
  rte_mempool* pool_ = nullptr;
  std::vector<std::unique_ptr<LcoreContext>> workers_;
  std::vector<int> worker_of_lcore_;
  // Rule generations: current_rules_ is what workers load between bursts; generations_ owns
  // the current one and every retired one not yet reclaimed (guarded by rules_mu_, which
  // only publishers and reclaim_rules() take).
  std::atomic<const RuleGeneration*> current_rules_{nullptr};
  std::mutex rules_mu_;
  std::vector<std::unique_ptr<RuleGeneration>> generations_;
  MacTable macs_;  // side of each station, for frames from the host (shared by all lcores)
  uint64_t drain_tsc_ = 0, idle_tsc_ = 0, linger_tsc_ = 0;
  uint64_t expire_tsc_ = 0, exception_poll_tsc_ = 0;
};

PacketLayer::Impl::~Impl() {
  for (auto& w : workers_) {
    if (w->inbox != nullptr) {
      void* tagged;
      while (rte_ring_sc_dequeue(w->inbox, &tagged) == 0) {
        rte_pktmbuf_free(
            reinterpret_cast<rte_mbuf*>(reinterpret_cast<uintptr_t>(tagged) & ~kSteerRoleBit));
      }
      rte_ring_free(w->inbox);
    }
    flush(*w);
    for (rte_eth_dev_tx_buffer* b : w->tx) rte_free(b);
    rte_ring_free(w->audit);
    w->flows.reset();
  }
  for (unsigned r = 0; r < kMaxPorts; ++r) {
    if (!port_used_[r]) continue;
    if (port_started_[r]) rte_eth_dev_stop(port_ids_[r]);
    rte_eth_dev_close(port_ids_[r]);
  }
  rte_mempool_free(pool_);
}

Status PacketLayer::Impl::setup(const PacketLayerConfig& config) {
  config_ = config;
  if (config.agent_port.empty() || config.database_port.empty()) {
    return invalid_argument("both an agent port and a database port are required");
  }
  if (config.burst == 0 || config.burst > kMaxBurst) {
    return invalid_argument("burst must be 1.." + std::to_string(kMaxBurst));
  }
  uint32_t cap = config.reassembly.per_flow_cap;
  if (cap < 1024 || (cap & (cap - 1)) != 0) {
    return invalid_argument("per-flow reassembly cap must be a power of two >= 1024");
  }
  Result<std::shared_ptr<const rules::CompiledRuleSet>> rules = load_wire_rules(config.rule_files);
  if (!rules) return rules.status();
  publish_rules(*rules);

  port_names_[kAgent] = config.agent_port;
  port_names_[kDatabase] = config.database_port;
  port_names_[kException] = config.exception_port;
  unsigned nb_ports = 0;
  for (unsigned r = 0; r < kMaxPorts; ++r) {
    if (port_names_[r].empty()) continue;
    if (rte_eth_dev_get_port_by_name(port_names_[r].c_str(), &port_ids_[r]) != 0) {
      return invalid_argument(std::string(kRoleNames[r]) + " port '" + port_names_[r] +
                              "' not found; DPDK ports: " + available_ports());
    }
    for (unsigned o = 0; o < r; ++o) {
      if (port_used_[o] && port_ids_[o] == port_ids_[r]) {
        return invalid_argument("the same DPDK port is used for two roles: " + port_names_[r]);
      }
    }
    port_used_[r] = true;
    ++nb_ports;
  }

  unsigned nb_workers = config.workers == 0 ? rte_lcore_count() : config.workers;
  worker_of_lcore_.assign(RTE_MAX_LCORE, -1);
  int socket = static_cast<int>(rte_socket_id());
  uint32_t mbufs = config.mbufs;
  if (mbufs == 0) {
    mbufs = nb_ports * nb_workers * (config.rx_descriptors + config.tx_descriptors) +
            nb_workers * (kMbufCache + nb_ports * config.burst * 2 + kInboxSize) + 2048;
  }
  pool_ =
      rte_pktmbuf_pool_create("pgw_mbufs", mbufs, kMbufCache, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
  if (pool_ == nullptr) {
    return resource_exhausted("cannot create mbuf pool of " + std::to_string(mbufs) +
                              " mbufs: " + rte_strerror(rte_errno) +
                              " (raise EAL -m or lower descriptors/mbufs)");
  }

  rte_eth_dev_info info[kMaxPorts] = {};
  for (unsigned r = 0; r < kMaxPorts; ++r) {
    if (!port_used_[r]) continue;
    if (int rc = rte_eth_dev_info_get(port_ids_[r], &info[r]); rc != 0) {
      return unavailable("cannot query " + std::string(kRoleNames[r]) + " port " + port_names_[r] +
                         ": " + rte_strerror(-rc));
    }
  }
  PGW_RETURN_IF_ERROR(choose_spread(info, nb_workers));

  for (unsigned r = 0; r < kMaxPorts; ++r) {
    if (!port_used_[r]) continue;
    uint16_t id = port_ids_[r];
    std::string what = std::string(kRoleNames[r]) + " port " + port_names_[r];
    // Every worker transmits on its own TX queue of every port (TX queues are not thread-safe
    // and nothing on the packet path takes a lock).
    if (nb_workers > info[r].max_tx_queues) {
      return invalid_argument(
          what + " has " + std::to_string(info[r].max_tx_queues) + " TX queue(s) but " +
          std::to_string(nb_workers) +
          " workers need one each to transmit; give it more queues (af_packet: qpairs=" +
          std::to_string(nb_workers) + ") or run fewer worker lcores");
    }
    uint16_t rxq = rx_queue_count(static_cast<PortRole>(r), info[r], nb_workers);
    rte_eth_conf conf = {};
    // A TAP queue has a descriptor an idle worker can wait on only with Rx interrupts on.
    if (config.idle_sleep_us > 0 && info[r].driver_name != nullptr &&
        wants_rx_interrupts(info[r].driver_name)) {
      conf.intr_conf.rxq = 1;
    }
    bool program_rss =
        spread_ == SpreadMode::kHardwareRss && r != kException && !config.caller_spreads_flows;
    if (program_rss) {
      conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
      conf.rx_adv_conf.rss_conf.rss_key = const_cast<uint8_t*>(kSymmetricRssKey);
      conf.rx_adv_conf.rss_conf.rss_key_len = sizeof(kSymmetricRssKey);
      conf.rx_adv_conf.rss_conf.rss_hf =
          (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP) & info[r].flow_type_rss_offloads;
    }
    if (int rc = rte_eth_dev_configure(id, rxq, static_cast<uint16_t>(nb_workers), &conf);
        rc != 0) {
      return unavailable("cannot configure " + what + " with " + std::to_string(rxq) + " RX and " +
                         std::to_string(nb_workers) + " TX queues: " + rte_strerror(-rc));
    }
    uint16_t rxd = config.rx_descriptors, txd = config.tx_descriptors;
    if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(id, &rxd, &txd); rc != 0) {
      return unavailable("cannot size descriptors of " + what + ": " + rte_strerror(-rc));
    }
    for (uint16_t q = 0; q < rxq; ++q) {
      if (int rc =
              rte_eth_rx_queue_setup(id, q, rxd, static_cast<unsigned>(socket), nullptr, pool_);
          rc != 0) {
        bool tap =
            info[r].driver_name != nullptr && std::string_view(info[r].driver_name) == "net_tap";
        return unavailable("cannot set up RX queue " + std::to_string(q) + " of " + what + ": " +
                           rte_strerror(-rc) +
                           (tap && q > 0 ? " (a TAP shared by several workers must be created "
                                           "multi_queue: ip tuntap add ... multi_queue)"
                                         : ""));
      }
    }
    for (uint16_t q = 0; q < nb_workers; ++q) {
      if (int rc = rte_eth_tx_queue_setup(id, q, txd, static_cast<unsigned>(socket), nullptr);
          rc != 0) {
        return unavailable("cannot set up TX queue " + std::to_string(q) + " of " + what + ": " +
                           rte_strerror(-rc));
      }
    }
    if (int rc = rte_eth_dev_start(id); rc != 0) {
      return unavailable("cannot start " + what + ": " + rte_strerror(-rc));
    }
    port_started_[r] = true;
    if (program_rss) {
      PGW_RETURN_IF_ERROR(program_reta(id, info[r].reta_size, nb_workers, what));
    }
    rx_queues_[r] = rxq;
    // A bump in the wire receives frames for every MAC. Virtual devices may not support
    // the call (and are promiscuous anyway): not an error.
    if (r != kException) rte_eth_promiscuous_enable(id);
  }

  uint64_t hz = rte_get_tsc_hz();
  drain_tsc_ = hz / 1000000 * config.drain_us;
  expire_tsc_ = hz / 1000000 * kExpireIntervalUs;
  exception_poll_tsc_ = hz / 1000000 * config.exception_poll_us;
  idle_tsc_ = hz / 1000 * config.flow_idle_timeout_ms;
  linger_tsc_ = hz / 1000 * config.flow_finished_linger_ms;
  // Worker 0 runs on the main lcore, which also runs the control tick.
  std::vector<unsigned> lcores = {rte_get_main_lcore()};
  unsigned lcore;
  RTE_LCORE_FOREACH_WORKER(lcore) lcores.push_back(lcore);
  for (unsigned w = 0; w < nb_workers; ++w) {
    auto c = std::make_unique<LcoreContext>();
    // Workers beyond the enabled lcores exist only for poll_once() callers; run() refuses them.
    c->lcore_id = w < lcores.size() ? lcores[w] : RTE_MAX_LCORE;
    c->index = w;
    c->queue = static_cast<uint16_t>(w);
    std::string suffix = std::to_string(w);
    for (unsigned r = 0; r < kMaxPorts; ++r) {
      if (!port_used_[r]) continue;
      // Queue q is polled by worker q mod N (af_packet may have more sockets than workers:
      // every one is polled, software steering sorts the frames out); a port with fewer
      // queues than workers (software steering, or an exception port with fewer queues) has
      // its queues polled by workers chosen round-robin over the roles, so that one worker
      // does not poll every port.
      for (uint16_t q = 0; q < rx_queues_[r]; ++q) {
        unsigned owner = rx_queues_[r] >= nb_workers ? q % nb_workers : (r + q) % nb_workers;
        if (owner == w) c->rx.push_back({static_cast<PortRole>(r), port_ids_[r], q});
      }
    }
    if (config.idle_sleep_us > 0 && spread_ != SpreadMode::kSoftware) {
      auto waiter = std::make_unique<QueueWaiter>();
      for (const RxSource& src : c->rx) waiter->add(src.port_id, src.queue);
      if (waiter->usable()) c->waiter = std::move(waiter);
    }
    uint32_t spin_us = config.idle_spin_us != PacketLayerConfig::kIdleSpinAuto ? config.idle_spin_us
                       : c->waiter                                             ? 0
                                                                               : kSleepIdleSpinUs;
    c->idle_spin_tsc = hz / 1000000 * spin_us;
    c->memory = std::make_unique<ReassemblyMemory>(config.reassembly_memcap / nb_workers);
    Result<std::unique_ptr<FlowTable>> flows =
        FlowTable::create("pgw_flows_" + suffix, config.flow_capacity, socket);
    if (!flows) return flows.status();
    c->flows = std::move(*flows);
    const RuleGeneration* g = current_rules_.load(std::memory_order_acquire);
    Result<std::unique_ptr<WirePrescreen>> sink =
        WirePrescreen::create(g->set, &c->counters, c->memory.get(), config.prescreen);
    if (!sink) return sink.status();
    c->sink = std::move(*sink);
    c->generation = g;
    c->rules_generation.store(g->number, std::memory_order_release);
    for (unsigned r = 0; r < kMaxPorts; ++r) {
      if (!port_used_[r]) continue;
      auto* buf = static_cast<rte_eth_dev_tx_buffer*>(
          rte_zmalloc_socket("pgw_txbuf", RTE_ETH_TX_BUFFER_SIZE(config.burst), 0, socket));
      if (buf == nullptr) return resource_exhausted("cannot allocate TX buffer");
      c->tx[r] = buf;
      rte_eth_tx_buffer_init(buf, config.burst);
      rte_eth_tx_buffer_set_err_callback(buf, free_unsent, &c->counters);
    }
    c->audit = rte_ring_create_elem(("pgw_audit_" + suffix).c_str(), sizeof(AuditRecord),
                                    rte_align32pow2(config.audit_queue), socket,
                                    RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (c->audit == nullptr) {
      return resource_exhausted(std::string("cannot create audit ring: ") +
                                rte_strerror(rte_errno));
    }
    if (spread_ == SpreadMode::kSoftware) {
      c->steer_out.resize(nb_workers);
      for (auto& out : c->steer_out) out.reserve(kMaxBurst);
      // Several workers may steer to this one (multi-producer); only it dequeues.
      c->inbox =
          rte_ring_create(("pgw_inbox_" + suffix).c_str(), kInboxSize, socket, RING_F_SC_DEQ);
      if (c->inbox == nullptr) {
        return resource_exhausted(std::string("cannot create steering ring: ") +
                                  rte_strerror(rte_errno));
      }
    }
    if (c->lcore_id != RTE_MAX_LCORE) worker_of_lcore_[c->lcore_id] = static_cast<int>(w);
    workers_.push_back(std::move(c));
  }
  if (spread_ == SpreadMode::kSoftware) {
    for (auto& w : workers_) {
      for (const auto& peer : workers_) w->peer_inbox.push_back(peer->inbox);
    }
  }
  return Status::ok();
}

void PacketLayer::Impl::send(LcoreContext& c, PortRole out, rte_mbuf* m) {
  if (!port_used_[out]) {
    rte_pktmbuf_free(m);
    return;
  }
  c.counters.tx_packets.inc();
  rte_eth_tx_buffer(port_ids_[out], c.queue, c.tx[out], m);
}

void PacketLayer::Impl::flush(LcoreContext& c) {
  for (unsigned r = 0; r < kMaxPorts; ++r) {
    if (port_used_[r]) rte_eth_tx_buffer_flush(port_ids_[r], c.queue, c.tx[r]);
  }
}

uint64_t PacketLayer::Impl::publish_rules(std::shared_ptr<const rules::CompiledRuleSet> rules) {
  uint64_t number = 0;
  {
    std::lock_guard<std::mutex> lock(rules_mu_);
    auto g = std::make_unique<RuleGeneration>();
    number = generations_.empty() ? 1 : generations_.back()->number + 1;
    g->number = number;
    g->version = wire_rules_version(*rules);
    g->set = std::move(rules);
    current_rules_.store(g.get(), std::memory_order_release);
    generations_.push_back(std::move(g));
  }
  reclaim_rules();
  return number;
}

size_t PacketLayer::Impl::reclaim_rules() {
  std::lock_guard<std::mutex> lock(rules_mu_);
  if (generations_.empty()) return 0;
  // A worker only ever moves to the current generation, so none can still use a generation
  // older than the oldest one any worker reported.
  uint64_t oldest_in_use = generations_.back()->number;
  for (const auto& w : workers_) {
    oldest_in_use = std::min(oldest_in_use, w->rules_generation.load(std::memory_order_acquire));
  }
  std::erase_if(generations_, [&](const std::unique_ptr<RuleGeneration>& g) {
    return g->number < oldest_in_use;
  });
  return generations_.size() - 1;
}

void PacketLayer::Impl::adopt_rules(LcoreContext& c, const RuleGeneration* g) {
  c.sink->set_rules(g->set);
  c.generation = g;
  c.rules_generation.store(g->number, std::memory_order_release);
}

bool PacketLayer::Impl::poll(LcoreContext& c) {
  // Between bursts: one relaxed-cost load tells whether a new rule generation was published.
  if (const RuleGeneration* g = current_rules_.load(std::memory_order_acquire); g != c.generation) {
    adopt_rules(c, g);
  }
  rte_mbuf* pkts[kMaxBurst];
  bool any = false;
  if (c.inbox != nullptr) {
    void* tagged[kMaxBurst];
    unsigned n = rte_ring_sc_dequeue_burst(c.inbox, tagged, config_.burst, nullptr);
    if (n > 0) {
      any = true;
      c.counters.rx_steered_in.inc(n);
      for (unsigned i = 0; i < n; ++i) {
        pkts[i] =
            reinterpret_cast<rte_mbuf*>(reinterpret_cast<uintptr_t>(tagged[i]) & ~kSteerRoleBit);
      }
      prefetch_burst(pkts, n);
      uint64_t now = rte_rdtsc();
      for (unsigned i = 0; i < n; ++i) {
        auto in = static_cast<PortRole>(reinterpret_cast<uintptr_t>(tagged[i]) & kSteerRoleBit);
        handle(c, in, pkts[i], now, false);
      }
    }
  }
  uint64_t round_tsc = rte_rdtsc();
  for (RxSource& src : c.rx) {
    // Polling a TAP is a readv system call, several times the cost of a whole round on the
    // data ports: after an empty poll the exception port waits exception_poll_us for its next
    // one; while it delivers frames it is polled every round.
    if (src.role == kException && round_tsc < src.next_poll_tsc) continue;
    uint16_t n = rte_eth_rx_burst(src.port_id, src.queue, pkts, config_.burst);
    if (src.role == kException) src.next_poll_tsc = n == 0 ? round_tsc + exception_poll_tsc_ : 0;
    if (n == 0) continue;
    any = true;
    uint64_t now = rte_rdtsc();
    c.now_s = static_cast<uint32_t>(now / rte_get_tsc_hz());
    prefetch_burst(pkts, n);
    c.counters.rx_packets.inc(n);
    uint64_t bytes = 0;
    for (uint16_t i = 0; i < n; ++i) bytes += rte_pktmbuf_pkt_len(pkts[i]);
    c.counters.rx_bytes.inc(bytes);
    bool steering = c.inbox != nullptr && src.role != kException;
    // `may_steer[i]`: frame i still needs its owner decided (handle() parses it first).
    bool may_steer[kMaxBurst];
    uint16_t kept = n;
    if (steering) {
      // First pass: a plain TCP segment's owner is known from the header fields at fixed
      // offsets, so frames of other workers' flows are handed over, in one bulk enqueue per
      // owner, before this worker spends time on its own frames (the owner starts on them
      // meanwhile). The burst keeps its own frames, in order.
      kept = 0;
      for (uint16_t i = 0; i < n; ++i) {
        rte_mbuf* m = pkts[i];
        uint32_t hash = 0;
        bool fixed = m->nb_segs == 1 && frame_steer_hash(rte_pktmbuf_mtod(m, const uint8_t*),
                                                         rte_pktmbuf_data_len(m), &hash);
        if (fixed) {
          unsigned owner = steer_worker(hash, static_cast<unsigned>(workers_.size()));
          if (owner != c.index) {
            steer(c, src.role, m, owner);
            continue;
          }
        }
        may_steer[kept] = !fixed;
        pkts[kept++] = m;
      }
      flush_steered(c);
    }
    for (uint16_t i = 0; i < kept; ++i) handle(c, src.role, pkts[i], now, steering && may_steer[i]);
    if (steering) flush_steered(c);  // TCP frames handle() steered after a full parse
  }
  // Batch TX per poll round: what this round's bursts produced leaves now, in one burst per
  // port. Waiting for the drain timer instead would add up to drain_us to every frame of
  // request/response traffic, which never fills a TX buffer (a transaction crosses the layer
  // twice). The timer below still flushes frames buffered outside a round with frames.
  if (any) flush(c);
  uint64_t now = rte_rdtsc();
  if (now - c.last_drain_tsc >= drain_tsc_) {
    flush(c);
    c.last_drain_tsc = now;
  }
  if (now - c.last_expire_tsc >= expire_tsc_) {
    c.flows->expire(now, idle_tsc_, linger_tsc_, kExpireBudget);
    c.memory_used.store(c.memory->used(), std::memory_order_relaxed);
    c.last_expire_tsc = now;
  }
  return any;
}

void PacketLayer::Impl::idle(LcoreContext& c, bool found_work) {
  if (found_work || config_.idle_sleep_us == 0) {
    c.idle = false;
    return;
  }
  // Adaptive: poll freely for idle_spin_us after the last frame (a reply usually follows
  // within it), then rest. In interrupt mode the worker blocks in ppoll(2) on its queues and
  // the first frame wakes it; otherwise it sleeps 1, 2, 4 ... µs up to idle_sleep_us while
  // nothing arrives, and the first frame after a quiet period waits at most idle_sleep_us
  // (plus the kernel's timer slack). Either way an idle worker costs a few wake-ups per
  // millisecond instead of a whole core.
  if (!c.idle) {
    c.idle = true;
    c.idle_since_tsc = rte_rdtsc();
    c.idle_sleeps = 0;
    return;
  }
  if (c.idle_sleeps == 0 && rte_rdtsc() - c.idle_since_tsc < c.idle_spin_tsc) return;
  if (c.waiter) {
    ++c.idle_sleeps;
    flush(c);  // nothing may wait in a TX buffer while the worker blocks
    bool woken = c.waiter->wait(kIdleWaitUs);
    // The wait tells which queues hold frames (the waiter holds them in c.rx order): a quiet
    // exception port is polled in the next round only if it woke the worker, and otherwise
    // not before exception_poll_us (no TAP system call per wake-up for nothing).
    uint64_t next_tap_poll = rte_rdtsc() + exception_poll_tsc_;
    for (size_t i = 0; i < c.rx.size(); ++i) {
      if (woken && c.waiter->ready(i)) {
        c.rx[i].next_poll_tsc = 0;
      } else if (c.rx[i].role == kException) {
        c.rx[i].next_poll_tsc = next_tap_poll;
      }
    }
    return;
  }
  uint32_t step = std::min<uint32_t>(c.idle_sleeps++, 20);
  rte_delay_us_sleep(std::min<uint32_t>(config_.idle_sleep_us, 1u << step));
}

void PacketLayer::Impl::flush_steered(LcoreContext& c) {
  for (size_t w = 0; w < c.steer_out.size(); ++w) {
    std::vector<void*>& out = c.steer_out[w];
    if (out.empty()) continue;
    unsigned sent = rte_ring_mp_enqueue_burst(c.peer_inbox[w], out.data(),
                                              static_cast<unsigned>(out.size()), nullptr);
    c.counters.rx_steered_out.inc(sent);
    if (sent < out.size()) {
      // The owner is behind by a whole inbox: drop like a full RX ring would (TCP resends).
      c.counters.rx_steer_dropped.inc(out.size() - sent);
      for (size_t i = sent; i < out.size(); ++i) {
        rte_pktmbuf_free(
            reinterpret_cast<rte_mbuf*>(reinterpret_cast<uintptr_t>(out[i]) & ~kSteerRoleBit));
      }
    }
    out.clear();
  }
}

void PacketLayer::Impl::steer(LcoreContext& c, PortRole in, rte_mbuf* m, unsigned owner) {
  c.steer_out[owner].push_back(reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(m) | in));
}

Status PacketLayer::Impl::choose_spread(const rte_eth_dev_info* info, unsigned workers) {
  spread_ = SpreadMode::kSingleWorker;
  if (workers == 1) return Status::ok();
  spread_ = SpreadMode::kSoftware;
  if (config_.force_software_spread) return Status::ok();
  if (config_.caller_spreads_flows) {
    spread_ = SpreadMode::kHardwareRss;
    return Status::ok();
  }
  bool fanout = true, rss = true;
  uint16_t reta_size = 0;
  for (unsigned r : {kAgent, kDatabase}) {
    const rte_eth_dev_info& i = info[r];
    std::string_view driver = i.driver_name != nullptr ? i.driver_name : "";
    // af_packet qpairs=N puts its N sockets in one PACKET_FANOUT_HASH group: the kernel's
    // symmetric flow hash picks the socket, the same for both directions and both ports.
    fanout = fanout && driver == "net_af_packet" && i.max_rx_queues == workers;
    // Hardware RSS only on NICs: virtual devices accept an RSS configuration but do not spread
    // by it (tap queues are chosen by the kernel, ring/null/af_packet ignore it).
    bool virtual_device = driver == "net_af_packet" || driver == "net_tap" ||
                          driver == "net_ring" || driver == "net_null" ||
                          driver == "net_virtio_user" || driver == "net_pcap" ||
                          driver == "net_memif" || driver == "net_vhost";
    bool port_rss = !virtual_device && i.max_rx_queues >= workers &&
                    (i.flow_type_rss_offloads & (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP)) != 0 &&
                    i.hash_key_size == sizeof(kSymmetricRssKey) && i.reta_size >= workers &&
                    (reta_size == 0 || reta_size == i.reta_size);
    reta_size = i.reta_size;
    rss = rss && port_rss;
  }
  if (fanout) {
    spread_ = SpreadMode::kAfPacketFanout;
  } else if (rss) {
    spread_ = SpreadMode::kHardwareRss;
  }
  return Status::ok();
}

uint16_t PacketLayer::Impl::rx_queue_count(PortRole role, const rte_eth_dev_info& info,
                                           unsigned workers) const {
  // af_packet opens all qpairs sockets at probe time and the kernel spreads frames over all
  // of them: every one must be configured and polled, or its share of the frames is lost.
  if (info.driver_name != nullptr && std::string_view(info.driver_name) == "net_af_packet") {
    return info.max_rx_queues;
  }
  if (role == kException) {
    // Host frames carry no flow state (MAC lookup only): any worker may take any of them.
    return static_cast<uint16_t>(std::min<unsigned>(workers, info.max_rx_queues));
  }
  switch (spread_) {
    case SpreadMode::kHardwareRss:
    case SpreadMode::kAfPacketFanout:
      return static_cast<uint16_t>(workers);
    case SpreadMode::kSingleWorker:
    case SpreadMode::kSoftware:
      return 1;
  }
  return 1;
}

void PacketLayer::Impl::handle(LcoreContext& c, PortRole in, rte_mbuf* m, uint64_t now,
                               bool may_steer) {
  if (in == kException) {
    handle_from_host(c, m);
    return;
  }
  if (m->nb_segs != 1) {
    c.counters.parse_multisegment_dropped.inc();
    rte_pktmbuf_free(m);
    return;
  }
  std::span<const uint8_t> frame(rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m));
  ParsedPacket p;
  switch (parse_frame(frame, &p)) {
    case ParseStatus::kOk:
      break;
    case ParseStatus::kTruncated:
      c.counters.parse_truncated.inc();
      rte_pktmbuf_free(m);
      return;
    case ParseStatus::kMalformed:
      c.counters.parse_malformed.inc();
      rte_pktmbuf_free(m);
      return;
  }
  if (!macs_.learn(frame.subspan<6, 6>(), in == kAgent ? MacSide::kAgent : MacSide::kDatabase,
                   c.now_s)) {
    c.counters.l2_mac_move_refused.inc();
  }
  bool ip = p.l3 == L3Kind::kIpv4 || p.l3 == L3Kind::kIpv6;
  if (ip && p.ip_proto == kIpProtoTcp && p.fragment) {
    // Reassembling IP fragments would be a second, unbounded reassembly; real PostgreSQL
    // clients never fragment TCP (PMTUD), so fragments are dropped.
    c.counters.parse_fragments_dropped.inc();
    rte_pktmbuf_free(m);
    return;
  }
  bool to_gateway = ip && any_contains(config_.gateway_addresses, p.dst);
  if (to_gateway) {  // the host's own traffic, including escalated sessions
    c.counters.exception_to_host.inc();
    send(c, kException, m);
    return;
  }
  if (p.is_tcp() && !config_.forward_only_baseline) {
    if (may_steer) {  // a TCP frame frame_steer_hash could not read (IPv6 extension headers)
      bool src_is_a = false;
      FlowKey key = make_flow_key(p.src, p.src_port, p.dst, p.dst_port, kIpProtoTcp, &src_is_a);
      unsigned owner = steer_worker(flow_steer_hash(key), static_cast<unsigned>(workers_.size()));
      if (owner != c.index) {
        steer(c, in, m, owner);
        return;
      }
    }
    handle_tcp(c, in, m, p, frame, now);
    return;
  }
  PortRole other = in == kAgent ? kDatabase : kAgent;
  if ((p.l2_multicast || p.l3 == L3Kind::kArp) && port_used_[kException]) {
    // Neighbour discovery must reach the host too, or its stack cannot answer for the
    // gateway's own address.
    c.counters.exception_to_host.inc();
    rte_pktmbuf_refcnt_update(m, 1);
    send(c, kException, m);
  }
  c.counters.l2_bridged.inc();
  send(c, other, m);
}

void PacketLayer::Impl::handle_from_host(LcoreContext& c, rte_mbuf* m) {
  // The host stack (session engine, ARP/ND) sends broadcasts and multicasts to both sides and
  // unicast frames only to the side its destination was learned on: the session engine's
  // upstream traffic never reaches the agents' segment, nor its client traffic the databases'.
  c.counters.exception_from_host.inc();
  if (rte_pktmbuf_data_len(m) < 14) {
    c.counters.parse_truncated.inc();
    rte_pktmbuf_free(m);
    return;
  }
  std::span<const uint8_t, 6> dst(rte_pktmbuf_mtod(m, const uint8_t*), 6);
  if ((dst[0] & 1) != 0) {
    rte_pktmbuf_refcnt_update(m, 1);
    send(c, kAgent, m);
    send(c, kDatabase, m);
    return;
  }
  switch (macs_.lookup(dst)) {
    case MacSide::kAgent:
      send(c, kAgent, m);
      return;
    case MacSide::kDatabase:
      send(c, kDatabase, m);
      return;
    case MacSide::kUnknown:
      c.counters.exception_unknown_mac_dropped.inc();
      rte_pktmbuf_free(m);
      return;
  }
}

void PacketLayer::Impl::handle_tcp(LcoreContext& c, PortRole in, rte_mbuf* m, const ParsedPacket& p,
                                   std::span<const uint8_t> frame, uint64_t now) {
  bool src_is_a = false;
  FlowKey key = make_flow_key(p.src, p.src_port, p.dst, p.dst_port, kIpProtoTcp, &src_is_a);
  FlowEntry* e = c.flows->lookup(key);
  bool opening = (p.tcp_flags & (kTcpSyn | kTcpAck | kTcpRst)) == kTcpSyn;
  if (e != nullptr && opening && e->tcp && e->tcp->finished() && src_is_a == e->client_is_a) {
    c.flows->remove(e);  // the client reuses the port of a closed flow
    e = nullptr;
  }
  if (e == nullptr) {
    if (!opening) {
      c.counters.flows_midstream_dropped.inc();
      rte_pktmbuf_free(m);
      return;
    }
    if (in != kAgent) {
      c.counters.flows_reverse_dropped.inc();
      rte_pktmbuf_free(m);
      return;
    }
    if (!any_contains(config_.allowed_direct_sources, p.src)) {
      c.counters.flows_bypass_dropped.inc();
      rte_pktmbuf_free(m);
      return;
    }
    std::unique_ptr<StreamConsumer> consumer = c.sink->open_stream(key);
    if (!consumer) {
      c.counters.flows_sink_refused.inc();
      rte_pktmbuf_free(m);
      return;
    }
    e = c.flows->insert(key);
    if (e == nullptr) {
      c.counters.flows_capacity_dropped.inc();
      rte_pktmbuf_free(m);
      return;
    }
    e->client_is_a = src_is_a;
    e->tcp.emplace(p, std::move(consumer), &config_.reassembly, c.memory.get(), &c.counters);
    c.counters.flows_created.inc();
  }
  e->last_seen_tsc = now;
  bool from_client = src_is_a == e->client_is_a;
  if (in != (from_client ? kAgent : kDatabase)) {
    c.counters.l2_wrong_port_dropped.inc();
    rte_pktmbuf_free(m);
    return;
  }
  FlowAction action =
      from_client ? e->tcp->on_client_packet(p, frame.subspan(p.payload_offset, p.payload_len))
                  : e->tcp->on_server_packet(p);
  switch (action) {
    case FlowAction::kForward:
      c.counters.tcp_forwarded.inc();
      send(c, from_client ? kDatabase : kAgent, m);
      return;
    case FlowAction::kDrop:
      rte_pktmbuf_free(m);
      return;
    case FlowAction::kDropAndReset:
      send_resets(c, p, frame);
      audit(c, *e, p);
      rte_pktmbuf_free(m);
      return;
  }
}

void PacketLayer::Impl::send_resets(LcoreContext& c, const ParsedPacket& p,
                                    std::span<const uint8_t> frame) {
  for (bool toward_client : {false, true}) {
    rte_mbuf* r = rte_pktmbuf_alloc(pool_);
    if (r == nullptr) {
      c.counters.enforce_reset_alloc_failed.inc();
      continue;
    }
    auto* data = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(r, kMaxResetFrame));
    size_t len = data ? build_reset(frame, p, toward_client, {data, kMaxResetFrame}) : 0;
    if (len == 0) {
      rte_pktmbuf_free(r);
      continue;
    }
    rte_pktmbuf_trim(r, static_cast<uint16_t>(kMaxResetFrame - len));
    c.counters.enforce_resets_sent.inc();
    send(c, toward_client ? kAgent : kDatabase, r);
  }
}

void PacketLayer::Impl::audit(LcoreContext& c, const FlowEntry& e, const ParsedPacket& p) {
  AuditRecord rec = {};
  rec.unix_ms = unix_ms_now();
  std::memcpy(rec.client, p.src.bytes.data(), 16);
  std::memcpy(rec.server, p.dst.bytes.data(), 16);
  rec.client_port = p.src_port;
  rec.server_port = p.dst_port;
  rec.family = p.src.family;
  const std::string& reason = e.tcp->deny_reason();
  std::memcpy(rec.reason, reason.data(), std::min(reason.size(), sizeof(rec.reason) - 1));
  if (rte_ring_sp_enqueue_elem(c.audit, &rec, sizeof(rec)) == 0) {
    c.counters.audit_events.inc();
  } else {
    c.counters.audit_events_dropped.inc();
  }
}

// --- PacketLayer -----------------------------------------------------------------------------

Status PacketLayer::init_eal(const std::string& eal_args) {
  std::vector<std::string> args = {"pgwarden-dp"};
  std::istringstream in(eal_args);
  for (std::string a; in >> a;) args.push_back(a);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = rte_eal_init(static_cast<int>(args.size()), argv.data());
  if (rc < 0) {
    return unavailable(std::string("DPDK EAL initialisation failed: ") + rte_strerror(rte_errno) +
                       " (EAL args: " + eal_args + ")");
  }
  if (rc + 1 != static_cast<int>(args.size())) {
    return invalid_argument("unexpected non-EAL arguments in --dpdk: " + eal_args);
  }
  return Status::ok();
}

PacketLayer::PacketLayer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PacketLayer::~PacketLayer() = default;

Result<std::unique_ptr<PacketLayer>> PacketLayer::create(const PacketLayerConfig& config) {
  auto impl = std::make_unique<Impl>();
  PGW_RETURN_IF_ERROR(impl->setup(config));
  return std::unique_ptr<PacketLayer>(new PacketLayer(std::move(impl)));
}

unsigned PacketLayer::worker_count() const { return static_cast<unsigned>(impl_->workers_.size()); }

unsigned PacketLayer::software_owner(const FlowKey& key) const {
  return steer_worker(flow_steer_hash(key), worker_count());
}

bool PacketLayer::poll_once(unsigned worker) { return impl_->poll(*impl_->workers_[worker]); }
void PacketLayer::flush(unsigned worker) { impl_->flush(*impl_->workers_[worker]); }

namespace {
struct LaunchContext {
  PacketLayer::Impl* impl;
  const std::atomic<bool>* stop;
  const std::function<void()>* on_control;
};
}  // namespace

void PacketLayer::run(const std::atomic<bool>& stop, const std::function<void()>& on_control) {
  LaunchContext ctx{impl_.get(), &stop, &on_control};
  auto worker_main = [](void* arg) -> int {
    auto* l = static_cast<LaunchContext*>(arg);
    Impl* impl = l->impl;
    int worker = impl->worker_of_lcore_[rte_lcore_id()];
    if (worker < 0) return 0;  // an lcore beyond PacketLayerConfig::workers
    LcoreContext& c = *impl->workers_[static_cast<size_t>(worker)];
    bool is_main = rte_lcore_id() == rte_get_main_lcore();
    uint64_t control_tsc = rte_get_tsc_hz() / 1000 * impl->config_.control_interval_ms;
    uint64_t last_control = rte_rdtsc();
    while (!l->stop->load(std::memory_order_relaxed)) {
      impl->idle(c, impl->poll(c));
      if (is_main && rte_rdtsc() - last_control >= control_tsc) {
        if (*l->on_control) (*l->on_control)();
        last_control = rte_rdtsc();
      }
    }
    impl->flush(c);
    return 0;
  };
  rte_eal_mp_remote_launch(worker_main, &ctx, CALL_MAIN);
  rte_eal_mp_wait_lcore();
}

PacketLayerStats PacketLayer::stats() const {
  PacketLayerStats s;
  s.spread = impl_->spread_;
  for (unsigned r = 0; r < kMaxPorts; ++r) {
    if (!impl_->port_used_[r]) continue;
    PortStats ps;
    ps.role = kRoleNames[r];
    ps.name = impl_->port_names_[r];
    ps.port_id = impl_->port_ids_[r];
    rte_eth_link link = {};
    if (rte_eth_link_get_nowait(ps.port_id, &link) == 0) {
      ps.link_up = link.link_status == RTE_ETH_LINK_UP;
      ps.link_speed_mbps = link.link_speed;
    }
    rte_eth_stats es = {};
    if (rte_eth_stats_get(ps.port_id, &es) == 0) {
      ps.rx_packets = es.ipackets;
      ps.tx_packets = es.opackets;
      ps.rx_bytes = es.ibytes;
      ps.tx_bytes = es.obytes;
      ps.rx_missed = es.imissed;
      ps.rx_errors = es.ierrors;
      ps.tx_errors = es.oerrors;
      ps.rx_nombuf = es.rx_nombuf;
    }
    s.ports.push_back(ps);
  }
  for (const auto& w : impl_->workers_) {
    LcoreStats ls;
    ls.lcore_id = w->lcore_id;
    ls.queue = w->queue;
    for (const RxSource& src : w->rx) {
      ls.rx_queues.push_back(std::string(kRoleNames[src.role]) + ":" + std::to_string(src.queue));
    }
    if (w->inbox != nullptr) ls.rx_queues.push_back("inbox");
    ls.idle_wait = impl_->config_.idle_sleep_us == 0 ? "polling"
                   : w->waiter                       ? "interrupt"
                                                     : "sleep";
    ls.flows_active = w->flows->size();
    ls.flow_capacity = impl_->config_.flow_capacity;
    ls.rules_generation = w->rules_generation.load(std::memory_order_acquire);
    ls.reassembly_memory_used = w->memory_used.load(std::memory_order_relaxed);
    for_each_counter(w->counters, [&](std::string_view name, uint64_t v) {
      ls.counters.emplace_back(std::string(name), v);
    });
    s.lcores.push_back(std::move(ls));
  }
  {
    std::lock_guard<std::mutex> lock(impl_->rules_mu_);
    if (!impl_->generations_.empty()) {
      s.rules_generation = impl_->generations_.back()->number;
      s.rules_version = impl_->generations_.back()->version;
      s.rules_retired = impl_->generations_.size() - 1;
    }
  }
  return s;
}

uint64_t PacketLayer::publish_rules(std::shared_ptr<const rules::CompiledRuleSet> rules) {
  return impl_->publish_rules(std::move(rules));
}

size_t PacketLayer::reclaim_rules() { return impl_->reclaim_rules(); }

std::vector<AuditEvent> PacketLayer::drain_audit() {
  std::vector<AuditEvent> events;
  for (auto& w : impl_->workers_) {
    AuditRecord rec;
    while (rte_ring_sc_dequeue_elem(w->audit, &rec, sizeof(rec)) == 0) {
      AuditEvent ev;
      ev.unix_ms = rec.unix_ms;
      ev.lcore_id = w->lcore_id;
      ev.client.family = rec.family;
      std::memcpy(ev.client.bytes.data(), rec.client, 16);
      ev.server.family = rec.family;
      std::memcpy(ev.server.bytes.data(), rec.server, 16);
      ev.client_port = rec.client_port;
      ev.server_port = rec.server_port;
      ev.reason = std::string(rec.reason, strnlen(rec.reason, sizeof(rec.reason)));
      events.push_back(std::move(ev));
    }
  }
  return events;
}

std::string PacketLayerStats::to_json() const {
  nlohmann::json j;
  j["spread"] = spread_mode_name(spread);
  j["ports"] = nlohmann::json::array();
  for (const PortStats& p : ports) {
    j["ports"].push_back({{"role", p.role},
                          {"name", p.name},
                          {"port_id", p.port_id},
                          {"link_up", p.link_up},
                          {"link_speed_mbps", p.link_speed_mbps},
                          {"rx_packets", p.rx_packets},
                          {"tx_packets", p.tx_packets},
                          {"rx_bytes", p.rx_bytes},
                          {"tx_bytes", p.tx_bytes},
                          {"rx_missed", p.rx_missed},
                          {"rx_errors", p.rx_errors},
                          {"tx_errors", p.tx_errors},
                          {"rx_nombuf", p.rx_nombuf}});
  }
  j["lcores"] = nlohmann::json::array();
  for (const LcoreStats& l : lcores) {
    nlohmann::json counters = nlohmann::json::object();
    for (const auto& [name, v] : l.counters) counters[name] = v;
    j["lcores"].push_back({{"lcore_id", l.lcore_id},
                           {"queue", l.queue},
                           {"rx_queues", l.rx_queues},
                           {"idle_wait", l.idle_wait},
                           {"flows_active", l.flows_active},
                           {"flow_capacity", l.flow_capacity},
                           {"rules_generation", l.rules_generation},
                           {"reassembly_memory_used", l.reassembly_memory_used},
                           {"counters", counters}});
  }
  j["rules"] = {{"generation", rules_generation},
                {"version", rules_version},
                {"retired_generations", rules_retired}};
  return j.dump();
}

int run_packet_layer(const PacketLayerConfig& config, const PacketLayerHooks& hooks,
                     std::string* error) {
  if (hooks.stop == nullptr) {
    *error = "run_packet_layer needs a stop flag";
    return kExitConfig;
  }
  if (Status st = PacketLayer::init_eal(config.eal_args); !st) {
    *error = st.message();
    return kExitEal;
  }
  if (config.workers > rte_lcore_count()) {
    *error = std::to_string(config.workers) + " workers need as many lcores, EAL has " +
             std::to_string(rte_lcore_count()) + " (-l)";
    rte_eal_cleanup();
    return kExitConfig;
  }
  int code = kExitOk;
  {
    Result<std::unique_ptr<PacketLayer>> layer = PacketLayer::create(config);
    if (!layer) {
      *error = layer.status().message();
      code = layer.status().code() == StatusCode::kInvalidArgument ? kExitConfig : kExitPorts;
    } else {
      PacketLayer& l = **layer;
      auto control = [&]() {
        l.reclaim_rules();
        for (const AuditEvent& ev : l.drain_audit()) {
          if (hooks.on_audit) hooks.on_audit(ev);
        }
        if (hooks.on_stats) hooks.on_stats(l.stats());
      };
      if (hooks.on_ready) hooks.on_ready(l);
      l.run(*hooks.stop, control);
      control();  // last stats and audit events
      if (hooks.on_stopped) hooks.on_stopped();
    }
  }
  rte_eal_cleanup();
  return code;
}

}  // namespace pgwarden::packet
