// TcpFlow: the inline decision for one TCP flow through the packet layer.
//
// The client is the endpoint that sent the first SYN. Client→server segments go through the
// TcpReassembler and the flow's StreamConsumer; server→client segments are forwarded and
// their ACKs release reassembly memory. The result of each packet is a FlowAction the lcore
// applies to the mbuf; TcpFlow never touches packets. Thread-compatible (one lcore).
#pragma once

#include <memory>
#include <span>
#include <string>

#include "dataplane/packet/packet_parser.h"
#include "dataplane/packet/stream_sink.h"
#include "dataplane/packet/tcp_reassembler.h"

namespace pgwarden::packet {

enum class FlowAction : uint8_t {
  kForward,
  kDrop,
  // Drop this segment and reset both ends (deny verdict or overlap conflict).
  kDropAndReset,
};

class TcpFlow {
 public:
  // `client_syn` is the client's opening SYN. REQUIRES: consumer non-null; config, memory
  // and counters outlive the flow.
  TcpFlow(const ParsedPacket& client_syn, std::unique_ptr<StreamConsumer> consumer,
          const ReassemblyConfig* config, ReassemblyMemory* memory, PacketCounters* counters);

  // Once the flow finished, its reassembly ring and the consumer's buffers are returned at
  // once (the entry itself lingers in the flow table for late retransmissions).
  FlowAction on_client_packet(const ParsedPacket& p, std::span<const uint8_t> payload);
  FlowAction on_server_packet(const ParsedPacket& p);

  bool denied() const { return denied_; }
  // The flow is over (reset, denied, or both FINs): it may be removed soon.
  bool finished() const { return reset_ || denied_ || (server_fin_ && reasm_.fin_delivered()); }
  // Why the flow was denied: the consumer's reason or "overlap_conflict".
  const std::string& deny_reason() const { return deny_reason_; }
  const TcpReassembler& reassembler() const { return reasm_; }

 private:
  PacketCounters* counters_;
  TcpReassembler reasm_;
  std::unique_ptr<StreamConsumer> consumer_;
  FlowAction client_packet(const ParsedPacket& p, std::span<const uint8_t> payload);
  FlowAction server_packet(const ParsedPacket& p);
  void release_if_finished();

  TcpSeq isn_;
  bool released_ = false;
  bool denied_ = false;
  bool reset_ = false;
  bool server_fin_ = false;
  std::string deny_reason_;
};

}  // namespace pgwarden::packet
