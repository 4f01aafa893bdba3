#include "dataplane/masking/error_redaction.h"

#include <algorithm>
#include <vector>

#include "dataplane/pgwire/messages.h"

namespace pgwarden::masking {

namespace pw = pgwarden::pgwire;

namespace {

// Fields PostgreSQL fills with free text (the others hold names, numbers and codes).
bool free_text(char code) {
  return code == pw::kFieldMessage || code == pw::kFieldDetail || code == pw::kFieldHint ||
         code == 'W' /* context */ || code == 'q' /* internal query */;
}

// `value` with every detected byte replaced by '*'; false when nothing was detected.
bool detect_into(const Detector& detector, std::string_view value, std::string* out) {
  if (!detector || value.empty()) return false;
  std::vector<DetectSpan> spans;
  detector(value, &spans);
  bool changed = false;
  std::string masked(value);
  for (const DetectSpan& s : spans) {
    size_t end = std::min(s.end, masked.size());
    for (size_t i = s.begin; i < end; ++i) {
      masked[i] = '*';
      changed = true;
    }
  }
  if (changed) *out = std::move(masked);
  return changed;
}

}  // namespace

Result<bool> redact_error_message(char type, std::string_view body, const Detector& detector,
                                  std::string& out) {
  pw::ErrorResponse parsed;  // a NoticeResponse has the same fields
  if (!pw::parse(pw::as_bytes(body), &parsed).ok()) {
    return invalid_argument("malformed error or notice message", "08P01");
  }
  // The classes whose DETAIL PostgreSQL fills with a row or key (ExecBuildSlotValueDescription,
  // BuildIndexValueDescription, ri_ReportViolation, partition keys): 23, and 44 for a write
  // through a view WITH CHECK OPTION, which shows the base table's whole row.
  const std::string_view klass = parsed.sqlstate().substr(0, 2);
  const bool integrity = klass == "23" || klass == "44";
  std::vector<pw::ErrorField> fields;
  std::vector<std::string> rewritten;  // owns rewritten values
  rewritten.reserve(parsed.fields.size());
  bool changed = false;
  for (const pw::ErrorField& f : parsed.fields) {
    pw::ErrorField field = f;
    if (integrity && f.code == pw::kFieldDetail) {
      field.value = kRedactedRowDetail;
      changed = true;
    } else if (free_text(f.code)) {
      std::string masked;
      if (detect_into(detector, f.value, &masked)) {
        rewritten.push_back(std::move(masked));
        field.value = rewritten.back();
        changed = true;
      }
    }
    fields.push_back(field);
  }
  if (!changed) return false;
  pw::append_error_fields(out, type, fields);
  return true;
}

Result<bool> redact_notification(std::string_view body, const Detector& detector,
                                 std::string& out) {
  pw::NotificationResponse n;
  if (!pw::parse(pw::as_bytes(body), &n).ok()) {
    return invalid_argument("malformed NotificationResponse", "08P01");
  }
  std::string masked;
  if (!detect_into(detector, n.payload, &masked)) return false;
  pw::append_notification_response(out, n.process_id, n.channel, masked);
  return true;
}

}  // namespace pgwarden::masking
