// pgwardenctl's side of the admin API (controlplane/server/admin_server.h): common options,
// the connection to pgwarden-cp's admin socket, exit codes, and table output.
//
// Options (anywhere after the group): --socket PATH (env PGWARDEN_ADMIN_SOCKET, default
// /run/pgwarden/admin.sock), --principal NAME (PGWARDEN_ADMIN_PRINCIPAL), --credential-file
// PATH (PGWARDEN_ADMIN_CREDENTIAL_FILE; or the credential itself in PGWARDEN_ADMIN_CREDENTIAL),
// --json (machine-readable output). Other --name VALUE options are command specific.
//
// Over HTTPS instead of the socket: --server URL (PGWARDEN_SERVER) sends every command to
// pgwarden-cp's HTTPS admin API (POST URL/api/v1/commands/<command>, docs/api.md) with a
// bearer token: --token-file PATH (PGWARDEN_TOKEN_FILE), PGWARDEN_TOKEN, or the token
// `pgwardenctl login --server URL` cached for URL (token_cache.h). --cacert PATH
// (PGWARDEN_CACERT) is the CA bundle to verify the server with (default: system store).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::ctl {

// Exit codes of every admin command (docs/cli.md). `rules test` keeps its own verdict codes.
inline constexpr int kExitAdminOk = 0;
inline constexpr int kExitAdminFailure = 1;
inline constexpr int kExitAdminUsage = 2;
inline constexpr int kExitAdminDenied = 3;  // bad credential, permission denied, rejected token
inline constexpr int kExitAdminNotFound = 4;
inline constexpr int kExitAdminUnreachable = 5;

struct ParsedArgs {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // "--speed" -> "2"
  std::set<std::string> flags;                 // "--json"
  bool has(std::string_view name) const { return flags.count(std::string(name)) > 0; }
  std::optional<std::string> get(std::string_view name) const;
};

// Splits words into positional arguments, `--name value` options and the boolean flags
// named in `flag_names`; every word after `--` is positional. Error (usage) for an option
// without a value.
Result<ParsedArgs> parse_args(std::span<const std::string_view> args,
                              const std::set<std::string>& flag_names);

// Maps an admin error code ("permission_denied", ...) or a Status to an exit code.
int exit_code_for(std::string_view error_code);
int exit_code_for(const Status& status);

class AdminClient {
 public:
  // Reads socket, principal and credential from `args` and the environment.
  static Result<AdminClient> from_args(const ParsedArgs& args);
  // Sends one command and returns its "result" on success. Errors carry the server's code
  // as a Status (unavailable when the socket cannot be reached).
  Result<nlohmann::json> call(const std::string& command,
                              const nlohmann::json& args = nlohmann::json::object()) const;
  const std::string& socket() const { return socket_; }
  // "" when talking to the socket.
  const std::string& server() const { return server_; }

 private:
  Result<nlohmann::json> call_https(const std::string& command, const nlohmann::json& args) const;

  std::string server_;  // https://... ("" = the socket)
  std::string cacert_;
  std::string token_;
  std::string socket_;
  std::string principal_;
  std::string credential_;
};

// Plain aligned table: header row, then rows; no trailing spaces.
void print_table(std::ostream& out, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows);
// Unix ms -> "2026-11-24 02:11:42Z" ("-" for 0).
std::string format_time_ms(int64_t ms);
// "30", "30s", "15m", "1h", "2d" -> seconds.
std::optional<int64_t> parse_duration_s(std::string_view text);
// A JSON scalar as text (strings without quotes).
std::string scalar_text(const nlohmann::json& value);

}  // namespace pgwarden::ctl
