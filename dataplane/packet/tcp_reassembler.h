// TcpReassembler: the client→server byte stream of one TCP flow, for an inline (IPS) device.
//
// Model. The reassembler keeps every client byte from the server's cumulative ACK (`acked`)
// up to the highest byte received, in a ring buffer indexed by sequence number:
//   [acked, next)  delivered to the consumer in order; kept so that a retransmission of bytes
//                  the server may not have yet can be compared with what was inspected;
//   beyond next    out-of-order islands, kept until the gap before them fills.
// Overlaps: the first bytes to arrive win. A later segment whose bytes differ from stored
// bytes is a conflict (an evasion attempt or a broken peer): the segment is refused, the
// stored bytes stay, the caller resets the flow.
//
// Forwarding rule (see SegmentOutcome): a segment is forwarded only when every byte in it has
// been delivered to the consumer and allowed. A segment beyond a gap is stored and held (not
// forwarded); once the gap fills its bytes are inspected, and the client's retransmission of
// it (which then matches) is forwarded. So the server only ever receives inspected bytes.
//
// Memory. The ring grows in powers of two up to ReassemblyConfig::per_flow_cap and draws from
// a ReassemblyMemory budget shared by all flows of one lcore. A segment that does not fit is
// dropped (nothing stored) and counted; the client retransmits it later.
//
// Thread-compatible: one lcore owns a reassembler and its ReassemblyMemory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "dataplane/packet/counters.h"
#include "dataplane/packet/stream_sink.h"
#include "dataplane/packet/tcp_seq.h"

namespace pgwarden::packet {

struct ReassemblyConfig {
  // Bytes of stream kept per flow (delivered-but-unacked plus out-of-order). Power of two.
  uint32_t per_flow_cap = 256 * 1024;
  // Out-of-order islands (disjoint byte ranges beyond a gap) kept per flow.
  uint16_t max_islands = 32;
};

// The per-lcore byte budget of all reassembly buffers ("global" memcap, split per lcore so
// that no lcore shares a counter with another), and the lcore's pool of ring blocks.
//
// Pool: rings of the two sizes nearly every flow uses (kRingBlockSizes: a ring starts at
// 2 KiB, and an emptied ring of up to 4 KiB is kept between requests) are recycled through a
// free list instead of the heap, so opening and closing a flow costs no malloc/free. Blocks
// on the free list are not charged to the budget (they belong to no flow); the list itself is
// capped at kRingBlockCacheBytes or an eighth of the budget, whichever is smaller. Larger
// rings come from the heap.
class ReassemblyMemory {
 public:
  static constexpr uint32_t kRingBlockSizes[] = {2048, 4096};
  static constexpr size_t kRingBlockCacheBytes = 16u << 20;

  explicit ReassemblyMemory(size_t cap);
  ReassemblyMemory(const ReassemblyMemory&) = delete;
  ReassemblyMemory& operator=(const ReassemblyMemory&) = delete;

  bool reserve(size_t n) {
    if (n > cap_ - used_) return false;
    used_ += n;
    return true;
  }
  void release(size_t n) { used_ -= n; }
  size_t used() const { return used_; }
  size_t cap() const { return cap_; }

  // A ring block of `size` bytes (uninitialised), from the free list when it has one. Does
  // not charge the budget (reserve() does).
  std::unique_ptr<uint8_t[]> take_block(uint32_t size);
  // Returns a block taken with take_block(size): kept on the free list, or freed when the
  // list is full or the size is not pooled.
  void give_block(std::unique_ptr<uint8_t[]> block, uint32_t size);
  size_t cached_blocks() const { return free_[0].size() + free_[1].size(); }

 private:
  size_t cap_;
  size_t used_ = 0;
  size_t max_cached_[2] = {};
  std::vector<std::unique_ptr<uint8_t[]>> free_[2];  // per kRingBlockSizes entry
};

enum class SegmentOutcome : uint8_t {
  kForward,   // every byte of the segment was delivered and allowed: send it on
  kHold,      // stored beyond a gap (or a FIN beyond one): do not forward yet
  kDropCap,   // no room to keep it (per-flow cap, lcore memcap, island cap): dropped
  kDeny,      // the consumer returned a non-allow verdict while delivering
  kConflict,  // overlaps stored bytes with different content, or data past the FIN
  kClosed,    // the stream already ended in a deny or conflict
};

class TcpReassembler {
 public:
  // REQUIRES: config, memory and counters outlive the reassembler.
  TcpReassembler(const ReassemblyConfig* config, ReassemblyMemory* memory,
                 PacketCounters* counters);
  ~TcpReassembler();
  TcpReassembler(const TcpReassembler&) = delete;
  TcpReassembler& operator=(const TcpReassembler&) = delete;

  // The client's SYN: the stream starts at isn + 1.
  void start(TcpSeq isn);
  bool started() const { return started_; }

  // One client segment (payload may be empty when only `fin` is set). Delivers any bytes
  // that became contiguous to `consumer`. REQUIRES: started().
  SegmentOutcome on_segment(TcpSeq seq, std::span<const uint8_t> payload, bool fin,
                            StreamConsumer& consumer);

  // The server's cumulative ACK: bytes before it are no longer needed. Once the client's
  // FIN is delivered and acknowledged the ring is returned to the lcore's budget.
  void on_peer_ack(TcpSeq ack);

  // The flow ended (reset or denied): closes the stream and returns the ring at once.
  void release();

  TcpSeq next() const { return next_; }
  TcpSeq acked() const { return acked_; }
  bool fin_delivered() const { return fin_ && next_ == *fin_; }
  bool closed() const { return closed_; }
  // Bytes kept beyond `next` (out-of-order data waiting for a gap).
  size_t out_of_order_bytes() const;
  size_t buffer_capacity() const { return cap_; }

 private:
  struct Island {
    TcpSeq start;
    TcpSeq end;
  };

  bool ensure_capacity(uint32_t needed);
  void free_buffer();
  void return_ring_if_done();
  void ring_write(TcpSeq at, const uint8_t* src, uint32_t len);
  bool ring_equal(TcpSeq at, const uint8_t* src, uint32_t len) const;
  bool stored_bytes_match(TcpSeq start, std::span<const uint8_t> payload) const;
  bool store(TcpSeq start, std::span<const uint8_t> payload);
  bool deliver(StreamConsumer& consumer);

  const ReassemblyConfig* config_;
  ReassemblyMemory* memory_;
  PacketCounters* counters_;
  std::unique_ptr<uint8_t[]> ring_;
  uint32_t cap_ = 0;  // 0 or a power of two
  TcpSeq acked_;
  TcpSeq next_;
  std::optional<TcpSeq> fin_;
  std::vector<Island> islands_;  // sorted, disjoint, non-adjacent, all after next_
  bool started_ = false;
  bool closed_ = false;
};

}  // namespace pgwarden::packet
