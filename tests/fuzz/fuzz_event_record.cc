// Fuzzes the cp side of the event ring with a hostile producer: arbitrary bytes as a record
// payload of every type (record_to_json, and ring_record_fields, cp's tree-less path), and
// arbitrary bytes as the ring's data with an arbitrary published tail (SpscRing::peek must refuse,
// never read outside the ring).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/protocol/event_record.h"
#include "common/protocol/event_ring.h"
#include "controlplane/server/ring_fields.h"

namespace {

using namespace pgwarden::protocol;

constexpr size_t kCapacity = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (in.empty()) return 0;
  // 1. The payload decoders.
  auto type = static_cast<RecordType>(static_cast<uint8_t>(in[0]) % 7);
  (void)record_to_json(type, in.substr(1));
  pgwarden::recording::RecordFields fields;
  std::string sql;
  (void)pgwarden::server::ring_record_fields(type, in.substr(1), fields, sql);

  // 2. The ring consumer over producer-controlled memory.
  static RingRegion* producer = [] {
    auto r = RingRegion::create(kCapacity, kCapacity);
    if (!r.is_ok()) abort();
    return new RingRegion(std::move(*r));
  }();
  static char* base = [] {
    void* p =
        mmap(nullptr, producer->bytes(), PROT_READ | PROT_WRITE, MAP_SHARED, producer->fd(), 0);
    if (p == MAP_FAILED) abort();
    return static_cast<char*>(p);
  }();
  constexpr size_t kForwardControl = 1024, kForwardData = 4096;
  auto* control = reinterpret_cast<RingControl*>(base + kForwardControl);
  uint64_t tail = 0;
  if (in.size() >= 9) memcpy(&tail, in.data() + 1, 8);
  std::string_view bytes = in.size() > 9 ? in.substr(9) : std::string_view();
  memset(base + kForwardData, 0, kCapacity);
  memcpy(base + kForwardData, bytes.data(), std::min(bytes.size(), kCapacity));
  control->head.store(0);
  control->tail.store(tail % (2 * kCapacity + 1));
  auto consumer = RingRegion::attach(dup(producer->fd()));
  if (!consumer.is_ok()) abort();
  RecordView v;
  int n = 0;
  while (n++ < 1000 && consumer->forward().peek(&v)) {
    (void)record_to_json(static_cast<RecordType>(v.header.type), v.payload);
    consumer->forward().advance();
  }
  return 0;
}
