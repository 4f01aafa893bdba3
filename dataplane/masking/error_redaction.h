// What PostgreSQL's error, notice and notification texts may show of row values, masked before
// they reach an agent whose policy masks columns (docs/masking.md, "Errors, notices and
// notifications").
//
// * ErrorResponse / NoticeResponse of SQLSTATE class 23 (integrity constraint violation): the
//   DETAIL field is replaced. PostgreSQL writes the values of the failing row or key there
//   ("Failing row contains (1, null, 123-45-6789, ...)", "Key (ssn)=(123-45-6789) already
//   exists", "... is still referenced from table ..."), including columns the statement never
//   named, so an UPDATE of an unmasked column that violates NOT NULL or CHECK would show the
//   masked ones. The field is replaced whatever the message language. The same for class 44
//   (WITH CHECK OPTION violation): a write through an auto-updatable view that leaves the
//   view's WHERE shows the base table's whole row there, columns the view hides included.
// * Every free-text field (message, detail, hint, context, internal query) and a
//   NotificationResponse's payload go through the content detectors, when there are any:
//   detected spans become one '*' per byte, like COPY (query) lines.
//
// Thread-safety: pure functions; `detector` must be callable from the calling thread.
#pragma once

#include <string>
#include <string_view>

#include "dataplane/masking/mask_apply.h"

namespace pgwarden::masking {

// The DETAIL that replaces PostgreSQL's for classes 23 and 44.
inline constexpr std::string_view kRedactedRowDetail =
    "pgwarden: detail removed: it can show row values and the session's policy masks columns";

// `type` 'E' or 'N', `body` the message body (after the Int32 length). Returns false when the
// message passes unchanged (nothing appended), true after appending the whole rewritten message
// to `out`. A malformed body is an error (08P01) and appends nothing. `detector` may be empty.
Result<bool> redact_error_message(char type, std::string_view body, const Detector& detector,
                                  std::string& out);

// NotificationResponse ('A') body: the payload through the detectors. Same contract.
Result<bool> redact_notification(std::string_view body, const Detector& detector, std::string& out);

}  // namespace pgwarden::masking
