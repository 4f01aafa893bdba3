#include "dataplane/packet/tcp_reset.h"

#include <cstring>

namespace pgwarden::packet {
namespace {

constexpr size_t kIpv4HeaderLen = 20;
constexpr size_t kIpv6HeaderLen = 40;
constexpr size_t kTcpHeaderLen = 20;
constexpr uint8_t kTtl = 64;

}  // namespace

uint32_t checksum_add(uint32_t sum, const uint8_t* data, size_t len) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += load_be16(data + i);
  if (len & 1) sum += static_cast<uint32_t>(data[len - 1]) << 8;
  return sum;
}

uint16_t checksum_fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum & 0xffff);
}

size_t build_reset(std::span<const uint8_t> trigger, const ParsedPacket& p, bool toward_client,
                   std::span<uint8_t> out) {
  if (!p.is_tcp()) return 0;
  size_t l2 = p.l3_offset;
  bool v4 = p.l3 == L3Kind::kIpv4;
  size_t ip_len = v4 ? kIpv4HeaderLen : kIpv6HeaderLen;
  size_t total = l2 + ip_len + kTcpHeaderLen;
  if (out.size() < total || trigger.size() < l2) return 0;
  uint8_t* f = out.data();
  std::memcpy(f, trigger.data(), l2);
  if (toward_client) {  // swap destination and source MAC
    std::memcpy(f, trigger.data() + 6, 6);
    std::memcpy(f + 6, trigger.data(), 6);
  }
  const Address& src = toward_client ? p.dst : p.src;
  const Address& dst = toward_client ? p.src : p.dst;
  uint8_t* ip = f + l2;
  std::memset(ip, 0, ip_len + kTcpHeaderLen);
  size_t addr_len = v4 ? 4 : 16;
  if (v4) {
    ip[0] = 0x45;
    store_be16(ip + 2, static_cast<uint16_t>(ip_len + kTcpHeaderLen));
    store_be16(ip + 6, 0x4000);  // DF
    ip[8] = kTtl;
    ip[9] = kIpProtoTcp;
    std::memcpy(ip + 12, src.bytes.data(), 4);
    std::memcpy(ip + 16, dst.bytes.data(), 4);
    store_be16(ip + 10, checksum_fold(checksum_add(0, ip, kIpv4HeaderLen)));
  } else {
    ip[0] = 0x60;
    store_be16(ip + 4, kTcpHeaderLen);
    ip[6] = kIpProtoTcp;
    ip[7] = kTtl;
    std::memcpy(ip + 8, src.bytes.data(), 16);
    std::memcpy(ip + 24, dst.bytes.data(), 16);
  }
  uint8_t* t = ip + ip_len;
  uint32_t consumed = p.payload_len + ((p.tcp_flags & kTcpFin) ? 1 : 0);
  store_be16(t, toward_client ? p.dst_port : p.src_port);
  store_be16(t + 2, toward_client ? p.src_port : p.dst_port);
  store_be32(t + 4, toward_client ? p.ack.raw() : p.seq.raw());
  store_be32(t + 8, toward_client ? (p.seq + consumed).raw() : p.ack.raw());
  t[12] = (kTcpHeaderLen / 4) << 4;
  t[13] = kTcpRst | kTcpAck;
  // Pseudo-header: addresses, protocol, TCP length.
  uint32_t sum = checksum_add(0, src.bytes.data(), addr_len);
  sum = checksum_add(sum, dst.bytes.data(), addr_len);
  sum += kIpProtoTcp + kTcpHeaderLen;
  sum = checksum_add(sum, t, kTcpHeaderLen);
  store_be16(t + 16, checksum_fold(sum));
  return total;
}

}  // namespace pgwarden::packet
