#include "dataplane/packet/wire_prescreen.h"

#include <hs/hs.h>

#include <cstring>
#include <optional>

#include "dataplane/packet/packet_parser.h"

namespace pgwarden::packet {
namespace {

// Startup-phase request codes (protocol-message-formats: SSLRequest, GSSENCRequest,
// CancelRequest) and the protocol major version of a StartupMessage.
constexpr uint32_t kSslRequestCode = 80877103;
constexpr uint32_t kGssEncRequestCode = 80877104;
constexpr uint32_t kCancelRequestCode = 80877102;
constexpr uint32_t kProtocolMajor3 = 3;
constexpr uint8_t kTlsHandshakeRecord = 0x16;

int on_hs_match(unsigned int id, unsigned long long, unsigned long long, unsigned int, void* ctx) {
  *static_cast<int*>(ctx) = static_cast<int>(id);
  return 1;  // first match is enough: stop scanning
}

std::string_view splitter_error_reason(TemporaryPgSplitter::Error e) {
  switch (e) {
    case TemporaryPgSplitter::Error::kBadStartup:
      return "frame_error:bad_startup_packet";
    case TemporaryPgSplitter::Error::kEncrypted:
      return "frame_error:encrypted_stream_not_inspectable";
    case TemporaryPgSplitter::Error::kBadLength:
      return "frame_error:bad_message_length";
    case TemporaryPgSplitter::Error::kTooLarge:
      return "frame_error:statement_too_large";
    case TemporaryPgSplitter::Error::kNone:
      break;
  }
  return "";
}

// The statement text of a Query ("String query") or Parse ("String name, String query")
// body, or nullopt when a String is not NUL-terminated.
std::optional<std::string_view> statement_text(char type, std::span<const uint8_t> body) {
  std::string_view b(reinterpret_cast<const char*>(body.data()), body.size());
  if (type == 'P') {
    size_t name_end = b.find('\0');
    if (name_end == std::string_view::npos) return std::nullopt;
    b.remove_prefix(name_end + 1);
  }
  size_t end = b.find('\0');
  if (end == std::string_view::npos) return std::nullopt;
  return b.substr(0, end);
}

}  // namespace

// --- TemporaryKeywordMatcher (stand-in for rules::Matcher) ---------------------------------

Result<std::shared_ptr<const TemporaryKeywordMatcher>> TemporaryKeywordMatcher::compile(
    const std::vector<std::string>& keywords) {
  if (keywords.empty()) return invalid_argument("deny keyword list is empty");
  std::shared_ptr<TemporaryKeywordMatcher> m(new TemporaryKeywordMatcher());
  std::vector<const char*> exprs;
  std::vector<size_t> lens;
  std::vector<unsigned> flags;
  std::vector<unsigned> ids;
  for (const std::string& k : keywords) {
    std::string n;
    normalize(k, &n);
    if (n.empty() || n == " ") return invalid_argument("empty deny keyword");
    m->keywords_.push_back(std::move(n));
  }
  for (size_t i = 0; i < m->keywords_.size(); ++i) {
    exprs.push_back(m->keywords_[i].data());
    lens.push_back(m->keywords_[i].size());
    flags.push_back(HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH);
    ids.push_back(static_cast<unsigned>(i));
  }
  hs_compile_error_t* err = nullptr;
  if (hs_compile_lit_multi(exprs.data(), flags.data(), ids.data(), lens.data(),
                           static_cast<unsigned>(exprs.size()), HS_MODE_BLOCK, nullptr, &m->db_,
                           &err) != HS_SUCCESS) {
    std::string msg = err && err->message ? err->message : "unknown error";
    hs_free_compile_error(err);
    return invalid_argument("cannot compile deny keywords: " + msg);
  }
  return std::shared_ptr<const TemporaryKeywordMatcher>(std::move(m));
}

TemporaryKeywordMatcher::~TemporaryKeywordMatcher() { hs_free_database(db_); }

Result<hs_scratch*> TemporaryKeywordMatcher::make_scratch() const {
  hs_scratch_t* scratch = nullptr;
  if (hs_alloc_scratch(db_, &scratch) != HS_SUCCESS) {
    return resource_exhausted("cannot allocate Hyperscan scratch");
  }
  return scratch;
}

int TemporaryKeywordMatcher::first_match(std::string_view normalized, hs_scratch* scratch) const {
  int id = -1;
  hs_scan(db_, normalized.data(), static_cast<unsigned>(normalized.size()), 0, scratch, on_hs_match,
          &id);
  return id;
}

void TemporaryKeywordMatcher::normalize(std::string_view sql, std::string* out) {
  // One pass writing through a raw pointer: this runs on every statement on the wire.
  out->resize(sql.size());
  char* w = out->data();
  bool space = false;
  for (char c : sql) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      space = true;
      continue;
    }
    if (space && w != out->data()) *w++ = ' ';
    space = false;
    *w++ = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  }
  out->resize(static_cast<size_t>(w - out->data()));
}

// --- TemporaryPgSplitter (stand-in for pgwire::Framer) -------------------------------------

TemporaryPgSplitter::Error TemporaryPgSplitter::header_complete() {
  if (cancel_sent_) return Error::kBadStartup;
  if (startup_) {
    if (header_[0] == kTlsHandshakeRecord) return Error::kEncrypted;
    uint32_t len = load_be32(header_);
    if (len < 8 || len > kMaxStartupLength) return Error::kBadStartup;
    type_ = '\0';
    body_len_ = len - 4;
  } else {
    type_ = static_cast<char>(header_[0]);
    uint32_t len = load_be32(header_ + 1);
    if (len < 4) return Error::kBadLength;
    body_len_ = len - 4;
    if (keep_body(type_) && body_len_ > kMaxInspectedBody) return Error::kTooLarge;
  }
  body_left_ = body_len_;
  in_body_ = true;
  return Error::kNone;
}

TemporaryPgSplitter::Error TemporaryPgSplitter::startup_packet_done() {
  uint32_t code = load_be32(reinterpret_cast<const uint8_t*>(body_.data()));
  if (code == kSslRequestCode || code == kGssEncRequestCode) {
    return body_len_ == 4 ? Error::kNone : Error::kBadStartup;
  }
  if (code == kCancelRequestCode) {
    cancel_sent_ = true;
    return body_len_ == 12 ? Error::kNone : Error::kBadStartup;
  }
  if ((code >> 16) != kProtocolMajor3) return Error::kBadStartup;
  startup_ = false;
  return Error::kNone;
}

// --- WirePrescreen ---------------------------------------------------------------------------

class WirePrescreenStream : public StreamConsumer {
 public:
  WirePrescreenStream(WirePrescreen* sink, const FlowKey& key) : sink_(sink), key_(key) {}

  Verdict on_client_bytes(std::span<const uint8_t> bytes) override {
    if (verdict_ != Verdict::kAllow) return verdict_;
    // INTEGRATION POINT: pgwire::Framer replaces splitter_ here.
    TemporaryPgSplitter::Error err =
        splitter_.feed(bytes, [&](char type, uint32_t body_len, std::span<const uint8_t> body) {
          return on_message(type, body_len, body);
        });
    if (err != TemporaryPgSplitter::Error::kNone && verdict_ == Verdict::kAllow) {
      sink_->counters_->prescreen_frame_errors.inc();
      verdict_ = Verdict::kDeny;
      reason_ = splitter_error_reason(err);
      PrescreenRecord rec;
      rec.verdict = verdict_;
      rec.reason = reason_;
      if (sink_->observer_) sink_->observer_(key_, rec);
    }
    return verdict_;
  }

  std::string_view reason() const override { return reason_; }

 private:
  bool on_message(char type, uint32_t body_len, std::span<const uint8_t> body) {
    sink_->counters_->prescreen_messages.inc();
    PrescreenRecord rec;
    rec.type = type;
    rec.body_length = body_len;
    if (type == 'Q' || type == 'P') {
      std::optional<std::string_view> sql = statement_text(type, body);
      if (!sql) {
        rec.verdict = Verdict::kDeny;
        rec.reason = "frame_error:unterminated_string";
        sink_->counters_->prescreen_frame_errors.inc();
      } else {
        if (sink_->observer_) rec.sql = std::string(*sql);
        screen_statement(*sql, &rec);
      }
    } else if (type == 'F') {
      rec.verdict = Verdict::kDeny;  // FunctionCall is denied by default (ARCHITECTURE.md)
      rec.reason = "function_call";
    }
    if (rec.verdict != Verdict::kAllow) {
      if (type == 'Q' || type == 'P' || type == 'F') sink_->counters_->prescreen_denied.inc();
      verdict_ = rec.verdict;
      reason_ = rec.reason;
    }
    if (sink_->observer_) sink_->observer_(key_, rec);
    return verdict_ == Verdict::kAllow;
  }

  void screen_statement(std::string_view sql, PrescreenRecord* rec) {
    // INTEGRATION POINT: rules::Matcher (on the lexer's scan text) replaces this.
    TemporaryKeywordMatcher::normalize(sql, &sink_->normalized_);
    int id = sink_->matcher_->first_match(sink_->normalized_, sink_->scratch_);
    if (id >= 0) {
      rec->verdict = Verdict::kDeny;
      rec->reason = "deny_keyword:" + sink_->matcher_->keyword(id);
    }
  }

  WirePrescreen* sink_;
  FlowKey key_;
  TemporaryPgSplitter splitter_;
  Verdict verdict_ = Verdict::kAllow;
  std::string reason_;
};

Result<std::unique_ptr<WirePrescreen>> WirePrescreen::create(
    std::shared_ptr<const TemporaryKeywordMatcher> matcher, PacketCounters* counters) {
  std::unique_ptr<WirePrescreen> p(new WirePrescreen());
  Result<hs_scratch*> scratch = matcher->make_scratch();
  if (!scratch) return scratch.status();
  p->scratch_ = *scratch;
  p->matcher_ = std::move(matcher);
  p->counters_ = counters;
  return p;
}

WirePrescreen::~WirePrescreen() { hs_free_scratch(scratch_); }

std::unique_ptr<StreamConsumer> WirePrescreen::open_stream(const FlowKey& key) {
  return std::make_unique<WirePrescreenStream>(this, key);
}

}  // namespace pgwarden::packet
