#include "dataplane/packet/mac_table.h"

namespace pgwarden::packet {
namespace {

// Slot layout: bits 0-47 MAC, 48-49 side (0 = empty), 50-63 timestamp (seconds mod 2^14).
constexpr uint64_t kMacMask = (uint64_t{1} << 48) - 1;
constexpr unsigned kSideShift = 48;
constexpr unsigned kTimeShift = 50;
constexpr uint32_t kTimeMask = (1u << 14) - 1;

uint64_t mac_bits(std::span<const uint8_t, 6> mac) {
  uint64_t v = 0;
  for (uint8_t b : mac) v = (v << 8) | b;
  return v;
}

size_t slot_of(uint64_t mac, size_t mask) {
  uint64_t h = mac * 0x9e3779b97f4a7c15ull;
  return static_cast<size_t>(h >> 32) & mask;
}

MacSide side_of(uint64_t entry) { return static_cast<MacSide>((entry >> kSideShift) & 3); }

uint64_t make_entry(uint64_t mac, MacSide side, uint32_t now_s) {
  return mac | (uint64_t{static_cast<uint8_t>(side)} << kSideShift) |
         (uint64_t{now_s & kTimeMask} << kTimeShift);
}

bool fresh(uint64_t entry, uint32_t now_s) {
  uint32_t seen = static_cast<uint32_t>(entry >> kTimeShift) & kTimeMask;
  return ((now_s - seen) & kTimeMask) < kMacHoldSeconds;
}

}  // namespace

MacTable::MacTable(size_t slots)
    : slots_(std::make_unique<std::atomic<uint64_t>[]>(slots)), mask_(slots - 1) {
  for (size_t i = 0; i < slots; ++i) slots_[i].store(0, std::memory_order_relaxed);
}

bool MacTable::learn(std::span<const uint8_t, 6> mac, MacSide side, uint32_t now_s) {
  if ((mac[0] & 1) != 0 || side == MacSide::kUnknown) return true;
  uint64_t m = mac_bits(mac);
  std::atomic<uint64_t>& slot = slots_[slot_of(m, mask_)];
  uint64_t cur = slot.load(std::memory_order_relaxed);
  uint64_t want = make_entry(m, side, now_s);
  if (cur == want) return true;  // the common case: nothing to write, no shared line dirtied
  if (side_of(cur) != MacSide::kUnknown && fresh(cur, now_s) &&
      ((cur & kMacMask) != m || side_of(cur) != side)) {
    return false;
  }
  // Two lcores may race here; either value is a correct observation of the address.
  slot.store(want, std::memory_order_relaxed);
  return true;
}

MacSide MacTable::lookup(std::span<const uint8_t, 6> mac) const {
  uint64_t m = mac_bits(mac);
  uint64_t cur = slots_[slot_of(m, mask_)].load(std::memory_order_relaxed);
  return (cur & kMacMask) == m ? side_of(cur) : MacSide::kUnknown;
}

}  // namespace pgwarden::packet
