// Mask apply: rewrites result values (DataRow messages, COPY TO STDOUT text lines) according
// to a mask plan computed by pgwarden-cp (controlplane/masking) for one RowDescription.
//
// The plan arrives as the `mask_plan` response of the dp<->cp protocol (docs/protocol.md):
//   {"column_count": N, "columns": [{"index", "function", "text", "keep_last", "type_oid",
//    "format"}], "detect": bool, "hash_key": "<64 hex>"}
// The dataplane gets only `hash_key`, a per-policy pseudonymisation key derived by cp; it never
// sees a database credential or the vault master key.
//
// Functions (value -> masked value):
//   redact   the plan's fixed text (default "****")
//   partial  '*' for every character but the last keep_last (UTF-8 characters, not bytes);
//            never reveals more than half of the value's characters
//   hash     lowercase hex HMAC-SHA256(hash_key, value): deterministic per policy, so equal
//            values still join/group, but not reversible without the key
//   email    "***@" + the domain after the last '@' ("***" when there is no '@')
//   null     SQL NULL
//   detect   the detector callback's spans are replaced by one '*' per UTF-8 character, so
//            the value keeps its length in characters (varchar(n) limits still hold)
// NULL values stay NULL under every function.
//
// Formats: text format values are rewritten as text whatever the column type. Binary format:
// for text-like types (text, varchar, bpchar, name) the bytes are the string and are
// rewritten the same way; `detect` also scans the binary forms of json (its text) and jsonb
// (version byte 1, then its text); for every other type any function yields NULL (a
// replacement would not be a valid binary encoding of the type).
//
// Thread-safety: a RowMasker is used by one session at a time (it owns scratch buffers); the
// plan is immutable after create().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "dataplane/pgwire/wire.h"

namespace pgwarden::masking {

enum class MaskFunction : uint8_t { kNone, kRedact, kPartial, kHash, kEmail, kNull, kDetect };

std::string_view mask_function_name(MaskFunction f);
// "redact" | "partial" | "hash" | "email" | "null" | "detect"; kNone for anything else.
MaskFunction parse_mask_function(std::string_view name);

inline constexpr size_t kMaxRedactText = 1024;
inline constexpr size_t kHashKeyBytes = 32;

struct ColumnMask {
  MaskFunction function = MaskFunction::kNone;
  std::string text = "****";  // redact
  int keep_last = 4;          // partial
  uint32_t type_oid = 0;      // from the RowDescription
  int16_t format = 0;         // 0 text, 1 binary
};

// True when the masked form of a non-NULL value of this column does not depend on the value
// (redact, null; any function but detect on a binary value of a non-text type, which becomes
// NULL): such a value can be dropped unread and masked from a placeholder.
bool mask_ignores_value(const ColumnMask& mask);

struct RowMaskPlan {
  // The RowDescription's field count; a DataRow with another count is rejected. 0 = unchecked.
  size_t column_count = 0;
  std::vector<ColumnMask> columns;  // by column index; missing entries pass through
  std::string hash_key;             // raw key bytes for `hash` (kHashKeyBytes)

  bool empty() const;
  bool needs_detector() const;
  // Parses and validates the cp response (see the file comment). invalid_argument on a bad
  // index, function, keep_last, over-long text, or a hash function without a 32-byte key.
  static Result<RowMaskPlan> from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
};

// A detector match in a value: byte offsets [begin, end).
struct DetectSpan {
  size_t begin = 0;
  size_t end = 0;
};
// Appends the spans of sensitive content found in `value` to `*spans` (any order; overlaps and
// out-of-range spans are tolerated). Wire rules::detect here. Must be thread-compatible.
using Detector = std::function<void(std::string_view value, std::vector<DetectSpan>* spans)>;

// COPY TO STDOUT row format (the options of the COPY statement; docs/masking.md).
struct CopyFormat {
  bool csv = false;
  char delimiter = '\t';            // CSV default ','
  std::string null_marker = "\\N";  // CSV default ""
  char quote = '"';                 // CSV only
  char escape = '"';                // CSV only (defaults to quote)

  static CopyFormat text() { return {}; }
  static CopyFormat csv_default() { return {true, ',', "", '"', '"'}; }
};

#define PGW_MASK_COUNTERS(X) \
  X(rows_masked)             \
  X(rows_passed)             \
  X(values_masked)           \
  X(detect_spans)            \
  X(rows_malformed)

class RowMasker {
 public:
  // failed_precondition when the plan has detect columns but no detector is given.
  static Result<std::unique_ptr<RowMasker>> create(RowMaskPlan plan, Detector detector = {});

  // `body`: one DataRow message body (the bytes after the Int32 length; pgwire Message::body).
  // Returns false when nothing changes (nothing is appended: forward the original message; no
  // parsing and no allocation happen when the plan is empty), true after appending one whole
  // rewritten DataRow message ('D', length, body) to `out`. A malformed body or a column
  // count other than the plan's is an error (SQLSTATE 08P01) and appends nothing.
  Result<bool> mask_data_row(pgwire::Bytes body, std::string& out);

  // `line`: one CopyData payload of COPY TO STDOUT, which must hold exactly one whole row
  // ending in "\n" (or "\r\n"): text format (backslash escapes, delimiter, NULL marker) or
  // CSV (quoted fields may hold delimiters, quotes and newlines; a quoted field is never NULL).
  // Masked values are re-encoded for the format (escaped, or quoted when PostgreSQL would quote
  // them; `null` writes the NULL marker). Same return contract as mask_data_row(); on true the
  // rewritten row (same ending) is appended to `out`. A message that is not exactly one row
  // (no terminator, a raw newline outside a quoted field, an unterminated quote, text after a
  // closing quote) or has a field count other than the plan's is an error (08P01). The
  // end-of-data marker "\." passes through.
  Result<bool> mask_copy_line(std::string_view line, std::string& out,
                              const CopyFormat& format = {});

  const RowMaskPlan& plan() const { return plan_; }

#define PGW_DECLARE_COUNTER(name) \
  uint64_t name() const { return name##_; }
  PGW_MASK_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER

  ~RowMasker();

 private:
  RowMasker(RowMaskPlan plan, Detector detector);
  // Appends the masked form of a non-NULL value; returns false when the result is NULL.
  bool mask_value(const ColumnMask& mask, bool binary, std::string_view value, std::string& out);
  // Appends `value` with the detector's spans replaced by one '*' per UTF-8 character.
  void mask_detected(std::string_view value, std::string& out);
  void hmac_hex(std::string_view value, std::string& out);

  RowMaskPlan plan_;
  Detector detector_;
  std::vector<DetectSpan> spans_;
  std::string scratch_;
  std::string decoded_;
  struct HmacState;
  std::unique_ptr<HmacState> hmac_;
#define PGW_DEFINE_COUNTER(name) uint64_t name##_ = 0;
  PGW_MASK_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER
};

// UTF-8 helpers (tolerant of invalid input: every byte that is not a continuation byte starts
// a character).
size_t utf8_length(std::string_view s);

}  // namespace pgwarden::masking
