#include "dataplane/packet/flow_table.h"

#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>

namespace pgwarden::packet {

Result<std::unique_ptr<FlowTable>> FlowTable::create(const std::string& name, uint32_t capacity,
                                                     int socket_id) {
  if (capacity < 8) return invalid_argument("flow table capacity must be at least 8");
  std::unique_ptr<FlowTable> t(new FlowTable());
  rte_hash_parameters params = {};
  params.name = name.c_str();
  params.entries = capacity;
  params.key_len = sizeof(FlowKey);
  params.hash_func = rte_hash_crc;
  params.hash_func_init_val = 0;
  params.socket_id = socket_id;
  t->hash_ = rte_hash_create(&params);
  if (t->hash_ == nullptr) {
    return resource_exhausted("cannot create flow hash " + name + ": " + rte_strerror(rte_errno));
  }
  // Positions returned by rte_hash are below its internal key-slot count, which may exceed
  // `entries` (rounding, per-lcore key caches); size the slot array by the real bound.
  t->slot_count_ = rte_hash_max_key_id(t->hash_) + 1;
  t->slots_ = std::make_unique<FlowEntry[]>(t->slot_count_);
  t->capacity_ = capacity;
  return t;
}

FlowTable::~FlowTable() { rte_hash_free(hash_); }

FlowEntry* FlowTable::lookup(const FlowKey& key) {
  int32_t pos = rte_hash_lookup(hash_, &key);
  if (pos < 0) return nullptr;
  return &slots_[static_cast<uint32_t>(pos)];
}

FlowEntry* FlowTable::insert(const FlowKey& key) {
  if (size() >= capacity_) return nullptr;
  int32_t pos = rte_hash_add_key(hash_, &key);
  if (pos < 0 || static_cast<uint32_t>(pos) >= slot_count_) {
    if (pos >= 0) rte_hash_del_key(hash_, &key);
    return nullptr;  // bucket full before capacity: also a capacity drop
  }
  FlowEntry* e = &slots_[static_cast<uint32_t>(pos)];
  e->key = key;
  e->in_use = true;
  e->tcp.reset();
  size_.store(size() + 1, std::memory_order_relaxed);
  return e;
}

void FlowTable::remove(FlowEntry* e) {
  if (!e->in_use) return;
  rte_hash_del_key(hash_, &e->key);
  e->tcp.reset();  // frees reassembly memory and the stream consumer
  e->in_use = false;
  size_.store(size() - 1, std::memory_order_relaxed);
}

uint32_t FlowTable::expire(uint64_t now_tsc, uint64_t idle_tsc, uint64_t finished_tsc,
                           uint32_t budget) {
  uint32_t removed = 0;
  for (uint32_t i = 0; i < budget && i < slot_count_; ++i) {
    FlowEntry* e = &slots_[sweep_pos_];
    sweep_pos_ = sweep_pos_ + 1 == slot_count_ ? 0 : sweep_pos_ + 1;
    if (!e->in_use) continue;
    uint64_t idle = now_tsc - e->last_seen_tsc;
    bool finished = e->tcp && e->tcp->finished();
    if (idle >= idle_tsc || (finished && idle >= finished_tsc)) {
      remove(e);
      ++removed;
    }
  }
  return removed;
}

}  // namespace pgwarden::packet
