// Software steering hash: which worker owns a TCP flow when the ports cannot spread flows.
//
// The hash is symmetric (both directions of a flow give the same value) and is defined on the
// XOR of the two addresses and the XOR of the two ports, so it can be computed either from a
// canonical FlowKey (the owner's view) or straight from a frame's fixed header offsets
// (frame_steer_hash: the receiving worker's view, which reads the Ethernet, IP and TCP port
// fields — the first cache line of an IPv4 frame — and nothing else). Both give the same
// value for the same flow. Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dataplane/packet/flow_key.h"

namespace pgwarden::packet {

uint32_t flow_steer_hash(const FlowKey& key);

// The steering hash of a plain TCP segment (Ethernet, at most one 802.1Q tag, IPv4 without
// fragmentation or IPv6 without extension headers). Returns false for anything else — non-TCP,
// fragments, IPv6 extension headers, frames too short for the headers it reads — which the
// caller parses fully and steers by its FlowKey (flow_steer_hash) if it is TCP after all.
// Does not validate the frame (lengths, checksums): the owner's full parse does.
bool frame_steer_hash(const uint8_t* frame, size_t len, uint32_t* hash);

// The worker (0..workers-1) that owns flows with steering hash `hash`.
inline unsigned steer_worker(uint32_t hash, unsigned workers) {
  return static_cast<unsigned>((static_cast<uint64_t>(hash) * workers) >> 32);
}

}  // namespace pgwarden::packet
