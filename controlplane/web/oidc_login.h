// People's SSO with OpenID Connect ($.control_plane.http.oidc):
//   * bearer tokens: validate() checks a JWT from the people's IdP with the identity module's
//     TokenValidator (JWKS signature, alg allow-list, iss, aud, exp/nbf); HttpsServer uses it
//     for "Authorization: Bearer";
//   * browsers: GET /auth/oidc/login[?return_to=/console/...] redirects to the IdP's
//     authorization endpoint with state, nonce and a PKCE S256 code_challenge (the pending
//     login is kept server-side for 10 minutes, keyed by state); GET /auth/oidc/callback
//     checks state, exchanges the code with the code_verifier at the token endpoint
//     (controlplane/net/http_client), validates the id_token (signature, iss, aud, exp,
//     nonce) and calls HttpsServer::start_browser_session(); POST /auth/logout ends it;
//   * pgwardenctl login: GET /auth/oidc/config (public) tells the CLI the issuer, client_id,
//     device_authorization_endpoint and token_endpoint for the device-code flow.
// Failures answer 401/400 with a message and are audited as http_login rejected (reason,
// source IP); a code, token or verifier is never logged.
//
// Thread-safety: handlers run concurrently; the pending-login table has its own lock.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "controlplane/config/config.h"
#include "controlplane/identity/validator.h"
#include "controlplane/web/https_server.h"

namespace pgwarden::web {

class OidcLogin {
 public:
  // Builds the validator (loads the JWKS once; an unreachable JWKS URL is retried on demand).
  static Result<std::unique_ptr<OidcLogin>> create(const config::HttpOidcSettings& settings,
                                                   std::string public_url);

  // Bearer token -> Identity (name from name_claim put in Identity::subject).
  identity::IdentityResult validate(std::string_view token) const;

  // Registers /auth/oidc/login, /auth/oidc/callback, /auth/oidc/config. `this` and `server`
  // must outlive each other's use.
  void register_routes(HttpsServer& server);

 private:
  struct Pending {
    std::string code_verifier;
    std::string nonce;
    std::string return_to;
    int64_t expires_ms = 0;
  };
  OidcLogin() = default;
  Response login(const Request& request);
  Response callback(HttpsServer& server, const Request& request);

  config::HttpOidcSettings settings_;
  std::string public_url_;
  std::unique_ptr<identity::TokenValidator> validator_;
  std::mutex mu_;
  std::map<std::string, Pending> pending_;  // by state
};

}  // namespace pgwarden::web
