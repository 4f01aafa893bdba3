#include "controlplane/identity/jws.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

#include "controlplane/identity/base64url.h"
#include "controlplane/identity/rfc_vectors.h"
#include "controlplane/identity/test_signer.h"

namespace pgwarden::identity {
namespace {

Jwk only_key(const std::string& jwk_json) {
  auto set = parse_jwks(R"({"keys":[)" + jwk_json + "]}");
  EXPECT_TRUE(set.is_ok()) << set.status().to_string();
  return set->keys.at(0);
}

std::optional<RejectReason> verify_token(Algorithm alg, const Jwk& key, const std::string& token) {
  size_t dot = token.rfind('.');
  auto sig = base64url_decode(token.substr(dot + 1));
  EXPECT_TRUE(sig.has_value());
  auto r = verify_signature(alg, key, token.substr(0, dot), *sig);
  if (!r) return std::nullopt;
  return r->reason;
}

RejectReason parse_reason(std::string_view token) {
  auto r = parse_compact_jws(token);
  if (std::holds_alternative<ParsedJws>(r)) return static_cast<RejectReason>(-1);
  return std::get<Rejection>(r).reason;
}

TEST(RfcVectors, Rfc7515A2Rs256Verifies) {
  auto parsed = parse_compact_jws(testing::kRfc7515A2Token);
  ASSERT_TRUE(std::holds_alternative<ParsedJws>(parsed));
  auto& jws = std::get<ParsedJws>(parsed);
  EXPECT_EQ(jws.alg, "RS256");
  EXPECT_EQ(jws.payload["iss"], "joe");
  EXPECT_EQ(jws.payload["exp"], 1300819380);
  Jwk key = only_key(testing::kRfc7515A2Jwk);
  EXPECT_FALSE(verify_signature(Algorithm::kRS256, key, jws.signing_input, jws.signature));
}

TEST(RfcVectors, Rfc7515A3Es256Verifies) {
  auto parsed = parse_compact_jws(testing::kRfc7515A3Token);
  ASSERT_TRUE(std::holds_alternative<ParsedJws>(parsed));
  auto& jws = std::get<ParsedJws>(parsed);
  Jwk key = only_key(testing::kRfc7515A3Jwk);
  EXPECT_FALSE(verify_signature(Algorithm::kES256, key, jws.signing_input, jws.signature));
}

TEST(RfcVectors, Rfc8037Ed25519Verifies) {
  Jwk key = only_key(testing::kRfc8037Jwk);
  EXPECT_EQ(verify_token(Algorithm::kEdDSA, key, testing::kRfc8037Token), std::nullopt);
}

TEST(RfcVectors, Rfc7515A2WithOneSignatureBitFlippedFails) {
  std::string token = testing::kRfc7515A2Token;
  size_t dot = token.rfind('.');
  auto sig = *base64url_decode(token.substr(dot + 1));
  sig[10] ^= 0x01;
  std::string tampered = token.substr(0, dot + 1) + base64url_encode(sig);
  EXPECT_EQ(verify_token(Algorithm::kRS256, only_key(testing::kRfc7515A2Jwk), tampered),
            RejectReason::kBadSignature);
}

TEST(RfcVectors, Rfc7515A2VerifiedAsPs256Fails) {
  EXPECT_EQ(
      verify_token(Algorithm::kPS256, only_key(testing::kRfc7515A2Jwk), testing::kRfc7515A2Token),
      RejectReason::kBadSignature);
}

TEST(RfcVectors, RsaKeyCannotVerifyEs256) {
  EXPECT_EQ(
      verify_token(Algorithm::kES256, only_key(testing::kRfc7515A2Jwk), testing::kRfc7515A3Token),
      RejectReason::kKeyAlgMismatch);
}

// ECDSA signatures whose r or s are outside [1, n-1] must be rejected before OpenSSL sees
// them (and with their own reason), whatever the rest of the signature is.
class EcdsaRange : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = only_key(testing::kRfc7515A3Jwk);
    std::string token = testing::kRfc7515A3Token;
    size_t dot = token.rfind('.');
    input_ = token.substr(0, dot);
    sig_ = *base64url_decode(token.substr(dot + 1));
    EC_GROUP* g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    order_.assign(32, '\0');
    BN_bn2binpad(EC_GROUP_get0_order(g), reinterpret_cast<unsigned char*>(order_.data()), 32);
    EC_GROUP_free(g);
  }
  std::optional<RejectReason> check(const std::string& r, const std::string& s) {
    auto rej = verify_signature(Algorithm::kES256, key_, input_, r + s);
    if (!rej) return std::nullopt;
    return rej->reason;
  }
  Jwk key_;
  std::string input_, sig_, order_;
};

TEST_F(EcdsaRange, ValidSignatureVerifies) {
  EXPECT_EQ(check(sig_.substr(0, 32), sig_.substr(32)), std::nullopt);
}
TEST_F(EcdsaRange, ZeroRIsOutOfRange) {
  EXPECT_EQ(check(std::string(32, '\0'), sig_.substr(32)), RejectReason::kEcdsaSignatureOutOfRange);
}
TEST_F(EcdsaRange, ZeroSIsOutOfRange) {
  EXPECT_EQ(check(sig_.substr(0, 32), std::string(32, '\0')),
            RejectReason::kEcdsaSignatureOutOfRange);
}
TEST_F(EcdsaRange, REqualToOrderIsOutOfRange) {
  EXPECT_EQ(check(order_, sig_.substr(32)), RejectReason::kEcdsaSignatureOutOfRange);
}
TEST_F(EcdsaRange, SEqualToOrderIsOutOfRange) {
  EXPECT_EQ(check(sig_.substr(0, 32), order_), RejectReason::kEcdsaSignatureOutOfRange);
}
TEST_F(EcdsaRange, SAboveOrderIsOutOfRange) {
  EXPECT_EQ(check(sig_.substr(0, 32), std::string(32, '\xff')),
            RejectReason::kEcdsaSignatureOutOfRange);
}
TEST_F(EcdsaRange, RAboveOrderIsOutOfRange) {
  EXPECT_EQ(check(std::string(32, '\xff'), sig_.substr(32)),
            RejectReason::kEcdsaSignatureOutOfRange);
}
TEST_F(EcdsaRange, DerEncodedSignatureHasWrongLength) {
  EXPECT_EQ(check(sig_, std::string(8, '\x01')), RejectReason::kBadSignatureLength);
  EXPECT_EQ(check(sig_.substr(0, 32), sig_.substr(32, 31)), RejectReason::kBadSignatureLength);
  EXPECT_EQ(check("", ""), RejectReason::kBadSignatureLength);
}

class GeneratedKeys : public ::testing::TestWithParam<std::string> {};

TEST_P(GeneratedKeys, SignedTokenVerifiesAndTamperedDoesNot) {
  testing::TestSigner signer(GetParam());
  Jwk key = only_key(signer.public_jwk().dump());
  auto alg = *algorithm_from_name(GetParam());
  std::string token = signer.sign({{"sub", "agent"}});
  EXPECT_EQ(verify_token(alg, key, token), std::nullopt);
  std::string other = signer.sign({{"sub", "admin"}});
  std::string spliced = token.substr(0, token.rfind('.')) + other.substr(other.rfind('.'));
  EXPECT_NE(verify_token(alg, key, spliced), std::nullopt);
}

INSTANTIATE_TEST_SUITE_P(EveryAlgorithm, GeneratedKeys,
                         ::testing::Values("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                           "ES256", "ES384", "ES512", "EdDSA"));

TEST(ParseCompactJws, WrongSegmentCountIsMalformed) {
  EXPECT_EQ(parse_reason("eyJhbGciOiJFUzI1NiJ9.e30"), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason("eyJhbGciOiJFUzI1NiJ9.e30.AA.AA"), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason(""), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason(".."), RejectReason::kMalformed);
}

TEST(ParseCompactJws, PaddingInAnySegmentIsMalformed) {
  // {"alg":"ES256"} encodes without padding; add '=' anyway.
  EXPECT_EQ(parse_reason("eyJhbGciOiJFUzI1NiJ9=.e30.AA"), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason("eyJhbGciOiJFUzI1NiJ9.e30=.AA"), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason("eyJhbGciOiJFUzI1NiJ9.e30.AA=="), RejectReason::kMalformed);
}

TEST(ParseCompactJws, StandardBase64AlphabetIsMalformed) {
  std::string token = testing::kRfc7515A2Token;
  size_t pos = token.find('-', token.rfind('.'));
  ASSERT_NE(pos, std::string::npos);
  token[pos] = '+';
  EXPECT_EQ(parse_reason(token), RejectReason::kMalformed);
}

TEST(ParseCompactJws, TrailingGarbageIsMalformed) {
  EXPECT_EQ(parse_reason(std::string(testing::kRfc7515A2Token) + " "), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason(std::string(testing::kRfc7515A2Token) + "\n"), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason(std::string(testing::kRfc7515A2Token) + "."), RejectReason::kMalformed);
  // Bytes after the JSON object inside the payload.
  std::string payload = base64url_encode(R"({"sub":"a"}x)");
  EXPECT_EQ(parse_reason("eyJhbGciOiJFUzI1NiJ9." + payload + ".AA"), RejectReason::kMalformed);
}

TEST(ParseCompactJws, NonObjectJsonIsMalformed) {
  EXPECT_EQ(parse_reason(base64url_encode("[1]") + ".e30.AA"), RejectReason::kMalformed);
  EXPECT_EQ(parse_reason("eyJhbGciOiJFUzI1NiJ9." + base64url_encode("\"s\"") + ".AA"),
            RejectReason::kMalformed);
  EXPECT_EQ(parse_reason(base64url_encode("{\"alg\":") + ".e30.AA"), RejectReason::kMalformed);
}

TEST(ParseCompactJws, DuplicateHeaderMemberIsMalformed) {
  std::string h = base64url_encode(R"({"alg":"ES256","alg":"none"})");
  EXPECT_EQ(parse_reason(h + ".e30.AA"), RejectReason::kMalformed);
}

TEST(ParseCompactJws, MissingOrNonStringAlgIsMalformed) {
  EXPECT_EQ(parse_reason(base64url_encode(R"({"typ":"JWT"})") + ".e30.AA"),
            RejectReason::kMalformed);
  EXPECT_EQ(parse_reason(base64url_encode(R"({"alg":7})") + ".e30.AA"), RejectReason::kMalformed);
}

TEST(ParseCompactJws, OversizedTokenIsRejectedBeforeParsing) {
  std::string big = "eyJhbGciOiJFUzI1NiJ9." + std::string(kMaxTokenBytes, 'A') + ".AA";
  EXPECT_EQ(parse_reason(big), RejectReason::kOversized);
}

TEST(DecodeUnverified, ReturnsHeaderAndClaimsOfRfcToken) {
  auto r = decode_unverified(testing::kRfc7515A3Token);
  ASSERT_TRUE(std::holds_alternative<UnverifiedToken>(r));
  auto& t = std::get<UnverifiedToken>(r);
  EXPECT_EQ(t.header["alg"], "ES256");
  EXPECT_EQ(t.claims["http://example.com/is_root"], true);
}

TEST(DecodeUnverified, MalformedTokenIsRejected) {
  auto r = decode_unverified("not a token");
  ASSERT_TRUE(std::holds_alternative<Rejection>(r));
  EXPECT_EQ(std::get<Rejection>(r).reason, RejectReason::kMalformed);
}

TEST(Algorithms, NamesRoundTripAndUnsafeOnesAreUnknown) {
  for (auto n :
       {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}) {
    auto a = algorithm_from_name(n);
    ASSERT_TRUE(a.has_value()) << n;
    EXPECT_EQ(algorithm_name(*a), n);
  }
  for (auto n : {"none", "HS256", "rs256", "ES256K", "Ed25519", ""}) {
    EXPECT_FALSE(algorithm_from_name(n).has_value()) << n;
  }
}

}  // namespace
}  // namespace pgwarden::identity
