#include "controlplane/vault/credential_hash.h"

#include <gtest/gtest.h>

#include <vector>

#include "controlplane/vault/encoding.h"

namespace pgwarden::vault {
namespace {

TEST(CredentialHashTest, HashThenVerifyRoundTrips) {
  std::string text = hash_credential("key-material", 1000);
  auto h = parse_credential_hash(text);
  ASSERT_TRUE(h.is_ok()) << h.status().to_string();
  EXPECT_TRUE(verify_credential(*h, "key-material"));
  EXPECT_FALSE(verify_credential(*h, "key-materiaL"));
  EXPECT_FALSE(verify_credential(*h, ""));
}

TEST(CredentialHashTest, SaltsDiffer) {
  EXPECT_NE(hash_credential("same", 1000), hash_credential("same", 1000));
}

TEST(CredentialHashTest, MalformedTextsAreRejected) {
  std::string good = hash_credential("x", 1000);
  for (const char* bad : {"", "sha256$1$a$b", "pbkdf2-sha256$999$AAAAAAAAAAAAAAAAAAAAAA==$x",
                          "pbkdf2-sha256$abc$AAAAAAAAAAAAAAAAAAAAAA==$x",
                          "pbkdf2-sha256$1000$AAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                          "pbkdf2-sha256$1000$AAAAAAAAAAAAAAAAAAAAAA==$AAAA"}) {
    EXPECT_FALSE(parse_credential_hash(bad).is_ok()) << bad;
  }
  EXPECT_FALSE(parse_credential_hash(good + "$").is_ok());
}

TEST(EncodingTest, Base64RoundTripAndStrictDecode) {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)}) {
    auto d = base64_decode(base64_encode(s));
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(*d, s);
  }
  EXPECT_FALSE(base64_decode("abc").has_value());
  EXPECT_FALSE(base64_decode("a=bc").has_value());
  EXPECT_FALSE(base64_decode("ab c").has_value());
  EXPECT_EQ(*base64_decode("YWI="), "ab");
}

}  // namespace
}  // namespace pgwarden::vault
