#include "dataplane/packet/tcp_reset.h"

#include <gtest/gtest.h>

#include <string_view>

#include "dataplane/packet/frame_builder.h"

namespace pgwarden::packet {
namespace {

TcpFrameSpec trigger_spec(const Address& client, const Address& server,
                          std::span<const uint8_t> payload) {
  TcpFrameSpec s;
  s.src_mac = {0x02, 0, 0, 0, 0, 0xaa};
  s.dst_mac = {0x02, 0, 0, 0, 0, 0xbb};
  s.src = client;
  s.dst = server;
  s.src_port = 40000;
  s.dst_port = 5432;
  s.seq = TcpSeq(5000);
  s.ack = TcpSeq(9000);
  s.flags = kTcpAck | kTcpPsh;
  s.payload = payload;
  return s;
}

bool tcp_checksum_ok(const std::vector<uint8_t>& f, const ParsedPacket& p) {
  size_t alen = p.l3 == L3Kind::kIpv4 ? 4 : 16;
  uint32_t sum = checksum_add(0, p.src.bytes.data(), alen);
  sum = checksum_add(sum, p.dst.bytes.data(), alen);
  size_t tcp_len = f.size() - p.l4_offset;
  sum += kIpProtoTcp + static_cast<uint32_t>(tcp_len);
  return checksum_fold(checksum_add(sum, f.data() + p.l4_offset, tcp_len)) == 0;
}

class TcpResetTest : public ::testing::TestWithParam<bool> {};  // param: IPv6

TEST_P(TcpResetTest, ResetsCarryTheSequenceNumbersEachEndExpects) {
  const uint8_t payload[] = {'Q', 0, 0, 0, 9, 'd', 'r', 'o', 'p', 0};
  Address client = Address::v4(0xC612000A), server = Address::v4(0xC6120014);
  if (GetParam()) {
    uint8_t c[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a};
    uint8_t s[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14};
    client = Address::v6(c);
    server = Address::v6(s);
  }
  std::vector<uint8_t> trigger = build_tcp_frame(trigger_spec(client, server, payload));
  ParsedPacket tp;
  ASSERT_EQ(parse_frame(trigger, &tp), ParseStatus::kOk);

  std::vector<uint8_t> to_server(kMaxResetFrame);
  to_server.resize(build_reset(trigger, tp, false, to_server));
  ParsedPacket rs;
  ASSERT_EQ(parse_frame(to_server, &rs), ParseStatus::kOk);
  EXPECT_EQ(rs.src, client);
  EXPECT_EQ(rs.dst, server);
  EXPECT_EQ(rs.dst_port, 5432);
  EXPECT_EQ(rs.seq, TcpSeq(5000));
  EXPECT_EQ(rs.ack, TcpSeq(9000));
  EXPECT_EQ(rs.tcp_flags, kTcpRst | kTcpAck);
  EXPECT_EQ(rs.payload_len, 0);
  EXPECT_EQ(to_server[5], 0xbb);  // same MACs as the trigger
  EXPECT_TRUE(tcp_checksum_ok(to_server, rs));

  std::vector<uint8_t> to_client(kMaxResetFrame);
  to_client.resize(build_reset(trigger, tp, true, to_client));
  ParsedPacket rc;
  ASSERT_EQ(parse_frame(to_client, &rc), ParseStatus::kOk);
  EXPECT_EQ(rc.src, server);
  EXPECT_EQ(rc.dst, client);
  EXPECT_EQ(rc.src_port, 5432);
  EXPECT_EQ(rc.dst_port, 40000);
  EXPECT_EQ(rc.seq, TcpSeq(9000));
  EXPECT_EQ(rc.ack, TcpSeq(5000 + sizeof(payload)));
  EXPECT_EQ(to_client[5], 0xaa);  // MACs swapped
  EXPECT_EQ(to_client[11], 0xbb);
  EXPECT_TRUE(tcp_checksum_ok(to_client, rc));
  if (!GetParam()) {
    EXPECT_EQ(checksum_fold(checksum_add(0, to_client.data() + 14, 20)), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, TcpResetTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Ipv6" : "Ipv4"; });

TEST(TcpResetBufferTest, TooSmallOutputWritesNothing) {
  std::vector<uint8_t> trigger = build_tcp_frame(trigger_spec(Address::v4(1), Address::v4(2), {}));
  ParsedPacket p;
  ASSERT_EQ(parse_frame(trigger, &p), ParseStatus::kOk);
  uint8_t out[30];
  EXPECT_EQ(build_reset(trigger, p, true, out), 0u);
}

}  // namespace
}  // namespace pgwarden::packet
