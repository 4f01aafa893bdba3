// Fuzzes dataplane/masking: arbitrary bytes as DataRow bodies and COPY rows (text format, CSV
// with default options, CSV with ';' / single quote / backslash escape) under plans chosen by
// the first input byte. Never crashes, never reads out of bounds, every rewritten DataRow parses
// back with the same column count, and every rewritten COPY row is itself accepted as exactly
// one row with the plan's field count. The same bytes as ErrorResponse/NoticeResponse and
// NotificationResponse bodies through error_redaction: a rewrite always parses back.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dataplane/masking/error_redaction.h"
#include "dataplane/masking/mask_apply.h"
#include "dataplane/pgwire/messages.h"

using namespace pgwarden;

namespace {

void digits_detector(std::string_view v, std::vector<masking::DetectSpan>* spans) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] >= '0' && v[i] <= '9') spans->push_back({i, i + 3});  // may run past the end
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t selector = data[0];
  const uint8_t count = data[1] & 7;
  masking::RowMaskPlan plan;
  plan.column_count = (selector & 0x80) ? count : 0;
  plan.hash_key = std::string(32, '\x11');
  for (uint8_t i = 0; i < count; ++i) {
    masking::ColumnMask m;
    m.function = static_cast<masking::MaskFunction>((selector + i) % 7);
    m.keep_last = (selector >> 3) & 7;
    m.format = (selector >> 6) & 1;
    m.type_oid = (i & 1) ? 25 : 23;
    plan.columns.push_back(m);
  }
  auto masker = masking::RowMasker::create(plan, digits_detector);
  if (!masker.is_ok()) return 0;
  pgwire::Bytes body(data + 2, size - 2);
  std::string out;
  auto r = (*masker)->mask_data_row(body, out);
  if (r.is_ok() && *r) {
    pgwire::DataRow before, after;
    if (!pgwire::parse(body, &before).ok()) __builtin_trap();
    if (out.size() < 5 || out[0] != 'D') __builtin_trap();
    if (!pgwire::parse(pgwire::as_bytes(std::string_view(out).substr(5)), &after).ok()) {
      __builtin_trap();
    }
    if (before.columns.size() != after.columns.size()) __builtin_trap();
  }
  for (char type : {'E', 'N'}) {
    out.clear();
    auto e =
        masking::redact_error_message(type, pgwire::as_string_view(body), digits_detector, out);
    if (e.is_ok() && *e) {
      pgwire::ErrorResponse after;
      if (out.size() < 5 || out[0] != type) __builtin_trap();
      if (!pgwire::parse(pgwire::as_bytes(std::string_view(out).substr(5)), &after).ok()) {
        __builtin_trap();
      }
    }
  }
  out.clear();
  auto n = masking::redact_notification(pgwire::as_string_view(body), digits_detector, out);
  if (n.is_ok() && *n) {
    pgwire::NotificationResponse after;
    if (!pgwire::parse(pgwire::as_bytes(std::string_view(out).substr(5)), &after).ok()) {
      __builtin_trap();
    }
  }
  const masking::CopyFormat formats[] = {masking::CopyFormat::text(),
                                         masking::CopyFormat::csv_default(),
                                         masking::CopyFormat{true, ';', "NULL", '\'', '\\'}};
  for (const masking::CopyFormat& format : formats) {
    out.clear();
    auto c = (*masker)->mask_copy_line(pgwire::as_string_view(body), out, format);
    if (c.is_ok() && *c) {
      // The rewritten row must parse as one row again (re-encoding kept the structure).
      masking::RowMaskPlan none;
      none.column_count = plan.column_count;
      none.columns.assign(count, masking::ColumnMask{masking::MaskFunction::kRedact});
      auto check = masking::RowMasker::create(none);
      std::string again;
      if (check.is_ok() && !(*check)->mask_copy_line(out, again, format).is_ok()) __builtin_trap();
    }
  }
  return 0;
}
