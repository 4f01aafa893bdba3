// IdentityAuthenticator: the Authenticator behind `authenticate`, backed by
// controlplane/identity's TokenValidator (JWTs against $.identity.providers, service keys
// "pgw_sk_<id>_<secret>" against $.identity.service_keys).
//
// One validator per config version: the first authentication under a new config version
// (or ControlPlane::reload) builds it from that config; sessions under an older snapshot
// keep using the newest validator. A rejection answers 28P01 with the identity reason name
// (e.g. "expired", "bad_signature", "unknown_service_key") as the protocol error code.
//
// Thread-safety: authenticate() and validator_for() may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "common/status.h"
#include "controlplane/identity/validator.h"
#include "controlplane/server/interfaces.h"

namespace pgwarden::server {

class IdentityAuthenticator : public Authenticator {
 public:
  explicit IdentityAuthenticator(identity::ValidatorOptions options = {})
      : options_(std::move(options)) {}

  // The validator for `config` (built when config.version is newer than the cached one).
  // An error (e.g. an unreadable JWKS file) leaves the previous validator in place.
  Result<std::shared_ptr<const identity::TokenValidator>> validator_for(
      const config::Config& config);

  AuthOutcome authenticate(const config::Config& config,
                           const protocol::AuthenticateRequest& request) override;

 private:
  identity::ValidatorOptions options_;
  std::mutex mu_;  // serialises builds; guards the members below
  uint64_t version_ = 0;
  std::shared_ptr<const identity::TokenValidator> validator_;
};

}  // namespace pgwarden::server
