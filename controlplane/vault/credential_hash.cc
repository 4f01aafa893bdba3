#include "controlplane/vault/credential_hash.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <charconv>
#include <stdexcept>
#include <vector>

#include "controlplane/vault/encoding.h"

namespace pgwarden::vault {

namespace {
constexpr std::string_view kScheme = "pbkdf2-sha256";
constexpr size_t kHashBytes = 32;
constexpr size_t kMinSaltBytes = 16;

std::string pbkdf2(std::string_view secret, std::string_view salt, uint32_t iterations) {
  std::string out(kHashBytes, '\0');
  if (PKCS5_PBKDF2_HMAC(secret.data(), static_cast<int>(secret.size()),
                        reinterpret_cast<const unsigned char*>(salt.data()),
                        static_cast<int>(salt.size()), static_cast<int>(iterations), EVP_sha256(),
                        static_cast<int>(kHashBytes),
                        reinterpret_cast<unsigned char*>(out.data())) != 1) {
    out.clear();
  }
  return out;
}
}  // namespace

Result<CredentialHash> parse_credential_hash(std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = text.find('$', start);
    parts.push_back(text.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  if (parts.size() != 4 || parts[0] != kScheme) {
    return invalid_argument("credential hash must look like pbkdf2-sha256$ITERATIONS$SALT$HASH");
  }
  CredentialHash h;
  auto [ptr, ec] =
      std::from_chars(parts[1].data(), parts[1].data() + parts[1].size(), h.iterations);
  if (ec != std::errc() || ptr != parts[1].data() + parts[1].size() || h.iterations < 1000 ||
      h.iterations > 10'000'000) {
    return invalid_argument("credential hash iterations must be 1000..10000000");
  }
  auto salt = base64_decode(parts[2]);
  if (!salt || salt->size() < kMinSaltBytes) {
    return invalid_argument("credential hash salt must be base64 of at least 16 bytes");
  }
  auto hash = base64_decode(parts[3]);
  if (!hash || hash->size() != kHashBytes) {
    return invalid_argument("credential hash must end in base64 of 32 bytes");
  }
  h.salt = std::move(*salt);
  h.hash = std::move(*hash);
  return h;
}

std::string hash_credential(std::string_view secret, uint32_t iterations) {
  std::string salt(kMinSaltBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size())) !=
      1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  std::string hash = pbkdf2(secret, salt, iterations);
  if (hash.empty()) throw std::runtime_error("PBKDF2 failed");
  return std::string(kScheme) + "$" + std::to_string(iterations) + "$" + base64_encode(salt) + "$" +
         base64_encode(hash);
}

bool verify_credential(const CredentialHash& stored, std::string_view presented) {
  std::string got = pbkdf2(presented, stored.salt, stored.iterations);
  bool ok = got.size() == stored.hash.size() && stored.hash.size() == kHashBytes &&
            CRYPTO_memcmp(got.data(), stored.hash.data(), got.size()) == 0;
  OPENSSL_cleanse(got.data(), got.size());
  return ok;
}

}  // namespace pgwarden::vault
