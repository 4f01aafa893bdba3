// dp <-> cp escalation protocol v1: message types. docs/protocol.md is the normative spec.
//
// Every request is a JSON object {"id": uint64, "type": string, "deadline_ms": int64, ...};
// every response {"id", "ok": true, ...} or {"id", "ok": false, "error": {sqlstate, code,
// message}}. Each struct has to_json() and a static from_json() that validates types and
// required fields and returns a "bad_request" error naming the field. Unknown fields are
// ignored (forward compatibility within protocol 1).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/protocol/frame.h"
#include "common/protocol/grant_types.h"
#include "common/status.h"

namespace pgwarden::protocol {

// Error codes ("error.code"). Each maps to a SQLSTATE the dp shows the client.
namespace error_code {
inline constexpr std::string_view kBadFrame = "bad_frame";            // 08P01, then close
inline constexpr std::string_view kBadRequest = "bad_request";        // 08P01
inline constexpr std::string_view kUnknownType = "unknown_type";      // 08P01
inline constexpr std::string_view kHelloRequired = "hello_required";  // 08P01, then close
inline constexpr std::string_view kUnsupportedProtocol = "unsupported_protocol";      // 08P01
inline constexpr std::string_view kDeadlineExceeded = "deadline_exceeded";            // 57014
inline constexpr std::string_view kOverloaded = "overloaded";                         // 53300
inline constexpr std::string_view kUnknownSession = "unknown_session";                // 08P01
inline constexpr std::string_view kInvalidToken = "invalid_token";                    // 28P01
inline constexpr std::string_view kUnknownTarget = "unknown_target";                  // 3D000
inline constexpr std::string_view kNoPolicy = "no_policy";                            // 28000
inline constexpr std::string_view kNoMechanism = "no_supported_mechanism";            // 28000
inline constexpr std::string_view kCredentialUnavailable = "credential_unavailable";  // 08006
inline constexpr std::string_view kScramFailed = "scram_failed";                      // 28000/28P01
inline constexpr std::string_view kNotAvailable = "not_available";                    // 0A000
inline constexpr std::string_view kInternal = "internal";                             // XX000
inline constexpr std::string_view kUnavailable = "unavailable";  // 08006 (e.g. catalog down)
inline constexpr std::string_view kRecordingBackpressure = "recording_backpressure";  // 53000
inline constexpr std::string_view kRecordingFailed = "recording_failed";   // 53100 / 58030
inline constexpr std::string_view kAuditFailed = "audit_failed";           // 53100 / 58030
inline constexpr std::string_view kCopyNotMaskable = "copy_not_maskable";  // 42501
// authenticate: 28000 (identity or key revoked); reregister: 57P01 (the grant no longer holds)
inline constexpr std::string_view kRevoked = "revoked";
inline constexpr std::string_view kBadTicket = "bad_ticket";  // reregister: 57P01
}  // namespace error_code

struct ErrorInfo {
  std::string sqlstate;
  std::string code;
  std::string message;
};

// Builders for response frames.
json make_ok(uint64_t id, json fields = json::object());
json make_error(uint64_t id, const ErrorInfo& error);
// Error from a Status: its SQLSTATE (default 08P01 for protocol errors) and message.
json make_error(uint64_t id, std::string_view code, const Status& status);

// Fields every request carries. `deadline_ms` is absolute unix-epoch milliseconds; hello
// may omit it (0 = none).
struct RequestHeader {
  uint64_t id = 0;
  std::string type;
  int64_t deadline_ms = 0;
};
Result<RequestHeader> parse_request_header(const json& j);
// Current unix-epoch milliseconds (system clock), the clock deadlines are expressed in.
int64_t now_unix_ms();

struct Hello {
  uint32_t protocol = kProtocolVersion;
  std::string dp;  // "pgwarden-dp/0.1"
  json to_json(uint64_t id) const;
  static Result<Hello> from_json(const json& j);
};

struct AuthenticateRequest {
  std::string session_id;
  std::string token;  // secret: never logged, never echoed in errors
  std::string user;
  std::string target;
  std::string client_addr;
  bool tls = false;
  json to_json(uint64_t id, int64_t deadline_ms) const;
  static Result<AuthenticateRequest> from_json(const json& j);
};

struct IdentityInfo {
  std::string subject;
  std::string issuer;
  std::vector<std::string> groups;
};

struct PolicyGrant {
  std::string name;
  uint64_t version = 0;
  bool read_only = true;
  std::vector<std::string> rule_sets;
  RecordingLevel recording = RecordingLevel::kFull;
  bool allow_function_call = false;
  // Statements wait for their record (write-ahead); never with recording kOff.
  bool recording_required = true;
  // The policy has mask rules: error, notice and notification texts are redacted. Absent:
  // true (fail closed).
  bool masks_values = true;
  // The config version of the masks cp decides the session's statements with
  // (policy::Policy::masks_version); 0 when cp did not say.
  uint64_t masks_version = 0;
};

struct UpstreamInfo {
  std::string host;
  int port = 5432;
  std::string unix_socket;
  std::string database;
  std::string role;
  UpstreamTlsMode tls_mode = UpstreamTlsMode::kDisable;
  std::string ca_file;
  // The target's pooling (docs/dataplane.md "Transaction pooling"): one upstream connection
  // per agent session, or shared per transaction; absent from an older cp = kSession.
  PoolMode pool_mode = PoolMode::kSession;
  int pool_size = 20;               // transaction mode: connections per pool key per worker
  int pool_wait_timeout_ms = 5000;  // transaction mode: longest wait for a free connection
};

struct AuthenticateResponse {
  IdentityInfo identity;
  PolicyGrant policy;
  UpstreamInfo upstream;
  std::map<std::string, std::string> startup_parameters;
  json to_json() const;  // the fields after "ok": true
  static Result<AuthenticateResponse> from_json(const json& j);
};

struct ScramStartRequest {
  std::string session_id;
  std::vector<std::string> mechanisms;
  static Result<ScramStartRequest> from_json(const json& j);
  json to_json(uint64_t id, int64_t deadline_ms) const;
};
struct ScramContinueRequest {
  std::string session_id;
  std::string server_first;
  static Result<ScramContinueRequest> from_json(const json& j);
  json to_json(uint64_t id, int64_t deadline_ms) const;
};
struct ScramFinishRequest {
  std::string session_id;
  std::string server_final;
  static Result<ScramFinishRequest> from_json(const json& j);
  json to_json(uint64_t id, int64_t deadline_ms) const;
};

struct PrescreenHit {
  std::string rule;
  std::string action;  // deny | approve | detect
};

struct AnalyseRequest {
  std::string session_id;
  std::string sql;
  std::string shape_key;  // hex
  std::vector<PrescreenHit> prescreen;
  static Result<AnalyseRequest> from_json(const json& j);
  json to_json(uint64_t id, int64_t deadline_ms) const;
};
struct AnalyseResponse {
  std::string verdict;  // allow | deny | approve
  std::string rule;
  std::string message;
  bool cacheable = false;
  // A deny that PostgreSQL itself would have answered (e.g. a syntax error): the client gets
  // this SQLSTATE and `message` verbatim, with `position` (1-based character, 0 = none) as the
  // ErrorResponse's P field. Empty: a policy refusal (42501, "pgwarden: statement denied ...").
  std::string sqlstate;
  int32_t position = 0;
  json to_json() const;
  static Result<AnalyseResponse> from_json(const json& j);
};

struct ApprovalRequest {
  std::string session_id;
  std::string sql;
  std::string shape_key;
  std::string rule;
  std::string reason;
  static Result<ApprovalRequest> from_json(const json& j);
  json to_json(uint64_t id, int64_t deadline_ms) const;
};
struct ApprovalResponse {
  std::string verdict;  // allow | deny
  std::string approval_id;
  std::string reason;
  json to_json() const;
  static Result<ApprovalResponse> from_json(const json& j);
};

struct FieldDescription {
  std::string name;
  uint32_t table_oid = 0;
  int32_t attnum = 0;
  uint32_t type_oid = 0;
  int32_t format = 0;
};
// The COPY TO STDOUT variant of mask_plan: the statement text that produced a CopyOutResponse
// (`index`: which COPY TO STDOUT of a multi-statement simple Query, from 0) and the
// CopyOutResponse's overall format (0 text/CSV, 1 binary) and column count.
struct CopyPlanRequest {
  std::string sql;
  int32_t index = 0;
  int32_t format = 0;
  int32_t columns = 0;
};
// Either `fields` (a RowDescription) or `copy` (a COPY TO STDOUT).
struct MaskPlanRequest {
  std::string session_id;
  std::vector<FieldDescription> fields;
  std::optional<CopyPlanRequest> copy;
  static Result<MaskPlanRequest> from_json(const json& j);
  json to_json(uint64_t id, int64_t deadline_ms) const;
};
// {"plan": {"column_count", "columns": [{"index", "function", "text", "keep_last",
// "type_oid", "format"}], "detect", "hash_key": hex}}: the plan is controlplane/masking's
// MaskPlan::to_json(), consumed as is by dataplane/masking's RowMaskPlan::from_json().
// from_json() checks the envelope and the columns' shape; the dp's RowMaskPlan::from_json()
// does the full validation.
// For a COPY request also {"copy": {"format": "text"|"csv"|"binary", "delimiter", "null",
// "quote", "escape", "header": bool, "line_detect": bool}} (docs/protocol.md).
struct MaskPlanResponse {
  json plan = json::object();
  json copy;  // null unless the request was a COPY
  json to_json() const;
  static Result<MaskPlanResponse> from_json(const json& j);
};

// {"type":"event","session_id", "kind": session_start|statement|rows|error|session_end|
// wire_deny|dataplane_stats|wire_rules_reload|rules_applied, ...}. session_id is required
// except for the dataplane-wide kinds dataplane_stats, wire_rules_reload and rules_applied. Extra
// fields are kept verbatim in `fields`.
struct Event {
  std::string session_id;
  std::string kind;
  json fields = json::object();
  static Result<Event> from_json(const json& j);
  // The same, moving the fields out of `j` instead of copying them (per-event hot path).
  static Result<Event> from_json(json&& j);
  json to_json() const;
};

}  // namespace pgwarden::protocol
