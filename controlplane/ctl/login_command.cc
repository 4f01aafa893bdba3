#include "controlplane/ctl/login_command.h"

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "controlplane/ctl/admin_client.h"
#include "controlplane/ctl/token_cache.h"
#include "controlplane/net/http_client.h"

namespace pgwarden::ctl {
namespace {

using json = nlohmann::json;

constexpr std::string_view kUsage =
    "usage: pgwardenctl login --server URL [--cacert FILE] [--token - | --token-file FILE]\n"
    "  without --token: OAuth device-code login at the server's identity provider\n";

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

Result<json> get_json(const std::string& url, const std::string& bearer,
                      const net::HttpClientOptions& options, int* status) {
  std::string authorization = "Bearer " + bearer;
  net::HttpRequest req;
  req.headers = {{"Accept", "application/json"}};
  if (!bearer.empty()) req.headers.emplace_back("Authorization", authorization);
  auto resp = net::http_request(url, req, options);
  if (!resp.is_ok()) return resp.status();
  *status = resp->status;
  json j = json::parse(resp->body, nullptr, false);
  if (j.is_discarded()) return invalid_argument("not JSON from " + url);
  return j;
}

Result<json> post_form(const std::string& url,
                       const std::vector<std::pair<std::string, std::string>>& form,
                       const net::HttpClientOptions& options, int* status) {
  std::string body = net::form_encode(form);
  net::HttpRequest req;
  req.method = "POST";
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                 {"Accept", "application/json"}};
  req.body = body;
  auto resp = net::http_request(url, req, options);
  if (!resp.is_ok()) return resp.status();
  *status = resp->status;
  json j = json::parse(resp->body, nullptr, false);
  if (!j.is_object()) return invalid_argument("not a JSON object from " + url);
  return j;
}

// RFC 8628: device authorization, then poll the token endpoint.
Result<std::pair<std::string, int64_t>> device_login(const std::string& server,
                                                     const net::HttpClientOptions& options,
                                                     std::ostream& err) {
  int status = 0;
  auto cfg = get_json(server + "/auth/oidc/config", "", options, &status);
  if (!cfg.is_ok()) return unavailable("cannot reach " + server + ": " + cfg.status().message());
  if (status != 200 || !cfg->value("ok", false)) {
    return failed_precondition(server + " offers no OIDC login ($.control_plane.http.oidc)");
  }
  const json& c = (*cfg)["result"];
  std::string device_endpoint = c.value("device_authorization_endpoint", "");
  std::string token_endpoint = c.value("token_endpoint", "");
  std::string client_id = c.value("client_id", "");
  if (device_endpoint.empty()) {
    return failed_precondition(
        "the server's identity provider has no device_authorization_endpoint; log in with "
        "--token - (a token from your identity provider)");
  }
  auto dev = post_form(device_endpoint,
                       {{"client_id", client_id}, {"scope", c.value("scopes", "openid")}}, options,
                       &status);
  if (!dev.is_ok()) return unavailable("device authorization: " + dev.status().message());
  if (status != 200) {
    return unauthenticated("device authorization refused: " + dev->value("error", "HTTP " +
                                                                             std::to_string(status)));
  }
  std::string device_code = dev->value("device_code", "");
  std::string user_code = dev->value("user_code", "");
  std::string uri = dev->value("verification_uri_complete", dev->value("verification_uri", ""));
  int64_t interval = std::max<int64_t>(0, dev->value("interval", int64_t{5}));
  int64_t expires_in = dev->value("expires_in", int64_t{600});
  if (device_code.empty()) return invalid_argument("device authorization without device_code");
  err << "To log in, open " << uri << " and confirm the code " << user_code << "\n";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(expires_in);
  while (std::chrono::steady_clock::now() < deadline) {
    auto tok = post_form(token_endpoint,
                         {{"grant_type", "urn:ietf:params:oauth:grant-type:device_code"},
                          {"device_code", device_code},
                          {"client_id", client_id}},
                         options, &status);
    if (!tok.is_ok()) return unavailable("token endpoint: " + tok.status().message());
    if (status == 200) {
      std::string token = tok->value("id_token", tok->value("access_token", ""));
      if (token.empty()) return invalid_argument("the token endpoint answered no token");
      int64_t exp = 0;
      if (tok->contains("expires_in") && (*tok)["expires_in"].is_number_integer()) {
        exp = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count() +
              (*tok)["expires_in"].get<int64_t>();
      }
      return std::pair{token, exp};
    }
    std::string error = tok->value("error", "");
    if (error == "slow_down") {
      interval += 5;
    } else if (error != "authorization_pending") {
      return unauthenticated("login refused: " + (error.empty() ? "HTTP " + std::to_string(status)
                                                                : error));
    }
    // RFC 8628 3.5: the client must wait `interval` seconds between polls.
    std::this_thread::sleep_for(std::chrono::seconds(std::max<int64_t>(interval, 1)));
  }
  return deadline_exceeded("the device code expired before the login was confirmed");
}

}  // namespace

int run_login_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                      std::ostream& err) {
  auto parsed = parse_args(args, {});
  if (!parsed.is_ok() || !parsed->positional.empty()) {
    err << kUsage;
    return kExitAdminUsage;
  }
  std::string server = parsed->get("--server").value_or(env("PGWARDEN_SERVER"));
  while (server.size() > 8 && server.back() == '/') server.pop_back();
  if (server.empty()) {
    err << kUsage;
    return kExitAdminUsage;
  }
  if (auto url = net::parse_url(server); !url.is_ok()) {
    err << "pgwardenctl login: --server: " << url.status().message() << "\n";
    return kExitAdminUsage;
  }
  net::HttpClientOptions options;
  options.ca_file = parsed->get("--cacert").value_or(env("PGWARDEN_CACERT"));
  std::string token;
  int64_t expires_at = 0;
  if (auto t = parsed->get("--token")) {
    if (*t != "-") {
      err << "pgwardenctl login: --token takes '-' (the token on stdin), never the token itself "
             "(command lines are visible to other users)\n";
      return kExitAdminUsage;
    }
    std::getline(in, token);
  } else if (auto f = parsed->get("--token-file")) {
    std::ifstream file(*f);
    if (!file) {
      err << "pgwardenctl login: cannot read " << *f << "\n";
      return kExitAdminFailure;
    }
    std::getline(file, token);
  } else {
    auto got = device_login(server, options, err);
    if (!got.is_ok()) {
      err << "pgwardenctl login: " << got.status().message() << "\n";
      return exit_code_for(got.status());
    }
    token = got->first;
    expires_at = got->second;
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) {
    err << "pgwardenctl login: empty token\n";
    return kExitAdminUsage;
  }
  int status = 0;
  auto who = get_json(server + "/auth/session", token, options, &status);
  if (!who.is_ok()) {
    err << "pgwardenctl login: cannot reach " << server << ": " << who.status().message() << "\n";
    return kExitAdminUnreachable;
  }
  if (status != 200 || !who->value("ok", false)) {
    std::string msg = who->contains("error") ? (*who)["error"].value("message", "") : "";
    err << "pgwardenctl login: the server refused the token (HTTP " << status << "): " << msg
        << "\n";
    return kExitAdminDenied;
  }
  Status stored = store_cached_token(server, token, expires_at);
  if (!stored.is_ok()) {
    err << "pgwardenctl login: " << stored.message() << "\n";
    return kExitAdminFailure;
  }
  const json& r = (*who)["result"];
  out << "logged in to " << server << " as " << r.value("name", "?") << " (role "
      << r.value("role", "?") << "); token cached in " << token_cache_path() << "\n";
  return kExitAdminOk;
}

}  // namespace pgwarden::ctl
