#include "rules/validators.h"

#include <gtest/gtest.h>

namespace pgwarden::rules {
namespace {

TEST(Luhn, AcceptsKnownTestCardNumbers) {
  EXPECT_TRUE(luhn_valid("4111111111111111"));
  EXPECT_TRUE(luhn_valid("4111 1111 1111 1111"));
  EXPECT_TRUE(luhn_valid("5500-0055-5555-5559"));
  EXPECT_TRUE(luhn_valid("378282246310005"));
}

TEST(Luhn, RejectsWrongCheckDigitLengthOrCharacters) {
  EXPECT_FALSE(luhn_valid("4111111111111112"));
  EXPECT_FALSE(luhn_valid("00000000000"));  // 11 digits: too short
  EXPECT_FALSE(luhn_valid("4111a11111111111"));
  EXPECT_FALSE(luhn_valid(""));
}

TEST(Iban, AcceptsValidIbans) {
  EXPECT_TRUE(iban_valid("DE89370400440532013000"));
  EXPECT_TRUE(iban_valid("DE89 3704 0044 0532 0130 00"));
  EXPECT_TRUE(iban_valid("GB82WEST12345698765432"));
}

TEST(Iban, RejectsBadChecksumShapeOrLength) {
  EXPECT_FALSE(iban_valid("DE89370400440532013001"));
  EXPECT_FALSE(iban_valid("D189370400440532013000"));
  EXPECT_FALSE(iban_valid("DE8937"));
  EXPECT_FALSE(iban_valid("DE89370400440532013000DE89370400440532013000"));
  EXPECT_FALSE(iban_valid("de89370400440532013000"));
}

}  // namespace
}  // namespace pgwarden::rules
