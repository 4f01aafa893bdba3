#include "dataplane/packet/tcp_seq.h"

#include <gtest/gtest.h>

namespace pgwarden::packet {
namespace {

TEST(TcpSeqTest, OrdersAcrossTheWrap) {
  TcpSeq before(0xfffffff0u);
  TcpSeq after(0x00000010u);
  EXPECT_LT(before, after);
  EXPECT_GT(after, before);
  EXPECT_EQ(after - before, 0x20);
  EXPECT_EQ(before - after, -0x20);
  EXPECT_EQ(before + 0x20u, after);
}

TEST(TcpSeqTest, EqualNumbersAreNeitherLessNorGreater) {
  TcpSeq a(7), b(7);
  EXPECT_FALSE(a < b);
  EXPECT_FALSE(a > b);
  EXPECT_LE(a, b);
  EXPECT_GE(a, b);
}

TEST(TcpSeqTest, MinAndMaxFollowSerialOrder) {
  TcpSeq wrapped(5), high(0xfffffffbu);
  EXPECT_EQ(seq_max(wrapped, high), wrapped);
  EXPECT_EQ(seq_min(wrapped, high), high);
}

TEST(TcpSeqTest, HalfSpaceApartFlipsSign) {
  TcpSeq a(0);
  EXPECT_GT(a + 0x7fffffffu, a);
  EXPECT_LT(a + 0x80000001u, a);  // more than 2^31 ahead reads as behind
}

}  // namespace
}  // namespace pgwarden::packet
