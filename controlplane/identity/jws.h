// Compact JWS (RFC 7515) parsing and signature verification for the asymmetric JWA
// algorithms (RFC 7518 section 3, RFC 8037): RS256/384/512, PS256/384/512, ES256/384/512 and
// EdDSA with Ed25519. Only OpenSSL 3 EVP APIs are used.
//
// Thread-safety: all functions are pure; safe to call concurrently.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "controlplane/identity/identity.h"
#include "controlplane/identity/jwk.h"

namespace pgwarden::identity {

enum class Algorithm {
  kRS256,
  kRS384,
  kRS512,
  kPS256,
  kPS384,
  kPS512,
  kES256,
  kES384,
  kES512,
  kEdDSA
};

// "RS256" -> kRS256 ...; nullopt for anything else (including "none" and HS*).
std::optional<Algorithm> algorithm_from_name(std::string_view name);
std::string_view algorithm_name(Algorithm alg);

// A structurally valid compact JWS whose signature has not been checked yet.
struct ParsedJws {
  nlohmann::json header;      // JSON object
  nlohmann::json payload;     // JSON object (JWT claims set)
  std::string signing_input;  // "<b64 header>.<b64 payload>"
  std::string signature;      // decoded bytes
  std::string alg;            // header "alg" as written
  std::string kid;            // header "kid" or empty
};

// Splits and decodes `token`: exactly three strict-base64url segments, header and payload
// JSON objects (strict: no duplicate names, no trailing bytes), "alg" a string. Rejects with
// kOversized (> kMaxTokenBytes) or kMalformed. Does not look at the algorithm's value.
std::variant<ParsedJws, Rejection> parse_compact_jws(std::string_view token);

// For `pgwardenctl tokens inspect`: header and claims of a token WITHOUT verifying anything.
// Never use the result for an authorization decision.
struct UnverifiedToken {
  nlohmann::json header;
  nlohmann::json claims;
};
std::variant<UnverifiedToken, Rejection> decode_unverified(std::string_view token);

// Checks that `key` can verify `alg` (RSA for RS/PS, the matching curve for ES, Ed25519 for
// EdDSA, and the JWK's own "alg" if it has one). Returns kKeyAlgMismatch otherwise.
std::optional<Rejection> check_key_fits(Algorithm alg, const Jwk& key);

// Verifies `signature` over `signing_input`. nullopt means valid. Rejections:
// kKeyAlgMismatch, kBadSignatureLength (ECDSA: not 2*coordinate bytes; RSA: not the modulus
// size; EdDSA: not 64), kEcdsaSignatureOutOfRange (r or s zero or >= the group order),
// kBadSignature.
std::optional<Rejection> verify_signature(Algorithm alg, const Jwk& key,
                                          std::string_view signing_input,
                                          std::string_view signature);

}  // namespace pgwarden::identity
