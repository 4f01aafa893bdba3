// Protocol-level prepared statements under transaction pooling (PgBouncer 1.21+ style): an
// agent's named statements live in its session, and the upstream connection a transaction
// lands on gets them under a server-side name derived from their content. Loop-thread only.
//
// A server-side name is "pgw_" + 32 hex digits of SHA-256 over the Parse message after the
// client's name (query text, parameter types). Two sessions preparing the same text with the
// same parameter types share the server statement; a collision would make one agent's Bind run
// another agent's statement, so the hash is cryptographic. Client names never reach the
// server: Parse, Bind, Describe 'S' and Close 'S' are rewritten.
#pragma once

#include <string>
#include <string_view>

#include "dataplane/pgwire/framer.h"

namespace pgwarden::session {

// The server-side name for a Parse whose body after the statement name is `tail`.
std::string server_statement_name(std::string_view tail);

// The bytes of a Parse message after its statement name (query, parameter types); empty view
// when `m` is not a well-formed Parse.
std::string_view parse_tail(const pgwire::Message& m);

// The query text of a kept Parse message (`message`: type byte, length, body, as
// ClientStatement::parse keeps it); false when it is not a well-formed Parse. `sql` views into
// `message`.
bool kept_parse_query(std::string_view message, std::string_view* sql);

// Appends `m` (a Parse, Bind, Describe 'S' or Close 'S') to `out` with its statement name
// replaced by `name`; every other byte is copied unchanged and the length is recomputed. False
// (nothing appended) when `m` is malformed or of another type/kind.
bool append_renamed(const pgwire::Message& m, std::string_view name, std::string& out);

// A name no server connection ever holds (server names all start with "pgw_"): a Close of an
// unknown or forgotten client name goes upstream as a Close of this one, so the CloseComplete
// comes in protocol order.
inline constexpr std::string_view kNeverPreparedName = "pgwarden_never_prepared";

}  // namespace pgwarden::session
