// TokenValidator: the control plane's answer to "who is this?" for the password an agent
// sends. A JWT is checked against the configured identity providers (signature with the
// provider's JWKS, alg allow-list, iss, aud, exp / nbf / iat with leeway) and a service key
// ("pgw_sk_...") against the configured salted hashes. The result is an Identity or a typed
// Rejection (identity.h). The token is a secret: nothing here logs it or puts it in a message.
//
// Thread-safety: validate() may be called concurrently from any number of threads. Key
// refreshes happen inside validate() (bounded by the fetch timeout) at most once per
// refresh_min_interval_seconds per provider.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "controlplane/identity/identity.h"
#include "controlplane/identity/jws.h"
#include "controlplane/identity/key_source.h"
#include "controlplane/identity/service_key.h"

namespace pgwarden::identity {

struct ValidatorOptions {
  WallClock clock;      // default: std::chrono::system_clock::now
  HttpGetter http_get;  // default: net::https_get
  std::chrono::milliseconds fetch_timeout{5000};
};

// Checks one provider's configuration (names, exactly one JWKS source, https URLs, known
// algorithms, non-empty audiences, sane leeway and intervals).
Status validate_provider_config(const IdentityProviderConfig& config);

class TokenValidator {
 public:
  // Validates the configuration and loads every provider's keys once. A JWKS file that
  // cannot be read or parsed is an error; an unreachable JWKS URL is not (its keys are
  // fetched again on demand; until then its tokens get kJwksUnavailable), see
  // provider_status().
  static Result<std::unique_ptr<TokenValidator>> create(
      std::vector<IdentityProviderConfig> providers, std::vector<ServiceKeyConfig> service_keys,
      ValidatorOptions options = {});

  // Validates a JWT or service key. The provider is chosen by the token's "iss"
  // (kNoMatchingProvider when none matches).
  IdentityResult validate(std::string_view credential) const;

  // Same, but the token must come from the named provider (kWrongIssuer otherwise).
  // Service keys are not accepted here (kNoMatchingProvider).
  IdentityResult validate_for_provider(std::string_view credential,
                                       std::string_view provider_name) const;

  std::vector<KeySourceStatus> provider_status() const;

  // Whether provider `provider_name`'s current keys still hold a key with id `kid` (the keys
  // are refetched first when older than the provider's refresh interval). false when no
  // provider has that name; nullopt when its keys were never loaded (nothing to decide on).
  std::optional<bool> has_key(std::string_view provider_name, std::string_view kid) const;

 private:
  struct Provider {
    IdentityProviderConfig config;
    std::vector<Algorithm> algorithms;
    std::vector<std::string> groups_path;
    std::unique_ptr<KeySource> keys;
  };
  TokenValidator() = default;
  IdentityResult validate_jwt(std::string_view token, const Provider* required) const;
  IdentityResult verify_with(const Provider& provider, ParsedJws& jws, Algorithm alg) const;

  std::vector<std::unique_ptr<Provider>> providers_;
  std::vector<ServiceKeyConfig> service_keys_;
  // Service keys accepted before are not put through the KDF again (a validator is built
  // per configuration version, so a changed key starts from nothing).
  mutable VerifiedServiceKeys verified_service_keys_;
  WallClock clock_;
};

}  // namespace pgwarden::identity
