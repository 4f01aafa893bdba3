#include "controlplane/web/admin_routes.h"

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "common/status_names.h"

namespace pgwarden::web {
namespace {

using json = nlohmann::json;

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    if (!part.empty()) out.emplace_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

struct Call {
  std::string command;
  json args = json::object();
};

// (method, path below /api/v1) -> admin command + the arguments the path carries. nullopt:
// no such endpoint.
std::optional<Call> route_call(const std::string& method, const std::vector<std::string>& p,
                               const Request& req) {
  const bool get = method == "GET" || method == "HEAD";
  const bool post = method == "POST";
  const size_t n = p.size();
  auto is = [&](size_t i, const char* s) { return i < n && p[i] == s; };
  if (post && n == 2 && is(0, "commands")) return Call{p[1]};
  if (get && n == 1 && is(0, "status")) return Call{"status"};
  if (get && n == 1 && is(0, "dataplane")) return Call{"dataplane"};
  if (is(0, "approvals")) {
    if (get && n == 1) {
      Call c{"approvals.list"};
      if (std::string s = req.query_param("state"); !s.empty()) c.args["state"] = s;
      return c;
    }
    if (get && n == 2) return Call{"approvals.show", {{"id", p[1]}}};
    if (post && n == 3 && (p[2] == "approve" || p[2] == "deny")) {
      return Call{"approvals." + p[2], {{"id", p[1]}}};
    }
    if (post && n == 3 && p[2] == "break-glass") {
      return Call{"approvals.break_glass", {{"id", p[1]}}};
    }
    return std::nullopt;
  }
  if (is(0, "sessions")) {
    if (get && n == 1) return Call{"sessions.list"};
    if (post && n == 2 && p[1] == "kill") return Call{"sessions.kill"};
    if (get && n == 2) return Call{"sessions.show", {{"id", p[1]}}};
    if (get && n == 3 && (p[2] == "verify" || p[2] == "replay")) {
      return Call{"sessions." + p[2], {{"id", p[1]}}};
    }
    if (post && n == 3 && p[2] == "kill") return Call{"sessions.kill", {{"id", p[1]}}};
    return std::nullopt;
  }
  if (is(0, "identities")) {
    if (get && n == 1) {
      Call c{"identities.list"};
      if (req.query_param("all") == "true" || req.query_param("all") == "1") c.args["all"] = true;
      return c;
    }
    if (post && n == 2 && (p[1] == "revoke" || p[1] == "unrevoke")) {
      return Call{"identities." + p[1]};
    }
    return std::nullopt;
  }
  if (is(0, "policies")) {
    if (get && n == 1) return Call{"policies.list"};
    if (get && n == 2) return Call{"policies.show", {{"name", p[1]}}};
    return std::nullopt;
  }
  if (is(0, "rules")) {
    if (get && n == 1) return Call{"rules.list"};
    if (post && n == 2 && p[1] == "reload") return Call{"rules.reload"};
    if (post && n == 2 && p[1] == "test") return Call{"rules.test"};
    if (get && n == 2) return Call{"rules.show", {{"set", p[1]}}};
    if (post && n == 3 && (p[2] == "add" || p[2] == "remove")) {
      return Call{"rules." + p[2], {{"set", p[1]}}};
    }
    return std::nullopt;
  }
  if (is(0, "budgets")) {
    if (get && n == 1) return Call{"budgets.list"};
    if (get && n == 2) return Call{"budgets.show", {{"identity", p[1]}}};
    if (post && n == 3 && p[2] == "reset") return Call{"budgets.reset", {{"identity", p[1]}}};
    return std::nullopt;
  }
  if (post && n == 2 && is(0, "config") && p[1] == "reload") return Call{"config.reload"};
  if (post && n == 2 && is(0, "tokens") && p[1] == "inspect") return Call{"tokens.inspect"};
  if (get && n == 1 && is(0, "audit")) {
    Call c{"audit.search"};
    for (const char* key : {"event", "identity", "decision", "session_id", "text"}) {
      if (std::string v = req.query_param(key); !v.empty()) c.args[key] = v;
    }
    for (const char* key : {"since_ms", "until_ms", "limit"}) {
      std::string v = req.query_param(key);
      if (v.empty()) continue;
      char* end = nullptr;
      long long x = std::strtoll(v.c_str(), &end, 10);
      if (end != nullptr && *end == '\0') c.args[key] = x;
    }
    return c;
  }
  return std::nullopt;
}

}  // namespace

Result<AdminCall> admin_call_for(const Request& req) {
  std::vector<std::string> parts = split_path(req.path);
  if (parts.size() < 2 || parts[0] != "api" || parts[1] != "v1") {
    return not_found("no such endpoint " + req.path);
  }
  parts.erase(parts.begin(), parts.begin() + 2);
  std::optional<Call> call = route_call(req.method, parts, req);
  if (!call) return not_found("no such endpoint " + req.method + " " + req.path);
  std::optional<Role> needed = command_min_role(call->command);
  if (!needed) return not_found("unknown command '" + call->command + "'");
  if (req.method == "POST" && !req.body.empty()) {
    json body = json::parse(req.body, nullptr, false);
    if (!body.is_object()) return invalid_argument("the body must be a JSON object");
    for (auto& [k, v] : body.items()) {
      if (!call->args.contains(k)) call->args[k] = v;
    }
  }
  return AdminCall{std::move(call->command), std::move(call->args), *needed};
}

void register_admin_routes(HttpsServer& server, AdminExecutor execute) {
  server.add_route(
      Route{.method = "*",
            .prefix = "/api/v1",
            .access = Access::kPerson,
            .min_role = Role::kViewer,
            .handler = [&server, execute = std::move(execute)](const Request& req) -> Response {
              Result<AdminCall> call = admin_call_for(req);
              if (!call.is_ok()) {
                // No command ran, but the person's call is audited like every other.
                server.audit().record(audit::AuditRecord{
                    .event = "admin",
                    .identity = req.person->name,
                    .groups = req.person->groups,
                    .client_addr = req.remote_ip,
                    .decision = std::string(status_code_snake_name(call.status().code())),
                    .reason = call.status().message(),
                    .extra = {{"method", req.method},
                              {"path", req.path.substr(0, 256)},
                              {"via", "https:" + req.person->via},
                              {"role", role_name(req.person->role)}}});
                return Response::from_status(call.status());
              }
              const Role needed = call->min_role;
              if (req.person->role < needed) {
                return server.forbid(req, "role " + std::string(role_name(req.person->role)) +
                                              " may not run " + call->command + " (needs " +
                                              std::string(role_name(needed)) + ")");
              }
              Result<json> r = execute(call->command, call->args, *req.person, req.remote_ip);
              if (!r.is_ok()) return Response::from_status(r.status());
              return Response::json(200, json{{"ok", true}, {"result", std::move(*r)}});
            }});
}

}  // namespace pgwarden::web
