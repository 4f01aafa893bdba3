#include "controlplane/identity/base64url.h"

#include <gtest/gtest.h>

namespace pgwarden::identity {
namespace {

TEST(Base64Url, RoundTripsEveryLengthUpToSixteen) {
  std::string data;
  for (int n = 0; n <= 16; ++n) {
    auto enc = base64url_encode(data);
    EXPECT_EQ(enc.find('='), std::string::npos);
    auto dec = base64url_decode(enc);
    ASSERT_TRUE(dec.has_value()) << enc;
    EXPECT_EQ(*dec, data);
    data.push_back(static_cast<char>(0xf0 + n));
  }
}

TEST(Base64Url, DecodesRfc7515HeaderExample) {
  auto dec = base64url_decode("eyJhbGciOiJSUzI1NiJ9");
  ASSERT_TRUE(dec.has_value());
  EXPECT_EQ(*dec, R"({"alg":"RS256"})");
}

TEST(Base64Url, PaddingIsRejected) {
  EXPECT_FALSE(base64url_decode("YQ==").has_value());
  EXPECT_FALSE(base64url_decode("YQ=").has_value());
  EXPECT_TRUE(base64url_decode("YQ").has_value());
}

TEST(Base64Url, StandardAlphabetCharactersAreRejected) {
  EXPECT_FALSE(base64url_decode("ab+c").has_value());
  EXPECT_FALSE(base64url_decode("ab/c").has_value());
  EXPECT_TRUE(base64url_decode("ab-_").has_value());
}

TEST(Base64Url, WhitespaceAndControlBytesAreRejected) {
  EXPECT_FALSE(base64url_decode("ab c").has_value());
  EXPECT_FALSE(base64url_decode("abc\n").has_value());
  EXPECT_FALSE(base64url_decode(std::string("ab\0c", 4)).has_value());
}

TEST(Base64Url, LengthOneModFourIsRejected) {
  EXPECT_FALSE(base64url_decode("a").has_value());
  EXPECT_FALSE(base64url_decode("abcde").has_value());
}

TEST(Base64Url, NonCanonicalTrailingBitsAreRejected) {
  // "YQ" is "a"; "YR" encodes the same byte with a non-zero unused bit.
  EXPECT_FALSE(base64url_decode("YR").has_value());
  EXPECT_FALSE(base64url_decode("YWJ").has_value());  // "ab" canonical is "YWI"
  EXPECT_EQ(*base64url_decode("YWI"), "ab");
}

}  // namespace
}  // namespace pgwarden::identity
