// The dp -> cp event ring: a single-producer/single-consumer ring of variable-length records
// in shared memory (docs/protocol.md, "Event ring").
//
// One memfd per dp worker holds a RingRegion: a header, the forward ring (dp -> cp: events
// and write-ahead records), the backward ring (cp -> dp: refusals of write-ahead records) and
// the "written up to N" watermark. dp creates it (RingRegion::create), hands the memfd and two
// eventfds to cp over the escalation socket (SCM_RIGHTS, with the hello), cp maps it
// (RingRegion::attach).
//
// Ring layout (after DPDK's rte_ring): a power-of-two byte array, a producer position (tail)
// and a consumer position (head), monotonically increasing 64-bit byte counts, each on its own
// cache line. A record is a fixed RecordHeader followed by `length` payload bytes, padded to 8
// bytes; a record never wraps: when it does not fit before the end of the array the producer
// writes a kPad record over the rest and starts again at offset 0.
//
// Wake-ups: the consumer publishes "parked" (consumer_parked = 1) before it waits on its
// eventfd and re-checks the ring after; the producer writes the eventfd only when, after
// publishing, it finds the consumer parked. Both sides use sequentially consistent operations
// for this handshake, so a wake-up is never lost and never sent to a consumer that is busy.
//
// Trust: each side validates what it reads from the shared memory (positions, lengths) and
// treats an inconsistency as a broken peer (Corrupt), never reading outside the mapping.
//
// Thread-safety: one producer thread and one consumer thread per ring; RingRegion's
// watermark fields are atomics usable from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "common/status.h"

namespace pgwarden::protocol {

inline constexpr size_t kCacheLine = 64;

// Fixed record header. `type`: RecordType (event_record.h) or kPad. `session`: the dp's
// 64-bit session id (0 for dataplane-wide records). `seq`: for write-ahead records the
// per-ring request sequence (1, 2, ...), else 0.
struct RecordHeader {
  uint32_t length = 0;  // payload bytes after the header
  uint16_t type = 0;
  uint16_t flags = 0;
  uint64_t session = 0;
  uint64_t seq = 0;
};
static_assert(sizeof(RecordHeader) == 24);
inline constexpr uint16_t kPadRecord = 0xffff;

// Shared control block of one ring; lives in the mapping.
struct RingControl {
  alignas(kCacheLine) std::atomic<uint64_t> tail{0};  // producer: bytes published
  alignas(kCacheLine) std::atomic<uint64_t> head{0};  // consumer: bytes released
  alignas(kCacheLine) std::atomic<uint32_t> consumer_parked{0};
};
static_assert(sizeof(RingControl) == 3 * kCacheLine);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// A record as the consumer sees it. `payload` points into the ring: valid until release().
struct RecordView {
  RecordHeader header;
  std::string_view payload;
};

// One ring over memory it does not own. REQUIRES: `data` has `capacity` bytes, capacity a
// power of two >= 4096; `control` and `data` outlive the ring.
class SpscRing {
 public:
  SpscRing() = default;
  SpscRing(RingControl* control, char* data, size_t capacity)
      : control_(control), data_(data), capacity_(capacity) {}

  size_t capacity() const { return capacity_; }
  // Largest payload a record may carry (half the ring, so a record always fits once the
  // consumer caught up, whatever the wrap position).
  size_t max_payload() const { return capacity_ / 2 - sizeof(RecordHeader); }

  // ---- producer ----
  // Writes one record (payload = the concatenation of `parts`) without publishing it. False
  // when the ring lacks space (nothing written) or the payload exceeds max_payload().
  bool try_write(uint16_t type, uint64_t session, uint64_t seq,
                 std::initializer_list<std::string_view> parts);
  // Makes every written record visible to the consumer. Returns true when the consumer was
  // parked (the caller should then write the consumer's eventfd); clears the parked flag.
  bool publish();
  bool has_unpublished() const { return write_pos_ != published_; }
  // Bytes the producer may still write (as of the last look at head).
  size_t free_bytes();
  // The consumer moved head to a place no consumer can (head beyond tail): the peer is broken.
  bool corrupt() const { return corrupt_; }

  // ---- consumer ----
  // The next published record, skipping pads; false when the ring is empty or corrupt().
  bool peek(RecordView* out);
  // Consumes the record peek() returned (the space is released at the next release()).
  void advance();
  // Hands the consumed bytes back to the producer (one store per batch).
  void release();
  // Publishes "parked" and re-checks: true when the ring is still empty, so the caller may
  // wait on its eventfd; false (not parked) when records arrived meanwhile.
  bool park();
  void unpark();
  bool empty() const;
  // Takes the positions from the shared control block (a ring attached by the other side).
  void resume();

 private:
  RingControl* control_ = nullptr;
  char* data_ = nullptr;
  size_t capacity_ = 0;
  // Producer-private.
  uint64_t write_pos_ = 0;
  uint64_t published_ = 0;
  uint64_t head_cache_ = 0;
  // Consumer-private.
  uint64_t read_pos_ = 0;
  uint64_t tail_cache_ = 0;
  uint64_t peeked_end_ = 0;
  bool corrupt_ = false;
};

// The whole shared region: header, watermark block, forward and backward rings.
struct RegionHeader {
  uint64_t magic = 0;
  uint32_t version = 0;
  uint32_t reserved = 0;
  uint64_t forward_capacity = 0;
  uint64_t backward_capacity = 0;
};
// cp -> dp: every write-ahead record with seq <= written has been answered (written, or
// refused with a record on the backward ring that precedes this store). dp_wants: the lowest
// seq a dp worker waits for (0: none); cp writes the dp's eventfd when written passes it.
struct WatermarkBlock {
  alignas(kCacheLine) std::atomic<uint64_t> written{0};
  alignas(kCacheLine) std::atomic<uint64_t> dp_wants{0};
};

class RingRegion {
 public:
  static constexpr uint64_t kMagic = 0x70677752494e4731ull;  // "pgwRING1"
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kDefaultForward = 8u << 20;
  static constexpr size_t kDefaultBackward = 256u << 10;

  RingRegion() = default;
  ~RingRegion();
  RingRegion(const RingRegion&) = delete;
  RingRegion& operator=(const RingRegion&) = delete;
  RingRegion(RingRegion&& o) noexcept;
  RingRegion& operator=(RingRegion&& o) noexcept;

  // dp: a new sealed (no shrink/grow) memfd of the right size, mapped and initialised. The
  // region owns the fd (fd() to pass it on; it stays open until the region is destroyed).
  static Result<RingRegion> create(size_t forward_capacity = kDefaultForward,
                                   size_t backward_capacity = kDefaultBackward);
  // cp: maps a memfd received from a dp. Validates the seals (the dp cannot shrink it under
  // cp's feet), the size, the header and the capacities. Takes ownership of `fd` (closed on
  // failure too).
  static Result<RingRegion> attach(int fd);
  static size_t region_bytes(size_t forward_capacity, size_t backward_capacity);

  int fd() const { return fd_; }
  size_t bytes() const { return bytes_; }
  SpscRing& forward() { return forward_; }
  SpscRing& backward() { return backward_; }
  WatermarkBlock& watermark() { return *watermark_; }

 private:
  void reset();
  int fd_ = -1;
  void* base_ = nullptr;
  size_t bytes_ = 0;
  WatermarkBlock* watermark_ = nullptr;
  SpscRing forward_;
  SpscRing backward_;
};

}  // namespace pgwarden::protocol
