#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {
namespace {

constexpr size_t kEthHeaderLen = 14;
constexpr size_t kVlanTagLen = 4;
constexpr size_t kIpv4MinHeaderLen = 20;
constexpr size_t kIpv6HeaderLen = 40;
constexpr size_t kTcpMinHeaderLen = 20;
constexpr size_t kMaxIpv6ExtensionHeaders = 8;  // a longer chain is treated as malformed

// IPv6 extension headers we walk over (RFC 8200 section 4).
constexpr uint8_t kIpv6HopByHop = 0;
constexpr uint8_t kIpv6Routing = 43;
constexpr uint8_t kIpv6Fragment = 44;
constexpr uint8_t kIpv6DestOptions = 60;

ParseStatus parse_tcp(std::span<const uint8_t> f, size_t l4, size_t l4_end, ParsedPacket* out) {
  if (l4 + kTcpMinHeaderLen > l4_end) return ParseStatus::kTruncated;
  const uint8_t* t = f.data() + l4;
  size_t data_offset = static_cast<size_t>(t[12] >> 4) * 4;
  if (data_offset < kTcpMinHeaderLen) return ParseStatus::kMalformed;
  if (l4 + data_offset > l4_end) return ParseStatus::kTruncated;
  out->src_port = load_be16(t);
  out->dst_port = load_be16(t + 2);
  out->seq = TcpSeq(load_be32(t + 4));
  out->ack = TcpSeq(load_be32(t + 8));
  out->tcp_flags = t[13];
  out->window = load_be16(t + 14);
  out->payload_offset = static_cast<uint16_t>(l4 + data_offset);
  out->payload_len = static_cast<uint16_t>(l4_end - (l4 + data_offset));
  return ParseStatus::kOk;
}

ParseStatus parse_ipv4(std::span<const uint8_t> f, size_t l3, ParsedPacket* out) {
  if (l3 + kIpv4MinHeaderLen > f.size()) return ParseStatus::kTruncated;
  const uint8_t* h = f.data() + l3;
  if ((h[0] >> 4) != 4) return ParseStatus::kMalformed;
  size_t ihl = static_cast<size_t>(h[0] & 0x0f) * 4;
  size_t total = load_be16(h + 2);
  if (ihl < kIpv4MinHeaderLen || total < ihl) return ParseStatus::kMalformed;
  if (l3 + total > f.size()) return ParseStatus::kTruncated;
  uint16_t frag = load_be16(h + 6);
  out->fragment = (frag & 0x3fff) != 0;  // MF bit or a non-zero offset
  out->ip_proto = h[9];
  out->src = Address::v4(load_be32(h + 12));
  out->dst = Address::v4(load_be32(h + 16));
  out->l4_offset = static_cast<uint16_t>(l3 + ihl);
  if (out->ip_proto != kIpProtoTcp || out->fragment) return ParseStatus::kOk;
  return parse_tcp(f, l3 + ihl, l3 + total, out);
}

ParseStatus parse_ipv6(std::span<const uint8_t> f, size_t l3, ParsedPacket* out) {
  if (l3 + kIpv6HeaderLen > f.size()) return ParseStatus::kTruncated;
  const uint8_t* h = f.data() + l3;
  if ((h[0] >> 4) != 6) return ParseStatus::kMalformed;
  size_t end = l3 + kIpv6HeaderLen + load_be16(h + 4);
  if (end > f.size()) return ParseStatus::kTruncated;
  out->src = Address::v6(h + 8);
  out->dst = Address::v6(h + 24);
  uint8_t next = h[6];
  size_t off = l3 + kIpv6HeaderLen;
  for (size_t i = 0;; ++i) {
    if (next != kIpv6HopByHop && next != kIpv6Routing && next != kIpv6Fragment &&
        next != kIpv6DestOptions) {
      break;
    }
    if (i == kMaxIpv6ExtensionHeaders) return ParseStatus::kMalformed;
    if (off + 8 > end) return ParseStatus::kTruncated;
    const uint8_t* e = f.data() + off;
    if (next == kIpv6Fragment) {
      out->fragment = true;
      off += 8;
    } else {
      off += (static_cast<size_t>(e[1]) + 1) * 8;
    }
    next = e[0];
    if (off > end) return ParseStatus::kTruncated;
  }
  out->ip_proto = next;
  out->l4_offset = static_cast<uint16_t>(off);
  if (next != kIpProtoTcp || out->fragment) return ParseStatus::kOk;
  return parse_tcp(f, off, end, out);
}

}  // namespace

ParseStatus parse_frame(std::span<const uint8_t> f, ParsedPacket* out) {
  *out = ParsedPacket{};
  if (f.size() < kEthHeaderLen) return ParseStatus::kTruncated;
  // Frames this large cannot be described by 16-bit offsets; jumbo frames are not supported.
  if (f.size() > 0xffff) return ParseStatus::kMalformed;
  out->l2_multicast = (f[0] & 0x01) != 0;
  size_t off = 12;
  uint16_t type = load_be16(f.data() + off);
  off += 2;
  if (type == kEtherTypeVlan) {
    if (f.size() < kEthHeaderLen + kVlanTagLen) return ParseStatus::kTruncated;
    type = load_be16(f.data() + off + 2);
    off += kVlanTagLen;
  }
  out->ether_type = type;
  out->l3_offset = static_cast<uint16_t>(off);
  switch (type) {
    case kEtherTypeArp:
      out->l3 = L3Kind::kArp;
      return ParseStatus::kOk;
    case kEtherTypeIpv4:
      out->l3 = L3Kind::kIpv4;
      return parse_ipv4(f, off, out);
    case kEtherTypeIpv6:
      out->l3 = L3Kind::kIpv6;
      return parse_ipv6(f, off, out);
    default:
      return ParseStatus::kOk;
  }
}

}  // namespace pgwarden::packet
