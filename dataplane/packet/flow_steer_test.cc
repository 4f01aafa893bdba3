#include "dataplane/packet/flow_steer.h"

#include <gtest/gtest.h>

#include <vector>

#include "dataplane/packet/frame_builder.h"
#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {
namespace {

TcpFrameSpec spec(const Address& src, uint16_t sport, const Address& dst, uint16_t dport) {
  TcpFrameSpec s;
  s.src = src;
  s.dst = dst;
  s.src_port = sport;
  s.dst_port = dport;
  s.flags = kTcpAck;
  return s;
}

// What the owner computes: the hash of the canonical key the full parser yields.
uint32_t key_hash(const std::vector<uint8_t>& frame) {
  ParsedPacket p;
  EXPECT_EQ(parse_frame(frame, &p), ParseStatus::kOk);
  bool src_is_a = false;
  return flow_steer_hash(
      make_flow_key(p.src, p.src_port, p.dst, p.dst_port, p.ip_proto, &src_is_a));
}

TEST(FlowSteerTest, FrameHashEqualsKeyHashInBothDirections) {
  uint8_t v6a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
  uint8_t v6b[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20};
  struct Pair {
    Address client, server;
  };
  for (const Pair& pair : {Pair{Address::v4(0xC6120010), Address::v4(0xC6120020)},
                           Pair{Address::v6(v6a), Address::v6(v6b)}}) {
    for (int vlan : {-1, 7}) {
      for (uint16_t port = 40000; port < 40064; ++port) {
        TcpFrameSpec up = spec(pair.client, port, pair.server, 5432);
        TcpFrameSpec down = spec(pair.server, 5432, pair.client, port);
        up.vlan = down.vlan = vlan;
        std::vector<uint8_t> f1 = build_tcp_frame(up), f2 = build_tcp_frame(down);
        uint32_t h1 = 0, h2 = 0;
        ASSERT_TRUE(frame_steer_hash(f1.data(), f1.size(), &h1));
        ASSERT_TRUE(frame_steer_hash(f2.data(), f2.size(), &h2));
        EXPECT_EQ(h1, h2) << "both directions of a flow meet on one worker";
        EXPECT_EQ(h1, key_hash(f1)) << "the receiving worker and the owner agree";
      }
    }
  }
}

TEST(FlowSteerTest, SpreadsFlowsOverWorkers) {
  unsigned per_worker[2] = {0, 0};
  for (uint32_t client = 0; client < 2048; ++client) {
    TcpFrameSpec s = spec(Address::v4(0x0a000000 | client), static_cast<uint16_t>(20000 + client),
                          Address::v4(0xC0000201), 5432);
    std::vector<uint8_t> f = build_tcp_frame(s);
    uint32_t h = 0;
    ASSERT_TRUE(frame_steer_hash(f.data(), f.size(), &h));
    ++per_worker[steer_worker(h, 2)];
  }
  EXPECT_GT(per_worker[0], 900u);
  EXPECT_GT(per_worker[1], 900u);
}

TEST(FlowSteerTest, DeclinesWhatItCannotHashFromFixedOffsets) {
  std::vector<uint8_t> f =
      build_tcp_frame(spec(Address::v4(0xC6120010), 40000, Address::v4(0xC6120020), 5432));
  uint32_t h = 0;
  ASSERT_TRUE(frame_steer_hash(f.data(), f.size(), &h));
  // Too short for the ports.
  EXPECT_FALSE(frame_steer_hash(f.data(), 14 + 20 + 3, &h));
  EXPECT_FALSE(frame_steer_hash(f.data(), 10, &h));
  // Not TCP.
  std::vector<uint8_t> udp = f;
  udp[14 + 9] = 17;
  EXPECT_FALSE(frame_steer_hash(udp.data(), udp.size(), &h));
  // A fragment (MF set): the full path drops it.
  std::vector<uint8_t> frag = f;
  frag[14 + 6] |= 0x20;
  EXPECT_FALSE(frame_steer_hash(frag.data(), frag.size(), &h));
  // An IHL below 5 words.
  std::vector<uint8_t> ihl = f;
  ihl[14] = 0x44;
  EXPECT_FALSE(frame_steer_hash(ihl.data(), ihl.size(), &h));
  // ARP.
  std::vector<uint8_t> arp = f;
  store_be16(arp.data() + 12, kEtherTypeArp);
  EXPECT_FALSE(frame_steer_hash(arp.data(), arp.size(), &h));
  // IPv6 with an extension header in front of TCP.
  uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::vector<uint8_t> v6 = build_tcp_frame(spec(Address::v6(a), 40000, Address::v6(a), 5432));
  ASSERT_TRUE(frame_steer_hash(v6.data(), v6.size(), &h));
  v6[14 + 6] = 0;  // hop-by-hop options
  EXPECT_FALSE(frame_steer_hash(v6.data(), v6.size(), &h));
}

}  // namespace
}  // namespace pgwarden::packet
