#include "dataplane/packet/frame_builder.h"

#include <gtest/gtest.h>

#include "dataplane/packet/packet_parser.h"
#include "dataplane/packet/tcp_reset.h"

namespace pgwarden::packet {
namespace {

TEST(FrameBuilderTest, Ipv4FrameHasValidChecksums) {
  const uint8_t payload[] = {'h', 'i', '!'};
  TcpFrameSpec s;
  s.src = Address::v4(0xC612000A);
  s.dst = Address::v4(0xC6120014);
  s.src_port = 40000;
  s.dst_port = 5432;
  s.payload = payload;
  std::vector<uint8_t> f = build_tcp_frame(s);
  ASSERT_EQ(f.size(), 14u + 20 + 20 + 3);
  // A correct IPv4 header sums to 0xffff, so its folded complement is 0.
  EXPECT_EQ(checksum_fold(checksum_add(0, f.data() + 14, 20)), 0);
  uint32_t sum = checksum_add(0, f.data() + 14 + 12, 8);
  sum += kIpProtoTcp + 23;
  EXPECT_EQ(checksum_fold(checksum_add(sum, f.data() + 34, 23)), 0);
}

TEST(FrameBuilderTest, TooSmallBufferWritesNothing) {
  TcpFrameSpec s;
  s.src = Address::v4(1);
  s.dst = Address::v4(2);
  uint8_t small[20];
  EXPECT_EQ(build_tcp_frame_into(s, small), 0u);
}

}  // namespace
}  // namespace pgwarden::packet
