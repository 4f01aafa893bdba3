#include <string_view>

#include "controlplane/server/interfaces.h"
#include "controlplane/vault/credential_hash.h"

namespace pgwarden::server {

namespace {

// Verified against when the key id is unknown, so unknown ids cost the same time as wrong
// secrets (no key-id enumeration by timing).
const vault::CredentialHash& dummy_hash() {
  static const vault::CredentialHash h =
      vault::parse_credential_hash(vault::hash_credential("pgwarden-dummy")).value();
  return h;
}

}  // namespace

AuthOutcome ServiceKeyAuthenticator::authenticate(const config::Config& config,
                                                  const protocol::AuthenticateRequest& request) {
  std::string_view token = request.token;
  if (token.substr(0, kTokenPrefix.size()) != kTokenPrefix) {
    return AuthOutcome::reject("invalid_token", "not a service key");
  }
  token.remove_prefix(kTokenPrefix.size());
  size_t dot = token.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 >= token.size()) {
    return AuthOutcome::reject("invalid_token", "malformed service key");
  }
  std::string_view id = token.substr(0, dot);
  std::string_view secret = token.substr(dot + 1);
  const config::ServiceKey* key = config.find_service_key(id);
  bool ok = vault::verify_credential(key ? key->credential : dummy_hash(), secret);
  if (key == nullptr || !ok) {
    return AuthOutcome::reject("invalid_token", "invalid service key");
  }
  return AuthOutcome::accept({key->identity, std::string(kIssuer), key->groups});
}

AuthOutcome CompositeAuthenticator::authenticate(const config::Config& config,
                                                 const protocol::AuthenticateRequest& request) {
  if (request.token.rfind(ServiceKeyAuthenticator::kTokenPrefix, 0) == 0) {
    return service_keys_->authenticate(config, request);
  }
  if (jwt_ == nullptr) {
    return AuthOutcome::reject("invalid_token", "JWT authentication is not configured");
  }
  return jwt_->authenticate(config, request);
}

protocol::AnalyseResponse FailClosedAnalyser::analyse(const SessionView&,
                                                      const protocol::AnalyseRequest& request) {
  for (const auto& hit : request.prescreen) {
    if (hit.action == "deny") {
      return {"deny", hit.rule, "statement denied by rule " + hit.rule, true};
    }
  }
  return {"deny", "cp.analysis_unavailable",
          "statement analysis is not available on this gateway; denied (fail closed)", false};
}

Result<protocol::MaskPlanResponse> FailClosedMaskPlanner::plan(const SessionView&,
                                                               const protocol::MaskPlanRequest&) {
  return Status(StatusCode::kFailedPrecondition,
                "result masking is not available on this gateway; result refused (fail closed)",
                "0A000");
}

}  // namespace pgwarden::server
