// Differential fuzz target for TCP reassembly + wire prescreen (the real pgwire::Framer and
// rules lexer + Hyperscan matcher with the shipped deny/approve sets).
//
// The same client byte stream is delivered (a) whole, straight into a WirePrescreen stream,
// and (b) split into random segments that arrive reordered and duplicated (with segment
// boundaries that overlap earlier ones), through TcpReassembler, with random server ACKs and
// retransmission of segments the reassembler had no room for. Both must produce the same
// PostgreSQL message sequence with the same verdicts, deliver exactly a prefix of the stream,
// report no overlap conflict (every copy carries the same bytes), and return all memory.
//
// Input: 8 bytes RNG seed, 4 bytes ISN (exercises wraparound), 1 byte max segment length,
// 1 byte duplication rate, 1 byte flags (bit 0: prepend a StartupMessage), then the stream.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "dataplane/packet/packet_parser.h"
#include "dataplane/packet/tcp_reassembler.h"
#include "dataplane/packet/wire_prescreen.h"
#include "common/source_root.h"

namespace {

using namespace pgwarden::packet;

struct Segment {
  uint32_t offset;
  uint32_t len;
};

// Forwards to the prescreen stream and records what was delivered.
class TeeConsumer : public StreamConsumer {
 public:
  explicit TeeConsumer(StreamConsumer* inner) : inner_(inner) {}
  Verdict on_client_bytes(std::span<const uint8_t> b) override {
    delivered.insert(delivered.end(), b.begin(), b.end());
    return inner_->on_client_bytes(b);
  }
  std::string_view reason() const override { return inner_->reason(); }
  std::vector<uint8_t> delivered;

 private:
  StreamConsumer* inner_;
};

// The shipped deny and approve sets, screened by the real lexer + Hyperscan matcher.
std::shared_ptr<const pgwarden::rules::CompiledRuleSet> rules() {
  static std::shared_ptr<const pgwarden::rules::CompiledRuleSet> set = [] {
    std::vector<std::string> files = {PGW_SOURCE_ROOT "/rules/sets/deny.rules",
                                      PGW_SOURCE_ROOT "/rules/sets/approve.rules"};
    auto r = load_wire_rules(files);
    if (!r) {
      fprintf(stderr, "cannot load rules: %s\n", r.status().to_string().c_str());
      abort();
    }
    return *r;
  }();
  return set;
}

// A small statement cap, so that the too-large path is reachable by the fuzzer.
std::unique_ptr<WirePrescreen> make_sink(PacketCounters* c, ReassemblyMemory* memory,
                                         std::vector<PrescreenRecord>* out) {
  auto sink =
      WirePrescreen::create(rules(), c, memory, WirePrescreenOptions{.max_statement_bytes = 4096});
  if (!sink) abort();
  (*sink)->set_observer([out](const FlowKey&, const PrescreenRecord& r) { out->push_back(r); });
  return std::move(*sink);
}

void check(bool ok, const char* what) {
  if (!ok) {
    fprintf(stderr, "differential mismatch: %s\n", what);
    abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 15) return 0;
  uint64_t seed;
  std::memcpy(&seed, data, 8);
  TcpSeq isn(load_be32(data + 8));
  uint32_t max_seg = 1 + data[12] % 96;
  uint32_t dup_pct = data[13] % 50;
  bool prepend_startup = data[14] & 1;
  std::vector<uint8_t> stream;
  if (prepend_startup) {
    static const uint8_t kStartup[] = {0,   0,   0, 20,  0,   3,   0,   0,   'u', 's',
                                       'e', 'r', 0, 'a', 'g', 'e', 'n', 't', 0,   0};
    stream.assign(kStartup, kStartup + sizeof(kStartup));
  }
  stream.insert(stream.end(), data + 15, data + size);
  if (stream.empty()) return 0;

  // (a) whole.
  PacketCounters whole_counters;
  std::vector<PrescreenRecord> whole;
  ReassemblyMemory whole_memory(1 << 20);
  auto whole_sink = make_sink(&whole_counters, &whole_memory, &whole);
  auto whole_stream = whole_sink->open_stream(FlowKey{});
  Verdict whole_verdict = whole_stream->on_client_bytes(stream);

  // (b) segmented, reordered, duplicated.
  std::mt19937_64 rng(seed);
  std::deque<Segment> net;
  for (uint32_t off = 0; off < stream.size();) {
    uint32_t len =
        std::min<uint32_t>(1 + rng() % max_seg, static_cast<uint32_t>(stream.size()) - off);
    net.push_back({off, len});
    if (rng() % 100 < dup_pct) {
      // A copy with other boundaries, as a retransmission that coalesced segments would have.
      uint32_t s = off - std::min<uint32_t>(off, rng() % max_seg);
      uint32_t e =
          std::min<uint32_t>(static_cast<uint32_t>(stream.size()), off + len + rng() % max_seg);
      net.push_back({s, e - s});
    }
    off += len;
  }
  std::shuffle(net.begin(), net.end(), rng);

  PacketCounters counters;
  std::vector<PrescreenRecord> split;
  ReassemblyConfig config;
  config.per_flow_cap = 128 * 1024;
  config.max_islands = 8;  // small, so the island cap and retransmission path are exercised
  ReassemblyMemory memory(1 << 20);
  {
    auto sink = make_sink(&counters, nullptr, &split);
    auto inner = sink->open_stream(FlowKey{});
    TeeConsumer tee(inner.get());
    TcpReassembler r(&config, &memory, &counters);
    r.start(isn);
    TcpSeq end = isn + 1 + static_cast<uint32_t>(stream.size());
    size_t steps = 0;
    while (!net.empty() && r.next() != end && !r.closed() && steps++ < 1000000) {
      size_t pick = rng() % std::min<size_t>(net.size(), 8);  // bounded reordering window
      Segment s = net[pick];
      net.erase(net.begin() + static_cast<std::ptrdiff_t>(pick));
      SegmentOutcome o =
          r.on_segment(isn + 1 + s.offset, {stream.data() + s.offset, s.len}, false, tee);
      check(o != SegmentOutcome::kConflict, "conflict on identical bytes");
      // The client retransmits what the server did not acknowledge: always what was dropped,
      // and sometimes what was held (it was stored, so only the forwarding path needs it).
      if (o == SegmentOutcome::kDropCap || (o == SegmentOutcome::kHold && rng() % 4 == 0)) {
        net.push_back(s);
      }
      if (rng() % 4 == 0) {
        uint32_t delivered = static_cast<uint32_t>(r.next() - (isn + 1));
        r.on_peer_ack(isn + 1 + static_cast<uint32_t>(rng() % (delivered + 1)));
      }
    }
    check(tee.delivered.size() <= stream.size(), "delivered more than sent");
    check(std::equal(tee.delivered.begin(), tee.delivered.end(), stream.begin()),
          "delivered bytes differ from the stream");
    if (whole_verdict == Verdict::kAllow) {
      check(tee.delivered.size() == stream.size(), "allowed stream not fully delivered");
    }
    check(whole.size() == split.size(), "different number of messages");
    for (size_t i = 0; i < whole.size(); ++i) {
      check(whole[i].type == split[i].type, "message type");
      check(whole[i].body_length == split[i].body_length, "message length");
      check(whole[i].sql == split[i].sql, "statement text");
      check(whole[i].verdict == split[i].verdict, "verdict");
      check(whole[i].reason == split[i].reason, "reason");
    }
    check(counters.reassembly_overlap_conflicts.get() == 0, "conflicts counted");
  }
  check(memory.used() == 0, "reassembly memory not returned");
  whole_stream.reset();
  check(whole_memory.used() == 0, "statement buffer memory not returned");
  return 0;
}
