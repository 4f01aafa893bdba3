// Per-lcore counters of the packet layer, as one X-macro list named family_variant.
//
// Every cap in the packet path has a counter here. Each lcore owns one PacketCounters (inside
// its cache-aligned state); only that lcore writes it. Other threads (stats export) may read
// any counter at any time: values are relaxed atomics, written without read-modify-write
// instructions, so an increment costs a plain load and store.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

namespace pgwarden::packet {

#define PGW_PACKET_COUNTERS(X)                                                      \
  X(rx_packets)                     /* frames received on any port */               \
  X(rx_bytes)                       /* bytes of those frames */                     \
  X(tx_packets)                     /* frames handed to a TX queue */               \
  X(tx_dropped)                     /* frames a TX queue did not take (freed) */    \
  X(rx_steered_out)                 /* TCP frames handed to their flow's worker */  \
  X(rx_steered_in)                  /* frames taken from this worker's inbox */     \
  X(rx_steer_dropped)               /* inbox of the flow's worker full: dropped */  \
  X(parse_truncated)                /* frame shorter than its headers claim */      \
  X(parse_malformed)                /* bad version, header length or offsets */     \
  X(parse_fragments_dropped)        /* IP fragments carrying TCP: dropped */        \
  X(parse_multisegment_dropped)     /* chained mbufs (jumbo frames): dropped */     \
  X(l2_wrong_port_dropped)          /* flow packet arriving on the wrong side */    \
  X(l2_bridged)                     /* non-TCP frames bridged port to port */       \
  X(l2_mac_move_refused)            /* station address live on the other side */    \
  X(exception_to_host)              /* frames sent to the TAP exception port */     \
  X(exception_from_host)            /* frames from the host stack sent out */       \
  X(exception_unknown_mac_dropped)  /* host unicast to a MAC not learned */         \
  X(flows_created)                  /* new TCP flows admitted */                    \
  X(flows_expired)                  /* flows removed by the idle timeout */         \
  X(flows_capacity_dropped)         /* SYNs dropped: flow table full */             \
  X(flows_bypass_dropped)           /* direct flows from a source not allowed */    \
  X(flows_midstream_dropped)        /* TCP packets of flows never seen opening */   \
  X(flows_reverse_dropped)          /* flows opened from the database side */       \
  X(flows_sink_refused)             /* the stream consumer refused a flow */        \
  X(tcp_forwarded)                  /* TCP segments forwarded */                    \
  X(tcp_held_out_of_order)          /* segments stored beyond a gap, not sent */    \
  X(tcp_dropped_closed_flow)        /* segments of a denied or reset flow */        \
  X(tcp_syn_mismatch)               /* SYN with another ISN on a live flow */       \
  X(reassembly_bytes_delivered)     /* in-order bytes handed to the consumer */     \
  X(reassembly_retransmits)         /* segments entirely before the acked edge */   \
  X(reassembly_overlap_conflicts)   /* overlap with bytes differing from first */   \
  X(reassembly_memcap_flow_drops)   /* segment beyond the per-flow cap */           \
  X(reassembly_memcap_global_drops) /* lcore memcap reached */                      \
  X(reassembly_islands_cap_drops)   /* too many out-of-order islands */             \
  X(reassembly_data_after_fin)      /* bytes past the client's FIN */               \
  X(prescreen_messages)             /* PostgreSQL messages framed on the wire */    \
  X(prescreen_statements)           /* Query/Parse SQL texts lexed and scanned */   \
  X(prescreen_denied)               /* messages the matcher denied */               \
  X(prescreen_frame_errors)         /* streams that are not valid PostgreSQL */     \
  X(prescreen_approve_denied)       /* approve-rule matches, refused on the wire */ \
  X(prescreen_memcap_denied)        /* no lcore budget to buffer a statement */     \
  X(enforce_resets_sent)            /* RST segments generated */                    \
  X(enforce_reset_alloc_failed)     /* no mbuf for a RST */                         \
  X(audit_events)                   /* deny events queued for the control plane */  \
  X(audit_events_dropped)           /* deny events dropped: audit queue full */

class Counter {
 public:
  void inc(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

struct PacketCounters {
#define PGW_DECLARE_COUNTER(name) Counter name;
  PGW_PACKET_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER
};

// Names in declaration order, for export ("rx_packets", ...).
inline constexpr std::array kPacketCounterNames = {
#define PGW_COUNTER_NAME(name) std::string_view(#name),
    PGW_PACKET_COUNTERS(PGW_COUNTER_NAME)
#undef PGW_COUNTER_NAME
};

// Calls fn(name, value) for every counter, in declaration order.
template <typename Fn>
void for_each_counter(const PacketCounters& c, Fn&& fn) {
#define PGW_VISIT_COUNTER(name) fn(std::string_view(#name), c.name.get());
  PGW_PACKET_COUNTERS(PGW_VISIT_COUNTER)
#undef PGW_VISIT_COUNTER
}

}  // namespace pgwarden::packet
