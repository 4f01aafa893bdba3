// Packet layer throughput: packets/s and Gbps on one lcore, fed through DPDK net_ring ports
// with a generated capture of many concurrent PostgreSQL flows (handshake, StartupMessage,
// Simple Query statements of mixed sizes, server responses that ACK them, FIN exchange),
// prescreened against 1,000 generated deny rules (the shapes of bench/prescreen_bench.cc,
// written to a rule file) plus the shipped deny and approve sets, none of which match.
//
//   BM_ForwardOnly                  baseline: parse + bridge, no flow state
//   BM_ForwardReassemblyPrescreen   flow table + reassembly + pgwire::Framer + rules lexer +
//                                   Hyperscan (rules::CompiledRuleSet), as in production
//
// The capture's mbufs are built once and re-injected every round (an extra reference keeps
// them alive after the layer "transmits" them), with the client address rewritten per round
// so that every round opens fresh flows. Ring enqueue/dequeue is inside the measured time.
// Rates are per CPU second of the one benchmark thread (= one lcore), so they stay meaningful
// on a shared machine; wall-clock time is printed alongside.
// Run: build/bench/packet_bench [--benchmark_min_time=3]   (results: docs/benchmarks.md)
#include <benchmark/benchmark.h>
#include <rte_eth_ring.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "bench/generated_rules.h"
#include "dataplane/packet/eal_for_tests.h"
#include "dataplane/packet/frame_builder.h"
#include "dataplane/packet/packet_layer.h"
#include "dataplane/packet/packet_parser.h"
#include "common/source_root.h"

namespace pgwarden::packet {
namespace {

constexpr uint32_t kFlows = 2048;
constexpr uint32_t kStatementsPerFlow = 6;
constexpr uint32_t kRules = 1000;
constexpr uint32_t kBatch = 32;
const size_t kStatementSizes[] = {40, 120, 300, 700, 1400};  // mixed statement sizes

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

class Bench {
 public:
  explicit Bench(bool forward_only) {
    if (!init_eal_for_tests().is_ok()) {
      std::fprintf(stderr, "EAL: %s\n", init_eal_for_tests().to_string().c_str());
      std::abort();
    }
    static int instance = 0;
    std::string id = std::to_string(instance++);
    for (int i = 0; i < 2; ++i) {
      std::string n = (i == 0 ? "bagent" : "bdb") + id;
      rx_[i] = rte_ring_create(("rx" + n).c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
      tx_[i] = rte_ring_create(("tx" + n).c_str(), 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
      rte_eth_from_rings(n.c_str(), &rx_[i], 1, &tx_[i], 1, 0);
      names_[i] = "net_ring_" + n;
    }
    pool_ = rte_pktmbuf_pool_create(("capture" + id).c_str(), 65535, 256, 0,
                                    RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    build_capture();
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
      drain(tx_[i]);
      drain(rx_[i]);
      rte_ring_free(rx_[i]);
      rte_ring_free(tx_[i]);
    }
    rte_mempool_free(pool_);
  }

  // Replays the capture once with fresh client addresses (round r).
  void round(uint32_t r) {
    uint8_t net = static_cast<uint8_t>(r);
    for (size_t i = 0; i < capture_.size(); i += kBatch) {
      size_t end = std::min(capture_.size(), i + kBatch);
      for (size_t j = i; j < end; ++j) {
        rte_mbuf* m = capture_[j].mbuf;
        uint8_t* d = rte_pktmbuf_mtod(m, uint8_t*);
        d[capture_[j].from_client ? 27 : 31] = net;  // 10.<round>.x.y
        rte_mbuf_refcnt_update(m, 1);
        rte_ring_sp_enqueue(rx_[capture_[j].from_client ? 0 : 1], m);
      }
      layer_->poll_once(0);
      layer_->flush(0);
      drain(tx_[0]);
      drain(tx_[1]);
    }
  }

  uint64_t packets() const { return capture_.size(); }
  uint64_t bytes() const { return bytes_; }
  PacketLayer& layer() { return *layer_; }

 private:
  static void drain(rte_ring* r) {
    void* objs[64];
    unsigned n;
    while ((n = rte_ring_sc_dequeue_burst(r, objs, 64, nullptr)) > 0) {
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
      spec(true, kTcpAck | kTcpFin, "X" + be32(4));
      spec(false, kTcpAck | kTcpFin, "");
      spec(true, kTcpAck, "");
    }
    // Interleave the flows round-robin: all kFlows are open at once.
    for (size_t i = 0;; ++i) {
      bool any = false;
      for (auto& flow : per_flow_) {
        if (i < flow.size()) {
          capture_.push_back(flow[i]);
          any = true;
        }
      }
      if (!any) break;
    }
  }

  rte_ring* rx_[2] = {};
  rte_ring* tx_[2] = {};
  std::string names_[2];
  rte_mempool* pool_ = nullptr;
  std::vector<std::vector<CapturePacket>> per_flow_;
  std::vector<CapturePacket> capture_;
  uint64_t bytes_ = 0;
  std::string rules_file_;
  std::unique_ptr<PacketLayer> layer_;
};

uint64_t counter(PacketLayer& l, const std::string& name) {
  PacketLayerStats s = l.stats();
  for (const auto& [n, v] : s.lcores.at(0).counters) {
    if (n == name) return v;
  }
  return 0;
}

void run(benchmark::State& state, bool forward_only) {
  Bench bench(forward_only);
  uint32_t r = 0;
  for (auto _ : state) bench.round(++r);
  uint64_t packets = bench.packets() * r, bytes = bench.bytes() * r;
  state.counters["Mpps"] =
      benchmark::Counter(static_cast<double>(packets) / 1e6, benchmark::Counter::kIsRate);
  state.counters["Gbps"] =
      benchmark::Counter(static_cast<double>(bytes) * 8 / 1e9, benchmark::Counter::kIsRate);
  state.counters["avg_frame_B"] = static_cast<double>(bench.bytes()) / bench.packets();
  state.counters["flows_created"] = static_cast<double>(counter(bench.layer(), "flows_created"));
  state.counters["statements"] = static_cast<double>(counter(bench.layer(), "prescreen_messages"));
  state.counters["denied"] = static_cast<double>(counter(bench.layer(), "prescreen_denied"));
  state.counters["drops"] = static_cast<double>(
      counter(bench.layer(), "flows_capacity_dropped") + counter(bench.layer(), "tx_dropped") +
      counter(bench.layer(), "flows_midstream_dropped") +
      counter(bench.layer(), "reassembly_memcap_global_drops") +
      counter(bench.layer(), "reassembly_memcap_flow_drops") +
      counter(bench.layer(), "tcp_held_out_of_order"));
}

void BM_ForwardOnly(benchmark::State& state) { run(state, true); }
void BM_ForwardReassemblyPrescreen(benchmark::State& state) { run(state, false); }

BENCHMARK(BM_ForwardOnly)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ForwardReassemblyPrescreen)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace pgwarden::packet

BENCHMARK_MAIN();
