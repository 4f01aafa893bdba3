// Test-only helper: generates a key pair for a JWS algorithm with OpenSSL, publishes it as a
// JWK and signs tokens with it, so unit tests can build any token they need. Not part of
// identity_lib.
#pragma once

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "controlplane/identity/base64url.h"

namespace pgwarden::identity::testing {

class TestSigner {
 public:
  // alg: RS256..PS512, ES256/384/512, EdDSA.
  explicit TestSigner(std::string alg, std::string kid = "test-key")
      : alg_(std::move(alg)), kid_(std::move(kid)) {
    EVP_PKEY* k = nullptr;
    if (alg_[0] == 'R' || alg_[0] == 'P') {
      k = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
    } else if (alg_ == "ES256") {
      k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    } else if (alg_ == "ES384") {
      k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
    } else if (alg_ == "ES512") {
      k = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521");
    } else {
      k = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    }
    if (!k) throw std::runtime_error("keygen failed");
    key_.reset(k);
  }

  const std::string& kid() const { return kid_; }
  const std::string& alg() const { return alg_; }

  nlohmann::json public_jwk() const {
    nlohmann::json j;
    if (alg_[0] == 'R' || alg_[0] == 'P') {
      j = {{"kty", "RSA"},
           {"n", bn_param(OSSL_PKEY_PARAM_RSA_N)},
           {"e", bn_param(OSSL_PKEY_PARAM_RSA_E)}};
    } else if (alg_[0] == 'E' && alg_ != "EdDSA") {
      size_t coord = alg_ == "ES256" ? 32 : alg_ == "ES384" ? 48 : 66;
      unsigned char pt[200];
      size_t len = 0;
      EVP_PKEY_get_octet_string_param(key_.get(), OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &len);
      std::string s(reinterpret_cast<char*>(pt) + 1, len - 1);
      j = {{"kty", "EC"},
           {"crv", alg_ == "ES256"   ? "P-256"
                   : alg_ == "ES384" ? "P-384"
                                     : "P-521"},
           {"x", base64url_encode(s.substr(0, coord))},
           {"y", base64url_encode(s.substr(coord))}};
    } else {
      unsigned char raw[32];
      size_t len = sizeof(raw);
      EVP_PKEY_get_raw_public_key(key_.get(), raw, &len);
      j = {{"kty", "OKP"},
           {"crv", "Ed25519"},
           {"x", base64url_encode(std::string(reinterpret_cast<char*>(raw), len))}};
    }
    j["kid"] = kid_;
    return j;
  }

  // JWKS with this signer's key (plus `more` keys).
  std::string jwks(const std::vector<const TestSigner*>& more = {}) const {
    nlohmann::json keys = nlohmann::json::array({public_jwk()});
    for (const auto* s : more) keys.push_back(s->public_jwk());
    return nlohmann::json{{"keys", keys}}.dump();
  }

  // Raw signature (JOSE form) over `input`.
  std::string sign_raw(const std::string& input) const {
    const char* md = alg_.ends_with("256")   ? "SHA256"
                     : alg_.ends_with("384") ? "SHA384"
                     : alg_.ends_with("512") ? "SHA512"
                                             : nullptr;
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX* pctx = nullptr;
    EVP_DigestSignInit_ex(ctx, &pctx, md, nullptr, nullptr, key_.get(), nullptr);
    if (alg_[0] == 'P') {
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
    }
    size_t len = 0;
    EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                   input.size());
    std::string sig(len, '\0');
    if (EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
      EVP_MD_CTX_free(ctx);
      throw std::runtime_error("sign failed");
    }
    EVP_MD_CTX_free(ctx);
    sig.resize(len);
    if (alg_[0] == 'E' && alg_ != "EdDSA") {  // DER -> r||s
      size_t coord = alg_ == "ES256" ? 32 : alg_ == "ES384" ? 48 : 66;
      const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
      ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
      std::string out(2 * coord, '\0');
      BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(out.data()),
                   static_cast<int>(coord));
      BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(out.data()) + coord,
                   static_cast<int>(coord));
      ECDSA_SIG_free(es);
      return out;
    }
    return sig;
  }

  // Compact JWS with header {"alg", "kid"} merged with `extra_header`.
  std::string sign(const nlohmann::json& claims,
                   const nlohmann::json& extra_header = nlohmann::json::object()) const {
    nlohmann::json header = {{"alg", alg_}, {"kid", kid_}};
    header.update(extra_header);
    return sign_raw_parts(header.dump(), claims.dump());
  }

  std::string sign_raw_parts(const std::string& header, const std::string& payload) const {
    std::string input = base64url_encode(header) + "." + base64url_encode(payload);
    return input + "." + base64url_encode(sign_raw(input));
  }

 private:
  std::string bn_param(const char* name) const {
    BIGNUM* bn = nullptr;
    EVP_PKEY_get_bn_param(key_.get(), name, &bn);
    std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
    BN_free(bn);
    return base64url_encode(out);
  }

  struct Free {
    void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  };
  std::string alg_;
  std::string kid_;
  std::unique_ptr<EVP_PKEY, Free> key_;
};

}  // namespace pgwarden::identity::testing
