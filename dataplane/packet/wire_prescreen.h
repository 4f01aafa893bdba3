// WirePrescreen: the StreamSink that frames a flow's client→server bytes as PostgreSQL
// frontend messages and prescreens every statement (Query, Parse) against the rule sets.
//
// Shared code, not a copy: framing is pgwire::Framer (frontend direction, startup phase
// first), statement text comes from the pgwire message parsers, and screening is
// rules::lex_sql + rules::CompiledRuleSet::scan — the same units the session engine uses.
//
// Verdicts on the wire (docs/packet-layer.md):
//   * a deny rule matches                          -> deny  ("deny:<rule id>");
//   * an approve rule matches                      -> deny  ("approve_required:<rule id>"):
//     no human can approve a raw-wire statement, so it is refused (fail closed);
//   * FunctionCall ('F')                           -> deny  ("function_call"), at its header;
//   * TLS after SSLRequest (or direct TLS)         -> deny  (the bytes cannot be inspected);
//   * any FrameError                               -> deny  ("frame_error:<name>");
//   * a Query/Parse longer than max_statement_bytes, or no lcore budget left to buffer it
//                                                  -> deny, before buffering it.
// Messages that are not inspected (Bind, CopyData, ...) are skipped at their header, never
// buffered, whatever their length.
//
// Threading: the CompiledRuleSet is immutable and shared read-only by every lcore; its scans
// use a Hyperscan scratch per thread (rules/matcher.h), so each lcore scans with its own.
// Each lcore owns one WirePrescreen (its lexer buffers), and each flow owns its stream.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "dataplane/packet/counters.h"
#include "dataplane/packet/stream_sink.h"
#include "rules/lexer.h"
#include "rules/matcher.h"

namespace pgwarden::packet {

class ReassemblyMemory;

// The rule sets `pgwarden-dp --dpdk` screens with when none are configured.
inline constexpr const char* kDefaultWireRuleFiles[] = {"rules/sets/deny.rules",
                                                        "rules/sets/approve.rules"};

// Parses and compiles rule files into one set for every lcore. Errors list file:line.
Result<std::shared_ptr<const rules::CompiledRuleSet>> load_wire_rules(
    std::span<const std::string> paths);

// A short identifier of a compiled rule set's content (the first 16 hex digits of its
// content hash): equal files give equal versions.
std::string wire_rules_version(const rules::CompiledRuleSet& rules);

struct WirePrescreenOptions {
  // Longest Query/Parse message (Int32 length) that is buffered and screened; longer ones
  // are denied at their header. This bounds a flow's framer buffer.
  uint32_t max_statement_bytes = 1024 * 1024;
};

// One framed message as seen by the prescreen (for tests, the fuzz target and audit).
struct PrescreenRecord {
  char type = 0;             // '\0' for startup-phase packets
  uint32_t body_length = 0;  // Int32 length - 4
  std::string sql;           // Query / Parse statement text, else empty
  Verdict verdict = Verdict::kAllow;
  std::string reason;  // rule or error, when not allowed
};

class WirePrescreen : public StreamSink {
 public:
  using Observer = std::function<void(const FlowKey&, const PrescreenRecord&)>;

  // REQUIRES: rules non-null; counters (and memory, when non-null) outlive the sink.
  // `memory` is the lcore's reassembly budget: statement buffers are charged to it.
  static Result<std::unique_ptr<WirePrescreen>> create(
      std::shared_ptr<const rules::CompiledRuleSet> rules, PacketCounters* counters,
      ReassemblyMemory* memory = nullptr, WirePrescreenOptions options = {});
  ~WirePrescreen() override;

  // Streams are recycled through this sink's free list (no heap call per flow once warm):
  // a stream's memory goes back to the sink that opened it when the flow drops it.
  // REQUIRES: the sink outlives every stream it opened.
  std::unique_ptr<StreamConsumer> open_stream(const FlowKey& key) override;
  // Screens every later statement of every stream (open ones included) with `rules`, and
  // sizes this thread's Hyperscan scratch for it now rather than at the next statement.
  // REQUIRES: rules non-null; called on the thread that uses the sink (the lcore, between
  // bursts). The sink keeps a reference: the caller decides when the old set is freed.
  void set_rules(std::shared_ptr<const rules::CompiledRuleSet> rules);
  // Optional: called for every framed message of every stream of this sink.
  void set_observer(Observer observer) { observer_ = std::move(observer); }

 private:
  friend class WirePrescreenStream;
  WirePrescreen() = default;

  std::shared_ptr<const rules::CompiledRuleSet> rules_;
  PacketCounters* counters_ = nullptr;
  ReassemblyMemory* memory_ = nullptr;
  WirePrescreenOptions options_;
  Observer observer_;
  rules::LexedSql lexed_;  // reused per statement
  // Memory of closed streams, reused by open_stream() (at most kStreamCache entries).
  static constexpr size_t kStreamCache = 4096;
  std::vector<void*> free_streams_;
};

}  // namespace pgwarden::packet
