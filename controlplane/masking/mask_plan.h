// Mask plans: which result columns of one RowDescription are masked, and how, under a policy.
//
// build_mask_plan() resolves each field's (table_oid, attnum) and type_oid through a Catalog
// and applies the policy's MaskRules in order (the first matching rule wins):
//   column_glob   "schema.table.column" glob (* and ?, case-insensitive) on the source column;
//                 kept through aliases because PostgreSQL reports the source table/attnum
//   name_pattern  glob on the source column name, and on the result field name (so an alias
//                 or a derived column named like "*ssn*" is masked too)
//   type_name     pg_type.typname of the field's type, e.g. "inet"
// Fields with table_oid 0 (expressions such as upper(email)) match no column_glob; text-like
// fields (string category, json, jsonb, xml) without a rule get the `detect` function: the
// dataplane runs the content detectors on them.
//
// The plan carries a per-policy pseudonymisation key for `hash`, derived with HKDF-SHA256 from
// the vault's masking master key: the dataplane gets only this key, never the master key nor
// any database credential; the same value hashes the same way across sessions and config
// reloads of one policy, and differently under another policy.
//
// Thread-safety: pure functions (the Catalog has its own contract).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "controlplane/masking/catalog.h"
#include "controlplane/policy/policy.h"

namespace pgwarden::maskplan {

// One RowDescription field, as in the protocol's mask_plan request.
struct ResultField {
  std::string name;
  uint32_t table_oid = 0;
  int16_t attnum = 0;
  uint32_t type_oid = 0;
  int16_t format = 0;  // 0 text, 1 binary
};

struct PlannedColumn {
  int index = 0;
  std::string function;  // redact | partial | hash | email | null | detect
  std::string text;      // redact
  int keep_last = 0;     // partial
  uint32_t type_oid = 0;
  int16_t format = 0;
  std::string source;  // "crm.customers.email" when resolved, else the field name (audit)
  std::string reason;  // the rule that matched, e.g. "column_glob crm.*.email", or "detect"
};

struct MaskPlan {
  size_t column_count = 0;
  std::vector<PlannedColumn> columns;  // only masked/detected columns, by ascending index
  bool detect = false;                 // some column has function "detect"
  std::string hash_key;                // raw 32 bytes; empty when no column uses hash

  // The protocol's mask_plan response body (dataplane/masking RowMaskPlan::from_json input):
  // {"column_count", "columns": [{"index","function","text","keep_last","type_oid","format"}],
  //  "detect", "hash_key": hex}.
  nlohmann::json to_json() const;
};

struct MaskPlanOptions {
  bool detect_text_columns = true;  // false: content detectors are not loaded for the policy
  // When set, a field whose origin is a view (or materialized view) column is resolved
  // through the view's definition (policy::view_lineage): an as-is source column's mask
  // applies, and a column computed from a masked source is redacted whole. PostgreSQL reports
  // the view, not the table, as a view column's origin. A view whose lineage cannot be
  // determined fails the plan (closed).
  policy::LineageCatalog* lineage = nullptr;
};

// REQUIRES: hash_key is 32 bytes when the policy has a `hash` mask (else invalid_argument).
// unavailable when the catalog cannot be asked: the caller must fail the statement (no plan
// means unmasked rows).
Result<MaskPlan> build_mask_plan(const std::vector<ResultField>& fields,
                                 const policy::Policy& policy, Catalog& catalog,
                                 std::string_view hash_key, const MaskPlanOptions& options = {});

// HKDF-SHA256(ikm = master_key, salt = "pgwarden/mask/v1", info = "policy:" + policy_name),
// 32 bytes. invalid_argument when the master key is shorter than 16 bytes.
Result<std::string> derive_policy_key(std::string_view master_key, std::string_view policy_name);

}  // namespace pgwarden::maskplan
