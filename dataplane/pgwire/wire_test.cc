#include "dataplane/pgwire/wire.h"

#include <gtest/gtest.h>

#include <string>

namespace pgwarden::pgwire {
namespace {

TEST(WireTest, IntegersAreBigEndianBothWays) {
  std::string out;
  append_int16(out, -2);
  append_int32(out, 0x01020304);
  append_uint32(out, 0xfffffffe);
  EXPECT_EQ(out, std::string("\xff\xfe\x01\x02\x03\x04\xff\xff\xff\xfe", 10));
  Reader r(as_bytes(out));
  int16_t a = 0;
  int32_t b = 0;
  uint32_t c = 0;
  ASSERT_TRUE(r.read_int16(&a) && r.read_int32(&b) && r.read_uint32(&c));
  EXPECT_EQ(a, -2);
  EXPECT_EQ(b, 0x01020304);
  EXPECT_EQ(c, 0xfffffffeu);
  EXPECT_TRUE(r.at_end());
}

TEST(WireTest, ReadPastEndFailsAndTheFailureSticks) {
  const std::string data("\x00\x01\x02", 3);
  Reader r(as_bytes(data));
  int32_t v = 0;
  EXPECT_FALSE(r.read_int32(&v));
  EXPECT_EQ(r.failure(), ReadFailure::kTruncated);
  uint8_t b = 0;
  EXPECT_FALSE(r.read_int8(&b));  // would fit, but the reader has already failed
  EXPECT_EQ(r.remaining(), 0u);
}

TEST(WireTest, StringWithoutNulIsMissingNul) {
  const std::string data = "abc";
  Reader r(as_bytes(data));
  std::string_view s;
  EXPECT_FALSE(r.read_string(&s));
  EXPECT_EQ(r.failure(), ReadFailure::kMissingNul);
}

TEST(WireTest, StringsAndBytesAreViewsIntoTheInput) {
  const std::string data("ab\0cdef", 7);
  Reader r(as_bytes(data));
  std::string_view s;
  Bytes b;
  ASSERT_TRUE(r.read_string(&s));
  EXPECT_EQ(s, "ab");
  EXPECT_EQ(s.data(), data.data());
  ASSERT_TRUE(r.read_bytes(2, &b));
  EXPECT_EQ(as_string_view(b), "cd");
  EXPECT_EQ(as_string_view(r.read_rest()), "ef");
  EXPECT_TRUE(r.at_end());
  EXPECT_FALSE(r.read_bytes(1, &b));
}

TEST(WireTest, BeginAndFinishMessageWriteTheLengthOfTheBody) {
  std::string out = "xx";
  size_t at = begin_message(out, 'Q');
  append_string(out, "hi");
  finish_message(out, at);
  EXPECT_EQ(out, std::string("xxQ\x00\x00\x00\x07hi\x00", 10));
  std::string startup;
  at = begin_message(startup, 0);
  append_int32(startup, 1);
  finish_message(startup, at);
  EXPECT_EQ(startup, std::string("\x00\x00\x00\x08\x00\x00\x00\x01", 8));
}

}  // namespace
}  // namespace pgwarden::pgwire
