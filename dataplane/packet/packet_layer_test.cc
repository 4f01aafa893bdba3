// PacketLayer driven through ring-backed ethdevs (DPDK net_ring): frames go in on the agent
// or database ring exactly as a NIC would deliver them, and what the layer transmits is read
// back from the other rings.
#include "dataplane/packet/packet_layer.h"

#include <gtest/gtest.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>

#include "common/source_root.h"
#include "dataplane/packet/eal_for_tests.h"
#include "dataplane/packet/frame_builder.h"
#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {
namespace {

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  store_be32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
std::string startup_message() {
  std::string body = be32(196608) + std::string("user\0agent\0\0", 12);
  return be32(static_cast<uint32_t>(body.size() + 4)) + body;
}
std::string query(const std::string& sql) {
  return "Q" + be32(static_cast<uint32_t>(sql.size() + 5)) + sql + std::string(1, '\0');
}

const Address kAgent = Address::v4(0xC612000A);    // 198.18.0.10, allowed
const Address kRogue = Address::v4(0xC612000B);    // 198.18.0.11, not allowed
const Address kDb = Address::v4(0xC6120014);       // 198.18.0.20
const Address kGateway = Address::v4(0xC6120001);  // 198.18.0.1
using Mac = std::array<uint8_t, 6>;
constexpr Mac kAgentMac = {0x02, 0, 0, 0, 0, 0x0a};
constexpr Mac kDbMac = {0x02, 0, 0, 0, 0, 0x14};
constexpr Mac kHostMac = {0x02, 0, 0, 0, 0, 0x01};

struct RingPort {
  rte_ring* rx = nullptr;   // what the test injects
  rte_ring* tx = nullptr;   // what the layer sent (TX queue 0)
  rte_ring* tx1 = nullptr;  // TX queue 1 (ports made for two workers)
  std::string name;
};

class PacketLayerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(init_eal_for_tests().is_ok()) << init_eal_for_tests().to_string();
    if (pool_ != nullptr) return;  // derived suites share it
    pool_ = rte_pktmbuf_pool_create("test_frames", 4095, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, 0);
    ASSERT_NE(pool_, nullptr);
  }

  // A ring port with one RX queue and `tx_queues` (1 or 2) TX queues.
  RingPort make_port(const std::string& role, unsigned tx_queues = 1) {
    static int n = 0;
    RingPort p;
    std::string id = role + std::to_string(n++);
    p.rx = rte_ring_create(("rx_" + id).c_str(), 1024, 0, 0);
    p.tx = rte_ring_create(("tx_" + id).c_str(), 1024, 0, 0);
    if (tx_queues > 1) p.tx1 = rte_ring_create(("tx1_" + id).c_str(), 1024, 0, 0);
    p.name = "net_ring_" + id;
    rte_ring* tx[2] = {p.tx, p.tx1};
    int port = rte_eth_from_rings(id.c_str(), &p.rx, 1, tx, tx_queues, 0);
    EXPECT_GE(port, 0);
    rings_.push_back(p);
    return p;
  }

  void SetUp() override {
    agent_ = make_port("agent", tx_queues_);
    db_ = make_port("db", tx_queues_);
    host_ = make_port("host", tx_queues_);
    config_.agent_port = agent_.name;
    config_.database_port = db_.name;
    config_.exception_port = host_.name;
    config_.gateway_addresses = {Prefix{kGateway, 32}};
    config_.allowed_direct_sources = {Prefix{kAgent, 32}};
    config_.rule_files = {PGW_SOURCE_ROOT "/rules/sets/deny.rules",
                          PGW_SOURCE_ROOT "/rules/sets/approve.rules"};
    config_.rx_descriptors = 128;
    config_.tx_descriptors = 128;
    config_.flow_capacity = 8;
    // inject() polls once: the exception port must be polled in every round
    // (ExceptionPortIsPolledLessOftenWhileQuiet tests the production interval).
    config_.exception_poll_us = 0;
  }

  void TearDown() override {
    layer_.reset();
    for (RingPort& p : rings_) {
      // Ports no layer used are still open: release them (DPDK has 32 port slots).
      uint16_t id;
      if (rte_eth_dev_get_port_by_name(p.name.c_str(), &id) == 0) rte_eth_dev_close(id);
      drain(p.tx);
      drain(p.rx);
      rte_ring_free(p.rx);
      rte_ring_free(p.tx);
      if (p.tx1 != nullptr) {
        drain(p.tx1);
        rte_ring_free(p.tx1);
      }
    }
    rings_.clear();
  }

  void start() {
    auto l = PacketLayer::create(config_);
    ASSERT_TRUE(l.is_ok()) << l.status().to_string();
    layer_ = std::move(*l);
  }

  static void drain(rte_ring* r) {
    void* m;
    while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
  }

  void inject(const RingPort& port, const std::vector<uint8_t>& frame) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    ASSERT_NE(m, nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size())), frame.data(),
                frame.size());
    ASSERT_EQ(rte_ring_enqueue(port.rx, m), 0);
    layer_->poll_once(0);
    layer_->flush(0);
  }

  // Frames the layer transmitted on `port`, consumed.
  std::vector<std::vector<uint8_t>> sent(const RingPort& port) {
    std::vector<std::vector<uint8_t>> out;
    void* m;
    for (rte_ring* r : {port.tx, port.tx1}) {
      while (r != nullptr && rte_ring_dequeue(r, &m) == 0) {
        auto* mb = static_cast<rte_mbuf*>(m);
        const uint8_t* d = rte_pktmbuf_mtod(mb, const uint8_t*);
        out.emplace_back(d, d + rte_pktmbuf_data_len(mb));
        rte_pktmbuf_free(mb);
      }
    }
    return out;
  }

  std::vector<uint8_t> tcp(const Address& src, uint16_t sport, const Address& dst, uint16_t dport,
                           uint32_t seq, uint32_t ack, uint8_t flags,
                           const std::string& payload = "",
                           const Mac& src_mac = {0x02, 0, 0, 0, 0, 1},
                           const Mac& dst_mac = {0x02, 0, 0, 0, 0, 2}) {
    TcpFrameSpec s;
    s.src_mac = src_mac;
    s.dst_mac = dst_mac;
    s.src = src;
    s.dst = dst;
    s.src_port = sport;
    s.dst_port = dport;
    s.seq = TcpSeq(seq);
    s.ack = TcpSeq(ack);
    s.flags = flags;
    s.payload = {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()};
    return build_tcp_frame(s);
  }

  uint64_t counter(const std::string& name, unsigned worker = 0) {
    PacketLayerStats stats = layer_->stats();
    for (const auto& [n, v] : stats.lcores.at(worker).counters) {
      if (n == name) return v;
    }
    ADD_FAILURE() << "no counter " << name;
    return 0;
  }

  // Opens agent:40000 -> db:5432 with the handshake; client ISN 1000, server ISN 5000.
  void handshake(uint16_t sport = 40000) {
    inject(agent_, tcp(kAgent, sport, kDb, 5432, 1000, 0, kTcpSyn));
    ASSERT_EQ(sent(db_).size(), 1u);
    inject(db_, tcp(kDb, 5432, kAgent, sport, 5000, 1001, kTcpSyn | kTcpAck));
    ASSERT_EQ(sent(agent_).size(), 1u);
    inject(agent_, tcp(kAgent, sport, kDb, 5432, 1001, 5001, kTcpAck));
    ASSERT_EQ(sent(db_).size(), 1u);
  }

  static rte_mempool* pool_;
  unsigned tx_queues_ = 1;  // TX queues of the fixture's ports
  PacketLayerConfig config_;
  std::unique_ptr<PacketLayer> layer_;
  std::vector<RingPort> rings_;
  RingPort agent_, db_, host_;
};

rte_mempool* PacketLayerTest::pool_ = nullptr;

TEST_F(PacketLayerTest, AllowedSessionIsForwardedUnchanged) {
  start();
  handshake();
  std::string data = startup_message() + query("SELECT 1");
  std::vector<uint8_t> frame = tcp(kAgent, 40000, kDb, 5432, 1001, 5001, kTcpAck | kTcpPsh, data);
  inject(agent_, frame);
  auto out = sent(db_);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], frame);
  EXPECT_EQ(counter("flows_created"), 1u);
  EXPECT_EQ(counter("prescreen_messages"), 2u);
  EXPECT_EQ(layer_->stats().lcores.at(0).flows_active, 1u);
}

TEST_F(PacketLayerTest, FramesLeaveAtTheEndOfTheirPollRoundWithoutWaitingForTheDrainTimer) {
  config_.drain_us = 60'000'000;  // a drain timer that never fires during the test
  start();
  layer_->poll_once(0);  // the first round runs the drain tick; it is not due again for 60 s
  // One request/response pair, polled without flush(): each frame must be on the wire when
  // the round that received it returns (a TX buffer of 32 never fills with two frames).
  for (const auto& [in, out, frame] :
       {std::tuple{&agent_, &db_, tcp(kAgent, 40000, kDb, 5432, 1000, 0, kTcpSyn)},
        std::tuple{&db_, &agent_, tcp(kDb, 5432, kAgent, 40000, 5000, 1001, kTcpSyn | kTcpAck)}}) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    ASSERT_NE(m, nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size())), frame.data(),
                frame.size());
    ASSERT_EQ(rte_ring_enqueue(in->rx, m), 0);
    EXPECT_TRUE(layer_->poll_once(0));
    auto got = sent(*out);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], frame);
  }
  EXPECT_FALSE(layer_->poll_once(0));  // nothing left behind
  EXPECT_TRUE(sent(agent_).empty());
  EXPECT_TRUE(sent(db_).empty());
}

TEST_F(PacketLayerTest, DeniedStatementIsDroppedAndBothEndsAreReset) {
  start();
  handshake();
  std::string first = startup_message() + query("SELECT 1");
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, 1001, 5001, kTcpAck, first));
  ASSERT_EQ(sent(db_).size(), 1u);
  uint32_t seq = 1001 + static_cast<uint32_t>(first.size());
  std::string evil = query("DROP DATABASE demo");
  // The statement is split: its first half passes (incomplete message), the second is dropped.
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq, 5001, kTcpAck, evil.substr(0, 8)));
  ASSERT_EQ(sent(db_).size(), 1u);
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq + 8, 5001, kTcpAck, evil.substr(8)));

  auto to_db = sent(db_);
  ASSERT_EQ(to_db.size(), 1u);
  ParsedPacket r;
  ASSERT_EQ(parse_frame(to_db[0], &r), ParseStatus::kOk);
  EXPECT_EQ(r.tcp_flags, kTcpRst | kTcpAck);
  EXPECT_EQ(r.seq, TcpSeq(seq + 8));
  EXPECT_EQ(r.payload_len, 0);
  auto to_agent = sent(agent_);
  ASSERT_EQ(to_agent.size(), 1u);
  ASSERT_EQ(parse_frame(to_agent[0], &r), ParseStatus::kOk);
  EXPECT_EQ(r.tcp_flags, kTcpRst | kTcpAck);
  EXPECT_EQ(r.src, kDb);
  EXPECT_EQ(r.seq, TcpSeq(5001));

  // Anything later on the flow is dropped, in both directions.
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq + 8, 5001, kTcpAck, evil.substr(8)));
  inject(db_, tcp(kDb, 5432, kAgent, 40000, 5001, seq, kTcpAck));
  EXPECT_TRUE(sent(db_).empty());
  EXPECT_TRUE(sent(agent_).empty());

  auto events = layer_->drain_audit();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].reason, "deny:deny.drop_database");
  EXPECT_EQ(events[0].client, kAgent);
  EXPECT_EQ(events[0].server_port, 5432);
  EXPECT_EQ(counter("enforce_resets_sent"), 2u);
  EXPECT_EQ(counter("prescreen_denied"), 1u);
}

// The shipped deny set plus one rule that denies any statement naming table kv.
std::shared_ptr<const rules::CompiledRuleSet> deny_set_plus_kv() {
  std::ifstream in(PGW_SOURCE_ROOT "/rules/sets/deny.rules");
  std::stringstream text;
  text << in.rdbuf()
       << "\n[deny.kv]\naction = deny\nview = code\npattern = \\bkv\\b\n"
          "message = kv is off limits\nseverity = high\n";
  rules::RuleSource src{"deny-plus-kv.rules", text.str()};
  auto set = rules::RuleSet::parse(std::span<const rules::RuleSource>(&src, 1));
  EXPECT_TRUE(set.is_ok()) << set.status().to_string();
  auto compiled = rules::CompiledRuleSet::compile(std::move(*set));
  EXPECT_TRUE(compiled.is_ok()) << compiled.status().to_string();
  return *compiled;
}

TEST_F(PacketLayerTest, PublishedRuleGenerationReachesOpenFlowsAtTheNextPollRound) {
  start();
  EXPECT_EQ(layer_->stats().rules_generation, 1u);
  EXPECT_EQ(layer_->stats().lcores.at(0).rules_generation, 1u);
  handshake();
  std::string first = startup_message() + query("SELECT v FROM kv");
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, 1001, 5001, kTcpAck, first));
  ASSERT_EQ(sent(db_).size(), 1u);  // allowed by generation 1

  std::shared_ptr<const rules::CompiledRuleSet> next = deny_set_plus_kv();
  std::weak_ptr<const rules::CompiledRuleSet> next_weak = next;
  EXPECT_EQ(layer_->publish_rules(std::move(next)), 2u);
  PacketLayerStats published = layer_->stats();
  EXPECT_EQ(published.rules_generation, 2u);
  EXPECT_EQ(published.rules_version.size(), 16u);
  // The worker has not polled since: generation 1 stays allocated for it.
  EXPECT_EQ(published.lcores.at(0).rules_generation, 1u);
  EXPECT_EQ(layer_->reclaim_rules(), 1u);

  uint32_t seq = 1001 + static_cast<uint32_t>(first.size());
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq, 5001, kTcpAck, query("SELECT v FROM kv")));
  auto to_db = sent(db_);
  ASSERT_EQ(to_db.size(), 1u);
  ParsedPacket r;
  ASSERT_EQ(parse_frame(to_db[0], &r), ParseStatus::kOk);
  EXPECT_EQ(r.tcp_flags, kTcpRst | kTcpAck);  // the same statement is now denied
  auto events = layer_->drain_audit();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].reason, "deny:deny.kv");
  EXPECT_EQ(layer_->stats().lcores.at(0).rules_generation, 2u);
  EXPECT_EQ(layer_->reclaim_rules(), 0u);  // every worker moved on: generation 1 freed

  // A third generation retires the second; once adopted, nothing holds it any more.
  EXPECT_EQ(layer_->publish_rules(deny_set_plus_kv()), 3u);
  EXPECT_FALSE(next_weak.expired());
  layer_->poll_once(0);
  EXPECT_EQ(layer_->reclaim_rules(), 0u);
  EXPECT_TRUE(next_weak.expired());
}

TEST_F(PacketLayerTest, OutOfOrderSegmentIsHeldUntilInspected) {
  start();
  handshake();
  std::string data = startup_message() + query("SELECT 42");
  size_t half = data.size() / 2;
  auto second = tcp(kAgent, 40000, kDb, 5432, 1001 + static_cast<uint32_t>(half), 5001, kTcpAck,
                    data.substr(half));
  inject(agent_, second);
  EXPECT_TRUE(sent(db_).empty());
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, 1001, 5001, kTcpAck, data.substr(0, half)));
  EXPECT_EQ(sent(db_).size(), 1u);
  inject(agent_, second);  // the client's retransmission
  EXPECT_EQ(sent(db_).size(), 1u);
  EXPECT_EQ(counter("tcp_held_out_of_order"), 1u);
}

TEST_F(PacketLayerTest, BypassFromSourceNotAllowedIsDropped) {
  start();
  inject(agent_, tcp(kRogue, 40000, kDb, 5432, 1000, 0, kTcpSyn));
  EXPECT_TRUE(sent(db_).empty());
  EXPECT_EQ(counter("flows_bypass_dropped"), 1u);
}

TEST_F(PacketLayerTest, MidstreamAndReverseOpenedFlowsAreDropped) {
  start();
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, 1000, 1, kTcpAck, "x"));
  inject(db_, tcp(kDb, 5432, kAgent, 40000, 1000, 0, kTcpSyn));
  EXPECT_TRUE(sent(db_).empty());
  EXPECT_TRUE(sent(agent_).empty());
  EXPECT_EQ(counter("flows_midstream_dropped"), 1u);
  EXPECT_EQ(counter("flows_reverse_dropped"), 1u);
}

TEST_F(PacketLayerTest, FlowsBeyondCapacityAreDroppedAndCounted) {
  start();
  for (uint16_t i = 0; i < 9; ++i) {
    inject(agent_, tcp(kAgent, static_cast<uint16_t>(41000 + i), kDb, 5432, 1000, 0, kTcpSyn));
  }
  EXPECT_EQ(sent(db_).size(), 8u);
  EXPECT_EQ(counter("flows_capacity_dropped"), 1u);
}

TEST_F(PacketLayerTest, HostRepliesGoOnlyToTheSideTheirDestinationWasLearnedOn) {
  start();
  // An agent opens a session to the gateway's own address (the session engine).
  inject(agent_, tcp(kAgent, 40000, kGateway, 5432, 1000, 0, kTcpSyn, "", kAgentMac, kHostMac));
  EXPECT_EQ(sent(host_).size(), 1u);
  EXPECT_TRUE(sent(db_).empty());
  inject(host_, tcp(kGateway, 5432, kAgent, 40000, 7000, 1001, kTcpSyn | kTcpAck, "", kHostMac,
                    kAgentMac));
  EXPECT_EQ(sent(agent_).size(), 1u);
  EXPECT_TRUE(sent(db_).empty());
  EXPECT_EQ(counter("exception_to_host"), 1u);
  EXPECT_EQ(counter("exception_from_host"), 1u);
}

TEST_F(PacketLayerTest, HostUpstreamConnectionReachesOnlyTheDatabaseSide) {
  start();
  // The database station answered the host's ARP (or sent anything) from the database side.
  std::vector<uint8_t> arp_reply(42, 0);
  std::copy(kHostMac.begin(), kHostMac.end(), arp_reply.begin());
  std::copy(kDbMac.begin(), kDbMac.end(), arp_reply.begin() + 6);
  store_be16(arp_reply.data() + 12, kEtherTypeArp);
  inject(db_, arp_reply);
  EXPECT_EQ(sent(host_).size(), 1u);
  sent(agent_);
  // The session engine's upstream SYN and the database's answer.
  inject(host_, tcp(kGateway, 45000, kDb, 5432, 1, 0, kTcpSyn, "", kHostMac, kDbMac));
  EXPECT_EQ(sent(db_).size(), 1u);
  EXPECT_TRUE(sent(agent_).empty());
  inject(db_, tcp(kDb, 5432, kGateway, 45000, 9, 2, kTcpSyn | kTcpAck, "", kDbMac, kHostMac));
  EXPECT_EQ(sent(host_).size(), 1u);
  EXPECT_TRUE(sent(agent_).empty());
  EXPECT_EQ(counter("flows_created"), 0u);  // host traffic is not a prescreened flow
}

TEST_F(PacketLayerTest, HostUnicastToUnlearnedStationIsDroppedNotFlooded) {
  start();
  inject(host_, tcp(kGateway, 45000, kDb, 5432, 1, 0, kTcpSyn, "", kHostMac, kDbMac));
  EXPECT_TRUE(sent(db_).empty());
  EXPECT_TRUE(sent(agent_).empty());
  EXPECT_EQ(counter("exception_unknown_mac_dropped"), 1u);
}

TEST_F(PacketLayerTest, HostBroadcastGoesToBothSides) {
  start();
  std::vector<uint8_t> arp_request(42, 0);
  std::fill(arp_request.begin(), arp_request.begin() + 6, 0xff);
  std::copy(kHostMac.begin(), kHostMac.end(), arp_request.begin() + 6);
  store_be16(arp_request.data() + 12, kEtherTypeArp);
  inject(host_, arp_request);
  EXPECT_EQ(sent(agent_).size(), 1u);
  EXPECT_EQ(sent(db_).size(), 1u);
}

TEST_F(PacketLayerTest, ExceptionPortIsPolledLessOftenWhileQuiet) {
  config_.exception_poll_us = 200'000;
  start();
  std::vector<uint8_t> arp_request(42, 0);
  std::fill(arp_request.begin(), arp_request.begin() + 6, 0xff);
  std::copy(kHostMac.begin(), kHostMac.end(), arp_request.begin() + 6);
  store_be16(arp_request.data() + 12, kEtherTypeArp);
  auto quiet_since = std::chrono::steady_clock::now();
  layer_->poll_once(0);  // finds the exception port empty: its next poll is 200 ms away
  inject(host_, arp_request);
  EXPECT_TRUE(sent(agent_).empty()) << "a quiet TAP is not read in every round";
  // The frame is picked up once the interval passed, not before.
  auto deadline = quiet_since + std::chrono::seconds(10);
  while (counter("exception_from_host") == 0 && std::chrono::steady_clock::now() < deadline) {
    layer_->poll_once(0);
  }
  layer_->flush(0);
  // The layer counts the interval in TSC cycles at the rate DPDK estimated at start-up (in
  // whole MHz), which can differ from steady_clock by a fraction of a percent (seen: 199.6 ms).
  EXPECT_GE(std::chrono::steady_clock::now() - quiet_since, std::chrono::milliseconds(190));
  EXPECT_EQ(sent(agent_).size(), 1u);
  // While it delivers frames it is polled in every round.
  inject(host_, arp_request);
  EXPECT_EQ(sent(agent_).size(), 1u);
  EXPECT_EQ(counter("exception_from_host"), 2u);
}

TEST_F(PacketLayerTest, AgentSpoofingTheDatabaseMacDoesNotDivertHostTraffic) {
  start();
  inject(db_, tcp(kDb, 5432, kGateway, 1, 1, 1, kTcpAck, "", kDbMac, kHostMac));
  sent(host_);
  inject(agent_, tcp(kAgent, 40000, kGateway, 5432, 1, 0, kTcpSyn, "", kDbMac, kHostMac));
  sent(host_);
  EXPECT_EQ(counter("l2_mac_move_refused"), 1u);
  inject(host_, tcp(kGateway, 45000, kDb, 5432, 1, 0, kTcpSyn, "", kHostMac, kDbMac));
  EXPECT_EQ(sent(db_).size(), 1u);
  EXPECT_TRUE(sent(agent_).empty());
}

TEST_F(PacketLayerTest, ArpBroadcastIsBridgedAndCopiedToHost) {
  start();
  std::vector<uint8_t> arp(42, 0);
  for (int i = 0; i < 6; ++i) arp[static_cast<size_t>(i)] = 0xff;
  store_be16(arp.data() + 12, kEtherTypeArp);
  inject(agent_, arp);
  EXPECT_EQ(sent(db_).size(), 1u);
  EXPECT_EQ(sent(host_).size(), 1u);
  EXPECT_EQ(counter("l2_bridged"), 1u);
}

TEST_F(PacketLayerTest, TruncatedFrameIsDroppedAndCounted) {
  start();
  std::vector<uint8_t> frame = tcp(kAgent, 40000, kDb, 5432, 1000, 0, kTcpSyn);
  frame.resize(30);
  inject(agent_, frame);
  EXPECT_TRUE(sent(db_).empty());
  EXPECT_EQ(counter("parse_truncated"), 1u);
}

TEST_F(PacketLayerTest, Ipv6FlowIsPrescreenedAndDenied) {
  uint8_t client_bytes[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a};
  uint8_t server_bytes[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14};
  Address client = Address::v6(client_bytes), server = Address::v6(server_bytes);
  Prefix allowed;
  ASSERT_TRUE(parse_prefix("2001:db8::a/128", &allowed));
  config_.allowed_direct_sources.push_back(allowed);
  start();
  inject(agent_, tcp(client, 40000, server, 5432, 1000, 0, kTcpSyn));
  inject(db_, tcp(server, 5432, client, 40000, 5000, 1001, kTcpSyn | kTcpAck));
  std::string data = startup_message() + query("drop database t");
  inject(agent_, tcp(client, 40000, server, 5432, 1001, 5001, kTcpAck, data));
  auto to_db = sent(db_);
  ASSERT_EQ(to_db.size(), 2u);  // the SYN, then the RST instead of the data
  ParsedPacket r;
  ASSERT_EQ(parse_frame(to_db[1], &r), ParseStatus::kOk);
  EXPECT_EQ(r.l3, L3Kind::kIpv6);
  EXPECT_EQ(r.tcp_flags, kTcpRst | kTcpAck);
  EXPECT_EQ(r.seq, TcpSeq(1001));
  EXPECT_EQ(counter("prescreen_denied"), 1u);
}

TEST_F(PacketLayerTest, EveryInjectedMbufIsFreedExactlyOnce) {
  unsigned before = rte_mempool_avail_count(pool_);
  start();
  handshake();
  std::string first = startup_message() + query("SELECT 1");
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, 1001, 5001, kTcpAck, first));
  uint32_t seq = 1001 + static_cast<uint32_t>(first.size());
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq + 100, 5001, kTcpAck, "held"));  // held
  inject(agent_, tcp(kRogue, 1, kDb, 5432, 1, 0, kTcpSyn));                         // bypass
  std::vector<uint8_t> arp(42, 0xff);
  store_be16(arp.data() + 12, kEtherTypeArp);
  inject(agent_, arp);                                        // bridged + copied
  inject(host_, tcp(kGateway, 1, kAgent, 2, 1, 1, kTcpAck));  // unknown destination MAC
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq, 5001, kTcpAck, query("drop database x")));
  sent(agent_);
  sent(db_);
  sent(host_);
  EXPECT_EQ(rte_mempool_avail_count(pool_), before);
}

TEST_F(PacketLayerTest, ClosedFlowHoldsNoReassemblyMemoryWhileItLingers) {
  config_.flow_finished_linger_ms = 60000;  // the entry stays; its memory must not
  start();
  handshake();
  std::string data = startup_message();
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, 1001, 5001, kTcpAck | kTcpPsh, data));
  uint32_t seq = 1001 + static_cast<uint32_t>(data.size());
  inject(db_, tcp(kDb, 5432, kAgent, 40000, 5001, seq, kTcpAck | kTcpPsh, "Z\0\0\0\5I"));
  data = query("SELECT " + std::string(1300, 'x'));
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq, 5007, kTcpAck | kTcpPsh, data));
  seq += static_cast<uint32_t>(data.size());
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq, 5007, kTcpAck | kTcpFin, "X\0\0\0\4"));
  inject(db_, tcp(kDb, 5432, kAgent, 40000, 5007, seq + 6, kTcpAck | kTcpFin));
  inject(agent_, tcp(kAgent, 40000, kDb, 5432, seq + 6, 5008, kTcpAck));
  EXPECT_EQ(sent(db_).size(), 4u);
  EXPECT_EQ(sent(agent_).size(), 2u);
  // The lcore publishes its memory use on its drain tick (every 100 µs): poll until it did.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (layer_->stats().lcores[0].reassembly_memory_used != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    layer_->poll_once(0);
  }
  EXPECT_EQ(layer_->stats().lcores[0].reassembly_memory_used, 0u);
  EXPECT_EQ(layer_->stats().lcores[0].flows_active, 1u);
}

TEST_F(PacketLayerTest, UnknownPortNameIsAClearConfigError) {
  config_.agent_port = "net_nonexistent0";
  auto l = PacketLayer::create(config_);
  ASSERT_FALSE(l.is_ok());
  EXPECT_NE(l.status().message().find("agent port 'net_nonexistent0' not found"),
            std::string::npos);
}

TEST_F(PacketLayerTest, MissingRuleFileIsAConfigErrorNamingTheFile) {
  config_.rule_files = {"/nonexistent/wire.rules"};
  auto l = PacketLayer::create(config_);
  ASSERT_FALSE(l.is_ok());
  EXPECT_NE(l.status().message().find("/nonexistent/wire.rules"), std::string::npos);
}

TEST_F(PacketLayerTest, EmptyRuleFileListIsAConfigError) {
  config_.rule_files.clear();
  EXPECT_FALSE(PacketLayer::create(config_).is_ok());
}

TEST_F(PacketLayerTest, StatsJsonListsPortsAndCounters) {
  start();
  std::string json = layer_->stats().to_json();
  EXPECT_NE(json.find("\"role\":\"agent\""), std::string::npos);
  EXPECT_NE(json.find("\"flows_capacity_dropped\""), std::string::npos);
  EXPECT_NE(json.find("\"link_up\""), std::string::npos);
}

// Two workers sharing ports that cannot spread flows themselves (one RX queue each): the
// worker polling a port steers each TCP frame to the worker owning its flow.
class TwoWorkerTest : public PacketLayerTest {
 protected:
  void SetUp() override {
    tx_queues_ = 2;
    PacketLayerTest::SetUp();
    config_.workers = 2;
    config_.flow_capacity = 256;
  }

  // Enqueues a frame on a port's RX ring without polling.
  void put(const RingPort& port, const std::vector<uint8_t>& frame) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    ASSERT_NE(m, nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size())), frame.data(),
                frame.size());
    ASSERT_EQ(rte_ring_enqueue(port.rx, m), 0);
  }

  // Polls both workers until steered frames reached their owners and flushes.
  void pump() {
    for (int round = 0; round < 8; ++round) {
      layer_->poll_once(0);
      layer_->poll_once(1);
    }
    layer_->flush(0);
    layer_->flush(1);
  }

  uint64_t total(const std::string& name) { return counter(name, 0) + counter(name, 1); }

  static Address agent6_address() {
    const uint8_t b[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a};
    return Address::v6(b);
  }
  static Address db6_address() {
    const uint8_t b[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14};
    return Address::v6(b);
  }
  // An IPv6 frame with a hop-by-hop header inserted: the hash at fixed header offsets declines
  // it, so the worker polling the port must parse it to find its owner.
  static std::vector<uint8_t> with_hop_by_hop(std::vector<uint8_t> f) {
    const uint8_t ext[8] = {kIpProtoTcp, 0, 1, 4, 0, 0, 0, 0};  // next: TCP; PadN of 4
    f[14 + 6] = 0;                                              // next header: hop-by-hop
    store_be16(f.data() + 14 + 4, static_cast<uint16_t>(load_be16(f.data() + 14 + 4) + 8));
    f.insert(f.begin() + 14 + 40, ext, ext + 8);
    return f;
  }

  std::vector<rte_ring*> extra_rx_;  // second RX rings of two-queue ports
};

TEST_F(TwoWorkerTest, BothDirectionsOfEveryFlowMeetOnTheWorkerThatOwnsIt) {
  start();
  ASSERT_EQ(layer_->worker_count(), 2u);
  EXPECT_EQ(layer_->stats().spread, SpreadMode::kSoftware);
  constexpr uint16_t kFlows = 64;
  for (uint16_t f = 0; f < kFlows; ++f) {
    put(agent_, tcp(kAgent, 30000 + f, kDb, 5432, 1000, 0, kTcpSyn));
  }
  pump();
  ASSERT_EQ(sent(db_).size(), kFlows);
  for (uint16_t f = 0; f < kFlows; ++f) {
    put(db_, tcp(kDb, 5432, kAgent, 30000 + f, 5000, 1001, kTcpSyn | kTcpAck));
  }
  pump();
  ASSERT_EQ(sent(agent_).size(), kFlows);
  std::string data = startup_message() + query("SELECT 1");
  for (uint16_t f = 0; f < kFlows; ++f) {
    put(agent_, tcp(kAgent, 30000 + f, kDb, 5432, 1001, 5001, kTcpAck | kTcpPsh, data));
  }
  pump();
  EXPECT_EQ(sent(db_).size(), kFlows);
  // Server ACKs reach the same worker: they release the flows' retained bytes.
  uint32_t acked = 1001 + static_cast<uint32_t>(data.size());
  for (uint16_t f = 0; f < kFlows; ++f) {
    put(db_, tcp(kDb, 5432, kAgent, 30000 + f, 5001, acked, kTcpAck));
  }
  pump();
  EXPECT_EQ(sent(agent_).size(), kFlows);

  EXPECT_EQ(total("flows_created"), kFlows);
  EXPECT_EQ(total("prescreen_statements"), kFlows);
  EXPECT_EQ(total("tcp_forwarded"), 4u * kFlows);
  EXPECT_EQ(total("flows_midstream_dropped"), 0u);
  EXPECT_EQ(total("rx_steer_dropped"), 0u);
  PacketLayerStats st = layer_->stats();
  for (unsigned w = 0; w < 2; ++w) {
    // 64 flows over 2 workers: each owns some, and each received frames of the other's flows.
    EXPECT_GT(counter("flows_created", w), 0u) << "worker " << w;
    EXPECT_GT(counter("rx_steered_out", w), 0u) << "worker " << w;
    EXPECT_EQ(st.lcores[w].flows_active, counter("flows_created", w));
    EXPECT_EQ(counter("rx_steered_in", w), counter("rx_steered_out", 1 - w));
  }
  // The agent port is polled by worker 0, the database port by worker 1.
  EXPECT_EQ(counter("rx_packets", 0), 2u * kFlows);
  EXPECT_EQ(counter("rx_packets", 1), 2u * kFlows);
}

// IPv6 with a hop-by-hop header: the hash at fixed header offsets declines such frames, so the
// worker polling the port parses them and steers them by their flow key; both directions must
// still meet on the flow's owner.
TEST_F(TwoWorkerTest, FramesSteeredAfterParsingMeetTheSameOwner) {
  const Address agent6 = agent6_address(), db6 = db6_address();
  config_.allowed_direct_sources.push_back(Prefix{agent6, 128});
  start();
  constexpr uint16_t kFlows = 32;
  for (uint16_t f = 0; f < kFlows; ++f) {
    put(agent_, with_hop_by_hop(tcp(agent6, 31000 + f, db6, 5432, 1000, 0, kTcpSyn)));
  }
  pump();
  ASSERT_EQ(sent(db_).size(), kFlows);
  for (uint16_t f = 0; f < kFlows; ++f) {
    put(db_, with_hop_by_hop(tcp(db6, 5432, agent6, 31000 + f, 5000, 1001, kTcpSyn | kTcpAck)));
  }
  pump();
  EXPECT_EQ(sent(agent_).size(), kFlows);
  EXPECT_EQ(total("flows_created"), kFlows);
  EXPECT_EQ(total("tcp_forwarded"), 2u * kFlows);
  EXPECT_EQ(total("flows_midstream_dropped") + total("flows_reverse_dropped"), 0u);
  for (unsigned w = 0; w < 2; ++w) {
    EXPECT_GT(counter("rx_steered_out", w), 0u) << "worker " << w;
  }
}

// One RX burst mixing frames the polling worker owns, frames of the other worker's flows and
// frames only a full parse can steer (IPv6 with a hop-by-hop header): after one poll round of
// the polling worker, every frame of the other's flows waits in its inbox and the worker's own
// frames left in the order they arrived.
TEST_F(TwoWorkerTest, OneBurstIsSortedIntoOwnFramesInOrderAndFramesForTheOtherWorker) {
  const Address agent6 = agent6_address(), db6 = db6_address();
  config_.allowed_direct_sources.push_back(Prefix{agent6, 128});
  start();
  constexpr uint16_t kFrames = 24;  // one burst (config burst 32)
  std::vector<std::vector<uint8_t>> own;
  size_t other = 0;
  for (uint16_t f = 0; f < kFrames; ++f) {
    bool v6 = f % 3 == 2;
    const Address& src = v6 ? agent6 : kAgent;
    const Address& dst = v6 ? db6 : kDb;
    uint16_t port = static_cast<uint16_t>(32000 + f);
    std::vector<uint8_t> frame = tcp(src, port, dst, 5432, 1000 + f, 0, kTcpSyn);
    if (v6) frame = with_hop_by_hop(frame);
    bool src_is_a = false;
    FlowKey key = make_flow_key(src, port, dst, 5432, kIpProtoTcp, &src_is_a);
    if (layer_->software_owner(key) == 0) {
      own.push_back(frame);
    } else {
      ++other;
    }
    put(agent_, frame);
  }
  ASSERT_GT(own.size(), 0u);
  ASSERT_GT(other, 0u);
  layer_->poll_once(0);  // worker 0 polls the agent port
  layer_->flush(0);
  EXPECT_EQ(counter("rx_steered_out", 0), other);
  EXPECT_EQ(counter("rx_steered_in", 1), 0u);  // worker 1 has not polled yet
  EXPECT_EQ(sent(db_), own);
  layer_->poll_once(1);
  layer_->flush(1);
  EXPECT_EQ(counter("rx_steered_in", 1), other);
  EXPECT_EQ(sent(db_).size(), other);
  EXPECT_EQ(total("flows_created"), kFrames);
}

TEST_F(TwoWorkerTest, DenyOnAFlowOwnedByTheOtherWorkerResetsBothEndsAndIsAudited) {
  start();
  // Open flows until both workers own one, then deny on each.
  std::vector<uint16_t> ports;
  for (uint16_t f = 0; f < 16; ++f) {
    uint16_t sport = static_cast<uint16_t>(41000 + f);
    put(agent_, tcp(kAgent, sport, kDb, 5432, 1000, 0, kTcpSyn));
    pump();
    put(db_, tcp(kDb, 5432, kAgent, sport, 5000, 1001, kTcpSyn | kTcpAck));
    pump();
    ports.push_back(sport);
  }
  sent(agent_);
  sent(db_);
  ASSERT_GT(counter("flows_created", 0), 0u);
  ASSERT_GT(counter("flows_created", 1), 0u);
  for (uint16_t sport : ports) {
    put(agent_, tcp(kAgent, sport, kDb, 5432, 1001, 5001, kTcpAck | kTcpPsh,
                    startup_message() + query("DROP DATABASE demo")));
  }
  pump();
  EXPECT_TRUE(sent(db_).size() == ports.size());  // one RST per flow, no statement
  EXPECT_EQ(sent(agent_).size(), ports.size());   // one RST per flow
  EXPECT_EQ(total("prescreen_denied"), ports.size());
  EXPECT_GT(counter("prescreen_denied", 0), 0u);
  EXPECT_GT(counter("prescreen_denied", 1), 0u);
  std::vector<AuditEvent> events = layer_->drain_audit();
  ASSERT_EQ(events.size(), ports.size());
  for (const AuditEvent& ev : events) {
    EXPECT_EQ(ev.reason, "deny:deny.drop_database");
  }
}

TEST_F(TwoWorkerTest, HostFramesAndNonTcpAreHandledByWhicheverWorkerPollsThem) {
  start();
  std::vector<uint8_t> arp(42, 0xff);
  store_be16(arp.data() + 12, kEtherTypeArp);
  put(agent_, arp);
  pump();
  EXPECT_EQ(sent(db_).size(), 1u);
  EXPECT_EQ(sent(host_).size(), 1u);
  put(host_, tcp(kGateway, 6432, kAgent, 40000, 1, 1, kTcpAck, "", kHostMac,
                 {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}));
  pump();
  EXPECT_EQ(sent(agent_).size(), 1u);
  EXPECT_EQ(sent(db_).size(), 1u);
  EXPECT_EQ(total("rx_steered_out"), 0u);
}

TEST_F(TwoWorkerTest, EveryMbufIsFreedExactlyOnceAcrossWorkers) {
  unsigned before = rte_mempool_avail_count(pool_);
  start();
  for (uint16_t f = 0; f < 32; ++f) {
    put(agent_, tcp(kAgent, 42000 + f, kDb, 5432, 1000, 0, kTcpSyn));
    put(agent_, tcp(kAgent, 42000 + f, kDb, 5432, 1500, 0, kTcpAck, "midstream"));
    put(db_, tcp(kDb, 5432, kAgent, 43000 + f, 1, 0, kTcpSyn));  // reverse-opened
  }
  pump();
  sent(agent_);
  sent(db_);
  sent(host_);
  layer_.reset();  // frees anything still in an inbox
  EXPECT_EQ(rte_mempool_avail_count(pool_), before);
}

TEST_F(TwoWorkerTest, PortWithOneTxQueueIsAnErrorThatSaysHowToFixIt) {
  RingPort narrow = make_port("narrow", 1);
  config_.database_port = narrow.name;
  auto l = PacketLayer::create(config_);
  ASSERT_FALSE(l.is_ok());
  EXPECT_NE(l.status().message().find("has 1 TX queue(s) but 2 workers need one each"),
            std::string::npos)
      << l.status().message();
  EXPECT_NE(l.status().message().find("qpairs=2"), std::string::npos);
}

TEST_F(TwoWorkerTest, StatsShowSpreadModeAndWhichQueuesEachWorkerPolls) {
  start();
  std::string json = layer_->stats().to_json();
  EXPECT_NE(json.find("\"spread\":\"software\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"rx_queues\":[\"agent:0\",\"exception:0\",\"inbox\"]"), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"rx_queues\":[\"database:0\",\"inbox\"]"), std::string::npos) << json;
}

TEST_F(TwoWorkerTest, QueuesSpreadByTheCallerArePolledOneWorkerEachWithoutSteering) {
  // Ports with two RX queues, fed like a NIC with symmetric RSS: flow f on queue f % 2.
  RingPort a, d;
  for (RingPort* p : {&a, &d}) {
    static int n = 0;
    std::string id = "rss" + std::to_string(n++);
    rte_ring* rx[2] = {rte_ring_create(("rxa_" + id).c_str(), 256, 0, 0),
                       rte_ring_create(("rxb_" + id).c_str(), 256, 0, 0)};
    p->rx = rx[0];
    p->tx = rte_ring_create(("tx_" + id).c_str(), 256, 0, 0);
    p->tx1 = rte_ring_create(("tx1_" + id).c_str(), 256, 0, 0);
    p->name = "net_ring_" + id;
    rte_ring* tx[2] = {p->tx, p->tx1};
    ASSERT_GE(rte_eth_from_rings(id.c_str(), rx, 2, tx, 2, 0), 0);
    rings_.push_back(*p);
    extra_rx_.push_back(rx[1]);
  }
  config_.agent_port = a.name;
  config_.database_port = d.name;
  config_.caller_spreads_flows = true;
  start();
  PacketLayerStats st = layer_->stats();
  EXPECT_EQ(st.spread, SpreadMode::kHardwareRss);
  EXPECT_EQ(st.lcores[0].rx_queues,
            (std::vector<std::string>{"agent:0", "database:0", "exception:0"}));
  EXPECT_EQ(st.lcores[1].rx_queues, (std::vector<std::string>{"agent:1", "database:1"}));
  auto put_q = [&](const RingPort& port, unsigned q, const std::vector<uint8_t>& frame) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    ASSERT_NE(m, nullptr);
    std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size())), frame.data(),
                frame.size());
    size_t i = static_cast<size_t>(&port == &a ? 0 : 1);
    ASSERT_EQ(rte_ring_enqueue(q == 0 ? port.rx : extra_rx_[i], m), 0);
  };
  for (uint16_t f = 0; f < 8; ++f) {
    put_q(a, f % 2, tcp(kAgent, 44000 + f, kDb, 5432, 1000, 0, kTcpSyn));
  }
  pump();
  EXPECT_EQ(sent(d).size(), 8u);
  for (uint16_t f = 0; f < 8; ++f) {
    put_q(d, f % 2, tcp(kDb, 5432, kAgent, 44000 + f, 5000, 1001, kTcpSyn | kTcpAck));
  }
  pump();
  EXPECT_EQ(sent(a).size(), 8u);
  EXPECT_EQ(counter("flows_created", 0), 4u);
  EXPECT_EQ(counter("flows_created", 1), 4u);
  EXPECT_EQ(total("rx_steered_out"), 0u);
  EXPECT_EQ(total("flows_midstream_dropped"), 0u);
  layer_.reset();
  for (rte_ring* r : extra_rx_) {
    drain(r);
    rte_ring_free(r);
  }
  extra_rx_.clear();
}

}  // namespace
}  // namespace pgwarden::packet
