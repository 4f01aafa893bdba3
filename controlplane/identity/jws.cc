#include "controlplane/identity/jws.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/rsa.h>

#include <array>
#include <memory>

#include "controlplane/identity/base64url.h"
#include "controlplane/identity/strict_json.h"

namespace pgwarden::identity {
namespace {

constexpr std::array<std::pair<Algorithm, std::string_view>, 10> kAlgorithmNames = {{
    {Algorithm::kRS256, "RS256"},
    {Algorithm::kRS384, "RS384"},
    {Algorithm::kRS512, "RS512"},
    {Algorithm::kPS256, "PS256"},
    {Algorithm::kPS384, "PS384"},
    {Algorithm::kPS512, "PS512"},
    {Algorithm::kES256, "ES256"},
    {Algorithm::kES384, "ES384"},
    {Algorithm::kES512, "ES512"},
    {Algorithm::kEdDSA, "EdDSA"},
}};

Rejection reject(RejectReason r, std::string msg) { return Rejection{r, std::move(msg)}; }

const char* digest_name(Algorithm alg) {
  switch (alg) {
    case Algorithm::kRS256:
    case Algorithm::kPS256:
    case Algorithm::kES256:
      return "SHA256";
    case Algorithm::kRS384:
    case Algorithm::kPS384:
    case Algorithm::kES384:
      return "SHA384";
    case Algorithm::kRS512:
    case Algorithm::kPS512:
    case Algorithm::kES512:
      return "SHA512";
    case Algorithm::kEdDSA:
      return nullptr;  // Ed25519 hashes internally (PureEdDSA)
  }
  return nullptr;
}

bool is_rsa(Algorithm a) { return a <= Algorithm::kPS512; }
bool is_pss(Algorithm a) { return a >= Algorithm::kPS256 && a <= Algorithm::kPS512; }
bool is_ecdsa(Algorithm a) { return a >= Algorithm::kES256 && a <= Algorithm::kES512; }

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
struct EcGroupFree {
  void operator()(EC_GROUP* g) const { EC_GROUP_free(g); }
};

// Group orders, built once (EC_GROUP is not deprecated; only EC_KEY is).
const BIGNUM* group_order(Curve crv) {
  static const auto make = [](int nid) {
    return std::unique_ptr<EC_GROUP, EcGroupFree>(EC_GROUP_new_by_curve_name(nid));
  };
  static const std::unique_ptr<EC_GROUP, EcGroupFree> p256 = make(NID_X9_62_prime256v1);
  static const std::unique_ptr<EC_GROUP, EcGroupFree> p384 = make(NID_secp384r1);
  static const std::unique_ptr<EC_GROUP, EcGroupFree> p521 = make(NID_secp521r1);
  const EC_GROUP* g = crv == Curve::kP256   ? p256.get()
                      : crv == Curve::kP384 ? p384.get()
                      : crv == Curve::kP521 ? p521.get()
                                            : nullptr;
  return g ? EC_GROUP_get0_order(g) : nullptr;
}

std::optional<Rejection> parse_json_segment(std::string_view seg, const char* what,
                                            nlohmann::json* out) {
  auto bytes = base64url_decode(seg);
  if (!bytes) return reject(RejectReason::kMalformed, std::string(what) + " is not base64url");
  std::string err;
  auto json = parse_strict_json(*bytes, &err);
  if (!json) return reject(RejectReason::kMalformed, std::string(what) + ": " + err);
  if (!json->is_object()) {
    return reject(RejectReason::kMalformed, std::string(what) + " is not a JSON object");
  }
  *out = std::move(*json);
  return std::nullopt;
}

}  // namespace

std::optional<Algorithm> algorithm_from_name(std::string_view name) {
  for (const auto& [alg, n] : kAlgorithmNames) {
    if (n == name) return alg;
  }
  return std::nullopt;
}

std::string_view algorithm_name(Algorithm alg) {
  return kAlgorithmNames[static_cast<size_t>(alg)].second;
}

std::variant<ParsedJws, Rejection> parse_compact_jws(std::string_view token) {
  if (token.size() > kMaxTokenBytes) {
    return reject(RejectReason::kOversized, "token is " + std::to_string(token.size()) +
                                                " bytes, limit " + std::to_string(kMaxTokenBytes));
  }
  size_t d1 = token.find('.');
  size_t d2 = d1 == std::string_view::npos ? d1 : token.find('.', d1 + 1);
  if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos) {
    return reject(RejectReason::kMalformed, "a compact JWS has exactly three segments");
  }
  std::string_view h = token.substr(0, d1);
  std::string_view p = token.substr(d1 + 1, d2 - d1 - 1);
  std::string_view s = token.substr(d2 + 1);
  if (h.empty() || p.empty()) return reject(RejectReason::kMalformed, "empty segment");
  ParsedJws jws;
  if (auto r = parse_json_segment(h, "header", &jws.header)) return *r;
  if (auto r = parse_json_segment(p, "payload", &jws.payload)) return *r;
  auto sig = base64url_decode(s);
  if (!sig) return reject(RejectReason::kMalformed, "signature is not base64url");
  jws.signature = std::move(*sig);
  auto alg = jws.header.find("alg");
  if (alg == jws.header.end() || !alg->is_string()) {
    return reject(RejectReason::kMalformed, "header has no string \"alg\"");
  }
  jws.alg = alg->get<std::string>();
  if (auto kid = jws.header.find("kid"); kid != jws.header.end()) {
    if (!kid->is_string()) return reject(RejectReason::kMalformed, "header \"kid\" not a string");
    jws.kid = kid->get<std::string>();
  }
  jws.signing_input = std::string(token.substr(0, d2));
  return jws;
}

std::variant<UnverifiedToken, Rejection> decode_unverified(std::string_view token) {
  auto parsed = parse_compact_jws(token);
  if (auto* r = std::get_if<Rejection>(&parsed)) return *r;
  auto& jws = std::get<ParsedJws>(parsed);
  return UnverifiedToken{std::move(jws.header), std::move(jws.payload)};
}

std::optional<Rejection> check_key_fits(Algorithm alg, const Jwk& key) {
  auto name = algorithm_name(alg);
  if (!key.alg.empty() && key.alg != name) {
    return reject(RejectReason::kKeyAlgMismatch, "key \"" + key.kid + "\" is for " + key.alg +
                                                     ", token uses " + std::string(name));
  }
  bool fits = false;
  if (is_rsa(alg)) {
    fits = key.kty == KeyType::kRsa;
  } else if (alg == Algorithm::kES256) {
    fits = key.kty == KeyType::kEc && key.crv == Curve::kP256;
  } else if (alg == Algorithm::kES384) {
    fits = key.kty == KeyType::kEc && key.crv == Curve::kP384;
  } else if (alg == Algorithm::kES512) {
    fits = key.kty == KeyType::kEc && key.crv == Curve::kP521;
  } else if (alg == Algorithm::kEdDSA) {
    fits = key.kty == KeyType::kOkp && key.crv == Curve::kEd25519;
  }
  if (!fits) {
    return reject(RejectReason::kKeyAlgMismatch,
                  "key \"" + key.kid + "\" cannot verify " + std::string(name));
  }
  return std::nullopt;
}

std::optional<Rejection> verify_signature(Algorithm alg, const Jwk& key,
                                          std::string_view signing_input,
                                          std::string_view signature) {
  if (auto r = check_key_fits(alg, key)) return r;
  std::string der;  // ECDSA: JOSE r||s converted to the DER form OpenSSL verifies
  std::string_view sig = signature;
  if (is_ecdsa(alg)) {
    size_t coord = (static_cast<size_t>(key.bits) + 7) / 8;
    if (signature.size() != 2 * coord) {
      return reject(RejectReason::kBadSignatureLength,
                    "ECDSA signature is " + std::to_string(signature.size()) + " bytes, expected " +
                        std::to_string(2 * coord));
    }
    const auto* bytes = reinterpret_cast<const unsigned char*>(signature.data());
    std::unique_ptr<BIGNUM, BnFree> r(BN_bin2bn(bytes, static_cast<int>(coord), nullptr));
    std::unique_ptr<BIGNUM, BnFree> s(BN_bin2bn(bytes + coord, static_cast<int>(coord), nullptr));
    const BIGNUM* order = group_order(key.crv);
    if (!r || !s || !order) return reject(RejectReason::kBadSignature, "internal error");
    if (BN_is_zero(r.get()) || BN_is_zero(s.get()) || BN_cmp(r.get(), order) >= 0 ||
        BN_cmp(s.get(), order) >= 0) {
      return reject(RejectReason::kEcdsaSignatureOutOfRange,
                    "ECDSA r or s is zero or not below the group order");
    }
    std::unique_ptr<ECDSA_SIG, EcdsaSigFree> es(ECDSA_SIG_new());
    if (!es || ECDSA_SIG_set0(es.get(), r.get(), s.get()) != 1) {
      return reject(RejectReason::kBadSignature, "internal error");
    }
    r.release();  // owned by `es` now
    s.release();
    unsigned char* out = nullptr;
    int len = i2d_ECDSA_SIG(es.get(), &out);
    if (len <= 0) return reject(RejectReason::kBadSignature, "internal error");
    der.assign(reinterpret_cast<char*>(out), static_cast<size_t>(len));
    OPENSSL_free(out);
    sig = der;
  } else if (is_rsa(alg)) {
    if (signature.size() != static_cast<size_t>(EVP_PKEY_get_size(key.key.get()))) {
      return reject(RejectReason::kBadSignatureLength,
                    "RSA signature length differs from the modulus size");
    }
  } else if (signature.size() != 64) {
    return reject(RejectReason::kBadSignatureLength, "Ed25519 signature is not 64 bytes");
  }

  std::unique_ptr<EVP_MD_CTX, MdCtxFree> md(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by `md`
  bool ok = md && EVP_DigestVerifyInit_ex(md.get(), &pctx, digest_name(alg), nullptr, nullptr,
                                          key.key.get(), nullptr) == 1;
  if (ok && is_rsa(alg)) {
    if (is_pss(alg)) {
      // RFC 7518 section 3.5: MGF1 with the same hash, salt as long as the hash output.
      ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, digest_name(alg), nullptr) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    } else {
      ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    }
  }
  ok = ok &&
       EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                        reinterpret_cast<const unsigned char*>(signing_input.data()),
                        signing_input.size()) == 1;
  ERR_clear_error();
  if (!ok) return reject(RejectReason::kBadSignature, "signature does not verify");
  return std::nullopt;
}

}  // namespace pgwarden::identity
