#include "dataplane/packet/wire_prescreen.h"

#include <algorithm>
#include <new>

#include "dataplane/packet/tcp_reassembler.h"
#include "dataplane/pgwire/framer.h"
#include "dataplane/pgwire/messages.h"
#include "rules/rule_set.h"

namespace pgwarden::packet {
namespace {

constexpr uint8_t kTlsHandshakeRecord = 0x16;
constexpr size_t kTypedHeader = 5;    // Byte1 type, Int32 length
constexpr size_t kStartupHeader = 4;  // Int32 length
// A flow's statement buffer keeps its capacity up to this; beyond, it is freed after use.
constexpr size_t kKeepCapacity = 16 * 1024;

bool is_statement(uint8_t type) { return type == 'Q' || type == 'P'; }

// Keeps the first deny rule and the first approve rule of one scan.
class FirstRules : public rules::MatchSink {
 public:
  void on_match(const rules::Rule& rule) override {
    if (rule.action == rules::Action::kDeny && deny == nullptr) deny = &rule;
    if (rule.action == rules::Action::kApprove && approve == nullptr) approve = &rule;
  }
  void on_scan_error(std::string_view reason) override { error = reason; }

  const rules::Rule* deny = nullptr;
  const rules::Rule* approve = nullptr;
  std::string error;
};

}  // namespace

Result<std::shared_ptr<const rules::CompiledRuleSet>> load_wire_rules(
    std::span<const std::string> paths) {
  if (paths.empty()) return invalid_argument("no rule files for the wire prescreen");
  Result<rules::RuleSet> set = rules::RuleSet::load_files(paths);
  if (!set) return set.status();
  if (set->size() == 0) return invalid_argument("the wire prescreen's rule files hold no rules");
  return rules::CompiledRuleSet::compile(std::move(*set));
}

std::string wire_rules_version(const rules::CompiledRuleSet& rules) {
  return rules.rule_set().content_hash().substr(0, 16);
}

class WirePrescreenStream : public StreamConsumer {
 public:
  WirePrescreenStream(WirePrescreen* sink, const FlowKey& key)
      : sink_(sink), key_(key), framer_(pgwire::Direction::kFrontend) {}
  ~WirePrescreenStream() override { release_buffer(true); }

  // The flow drops its stream through StreamConsumer's virtual destructor; this destroying
  // delete hands the memory back to the sink's free list instead of the heap.
  void operator delete(WirePrescreenStream* p, std::destroying_delete_t) {
    WirePrescreen* sink = p->sink_;
    p->~WirePrescreenStream();
    if (sink->free_streams_.size() < WirePrescreen::kStreamCache) {
      sink->free_streams_.push_back(p);
    } else {
      ::operator delete(p);
    }
  }

  Verdict on_client_bytes(std::span<const uint8_t> bytes) override {
    size_t i = 0;
    while (verdict_ == Verdict::kAllow) {
      if (skip_left_ > 0) {  // the body of a message that is not inspected
        size_t take = static_cast<size_t>(std::min<uint64_t>(skip_left_, bytes.size() - i));
        skip_left_ -= take;
        i += take;
        if (skip_left_ > 0) break;
        continue;
      }
      if (i == bytes.size() && pending_.empty()) break;
      pgwire::Bytes input;
      bool buffered = !pending_.empty();
      if (buffered) {
        size_t want = need_ > pending_.size() ? need_ - pending_.size() : 0;
        size_t take = std::min(want, bytes.size() - i);
        if (!append(bytes.subspan(i, take))) break;
        i += take;
        input = pgwire::Bytes(pending_.data(), pending_.size());
      } else {
        input = bytes.subspan(i);
      }
      if (framer_.phase() == pgwire::Framer::Phase::kStartup && !input.empty() &&
          input[0] == kTlsHandshakeRecord) {
        frame_error("frame_error:encrypted_stream_not_inspectable");
        break;
      }
      pgwire::FrameResult r = framer_.next(input);
      if (r.status == pgwire::FrameStatus::kError) {
        frame_error("frame_error:" + std::string(r.error.name()));
        break;
      }
      if (r.status == pgwire::FrameStatus::kMessage) {
        on_message(r.message);
        if (buffered) {
          release_buffer();
        } else {
          i += r.consumed;
        }
        need_ = 0;
        continue;
      }
      // kNeedMore. Once a typed message's header is known, decide without its body.
      need_ = r.need;
      if (framer_.phase() == pgwire::Framer::Phase::kNormal && input.size() >= kTypedHeader) {
        uint8_t type = input[0];
        uint32_t body_length = static_cast<uint32_t>(r.need - kTypedHeader);
        if (type == 'F' || !is_statement(type) || r.need > sink_->options_.max_statement_bytes) {
          sink_->counters_->prescreen_messages.inc();  // decided at the header
        }
        if (type == 'F') {
          PrescreenRecord rec = header_record(type, body_length);
          function_call(&rec);
          finish(rec);
          break;
        }
        if (!is_statement(type)) {
          finish(header_record(type, body_length));
          skip_left_ = r.need - input.size();
          if (buffered) {
            release_buffer();
          } else {
            i = bytes.size();
          }
          need_ = 0;
          continue;
        }
        if (r.need > sink_->options_.max_statement_bytes) {
          PrescreenRecord rec = header_record(type, body_length);
          statement_too_large(&rec);
          finish(rec);
          break;
        }
      }
      if (!buffered) {
        if (!append(input)) break;
        i = bytes.size();
      }
      if (i == bytes.size()) break;  // wait for more bytes
    }
    return verdict_;
  }

  std::string_view reason() const override { return reason_; }
  void on_stream_end() override { release_buffer(true); }

 private:
  static PrescreenRecord header_record(uint8_t type, uint32_t body_length) {
    PrescreenRecord rec;
    rec.type = static_cast<char>(type);
    rec.body_length = body_length;
    return rec;
  }

  // Buffers bytes of an incomplete message (at most its known length), charged to the lcore
  // budget when the sink has one.
  bool append(std::span<const uint8_t> b) {
    size_t want = std::max(pending_.size() + b.size(), need_);
    if (want > charged_) {
      if (sink_->memory_ != nullptr && !sink_->memory_->reserve(want - charged_)) {
        sink_->counters_->prescreen_memcap_denied.inc();
        PrescreenRecord rec;
        rec.verdict = Verdict::kDeny;
        rec.reason = "memcap:statement_buffer";
        finish(rec);
        return false;
      }
      charged_ = want;
      pending_.reserve(want);
    }
    pending_.insert(pending_.end(), b.begin(), b.end());
    return true;
  }

  // Drops the buffered bytes; frees the buffer unless it is small (or `all`).
  void release_buffer(bool all = false) {
    pending_.clear();
    if (all || charged_ > kKeepCapacity) {
      if (sink_->memory_ != nullptr) sink_->memory_->release(charged_);
      std::vector<uint8_t>().swap(pending_);
      charged_ = 0;
    }
  }

  void frame_error(std::string reason) {
    sink_->counters_->prescreen_frame_errors.inc();
    PrescreenRecord rec;
    rec.verdict = Verdict::kDeny;
    rec.reason = std::move(reason);
    finish(rec);
  }

  void statement_too_large(PrescreenRecord* rec) {
    rec->verdict = Verdict::kDeny;
    rec->reason = "frame_error:statement_too_large";
    sink_->counters_->prescreen_frame_errors.inc();
  }

  void function_call(PrescreenRecord* rec) {
    rec->verdict = Verdict::kDeny;  // FunctionCall is denied by default (ARCHITECTURE.md)
    rec->reason = "function_call";
    sink_->counters_->prescreen_denied.inc();
  }

  // Records the verdict of one message (or of the stream) and tells the observer.
  void finish(const PrescreenRecord& rec) {
    if (rec.verdict != Verdict::kAllow && verdict_ == Verdict::kAllow) {
      verdict_ = rec.verdict;
      reason_ = rec.reason;
    }
    if (sink_->observer_) sink_->observer_(key_, rec);
  }

  void on_message(const pgwire::Message& m) {
    sink_->counters_->prescreen_messages.inc();
    PrescreenRecord rec = header_record(m.type, static_cast<uint32_t>(m.body.size()));
    if (is_statement(m.type) && m.bytes.size() > sink_->options_.max_statement_bytes) {
      statement_too_large(&rec);
    } else if (is_statement(m.type)) {
      std::string_view sql;
      pgwire::FrameError err;
      if (m.type == 'Q') {
        pgwire::Query q;
        err = pgwire::parse(m.body, &q);
        sql = q.sql;
      } else {
        pgwire::Parse p;
        err = pgwire::parse(m.body, &p);
        sql = p.query;
      }
      if (!err.ok()) {
        rec.verdict = Verdict::kDeny;
        rec.reason = "frame_error:" + std::string(err.name());
        sink_->counters_->prescreen_frame_errors.inc();
      } else {
        if (sink_->observer_) rec.sql = std::string(sql);
        screen_statement(sql, &rec);
      }
    } else if (m.type == 'F') {
      function_call(&rec);
    }
    finish(rec);
  }

  void screen_statement(std::string_view sql, PrescreenRecord* rec) {
    sink_->counters_->prescreen_statements.inc();
    rules::lex_sql(sql, sink_->lexed_);
    FirstRules found;
    rules::Verdict v = sink_->rules_->scan(sink_->lexed_, found);
    if (v == rules::Verdict::kAllow) return;
    rec->verdict = Verdict::kDeny;  // approve is refused too: nobody can approve on the wire
    sink_->counters_->prescreen_denied.inc();
    if (found.deny != nullptr) {
      rec->reason = "deny:" + found.deny->id;
    } else if (v == rules::Verdict::kApprove && found.approve != nullptr) {
      rec->reason = "approve_required:" + found.approve->id;
      sink_->counters_->prescreen_approve_denied.inc();
    } else {
      rec->reason = "scan_error:" + found.error;
    }
  }

  WirePrescreen* sink_;
  FlowKey key_;
  pgwire::Framer framer_;
  std::vector<uint8_t> pending_;  // bytes of an incomplete message (header, statement)
  size_t charged_ = 0;            // bytes charged to the lcore budget for pending_
  size_t need_ = 0;               // bytes the first pending message needs, when known
  uint64_t skip_left_ = 0;        // body bytes of a skipped message still to come
  Verdict verdict_ = Verdict::kAllow;
  std::string reason_;
};

Result<std::unique_ptr<WirePrescreen>> WirePrescreen::create(
    std::shared_ptr<const rules::CompiledRuleSet> rules, PacketCounters* counters,
    ReassemblyMemory* memory, WirePrescreenOptions options) {
  if (rules == nullptr) return invalid_argument("the wire prescreen needs a rule set");
  if (options.max_statement_bytes < kTypedHeader) {
    return invalid_argument("max_statement_bytes is too small");
  }
  std::unique_ptr<WirePrescreen> p(new WirePrescreen());
  p->rules_ = std::move(rules);
  p->counters_ = counters;
  p->memory_ = memory;
  p->options_ = options;
  p->free_streams_.reserve(kStreamCache);
  return p;
}

WirePrescreen::~WirePrescreen() {
  for (void* p : free_streams_) ::operator delete(p);
}

void WirePrescreen::set_rules(std::shared_ptr<const rules::CompiledRuleSet> rules) {
  rules_ = std::move(rules);
  rules::lex_sql("select 1", lexed_);
  FirstRules ignored;
  (void)rules_->scan(lexed_, ignored);  // grows the thread-local scratch for the new set
}

std::unique_ptr<StreamConsumer> WirePrescreen::open_stream(const FlowKey& key) {
  void* memory;
  if (!free_streams_.empty()) {
    memory = free_streams_.back();
    free_streams_.pop_back();
  } else {
    memory = ::operator new(sizeof(WirePrescreenStream));
  }
  return std::unique_ptr<StreamConsumer>(new (memory) WirePrescreenStream(this, key));
}

}  // namespace pgwarden::packet
