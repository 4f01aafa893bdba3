// Copy planner: the mask plan of one COPY ... TO STDOUT (the `mask_plan` request's `copy`
// variant, docs/protocol.md). A CopyOutResponse carries no table OIDs, so cp finds the
// statement in the SQL the dp forwarded (controlplane/policy analyse_sql), resolves its columns
// through the catalog and plans them with maskplan::build_mask_plan: the same rules, in the
// same order, as for a SELECT's RowDescription.
//
//   COPY [schema.]table [(cols)] TO STDOUT [options]
//     The columns are the list as written, or every live column but generated ones in attnum
//     order (what PostgreSQL 15 copies). An unqualified name is looked up in every schema (cp
//     cannot know the session's search_path): all tables of that name must yield the same
//     plan, else the COPY is refused and the user is asked to schema-qualify the name.
//     Binary format with any masked column is refused (binary values cannot be rewritten).
//     A table the catalog does not see (created in the session, uncommitted or temporary)
//     passes like a COPY (query) unless a mask rule could cover one of its columns.
//   COPY (query) TO STDOUT
//     No column origins are known: refused when the query references a column a mask rule
//     covers (policy masked_rule_for(), as deny_masked_in_expressions uses it, but for every
//     use) or when the policy masks by type; otherwise the plan has no columns and
//     `line_detect` asks the dp to run the content detectors over each whole row.
//
// Options: format (text|csv|binary), delimiter, null, header (boolean), quote, escape,
// force_quote. Any other option (encoding, ...) is refused: the dp could not be sure to parse
// the rows. Refusals are permission_denied (42501) with a message for the user.
//
// Thread-safety: pure function (the Catalog has its own contract).
#pragma once

#include <string_view>

#include "common/status.h"
#include "controlplane/masking/catalog.h"
#include "controlplane/masking/mask_plan.h"
#include "controlplane/policy/policy.h"
#include "controlplane/protocol/messages.h"

namespace pgwarden::server {

// REQUIRES: hash_key as for maskplan::build_mask_plan(). invalid_argument (08P01) when the
// SQL holds no COPY TO STDOUT at request.index; unavailable when the catalog cannot be asked.
Result<protocol::MaskPlanResponse> plan_copy(const protocol::CopyPlanRequest& request,
                                             const policy::Policy& policy,
                                             maskplan::Catalog& catalog, std::string_view hash_key);

}  // namespace pgwarden::server
