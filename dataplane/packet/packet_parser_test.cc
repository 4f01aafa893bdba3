#include "dataplane/packet/packet_parser.h"

#include <gtest/gtest.h>

#include <string_view>

#include "dataplane/packet/frame_builder.h"

namespace pgwarden::packet {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TcpFrameSpec v4_spec(std::string_view payload) {
  TcpFrameSpec s;
  s.src = Address::v4(0xC612000A);
  s.dst = Address::v4(0xC6120014);
  s.src_port = 40000;
  s.dst_port = 5432;
  s.seq = TcpSeq(0xfffffff0u);
  s.ack = TcpSeq(77);
  s.flags = kTcpAck | kTcpPsh;
  s.payload = bytes_of(payload);
  return s;
}

TEST(PacketParserTest, Ipv4TcpFieldsAreReadBigEndian) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec("SELECT 1"));
  ParsedPacket p;
  ASSERT_EQ(parse_frame(f, &p), ParseStatus::kOk);
  EXPECT_TRUE(p.is_tcp());
  EXPECT_EQ(p.src, Address::v4(0xC612000A));
  EXPECT_EQ(p.dst_port, 5432);
  EXPECT_EQ(p.seq, TcpSeq(0xfffffff0u));
  EXPECT_EQ(p.ack, TcpSeq(77));
  EXPECT_EQ(p.tcp_flags, kTcpAck | kTcpPsh);
  EXPECT_EQ(p.payload_len, 8);
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(f.data() + p.payload_offset), 8),
            "SELECT 1");
}

TEST(PacketParserTest, EthernetPaddingIsNotPayload) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec(""));
  f.resize(60, 0);  // minimum Ethernet frame: the NIC pads with zeros
  ParsedPacket p;
  ASSERT_EQ(parse_frame(f, &p), ParseStatus::kOk);
  EXPECT_EQ(p.payload_len, 0);
}

TEST(PacketParserTest, VlanTaggedIpv6) {
  TcpFrameSpec s = v4_spec("x");
  uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  uint8_t b[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  s.src = Address::v6(a);
  s.dst = Address::v6(b);
  s.vlan = 42;
  std::vector<uint8_t> f = build_tcp_frame(s);
  ParsedPacket p;
  ASSERT_EQ(parse_frame(f, &p), ParseStatus::kOk);
  EXPECT_EQ(p.l3, L3Kind::kIpv6);
  EXPECT_EQ(p.l3_offset, 18);
  EXPECT_TRUE(p.is_tcp());
  EXPECT_EQ(p.payload_len, 1);
  EXPECT_EQ(p.dst, Address::v6(b));
}

TEST(PacketParserTest, Ipv6FragmentHeaderMarksFragment) {
  TcpFrameSpec s = v4_spec("");
  uint8_t a[16] = {0xfe, 0x80};
  s.src = Address::v6(a);
  s.dst = Address::v6(a);
  std::vector<uint8_t> f = build_tcp_frame(s);
  // Insert an 8-byte fragment header in front of TCP.
  std::vector<uint8_t> frag = {kIpProtoTcp, 0, 0, 1, 0, 0, 0, 9};
  f.insert(f.begin() + 14 + 40, frag.begin(), frag.end());
  f[14 + 6] = 44;
  store_be16(f.data() + 14 + 4, static_cast<uint16_t>(load_be16(f.data() + 18) + 8));
  ParsedPacket p;
  ASSERT_EQ(parse_frame(f, &p), ParseStatus::kOk);
  EXPECT_TRUE(p.fragment);
  EXPECT_FALSE(p.is_tcp());
}

TEST(PacketParserTest, Ipv4FragmentIsNotTcp) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec("abc"));
  f[14 + 6] = 0x20;  // MF
  ParsedPacket p;
  ASSERT_EQ(parse_frame(f, &p), ParseStatus::kOk);
  EXPECT_TRUE(p.fragment);
  EXPECT_FALSE(p.is_tcp());
}

TEST(PacketParserTest, TotalLengthBeyondFrameIsTruncated) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec("abc"));
  f.resize(f.size() - 2);
  ParsedPacket p;
  EXPECT_EQ(parse_frame(f, &p), ParseStatus::kTruncated);
}

TEST(PacketParserTest, TcpDataOffsetBelowMinimumIsMalformed) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec("abc"));
  f[14 + 20 + 12] = 4 << 4;
  ParsedPacket p;
  EXPECT_EQ(parse_frame(f, &p), ParseStatus::kMalformed);
}

TEST(PacketParserTest, TcpDataOffsetBeyondSegmentIsTruncated) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec("abc"));
  f[14 + 20 + 12] = 15 << 4;  // 60-byte header in a 23-byte segment
  ParsedPacket p;
  EXPECT_EQ(parse_frame(f, &p), ParseStatus::kTruncated);
}

TEST(PacketParserTest, BadIpVersionIsMalformed) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec("abc"));
  f[14] = 0x55;
  ParsedPacket p;
  EXPECT_EQ(parse_frame(f, &p), ParseStatus::kMalformed);
}

TEST(PacketParserTest, ArpAndBroadcastAreRecognised) {
  std::vector<uint8_t> f(42, 0);
  for (int i = 0; i < 6; ++i) f[i] = 0xff;
  store_be16(f.data() + 12, kEtherTypeArp);
  ParsedPacket p;
  ASSERT_EQ(parse_frame(f, &p), ParseStatus::kOk);
  EXPECT_EQ(p.l3, L3Kind::kArp);
  EXPECT_TRUE(p.l2_multicast);
}

TEST(PacketParserTest, EveryTruncationOfAFrameIsRejectedOrConsistent) {
  std::vector<uint8_t> f = build_tcp_frame(v4_spec("SELECT 1"));
  for (size_t n = 0; n < f.size(); ++n) {
    ParsedPacket p;
    ParseStatus st = parse_frame(std::span<const uint8_t>(f.data(), n), &p);
    if (st == ParseStatus::kOk && p.is_tcp()) {
      EXPECT_LE(p.payload_offset + p.payload_len, n);
    }
    EXPECT_NE(st, ParseStatus::kOk) << "prefix of " << n << " bytes parsed as complete";
  }
}

}  // namespace
}  // namespace pgwarden::packet
