// Startup settings: the run-time parameters a client sets at login, either as StartupMessage
// parameters (`application_name`, `TimeZone`, `some.var`, ...) or inside the `options`
// parameter (`-c name=value`, `--name=value`). They reach the upstream only when the session's
// policy allows them (`allowed_startup_settings`, globs); anything else refuses the login
// (42501) so the client never runs with settings it did not get. Pure functions, no I/O.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::session {

struct StartupSetting {
  std::string name;
  std::string value;
  bool from_options = false;  // came from `options` (-c / --name=value)
};

// The settings allowed when the policy does not name any (docs/configuration.md): the common
// client settings. Not search_path (it changes which table an unqualified name means, and the
// policy resolves unqualified names against public) and no custom `prefix.name` settings (an
// application may key row-level security on them); a policy lists those explicitly.
std::span<const std::string_view> default_startup_settings();

// Splits an `options` value as PostgreSQL does (whitespace separates arguments, a backslash
// takes the next character literally) and reads `-c name=value`, `-cname=value` and
// `--name=value` (a `-` in the name becomes `_`). invalid_argument (42501) for any other switch
// (e.g. `-d 5`, `-B 100`), a `-c` without its argument, or an argument without `=`.
Result<std::vector<StartupSetting>> parse_startup_options(std::string_view options);

// Why `setting` may not be set at login under the allow-list `allowed` (globs with `*` and
// `?`, ASCII case-insensitive); empty when it may. Some settings are never allowed whatever
// the list says: `role` and `session_authorization` (they change who the session is), a
// `standard_conforming_strings` other than on and a `client_encoding` whose multi-byte
// characters can contain ASCII quote or backslash bytes (the SQL lexer would then read a
// statement differently from the server).
std::string startup_setting_refusal(const StartupSetting& setting,
                                    std::span<const std::string> allowed);

// Case-insensitive glob match (`*` any run, `?` one character).
bool startup_glob_match(std::string_view glob, std::string_view name);

}  // namespace pgwarden::session
