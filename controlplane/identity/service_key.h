// Service keys: API keys for agents that have no OIDC identity. An agent presents
// "pgw_sk_<id>_<secret>" as its password; the control plane looks up <id> in the configured
// keys and compares a salted KDF (scrypt or PBKDF2-HMAC-SHA256, via OpenSSL EVP_KDF) of
// <secret> with the configured hash in constant time.
//
// Thread-safety: everything here is safe to call concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "controlplane/identity/identity.h"

namespace pgwarden::identity {

inline constexpr std::string_view kServiceKeyPrefix = "pgw_sk_";

enum class KdfKind { kScrypt, kPbkdf2Sha256 };

struct KdfParams {
  KdfKind kind = KdfKind::kScrypt;
  uint64_t scrypt_n = 16384;  // 16 MiB with r = 8
  uint32_t scrypt_r = 8;
  uint32_t scrypt_p = 1;
  uint32_t pbkdf2_iterations = 600000;
};

// What goes into ServiceKeyConfig::salt / ::hash.
struct ServiceKeyHash {
  std::string salt;  // base64url of 16 random bytes
  std::string hash;  // "scrypt:N:r:p:<base64url 32 bytes>" / "pbkdf2-sha256:iter:<base64url>"
};

// Hashes `secret` (the part after "pgw_sk_<id>_") with a fresh random salt.
Result<ServiceKeyHash> make_service_key_hash(std::string_view secret, const KdfParams& params = {});

struct GeneratedServiceKey {
  std::string key;  // "pgw_sk_<id>_<43 base64url chars>": shown once to the operator
  ServiceKeyHash hash;
};
// A new random key for `id` (REQUIRES valid id: [A-Za-z0-9-]{1,64}) and its hash.
Result<GeneratedServiceKey> generate_service_key(std::string_view id, const KdfParams& params = {});

// True when `credential` is shaped like a service key (starts with "pgw_sk_").
bool looks_like_service_key(std::string_view credential);

// Checks a configured key: id syntax, salt encoding, hash format and KDF parameter bounds.
Status validate_service_key_config(const ServiceKeyConfig& key);

// Verifies `credential` against `keys`. Rejections: kMalformed (not pgw_sk_<id>_<secret>),
// kOversized, kUnknownServiceKey (no such id; the KDF still runs so timing does not reveal
// which ids exist), kBadServiceKey (wrong secret). REQUIRES: every key passed
// validate_service_key_config.
IdentityResult verify_service_key(std::string_view credential,
                                  const std::vector<ServiceKeyConfig>& keys);

}  // namespace pgwarden::identity
