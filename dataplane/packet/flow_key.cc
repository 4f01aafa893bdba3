#include "dataplane/packet/flow_key.h"

#include <arpa/inet.h>

#include <cstring>

namespace pgwarden::packet {

Address Address::v4(uint32_t host_order) {
  Address a;
  a.family = 4;
  a.bytes[0] = static_cast<uint8_t>(host_order >> 24);
  a.bytes[1] = static_cast<uint8_t>(host_order >> 16);
  a.bytes[2] = static_cast<uint8_t>(host_order >> 8);
  a.bytes[3] = static_cast<uint8_t>(host_order);
  return a;
}

Address Address::v6(const uint8_t bytes[16]) {
  Address a;
  a.family = 6;
  std::memcpy(a.bytes.data(), bytes, 16);
  return a;
}

std::string Address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == 4) {
    inet_ntop(AF_INET, bytes.data(), buf, sizeof(buf));
  } else if (family == 6) {
    inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
  } else {
    return "unset";
  }
  return buf;
}

bool Prefix::contains(const Address& a) const {
  if (a.family != addr.family) return false;
  unsigned bits = prefix_len;
  for (size_t i = 0; i < 16 && bits > 0; ++i) {
    uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
    if ((a.bytes[i] & mask) != (addr.bytes[i] & mask)) return false;
    bits = bits >= 8 ? bits - 8 : 0;
  }
  return true;
}

bool parse_prefix(const std::string& text, Prefix* out) {
  std::string host = text;
  int len = -1;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    host = text.substr(0, slash);
    std::string digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return false;
    len = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return false;
      len = len * 10 + (c - '0');
    }
  }
  Prefix p;
  if (inet_pton(AF_INET, host.c_str(), p.addr.bytes.data()) == 1) {
    p.addr.family = 4;
    if (len > 32) return false;
    p.prefix_len = static_cast<uint8_t>(len < 0 ? 32 : len);
  } else if (inet_pton(AF_INET6, host.c_str(), p.addr.bytes.data()) == 1) {
    p.addr.family = 6;
    if (len > 128) return false;
    p.prefix_len = static_cast<uint8_t>(len < 0 ? 128 : len);
  } else {
    return false;
  }
  *out = p;
  return true;
}

FlowKey make_flow_key(const Address& src, uint16_t src_port, const Address& dst, uint16_t dst_port,
                      uint8_t proto, bool* src_is_a) {
  FlowKey k;
  bool src_first = src.bytes < dst.bytes || (src.bytes == dst.bytes && src_port <= dst_port);
  const Address& a = src_first ? src : dst;
  const Address& b = src_first ? dst : src;
  k.addr_a = a.bytes;
  k.addr_b = b.bytes;
  k.port_a = src_first ? src_port : dst_port;
  k.port_b = src_first ? dst_port : src_port;
  k.family = src.family;
  k.proto = proto;
  *src_is_a = src_first;
  return k;
}

}  // namespace pgwarden::packet
