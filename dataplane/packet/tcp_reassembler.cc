#include "dataplane/packet/tcp_reassembler.h"

#include <algorithm>
#include <cstring>

namespace pgwarden::packet {
namespace {

constexpr uint32_t kMinRingBytes = 2048;
// An emptied ring at most this large is kept for the next request: PostgreSQL sessions send
// many small statements, and reallocating for each would cost more than the memory.
constexpr uint32_t kKeepRingBytes = 4096;

uint32_t distance(TcpSeq from, TcpSeq to) { return static_cast<uint32_t>(to - from); }

void write_ring(uint8_t* ring, uint32_t cap, TcpSeq at, const uint8_t* src, uint32_t len) {
  uint32_t pos = at.raw() & (cap - 1);
  uint32_t first = std::min(len, cap - pos);
  std::memcpy(ring + pos, src, first);
  std::memcpy(ring, src + first, len - first);
}

}  // namespace

std::string_view verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kAllow:
      return "allow";
    case Verdict::kDeny:
      return "deny";
    case Verdict::kApprove:
      return "approve";
  }
  return "unknown";
}

ReassemblyMemory::ReassemblyMemory(size_t cap) : cap_(cap) {
  size_t cache = std::min(kRingBlockCacheBytes, cap / 8);
  for (size_t i = 0; i < std::size(kRingBlockSizes); ++i) {
    // Half of the cache per size; reserved now so that recycling never reallocates.
    max_cached_[i] = cache / 2 / kRingBlockSizes[i];
    free_[i].reserve(max_cached_[i]);
  }
}

std::unique_ptr<uint8_t[]> ReassemblyMemory::take_block(uint32_t size) {
  for (size_t i = 0; i < std::size(kRingBlockSizes); ++i) {
    if (size == kRingBlockSizes[i] && !free_[i].empty()) {
      std::unique_ptr<uint8_t[]> b = std::move(free_[i].back());
      free_[i].pop_back();
      return b;
    }
  }
  return std::make_unique_for_overwrite<uint8_t[]>(size);
}

void ReassemblyMemory::give_block(std::unique_ptr<uint8_t[]> block, uint32_t size) {
  for (size_t i = 0; i < std::size(kRingBlockSizes); ++i) {
    if (size == kRingBlockSizes[i] && free_[i].size() < max_cached_[i]) {
      free_[i].push_back(std::move(block));
      return;
    }
  }
}

TcpReassembler::TcpReassembler(const ReassemblyConfig* config, ReassemblyMemory* memory,
                               PacketCounters* counters)
    : config_(config), memory_(memory), counters_(counters) {}

TcpReassembler::~TcpReassembler() { free_buffer(); }

void TcpReassembler::start(TcpSeq isn) {
  started_ = true;
  acked_ = isn + 1;
  next_ = isn + 1;
}

size_t TcpReassembler::out_of_order_bytes() const {
  size_t n = 0;
  for (const Island& i : islands_) n += distance(i.start, i.end);
  return n;
}

void TcpReassembler::free_buffer() {
  if (cap_ == 0) return;
  memory_->release(cap_);
  memory_->give_block(std::move(ring_), cap_);
  cap_ = 0;
}

bool TcpReassembler::ensure_capacity(uint32_t needed) {
  if (needed <= cap_) return true;
  uint32_t new_cap = std::max(kMinRingBytes, cap_);
  while (new_cap < needed) new_cap *= 2;
  new_cap = std::min(new_cap, config_->per_flow_cap);
  if (!memory_->reserve(new_cap - cap_)) {
    counters_->reassembly_memcap_global_drops.inc();
    return false;
  }
  std::unique_ptr<uint8_t[]> ring = memory_->take_block(new_cap);
  TcpSeq high = islands_.empty() ? next_ : islands_.back().end;
  // Re-home every retained byte: its position is its sequence number modulo the capacity.
  for (TcpSeq p = acked_; p < high;) {
    uint32_t pos = p.raw() & (cap_ - 1);
    uint32_t chunk = std::min(distance(p, high), cap_ - pos);
    write_ring(ring.get(), new_cap, p, ring_.get() + pos, chunk);
    p += chunk;
  }
  if (ring_) memory_->give_block(std::move(ring_), cap_);
  ring_ = std::move(ring);
  cap_ = new_cap;
  return true;
}

void TcpReassembler::ring_write(TcpSeq at, const uint8_t* src, uint32_t len) {
  write_ring(ring_.get(), cap_, at, src, len);
}

bool TcpReassembler::ring_equal(TcpSeq at, const uint8_t* src, uint32_t len) const {
  uint32_t pos = at.raw() & (cap_ - 1);
  uint32_t first = std::min(len, cap_ - pos);
  return std::memcmp(ring_.get() + pos, src, first) == 0 &&
         std::memcmp(ring_.get(), src + first, len - first) == 0;
}

bool TcpReassembler::stored_bytes_match(TcpSeq start, std::span<const uint8_t> payload) const {
  TcpSeq end = start + static_cast<uint32_t>(payload.size());
  if (start < next_) {
    TcpSeq e = seq_min(end, next_);
    if (!ring_equal(start, payload.data(), distance(start, e))) return false;
  }
  for (const Island& i : islands_) {
    if (i.start >= end) break;
    TcpSeq s = seq_max(start, i.start);
    TcpSeq e = seq_min(end, i.end);
    if (s < e && !ring_equal(s, payload.data() + distance(start, s), distance(s, e))) {
      return false;
    }
  }
  return true;
}

bool TcpReassembler::store(TcpSeq start, std::span<const uint8_t> payload) {
  TcpSeq end = start + static_cast<uint32_t>(payload.size());
  TcpSeq s = seq_max(start, next_);
  if (s >= end) return true;  // everything already delivered (and matched)
  // Islands [first, last) touch [s, end) and merge with it into one.
  auto first =
      std::find_if(islands_.begin(), islands_.end(), [&](const Island& i) { return i.end >= s; });
  auto last = std::find_if(first, islands_.end(), [&](const Island& i) { return i.start > end; });
  size_t islands_after = islands_.size() - static_cast<size_t>(last - first) + 1;
  // A range starting at the delivery edge is delivered at once and never stays an island.
  if (s != next_ && islands_after > config_->max_islands) {
    counters_->reassembly_islands_cap_drops.inc();
    return false;
  }
  if (!ensure_capacity(
          distance(acked_, seq_max(end, islands_.empty() ? end : islands_.back().end)))) {
    return false;
  }
  // Bytes already in an island are equal (checked before), so writing the whole range keeps
  // first-arrived data.
  ring_write(s, payload.data() + distance(start, s), distance(s, end));
  Island merged{s, end};
  if (first != last) {
    merged.start = seq_min(s, first->start);
    merged.end = seq_max(end, (last - 1)->end);
  }
  auto pos = islands_.erase(first, last);
  islands_.insert(pos, merged);
  return true;
}

bool TcpReassembler::deliver(StreamConsumer& consumer) {
  while (!islands_.empty() && islands_.front().start <= next_) {
    Island island = islands_.front();
    islands_.erase(islands_.begin());
    if (island.end <= next_) continue;
    TcpSeq from = next_;
    uint32_t n = distance(from, island.end);
    uint32_t pos = from.raw() & (cap_ - 1);
    uint32_t first = std::min(n, cap_ - pos);
    next_ = island.end;
    counters_->reassembly_bytes_delivered.inc(n);
    if (consumer.on_client_bytes({ring_.get() + pos, first}) != Verdict::kAllow) return false;
    if (first < n && consumer.on_client_bytes({ring_.get(), n - first}) != Verdict::kAllow) {
      return false;
    }
  }
  return true;
}

SegmentOutcome TcpReassembler::on_segment(TcpSeq seq, std::span<const uint8_t> payload, bool fin,
                                          StreamConsumer& consumer) {
  if (closed_) return SegmentOutcome::kClosed;
  TcpSeq start = seq;
  TcpSeq end = seq + static_cast<uint32_t>(payload.size());
  if ((fin && fin_ && *fin_ != end) || (fin_ && end > *fin_)) {
    counters_->reassembly_data_after_fin.inc();
    closed_ = true;
    return SegmentOutcome::kConflict;
  }
  if (!payload.empty()) {
    if (end <= acked_) {
      counters_->reassembly_retransmits.inc();
      return SegmentOutcome::kForward;
    }
    if (start < acked_) {
      payload = payload.subspan(distance(start, acked_));
      start = acked_;
    }
    if (distance(acked_, end) > config_->per_flow_cap) {
      counters_->reassembly_memcap_flow_drops.inc();
      return SegmentOutcome::kDropCap;
    }
    if (start == next_ && islands_.empty()) {
      // In order with nothing held: inspect the segment in place (no island, no read back
      // from the ring) and keep the copy that later retransmissions are compared with.
      if (!ensure_capacity(distance(acked_, end))) return SegmentOutcome::kDropCap;
      if (fin) fin_ = end;
      next_ = end;
      counters_->reassembly_bytes_delivered.inc(payload.size());
      if (consumer.on_client_bytes(payload) != Verdict::kAllow) {
        closed_ = true;
        return SegmentOutcome::kDeny;
      }
      ring_write(start, payload.data(), static_cast<uint32_t>(payload.size()));
      return_ring_if_done();
      return SegmentOutcome::kForward;
    }
    if (!stored_bytes_match(start, payload)) {
      counters_->reassembly_overlap_conflicts.inc();
      closed_ = true;
      return SegmentOutcome::kConflict;
    }
    if (!store(start, payload)) return SegmentOutcome::kDropCap;
  }
  if (fin) fin_ = end;
  if (!deliver(consumer)) {
    closed_ = true;
    return SegmentOutcome::kDeny;
  }
  if (end <= next_) {
    return_ring_if_done();
    return SegmentOutcome::kForward;
  }
  counters_->tcp_held_out_of_order.inc();
  return SegmentOutcome::kHold;
}

void TcpReassembler::on_peer_ack(TcpSeq ack) {
  if (!started_ || ack <= acked_) return;
  // The server can acknowledge the FIN (next + 1) but no byte we did not deliver.
  acked_ = seq_min(ack, next_);
  if (acked_ == next_ && islands_.empty() && cap_ > kKeepRingBytes) free_buffer();
  return_ring_if_done();
}

void TcpReassembler::return_ring_if_done() {
  // After the client's FIN was delivered and every byte acknowledged, no byte can ever be
  // compared again: retransmissions are before `acked` and data past the FIN is a conflict
  // decided without the ring. Keeping the ring until the flow is swept would hold memory of
  // closed connections for the linger time.
  if (fin_delivered() && acked_ == next_ && islands_.empty()) free_buffer();
}

void TcpReassembler::release() {
  closed_ = true;
  islands_.clear();
  free_buffer();
}

}  // namespace pgwarden::packet
