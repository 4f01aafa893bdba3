#include "controlplane/identity/service_key.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <memory>
#include <optional>

#include "controlplane/identity/base64url.h"

namespace pgwarden::identity {
namespace {

constexpr size_t kHashBytes = 32;
constexpr size_t kSaltBytes = 16;
constexpr size_t kMaxSecretBytes = 256;
// Bounds on configured parameters: a typo must not turn every login into a DoS.
constexpr uint64_t kMaxScryptN = uint64_t{1} << 20;
constexpr uint32_t kMaxScryptR = 32;
constexpr uint32_t kMaxScryptP = 16;
constexpr uint32_t kMaxPbkdf2Iterations = 10'000'000;
constexpr uint64_t kScryptMaxMem = uint64_t{1} << 30;

struct KdfFree {
  void operator()(EVP_KDF* k) const { EVP_KDF_free(k); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* c) const { EVP_KDF_CTX_free(c); }
};

struct ParsedHash {
  KdfParams params;
  std::string digest;
};

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) return false;
  }
  return true;
}

template <typename T>
bool parse_uint(std::string_view s, T* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size() && !s.empty();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) return parts;
    start = pos + 1;
  }
}

Result<ParsedHash> parse_hash(std::string_view text) {
  auto parts = split(text, ':');
  ParsedHash out;
  std::string_view digest_b64;
  if (parts.size() == 5 && parts[0] == "scrypt") {
    out.params.kind = KdfKind::kScrypt;
    if (!parse_uint(parts[1], &out.params.scrypt_n) ||
        !parse_uint(parts[2], &out.params.scrypt_r) ||
        !parse_uint(parts[3], &out.params.scrypt_p)) {
      return invalid_argument("scrypt parameters are not numbers");
    }
    digest_b64 = parts[4];
  } else if (parts.size() == 3 && parts[0] == "pbkdf2-sha256") {
    out.params.kind = KdfKind::kPbkdf2Sha256;
    if (!parse_uint(parts[1], &out.params.pbkdf2_iterations)) {
      return invalid_argument("pbkdf2 iteration count is not a number");
    }
    digest_b64 = parts[2];
  } else {
    return invalid_argument("hash must be \"scrypt:N:r:p:<b64>\" or \"pbkdf2-sha256:iter:<b64>\"");
  }
  auto digest = base64url_decode(digest_b64);
  if (!digest || digest->size() != kHashBytes) {
    return invalid_argument("hash digest must be 32 bytes of base64url");
  }
  out.digest = std::move(*digest);
  return out;
}

Status check_params(const KdfParams& p) {
  if (p.kind == KdfKind::kScrypt) {
    if (p.scrypt_n < 1024 || p.scrypt_n > kMaxScryptN || (p.scrypt_n & (p.scrypt_n - 1)) != 0) {
      return invalid_argument("scrypt N must be a power of two in [1024, 2^20]");
    }
    if (p.scrypt_r < 1 || p.scrypt_r > kMaxScryptR || p.scrypt_p < 1 || p.scrypt_p > kMaxScryptP) {
      return invalid_argument("scrypt r must be in [1, 32] and p in [1, 16]");
    }
  } else if (p.pbkdf2_iterations < 10000 || p.pbkdf2_iterations > kMaxPbkdf2Iterations) {
    return invalid_argument("pbkdf2 iterations must be in [10000, 10000000]");
  }
  return Status::ok();
}

Result<std::string> derive(std::string_view secret, std::string_view salt, const KdfParams& p) {
  const char* name = p.kind == KdfKind::kScrypt ? "SCRYPT" : "PBKDF2";
  std::unique_ptr<EVP_KDF, KdfFree> kdf(EVP_KDF_fetch(nullptr, name, nullptr));
  if (!kdf) return internal_error(std::string("OpenSSL has no ") + name);
  std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) return internal_error("EVP_KDF_CTX_new failed");
  // OSSL_PARAM wants non-const pointers; the KDF only reads them.
  char* pw = const_cast<char*>(secret.data());
  char* sl = const_cast<char*>(salt.data());
  uint64_t n = p.scrypt_n, maxmem = kScryptMaxMem;
  uint32_t r = p.scrypt_r, par = p.scrypt_p;
  unsigned int iter = p.pbkdf2_iterations;
  char digest[] = "SHA256";
  std::vector<OSSL_PARAM> params;
  params.push_back(OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, pw, secret.size()));
  params.push_back(OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, sl, salt.size()));
  if (p.kind == KdfKind::kScrypt) {
    params.push_back(OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n));
    params.push_back(OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r));
    params.push_back(OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &par));
    params.push_back(OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem));
  } else {
    params.push_back(OSSL_PARAM_construct_uint(OSSL_KDF_PARAM_ITER, &iter));
    params.push_back(OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0));
  }
  params.push_back(OSSL_PARAM_construct_end());
  std::string out(kHashBytes, '\0');
  if (EVP_KDF_derive(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), out.size(),
                     params.data()) != 1) {
    ERR_clear_error();
    return internal_error(std::string(name) + " derivation failed");
  }
  return out;
}

std::string format_hash(const KdfParams& p, std::string_view digest) {
  if (p.kind == KdfKind::kScrypt) {
    return "scrypt:" + std::to_string(p.scrypt_n) + ":" + std::to_string(p.scrypt_r) + ":" +
           std::to_string(p.scrypt_p) + ":" + base64url_encode(digest);
  }
  return "pbkdf2-sha256:" + std::to_string(p.pbkdf2_iterations) + ":" + base64url_encode(digest);
}

Rejection reject(RejectReason r, std::string msg) { return Rejection{r, std::move(msg)}; }

Identity service_key_identity(const ServiceKeyConfig& key) {
  Identity identity;
  identity.subject = key.identity;
  identity.issuer = "pgwarden:service-key";
  identity.groups = key.groups;
  identity.claims = {{"sub", key.identity}, {"groups", key.groups}, {"service_key_id", key.id}};
  identity.provider = "service-key:" + key.id;
  identity.key_id = key.id;
  return identity;
}

}  // namespace

Result<ServiceKeyHash> make_service_key_hash(std::string_view secret, const KdfParams& params) {
  PGW_RETURN_IF_ERROR(check_params(params));
  if (secret.empty() || secret.size() > kMaxSecretBytes) {
    return invalid_argument("secret must be 1..256 bytes");
  }
  std::string salt(kSaltBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size())) !=
      1) {
    return internal_error("RAND_bytes failed");
  }
  auto digest = derive(secret, salt, params);
  if (!digest) return digest.status();
  return ServiceKeyHash{base64url_encode(salt), format_hash(params, *digest)};
}

Result<GeneratedServiceKey> generate_service_key(std::string_view id, const KdfParams& params) {
  if (!valid_id(id)) return invalid_argument("service key id must match [A-Za-z0-9-]{1,64}");
  std::string secret(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()),
                 static_cast<int>(secret.size())) != 1) {
    return internal_error("RAND_bytes failed");
  }
  std::string secret_text = base64url_encode(secret);
  OPENSSL_cleanse(secret.data(), secret.size());
  auto hash = make_service_key_hash(secret_text, params);
  if (!hash) return hash.status();
  GeneratedServiceKey out{std::string(kServiceKeyPrefix) + std::string(id) + "_" + secret_text,
                          std::move(*hash)};
  OPENSSL_cleanse(secret_text.data(), secret_text.size());
  return out;
}

bool looks_like_service_key(std::string_view credential) {
  return credential.substr(0, kServiceKeyPrefix.size()) == kServiceKeyPrefix;
}

Status validate_service_key_config(const ServiceKeyConfig& key) {
  if (!valid_id(key.id)) return invalid_argument("id must match [A-Za-z0-9-]{1,64}");
  auto salt = base64url_decode(key.salt);
  if (!salt || salt->size() < 8) return invalid_argument("salt must be base64url, >= 8 bytes");
  auto parsed = parse_hash(key.hash);
  if (!parsed) return parsed.status();
  PGW_RETURN_IF_ERROR(check_params(parsed->params));
  if (key.identity.empty()) return invalid_argument("identity must not be empty");
  return Status::ok();
}

IdentityResult verify_service_key(std::string_view credential,
                                  const std::vector<ServiceKeyConfig>& keys) {
  if (credential.size() > kMaxTokenBytes) return reject(RejectReason::kOversized, "too long");
  if (!looks_like_service_key(credential)) {
    return reject(RejectReason::kMalformed, "not a service key");
  }
  std::string_view rest = credential.substr(kServiceKeyPrefix.size());
  size_t sep = rest.find('_');
  if (sep == std::string_view::npos || sep == 0 || sep + 1 == rest.size()) {
    return reject(RejectReason::kMalformed, "service key is not pgw_sk_<id>_<secret>");
  }
  std::string_view id = rest.substr(0, sep);
  std::string_view secret = rest.substr(sep + 1);
  if (!valid_id(id) || secret.size() > kMaxSecretBytes) {
    return reject(RejectReason::kMalformed, "service key is not pgw_sk_<id>_<secret>");
  }
  const ServiceKeyConfig* match = nullptr;
  for (const auto& k : keys) {
    if (k.id == id) match = &k;
  }
  // Unknown ids cost the same KDF run as known ones, so response time does not reveal ids.
  static const ServiceKeyConfig kDummy = [] {
    ServiceKeyConfig d;
    d.salt = base64url_encode(std::string(kSaltBytes, 'x'));
    d.hash = format_hash(KdfParams{}, std::string(kHashBytes, '\0'));
    return d;
  }();
  const ServiceKeyConfig& key = match ? *match : kDummy;
  auto parsed = parse_hash(key.hash);
  auto salt = base64url_decode(key.salt);
  if (!parsed || !salt) return reject(RejectReason::kBadServiceKey, "service key misconfigured");
  auto digest = derive(secret, *salt, parsed->params);
  if (!digest) return reject(RejectReason::kBadServiceKey, "service key check failed");
  bool equal = CRYPTO_memcmp(digest->data(), parsed->digest.data(), kHashBytes) == 0;
  if (!match) {
    return reject(RejectReason::kUnknownServiceKey,
                  "no service key with id \"" + std::string(id) + "\"");
  }
  if (!equal) {
    return reject(RejectReason::kBadServiceKey,
                  "wrong secret for service key \"" + std::string(id) + "\"");
  }
  return service_key_identity(*match);
}

VerifiedServiceKeys::VerifiedServiceKeys(size_t capacity)
    : capacity_(std::max<size_t>(1, capacity)), mac_key_(32, '\0') {
  if (RAND_bytes(reinterpret_cast<unsigned char*>(mac_key_.data()),
                 static_cast<int>(mac_key_.size())) != 1) {
    // No randomness: remember nothing (mac() returns "" and verify() never caches).
    mac_key_.clear();
  }
}

std::string VerifiedServiceKeys::mac(std::string_view credential) const {
  if (mac_key_.empty()) return "";
  std::string out(EVP_MAX_MD_SIZE, '\0');
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), mac_key_.data(), static_cast<int>(mac_key_.size()),
           reinterpret_cast<const unsigned char*>(credential.data()), credential.size(),
           reinterpret_cast<unsigned char*>(out.data()), &len) == nullptr) {
    ERR_clear_error();
    return "";
  }
  out.resize(len);
  return out;
}

IdentityResult VerifiedServiceKeys::verify(std::string_view credential,
                                           const std::vector<ServiceKeyConfig>& keys) {
  const std::string m = mac(credential);
  if (!m.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = verified_.find(m);
    if (it != verified_.end()) {
      for (const auto& k : keys) {
        if (k.id == it->second) {
          ++hits_;
          return service_key_identity(k);
        }
      }
      verified_.erase(it);  // not among `keys` (REQUIRES broken): verify in full
    }
  }
  IdentityResult result = verify_service_key(credential, keys);
  if (result.is_ok() && !m.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (verified_.size() >= capacity_) verified_.clear();
    verified_[m] = result.identity().key_id;
  }
  return result;
}

size_t VerifiedServiceKeys::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return verified_.size();
}

uint64_t VerifiedServiceKeys::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}

}  // namespace pgwarden::identity
