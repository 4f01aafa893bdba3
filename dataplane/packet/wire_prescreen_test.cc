#include "dataplane/packet/wire_prescreen.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {
namespace {

std::string be32(uint32_t v) {
  std::string s(4, '\0');
  store_be32(reinterpret_cast<uint8_t*>(s.data()), v);
  return s;
}
std::string startup_message() {
  std::string body = be32(196608) + std::string("user\0alice\0database\0demo\0\0", 26);
  return be32(static_cast<uint32_t>(body.size() + 4)) + body;
}
std::string ssl_request() { return be32(8) + be32(80877103); }
std::string message(char type, const std::string& body) {
  return std::string(1, type) + be32(static_cast<uint32_t>(body.size() + 4)) + body;
}
std::string query(const std::string& sql) { return message('Q', sql + std::string(1, '\0')); }
std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class WirePrescreenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = TemporaryKeywordMatcher::compile({"drop table", "pg_sleep"});
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    auto p = WirePrescreen::create(*m, &counters_);
    ASSERT_TRUE(p.is_ok());
    sink_ = std::move(*p);
    sink_->set_observer(
        [this](const FlowKey&, const PrescreenRecord& r) { records_.push_back(r); });
    stream_ = sink_->open_stream(FlowKey{});
  }

  PacketCounters counters_;
  std::unique_ptr<WirePrescreen> sink_;
  std::unique_ptr<StreamConsumer> stream_;
  std::vector<PrescreenRecord> records_;
};

TEST_F(WirePrescreenTest, AllowedSessionPassesEveryMessage) {
  std::string s = ssl_request() + startup_message() + message('p', std::string("pw\0", 3)) +
                  query("SELECT * FROM crm.customers") + message('X', "");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kAllow);
  ASSERT_EQ(records_.size(), 5u);
  EXPECT_EQ(records_[3].type, 'Q');
  EXPECT_EQ(records_[3].sql, "SELECT * FROM crm.customers");
  EXPECT_EQ(counters_.prescreen_messages.get(), 5u);
}

TEST_F(WirePrescreenTest, DenyKeywordMatchesAcrossCaseAndWhitespace) {
  std::string s = startup_message() + query("select 1") + query("DROP\n\t  TABLE crm.orders");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "deny_keyword:drop table");
  EXPECT_EQ(counters_.prescreen_denied.get(), 1u);
}

TEST_F(WirePrescreenTest, ParseMessageStatementIsScreened) {
  std::string parse_body = std::string("s1\0", 3) + "SELECT pg_sleep(100)" + std::string(1, '\0') +
                           std::string("\0\0", 2);
  std::string s = startup_message() + message('P', parse_body);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(records_.back().sql, "SELECT pg_sleep(100)");
}

TEST_F(WirePrescreenTest, ByteByByteGivesTheSameRecordsAsWhole) {
  std::string s = ssl_request() + startup_message() + query("SELECT 1") + message('S', "") +
                  query("drop table x");
  auto whole_stream = sink_->open_stream(FlowKey{});
  EXPECT_EQ(whole_stream->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  std::vector<PrescreenRecord> whole = records_;
  records_.clear();
  Verdict last = Verdict::kAllow;
  for (size_t i = 0; i < s.size() && last == Verdict::kAllow; ++i) {
    last = stream_->on_client_bytes(bytes_of(s).subspan(i, 1));
  }
  EXPECT_EQ(last, Verdict::kDeny);
  ASSERT_EQ(records_.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(records_[i].type, whole[i].type);
    EXPECT_EQ(records_[i].sql, whole[i].sql);
    EXPECT_EQ(records_[i].verdict, whole[i].verdict);
  }
}

TEST_F(WirePrescreenTest, TlsAfterSslRequestIsDeniedAsNotInspectable) {
  std::string s = ssl_request() + std::string("\x16\x03\x01\x02\x00", 5);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:encrypted_stream_not_inspectable");
  EXPECT_EQ(counters_.prescreen_frame_errors.get(), 1u);
}

TEST_F(WirePrescreenTest, GarbageStartupIsDenied) {
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(be32(3) + "abcd")), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:bad_startup_packet");
}

TEST_F(WirePrescreenTest, UnknownProtocolVersionIsDenied) {
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(be32(8) + be32(0x00020000))), Verdict::kDeny);
}

TEST_F(WirePrescreenTest, MessageLengthBelowFourIsDenied) {
  std::string s = startup_message() + "Q" + be32(3);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:bad_message_length");
}

TEST_F(WirePrescreenTest, OversizedQueryIsDeniedBeforeBuffering) {
  std::string s = startup_message() + "Q" + be32(TemporaryPgSplitter::kMaxInspectedBody + 5);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:statement_too_large");
}

TEST_F(WirePrescreenTest, LargeNonStatementMessagesAreSkippedNotBuffered) {
  std::string copy_data(2 * TemporaryPgSplitter::kMaxInspectedBody, 'd');
  std::string s = startup_message() + message('d', copy_data) + query("SELECT 2");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kAllow);
  EXPECT_EQ(records_.back().sql, "SELECT 2");
}

TEST_F(WirePrescreenTest, QueryWithoutTerminatorIsDenied) {
  std::string s = startup_message() + message('Q', "SELECT 1");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:unterminated_string");
}

TEST_F(WirePrescreenTest, FunctionCallIsDeniedByDefault) {
  std::string s = startup_message() + message('F', std::string(10, '\0'));
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "function_call");
}

TEST_F(WirePrescreenTest, BytesAfterCancelRequestAreDenied) {
  std::string cancel = be32(16) + be32(80877102) + be32(1) + be32(2);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(cancel)), Verdict::kAllow);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(query("x"))), Verdict::kDeny);
}

TEST(TemporaryKeywordMatcherTest, EmptyKeywordListIsRejected) {
  EXPECT_FALSE(TemporaryKeywordMatcher::compile({}).is_ok());
  EXPECT_FALSE(TemporaryKeywordMatcher::compile({"  "}).is_ok());
}

TEST(TemporaryKeywordMatcherTest, NormalizeFoldsWhitespaceAndCase) {
  std::string out;
  TemporaryKeywordMatcher::normalize("  DROP \n\t TABLE   x ", &out);
  EXPECT_EQ(out, "drop table x");
}

}  // namespace
}  // namespace pgwarden::packet
