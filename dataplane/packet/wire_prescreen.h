// WirePrescreen: the StreamSink that frames a flow's client→server bytes as PostgreSQL
// frontend messages and prescreens every statement (Query, Parse) against the deny rules.
//
// INTEGRATION POINT (pgwire, rules). The session engine's pgwire::Framer and rules::Matcher
// are built in parallel and cannot be linked yet. Until they are merged this file uses two
// deliberately small stand-ins, both named Temporary*:
//   * TemporaryPgSplitter    -> replace with pgwarden::pgwire::Framer (frontend direction,
//                               startup phase first), in WirePrescreenStream::on_client_bytes;
//   * TemporaryKeywordMatcher -> replace with pgwarden::rules::Matcher (lexer scan text, then
//                               Hyperscan), in WirePrescreenStream::screen_statement.
// The StreamSink/StreamConsumer interface and everything outside this file stay as they are.
//
// Threading: a TemporaryKeywordMatcher is immutable after compile() and may be shared by all
// lcores; each lcore owns one WirePrescreen (it owns Hyperscan scratch space), and each flow
// owns its WirePrescreenStream.
#pragma once

#include <algorithm>
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

struct hs_database;
struct hs_scratch;

namespace pgwarden::packet {

// TEMPORARY stand-in for rules::Matcher: case-insensitive literal deny keywords, matched on
// the statement text with runs of whitespace folded to one space.
class TemporaryKeywordMatcher {
 public:
  // Compiles the keywords (at least one; each non-empty) into one Hyperscan database.
  static Result<std::shared_ptr<const TemporaryKeywordMatcher>> compile(
      const std::vector<std::string>& keywords);
  ~TemporaryKeywordMatcher();

  // Per-thread scratch space for match().
  Result<hs_scratch*> make_scratch() const;
  // Index of a matching keyword in `normalized` text, or -1. REQUIRES: scratch from
  // make_scratch(), used by one thread at a time.
  int first_match(std::string_view normalized, hs_scratch* scratch) const;
  const std::string& keyword(int index) const { return keywords_[static_cast<size_t>(index)]; }
  size_t size() const { return keywords_.size(); }

  // Lower-cases and folds whitespace runs into one space, into *out.
  static void normalize(std::string_view sql, std::string* out);

 private:
  TemporaryKeywordMatcher() = default;
  std::vector<std::string> keywords_;
  hs_database* db_ = nullptr;
};

// TEMPORARY stand-in for pgwire::Framer: splits frontend messages (startup phase, then
// type byte + Int32 length). Keeps only the bodies of messages that are inspected.
// https://www.postgresql.org/docs/current/protocol-message-formats.html
class TemporaryPgSplitter {
 public:
  static constexpr uint32_t kMaxStartupLength = 10000;        // as PostgreSQL's postmaster
  static constexpr uint32_t kMaxInspectedBody = 1024 * 1024;  // longer statements: error

  enum class Error : uint8_t { kNone, kBadStartup, kEncrypted, kBadLength, kTooLarge };

  // Calls on_message(type, body_length, body) for each complete message; `body` is empty
  // for messages whose bodies are skipped ('\0' is the type of startup-phase packets).
  // Stops early when on_message returns false. Returns the framing error, if any; after an
  // error the splitter stays failed.
  template <typename Fn>
  Error feed(std::span<const uint8_t> bytes, Fn&& on_message);

 private:
  bool keep_body(char type) const { return type == 'Q' || type == 'P' || type == '\0'; }
  Error header_complete();
  Error startup_packet_done();

  bool startup_ = true;
  bool cancel_sent_ = false;  // a CancelRequest ends the stream
  Error error_ = Error::kNone;
  uint8_t header_[5] = {};
  uint32_t header_have_ = 0;
  char type_ = 0;
  uint32_t body_left_ = 0;
  uint32_t body_len_ = 0;
  bool in_body_ = false;
  std::string body_;
};

// One framed message as seen by the prescreen (for tests, the fuzz target and audit).
struct PrescreenRecord {
  char type = 0;  // '\0' for startup-phase packets
  uint32_t body_length = 0;
  std::string sql;  // Query / Parse statement text, else empty
  Verdict verdict = Verdict::kAllow;
  std::string reason;  // matched keyword or error, when not allowed
};

class WirePrescreen : public StreamSink {
 public:
  using Observer = std::function<void(const FlowKey&, const PrescreenRecord&)>;

  // REQUIRES: counters outlive the sink. Fails when Hyperscan scratch cannot be allocated.
  static Result<std::unique_ptr<WirePrescreen>> create(
      std::shared_ptr<const TemporaryKeywordMatcher> matcher, PacketCounters* counters);
  ~WirePrescreen() override;

  std::unique_ptr<StreamConsumer> open_stream(const FlowKey& key) override;
  // Optional: called for every framed message of every stream of this sink.
  void set_observer(Observer observer) { observer_ = std::move(observer); }

 private:
  friend class WirePrescreenStream;
  WirePrescreen() = default;

  std::shared_ptr<const TemporaryKeywordMatcher> matcher_;
  hs_scratch* scratch_ = nullptr;
  PacketCounters* counters_ = nullptr;
  Observer observer_;
  std::string normalized_;  // reused per statement
};

template <typename Fn>
TemporaryPgSplitter::Error TemporaryPgSplitter::feed(std::span<const uint8_t> bytes,
                                                     Fn&& on_message) {
  size_t i = 0;
  while (error_ == Error::kNone && i < bytes.size()) {
    if (!in_body_) {
      uint32_t header_len = startup_ ? 4 : 5;
      while (header_have_ < header_len && i < bytes.size()) header_[header_have_++] = bytes[i++];
      if (header_have_ < header_len) break;
      error_ = header_complete();
      if (error_ != Error::kNone) break;
    }
    size_t take = std::min<size_t>(body_left_, bytes.size() - i);
    if (keep_body(type_)) body_.append(reinterpret_cast<const char*>(bytes.data() + i), take);
    i += take;
    body_left_ -= static_cast<uint32_t>(take);
    if (body_left_ > 0) break;
    char type = type_;
    if (type == '\0') {
      error_ = startup_packet_done();
      if (error_ != Error::kNone) break;
    }
    bool go_on = on_message(
        type, body_len_,
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(body_.data()), body_.size()));
    body_.clear();
    in_body_ = false;
    header_have_ = 0;
    if (!go_on) break;
  }
  return error_;
}

}  // namespace pgwarden::packet
