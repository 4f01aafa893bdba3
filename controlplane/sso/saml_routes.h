// The SAML service provider's HTTPS endpoints on pgwarden-cp's listener (controlplane/web),
// all public (the IdP's signed response is the credential), login and ACS rate limited per
// source address like the OIDC login:
//   GET  /auth/saml/metadata   this SP's metadata (for the IdP administrator)
//   GET  /auth/saml/config     {"enabled": true, "idp": "<entity id>"} for the console
//   GET  /auth/saml/login?return_to=/console/   303 to the IdP with a fresh AuthnRequest
//   POST /auth/saml/acs        SAMLResponse + RelayState (form) → checks (saml_sp.h) →
//                              HttpsServer::start_browser_session(name, groups, "saml", ...)
// A refused ACS post answers 401 with an HTML page naming the reason and is audited as
// http_login, decision rejected, via saml (the SAMLResponse itself is never logged).
#pragma once

#include <memory>

#include "common/status.h"
#include "controlplane/config/config.h"
#include "controlplane/sso/saml_sp.h"
#include "controlplane/web/https_server.h"

namespace pgwarden::sso {

inline constexpr char kSamlAcsPath[] = "/auth/saml/acs";
inline constexpr char kSamlMetadataPath[] = "/auth/saml/metadata";

// The SP for $.control_plane.http.saml: entity ID (default <public_url>/auth/saml/metadata),
// ACS <public_url>/auth/saml/acs, the IdP metadata file's contents.
Result<std::shared_ptr<SamlServiceProvider>> saml_sp_from_config(const config::HttpSettings& http);

// Registers the routes above. REQUIRES: before https.start(); `sp` lives as long as `https`
// (the routes keep a reference).
void register_saml_routes(web::HttpsServer& https, std::shared_ptr<SamlServiceProvider> sp);

}  // namespace pgwarden::sso
