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

// Registers /api/v1/* on `server`.
void register_admin_routes(HttpsServer& server, AdminExecutor execute);

}  // namespace pgwarden::web
