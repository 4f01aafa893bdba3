#include "dataplane/packet/wire_prescreen.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/source_root.h"
#include "dataplane/packet/packet_parser.h"
#include "dataplane/packet/tcp_reassembler.h"
#include "rules/rule_set.h"

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

constexpr uint32_t kMaxStatement = 64 * 1024;

// The shipped default sets, as `pgwarden-dp --dpdk` loads them.
std::shared_ptr<const rules::CompiledRuleSet> default_rules() {
  static std::shared_ptr<const rules::CompiledRuleSet> set = [] {
    std::vector<std::string> files = {PGW_SOURCE_ROOT "/rules/sets/deny.rules",
                                      PGW_SOURCE_ROOT "/rules/sets/approve.rules"};
    auto r = load_wire_rules(files);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : nullptr;
  }();
  return set;
}

class WirePrescreenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(default_rules(), nullptr);
    auto p = WirePrescreen::create(default_rules(), &counters_, nullptr,
                                   WirePrescreenOptions{.max_statement_bytes = kMaxStatement});
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

TEST_F(WirePrescreenTest, DenyRuleMatchesThroughTheLexerAcrossCaseCommentsAndWhitespace) {
  std::string s = startup_message() + query("select 1") + query("DROP/*x*/\n\t  DaTaBaSe demo");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "deny:deny.drop_database");
  EXPECT_EQ(counters_.prescreen_denied.get(), 1u);
}

TEST_F(WirePrescreenTest, DenyWordsInsideAStringLiteralAreAllowed) {
  std::string s = startup_message() + query("SELECT 'drop database demo' AS note");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kAllow);
  EXPECT_EQ(counters_.prescreen_denied.get(), 0u);
}

TEST_F(WirePrescreenTest, ParseMessageStatementIsScreened) {
  std::string parse_body = std::string("s1\0", 3) + "COPY crm.customers TO PROGRAM 'curl x'" +
                           std::string(1, '\0') + std::string("\0\0", 2);
  std::string s = startup_message() + message('P', parse_body);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(records_.back().sql, "COPY crm.customers TO PROGRAM 'curl x'");
  EXPECT_EQ(stream_->reason(), "deny:deny.copy_program");
}

TEST_F(WirePrescreenTest, ApproveRuleIsDeniedOnTheWireBecauseNobodyCanApprove) {
  std::string s = startup_message() + query("TRUNCATE crm.orders");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "approve_required:approve.truncate");
  EXPECT_EQ(counters_.prescreen_approve_denied.get(), 1u);
  EXPECT_EQ(counters_.prescreen_denied.get(), 1u);
}

TEST_F(WirePrescreenTest, DenyWinsOverApproveInOneQueryString) {
  std::string s = startup_message() + query("TRUNCATE crm.orders; DROP DATABASE demo");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "deny:deny.drop_database");
}

TEST_F(WirePrescreenTest, ByteByByteGivesTheSameRecordsAsWhole) {
  std::string s = ssl_request() + startup_message() + query("SELECT 1") + message('S', "") +
                  query("drop database x");
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
    EXPECT_EQ(records_[i].reason, whole[i].reason);
    EXPECT_EQ(records_[i].body_length, whole[i].body_length);
  }
}

TEST_F(WirePrescreenTest, TlsAfterSslRequestIsDeniedAsNotInspectable) {
  std::string s = ssl_request() + std::string("\x16\x03\x01\x02\x00", 5);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:encrypted_stream_not_inspectable");
  EXPECT_EQ(counters_.prescreen_frame_errors.get(), 1u);
}

TEST_F(WirePrescreenTest, DirectTlsWithoutSslRequestIsDeniedAsNotInspectable) {
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(std::string("\x16\x03\x01\x02\x00", 5))),
            Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:encrypted_stream_not_inspectable");
}

TEST_F(WirePrescreenTest, StartupPacketOverPostgresLimitIsAFrameError) {
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(be32(20000) + be32(196608))), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:startup_too_large");
}

TEST_F(WirePrescreenTest, UnknownProtocolVersionIsDenied) {
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(be32(8) + be32(0x00020000))), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:unsupported_protocol");
}

TEST_F(WirePrescreenTest, MessageLengthBelowFourIsDenied) {
  std::string s = startup_message() + "Q" + be32(3);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:length_too_small");
}

TEST_F(WirePrescreenTest, InvalidFrontendMessageTypeIsDenied) {
  std::string s = startup_message() + message('T', "abc");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:invalid_message_type");
}

TEST_F(WirePrescreenTest, OversizedQueryIsDeniedBeforeBuffering) {
  std::string s = startup_message() + "Q" + be32(kMaxStatement + 5);
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:statement_too_large");
}

TEST_F(WirePrescreenTest, OversizedQueryArrivingWholeIsDeniedToo) {
  std::string s = startup_message() + query(std::string(kMaxStatement, 'x'));
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:statement_too_large");
}

TEST_F(WirePrescreenTest, LargeNonStatementMessagesAreSkippedNotBuffered) {
  std::string copy_data(4 * kMaxStatement, 'd');
  std::string s = startup_message() + message('d', copy_data) + query("SELECT 2");
  // Split inside the CopyData body: the skipped bytes must never be buffered.
  ReassemblyMemory memory(1024);
  auto p = WirePrescreen::create(default_rules(), &counters_, &memory);
  ASSERT_TRUE(p.is_ok());
  auto stream = (*p)->open_stream(FlowKey{});
  size_t cut = startup_message().size() + 1000;
  EXPECT_EQ(stream->on_client_bytes(bytes_of(s).first(cut)), Verdict::kAllow);
  EXPECT_LE(memory.used(), 64u);
  EXPECT_EQ(stream->on_client_bytes(bytes_of(s).subspan(cut)), Verdict::kAllow);
  EXPECT_EQ(records_.size(), 0u);  // the observer is on sink_, not on this sink
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kAllow);
  EXPECT_EQ(records_.back().sql, "SELECT 2");
}

TEST_F(WirePrescreenTest, StatementBufferIsChargedToTheLcoreBudgetAndReturned) {
  ReassemblyMemory memory(kMaxStatement);
  {
    auto p = WirePrescreen::create(default_rules(), &counters_, &memory);
    ASSERT_TRUE(p.is_ok());
    auto stream = (*p)->open_stream(FlowKey{});
    std::string s = startup_message() + query("SELECT " + std::string(40000, '1'));
    EXPECT_EQ(stream->on_client_bytes(bytes_of(s).first(s.size() - 10)), Verdict::kAllow);
    EXPECT_GE(memory.used(), 40000u);
    auto other = (*p)->open_stream(FlowKey{});
    EXPECT_EQ(other->on_client_bytes(bytes_of(s).first(s.size() - 10)), Verdict::kDeny);
    EXPECT_EQ(other->reason(), "memcap:statement_buffer");
    EXPECT_EQ(counters_.prescreen_memcap_denied.get(), 1u);
    EXPECT_EQ(stream->on_client_bytes(bytes_of(s).last(10)), Verdict::kAllow);
  }
  EXPECT_EQ(memory.used(), 0u);
}

TEST_F(WirePrescreenTest, ClosedStreamMemoryIsReusedAndTheNextStreamStartsFresh) {
  std::string s = startup_message() + query("SELECT " + std::string(300, '1'));
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s).first(s.size() - 10)), Verdict::kAllow);
  const StreamConsumer* closed = stream_.get();
  stream_.reset();  // mid-statement: its buffer goes with it
  std::unique_ptr<StreamConsumer> next = sink_->open_stream(FlowKey{});
  EXPECT_EQ(next.get(), closed);  // from the sink's free list, not the heap
  // Fresh state: the startup phase again, nothing of the old partial statement.
  std::string t = startup_message() + query("SELECT 2");
  EXPECT_EQ(next->on_client_bytes(bytes_of(t)), Verdict::kAllow);
  EXPECT_EQ(records_.back().sql, "SELECT 2");
  EXPECT_EQ(next->on_client_bytes(bytes_of(query("DROP DATABASE demo"))), Verdict::kDeny);
}

TEST_F(WirePrescreenTest, QueryWithoutTerminatorIsDenied) {
  std::string s = startup_message() + message('Q', "SELECT 1");
  EXPECT_EQ(stream_->on_client_bytes(bytes_of(s)), Verdict::kDeny);
  EXPECT_EQ(stream_->reason(), "frame_error:missing_nul");
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

TEST(WireRulesTest, MissingOrEmptyRuleFilesAreRejected) {
  EXPECT_FALSE(load_wire_rules({}).is_ok());
  std::vector<std::string> missing = {"/nonexistent/deny.rules"};
  EXPECT_FALSE(load_wire_rules(missing).is_ok());
}

TEST(WirePrescreenCreateTest, NullRuleSetIsRejected) {
  PacketCounters counters;
  EXPECT_FALSE(WirePrescreen::create(nullptr, &counters).is_ok());
}

}  // namespace
}  // namespace pgwarden::packet
