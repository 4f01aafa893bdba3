#include "common/protocol/event_record.h"

#include <cstring>
#include <type_traits>
#include <vector>

#include "common/protocol/frame.h"

namespace pgwarden::protocol {

using json = nlohmann::json;

namespace {

constexpr uint32_t kNullLength = 0xffffffffu;
constexpr uint32_t kRenderedRow = 0xffffffffu;  // a row's value count: a rendered JSON row follows

template <typename T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  memcpy(b, &v, sizeof v);  // the ring never leaves the host: native (little-endian) order
  out.append(b, sizeof b);
}
void put_bytes(std::string& out, std::string_view s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.append(s.data(), s.size());
}

// Validate-then-read cursor over an untrusted payload; after a short read it stays failed.
class Reader {
 public:
  explicit Reader(std::string_view p) : p_(p) {}
  template <typename T>
  T get() {
    T v{};
    if (failed_ || p_.size() - pos_ < sizeof(T)) {
      failed_ = true;
      return v;
    }
    memcpy(&v, p_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  // A bytes field; `null` (if given) is set for the NULL marker.
  std::string_view bytes(bool* null = nullptr) {
    uint32_t n = get<uint32_t>();
    if (null != nullptr) *null = n == kNullLength && !failed_;
    if (failed_ || (null != nullptr && *null)) return {};
    if (p_.size() - pos_ < n) {
      failed_ = true;
      return {};
    }
    std::string_view s = p_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  bool failed() const { return failed_; }
  bool done() const { return !failed_ && pos_ == p_.size(); }
  size_t remaining() const { return p_.size() - pos_; }

 private:
  std::string_view p_;
  size_t pos_ = 0;
  bool failed_ = false;
};

Status malformed(std::string_view what) {
  return invalid_argument("malformed " + std::string(what) + " event record", "08P01");
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

constexpr std::string_view kSourceNames[] = {"prescreen", "cache",         "cp",
                                             "cp_error",  "approval",      "recording",
                                             "execute",   "function_call", "budget"};

// put_fields() into a JSON object.
struct JsonFields {
  json& j;
  void add(std::string_view key, std::string_view v) { j[std::string(key)] = std::string(v); }
  void add(std::string_view key, const std::string& v) { j[std::string(key)] = v; }
  void add(std::string_view key, const json& v) { j[std::string(key)] = v; }
  template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
  void add(std::string_view key, T v) {
    j[std::string(key)] = v;
  }
};

}  // namespace

std::string_view session_hex(uint64_t v, char (&buf)[16]) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i, v >>= 4) buf[i] = kHex[v & 0xf];
  return {buf, sizeof buf};
}

std::string session_hex(uint64_t v) {
  char buf[16];
  return std::string(session_hex(v, buf));
}

std::string_view verdict_name(Verdict v) { return v == Verdict::kAllow ? "allow" : "deny"; }
Verdict verdict_from(std::string_view name) {
  return name == "allow" ? Verdict::kAllow : Verdict::kDeny;
}

std::string_view source_name(DecisionSource s) {
  auto i = static_cast<size_t>(s);
  return i < std::size(kSourceNames) ? kSourceNames[i] : "unknown";
}

Result<DecisionSource> source_from(std::string_view name) {
  for (size_t i = 0; i < std::size(kSourceNames); ++i) {
    if (kSourceNames[i] == name) return static_cast<DecisionSource>(i);
  }
  return invalid_argument("unknown decision source \"" + std::string(name) + "\"");
}

std::string_view text_value(std::string_view v, bool binary, std::string& scratch) {
  if (!binary && valid_utf8(v)) return v;
  static constexpr char kHex[] = "0123456789abcdef";
  scratch.assign("\\x");
  scratch.reserve(2 + 2 * v.size());
  for (unsigned char c : v) {
    scratch += kHex[c >> 4];
    scratch += kHex[c & 0xf];
  }
  return scratch;
}

json text_value_json(std::string_view v, bool binary) {
  std::string scratch;
  return std::string(text_value(v, binary, scratch));
}

// ---------------------------------------------------------------------------------------------
// statement (decision and write-ahead record)
//   u8 verdict, u8 source, u8 flags (1 shape key, 2 params truncated), i64 ts_ms, u64 shape,
//   bytes sql, bytes rule, bytes approval_id, bytes portal, bytes params_json

void StatementFields::encode(std::string& out) const {
  out.reserve(out.size() + 48 + sql.size() + rule.size() + approval_id.size() + portal.size() +
              params_json.size());
  put<uint8_t>(out, static_cast<uint8_t>(verdict));
  put<uint8_t>(out, static_cast<uint8_t>(source));
  put<uint8_t>(out, static_cast<uint8_t>((has_shape_key ? 1 : 0) | (params_truncated ? 2 : 0)));
  put<int64_t>(out, ts_ms);
  put<uint64_t>(out, shape_key);
  put_bytes(out, sql);
  put_bytes(out, rule);
  put_bytes(out, approval_id);
  put_bytes(out, portal);
  put_bytes(out, params_json);
}

Result<StatementFields> StatementFields::decode(std::string_view payload) {
  Reader r(payload);
  StatementFields f;
  auto verdict = r.get<uint8_t>();
  auto source = r.get<uint8_t>();
  auto flags = r.get<uint8_t>();
  f.ts_ms = r.get<int64_t>();
  f.shape_key = r.get<uint64_t>();
  f.sql = r.bytes();
  f.rule = r.bytes();
  f.approval_id = r.bytes();
  f.portal = r.bytes();
  f.params_json = r.bytes();
  if (!r.done() || verdict > 1 || source >= std::size(kSourceNames) || flags > 3) {
    return malformed("statement");
  }
  f.verdict = static_cast<Verdict>(verdict);
  f.source = static_cast<DecisionSource>(source);
  f.has_shape_key = (flags & 1) != 0;
  f.params_truncated = (flags & 2) != 0;
  return f;
}

json StatementFields::to_json() const {
  json j = {{"kind", "statement"}};
  JsonFields out{j};
  put_fields(out);
  return j;
}

// ---------------------------------------------------------------------------------------------
// statement end
//   u8 verdict, u8 executed, i64 ts_ms, i64 duration_ms, u64 rows, i32 rows_recorded,
//   bytes sql, bytes rule, bytes approval_id, bytes sqlstate, bytes error
//   layout 2 appends: u64 result_bytes, u64 masked_cells

void StatementEndFields::encode(std::string& out) const {
  out.reserve(out.size() + 64 + sql.size() + rule.size() + approval_id.size() + error.size());
  put<uint8_t>(out, static_cast<uint8_t>(verdict));
  put<uint8_t>(out, executed ? 1 : 0);
  put<int64_t>(out, ts_ms);
  put<int64_t>(out, duration_ms);
  put<uint64_t>(out, rows);
  put<int32_t>(out, rows_recorded);
  put_bytes(out, sql);
  put_bytes(out, rule);
  put_bytes(out, approval_id);
  put_bytes(out, sqlstate);
  put_bytes(out, error);
  put<uint64_t>(out, result_bytes);
  put<uint64_t>(out, masked_cells);
}

Result<StatementEndFields> StatementEndFields::decode(std::string_view payload) {
  Reader r(payload);
  StatementEndFields f;
  auto verdict = r.get<uint8_t>();
  auto executed = r.get<uint8_t>();
  f.ts_ms = r.get<int64_t>();
  f.duration_ms = r.get<int64_t>();
  f.rows = r.get<uint64_t>();
  f.rows_recorded = r.get<int32_t>();
  f.sql = r.bytes();
  f.rule = r.bytes();
  f.approval_id = r.bytes();
  f.sqlstate = r.bytes();
  f.error = r.bytes();
  if (!r.failed() && r.remaining() == 2 * sizeof(uint64_t)) {  // layout 2
    f.result_bytes = r.get<uint64_t>();
    f.masked_cells = r.get<uint64_t>();
  }
  if (!r.done() || verdict > 1 || executed > 1) return malformed("statement end");
  f.verdict = static_cast<Verdict>(verdict);
  f.executed = executed == 1;
  return f;
}

json StatementEndFields::to_json() const {
  json j = {{"kind", "statement"}};
  JsonFields out{j};
  std::string scratch;
  put_fields(out, scratch);
  return j;
}

// ---------------------------------------------------------------------------------------------
// rows

void RowsWriter::clear_columns() {
  head_.clear();
  columns_ = 0;
}

void RowsWriter::clear_rows() {
  body_.clear();
  rows_ = 0;
}

void RowsWriter::add_column(std::string_view name, uint32_t type_oid, int16_t format) {
  put_bytes(head_, name);
  put<uint32_t>(head_, type_oid);
  put<uint8_t>(head_, format == 1 ? 1 : 0);
  ++columns_;
}

void RowsWriter::begin_row(uint32_t values) {
  put<uint32_t>(body_, values);
  ++rows_;
}

void RowsWriter::add_value(std::string_view value) { put_bytes(body_, value); }
void RowsWriter::add_null() { put<uint32_t>(body_, kNullLength); }

void RowsWriter::add_rendered_row(const json& values) {
  put<uint32_t>(body_, kRenderedRow);
  // As {"row": [...]}: decoded with the depth-checked frame parser, which takes objects.
  put_bytes(body_, json{{"row", values}}.dump(-1, ' ', false, json::error_handler_t::replace));
  ++rows_;
}

std::string RowsWriter::take(int64_t ts_ms) {
  std::string out;
  out.reserve(20 + head_.size() + body_.size());
  put<int64_t>(out, ts_ms);
  put<uint32_t>(out, columns_);
  out += head_;
  put<uint32_t>(out, rows_);
  out += body_;
  clear_rows();
  return out;
}

Result<int64_t> visit_rows(std::string_view payload, RowsVisitor& visitor) {
  Reader r(payload);
  int64_t ts_ms = r.get<int64_t>();
  uint32_t ncols = r.get<uint32_t>();
  // Each column takes at least 9 bytes: a count beyond that is a lie.
  if (r.failed() || ncols > r.remaining() / 9) return malformed("rows");
  // Formats per column; more than 64 columns (rare) spill to the heap.
  uint64_t small_binary = 0;
  std::vector<bool> binary;
  if (ncols > 64) binary.reserve(ncols);
  for (uint32_t i = 0; i < ncols; ++i) {
    std::string_view name = r.bytes();
    uint32_t type_oid = r.get<uint32_t>();
    uint8_t format = r.get<uint8_t>();
    if (r.failed() || format > 1) return malformed("rows");
    visitor.column(name, type_oid);
    if (ncols > 64) {
      binary.push_back(format == 1);
    } else if (format == 1) {
      small_binary |= uint64_t{1} << i;
    }
  }
  auto is_binary = [&](uint32_t i) {
    if (i >= ncols) return false;
    return ncols > 64 ? static_cast<bool>(binary[i]) : ((small_binary >> i) & 1) != 0;
  };
  uint32_t nrows = r.get<uint32_t>();
  if (r.failed() || nrows > r.remaining() / 4) return malformed("rows");
  for (uint32_t k = 0; k < nrows; ++k) {
    uint32_t nvals = r.get<uint32_t>();
    if (!r.failed() && nvals == kRenderedRow) {
      std::string_view text = r.bytes();
      if (r.failed()) return malformed("rows");
      auto row = parse_payload(text);  // depth-checked
      if (!row.is_ok() || !row->contains("row") || !(*row)["row"].is_array()) {
        return malformed("rows");
      }
      visitor.rendered_row((*row)["row"]);
      continue;
    }
    if (r.failed() || nvals > r.remaining() / 4) return malformed("rows");
    visitor.begin_row();
    for (uint32_t i = 0; i < nvals; ++i) {
      bool null = false;
      std::string_view v = r.bytes(&null);
      if (r.failed()) return malformed("rows");
      if (null) {
        visitor.null();
      } else {
        visitor.value(v, is_binary(i));
      }
    }
    visitor.end_row();
  }
  if (!r.done()) return malformed("rows");
  return ts_ms;
}

Result<json> rows_to_json(std::string_view payload) {
  class ToJson : public RowsVisitor {
   public:
    json columns = json::array();
    json rows = json::array();
    void column(std::string_view name, uint32_t type_oid) override {
      columns.push_back({{"name", text_value_json(name, false)}, {"type_oid", type_oid}});
    }
    void begin_row() override { row_ = json::array(); }
    void value(std::string_view v, bool binary) override {
      row_.push_back(text_value_json(v, binary));
    }
    void null() override { row_.push_back(nullptr); }
    void end_row() override { rows.push_back(std::move(row_)); }
    void rendered_row(const json& values) override { rows.push_back(values); }

   private:
    json row_;
  } to_json;
  auto ts_ms = visit_rows(payload, to_json);
  if (!ts_ms.is_ok()) return ts_ms.status();
  return json{{"kind", "rows"},
              {"columns", std::move(to_json.columns)},
              {"rows", std::move(to_json.rows)},
              {"ts_ms", *ts_ms}};
}

Result<json> record_to_json(RecordType type, std::string_view payload) {
  switch (type) {
    case RecordType::kEventJson: {
      auto j = parse_payload(payload);  // depth-checked
      if (!j.is_ok()) return malformed("JSON");
      return std::move(*j);
    }
    case RecordType::kStatement:
    case RecordType::kStatementRecord: {
      auto f = StatementFields::decode(payload);
      if (!f.is_ok()) return f.status();
      return f->to_json();
    }
    case RecordType::kStatementEnd: {
      auto f = StatementEndFields::decode(payload);
      if (!f.is_ok()) return f.status();
      return f->to_json();
    }
    case RecordType::kRows:
      return rows_to_json(payload);
  }
  return invalid_argument(
      "unknown event record type " + std::to_string(static_cast<unsigned>(type)), "08P01");
}

}  // namespace pgwarden::protocol
