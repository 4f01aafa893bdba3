// The admin API over HTTPS: /api/v1/... routes onto AdminServer::execute() (the one
// implementation the Unix socket uses too), each with the command's minimum role
// (roles.h). Responses use the socket's envelope: {"ok": true, "result": {...}} or
// {"ok": false, "error": {"code", "message"[, "sqlstate"]}} with an HTTP status from the code.
// The principal, role, how they logged in and the source IP are audited with every call.
// docs/api.md lists every path.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"
#include "controlplane/web/https_server.h"

namespace pgwarden::web {

// Runs one admin command for an authenticated person (pgwarden-cp binds it to
// server::AdminServer::execute with an AdminCaller built from `who` and `remote_ip`).
using AdminExecutor =
    std::function<Result<nlohmann::json>(const std::string& command, const nlohmann::json& args,
                                         const Person& who, const std::string& remote_ip)>;

// An admin command and its arguments, from an /api/v1 request.
struct AdminCall {
  std::string command;
  nlohmann::json args = nlohmann::json::object();
  Role min_role = Role::kAdmin;
};

// Maps a request below /api/v1 (method, path, query, JSON body) to the admin command it asks
// for. not_found for an unknown endpoint or command; invalid_argument for a body that is not
// a JSON object. Path parameters win over body fields of the same name (the URL is what was
// authorized and audited). Pure; exposed for tests and the fuzzer.
Result<AdminCall> admin_call_for(const Request& request);

// Registers /api/v1/* on `server`.
void register_admin_routes(HttpsServer& server, AdminExecutor execute);

}  // namespace pgwarden::web
