// The boundary between TCP reassembly and whatever consumes a client→server byte stream.
//
// The packet layer opens one StreamConsumer per TCP flow and hands it the client's bytes in
// order, in arbitrary splits (one segment, part of one, or bytes from several). The consumer
// answers with a Verdict; the first non-allow verdict ends delivery for that flow and the
// packet layer enforces it on the wire (drop + reset both ends).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "dataplane/packet/flow_key.h"

namespace pgwarden::packet {

enum class Verdict : uint8_t {
  kAllow,
  kDeny,
  // A statement that needs a human approval. The wire cannot hold a statement while waiting,
  // so the packet layer treats it as deny (fail closed) and counts it as such.
  kApprove,
};

std::string_view verdict_name(Verdict v);

// Consumes one flow's client→server stream. Owned by the flow; used by one lcore only.
class StreamConsumer {
 public:
  virtual ~StreamConsumer() = default;
  // The next in-order bytes of the stream; `bytes` is only valid during the call.
  // Must not be called again after it returned anything but kAllow.
  virtual Verdict on_client_bytes(std::span<const uint8_t> bytes) = 0;
  // Rule id or reason of the last non-allow verdict (for counters and the audit event).
  virtual std::string_view reason() const = 0;
  // The flow is over (both FINs, a reset or a deny): no byte will be delivered again. Return
  // any memory held for the stream now; reason() must still answer.
  virtual void on_stream_end() {}
};

// Creates consumers. One sink per lcore: implementations need not be thread-safe.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Returns the consumer for a new flow whose client is `client`, or nullptr to refuse the
  // flow (the packet layer then drops it: fail closed).
  virtual std::unique_ptr<StreamConsumer> open_stream(const FlowKey& key) = 0;
};

}  // namespace pgwarden::packet
