// Binary event records carried on the event ring (event_ring.h); docs/protocol.md, "Event
// records", is the normative layout.
//
// Each payload is a fixed sequence of typed fields, little-endian: u8, u32, i32, u64, i64 and
// `bytes` (u32 length + that many bytes; length 0xffffffff = SQL NULL in rows). The dp writes
// them without building any JSON; cp decodes them (validating every length before reading)
// into the same event fields the JSON path carries, so a recording does not depend on how
// its events travelled. Strings that are text for the recording (SQL, names, values of
// text-format columns) are kept verbatim; text_value_json() renders them (invalid UTF-8 and
// binary-format values as "\x<hex>").
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::protocol {

enum class RecordType : uint16_t {
  kEventJson = 1,        // a rare event (session_start, error, session_end, ...): JSON object
  kStatement = 2,        // a statement decision (no answer expected)
  kStatementRecord = 3,  // a write-ahead statement record: answered through the watermark
  kStatementEnd = 4,     // a unit's completion (phase end)
  kRows = 5,             // result rows as the client saw them
};

enum class Verdict : uint8_t { kAllow = 0, kDeny = 1 };
std::string_view verdict_name(Verdict v);
Verdict verdict_from(std::string_view name);  // anything but "allow" is a deny

// Where a statement decision came from.
enum class DecisionSource : uint8_t {
  kPrescreen = 0,
  kCache = 1,
  kCp = 2,
  kCpError = 3,
  kApproval = 4,
  kRecording = 5,
  kExecute = 6,
  kFunctionCall = 7,
  kBudget = 8,  // refused (or sent for approval) by an exhausted budget (docs/budgets.md)
};
std::string_view source_name(DecisionSource s);
Result<DecisionSource> source_from(std::string_view name);

// kStatement and kStatementRecord. Views point into the caller's strings (encode) or the
// payload (decode).
struct StatementFields {
  Verdict verdict = Verdict::kAllow;
  DecisionSource source = DecisionSource::kCp;
  bool has_shape_key = false;
  bool params_truncated = false;
  int64_t ts_ms = 0;
  uint64_t shape_key = 0;
  std::string_view sql;
  std::string_view rule;
  std::string_view approval_id;
  std::string_view portal;       // execute: the portal name
  std::string_view params_json;  // execute: bound parameters as a JSON array ("" = none)
  void encode(std::string& out) const;
  static Result<StatementFields> decode(std::string_view payload);
  // {"kind": "statement", "sql", "shape_key"?, "verdict", "rule", "source", "approval_id"?,
  //  "portal"?, "params"?, "params_truncated"?, "ts_ms"}
  nlohmann::json to_json() const;
  // The same fields without "kind", each handed to `out.add(key, value)` (value: a
  // std::string_view, std::string, integer, bool or nlohmann::json): the one definition of the
  // fields for to_json() and for cp's pre-serialised recording fields (no tree).
  template <class Fields>
  void put_fields(Fields& out) const;
};

struct StatementEndFields {
  Verdict verdict = Verdict::kAllow;
  bool executed = false;
  int64_t ts_ms = 0;
  int64_t duration_ms = 0;
  uint64_t rows = 0;
  int32_t rows_recorded = 0;
  std::string_view sql;
  std::string_view rule;
  std::string_view approval_id;
  std::string_view sqlstate;  // "" = no error
  std::string_view error;
  // Layout 2 (trailing; a layout-1 payload decodes with both 0): the DataRow/CopyData bytes
  // the client received for this unit and the values in them that masking changed.
  uint64_t result_bytes = 0;
  uint64_t masked_cells = 0;
  void encode(std::string& out) const;
  static Result<StatementEndFields> decode(std::string_view payload);
  // {"kind": "statement", "phase": "end", "sql", "verdict", "rule", "duration_ms", "rows",
  //  "rows_recorded", "executed", "result_bytes", "masked_cells", "approval_id"?,
  //  "error": {"sqlstate", "message"}?, "ts_ms"}
  nlohmann::json to_json() const;
  // As StatementFields::put_fields. `scratch` holds renderings that are not views into the
  // payload (SQL that is not UTF-8); it must outlive the calls to `out.add`.
  template <class Fields>
  void put_fields(Fields& out, std::string& scratch) const;
};

// kRows, built incrementally: the columns (kept across batches), then rows.
//   i64 ts_ms, u32 column count, per column (bytes name, u32 type_oid, u8 format),
//   u32 row count, per row (u32 value count, per value bytes-or-NULL).
class RowsWriter {
 public:
  void clear_columns();
  void add_column(std::string_view name, uint32_t type_oid, int16_t format);
  void begin_row(uint32_t values);
  void add_value(std::string_view value);
  void add_null();
  // A whole row rendered by the caller: a JSON array of the recording's values (strings,
  // nulls, summaries of long values {"length", "sha256", "prefix"}), passed to cp as is.
  void add_rendered_row(const nlohmann::json& values);
  uint32_t rows() const { return rows_; }
  uint32_t columns() const { return columns_; }
  // The payload of the rows added since the last take() (the columns stay); REQUIRES: every
  // begun row got its values.
  std::string take(int64_t ts_ms);
  void clear_rows();

 private:
  std::string head_;
  std::string body_;
  uint32_t columns_ = 0;
  uint32_t rows_ = 0;
};
// {"kind": "rows", "columns": [{"name", "type_oid"}], "rows": [[value|null]], "ts_ms"}.
Result<nlohmann::json> rows_to_json(std::string_view payload);

// What a kRows payload holds, in order: column() per column, then per row begin_row(), its
// value()s and null()s, end_row() — or one rendered_row() (a JSON array of the recording's
// values). Views point into the payload. After an error return the calls made so far are to
// be discarded.
class RowsVisitor {
 public:
  virtual ~RowsVisitor() = default;
  virtual void column(std::string_view name, uint32_t type_oid) = 0;
  virtual void begin_row() = 0;
  virtual void value(std::string_view v, bool binary) = 0;
  virtual void null() = 0;
  virtual void end_row() = 0;
  virtual void rendered_row(const nlohmann::json& values) = 0;
};
// Validates `payload` while visiting it; returns its ts_ms.
Result<int64_t> visit_rows(std::string_view payload, RowsVisitor& visitor);

// The recording's rendering of a value: UTF-8 text as is, anything else "\x<hex>".
nlohmann::json text_value_json(std::string_view v, bool binary);
// The same as a view: `v` itself when it is rendered as is, else the hex rendering written to
// `scratch` (the view is then into `scratch`).
std::string_view text_value(std::string_view v, bool binary, std::string& scratch);

// A 64-bit id as 16 lowercase hex digits (session ids, shape keys).
std::string session_hex(uint64_t v);
// The same written to `buf` (no allocation); the view is into `buf`.
std::string_view session_hex(uint64_t v, char (&buf)[16]);

// Records cp puts on the backward ring (cp -> dp).
enum class BackwardType : uint16_t {
  // A write-ahead record (header seq) was refused: the payload is the error object
  // {"sqlstate", "code", "message"} as JSON (rare path).
  kRecordRefused = 1,
};

// Any record as the event fields the JSON path carries ({"kind", ...}; no session_id).
Result<nlohmann::json> record_to_json(RecordType type, std::string_view payload);

// ---------------------------------------------------------------------------------------------

template <class Fields>
void StatementFields::put_fields(Fields& out) const {
  out.add("sql", sql);
  char hex[16];
  if (has_shape_key) out.add("shape_key", session_hex(shape_key, hex));
  out.add("verdict", verdict_name(verdict));
  out.add("rule", rule);
  out.add("source", source_name(source));
  if (!approval_id.empty()) out.add("approval_id", approval_id);
  if (source == DecisionSource::kExecute) out.add("portal", portal);
  if (!params_json.empty()) {
    nlohmann::json params = nlohmann::json::parse(params_json, nullptr, false);
    if (!params.is_discarded()) out.add("params", params);
  }
  if (params_truncated) out.add("params_truncated", true);
  out.add("ts_ms", ts_ms);
}

template <class Fields>
void StatementEndFields::put_fields(Fields& out, std::string& scratch) const {
  out.add("phase", std::string_view("end"));
  out.add("sql", text_value(sql, false, scratch));
  out.add("verdict", verdict_name(verdict));
  out.add("rule", rule);
  out.add("duration_ms", duration_ms);
  out.add("rows", rows);
  out.add("rows_recorded", rows_recorded);
  out.add("executed", executed);
  out.add("result_bytes", result_bytes);
  out.add("masked_cells", masked_cells);
  if (!approval_id.empty()) out.add("approval_id", approval_id);
  if (!sqlstate.empty()) {
    out.add("error", nlohmann::json{{"sqlstate", std::string(sqlstate)},
                                    {"message", text_value_json(error, false)}});
  }
  out.add("ts_ms", ts_ms);
}

}  // namespace pgwarden::protocol
