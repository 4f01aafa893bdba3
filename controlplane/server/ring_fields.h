// The dp's typed event records (common/protocol/event_record.h) as the Recorder's and the audit
// log's pre-serialised fields, without a JSON tree per record: pgwarden-cp's per-statement path.
//
// ring_record_fields() gives exactly the fields record_to_json() gives (without "kind"), as
// RecordFields::from_json() would serialise them, so a recording does not depend on which path
// built it (ring_fields_test.cc compares the bytes). audit_fields() maps event fields to the
// audit log's keys as EscalationServer does for JSON events.
#pragma once

#include <string>
#include <string_view>

#include "common/protocol/event_record.h"
#include "common/status.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/recording/record_fields.h"

namespace pgwarden::server {

// A kStatement, kStatementRecord, kStatementEnd or kRows payload (validated while read) as the
// recording's fields; `sql` gets the statement's SQL as audited (empty for rows).
// invalid_argument (08P01) for a malformed payload or another record type.
Status ring_record_fields(protocol::RecordType type, std::string_view payload,
                          recording::RecordFields& out, std::string& sql);

// Whether `recorded` (a recording's record as read back, without "hash") is the record that
// kStatementRecord `payload` makes: every field equal, nothing else but the envelope (seq, ts,
// session_id, kind, prev). False for a malformed payload.
bool recorded_as(const nlohmann::json& recorded, std::string_view payload);

// Adds the audit keys of event fields `f` to `r.fields`: "sql", "rule" and "message" (as
// "reason") and "verdict" (as "decision") when they are non-empty strings, every other field as
// it is (the AuditLog filters secrets and "ts").
void audit_fields(const recording::RecordFields& f, audit::AuditRecord& r);

}  // namespace pgwarden::server
