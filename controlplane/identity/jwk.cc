#include "controlplane/identity/jwk.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>

#include <algorithm>

#include "controlplane/identity/base64url.h"
#include "controlplane/identity/strict_json.h"

namespace pgwarden::identity {
namespace {

struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};

// Reads a required base64url string member.
Result<std::string> b64_member(const nlohmann::json& jwk, const char* name) {
  auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string()) {
    return invalid_argument(std::string("missing member \"") + name + "\"");
  }
  auto dec = base64url_decode(it->get_ref<const std::string&>());
  if (!dec || dec->empty()) {
    return invalid_argument(std::string("member \"") + name + "\" is not base64url");
  }
  return std::move(*dec);
}

Result<PublicKey> from_params(const char* type, OSSL_PARAM_BLD* bld) {
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld));
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(
      EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    ERR_clear_error();
    return invalid_argument(std::string("OpenSSL rejected the ") + type + " key");
  }
  PublicKey key(raw, EvpPkeyFree());
  // For EC this checks the point is on the curve and not the point at infinity.
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> check(
      EVP_PKEY_CTX_new_from_pkey(nullptr, raw, nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return invalid_argument(std::string("invalid ") + type + " public key");
  }
  return key;
}

Result<Jwk> parse_rsa(const nlohmann::json& j, Jwk jwk) {
  auto n = b64_member(j, "n");
  if (!n) return n.status();
  auto e = b64_member(j, "e");
  if (!e) return e.status();
  if (e->size() > 8) return invalid_argument("RSA exponent too large");
  std::unique_ptr<BIGNUM, BnFree> bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n->data()),
                                                 static_cast<int>(n->size()), nullptr));
  std::unique_ptr<BIGNUM, BnFree> bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e->data()),
                                                 static_cast<int>(e->size()), nullptr));
  if (!bn_n || !bn_e) return internal_error("out of memory");
  int bits = BN_num_bits(bn_n.get());
  if (bits < kMinRsaBits) {
    return invalid_argument("RSA key of " + std::to_string(bits) + " bits is below " +
                            std::to_string(kMinRsaBits));
  }
  if (bits > kMaxRsaBits) return invalid_argument("RSA key too large");
  if (!BN_is_odd(bn_e.get()) || BN_is_one(bn_e.get())) {
    return invalid_argument("RSA exponent invalid");
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return internal_error("OSSL_PARAM_BLD failed");
  }
  auto key = from_params("RSA", bld.get());
  if (!key) return key.status();
  jwk.kty = KeyType::kRsa;
  jwk.bits = bits;
  jwk.key = std::move(*key);
  return jwk;
}

Result<Jwk> parse_ec(const nlohmann::json& j, Jwk jwk) {
  auto crv_it = j.find("crv");
  if (crv_it == j.end() || !crv_it->is_string()) return invalid_argument("EC key without crv");
  const std::string& crv = crv_it->get_ref<const std::string&>();
  size_t coord = 0;
  const char* group = nullptr;
  if (crv == "P-256") {
    jwk.crv = Curve::kP256, coord = 32, group = "P-256";
  } else if (crv == "P-384") {
    jwk.crv = Curve::kP384, coord = 48, group = "P-384";
  } else if (crv == "P-521") {
    jwk.crv = Curve::kP521, coord = 66, group = "P-521";
  } else {
    return invalid_argument("unsupported EC curve");
  }
  auto x = b64_member(j, "x");
  if (!x) return x.status();
  auto y = b64_member(j, "y");
  if (!y) return y.status();
  // RFC 7518 section 6.2.1.2: x and y are the full coordinate length.
  if (x->size() != coord || y->size() != coord) {
    return invalid_argument("EC coordinate has the wrong length for " + crv);
  }
  std::string point = "\x04" + *x + *y;
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return internal_error("OSSL_PARAM_BLD failed");
  }
  auto key = from_params("EC", bld.get());
  if (!key) return key.status();
  jwk.kty = KeyType::kEc;
  jwk.bits = static_cast<int>(coord == 66 ? 521 : coord * 8);
  jwk.key = std::move(*key);
  return jwk;
}

Result<Jwk> parse_okp(const nlohmann::json& j, Jwk jwk) {
  auto crv_it = j.find("crv");
  if (crv_it == j.end() || !crv_it->is_string() || *crv_it != "Ed25519") {
    return invalid_argument("unsupported OKP curve (only Ed25519)");
  }
  auto x = b64_member(j, "x");
  if (!x) return x.status();
  if (x->size() != 32) return invalid_argument("Ed25519 key is not 32 bytes");
  EVP_PKEY* raw = EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(x->data()), x->size());
  if (!raw) {
    ERR_clear_error();
    return invalid_argument("OpenSSL rejected the Ed25519 key");
  }
  jwk.kty = KeyType::kOkp;
  jwk.crv = Curve::kEd25519;
  jwk.bits = 256;
  jwk.key = PublicKey(raw, EvpPkeyFree());
  return jwk;
}

Result<Jwk> parse_jwk(const nlohmann::json& j) {
  if (!j.is_object()) return invalid_argument("key is not an object");
  Jwk jwk;
  if (auto it = j.find("kid"); it != j.end()) {
    if (!it->is_string()) return invalid_argument("kid is not a string");
    jwk.kid = it->get<std::string>();
  }
  if (auto it = j.find("use"); it != j.end() && *it != "sig") {
    return invalid_argument("\"use\" is not \"sig\"");
  }
  if (auto it = j.find("key_ops"); it != j.end()) {
    bool verify = it->is_array() && std::any_of(it->begin(), it->end(),
                                                [](const auto& op) { return op == "verify"; });
    if (!verify) return invalid_argument("key_ops does not include \"verify\"");
  }
  if (auto it = j.find("alg"); it != j.end()) {
    if (!it->is_string()) return invalid_argument("alg is not a string");
    jwk.alg = it->get<std::string>();
  }
  // A JWKS endpoint that publishes private keys is misconfigured; refuse to touch them.
  for (const char* priv : {"d", "p", "q", "dp", "dq", "qi", "k"}) {
    if (j.contains(priv)) return invalid_argument("contains private or symmetric key material");
  }
  auto kty = j.find("kty");
  if (kty == j.end() || !kty->is_string()) return invalid_argument("missing kty");
  if (*kty == "RSA") return parse_rsa(j, std::move(jwk));
  if (*kty == "EC") return parse_ec(j, std::move(jwk));
  if (*kty == "OKP") return parse_okp(j, std::move(jwk));
  return invalid_argument("unsupported kty");
}

}  // namespace

Result<KeySet> parse_jwks(std::string_view json) {
  if (json.size() > kMaxJwksBytes) return invalid_argument("JWKS document too large");
  std::string err;
  auto doc = parse_strict_json(json, &err);
  if (!doc) return invalid_argument("JWKS is not valid JSON: " + err);
  if (!doc->is_object()) return invalid_argument("JWKS is not a JSON object");
  auto keys = doc->find("keys");
  if (keys == doc->end() || !keys->is_array()) {
    return invalid_argument("JWKS has no \"keys\" array");
  }
  KeySet set;
  size_t index = 0;
  for (const auto& k : *keys) {
    if (set.keys.size() == kMaxJwksKeys) {
      set.skipped.push_back("keys[" + std::to_string(index) + "] and later: more than " +
                            std::to_string(kMaxJwksKeys) + " keys");
      break;
    }
    auto jwk = parse_jwk(k);
    if (jwk) {
      set.keys.push_back(std::move(*jwk));
    } else {
      std::string kid = k.is_object() && k.contains("kid") && k["kid"].is_string()
                            ? k["kid"].get<std::string>()
                            : "";
      if (kid.size() > 64) kid = kid.substr(0, 64) + "...";
      set.skipped.push_back("keys[" + std::to_string(index) + "] kid=\"" + kid +
                            "\": " + jwk.status().message());
    }
    ++index;
  }
  if (set.keys.empty()) {
    std::string why = set.skipped.empty() ? "empty" : set.skipped.front();
    return invalid_argument("JWKS has no usable signing key (" + why + ")");
  }
  return set;
}

}  // namespace pgwarden::identity
