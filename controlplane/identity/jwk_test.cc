#include "controlplane/identity/jwk.h"

#include <gtest/gtest.h>

#include "controlplane/identity/rfc_vectors.h"
#include "controlplane/identity/test_signer.h"

namespace pgwarden::identity {
namespace {

std::string wrap(const std::string& jwk) { return R"({"keys":[)" + jwk + "]}"; }

TEST(ParseJwks, RfcRsaEcAndEd25519KeysLoad) {
  auto set = parse_jwks(R"({"keys":[)" + std::string(testing::kRfc7515A2Jwk) + "," +
                        testing::kRfc7515A3Jwk + "," + testing::kRfc8037Jwk + "]}");
  ASSERT_TRUE(set.is_ok()) << set.status().to_string();
  ASSERT_EQ(set->keys.size(), 3u);
  EXPECT_EQ(set->keys[0].kty, KeyType::kRsa);
  EXPECT_EQ(set->keys[0].bits, 2048);
  EXPECT_EQ(set->keys[1].kty, KeyType::kEc);
  EXPECT_EQ(set->keys[1].crv, Curve::kP256);
  EXPECT_EQ(set->keys[2].kty, KeyType::kOkp);
  EXPECT_EQ(set->keys[2].crv, Curve::kEd25519);
  EXPECT_TRUE(set->skipped.empty());
}

TEST(ParseJwks, GeneratedP384AndP521KeysLoadWithKid) {
  testing::TestSigner p384("ES384", "k384"), p521("ES512", "k521");
  auto set = parse_jwks(p384.jwks({&p521}));
  ASSERT_TRUE(set.is_ok()) << set.status().to_string();
  ASSERT_EQ(set->keys.size(), 2u);
  EXPECT_EQ(set->keys[0].kid, "k384");
  EXPECT_EQ(set->keys[0].crv, Curve::kP384);
  EXPECT_EQ(set->keys[1].kid, "k521");
  EXPECT_EQ(set->keys[1].crv, Curve::kP521);
  EXPECT_EQ(set->keys[1].bits, 521);
}

TEST(ParseJwks, UnusableKeysAreSkippedAndListed) {
  std::string doc = R"({"keys":[
    {"kty":"oct","kid":"sym","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ"},
    {"kty":"EC","kid":"enc","use":"enc","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
    {"kty":"EC","kid":"k256","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
    {"kty":"OKP","kid":"x","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
  ]})";
  auto set = parse_jwks(doc);
  ASSERT_TRUE(set.is_ok()) << set.status().to_string();
  ASSERT_EQ(set->keys.size(), 1u);
  EXPECT_EQ(set->keys[0].kid, "k256");
  EXPECT_EQ(set->skipped.size(), 3u);
}

TEST(ParseJwks, PointNotOnCurveIsRejected) {
  // y of the RFC key with the last byte changed.
  auto set = parse_jwks(wrap(
      R"({"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a4"})"));
  EXPECT_FALSE(set.is_ok());
}

TEST(ParseJwks, ShortEcCoordinateIsRejected) {
  auto set = parse_jwks(wrap(
      R"({"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvR","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})"));
  EXPECT_FALSE(set.is_ok());
}

TEST(ParseJwks, RsaKeyBelow2048BitsIsRejected) {
  // 1024-bit modulus (RFC 7517 A.1 uses 2048; this is the first 128 bytes of it).
  std::string n(128, '\xc5');
  auto set = parse_jwks(wrap(R"({"kty":"RSA","n":")" + base64url_encode(n) + R"(","e":"AQAB"})"));
  ASSERT_FALSE(set.is_ok());
  EXPECT_NE(set.status().message().find("below 2048"), std::string::npos);
}

TEST(ParseJwks, KeyWithPrivateMembersIsRejected) {
  auto set = parse_jwks(wrap(
      R"({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"})"));
  EXPECT_FALSE(set.is_ok());
}

TEST(ParseJwks, DocumentErrorsAreRejected) {
  EXPECT_FALSE(parse_jwks("").is_ok());
  EXPECT_FALSE(parse_jwks("[]").is_ok());
  EXPECT_FALSE(parse_jwks(R"({"keys":{}})").is_ok());
  EXPECT_FALSE(parse_jwks(R"({"keys":[]})").is_ok());
  EXPECT_FALSE(parse_jwks(R"({"keys":[]} trailing)").is_ok());
  EXPECT_FALSE(parse_jwks(R"({"keys":[],"keys":[]})").is_ok());  // duplicate member
  EXPECT_FALSE(parse_jwks(std::string(kMaxJwksBytes + 1, ' ')).is_ok());
  std::string deep = R"({"keys":[)" + std::string(100, '[') + std::string(100, ']') + "]}";
  EXPECT_FALSE(parse_jwks(deep).is_ok());
}

TEST(ParseJwks, KeysBeyondTheCapAreSkipped) {
  nlohmann::json keys = nlohmann::json::array();
  for (size_t i = 0; i < kMaxJwksKeys + 5; ++i) {
    keys.push_back(nlohmann::json::parse(testing::kRfc8037Jwk));
    keys.back()["kid"] = "k" + std::to_string(i);
  }
  auto set = parse_jwks(nlohmann::json{{"keys", keys}}.dump());
  ASSERT_TRUE(set.is_ok());
  EXPECT_EQ(set->keys.size(), kMaxJwksKeys);
  EXPECT_EQ(set->skipped.size(), 1u);
}

TEST(ParseJwks, PaddedBase64IsRejected) {
  auto set = parse_jwks(
      wrap(R"({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo="})"));
  EXPECT_FALSE(set.is_ok());
}

}  // namespace
}  // namespace pgwarden::identity
