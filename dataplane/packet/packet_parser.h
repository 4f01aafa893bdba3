// Header parsing over raw frame bytes: Ethernet (one optional 802.1Q tag), ARP, IPv4, IPv6
// (with extension headers), TCP.
//
// Every field is read with explicit big-endian loads after its bounds are checked; nothing
// casts packed structs over the frame. The result holds offsets into the frame, not
// pointers, so it stays valid when the caller copies the frame. Thread-compatible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/packet/flow_key.h"
#include "dataplane/packet/tcp_seq.h"

namespace pgwarden::packet {

inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t load_be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86DD;
inline constexpr uint8_t kIpProtoTcp = 6;
inline constexpr uint8_t kIpProtoIcmpv6 = 58;

// TCP flag bits (RFC 9293 section 3.1).
inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

enum class L3Kind : uint8_t { kOther, kArp, kIpv4, kIpv6 };

enum class ParseStatus : uint8_t {
  kOk,
  kTruncated,  // a header or a length field points past the end of the frame
  kMalformed,  // a field holds an impossible value
};

struct ParsedPacket {
  L3Kind l3 = L3Kind::kOther;
  bool l2_multicast = false;  // destination MAC has the group bit (broadcast too)
  bool fragment = false;      // IPv4 MF/offset or an IPv6 fragment header
  uint8_t ip_proto = 0;       // upper-layer protocol after IPv6 extension headers
  uint16_t ether_type = 0;    // after the VLAN tag, if any
  uint16_t l3_offset = 0;
  uint16_t l4_offset = 0;
  uint16_t payload_offset = 0;  // TCP payload start
  uint16_t payload_len = 0;     // TCP payload length (excludes Ethernet padding)
  Address src;
  Address dst;
  // TCP only.
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  TcpSeq seq;
  TcpSeq ack;
  uint8_t tcp_flags = 0;
  uint16_t window = 0;

  bool is_tcp() const {
    return (l3 == L3Kind::kIpv4 || l3 == L3Kind::kIpv6) && ip_proto == kIpProtoTcp && !fragment;
  }
};

// Parses `frame` into *out. On kOk every offset in *out is within the frame; on error *out
// holds what was parsed so far and must not be used for forwarding decisions about TCP.
ParseStatus parse_frame(std::span<const uint8_t> frame, ParsedPacket* out);

}  // namespace pgwarden::packet
