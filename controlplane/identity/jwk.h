// JSON Web Keys (RFC 7517) for signature verification: RSA (n, e), EC (crv P-256 / P-384 /
// P-521, x, y) and OKP (crv Ed25519, x), turned into OpenSSL EVP_PKEYs with the OpenSSL 3
// provider APIs (EVP_PKEY_fromdata; no deprecated RSA_* / EC_KEY_* calls).
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::identity {

struct EvpPkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
// Immutable after construction; EVP_DigestVerify on a shared EVP_PKEY is thread-safe.
using PublicKey = std::shared_ptr<EVP_PKEY>;

enum class KeyType { kRsa, kEc, kOkp };
enum class Curve { kNone, kP256, kP384, kP521, kEd25519 };

struct Jwk {
  std::string kid;  // may be empty
  KeyType kty = KeyType::kRsa;
  Curve crv = Curve::kNone;
  std::string alg;  // the JWK's optional "alg"; when set, tokens must use exactly this alg
  int bits = 0;     // RSA modulus size / curve size
  PublicKey key;
};

struct KeySet {
  std::vector<Jwk> keys;
  // One line per JWK that was skipped (unsupported kty/crv, "use" other than "sig", weak
  // RSA key, private-key members, bad encoding); for logs. Never contains key material.
  std::vector<std::string> skipped;
};

// RSA keys below this size are skipped.
inline constexpr int kMinRsaBits = 2048;
inline constexpr int kMaxRsaBits = 16384;
// JWKS documents larger than this are rejected.
inline constexpr size_t kMaxJwksBytes = 1024 * 1024;
// Keys after the first kMaxJwksKeys usable ones are skipped: a token without "kid" is tried
// against every fitting key, so the count bounds the work one token can cause.
inline constexpr size_t kMaxJwksKeys = 64;

// Parses a JWKS document {"keys":[...]}. Individual unusable keys are skipped (listed in
// KeySet::skipped); a document that is not JSON, has no "keys" array, or yields no usable key
// is an InvalidArgument error.
Result<KeySet> parse_jwks(std::string_view json);

}  // namespace pgwarden::identity
