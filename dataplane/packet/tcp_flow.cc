#include "dataplane/packet/tcp_flow.h"

namespace pgwarden::packet {

TcpFlow::TcpFlow(const ParsedPacket& client_syn, std::unique_ptr<StreamConsumer> consumer,
                 const ReassemblyConfig* config, ReassemblyMemory* memory, PacketCounters* counters)
    : counters_(counters),
      reasm_(config, memory, counters),
      consumer_(std::move(consumer)),
      isn_(client_syn.seq) {
  reasm_.start(isn_);
}

FlowAction TcpFlow::on_client_packet(const ParsedPacket& p, std::span<const uint8_t> payload) {
  FlowAction a = client_packet(p, payload);
  release_if_finished();
  return a;
}

FlowAction TcpFlow::on_server_packet(const ParsedPacket& p) {
  FlowAction a = server_packet(p);
  release_if_finished();
  return a;
}

void TcpFlow::release_if_finished() {
  if (released_ || !finished()) return;
  released_ = true;
  consumer_->on_stream_end();
}

FlowAction TcpFlow::client_packet(const ParsedPacket& p, std::span<const uint8_t> payload) {
  if (denied_ || reset_) {
    counters_->tcp_dropped_closed_flow.inc();
    return FlowAction::kDrop;
  }
  if (p.tcp_flags & kTcpRst) {
    reset_ = true;
    reasm_.release();
    return FlowAction::kForward;
  }
  if (p.tcp_flags & kTcpSyn) {
    // A retransmitted SYN is fine; another ISN or data on a SYN is not (no TCP Fast Open).
    if (p.seq == isn_ && payload.empty()) return FlowAction::kForward;
    counters_->tcp_syn_mismatch.inc();
    return FlowAction::kDrop;
  }
  bool fin = (p.tcp_flags & kTcpFin) != 0;
  if (payload.empty() && !fin) return FlowAction::kForward;  // pure ACK / window update
  switch (reasm_.on_segment(p.seq, payload, fin, *consumer_)) {
    case SegmentOutcome::kForward:
      return FlowAction::kForward;
    case SegmentOutcome::kHold:
    case SegmentOutcome::kDropCap:
      return FlowAction::kDrop;
    case SegmentOutcome::kDeny:
      denied_ = true;
      deny_reason_ = std::string(consumer_->reason());
      reasm_.release();
      return FlowAction::kDropAndReset;
    case SegmentOutcome::kConflict:
      denied_ = true;
      deny_reason_ = "overlap_conflict";
      reasm_.release();
      return FlowAction::kDropAndReset;
    case SegmentOutcome::kClosed:
      counters_->tcp_dropped_closed_flow.inc();
      return FlowAction::kDrop;
  }
  return FlowAction::kDrop;
}

FlowAction TcpFlow::server_packet(const ParsedPacket& p) {
  if (denied_) {
    counters_->tcp_dropped_closed_flow.inc();
    return FlowAction::kDrop;
  }
  if (p.tcp_flags & kTcpRst) {
    reset_ = true;
    reasm_.release();
    return FlowAction::kForward;
  }
  if (p.tcp_flags & kTcpAck) reasm_.on_peer_ack(p.ack);
  if (p.tcp_flags & kTcpFin) server_fin_ = true;
  return FlowAction::kForward;
}

}  // namespace pgwarden::packet
