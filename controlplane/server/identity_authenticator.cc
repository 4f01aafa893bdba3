#include "controlplane/server/identity_authenticator.h"

#include <spdlog/spdlog.h>

namespace pgwarden::server {

Result<std::shared_ptr<const identity::TokenValidator>> IdentityAuthenticator::validator_for(
    const config::Config& config) {
  std::lock_guard<std::mutex> lock(mu_);
  if (validator_ && config.version <= version_) return validator_;
  auto created =
      identity::TokenValidator::create(config.identity_providers, config.service_keys, options_);
  if (!created.is_ok()) {
    spdlog::error("identity: cannot build the token validator for policy version {}: {}",
                  config.version, created.status().message());
    if (validator_) return validator_;
    return created.status();
  }
  validator_ = std::shared_ptr<const identity::TokenValidator>(std::move(created).value());
  version_ = config.version;
  return validator_;
}

AuthOutcome IdentityAuthenticator::authenticate(const config::Config& config,
                                                const protocol::AuthenticateRequest& request) {
  auto validator = validator_for(config);
  if (!validator.is_ok()) {
    return AuthOutcome::reject(
        std::string(identity::reject_reason_name(identity::RejectReason::kJwksUnavailable)),
        "identity providers are not available on this gateway");
  }
  identity::IdentityResult result = (*validator)->validate(request.token);
  if (!result.is_ok()) {
    const identity::Rejection& r = result.rejection();
    return AuthOutcome{
        false, {}, std::string(identity::reject_reason_name(r.reason)), r.to_status()};
  }
  const identity::Identity& id = result.identity();
  AuthenticatedIdentity out{id.subject, id.issuer, id.groups, id.provider, id.key_id, 0};
  if (id.expires_at) {
    out.expires_at_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(id.expires_at->time_since_epoch())
            .count();
  }
  return AuthOutcome::accept(std::move(out));
}

}  // namespace pgwarden::server
