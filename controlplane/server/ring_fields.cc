#include "controlplane/server/ring_fields.h"

#include <charconv>
#include <vector>

namespace pgwarden::server {

namespace {

// RowsVisitor building the "columns" and "rows" members' canonical text.
class RowsToFields : public protocol::RowsVisitor {
 public:
  void column(std::string_view name, uint32_t type_oid) override {
    columns_ += columns_.size() > 1 ? ",{\"name\":" : "{\"name\":";
    recording::append_canonical_string(columns_, protocol::text_value(name, false, scratch_));
    columns_ += ",\"type_oid\":";
    append_number(columns_, type_oid);
    columns_ += '}';
  }
  void begin_row() override {
    rows_ += ends_.empty() ? "[" : ",[";
    first_value_ = true;
  }
  void value(std::string_view v, bool binary) override {
    separate();
    recording::append_canonical_string(rows_, protocol::text_value(v, binary, scratch_));
  }
  void null() override {
    separate();
    rows_ += "null";
  }
  void end_row() override {
    rows_ += ']';
    ends_.push_back(static_cast<uint32_t>(rows_.size()));
  }
  void rendered_row(const nlohmann::json& values) override {
    if (!ends_.empty()) rows_ += ',';
    recording::append_canonical(rows_, values);
    ends_.push_back(static_cast<uint32_t>(rows_.size()));
  }

  // Empties the buffers for the next record, keeping their capacity.
  void reset() {
    columns_.assign(1, '[');
    rows_.assign(1, '[');
    ends_.clear();
    first_value_ = true;
  }

  void finish(int64_t ts_ms, recording::RecordFields& out) {
    columns_ += ']';
    rows_ += ']';
    out.add_canonical("columns", columns_);
    out.add_rows(rows_, ends_);
    out.add("ts_ms", ts_ms);
  }

 private:
  static void append_number(std::string& out, uint32_t v) {
    char b[12];
    auto r = std::to_chars(b, b + sizeof b, v);
    out.append(b, r.ptr);
  }
  void separate() {
    if (!first_value_) rows_ += ',';
    first_value_ = false;
  }

  std::string columns_ = "[";
  std::string rows_ = "[";
  std::vector<uint32_t> ends_;
  std::string scratch_;
  bool first_value_ = true;
};

}  // namespace

Status ring_record_fields(protocol::RecordType type, std::string_view payload,
                          recording::RecordFields& out, std::string& sql) {
  using protocol::RecordType;
  switch (type) {
    case RecordType::kStatement:
    case RecordType::kStatementRecord: {
      auto f = protocol::StatementFields::decode(payload);
      if (!f.is_ok()) return f.status();
      f->put_fields(out);
      sql.assign(f->sql);
      return Status::ok();
    }
    case RecordType::kStatementEnd: {
      auto f = protocol::StatementEndFields::decode(payload);
      if (!f.is_ok()) return f.status();
      std::string scratch;
      f->put_fields(out, scratch);
      sql.assign(protocol::text_value(f->sql, false, scratch));
      return Status::ok();
    }
    case RecordType::kRows: {
      thread_local RowsToFields rows;  // scratch buffers reused record after record
      rows.reset();
      auto ts_ms = protocol::visit_rows(payload, rows);
      if (!ts_ms.is_ok()) return ts_ms.status();
      rows.finish(*ts_ms, out);
      sql.clear();
      return Status::ok();
    }
    case RecordType::kEventJson:
      break;
  }
  return invalid_argument(
      "event record type " + std::to_string(static_cast<unsigned>(type)) + " has no typed fields",
      "08P01");
}

void audit_fields(const recording::RecordFields& f, audit::AuditRecord& r) {
  for (const auto& m : f.members()) {
    std::string_view key = f.key(m);
    std::string_view value = f.value(m);
    std::string_view as = key == "verdict" ? "decision" : key == "message" ? "reason" : key;
    if (key == "sql" || key == "rule" || key == "verdict" || key == "message") {
      // The record's own keys: only non-empty strings (a JSON string is quoted).
      if (value.size() <= 2 || value.front() != '"') continue;
    }
    r.fields.add_canonical(as, value);
  }
}

bool recorded_as(const nlohmann::json& recorded, std::string_view payload) {
  recording::RecordFields fields;
  std::string sql;
  if (!recorded.is_object() ||
      !ring_record_fields(protocol::RecordType::kStatementRecord, payload, fields, sql).is_ok()) {
    return false;
  }
  const nlohmann::json want = nlohmann::json::parse(fields.to_canonical(), nullptr, false);
  if (!want.is_object()) return false;
  size_t compared = 0;
  for (const auto& [key, value] : recorded.items()) {
    if (key == "seq" || key == "ts" || key == "session_id" || key == "kind" || key == "prev" ||
        key == "hash") {
      continue;
    }
    auto w = want.find(key);
    if (w == want.end() || *w != value) return false;
    ++compared;
  }
  return compared == want.size();
}

}  // namespace pgwarden::server
