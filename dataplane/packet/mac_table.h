// MacTable: on which side of the bump in the wire (agent or database port) each unicast MAC
// address was seen, so that frames the host stack sends through the exception port (the
// session engine's replies to agents, its upstream connections to databases, ARP replies) go
// out of the one port behind which their destination lives, never flooded to both sides.
//
// Learning is sticky: an entry seen within kMacHoldSeconds is not moved to the other side nor
// evicted by another address hashing to its slot (learn() returns false), so a station on one
// side cannot take over a live address of the other side by sending frames with its MAC. A
// destination that is not known is not sent anywhere (the caller drops and counts it); the
// host stack's ARP/ND, which always crosses the packet layer, teaches the table before the host
// sends unicast frames.
//
// Thread-safety: one table shared by every lcore without locks; each slot is one 64-bit atomic
// (MAC, side, 14-bit seconds timestamp), so readers never see a torn entry. Timestamps wrap
// after 16384 s: an address silent for exactly a multiple of that looks fresh again (it only
// delays a side change).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace pgwarden::packet {

enum class MacSide : uint8_t { kUnknown = 0, kAgent = 1, kDatabase = 2 };

inline constexpr uint32_t kMacHoldSeconds = 300;

class MacTable {
 public:
  // REQUIRES: slots is a power of two >= 16.
  explicit MacTable(size_t slots = 4096);

  // `mac` (6 bytes) sent a frame received on `side` at `now_s` (any monotonic seconds).
  // Group addresses are ignored (returns true). Returns false when the address was refused:
  // fresh on the other side, or its slot is held by another fresh address.
  bool learn(std::span<const uint8_t, 6> mac, MacSide side, uint32_t now_s);

  // The side `mac` was last seen on, kUnknown if never (or evicted after going stale).
  MacSide lookup(std::span<const uint8_t, 6> mac) const;

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> slots_;
  size_t mask_;
};

}  // namespace pgwarden::packet
