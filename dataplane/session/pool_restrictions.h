// What transaction pooling cannot allow: SQL that leaves state in the upstream session, which
// would outlive the agent's transaction and leak into another agent's transaction on the same
// server connection. Checked on every Query and Parse of a session whose target has
// pool_mode "transaction", before the policy; a refusal is ERROR 0A000 (feature_not_supported).
//
// Refused (statement by statement, on the lexer's code view: comments removed, literals
// blanked, lower case):
//   SET / SET SESSION (not SET LOCAL, SET TRANSACTION, SET CONSTRAINTS), LISTEN, PREPARE
//   (SQL-level), DEALLOCATE, DISCARD, LOAD, DECLARE ... WITH HOLD, CREATE TEMP/TEMPORARY ...
//   (except a table with ON COMMIT DROP), SELECT ... INTO TEMP, and calls of
//   pg_advisory_lock[_shared], pg_try_advisory_lock[_shared], and set_config(...) whose last
//   argument is not the literal true.
// Not seen: SQL run inside a function or a DO block (its body is a literal); a policy that
// allows such code should not use a pooled target for untrusted agents.
#pragma once

#include <string>
#include <string_view>

namespace pgwarden::session {

// The refusal message (starting "pgwarden: "), or empty when `code_view` (rules::LexedSql's
// code view of the statement text) may run on a pooled connection.
std::string transaction_pooling_refusal(std::string_view code_view);

}  // namespace pgwarden::session
