#include "dataplane/packet/frame_builder.h"

#include <cstring>

#include "dataplane/packet/packet_parser.h"
#include "dataplane/packet/tcp_reset.h"

namespace pgwarden::packet {

size_t build_tcp_frame_into(const TcpFrameSpec& s, std::span<uint8_t> out) {
  bool v4 = s.src.family == 4;
  size_t l2 = s.vlan >= 0 ? 18 : 14;
  size_t ip_len = v4 ? 20 : 40;
  size_t total = l2 + ip_len + 20 + s.payload.size();
  if (out.size() < total) return 0;
  uint8_t* f = out.data();
  std::memset(f, 0, total);
  std::memcpy(f, s.dst_mac.data(), 6);
  std::memcpy(f + 6, s.src_mac.data(), 6);
  uint16_t ether_type = v4 ? kEtherTypeIpv4 : kEtherTypeIpv6;
  if (s.vlan >= 0) {
    store_be16(f + 12, kEtherTypeVlan);
    store_be16(f + 14, static_cast<uint16_t>(s.vlan));
    store_be16(f + 16, ether_type);
  } else {
    store_be16(f + 12, ether_type);
  }
  uint8_t* ip = f + l2;
  size_t addr_len = v4 ? 4 : 16;
  uint16_t tcp_len = static_cast<uint16_t>(20 + s.payload.size());
  if (v4) {
    ip[0] = 0x45;
    store_be16(ip + 2, static_cast<uint16_t>(20 + tcp_len));
    ip[8] = 64;
    ip[9] = kIpProtoTcp;
    std::memcpy(ip + 12, s.src.bytes.data(), 4);
    std::memcpy(ip + 16, s.dst.bytes.data(), 4);
    store_be16(ip + 10, checksum_fold(checksum_add(0, ip, 20)));
  } else {
    ip[0] = 0x60;
    store_be16(ip + 4, tcp_len);
    ip[6] = kIpProtoTcp;
    ip[7] = 64;
    std::memcpy(ip + 8, s.src.bytes.data(), 16);
    std::memcpy(ip + 24, s.dst.bytes.data(), 16);
  }
  uint8_t* t = ip + ip_len;
  store_be16(t, s.src_port);
  store_be16(t + 2, s.dst_port);
  store_be32(t + 4, s.seq.raw());
  store_be32(t + 8, s.ack.raw());
  t[12] = 5 << 4;
  t[13] = s.flags;
  store_be16(t + 14, s.window);
  if (!s.payload.empty()) std::memcpy(t + 20, s.payload.data(), s.payload.size());
  uint32_t sum = checksum_add(0, s.src.bytes.data(), addr_len);
  sum = checksum_add(sum, s.dst.bytes.data(), addr_len);
  sum += kIpProtoTcp + tcp_len;
  sum = checksum_add(sum, t, tcp_len);
  store_be16(t + 16, checksum_fold(sum));
  return total;
}

std::vector<uint8_t> build_tcp_frame(const TcpFrameSpec& spec) {
  std::vector<uint8_t> f(18 + 40 + 20 + spec.payload.size());
  f.resize(build_tcp_frame_into(spec, f));
  return f;
}

}  // namespace pgwarden::packet
