#include "dataplane/packet/flow_steer.h"

#include <cstring>

#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {
namespace {

constexpr size_t kEthHeaderLen = 14;
constexpr size_t kVlanTagLen = 4;
constexpr size_t kIpv6HeaderLen = 40;

uint32_t load_word(const uint8_t* p) {
  uint32_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// `addr_xor`: XOR of the two addresses folded to 32 bits (their raw bytes, so IPv4 is the XOR
// of the two addresses as they lie in the header); `port_xor`: XOR of the two ports.
uint32_t mix(uint32_t addr_xor, uint32_t port_xor) {
  uint64_t x = (static_cast<uint64_t>(addr_xor) << 32 | port_xor) * 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 32;
  return static_cast<uint32_t>(x);
}

}  // namespace

uint32_t flow_steer_hash(const FlowKey& key) {
  uint32_t addr_xor = 0;
  for (size_t i = 0; i < key.addr_a.size(); i += 4) {
    addr_xor ^= load_word(key.addr_a.data() + i) ^ load_word(key.addr_b.data() + i);
  }
  return mix(addr_xor, static_cast<uint32_t>(key.port_a ^ key.port_b));
}

bool frame_steer_hash(const uint8_t* f, size_t len, uint32_t* hash) {
  size_t l3 = kEthHeaderLen;
  if (len < l3) return false;
  uint16_t ether_type = load_be16(f + 12);
  if (ether_type == kEtherTypeVlan) {
    l3 += kVlanTagLen;
    if (len < l3) return false;
    ether_type = load_be16(f + 16);
  }
  const uint8_t* ip = f + l3;
  uint32_t addr_xor = 0;
  size_t l4 = 0;
  if (ether_type == kEtherTypeIpv4) {
    if (len < l3 + 20 || (ip[0] >> 4) != 4 || ip[9] != kIpProtoTcp) return false;
    if ((load_be16(ip + 6) & 0x3fff) != 0) return false;  // a fragment
    size_t ihl = static_cast<size_t>(ip[0] & 0x0f) * 4;
    if (ihl < 20) return false;
    l4 = l3 + ihl;
    addr_xor = load_word(ip + 12) ^ load_word(ip + 16);
  } else if (ether_type == kEtherTypeIpv6) {
    if (len < l3 + kIpv6HeaderLen || (ip[0] >> 4) != 6 || ip[6] != kIpProtoTcp) return false;
    l4 = l3 + kIpv6HeaderLen;
    for (size_t i = 0; i < 16; i += 4) addr_xor ^= load_word(ip + 8 + i) ^ load_word(ip + 24 + i);
  } else {
    return false;
  }
  if (len < l4 + 4) return false;
  *hash = mix(addr_xor, static_cast<uint32_t>(load_be16(f + l4) ^ load_be16(f + l4 + 2)));
  return true;
}

}  // namespace pgwarden::packet
