#include "common/protocol/frame.h"

#include <gtest/gtest.h>

#include <vector>

namespace pgwarden::protocol {
namespace {

std::vector<std::string> decode_all(const std::string& stream, size_t chunk) {
  FrameDecoder d;
  std::vector<std::string> out;
  for (size_t i = 0; i < stream.size(); i += chunk) {
    d.feed(std::string_view(stream).substr(i, chunk));
    while (true) {
      auto f = d.next();
      EXPECT_TRUE(f.is_ok());
      if (!f.is_ok() || !f->has_value()) break;
      out.push_back(**f);
    }
  }
  EXPECT_EQ(d.buffered(), 0u);
  return out;
}

TEST(FrameTest, SameFramesFedWholeOrByteByByte) {
  std::string stream;
  std::vector<std::string> payloads = {R"({"id":1})", std::string(70000, 'x'), "{}"};
  for (const auto& p : payloads) ASSERT_TRUE(append_frame(stream, p).is_ok());
  EXPECT_EQ(decode_all(stream, stream.size()), payloads);
  EXPECT_EQ(decode_all(stream, 1), payloads);
  EXPECT_EQ(decode_all(stream, 7), payloads);
}

TEST(FrameTest, LengthIsBigEndian) {
  std::string out;
  ASSERT_TRUE(append_frame(out, std::string(258, 'a')).is_ok());
  EXPECT_EQ(out.substr(0, 4), std::string("\0\0\x01\x02", 4));
}

TEST(FrameTest, ZeroLengthFrameFailsForGood) {
  FrameDecoder d;
  d.feed(std::string("\0\0\0\0{}", 6));
  auto f = d.next();
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(d.error(), FrameError::kEmptyFrame);
  d.feed(std::string("\0\0\0\x02{}", 6));
  EXPECT_FALSE(d.next().is_ok());
}

TEST(FrameTest, OversizedLengthRejectedBeforeBuffering) {
  FrameDecoder d;
  d.feed(std::string("\x00\x10\x00\x01", 4));  // 1 MiB + 1
  auto f = d.next();
  ASSERT_FALSE(f.is_ok());
  EXPECT_EQ(d.error(), FrameError::kFrameTooLarge);
  EXPECT_EQ(f.status().sqlstate(), "08P01");
}

TEST(FrameTest, ExactlyOneMebibyteIsAccepted) {
  std::string stream;
  std::string payload(kMaxFrameBytes, 'a');
  ASSERT_TRUE(append_frame(stream, payload).is_ok());
  EXPECT_EQ(decode_all(stream, 65536).size(), 1u);
  std::string too_big;
  EXPECT_FALSE(append_frame(too_big, payload + "a").is_ok());
  EXPECT_TRUE(too_big.empty());
  EXPECT_FALSE(append_frame(too_big, "").is_ok());
}

TEST(FrameTest, AdminRepliesOptInToLargerFramesOnBothEnds) {
  std::string payload(kMaxFrameBytes + 1, 'a');
  std::string stream;
  EXPECT_FALSE(append_frame(stream, payload).is_ok());
  ASSERT_TRUE(append_frame(stream, payload, kMaxAdminReplyBytes).is_ok());
  FrameDecoder admin(kMaxAdminReplyBytes);
  admin.feed(stream);
  auto f = admin.next();
  ASSERT_TRUE(f.is_ok() && f->has_value());
  EXPECT_EQ((*f)->size(), payload.size());
  FrameDecoder dataplane;  // the dp <-> cp channel keeps its 1 MiB bound
  dataplane.feed(stream);
  EXPECT_FALSE(dataplane.next().is_ok());
  EXPECT_EQ(dataplane.error(), FrameError::kFrameTooLarge);
}

TEST(FrameTest, PayloadMustBeShallowJsonObject) {
  EXPECT_TRUE(parse_payload(R"({"a":[1,{"b":2}]})").is_ok());
  EXPECT_FALSE(parse_payload("[1,2]").is_ok());
  EXPECT_FALSE(parse_payload("{\"a\":").is_ok());
  EXPECT_FALSE(parse_payload("\"str\"").is_ok());
  std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  auto r = parse_payload(deep);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("deeper"), std::string::npos);
  // Brackets inside strings do not count.
  EXPECT_TRUE(parse_payload("{\"a\":\"" + std::string(1000, '[') + "\"}").is_ok());
}

}  // namespace
}  // namespace pgwarden::protocol
