// build_tcp_frame: writes a well-formed Ethernet/IPv4-or-IPv6/TCP frame (checksums included).
//
// Used by tests, the fuzz target and the benchmark's traffic generator to produce the frames
// a real peer would send. Not used on the packet path.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "dataplane/packet/flow_key.h"
#include "dataplane/packet/tcp_seq.h"

namespace pgwarden::packet {

struct TcpFrameSpec {
  std::array<uint8_t, 6> src_mac{0x02, 0, 0, 0, 0, 0x01};
  std::array<uint8_t, 6> dst_mac{0x02, 0, 0, 0, 0, 0x02};
  int vlan = -1;  // 0..4095 adds an 802.1Q tag
  Address src;
  Address dst;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  TcpSeq seq;
  TcpSeq ack;
  uint8_t flags = 0;
  uint16_t window = 65535;
  std::span<const uint8_t> payload;
};

std::vector<uint8_t> build_tcp_frame(const TcpFrameSpec& spec);

// Writes the frame into `out`; returns its length or 0 if `out` is too small.
size_t build_tcp_frame_into(const TcpFrameSpec& spec, std::span<uint8_t> out);

}  // namespace pgwarden::packet
