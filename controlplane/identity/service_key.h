// Service keys: API keys for agents that have no OIDC identity. An agent presents
// "pgw_sk_<id>_<secret>" as its password; the control plane looks up <id> in the configured
// keys and compares a salted KDF (scrypt or PBKDF2-HMAC-SHA256, via OpenSSL EVP_KDF) of
// <secret> with the configured hash in constant time.
//
// Thread-safety: everything here is safe to call concurrently.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
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

// The service keys one set of `keys` has accepted, so that a credential proven once does not
// pay the KDF (tens of milliseconds of CPU and 16 MiB for scrypt) again at every login: a
// fleet of agents sharing a key logs in thousands of times (docs/scale-out.md). Remembered:
// an HMAC-SHA-256 of the whole credential under a random key made at construction -> the id
// it proved; never the credential. Only successes are remembered, so a wrong or unknown
// secret always pays the KDF (guessing stays as slow as before). The KDF protects the
// configured hash against offline guessing; a process that can read this memory can read the
// credentials in flight anyway.
//
// Bound to the `keys` it was made for: build a new one when the configured keys change (the
// control plane makes one per configuration version, with its TokenValidator). Revocation is
// checked after authentication, so a cached key that is revoked is still refused.
//
// Thread-safety: verify() may be called concurrently.
class VerifiedServiceKeys {
 public:
  static constexpr size_t kDefaultCapacity = 4096;
  explicit VerifiedServiceKeys(size_t capacity = kDefaultCapacity);
  VerifiedServiceKeys(const VerifiedServiceKeys&) = delete;
  VerifiedServiceKeys& operator=(const VerifiedServiceKeys&) = delete;

  // verify_service_key(credential, keys), answered from memory for a credential it accepted
  // before. REQUIRES: the same `keys` on every call.
  IdentityResult verify(std::string_view credential, const std::vector<ServiceKeyConfig>& keys);

  // Credentials remembered (at most the capacity: when full, everything is forgotten).
  size_t size() const;
  // Verifications answered from memory.
  uint64_t hits() const;

 private:
  std::string mac(std::string_view credential) const;

  const size_t capacity_;
  std::string mac_key_;  // 32 random bytes
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::string> verified_;  // mac -> key id
  uint64_t hits_ = 0;
};

}  // namespace pgwarden::identity
