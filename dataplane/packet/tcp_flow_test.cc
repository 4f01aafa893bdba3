#include "dataplane/packet/tcp_flow.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace pgwarden::packet {
namespace {

class MarkerConsumer : public StreamConsumer {
 public:
  Verdict on_client_bytes(std::span<const uint8_t> b) override {
    seen.append(reinterpret_cast<const char*>(b.data()), b.size());
    return seen.find("EVIL") == std::string::npos ? Verdict::kAllow : Verdict::kDeny;
  }
  std::string_view reason() const override { return "evil_marker"; }
  std::string seen;
};

ParsedPacket packet(uint32_t seq, uint32_t ack, uint8_t flags, uint16_t len = 0) {
  ParsedPacket p;
  p.l3 = L3Kind::kIpv4;
  p.ip_proto = kIpProtoTcp;
  p.seq = TcpSeq(seq);
  p.ack = TcpSeq(ack);
  p.tcp_flags = flags;
  p.payload_len = len;
  return p;
}

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class TcpFlowTest : public ::testing::Test {
 protected:
  TcpFlowTest() : memory_(1 << 20) {}
  TcpFlow make_flow() {
    auto consumer = std::make_unique<MarkerConsumer>();
    consumer_ = consumer.get();
    return TcpFlow(packet(100, 0, kTcpSyn), std::move(consumer), &config_, &memory_, &counters_);
  }
  FlowAction client(TcpFlow& f, uint32_t seq, std::string_view data, uint8_t flags = kTcpAck) {
    return f.on_client_packet(packet(seq, 500, flags, static_cast<uint16_t>(data.size())),
                              bytes_of(data));
  }

  ReassemblyConfig config_;
  ReassemblyMemory memory_;
  PacketCounters counters_;
  MarkerConsumer* consumer_ = nullptr;
};

TEST_F(TcpFlowTest, HandshakeAndAllowedDataAreForwarded) {
  TcpFlow f = make_flow();
  EXPECT_EQ(f.on_server_packet(packet(499, 101, kTcpSyn | kTcpAck)), FlowAction::kForward);
  EXPECT_EQ(client(f, 101, ""), FlowAction::kForward);
  EXPECT_EQ(client(f, 101, "SELECT 1"), FlowAction::kForward);
  EXPECT_EQ(consumer_->seen, "SELECT 1");
  EXPECT_FALSE(f.finished());
}

TEST_F(TcpFlowTest, DenyDropsTheSegmentResetsAndBlocksBothDirections) {
  TcpFlow f = make_flow();
  EXPECT_EQ(client(f, 101, "SELECT 1; EV"), FlowAction::kForward);
  EXPECT_EQ(client(f, 113, "IL"), FlowAction::kDropAndReset);
  EXPECT_TRUE(f.denied());
  EXPECT_EQ(f.deny_reason(), "evil_marker");
  EXPECT_EQ(client(f, 115, "more"), FlowAction::kDrop);
  EXPECT_EQ(f.on_server_packet(packet(500, 113, kTcpAck)), FlowAction::kDrop);
  EXPECT_TRUE(f.finished());
}

TEST_F(TcpFlowTest, ConflictingRetransmissionIsTreatedAsDeny) {
  TcpFlow f = make_flow();
  EXPECT_EQ(client(f, 101, "SELECT 1"), FlowAction::kForward);
  EXPECT_EQ(client(f, 101, "SELECT 2"), FlowAction::kDropAndReset);
  EXPECT_EQ(f.deny_reason(), "overlap_conflict");
}

TEST_F(TcpFlowTest, OutOfOrderSegmentIsDroppedUntilRetransmitted) {
  TcpFlow f = make_flow();
  EXPECT_EQ(client(f, 105, "5678"), FlowAction::kDrop);
  EXPECT_EQ(client(f, 101, "1234"), FlowAction::kForward);
  EXPECT_EQ(client(f, 105, "5678"), FlowAction::kForward);
  EXPECT_EQ(consumer_->seen, "12345678");
}

TEST_F(TcpFlowTest, SynRetransmissionForwardedOtherIsnDropped) {
  TcpFlow f = make_flow();
  EXPECT_EQ(client(f, 100, "", kTcpSyn), FlowAction::kForward);
  EXPECT_EQ(client(f, 7777, "", kTcpSyn), FlowAction::kDrop);
  EXPECT_EQ(client(f, 100, "data", kTcpSyn), FlowAction::kDrop);
  EXPECT_EQ(counters_.tcp_syn_mismatch.get(), 2u);
}

TEST_F(TcpFlowTest, ServerAckReleasesRetainedBytes) {
  TcpFlow f = make_flow();
  std::string big(6000, 's');
  EXPECT_EQ(client(f, 101, big), FlowAction::kForward);
  EXPECT_GT(memory_.used(), 0u);
  f.on_server_packet(packet(500, 6101, kTcpAck));
  EXPECT_EQ(memory_.used(), 0u);
}

TEST_F(TcpFlowTest, ClientResetIsForwardedAndEndsTheFlow) {
  TcpFlow f = make_flow();
  EXPECT_EQ(client(f, 101, "", kTcpRst), FlowAction::kForward);
  EXPECT_TRUE(f.finished());
  EXPECT_EQ(client(f, 101, "x"), FlowAction::kDrop);
}

TEST_F(TcpFlowTest, BothFinsFinishTheFlow) {
  TcpFlow f = make_flow();
  EXPECT_EQ(client(f, 101, "bye", kTcpAck | kTcpFin), FlowAction::kForward);
  EXPECT_FALSE(f.finished());
  EXPECT_EQ(f.on_server_packet(packet(500, 105, kTcpAck | kTcpFin)), FlowAction::kForward);
  EXPECT_TRUE(f.finished());
  // A closed connection holds no reassembly memory while its entry lingers in the table.
  EXPECT_EQ(memory_.used(), 0u);
}

TEST_F(TcpFlowTest, ResetFromEitherSideReturnsReassemblyMemory) {
  TcpFlow a = make_flow();
  EXPECT_EQ(client(a, 101, "SELECT 1"), FlowAction::kForward);
  EXPECT_GT(memory_.used(), 0u);
  EXPECT_EQ(a.on_server_packet(packet(500, 109, kTcpRst | kTcpAck)), FlowAction::kForward);
  EXPECT_EQ(memory_.used(), 0u);
  TcpFlow b = make_flow();
  EXPECT_EQ(client(b, 101, "SELECT 1"), FlowAction::kForward);
  EXPECT_EQ(client(b, 109, "", kTcpRst), FlowAction::kForward);
  EXPECT_EQ(memory_.used(), 0u);
}

TEST_F(TcpFlowTest, DeniedFlowReturnsReassemblyMemory) {
  TcpFlow f = make_flow();
  EXPECT_EQ(client(f, 101, "SELECT 1; EVIL"), FlowAction::kDropAndReset);
  EXPECT_EQ(memory_.used(), 0u);
}

}  // namespace
}  // namespace pgwarden::packet
