// build_reset: the TCP RST segments that end a denied flow on both sides.
//
// Writes a complete Ethernet frame (L2 header and any VLAN tag copied from the trigger,
// IPv4 or IPv6, TCP RST|ACK with no options, both checksums computed) into caller memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {

// Largest frame build_reset writes: Ethernet + VLAN + IPv6 + TCP.
inline constexpr size_t kMaxResetFrame = 18 + 40 + 20;

// `trigger` is a client→server TCP frame parsed into `p`.
//  toward_client == false: to the server, as if from the client: seq = trigger.seq (the first
//    byte the server has not received, since that segment is dropped), ack = trigger.ack.
//  toward_client == true: to the client, as if from the server: addresses and MACs swapped,
//    seq = trigger.ack (what the client expects next from the server).
// Returns the frame length, or 0 when `out` is smaller than the frame or p is not TCP.
size_t build_reset(std::span<const uint8_t> trigger, const ParsedPacket& p, bool toward_client,
                   std::span<uint8_t> out);

// RFC 1071 checksum helpers (exposed for tests).
uint32_t checksum_add(uint32_t sum, const uint8_t* data, size_t len);
uint16_t checksum_fold(uint32_t sum);

}  // namespace pgwarden::packet
