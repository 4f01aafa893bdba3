#include "common/protocol/event_ring.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <string>
#include <utility>

namespace pgwarden::protocol {

namespace {

constexpr size_t kAlign = 8;
constexpr size_t round_up(size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }
bool power_of_two(size_t n) { return n >= 4096 && (n & (n - 1)) == 0; }

// Offsets inside the region, each section on its own page.
constexpr size_t kPage = 4096;
constexpr size_t kHeaderOff = 0;
constexpr size_t kWatermarkOff = 512;
constexpr size_t kForwardControlOff = 1024;
constexpr size_t kBackwardControlOff = 2048;
constexpr size_t kForwardDataOff = kPage;

}  // namespace

// ---------------------------------------------------------------------------------------------
// SpscRing

size_t SpscRing::free_bytes() {
  uint64_t head = control_->head.load(std::memory_order_acquire);
  if (head > write_pos_ || write_pos_ - head > capacity_) {
    corrupt_ = true;
    return 0;
  }
  head_cache_ = head;
  return capacity_ - (write_pos_ - head);
}

bool SpscRing::try_write(uint16_t type, uint64_t session, uint64_t seq,
                         std::initializer_list<std::string_view> parts) {
  if (corrupt_) return false;
  size_t length = 0;
  for (std::string_view p : parts) length += p.size();
  if (length > max_payload()) return false;
  size_t need = round_up(sizeof(RecordHeader) + length);
  size_t offset = write_pos_ & (capacity_ - 1);
  size_t to_end = capacity_ - offset;
  // A record never wraps: a pad covers the rest of the array first.
  size_t total = need <= to_end ? need : to_end + need;
  if (capacity_ - (write_pos_ - head_cache_) < total && free_bytes() < total) return false;
  if (need > to_end) {
    RecordHeader pad;
    pad.type = kPadRecord;
    pad.length = static_cast<uint32_t>(to_end - sizeof(RecordHeader));
    // Offsets are 8-aligned; when only 8 or 16 bytes remain no header fits and the consumer
    // skips the short tail by itself (see peek()).
    if (to_end >= sizeof(RecordHeader)) memcpy(data_ + offset, &pad, sizeof pad);
    write_pos_ += to_end;
    offset = 0;
  }
  RecordHeader h;
  h.length = static_cast<uint32_t>(length);
  h.type = type;
  h.session = session;
  h.seq = seq;
  char* dst = data_ + offset;
  memcpy(dst, &h, sizeof h);
  dst += sizeof h;
  for (std::string_view p : parts) {
    if (!p.empty()) memcpy(dst, p.data(), p.size());
    dst += p.size();
  }
  write_pos_ += need;
  return true;
}

bool SpscRing::publish() {
  if (write_pos_ == published_) return false;
  published_ = write_pos_;
  control_->tail.store(published_, std::memory_order_seq_cst);
  if (control_->consumer_parked.load(std::memory_order_seq_cst) == 0) return false;
  return control_->consumer_parked.exchange(0, std::memory_order_seq_cst) != 0;
}

bool SpscRing::peek(RecordView* out) {
  while (!corrupt_) {
    if (read_pos_ == tail_cache_) {
      uint64_t tail = control_->tail.load(std::memory_order_acquire);
      if (tail < read_pos_ || tail - read_pos_ > capacity_) {
        corrupt_ = true;
        return false;
      }
      tail_cache_ = tail;
      if (read_pos_ == tail_cache_) return false;
    }
    size_t offset = read_pos_ & (capacity_ - 1);
    size_t to_end = capacity_ - offset;
    if (to_end < sizeof(RecordHeader)) {
      // Too short for any header: the producer skipped it.
      read_pos_ += to_end;
      continue;
    }
    if (tail_cache_ - read_pos_ < sizeof(RecordHeader)) {
      corrupt_ = true;
      return false;
    }
    RecordHeader h;
    memcpy(&h, data_ + offset, sizeof h);
    if (h.type == kPadRecord) {
      if (h.length != to_end - sizeof(RecordHeader) || tail_cache_ - read_pos_ < to_end) {
        corrupt_ = true;
        return false;
      }
      read_pos_ += to_end;
      continue;
    }
    size_t need = round_up(sizeof(RecordHeader) + size_t{h.length});
    if (h.length > max_payload() || need > to_end || need > tail_cache_ - read_pos_) {
      corrupt_ = true;
      return false;
    }
    out->header = h;
    out->payload = std::string_view(data_ + offset + sizeof h, h.length);
    peeked_end_ = read_pos_ + need;
    return true;
  }
  return false;
}

void SpscRing::advance() {
  if (peeked_end_ > read_pos_) read_pos_ = peeked_end_;
}

void SpscRing::release() {
  if (control_->head.load(std::memory_order_relaxed) != read_pos_) {
    control_->head.store(read_pos_, std::memory_order_release);
  }
}

bool SpscRing::park() {
  control_->consumer_parked.store(1, std::memory_order_seq_cst);
  if (control_->tail.load(std::memory_order_seq_cst) != read_pos_) {
    unpark();
    return false;
  }
  return true;
}

void SpscRing::unpark() { control_->consumer_parked.store(0, std::memory_order_relaxed); }

void SpscRing::resume() {
  write_pos_ = published_ = control_->tail.load(std::memory_order_acquire);
  read_pos_ = tail_cache_ = peeked_end_ = head_cache_ =
      control_->head.load(std::memory_order_acquire);
  if (read_pos_ > write_pos_ || write_pos_ - read_pos_ > capacity_) corrupt_ = true;
  tail_cache_ = read_pos_;
}

bool SpscRing::empty() const { return control_->tail.load(std::memory_order_acquire) == read_pos_; }

// ---------------------------------------------------------------------------------------------
// RingRegion

size_t RingRegion::region_bytes(size_t forward_capacity, size_t backward_capacity) {
  return kForwardDataOff + forward_capacity + backward_capacity;
}

RingRegion::~RingRegion() { reset(); }

RingRegion::RingRegion(RingRegion&& o) noexcept { *this = std::move(o); }

RingRegion& RingRegion::operator=(RingRegion&& o) noexcept {
  if (this == &o) return *this;
  reset();
  fd_ = std::exchange(o.fd_, -1);
  base_ = std::exchange(o.base_, nullptr);
  bytes_ = std::exchange(o.bytes_, 0);
  watermark_ = std::exchange(o.watermark_, nullptr);
  forward_ = o.forward_;
  backward_ = o.backward_;
  o.forward_ = SpscRing();
  o.backward_ = SpscRing();
  return *this;
}

void RingRegion::reset() {
  if (base_ != nullptr) munmap(base_, bytes_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  base_ = nullptr;
  bytes_ = 0;
  watermark_ = nullptr;
  forward_ = SpscRing();
  backward_ = SpscRing();
}

namespace {

Result<void*> map_shared(int fd, size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return unavailable(std::string("mmap event ring: ") + strerror(errno));
  return p;
}

}  // namespace

Result<RingRegion> RingRegion::create(size_t forward_capacity, size_t backward_capacity) {
  if (!power_of_two(forward_capacity) || !power_of_two(backward_capacity)) {
    return invalid_argument("event ring capacities must be powers of two >= 4096");
  }
  RingRegion r;
  r.fd_ = memfd_create("pgwarden-event-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (r.fd_ < 0) return unavailable(std::string("memfd_create: ") + strerror(errno));
  r.bytes_ = region_bytes(forward_capacity, backward_capacity);
  if (ftruncate(r.fd_, static_cast<off_t>(r.bytes_)) != 0) {
    return unavailable(std::string("ftruncate event ring: ") + strerror(errno));
  }
  if (fcntl(r.fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return unavailable(std::string("seal event ring: ") + strerror(errno));
  }
  auto p = map_shared(r.fd_, r.bytes_);
  if (!p.is_ok()) return p.status();
  r.base_ = *p;
  char* base = static_cast<char*>(r.base_);
  auto* h = new (base + kHeaderOff) RegionHeader;
  h->magic = kMagic;
  h->version = kVersion;
  h->forward_capacity = forward_capacity;
  h->backward_capacity = backward_capacity;
  r.watermark_ = new (base + kWatermarkOff) WatermarkBlock;
  auto* fc = new (base + kForwardControlOff) RingControl;
  auto* bc = new (base + kBackwardControlOff) RingControl;
  r.forward_ = SpscRing(fc, base + kForwardDataOff, forward_capacity);
  r.backward_ = SpscRing(bc, base + kForwardDataOff + forward_capacity, backward_capacity);
  return r;
}

Result<RingRegion> RingRegion::attach(int fd) {
  RingRegion r;
  r.fd_ = fd;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    return invalid_argument("event ring: the memfd is not sealed against resizing");
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(kForwardDataOff)) {
    return invalid_argument("event ring: memfd too small");
  }
  RegionHeader h;
  if (pread(fd, &h, sizeof h, kHeaderOff) != static_cast<ssize_t>(sizeof h)) {
    return invalid_argument("event ring: header unreadable");
  }
  if (h.magic != kMagic || h.version != kVersion || !power_of_two(h.forward_capacity) ||
      !power_of_two(h.backward_capacity) || h.forward_capacity > (1ull << 30) ||
      h.backward_capacity > (1ull << 30) ||
      static_cast<uint64_t>(st.st_size) != region_bytes(h.forward_capacity, h.backward_capacity)) {
    return invalid_argument("event ring: bad header or size");
  }
  r.bytes_ = static_cast<size_t>(st.st_size);
  auto p = map_shared(fd, r.bytes_);
  if (!p.is_ok()) return p.status();
  r.base_ = *p;
  char* base = static_cast<char*>(r.base_);
  r.watermark_ = reinterpret_cast<WatermarkBlock*>(base + kWatermarkOff);
  auto* fc = reinterpret_cast<RingControl*>(base + kForwardControlOff);
  auto* bc = reinterpret_cast<RingControl*>(base + kBackwardControlOff);
  r.forward_ = SpscRing(fc, base + kForwardDataOff, h.forward_capacity);
  r.backward_ = SpscRing(bc, base + kForwardDataOff + h.forward_capacity, h.backward_capacity);
  r.forward_.resume();
  r.backward_.resume();
  return r;
}

}  // namespace pgwarden::protocol
