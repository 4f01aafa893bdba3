#include "dataplane/masking/mask_apply.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "dataplane/pgwire/messages.h"

namespace pgwarden::masking {

namespace {

constexpr uint32_t kNameOid = 19;
constexpr uint32_t kTextOid = 25;
constexpr uint32_t kJsonOid = 114;
constexpr uint32_t kJsonbOid = 3802;
constexpr char kJsonbBinaryVersion = 1;
constexpr uint32_t kBpcharOid = 1042;
constexpr uint32_t kVarcharOid = 1043;
constexpr int kMaxKeepLast = 1000;
constexpr size_t kMaxColumns = 32767;

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

bool binary_is_text(uint32_t type_oid) {
  return type_oid == kTextOid || type_oid == kVarcharOid || type_oid == kBpcharOid ||
         type_oid == kNameOid;
}

void append_stars(std::string& out, size_t n) { out.append(n, '*'); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Status malformed(std::string what) { return invalid_argument(std::move(what), "08P01"); }

}  // namespace

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += is_continuation(c) ? 0 : 1;
  return n;
}

std::string_view mask_function_name(MaskFunction f) {
  switch (f) {
    case MaskFunction::kNone:
      return "none";
    case MaskFunction::kRedact:
      return "redact";
    case MaskFunction::kPartial:
      return "partial";
    case MaskFunction::kHash:
      return "hash";
    case MaskFunction::kEmail:
      return "email";
    case MaskFunction::kNull:
      return "null";
    case MaskFunction::kDetect:
      return "detect";
  }
  return "none";
}

MaskFunction parse_mask_function(std::string_view name) {
  for (auto f : {MaskFunction::kRedact, MaskFunction::kPartial, MaskFunction::kHash,
                 MaskFunction::kEmail, MaskFunction::kNull, MaskFunction::kDetect}) {
    if (mask_function_name(f) == name) return f;
  }
  return MaskFunction::kNone;
}

bool RowMaskPlan::empty() const {
  return std::all_of(columns.begin(), columns.end(),
                     [](const ColumnMask& c) { return c.function == MaskFunction::kNone; });
}

bool RowMaskPlan::needs_detector() const {
  return std::any_of(columns.begin(), columns.end(),
                     [](const ColumnMask& c) { return c.function == MaskFunction::kDetect; });
}

Result<RowMaskPlan> RowMaskPlan::from_json(const nlohmann::json& j) {
  if (!j.is_object()) return invalid_argument("mask plan is not an object");
  RowMaskPlan plan;
  bool needs_key = false;
  try {
    int64_t count = j.value("column_count", int64_t{0});
    if (count < 0 || static_cast<size_t>(count) > kMaxColumns) {
      return invalid_argument("mask plan column_count out of range");
    }
    plan.column_count = static_cast<size_t>(count);
    const auto& cols = j.at("columns");
    if (!cols.is_array()) return invalid_argument("mask plan columns is not an array");
    for (const auto& c : cols) {
      int64_t index = c.at("index").get<int64_t>();
      if (index < 0 || static_cast<size_t>(index) >= kMaxColumns ||
          (plan.column_count > 0 && static_cast<size_t>(index) >= plan.column_count)) {
        return invalid_argument("mask plan column index out of range");
      }
      ColumnMask m;
      m.function = parse_mask_function(c.at("function").get<std::string>());
      if (m.function == MaskFunction::kNone) {
        return invalid_argument("mask plan has an unknown function");
      }
      if (c.contains("text")) m.text = c["text"].get<std::string>();
      if (m.text.size() > kMaxRedactText) return invalid_argument("mask plan text too long");
      if (c.contains("keep_last")) {
        int64_t k = c["keep_last"].get<int64_t>();
        if (k < 0 || k > kMaxKeepLast) return invalid_argument("mask plan keep_last out of range");
        m.keep_last = static_cast<int>(k);
      }
      m.type_oid = c.value("type_oid", uint32_t{0});
      int64_t format = c.value("format", int64_t{0});
      if (format != 0 && format != 1) return invalid_argument("mask plan format must be 0 or 1");
      m.format = static_cast<int16_t>(format);
      needs_key = needs_key || m.function == MaskFunction::kHash;
      size_t i = static_cast<size_t>(index);
      if (plan.columns.size() <= i) plan.columns.resize(i + 1);
      if (plan.columns[i].function != MaskFunction::kNone) {
        return invalid_argument("mask plan lists a column twice");
      }
      plan.columns[i] = std::move(m);
    }
    std::string hex = j.value("hash_key", std::string());
    if (!hex.empty()) {
      if (hex.size() != 2 * kHashKeyBytes) return invalid_argument("mask plan hash_key size");
      for (size_t i = 0; i < hex.size(); i += 2) {
        int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0) return invalid_argument("mask plan hash_key is not hex");
        plan.hash_key.push_back(static_cast<char>(hi << 4 | lo));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(std::string("mask plan: ") + e.what());
  }
  if (needs_key && plan.hash_key.size() != kHashKeyBytes) {
    return invalid_argument("mask plan uses hash but carries no hash_key");
  }
  return plan;
}

nlohmann::json RowMaskPlan::to_json() const {
  nlohmann::json cols = nlohmann::json::array();
  for (size_t i = 0; i < columns.size(); ++i) {
    const ColumnMask& m = columns[i];
    if (m.function == MaskFunction::kNone) continue;
    cols.push_back({{"index", i},
                    {"function", mask_function_name(m.function)},
                    {"text", m.text},
                    {"keep_last", m.keep_last},
                    {"type_oid", m.type_oid},
                    {"format", m.format}});
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : hash_key) {
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  return {{"column_count", column_count},
          {"columns", cols},
          {"detect", needs_detector()},
          {"hash_key", hex}};
}

// HMAC-SHA256 with the key's inner and outer pads absorbed once: each value costs two context
// copies (which reuse the destination's buffers) and no allocation.
struct RowMasker::HmacState {
  EVP_MD_CTX* inner = nullptr;
  EVP_MD_CTX* outer = nullptr;
  EVP_MD_CTX* work = nullptr;
  ~HmacState() {
    EVP_MD_CTX_free(inner);
    EVP_MD_CTX_free(outer);
    EVP_MD_CTX_free(work);
  }
};

Result<std::unique_ptr<RowMasker>> RowMasker::create(RowMaskPlan plan, Detector detector) {
  if (plan.needs_detector() && !detector) {
    return failed_precondition("mask plan needs content detectors but none are loaded");
  }
  for (const auto& c : plan.columns) {
    if (c.function == MaskFunction::kHash && plan.hash_key.size() != kHashKeyBytes) {
      return invalid_argument("mask plan uses hash but carries no 32-byte hash_key");
    }
  }
  std::unique_ptr<RowMasker> m(new RowMasker(std::move(plan), std::move(detector)));
  if (m->plan_.hash_key.size() == kHashKeyBytes) {
    auto h = std::make_unique<HmacState>();
    h->inner = EVP_MD_CTX_new();
    h->outer = EVP_MD_CTX_new();
    h->work = EVP_MD_CTX_new();
    if (!h->inner || !h->outer || !h->work) return internal_error("EVP_MD_CTX_new failed");
    std::array<unsigned char, 64> ipad{}, opad{};
    std::memcpy(ipad.data(), m->plan_.hash_key.data(), kHashKeyBytes);
    std::memcpy(opad.data(), m->plan_.hash_key.data(), kHashKeyBytes);
    for (size_t i = 0; i < 64; ++i) {
      ipad[i] ^= 0x36;
      opad[i] ^= 0x5c;
    }
    if (EVP_DigestInit_ex(h->inner, EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(h->inner, ipad.data(), ipad.size()) != 1 ||
        EVP_DigestInit_ex(h->outer, EVP_sha256(), nullptr) != 1 ||
        EVP_DigestUpdate(h->outer, opad.data(), opad.size()) != 1) {
      return internal_error("HMAC key setup failed");
    }
    OPENSSL_cleanse(ipad.data(), ipad.size());
    OPENSSL_cleanse(opad.data(), opad.size());
    m->hmac_ = std::move(h);
  }
  return m;
}

RowMasker::RowMasker(RowMaskPlan plan, Detector detector)
    : plan_(std::move(plan)), detector_(std::move(detector)) {}

RowMasker::~RowMasker() {
  if (!plan_.hash_key.empty()) OPENSSL_cleanse(plan_.hash_key.data(), plan_.hash_key.size());
}

void RowMasker::hmac_hex(std::string_view value, std::string& out) {
  unsigned char inner[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_MD_CTX* w = hmac_->work;
  EVP_MD_CTX_copy_ex(w, hmac_->inner);
  EVP_DigestUpdate(w, value.data(), value.size());
  EVP_DigestFinal_ex(w, inner, &n);
  EVP_MD_CTX_copy_ex(w, hmac_->outer);
  EVP_DigestUpdate(w, inner, n);
  EVP_DigestFinal_ex(w, mac, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < n; ++i) {
    out.push_back(kHex[mac[i] >> 4]);
    out.push_back(kHex[mac[i] & 15]);
  }
}

bool mask_ignores_value(const ColumnMask& mask) {
  if (mask.function == MaskFunction::kNone) return false;
  if (mask.format == 1 && !binary_is_text(mask.type_oid)) {
    return mask.function != MaskFunction::kDetect;
  }
  return mask.function == MaskFunction::kRedact || mask.function == MaskFunction::kNull;
}

bool RowMasker::mask_value(const ColumnMask& mask, bool binary, std::string_view value,
                           std::string& out) {
  if (binary && !binary_is_text(mask.type_oid)) {
    // The binary forms of json (its text) and jsonb (version byte 1, then its text) can be
    // scanned like text; every other binary value becomes NULL (fail closed).
    if (mask.function != MaskFunction::kDetect) return false;
    if (mask.type_oid == kJsonOid) {
      mask_detected(value, out);
      return true;
    }
    if (mask.type_oid == kJsonbOid && !value.empty() && value[0] == kJsonbBinaryVersion) {
      out.push_back(kJsonbBinaryVersion);
      mask_detected(value.substr(1), out);
      return true;
    }
    return false;
  }
  switch (mask.function) {
    case MaskFunction::kNone:
      out.append(value);
      return true;
    case MaskFunction::kNull:
      return false;
    case MaskFunction::kRedact:
      out.append(mask.text);
      return true;
    case MaskFunction::kPartial: {
      size_t chars = utf8_length(value);
      size_t keep = std::min(static_cast<size_t>(mask.keep_last), chars / 2);
      size_t start = value.size();
      for (size_t kept = 0; kept < keep && start > 0;) {
        --start;
        if (!is_continuation(value[start])) ++kept;
      }
      append_stars(out, chars - keep);
      out.append(value.substr(start));
      return true;
    }
    case MaskFunction::kHash:
      hmac_hex(value, out);
      return true;
    case MaskFunction::kEmail: {
      size_t at = value.rfind('@');
      out.append("***");
      if (at != std::string_view::npos && at + 1 < value.size()) out.append(value.substr(at));
      return true;
    }
    case MaskFunction::kDetect:
      mask_detected(value, out);
      return true;
  }
  return false;
}

void RowMasker::mask_detected(std::string_view value, std::string& out) {
  spans_.clear();
  detector_(value, &spans_);
  if (spans_.empty()) {
    out.append(value);
    return;
  }
  for (auto& s : spans_) {
    s.end = std::min(s.end, value.size());
    s.begin = std::min(s.begin, s.end);
    while (s.begin > 0 && s.begin < value.size() && is_continuation(value[s.begin])) --s.begin;
    while (s.end < value.size() && is_continuation(value[s.end])) ++s.end;
  }
  std::sort(spans_.begin(), spans_.end(),
            [](const DetectSpan& a, const DetectSpan& b) { return a.begin < b.begin; });
  size_t pos = 0;
  for (const auto& s : spans_) {
    if (s.end <= pos || s.begin == s.end) continue;
    size_t b = std::max(s.begin, pos);
    out.append(value.substr(pos, b - pos));
    append_stars(out, utf8_length(value.substr(b, s.end - b)));
    pos = s.end;
    ++detect_spans_;
  }
  out.append(value.substr(pos));
}

Result<bool> RowMasker::mask_data_row(pgwire::Bytes body, std::string& out) {
  if (plan_.empty()) {
    ++rows_passed_;
    return false;
  }
  pgwire::DataRow row;
  pgwire::FrameError err = pgwire::parse(body, &row);
  if (!err.ok()) {
    ++rows_malformed_;
    return malformed("malformed DataRow: " + std::string(err.name()));
  }
  if (plan_.column_count != 0 && row.columns.size() != plan_.column_count) {
    ++rows_malformed_;
    return malformed("DataRow has " + std::to_string(row.columns.size()) +
                     " columns but its RowDescription has " + std::to_string(plan_.column_count));
  }
  const size_t start = out.size();
  size_t length_at = pgwire::begin_message(out, 'D');
  pgwire::append_int16(out, static_cast<int16_t>(row.columns.size()));
  size_t index = 0;
  uint64_t masked = 0;
  bool changed = false;
  for (const pgwire::Value& v : row.columns) {
    const ColumnMask* mask = index < plan_.columns.size() ? &plan_.columns[index] : nullptr;
    ++index;
    if (v.is_null || mask == nullptr || mask->function == MaskFunction::kNone) {
      if (v.is_null) {
        pgwire::append_int32(out, -1);
      } else {
        pgwire::append_int32(out, static_cast<int32_t>(v.data.size()));
        pgwire::append_bytes(out, v.data);
      }
      continue;
    }
    size_t value_at = out.size();
    out.append(4, '\0');
    bool present = mask_value(*mask, mask->format == 1, v.text(), out);
    if (!present) {
      out.resize(value_at);
      pgwire::append_int32(out, -1);
      changed = true;
      ++masked;
      continue;
    }
    size_t len = out.size() - value_at - 4;
    pgwire::store_be32(reinterpret_cast<uint8_t*>(out.data() + value_at),
                       static_cast<uint32_t>(len));
    if (len != v.data.size() || std::memcmp(out.data() + value_at + 4, v.data.data(), len) != 0) {
      changed = true;
      ++masked;
    }
  }
  if (!changed) {
    out.resize(start);
    ++rows_passed_;
    return false;
  }
  pgwire::finish_message(out, length_at);
  ++rows_masked_;
  values_masked_ += masked;
  return true;
}

namespace {

// Decodes one COPY text field's backslash escapes into `out`.
void copy_decode(std::string_view field, std::string& out) {
  out.clear();
  for (size_t i = 0; i < field.size(); ++i) {
    char c = field[i];
    if (c != '\\' || i + 1 == field.size()) {
      out.push_back(c);
      continue;
    }
    char e = field[++i];
    switch (e) {
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x': {
        int v = 0, digits = 0;
        while (digits < 2 && i + 1 < field.size() && hex_value(field[i + 1]) >= 0) {
          v = v * 16 + hex_value(field[++i]);
          ++digits;
        }
        if (digits == 0) {
          out.push_back('x');
        } else {
          out.push_back(static_cast<char>(v));
        }
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0', digits = 1;
          while (digits < 3 && i + 1 < field.size() && field[i + 1] >= '0' && field[i + 1] <= '7') {
            v = v * 8 + (field[++i] - '0');
            ++digits;
          }
          out.push_back(static_cast<char>(v & 0xff));
        } else {
          out.push_back(e);
        }
    }
  }
}

void copy_encode(std::string_view value, char delimiter, std::string& out) {
  for (char c : value) {
    switch (c) {
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      case '\v':
        out.append("\\v");
        break;
      default:
        if (c == delimiter) out.push_back('\\');
        out.push_back(c);
    }
  }
}

// CSV: a value is quoted when PostgreSQL's COPY TO would quote it (it holds the delimiter,
// the quote character, CR or LF, or equals the NULL marker); quote and escape characters
// inside are preceded by the escape character.
void csv_encode(std::string_view value, const CopyFormat& f, std::string& out) {
  bool needs_quotes = value == f.null_marker || value == "\\.";
  for (char c : value) {
    if (c == f.delimiter || c == f.quote || c == '\n' || c == '\r') needs_quotes = true;
  }
  if (!needs_quotes) {
    out.append(value);
    return;
  }
  out.push_back(f.quote);
  for (char c : value) {
    if (c == f.quote || c == f.escape) out.push_back(f.escape);
    out.push_back(c);
  }
  out.push_back(f.quote);
}

// One field of a COPY row: [begin, end) in the row and whether it was a quoted CSV field.
struct CopyField {
  size_t begin = 0;
  size_t end = 0;
  bool quoted = false;
};

// Finds the field starting at `pos`; sets *next to the position after it (its delimiter or
// the row's end). Returns an error text for input that is not part of exactly one row.
const char* scan_copy_field(std::string_view row, size_t pos, const CopyFormat& f, CopyField* field,
                            size_t* next) {
  field->begin = pos;
  field->quoted = false;
  size_t i = pos;
  if (f.csv && i < row.size() && row[i] == f.quote) {
    field->quoted = true;
    ++i;
    while (true) {
      if (i >= row.size()) return "unterminated quoted CSV field";
      char c = row[i];
      if (c == f.escape && f.escape != f.quote && i + 1 < row.size() &&
          (row[i + 1] == f.quote || row[i + 1] == f.escape)) {
        i += 2;
        continue;
      }
      if (c == f.quote) {
        if (f.escape == f.quote && i + 1 < row.size() && row[i + 1] == f.quote) {
          i += 2;
          continue;
        }
        ++i;
        break;
      }
      ++i;
    }
    if (i < row.size() && row[i] != f.delimiter) return "text after a closing CSV quote";
  } else {
    while (i < row.size() && row[i] != f.delimiter) {
      if (row[i] == '\n' || row[i] == '\r') return "more than one row in one COPY data message";
      i += (!f.csv && row[i] == '\\' && i + 1 < row.size()) ? 2 : 1;
    }
  }
  field->end = i;
  *next = i;
  return nullptr;
}

// Decodes a quoted CSV field's content (without its quotes).
void csv_decode(std::string_view quoted, const CopyFormat& f, std::string& out) {
  out.clear();
  for (size_t i = 0; i < quoted.size(); ++i) {
    if (quoted[i] == f.escape && i + 1 < quoted.size() &&
        (quoted[i + 1] == f.quote || quoted[i + 1] == f.escape)) {
      ++i;
    }
    out.push_back(quoted[i]);
  }
}

}  // namespace

Result<bool> RowMasker::mask_copy_line(std::string_view line, std::string& out,
                                       const CopyFormat& format) {
  if (plan_.empty()) {
    ++rows_passed_;
    return false;
  }
  if (line.empty() || line.back() != '\n') {
    ++rows_malformed_;
    return malformed("COPY data message does not end with a row terminator");
  }
  std::string_view ending = line.substr(line.size() - 1);
  line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') {
    ending = std::string_view(line.data() + line.size() - 1, 2);
    line.remove_suffix(1);
  }
  if (line == "\\.") return false;
  const size_t start = out.size();
  size_t index = 0, pos = 0;
  bool changed = false;
  uint64_t masked = 0;
  while (true) {
    CopyField f;
    size_t end = 0;
    if (const char* error = scan_copy_field(line, pos, format, &f, &end)) {
      out.resize(start);
      ++rows_malformed_;
      return malformed(std::string("malformed COPY row: ") + error);
    }
    std::string_view field = line.substr(f.begin, f.end - f.begin);
    if (index > 0) out.push_back(format.delimiter);
    const ColumnMask* mask = index < plan_.columns.size() ? &plan_.columns[index] : nullptr;
    if (mask == nullptr || mask->function == MaskFunction::kNone ||
        (!f.quoted && field == format.null_marker)) {
      out.append(field);
    } else {
      if (f.quoted) {
        csv_decode(field.substr(1, field.size() - 2), format, decoded_);
      } else if (format.csv) {
        decoded_.assign(field);
      } else {
        copy_decode(field, decoded_);
      }
      scratch_.clear();
      // COPY text/CSV is text whatever the column's wire format in the plan.
      bool present = mask_value(*mask, /*binary=*/false, decoded_, scratch_);
      if (!present) {
        out.append(format.null_marker);
      } else if (format.csv) {
        csv_encode(scratch_, format, out);
      } else {
        copy_encode(scratch_, format.delimiter, out);
      }
      if (!present || scratch_ != decoded_) {
        changed = true;
        ++masked;
      }
    }
    ++index;
    if (end >= line.size()) break;
    pos = end + 1;
  }
  if (plan_.column_count != 0 && index != plan_.column_count) {
    out.resize(start);
    ++rows_malformed_;
    return malformed("COPY line has " + std::to_string(index) + " columns but the result has " +
                     std::to_string(plan_.column_count));
  }
  if (!changed) {
    out.resize(start);
    ++rows_passed_;
    return false;
  }
  out.append(ending);
  ++rows_masked_;
  values_masked_ += masked;
  return true;
}

}  // namespace pgwarden::masking
