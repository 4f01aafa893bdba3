// Salted, slow hashes of service keys and admin credentials, as stored in the config file.
//
// Format: "pbkdf2-sha256$<iterations>$<salt base64>$<hash base64>" (PBKDF2-HMAC-SHA256,
// 32-byte hash, salt of at least 16 bytes, 1000 <= iterations <= 10,000,000).
// `pgwarden-cp --hash-credential` prints one for a secret read from stdin.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::vault {

struct CredentialHash {
  uint32_t iterations = 0;
  std::string salt;
  std::string hash;  // 32 bytes
};

inline constexpr uint32_t kDefaultCredentialIterations = 20000;

// Validates the text form; the error message says which part is wrong (never echoes it).
Result<CredentialHash> parse_credential_hash(std::string_view text);
// Hashes `secret` with a fresh random salt.
std::string hash_credential(std::string_view secret,
                            uint32_t iterations = kDefaultCredentialIterations);
// True when `presented` hashes to `stored` (constant-time comparison).
bool verify_credential(const CredentialHash& stored, std::string_view presented);

}  // namespace pgwarden::vault
