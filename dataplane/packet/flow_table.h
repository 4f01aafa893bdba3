// FlowTable: one lcore's TCP flows, indexed by an rte_hash on the canonical FlowKey.
//
// The table has a hard capacity: insert() fails (the caller drops the SYN and counts
// flows_capacity_dropped) instead of growing. The rte_hash position of a key is the index of
// its FlowEntry in a slot array allocated once at creation, so lookups cost one hash probe and
// no allocation. Idle flows are removed by expire(), a bounded incremental sweep the lcore
// runs on its drain timer.
//
// Not thread-safe: owned and used by exactly one lcore (no locks on the packet path).
// size() may be read from another thread (a relaxed atomic) for stats.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "dataplane/packet/flow_key.h"
#include "dataplane/packet/tcp_flow.h"

struct rte_hash;

namespace pgwarden::packet {

struct FlowEntry {
  FlowKey key;
  bool in_use = false;
  bool client_is_a = false;  // the client endpoint is FlowKey::addr_a/port_a
  uint64_t last_seen_tsc = 0;
  std::optional<TcpFlow> tcp;
};

class FlowTable {
 public:
  // `name` must be unique in the process (rte_hash names are global). REQUIRES: EAL
  // initialised; capacity >= 8.
  static Result<std::unique_ptr<FlowTable>> create(const std::string& name, uint32_t capacity,
                                                   int socket_id);
  ~FlowTable();
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  FlowEntry* lookup(const FlowKey& key);
  // A fresh entry for `key` (REQUIRES: not present), or nullptr when the table is full.
  FlowEntry* insert(const FlowKey& key);
  void remove(FlowEntry* entry);

  // Visits at most `budget` slots from where the last sweep stopped, removing flows idle for
  // `idle_tsc` cycles, or `finished_tsc` cycles once their TCP flow finished. Returns the
  // number removed.
  uint32_t expire(uint64_t now_tsc, uint64_t idle_tsc, uint64_t finished_tsc, uint32_t budget);

  uint32_t size() const { return size_.load(std::memory_order_relaxed); }
  uint32_t capacity() const { return capacity_; }

 private:
  FlowTable() = default;

  rte_hash* hash_ = nullptr;
  std::unique_ptr<FlowEntry[]> slots_;
  uint32_t slot_count_ = 0;
  uint32_t capacity_ = 0;
  uint32_t sweep_pos_ = 0;
  std::atomic<uint32_t> size_{0};
};

}  // namespace pgwarden::packet
