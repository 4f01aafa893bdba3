#include "controlplane/web/oidc_login.h"

#include <openssl/evp.h>

#include "common/protocol/messages.h"
#include "controlplane/identity/base64url.h"
#include "controlplane/net/http_client.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::web {
namespace {

using json = nlohmann::json;

constexpr int64_t kPendingLoginMs = 10 * 60 * 1000;
constexpr size_t kMaxPendingLogins = 10000;

std::string s256(std::string_view verifier) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(verifier.data(), verifier.size(), md, &len, EVP_sha256(), nullptr);
  return identity::base64url_encode(std::string_view(reinterpret_cast<char*>(md), len));
}

std::string callback_url(const std::string& public_url) {
  std::string base = public_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/auth/oidc/callback";
}

}  // namespace

Result<std::unique_ptr<OidcLogin>> OidcLogin::create(const config::HttpOidcSettings& settings,
                                                     std::string public_url) {
  auto validator = identity::TokenValidator::create({settings.provider}, {});
  if (!validator.is_ok()) return validator.status();
  std::unique_ptr<OidcLogin> o(new OidcLogin());
  o->settings_ = settings;
  o->public_url_ = std::move(public_url);
  o->validator_ = std::move(*validator);
  return o;
}

identity::IdentityResult OidcLogin::validate(std::string_view token) const {
  identity::IdentityResult r = validator_->validate_for_provider(token, settings_.provider.name);
  if (!r.is_ok()) return r;
  identity::Identity id = std::move(r).identity();
  auto it = id.claims.find(settings_.name_claim);
  if (it != id.claims.end() && it->is_string() && !it->get<std::string>().empty()) {
    id.subject = it->get<std::string>();
  }
  return id;
}

void OidcLogin::register_routes(HttpsServer& server) {
  server.add_route(Route{.method = "GET",
                         .prefix = "/auth/oidc/login",
                         .access = Access::kPublic,
                         .login = true,
                         .handler = [this](const Request& r) { return login(r); }});
  server.add_route(Route{.method = "GET",
                         .prefix = "/auth/oidc/callback",
                         .access = Access::kPublic,
                         .login = true,
                         .handler = [this, &server](const Request& r) { return callback(server, r); }});
  server.add_route(Route{
      .method = "GET",
      .prefix = "/auth/oidc/config",
      .access = Access::kPublic,
      .handler = [this](const Request&) {
        json j{{"issuer", settings_.provider.issuer},
               {"client_id", settings_.client_id},
               {"token_endpoint", settings_.token_endpoint},
               {"scopes", settings_.scopes}};
        if (!settings_.device_authorization_endpoint.empty()) {
          j["device_authorization_endpoint"] = settings_.device_authorization_endpoint;
        }
        return Response::json(200, json{{"ok", true}, {"result", j}});
      }});
}

Response OidcLogin::login(const Request& request) {
  Pending p{.code_verifier = random_url_token(),
            .nonce = random_url_token(),
            .return_to = request.query_param("return_to"),
            .expires_ms = protocol::now_unix_ms() + kPendingLoginMs};
  std::string state = random_url_token();
  std::string challenge = s256(p.code_verifier);
  std::string nonce = p.nonce;
  {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t now = protocol::now_unix_ms();
    for (auto it = pending_.begin(); it != pending_.end();) {
      it = it->second.expires_ms <= now ? pending_.erase(it) : std::next(it);
    }
    if (pending_.size() >= kMaxPendingLogins) {
      return Response::error(503, "unavailable", "too many logins in progress; retry later");
    }
    pending_[state] = std::move(p);
  }
  std::string url = settings_.authorization_endpoint;
  url += url.find('?') == std::string::npos ? '?' : '&';
  url += net::form_encode({{"response_type", "code"},
                           {"client_id", settings_.client_id},
                           {"redirect_uri", callback_url(public_url_)},
                           {"scope", settings_.scopes},
                           {"state", state},
                           {"nonce", nonce},
                           {"code_challenge", challenge},
                           {"code_challenge_method", "S256"}});
  return Response::redirect(url);
}

Response OidcLogin::callback(HttpsServer& server, const Request& request) {
  auto reject = [&](int status, const std::string& reason) {
    server.audit().record(audit::AuditRecord{.event = "http_login",
                                             .client_addr = request.remote_ip,
                                             .decision = "rejected",
                                             .reason = reason,
                                             .extra = {{"via", "oidc"}}});
    return Response::error(status, status == 401 ? "unauthenticated" : "invalid_argument",
                           "login failed: " + reason);
  };
  std::string state = request.query_param("state");
  Pending p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(state);
    if (state.empty() || it == pending_.end()) {
      return reject(400, "unknown or used state (start again at /auth/oidc/login)");
    }
    p = std::move(it->second);
    pending_.erase(it);  // a state is good for one callback only
  }
  if (p.expires_ms <= protocol::now_unix_ms()) return reject(400, "the login took too long");
  if (std::string err = request.query_param("error"); !err.empty()) {
    return reject(401, "the identity provider answered " + err.substr(0, 100));
  }
  std::string code = request.query_param("code");
  if (code.empty()) return reject(400, "no code in the callback");

  std::vector<std::pair<std::string, std::string>> form{
      {"grant_type", "authorization_code"},
      {"code", code},
      {"redirect_uri", callback_url(public_url_)},
      {"client_id", settings_.client_id},
      {"code_verifier", p.code_verifier}};
  if (settings_.client_secret) {
    auto secret = vault::read_secret(*settings_.client_secret);
    if (!secret.is_ok()) return reject(401, "client secret unavailable: " + secret.status().message());
    form.emplace_back("client_secret", std::string(secret->view()));
  }
  std::string body = net::form_encode(form);
  net::HttpRequest req;
  req.method = "POST";
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"},
                 {"Accept", "application/json"}};
  req.body = body;
  net::HttpClientOptions options;
  options.ca_file = settings_.provider.ca_file;
  auto resp = net::http_request(settings_.token_endpoint, req, options);
  std::fill(body.begin(), body.end(), '\0');
  if (!resp.is_ok()) return reject(401, "token endpoint: " + resp.status().message());
  json tokens = json::parse(resp->body, nullptr, false);
  if (resp->status != 200 || !tokens.is_object()) {
    std::string err = tokens.is_object() ? tokens.value("error", "") : "";
    return reject(401, "token endpoint answered " + std::to_string(resp->status) +
                           (err.empty() ? "" : " " + err.substr(0, 100)));
  }
  std::string id_token = tokens.value("id_token", "");
  if (id_token.empty()) return reject(401, "no id_token from the token endpoint");
  identity::IdentityResult r = validate(id_token);
  if (!r.is_ok()) {
    return reject(401, "id_token rejected: " +
                           std::string(identity::reject_reason_name(r.rejection().reason)) + ": " +
                           r.rejection().message);
  }
  const identity::Identity& id = r.identity();
  auto nonce = id.claims.find("nonce");
  if (nonce == id.claims.end() || !nonce->is_string() || nonce->get<std::string>() != p.nonce) {
    return reject(401, "id_token nonce does not match the login");
  }
  return server.start_browser_session(id.subject, id.groups, "oidc", request, p.return_to);
}

}  // namespace pgwarden::web
