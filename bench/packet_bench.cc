// Packet layer throughput, per lcore and for two lcores, fed through DPDK net_ring ports with a
// generated capture of many concurrent PostgreSQL flows (handshake, StartupMessage, Simple
// Query statements of mixed sizes, server responses that ACK them, FIN exchange), prescreened
// against 1,000 generated deny rules (the shapes of bench/prescreen_bench.cc, written to a
// rule file) plus the shipped deny and approve sets, none of which match.
//
//   BM_ForwardOnly/workers:N                 baseline: parse + bridge, no flow state (two
//                                            workers: emulated RSS queues)
//   BM_ForwardReassemblyPrescreen/workers:N  flow table + reassembly + pgwire::Framer + rules
//                                            lexer + Hyperscan, as in production
//
// Traffic behaves like real traffic: each flow sends its next packet only when its previous
// one left the layer, as a server answers only what it received. So the SYN-ACK never
// overtakes its SYN, the server's ACKs release reassembly memory, both FINs close every flow
// (its ring and buffers are returned at once, the entry lingers 1 s) and no flow stays
// half-open. All 2,048 flows of a round are open at once, each at its own pace.
//
// With two workers, the ports have one RX queue (net_ring cannot spread flows), so the layer
// steers in software: worker 0 polls the agent port, worker 1 the database port, and each
// hands frames of flows the other owns to its inbox. Each lcore runs one lane: it injects its
// half of every step (like a NIC's DMA), polls its worker and drains its own TX queues.
//
// Honesty rules: the rate counts only packets that came out of the layer's TX queues
// (`forwarded`); the benchmark fails (exit code 1) if any injected packet was not forwarded,
// if any drop counter moved, or if not every Query was screened (`statements` counts SQL
// texts lexed and scanned, not framed messages). Rates are per wall-clock second (all lanes
// run at once) and per CPU second of the lcores (Mpps_per_lcore_s); the build machine is
// shared, so compare rows of the same run.
//
// Two-lcore rows also report xcore_rtt_ns, the round trip of a cache line between the two
// lcores at the start of the row (a VM's host may place its vCPUs near or far from each other).
//
// Run: build/bench/packet_bench [--benchmark_min_time=3]   (results: docs/benchmarks.md)
// On a shared machine interleave the rows and compare medians:
//      build/bench/packet_bench --benchmark_filter=Prescreen --benchmark_min_time=1
//          --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true   (one line)
#include <benchmark/benchmark.h>
#include <rte_cycles.h>
#include <rte_eth_ring.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_ring.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "bench/generated_rules.h"
#include "common/source_root.h"
#include "dataplane/packet/eal_for_tests.h"
#include "dataplane/packet/frame_builder.h"
#include "dataplane/packet/packet_layer.h"
#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {
namespace {

constexpr uint32_t kFlows = 2048;
constexpr uint32_t kStatementsPerFlow = 6;
constexpr uint32_t kRules = 1000;
constexpr unsigned kMaxLanes = 2;
const size_t kStatementSizes[] = {40, 120, 300, 700, 1400};  // mixed statement sizes

// Counters whose movement means a packet was not handled as real traffic would be.
const char* const kDropCounters[] = {"tx_dropped",
                                     "rx_steer_dropped",
                                     "parse_truncated",
                                     "parse_malformed",
                                     "l2_wrong_port_dropped",
                                     "flows_capacity_dropped",
                                     "flows_bypass_dropped",
                                     "flows_midstream_dropped",
                                     "flows_reverse_dropped",
                                     "flows_sink_refused",
                                     "tcp_held_out_of_order",
                                     "tcp_dropped_closed_flow",
                                     "tcp_syn_mismatch",
                                     "reassembly_memcap_flow_drops",
                                     "reassembly_memcap_global_drops",
                                     "reassembly_islands_cap_drops",
                                     "prescreen_denied",
                                     "prescreen_frame_errors",
                                     "prescreen_memcap_denied"};

bool g_failed = false;

struct CapturePacket {
  rte_mbuf* mbuf;
  bool from_client;
};

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  store_be32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}

// The 1,000 generated rules of bench/generated_rules.h (shared with prescreen_bench), as a
// rule file.
std::string write_generated_rules() {
  std::string out = pgwarden::bench::generated_rules(kRules);
  char path[] = "/tmp/pgw_packet_bench_XXXXXX.rules";
  int fd = mkstemps(path, 6);
  if (fd < 0) std::abort();
  close(fd);
  std::ofstream(path) << out;
  return path;
}

double cpu_seconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

class Bench {
 public:
  // `emulated_rss`: each port has one RX queue per worker and the replayer, like a NIC with a
  // symmetric RSS key, puts both directions of a flow on the queue its hash picks.
  Bench(bool forward_only, unsigned workers, bool emulated_rss)
      : workers_(workers),
        rx_queues_(emulated_rss ? workers : 1),
        software_steering_(!emulated_rss && !forward_only && workers > 1) {
    static int instance = 0;
    std::string id = std::to_string(instance++);
    for (int i = 0; i < 2; ++i) {
      std::string n = (i == 0 ? "bagent" : "bdb") + id;
      // Multi-producer: every lane injects its half of a step (like several NIC DMA engines).
      for (unsigned q = 0; q < rx_queues_; ++q) {
        rx_[i][q] = rte_ring_create(("rx" + std::to_string(q) + n).c_str(), 4096, 0, 0);
      }
      for (unsigned q = 0; q < workers; ++q) {
        tx_[i][q] = rte_ring_create(("tx" + std::to_string(q) + n).c_str(), 4096, 0,
                                    RING_F_SP_ENQ | RING_F_SC_DEQ);
      }
      rte_eth_from_rings(n.c_str(), rx_[i], rx_queues_, tx_[i], workers, 0);
      names_[i] = "net_ring_" + n;
    }
    pool_ = rte_pktmbuf_pool_create(("capture" + id).c_str(), 65535, 256, 0,
                                    RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    build_capture();
    // With emulated RSS, a lane replays exactly the flows of its worker's queue: as with a
    // NIC, only the core polling a queue touches its frames. Otherwise each lane replays half
    // of the flows and frames cross to the worker that polls the port (and then its owner).
    for (uint32_t f = 0; f < kFlows; ++f) {
      unsigned lane = emulated_rss ? rss_queue(f) : f * workers / kFlows;
      lane_flows_[lane].push_back(f);
    }
    PacketLayerConfig config;
    config.agent_port = names_[0];
    config.database_port = names_[1];
    config.allowed_direct_sources = {Prefix{Address::v4(0x0a000000), 8}};
    rules_file_ = write_generated_rules();
    config.rule_files = {rules_file_, PGW_SOURCE_ROOT "/rules/sets/deny.rules",
                         PGW_SOURCE_ROOT "/rules/sets/approve.rules"};
    config.rx_descriptors = 512;
    config.tx_descriptors = 512;
    config.flow_capacity = 1 << 18;
    config.flow_finished_linger_ms = 1000;
    config.forward_only_baseline = forward_only;
    config.workers = workers;
    config.caller_spreads_flows = emulated_rss;
    auto layer = PacketLayer::create(config);
    if (!layer) {
      std::fprintf(stderr, "PacketLayer: %s\n", layer.status().to_string().c_str());
      std::abort();
    }
    layer_ = std::move(*layer);
  }

  ~Bench() {
    layer_.reset();
    std::remove(rules_file_.c_str());
    for (CapturePacket& p : capture_) rte_pktmbuf_free(p.mbuf);
    for (int i = 0; i < 2; ++i) {
      for (unsigned q = 0; q < rx_queues_; ++q) {
        drain_ring(rx_[i][q]);
        rte_ring_free(rx_[i][q]);
      }
      for (unsigned q = 0; q < workers_; ++q) {
        drain_ring(tx_[i][q]);
        rte_ring_free(tx_[i][q]);
      }
    }
    rte_mempool_free(pool_);
  }

  // One lane (lcore) replays round `r` of its flows with fresh client addresses. Each flow
  // sends its next packet only when its previous one left the layer (request/response, as
  // real peers do), so flows advance independently; the round ends when every lane's flows
  // closed.
  void lane_round(unsigned lane, uint32_t r) {
    uint8_t net = static_cast<uint8_t>(r);
    if (software_steering_) assign_owned_flows(lane, net);
    const std::vector<uint32_t>& mine = lane_flows_[lane];
    std::vector<uint32_t>& cursor = cursor_[lane];
    cursor.assign(mine.size(), 0);
    size_t steps = per_flow_[0].size(), open = mine.size();
    while (open > 0) {
      for (size_t i = 0; i < cursor.size(); ++i) {
        uint32_t c = cursor[i];
        if (c > steps) continue;  // closed this round
        std::vector<CapturePacket>& flow = per_flow_[mine[i]];
        if (c > 0 && rte_mbuf_refcnt_read(flow[c - 1].mbuf) != 1) continue;  // in flight
        if (c == steps) {
          cursor[i] = c + 1;
          --open;
          continue;
        }
        rte_mbuf* m = flow[c].mbuf;
        uint8_t* d = rte_pktmbuf_mtod(m, uint8_t*);
        d[flow[c].from_client ? 27 : 31] = net;  // 10.<round>.x.y
        rte_mbuf_refcnt_update(m, 1);
        rte_ring* rx = rx_[flow[c].from_client ? 0 : 1][rss_queue(mine[i])];
        if (rte_ring_mp_enqueue(rx, m) != 0) {
          rte_mbuf_refcnt_update(m, -1);  // RX ring full: retry on the next pass
          continue;
        }
        cursor[i] = c + 1;
      }
      work(lane);
    }
    lane_done_[lane].value.store(r, std::memory_order_release);
    for (unsigned o = 0; o < workers_; ++o) {
      // Keep polling: the other lane's flows may need this lane's worker.
      while (lane_done_[o].value.load(std::memory_order_acquire) < r) work(lane);
    }
  }

  uint64_t packets() const { return capture_.size(); }
  uint64_t bytes() const { return bytes_; }
  uint64_t forwarded() const {
    uint64_t n = 0;
    for (unsigned w = 0; w < workers_; ++w) n += forwarded_[w].value;
    return n;
  }
  uint64_t forwarded_by(unsigned lane) const { return forwarded_[lane].value; }
  uint64_t forwarded_bytes() const {
    uint64_t n = 0;
    for (unsigned w = 0; w < workers_; ++w) n += forwarded_bytes_[w].value;
    return n;
  }
  unsigned workers() const { return workers_; }
  // CPU seconds lane `lane` spent in poll rounds that found frames (the layer's own work).
  double busy_seconds(unsigned lane) const { return busy_s_[lane].value; }
  PacketLayer& layer() { return *layer_; }

 private:
  // Padded per-lane values: lanes never share a cache line.
  struct alignas(64) LaneU64 {
    uint64_t value = 0;
  };
  struct alignas(64) LaneDouble {
    double value = 0;
  };
  struct alignas(64) LaneAtomic {
    std::atomic<uint64_t> value{0};
  };

  // Polls the lane's worker, sends what it buffered and takes it off its TX queues (the
  // "wire"), counting every packet that left the layer.
  // Busy time is thread CPU time (not TSC: on a shared machine a preempted lcore's TSC runs
  // on) of the calls that found frames, taking the TX queues off included.
  void work(unsigned lane) {
    double t0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
    bool found = false;
    for (int round = 0; round < 64; ++round) {
      bool any = layer_->poll_once(lane);
      found = found || any;
      layer_->flush(lane);
      void* objs[64];
      for (int i = 0; i < 2; ++i) {
        unsigned n;
        while ((n = rte_ring_sc_dequeue_burst(tx_[i][lane], objs, 64, nullptr)) > 0) {
          forwarded_[lane].value += n;
          for (unsigned k = 0; k < n; ++k) {
            forwarded_bytes_[lane].value += rte_pktmbuf_pkt_len(static_cast<rte_mbuf*>(objs[k]));
          }
          rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(objs), n);
        }
      }
      if (!any) break;
    }
    if (found) busy_s_[lane].value += cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - t0;
  }

  // Software steering: this lane replays, in round `net`, the flows its worker owns (client
  // addresses change every round, so owners do too). The replayer's bookkeeping (a flow's
  // next packet waits until the previous one left the layer) then stays on the owner's core,
  // as the emulated RSS lanes' does; what crosses cores is what crosses in production: frames
  // received by the worker polling their port and handed to the owner.
  void assign_owned_flows(unsigned lane, uint8_t net) {
    lane_flows_[lane].clear();
    Address server = Address::v4(0xC0000201);
    for (uint32_t f = 0; f < kFlows; ++f) {
      Address client = Address::v4(0x0a000000 | uint32_t{net} << 16 | (f >> 8) << 8 | (f & 0xff));
      bool src_is_a = false;
      FlowKey key = make_flow_key(client, static_cast<uint16_t>(20000 + f % 40000), server, 5432,
                                  kIpProtoTcp, &src_is_a);
      if (layer_->software_owner(key) == lane) lane_flows_[lane].push_back(f);
    }
  }

  // The RX queue a symmetric RSS hash would give flow f (both directions: same queue).
  unsigned rss_queue(size_t f) const {
    return static_cast<unsigned>(((f * 2654435761u) >> 16) % rx_queues_);
  }

  static void drain_ring(rte_ring* r) {
    void* objs[64];
    unsigned n;
    while ((n = rte_ring_dequeue_burst(r, objs, 64, nullptr)) > 0) {
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf**>(objs), n);
    }
  }

  void add(const TcpFrameSpec& s, bool from_client, uint32_t flow) {
    std::vector<uint8_t> f = build_tcp_frame(s);
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    if (m == nullptr) std::abort();
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
    per_flow_[flow].push_back({m, from_client});
    bytes_ += f.size();
  }

  void build_capture() {
    per_flow_.resize(kFlows);
    Address server = Address::v4(0xC0000201);  // 192.0.2.1
    std::string response = "C" + be32(13) + "SELECT 1" + std::string(1, '\0') + "Z" + be32(5) + "I";
    for (uint32_t f = 0; f < kFlows; ++f) {
      Address client = Address::v4(0x0a000000 | (f >> 8) << 8 | (f & 0xff));
      uint16_t port = static_cast<uint16_t>(20000 + f % 40000);
      uint32_t cseq = 1000 + f * 7919, sseq = 5000 + f * 104729;
      auto spec = [&](bool from_client, uint8_t flags, const std::string& payload) {
        TcpFrameSpec s;
        s.src = from_client ? client : server;
        s.dst = from_client ? server : client;
        s.src_port = from_client ? port : 5432;
        s.dst_port = from_client ? 5432 : port;
        s.seq = TcpSeq(from_client ? cseq : sseq);
        s.ack = TcpSeq(from_client ? sseq : cseq);
        s.flags = flags;
        s.payload = {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()};
        add(s, from_client, f);
        if (from_client) {
          cseq += static_cast<uint32_t>(payload.size()) + ((flags & (kTcpSyn | kTcpFin)) ? 1 : 0);
        } else {
          sseq += static_cast<uint32_t>(payload.size()) + ((flags & (kTcpSyn | kTcpFin)) ? 1 : 0);
        }
      };
      spec(true, kTcpSyn, "");
      spec(false, kTcpSyn | kTcpAck, "");
      spec(true, kTcpAck, "");
      std::string startup = be32(196608) + std::string("user\0agent\0database\0demo\0\0", 26);
      spec(true, kTcpAck | kTcpPsh, be32(static_cast<uint32_t>(startup.size() + 4)) + startup);
      spec(false, kTcpAck | kTcpPsh, response);
      for (uint32_t q = 0; q < kStatementsPerFlow; ++q) {
        size_t size = kStatementSizes[(f + q) % std::size(kStatementSizes)];
        std::string sql = "SELECT id, full_name, email FROM crm.customers WHERE id = " +
                          std::to_string(f * 100 + q) + " AND notes <> '";
        while (sql.size() + 2 < size) sql += "x";
        sql += "'";
        spec(true, kTcpAck | kTcpPsh,
             "Q" + be32(static_cast<uint32_t>(sql.size() + 5)) + sql + std::string(1, '\0'));
        spec(false, kTcpAck | kTcpPsh, response);
      }
      spec(true, kTcpAck | kTcpFin, "X" + be32(4));  // Terminate with the client's FIN
      spec(false, kTcpAck | kTcpFin, "");            // the server's FIN acknowledges it
      spec(true, kTcpAck, "");                       // the client's last ACK
    }
    for (auto& flow : per_flow_) capture_.insert(capture_.end(), flow.begin(), flow.end());
  }

  unsigned workers_;
  unsigned rx_queues_;
  bool software_steering_;
  rte_ring* rx_[2][kMaxLanes] = {};
  rte_ring* tx_[2][kMaxLanes] = {};
  std::string names_[2];
  rte_mempool* pool_ = nullptr;
  std::vector<std::vector<CapturePacket>> per_flow_;
  std::vector<CapturePacket> capture_;
  uint64_t bytes_ = 0;
  std::string rules_file_;
  std::unique_ptr<PacketLayer> layer_;
  std::vector<uint32_t> lane_flows_[kMaxLanes];  // the flows each lane replays
  std::vector<uint32_t> cursor_[kMaxLanes];      // per own flow: next packet to send
  LaneAtomic lane_done_[kMaxLanes];
  LaneU64 forwarded_[kMaxLanes];
  LaneU64 forwarded_bytes_[kMaxLanes];
  LaneDouble busy_s_[kMaxLanes];
};

// Lane 1's side of the run: replays the rounds lane 0 (the benchmark thread) announces.
struct LaneControl {
  Bench* bench;
  std::atomic<uint32_t> rounds{0};  // rounds lane 0 started
  std::atomic<bool> stop{false};
  double cpu_s = 0;  // lane 1's thread CPU time
};

int lane_main(void* arg) {
  auto* c = static_cast<LaneControl*>(arg);
  double start = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
  uint32_t done = 0;
  for (;;) {
    uint32_t want = c->rounds.load(std::memory_order_acquire);
    if (want > done) {
      c->bench->lane_round(1, ++done);
    } else if (c->stop.load(std::memory_order_acquire)) {
      break;
    } else {
      rte_pause();
    }
  }
  c->cpu_s = cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - start;
  return 0;
}

// Cross-lcore latency: a cache line bounced between the two lcores, best round trip of
// windows of 100 (a window in which either lcore was descheduled is not the best). The VM's
// vCPUs are placed by its host: the same two lcores measured ~50 ns and ~280 ns on different
// runs, and software steering pays that latency on about half of the frames. Reported with
// every two-lcore row so that rows are compared knowing it.
struct alignas(64) PingPong {
  std::atomic<uint32_t> value{0};
  uint32_t rounds = 0;
};

int pong_main(void* arg) {
  auto* p = static_cast<PingPong*>(arg);
  for (uint32_t i = 0; i < p->rounds; ++i) {
    while (p->value.load(std::memory_order_acquire) != 2 * i + 1) {
    }
    p->value.store(2 * i + 2, std::memory_order_release);
  }
  return 0;
}

double cross_lcore_rtt_ns(unsigned lcore) {
  constexpr uint32_t kWindow = 100;
  PingPong p;
  p.rounds = 200 * kWindow;
  rte_eal_remote_launch(pong_main, &p, lcore);
  uint64_t best = UINT64_MAX;
  for (uint32_t i = 0; i < p.rounds; i += kWindow) {
    uint64_t t0 = rte_rdtsc();
    for (uint32_t j = i; j < i + kWindow; ++j) {
      p.value.store(2 * j + 1, std::memory_order_release);
      while (p.value.load(std::memory_order_acquire) != 2 * j + 2) {
      }
    }
    best = std::min(best, (rte_rdtsc() - t0) / kWindow);
  }
  rte_eal_wait_lcore(lcore);
  return static_cast<double>(best) * 1e9 / static_cast<double>(rte_get_tsc_hz());
}

std::map<std::string, uint64_t> lcore_counters(const LcoreStats& l) {
  std::map<std::string, uint64_t> m;
  for (const auto& [n, v] : l.counters) m[n] = v;
  return m;
}

void run(benchmark::State& state, bool forward_only, bool emulated_rss = false) {
  unsigned workers = static_cast<unsigned>(state.range(0));
  if (workers > rte_lcore_count()) {
    state.SkipWithError("needs as many EAL lcores as workers (a machine with 2 CPUs)");
    return;
  }
  double rtt_ns = workers > 1 ? cross_lcore_rtt_ns(rte_get_next_lcore(-1, 1, 0)) : 0;
  Bench bench(forward_only, workers, emulated_rss && workers > 1);
  LaneControl control{&bench};
  if (workers > 1) rte_eal_remote_launch(lane_main, &control, rte_get_next_lcore(-1, 1, 0));
  double cpu0 = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
  uint32_t r = 0;
  for (auto _ : state) {
    ++r;
    control.rounds.store(r, std::memory_order_release);
    bench.lane_round(0, r);
  }
  double lane0_cpu = cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - cpu0;
  control.stop.store(true, std::memory_order_release);
  if (workers > 1) rte_eal_wait_lcore(rte_get_next_lcore(-1, 1, 0));
  double lcore_cpu = lane0_cpu + control.cpu_s;
  // Let every worker pass its drain tick once more (it publishes its memory use there).
  rte_delay_us_block(500);
  for (unsigned w = 0; w < workers; ++w) bench.layer().poll_once(w);

  uint64_t injected = bench.packets() * r, forwarded = bench.forwarded();
  state.counters["Mpps"] =
      benchmark::Counter(static_cast<double>(forwarded) / 1e6, benchmark::Counter::kIsRate);
  state.counters["Gbps"] = benchmark::Counter(
      static_cast<double>(bench.forwarded_bytes()) * 8 / 1e9, benchmark::Counter::kIsRate);
  state.counters["Mpps_per_lcore_s"] = static_cast<double>(forwarded) / 1e6 / lcore_cpu;
  // What the lcores could forward if each had a core of its own: packets over the busy time
  // of the busiest lcore (its poll rounds that found frames, thread CPU time).
  double busiest = 0;
  for (unsigned w = 0; w < workers; ++w) busiest = std::max(busiest, bench.busy_seconds(w));
  state.counters["Mpps_busy"] = static_cast<double>(forwarded) / 1e6 / busiest;
  state.counters["avg_frame_B"] = static_cast<double>(bench.bytes()) / bench.packets();
  if (workers > 1) state.counters["xcore_rtt_ns"] = rtt_ns;

  PacketLayerStats stats = bench.layer().stats();
  uint64_t statements = 0, flows = 0, reasm_in_use = 0;
  std::string drops;
  for (size_t w = 0; w < stats.lcores.size(); ++w) {
    std::map<std::string, uint64_t> c = lcore_counters(stats.lcores[w]);
    statements += c["prescreen_statements"];
    flows += c["flows_created"];
    reasm_in_use += stats.lcores[w].reassembly_memory_used;
    for (const char* name : kDropCounters) {
      if (c[name] > 0) drops += " " + std::string(name) + "=" + std::to_string(c[name]);
    }
    std::string lane = "w" + std::to_string(w) + "_";
    state.counters[lane + "Mpps"] =
        benchmark::Counter(static_cast<double>(bench.forwarded_by(static_cast<unsigned>(w))) / 1e6,
                           benchmark::Counter::kIsRate);
    state.counters[lane + "flows"] = static_cast<double>(c["flows_created"]);
    state.counters[lane + "busy_s"] = bench.busy_seconds(static_cast<unsigned>(w));
    state.counters[lane + "steered_in"] = static_cast<double>(c["rx_steered_in"]);
  }
  state.counters["statements"] = static_cast<double>(statements);
  state.counters["flows_created"] = static_cast<double>(flows);
  state.counters["reasm_bytes_left"] = static_cast<double>(reasm_in_use);

  std::string error;
  if (forwarded != injected) {
    error += "forwarded " + std::to_string(forwarded) + " of " + std::to_string(injected) +
             " injected packets;";
  }
  if (!drops.empty()) error += " drop counters moved:" + drops + ";";
  if (!forward_only) {
    uint64_t want = static_cast<uint64_t>(kFlows) * kStatementsPerFlow * r;
    if (statements != want) {
      error += " screened " + std::to_string(statements) + " statements, expected " +
               std::to_string(want) + ";";
    }
    if (flows != static_cast<uint64_t>(kFlows) * r) error += " flows_created mismatch;";
  }
  if (!error.empty()) {
    g_failed = true;
    state.SkipWithError(error.c_str());
  }
}

// Two workers bridge with emulated RSS queues: without flow state nothing needs steering, and
// lanes that depend on each other for every other packet would measure the scheduler.
void BM_ForwardOnly(benchmark::State& state) { run(state, true, true); }
void BM_ForwardReassemblyPrescreen(benchmark::State& state) { run(state, false); }
void BM_ForwardReassemblyPrescreenRss(benchmark::State& state) { run(state, false, true); }

BENCHMARK(BM_ForwardOnly)
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ForwardReassemblyPrescreen)
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_ForwardReassemblyPrescreenRss)
    ->ArgName("workers")
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace pgwarden::packet

int main(int argc, char** argv) {
  using namespace pgwarden::packet;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const pgwarden::Status& eal = init_eal_for_tests("", cpus >= 2 ? "0-1" : "0");
  if (!eal.is_ok()) {
    std::fprintf(stderr, "EAL: %s\n", eal.to_string().c_str());
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_failed) {
    std::fprintf(stderr, "packet_bench: FAILED — packets were dropped or not screened (above)\n");
    return 1;
  }
  return 0;
}
