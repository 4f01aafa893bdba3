// Fuzzes the identity module's untrusted-input parsers: compact JWS parsing and full token
// validation (against the RFC 7515 / RFC 8037 example keys), decode_unverified, JWKS parsing
// and strict base64url. Inputs starting with '{' are also signed as a JWT payload with the
// RFC 8037 Ed25519 key, so the claim checks (exp/nbf/aud/groups paths) see validly signed
// hostile claims. Properties checked: no crash, and base64url decode/encode round-trips.
#include <openssl/evp.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "controlplane/identity/base64url.h"
#include "controlplane/identity/jwk.h"
#include "controlplane/identity/jws.h"
#include "controlplane/identity/rfc_vectors.h"
#include "controlplane/identity/validator.h"

namespace {

using namespace pgwarden::identity;

constexpr char kRfc8037PrivateD[] = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

const TokenValidator& validator() {
  static const auto v = [] {
    std::string jwks = std::string(R"({"keys":[)") + testing::kRfc7515A2Jwk + "," +
                       testing::kRfc7515A3Jwk + "," + testing::kRfc8037Jwk + "]}";
    IdentityProviderConfig c;
    c.name = "rfc";
    c.issuer = "joe";
    c.audiences = {"pgwarden"};
    c.jwks_url = "https://idp.invalid/jwks";
    c.groups_claim = "realm_access.roles";
    ValidatorOptions o;
    o.clock = [] {
      return std::chrono::system_clock::time_point(std::chrono::seconds(1300819000));
    };
    o.http_get = [jwks](std::string_view, const pgwarden::net::HttpClientOptions&)
        -> pgwarden::Result<pgwarden::net::HttpResponse> {
      return pgwarden::net::HttpResponse{200, "application/json", jwks};
    };
    auto r = TokenValidator::create({c}, {}, o);
    if (!r.is_ok()) std::abort();
    return std::move(r.value());
  }();
  return *v;
}

EVP_PKEY* signing_key() {
  static EVP_PKEY* key = [] {
    auto d = base64url_decode(kRfc8037PrivateD);
    return EVP_PKEY_new_raw_private_key(
        EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(d->data()), d->size());
  }();
  return key;
}

std::string sign_payload(std::string_view payload) {
  std::string input = base64url_encode(R"({"alg":"EdDSA"})") + "." + base64url_encode(payload);
  unsigned char sig[64];
  size_t len = sizeof(sig);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok =
      EVP_DigestSignInit_ex(ctx, nullptr, nullptr, nullptr, nullptr, signing_key(), nullptr) == 1 &&
      EVP_DigestSign(ctx, sig, &len, reinterpret_cast<const unsigned char*>(input.data()),
                     input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) std::abort();
  return input + "." + base64url_encode(std::string(reinterpret_cast<char*>(sig), len));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const TokenValidator& v = validator();

  // Service keys would spend each run in scrypt; their parsing is covered by unit tests.
  if (in.substr(0, 7) != "pgw_sk_") {
    auto r = v.validate(in);
    if (r.is_ok() && r.identity().subject.empty()) std::abort();
  }
  (void)decode_unverified(in);
  (void)parse_jwks(in);

  if (auto dec = base64url_decode(in)) {
    if (base64url_encode(*dec) != in) std::abort();  // canonical encodings only
  }

  if (!in.empty() && in.front() == '{' && size <= 8192) {
    auto r = v.validate(sign_payload(in));
    if (r.is_ok() && (r.identity().issuer != "joe" || r.identity().subject.empty())) {
      std::abort();
    }
  }
  return 0;
}
