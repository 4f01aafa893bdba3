// Policy: what a session may do, as configured by operators (controlplane/config parses the
// JSON into these structs; controlplane/policy evaluates statements against them).
//
// Default deny: a statement runs only if an allow rule of the session's policy matches it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/protocol/grant_types.h"

namespace pgwarden::policy {

enum class Verdict { kAllow, kDeny, kApprove };

// How a result column is masked. See docs/configuration.md, "masks".
struct MaskRule {
  // Exactly one selector is set.
  std::string column_glob;    // "schema.table.column" with * and ? globs, e.g. "crm.*.email"
  std::string name_pattern;   // column-name glob regardless of table, e.g. "*ssn*"
  std::string type_name;      // PostgreSQL type name, e.g. "inet"
  std::string function;       // redact | partial | hash | email | null
  std::string text = "****";  // redact: replacement text
  int keep_last = 4;          // partial: characters kept at the end
  // Predicate forms allowed on the masked column (default none: a masked column in WHERE,
  // JOIN, ORDER BY, ... is refused): "is_null" (`col IS [NOT] NULL`), "equality_join"
  // (`a.col = b.col` where the other side is a masked column allowing it too).
  std::vector<std::string> allow_predicates;
};

struct ApprovalSettings {
  std::vector<std::string> approver_groups;  // who may decide (never the requester)
  int timeout_seconds = 300;                 // undecided after this -> deny
  // Distinct approvals (from members of approver_groups) a request needs; one deny denies.
  int required_approvals = 1;
  // Members may approve alone with a break-glass decision (a reason is required; audited as a
  // page). Empty: no break-glass for this policy.
  std::vector<std::string> break_glass_groups;
};

using RecordingLevel = protocol::RecordingLevel;  // common/protocol/grant_types.h

struct Policy {
  std::string name;
  std::vector<std::string> groups;   // identity groups the policy applies to ("*" = any)
  std::vector<std::string> targets;  // target names ("*" = any)
  // Statement kinds allowed, in the vocabulary of controlplane/policy/sql_analysis.h
  // (e.g. "select", "insert", "update", "delete", "copy_to_stdout", "set", ...), group
  // aliases ("ddl", "copy", "write", "prepared"), "set:<parameter glob>" entries, or "*".
  // See docs/policy.md.
  std::vector<std::string> allowed_kinds;
  // Relations (read or written) allowed, as "schema.table" globs; unqualified names resolve
  // against "public".
  std::vector<std::string> allowed_relations;
  // Dangerous functions (docs/policy.md, "Functions") that may be called anyway, as
  // "schema.name" globs (unqualified calls resolve to pg_catalog) or bare-name globs.
  std::vector<std::string> allowed_functions;
  // Read-only grant: writes denied, and default_transaction_read_only=on upstream.
  bool read_only = true;
  // Statement kinds that need a human approval even when allowed (same syntax as
  // allowed_kinds; nested kinds count, e.g. the DELETE in a data-modifying CTE).
  std::vector<std::string> approve_kinds;
  // Approvals by effect (docs/approvals.md): an UPDATE/DELETE/MERGE whose WHERE (ON) is
  // absent, folds to constant true or does not depend on the row, and every TRUNCATE, need a
  // human approval when the policy allows them at all.
  bool approve_unbounded_writes = true;
  // Writes (UPDATE/DELETE/INSERT/MERGE) whose planner row estimate (EXPLAIN, never run) is over
  // this need a human approval; 0 = no threshold.
  int approve_when_rows_over = 0;
  // Approval requests of writes also show the exact number of rows the statement would
  // change, measured by running it in a transaction that is rolled back on pgwarden-cp's own
  // connection (skipped, with the reason, where a rollback could not undo everything).
  bool dry_run = false;
  std::vector<std::string> rule_sets;  // rule set files (rules/sets/*.rules) for the prescreen
  std::vector<MaskRule> masks;
  // Deny statements that use a masked column inside an expression instead of relying on
  // content detectors.
  bool deny_masked_in_expressions = false;
  ApprovalSettings approvals;
  RecordingLevel recording = RecordingLevel::kFull;
  bool recording_required = true;  // hold statements rather than run them unrecorded
  int recording_row_cap = 1000;
  bool allow_function_call = false;  // protocol-level FunctionCall messages
  // "token_expiry": "keep": sessions outlive their token's exp (default "end": cp ends the
  // session when the token would no longer be accepted at login, exp + provider leeway).
  bool keep_session_past_token_expiry = false;
  // Settings a client may set at login (StartupMessage parameters and `options` -c/--name),
  // as case-insensitive globs ("application_name", "app.*"). Unset: the dataplane's default
  // list (docs/configuration.md). `role` and `session_authorization` are never allowed.
  std::optional<std::vector<std::string>> allowed_startup_settings;
  uint64_t version = 0;  // bumped on every config load; keys verdict caches
  // The config version at which this policy's mask-relevant settings (masks_fingerprint() in mask_lineage.h:
  // `masks`, `deny_masked_in_expressions`) last changed: a reload that leaves them as they were
  // keeps it (ConfigStore::reload), so open sessions re-check nothing (docs/masking.md,
  // "Verdicts across a policy reload").
  uint64_t masks_version = 0;
};

}  // namespace pgwarden::policy
