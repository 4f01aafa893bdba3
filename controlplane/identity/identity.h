// Identity types shared by the validator, the control-plane server and pgwardenctl: the
// configuration of identity providers and service keys (parsed by controlplane/config), the
// verified Identity, and the typed rejection with a stable reason code.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::identity {

// One OIDC / JWT issuer. Exactly one of jwks_file, jwks_url, discovery_url is set.
struct IdentityProviderConfig {
  std::string name;                    // unique, shown in audit records as the provider
  std::string issuer;                  // exact match against the token's "iss"
  std::vector<std::string> audiences;  // token "aud" (string or array) must contain one
  std::string jwks_file;               // local JWKS file, read at start
  std::string jwks_url;                // https:// JWKS endpoint
  std::string discovery_url;  // https:// OIDC discovery document (.../openid-configuration)
  std::string ca_file;        // PEM CA bundle for the HTTPS fetches; empty: system store
  std::string groups_claim = "groups";        // dotted path, e.g. "realm_access.roles"
  std::vector<std::string> algorithms;        // allowed "alg" values; empty: every supported one
  int64_t leeway_seconds = 60;                // clock skew tolerated on exp / nbf / iat
  int64_t refresh_min_interval_seconds = 30;  // minimum gap between JWKS fetches
  // Keys older than this are refetched on the next validation (the fetch is skipped while
  // the provider is down and the last good keys stay in use).
  int64_t refresh_interval_seconds = 3600;
};

// A non-OIDC agent's API key: the agent presents "pgw_sk_<id>_<secret>"; `salt` and `hash`
// come from make_service_key_hash() (see service_key.h).
struct ServiceKeyConfig {
  std::string id;        // [A-Za-z0-9-]{1,64}
  std::string salt;      // base64url
  std::string hash;      // "scrypt:N:r:p:<base64url>" or "pbkdf2-sha256:iter:<base64url>"
  std::string identity;  // subject of the resulting Identity
  std::vector<std::string> groups;
};

// A verified caller.
struct Identity {
  std::string subject;
  std::string issuer;  // "pgwarden:service-key" for service keys
  std::vector<std::string> groups;
  nlohmann::json claims;  // every claim of the token (service keys: {sub, groups})
  std::optional<std::chrono::sys_seconds> expires_at;  // nullopt for service keys
  std::string provider;  // IdentityProviderConfig::name, or "service-key:<id>"
  // The key the credential was verified with: the JWKS "kid" of the signing key (empty when
  // the key has none), or the service key id. Sessions are revoked and killed by it.
  std::string key_id;
};

// Why a credential was rejected. The names are stable: they appear in audit records, in the
// dp<->cp protocol ("code") and in metrics. Append only.
#define PGW_IDENTITY_REJECT_REASONS(X)                                                             \
  X(kMalformed, "malformed")            /* not a compact JWS / bad base64url/JSON */               \
  X(kOversized, "oversized")            /* token longer than kMaxTokenBytes */                     \
  X(kAlgNone, "alg_none")               /* unsecured JWT */                                        \
  X(kUnsupportedAlg, "unsupported_alg") /* alg unknown to pgwarden */                              \
  X(kAlgNotAllowed, "alg_not_allowed")  /* not in the provider's allow-list */                     \
  X(kHmacWithAsymmetricKey, "hmac_with_asymmetric_key") /* HS256/384/512 */                        \
  X(kUnsupportedCrit, "unsupported_crit")               /* "crit" header present */                \
  X(kNoMatchingProvider, "no_matching_provider")        /* iss matches no configured provider */   \
  X(kWrongIssuer, "wrong_issuer")                       /* iss differs from the required one */    \
  X(kJwksUnavailable, "jwks_unavailable")               /* provider keys never loaded */           \
  X(kUnknownKid, "unknown_kid")                         /* no key with that kid, even refetched */ \
  X(kKeyAlgMismatch, "key_alg_mismatch")                /* key type/curve/alg does not fit alg */  \
  X(kBadSignatureLength, "bad_signature_length")                                                   \
  X(kEcdsaSignatureOutOfRange, "ecdsa_signature_out_of_range") /* r or s not in [1,n) */           \
  X(kBadSignature, "bad_signature")                                                                \
  X(kMissingClaim, "missing_claim") /* exp / sub / iss absent */                                   \
  X(kInvalidClaim, "invalid_claim") /* claim of the wrong type */                                  \
  X(kExpired, "expired")                                                                           \
  X(kNotYetValid, "not_yet_valid") /* nbf or iat in the future */                                  \
  X(kWrongAudience, "wrong_audience")                                                              \
  X(kUnknownServiceKey, "unknown_service_key")                                                     \
  X(kBadServiceKey, "bad_service_key")

enum class RejectReason {
#define PGW_X(name, str) name,
  PGW_IDENTITY_REJECT_REASONS(PGW_X)
#undef PGW_X
};

// Stable snake_case name, e.g. "alg_none".
std::string_view reject_reason_name(RejectReason reason);

struct Rejection {
  RejectReason reason;
  std::string message;  // human readable; never contains the token

  // Unauthenticated status (SQLSTATE 28P01, as PostgreSQL for a wrong password)
  // "<reason>: <message>".
  Status to_status() const;
};

// Identity or Rejection.
class IdentityResult {
 public:
  IdentityResult(Identity identity) : identity_(std::move(identity)) {}      // NOLINT
  IdentityResult(Rejection rejection) : rejection_(std::move(rejection)) {}  // NOLINT

  bool is_ok() const { return identity_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  // REQUIRES: is_ok().
  const Identity& identity() const& { return *identity_; }
  Identity&& identity() && { return std::move(*identity_); }
  // REQUIRES: !is_ok().
  const Rejection& rejection() const { return *rejection_; }
  Status status() const { return is_ok() ? Status::ok() : rejection_->to_status(); }

 private:
  std::optional<Identity> identity_;
  std::optional<Rejection> rejection_;
};

// Tokens longer than this are rejected before any parsing.
inline constexpr size_t kMaxTokenBytes = 16 * 1024;

}  // namespace pgwarden::identity
