// AuditEvent: a deny enforced on the wire, as the control plane's audit log records it.
//
// The packet layer queues one per reset flow (per-lcore ring, packet_layer.h); the main
// thread drains them and hands them to an AuditForwarder (audit_forwarder.h), which sends
// to_json() as a dp -> cp `event` frame (docs/protocol.md) or appends it to the JSONL file.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "dataplane/packet/flow_key.h"

namespace pgwarden::packet {

struct AuditEvent {
  uint64_t unix_ms = 0;
  unsigned lcore_id = 0;
  Address client;
  uint16_t client_port = 0;
  Address server;
  uint16_t server_port = 0;
  std::string reason;  // "deny:<rule>", "approve_required:<rule>", "frame_error:<name>", ...

  // {"type":"event","kind":"wire_deny","session_id":"wire:<client>","verdict":"deny",
  //  "rule":<rule id or "">,"message":<reason>,"reason","client","server","lcore","unix_ms"}
  nlohmann::json to_json() const;
};

}  // namespace pgwarden::packet
