// Address, FlowKey: IPv4/IPv6 endpoints and the direction-independent key of a TCP flow.
//
// FlowKey is canonical: the endpoint that compares lower is stored as `a`, so both directions
// of a flow produce byte-identical keys (fixed layout, zeroed padding) suitable for hashing
// with rte_hash or any byte hash. Plain value types; thread-compatible.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>

namespace pgwarden::packet {

struct Address {
  uint8_t family = 0;               // 4 or 6; 0 = unset
  std::array<uint8_t, 16> bytes{};  // IPv4 in the first 4 bytes, rest zero

  static Address v4(uint32_t host_order);
  static Address v6(const uint8_t bytes[16]);
  bool operator==(const Address&) const = default;
  auto operator<=>(const Address&) const = default;
  std::string to_string() const;
};

// A CIDR prefix: `addr/prefix_len`.
struct Prefix {
  Address addr;
  uint8_t prefix_len = 0;

  bool contains(const Address& a) const;
};

// Parses "198.18.0.10", "2001:db8::1", optionally with "/len". Returns false on bad text.
bool parse_prefix(const std::string& text, Prefix* out);

struct FlowKey {
  std::array<uint8_t, 16> addr_a{};
  std::array<uint8_t, 16> addr_b{};
  uint16_t port_a = 0;
  uint16_t port_b = 0;
  uint8_t family = 0;
  uint8_t proto = 0;
  uint8_t pad[2] = {0, 0};

  bool operator==(const FlowKey&) const = default;
};
static_assert(sizeof(FlowKey) == 40, "FlowKey is hashed as raw bytes");

// Builds the canonical key; *src_is_a tells whether (src, src_port) became endpoint a.
FlowKey make_flow_key(const Address& src, uint16_t src_port, const Address& dst, uint16_t dst_port,
                      uint8_t proto, bool* src_is_a);

}  // namespace pgwarden::packet
