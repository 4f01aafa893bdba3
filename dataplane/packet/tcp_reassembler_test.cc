#include "dataplane/packet/tcp_reassembler.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace pgwarden::packet {
namespace {

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Records the stream; denies once the stream contains `deny_marker` (if set).
class RecordingConsumer : public StreamConsumer {
 public:
  explicit RecordingConsumer(std::string deny_marker = {}) : marker_(std::move(deny_marker)) {}
  Verdict on_client_bytes(std::span<const uint8_t> b) override {
    ++calls;
    stream.append(reinterpret_cast<const char*>(b.data()), b.size());
    if (!marker_.empty() && stream.find(marker_) != std::string::npos) return Verdict::kDeny;
    return Verdict::kAllow;
  }
  std::string_view reason() const override { return "marker"; }
  std::string stream;
  int calls = 0;

 private:
  std::string marker_;
};

class TcpReassemblerTest : public ::testing::Test {
 protected:
  explicit TcpReassemblerTest(size_t memcap = 1 << 20) : memory_(memcap) {
    config_.per_flow_cap = 64 * 1024;
    config_.max_islands = 4;
  }
  SegmentOutcome seg(TcpReassembler& r, uint32_t offset, std::string_view data, bool fin = false) {
    return r.on_segment(isn_ + 1 + offset, bytes_of(data), fin, consumer_);
  }

  ReassemblyConfig config_;
  ReassemblyMemory memory_;
  PacketCounters counters_;
  RecordingConsumer consumer_;
  TcpSeq isn_{1000};
};

TEST_F(TcpReassemblerTest, InOrderSegmentsAreDeliveredAndForwarded) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 0, "hello "), SegmentOutcome::kForward);
  EXPECT_EQ(seg(r, 6, "world"), SegmentOutcome::kForward);
  EXPECT_EQ(consumer_.stream, "hello world");
  EXPECT_EQ(r.next(), isn_ + 12);
  EXPECT_EQ(counters_.reassembly_bytes_delivered.get(), 11u);
}

TEST_F(TcpReassemblerTest, InOrderSegmentIsInspectedInPlaceAndKeptForRetransmissions) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  // 3,000 bytes after 1,500: the second segment wraps the 4 KiB ring, yet the consumer sees
  // each in-order segment in one call (inspected where it lies, not read back from the ring).
  std::string a(1500, 'a'), b(3000, 'b');
  EXPECT_EQ(seg(r, 0, a), SegmentOutcome::kForward);
  r.on_peer_ack(isn_ + 1 + 1500);
  EXPECT_EQ(seg(r, 1500, b), SegmentOutcome::kForward);
  EXPECT_EQ(consumer_.calls, 2);
  EXPECT_EQ(consumer_.stream, a + b);
  // The copy kept for the unacknowledged bytes is what a retransmission is compared with.
  EXPECT_EQ(seg(r, 1500, b), SegmentOutcome::kForward);
  std::string changed = b;
  changed[2900] = 'X';
  EXPECT_EQ(seg(r, 1500, changed), SegmentOutcome::kConflict);
  EXPECT_EQ(consumer_.stream, a + b);
}

TEST(ReassemblyMemoryTest, RingBlocksAreRecycledUpToTheCacheCap) {
  // Budget 64 KiB: the free list keeps 8 KiB, half per size: two 2 KiB and one 4 KiB block.
  ReassemblyMemory memory(64 * 1024);
  std::unique_ptr<uint8_t[]> b[3];
  for (auto& x : b) x = memory.take_block(2048);
  uint8_t* last = b[2].get();
  for (auto& x : b) memory.give_block(std::move(x), 2048);
  EXPECT_EQ(memory.cached_blocks(), 2u);             // the third went back to the heap
  memory.give_block(memory.take_block(8192), 8192);  // not a pooled size
  EXPECT_EQ(memory.cached_blocks(), 2u);
  std::unique_ptr<uint8_t[]> again = memory.take_block(2048);
  EXPECT_NE(again.get(), last);  // the last block given back was freed, not cached
  EXPECT_EQ(memory.cached_blocks(), 1u);
  EXPECT_EQ(memory.used(), 0u);  // cached blocks are not charged to the budget
}

TEST_F(TcpReassemblerTest, ClosedFlowRingIsReusedByTheNextFlow) {
  {
    TcpReassembler r(&config_, &memory_, &counters_);
    r.start(isn_);
    EXPECT_EQ(seg(r, 0, "SELECT 1"), SegmentOutcome::kForward);
    EXPECT_EQ(memory_.cached_blocks(), 0u);
  }
  EXPECT_EQ(memory_.cached_blocks(), 1u);
  EXPECT_EQ(memory_.used(), 0u);
  TcpReassembler next(&config_, &memory_, &counters_);
  next.start(isn_);
  EXPECT_EQ(seg(next, 0, "SELECT 2"), SegmentOutcome::kForward);
  EXPECT_EQ(memory_.cached_blocks(), 0u);
  EXPECT_EQ(memory_.used(), 2048u);
}

TEST_F(TcpReassemblerTest, OutOfOrderSegmentIsHeldThenDeliveredWhenGapFills) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 6, "world"), SegmentOutcome::kHold);
  EXPECT_EQ(consumer_.stream, "");
  EXPECT_EQ(r.out_of_order_bytes(), 5u);
  EXPECT_EQ(seg(r, 0, "hello "), SegmentOutcome::kForward);
  EXPECT_EQ(consumer_.stream, "hello world");
  // The client's retransmission of the held segment now matches and is forwarded.
  EXPECT_EQ(seg(r, 6, "world"), SegmentOutcome::kForward);
  EXPECT_EQ(counters_.tcp_held_out_of_order.get(), 1u);
  EXPECT_EQ(counters_.reassembly_overlap_conflicts.get(), 0u);
}

TEST_F(TcpReassemblerTest, ExactDuplicateIsForwardedWithoutRedelivery) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  seg(r, 0, "abcdef");
  EXPECT_EQ(seg(r, 0, "abcdef"), SegmentOutcome::kForward);
  EXPECT_EQ(consumer_.stream, "abcdef");
}

TEST_F(TcpReassemblerTest, ConflictingRetransmissionOfUnackedBytesIsRefused) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  seg(r, 0, "SELECT 1;");
  EXPECT_EQ(seg(r, 0, "DROP   1;"), SegmentOutcome::kConflict);
  EXPECT_EQ(consumer_.stream, "SELECT 1;");  // first-arrived bytes win
  EXPECT_TRUE(r.closed());
  EXPECT_EQ(seg(r, 9, "more"), SegmentOutcome::kClosed);
  EXPECT_EQ(counters_.reassembly_overlap_conflicts.get(), 1u);
}

TEST_F(TcpReassemblerTest, ConflictingOverlapWithOutOfOrderIslandIsRefused) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 4, "WXYZ"), SegmentOutcome::kHold);
  EXPECT_EQ(seg(r, 2, "ccwxyz"), SegmentOutcome::kConflict);
  EXPECT_EQ(consumer_.stream, "");
}

TEST_F(TcpReassemblerTest, PartialOverlapAddsOnlyNewBytes) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  seg(r, 0, "abcd");
  EXPECT_EQ(seg(r, 2, "cdefgh"), SegmentOutcome::kForward);
  EXPECT_EQ(consumer_.stream, "abcdefgh");
}

TEST_F(TcpReassemblerTest, SegmentSpanningTwoIslandsMergesThem) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  seg(r, 2, "cd");
  seg(r, 6, "gh");
  EXPECT_EQ(seg(r, 3, "defg"), SegmentOutcome::kHold);
  EXPECT_EQ(r.out_of_order_bytes(), 6u);
  EXPECT_EQ(seg(r, 0, "ab"), SegmentOutcome::kForward);
  EXPECT_EQ(consumer_.stream, "abcdefgh");
}

TEST_F(TcpReassemblerTest, SequenceWrapAroundIsSeamless) {
  isn_ = TcpSeq(0xfffffffau);
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 3, "defghij"), SegmentOutcome::kHold);  // crosses 2^32
  EXPECT_EQ(seg(r, 0, "abc"), SegmentOutcome::kForward);
  EXPECT_EQ(consumer_.stream, "abcdefghij");
  EXPECT_EQ(r.next().raw(), 0x00000005u);
}

TEST_F(TcpReassemblerTest, AckedRetransmissionIsForwardedUnchecked) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  seg(r, 0, "abcdef");
  r.on_peer_ack(isn_ + 7);
  // The server already acknowledged these bytes: it will discard them whatever they hold.
  EXPECT_EQ(seg(r, 0, "zzzzzz"), SegmentOutcome::kForward);
  EXPECT_EQ(counters_.reassembly_retransmits.get(), 1u);
}

TEST_F(TcpReassemblerTest, AckBeyondDeliveredDataIsClamped) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  seg(r, 0, "abc");
  r.on_peer_ack(isn_ + 100);
  EXPECT_EQ(r.acked(), r.next());
}

TEST_F(TcpReassemblerTest, PerFlowCapDropsSegmentBeyondWindow) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  std::string big(100, 'x');
  EXPECT_EQ(seg(r, config_.per_flow_cap - 50, big), SegmentOutcome::kDropCap);
  EXPECT_EQ(counters_.reassembly_memcap_flow_drops.get(), 1u);
  EXPECT_EQ(r.out_of_order_bytes(), 0u);
}

TEST_F(TcpReassemblerTest, IslandCapDropsAndCounts) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  for (uint32_t i = 0; i < config_.max_islands; ++i) {
    EXPECT_EQ(seg(r, 10 + i * 10, "x"), SegmentOutcome::kHold);
  }
  EXPECT_EQ(seg(r, 500, "x"), SegmentOutcome::kDropCap);
  EXPECT_EQ(counters_.reassembly_islands_cap_drops.get(), 1u);
  // Data that extends an existing island is still accepted.
  EXPECT_EQ(seg(r, 11, "y"), SegmentOutcome::kHold);
}

TEST_F(TcpReassemblerTest, FinEndsStreamAndDataAfterFinConflicts) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 0, "bye", true), SegmentOutcome::kForward);
  EXPECT_TRUE(r.fin_delivered());
  EXPECT_EQ(seg(r, 3, "extra"), SegmentOutcome::kConflict);
  EXPECT_EQ(counters_.reassembly_data_after_fin.get(), 1u);
}

TEST_F(TcpReassemblerTest, FinBeyondGapIsHeld) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 3, "def", true), SegmentOutcome::kHold);
  EXPECT_FALSE(r.fin_delivered());
  EXPECT_EQ(seg(r, 0, "abc"), SegmentOutcome::kForward);
  EXPECT_TRUE(r.fin_delivered());
}

TEST_F(TcpReassemblerTest, DenyStopsDeliveryAndClosesStream) {
  RecordingConsumer denier("DROP");
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(r.on_segment(isn_ + 1, bytes_of("SELECT 1; DR"), false, denier),
            SegmentOutcome::kForward);
  EXPECT_EQ(r.on_segment(isn_ + 13, bytes_of("OP TABLE x"), false, denier), SegmentOutcome::kDeny);
  EXPECT_TRUE(r.closed());
  EXPECT_EQ(r.on_segment(isn_ + 23, bytes_of(";"), false, denier), SegmentOutcome::kClosed);
}

TEST_F(TcpReassemblerTest, RingGrowthKeepsRetainedBytesAcrossWrap) {
  isn_ = TcpSeq(0xffffff00u);
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  std::string expect;
  // 20 KiB in 1000-byte segments, never acknowledged: the ring must grow 2K → 32K.
  for (uint32_t i = 0; i < 20; ++i) {
    std::string chunk(1000, static_cast<char>('a' + i));
    expect += chunk;
    ASSERT_EQ(seg(r, i * 1000, chunk), SegmentOutcome::kForward);
  }
  EXPECT_EQ(consumer_.stream, expect);
  EXPECT_EQ(r.buffer_capacity(), 32768u);
  EXPECT_EQ(memory_.used(), 32768u);  // growth reserves only the difference each time
  // Every retained byte still compares equal after the moves: a retransmission matches.
  EXPECT_EQ(seg(r, 500, expect.substr(500, 15000)), SegmentOutcome::kForward);
  EXPECT_EQ(counters_.reassembly_overlap_conflicts.get(), 0u);
}

TEST_F(TcpReassemblerTest, MemoryIsReturnedWhenAckedAndOnDestruction) {
  {
    TcpReassembler r(&config_, &memory_, &counters_);
    r.start(isn_);
    std::string chunk(8000, 'q');
    seg(r, 0, chunk);
    EXPECT_GE(memory_.used(), 8000u);
    r.on_peer_ack(isn_ + 8001);
    EXPECT_EQ(memory_.used(), 0u);  // emptied buffers above the keep size are freed
    seg(r, 8000, "tail");
    EXPECT_GT(memory_.used(), 0u);
  }
  EXPECT_EQ(memory_.used(), 0u);
}

TEST_F(TcpReassemblerTest, SmallRingIsReturnedOnceFinIsDeliveredAndAcked) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 0, "SELECT 1"), SegmentOutcome::kForward);
  r.on_peer_ack(isn_ + 9);
  EXPECT_GT(memory_.used(), 0u);  // a small emptied ring is kept for the next statement
  EXPECT_EQ(seg(r, 8, "X", true), SegmentOutcome::kForward);
  EXPECT_GT(memory_.used(), 0u);  // "X" not acknowledged yet: a retransmission compares
  r.on_peer_ack(isn_ + 11);       // the server acknowledges the FIN
  EXPECT_EQ(memory_.used(), 0u);
  // Retransmissions of acknowledged bytes still pass, data past the FIN still conflicts.
  EXPECT_EQ(seg(r, 8, "X", true), SegmentOutcome::kForward);
  EXPECT_EQ(seg(r, 9, "more"), SegmentOutcome::kConflict);
  EXPECT_EQ(memory_.used(), 0u);
}

TEST_F(TcpReassemblerTest, FinAfterServerAckedEverythingReturnsRingAtOnce) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 0, "abc"), SegmentOutcome::kForward);
  r.on_peer_ack(isn_ + 4);
  EXPECT_EQ(seg(r, 3, "", true), SegmentOutcome::kForward);
  EXPECT_EQ(memory_.used(), 0u);
}

TEST_F(TcpReassemblerTest, ReleaseClosesTheStreamAndReturnsEverything) {
  TcpReassembler r(&config_, &memory_, &counters_);
  r.start(isn_);
  EXPECT_EQ(seg(r, 0, "abc"), SegmentOutcome::kForward);
  EXPECT_EQ(seg(r, 10, "island"), SegmentOutcome::kHold);
  EXPECT_GT(memory_.used(), 0u);
  r.release();
  EXPECT_EQ(memory_.used(), 0u);
  EXPECT_TRUE(r.closed());
  EXPECT_EQ(seg(r, 3, "defghij"), SegmentOutcome::kClosed);
}

class TinyMemcapTest : public TcpReassemblerTest {
 protected:
  TinyMemcapTest() : TcpReassemblerTest(4096) {}
};

TEST_F(TinyMemcapTest, LcoreMemcapDropsAndCountsWithoutDelivery) {
  TcpReassembler a(&config_, &memory_, &counters_);
  TcpReassembler b(&config_, &memory_, &counters_);
  a.start(isn_);
  b.start(isn_);
  std::string chunk(3000, 'x');
  EXPECT_EQ(seg(a, 0, chunk), SegmentOutcome::kForward);  // takes 4096
  EXPECT_EQ(seg(b, 0, "y"), SegmentOutcome::kDropCap);
  EXPECT_EQ(counters_.reassembly_memcap_global_drops.get(), 1u);
  EXPECT_EQ(consumer_.stream, chunk);
}

}  // namespace
}  // namespace pgwarden::packet
