#include "rules/validators.h"

#include <gtest/gtest.h>

#include <string>

namespace pgwarden::rules {
namespace {

// --- the checksum and range functions, both ways ---------------------------------------------

struct CheckCase {
  const char* name;
  bool (*check)(std::string_view);
  const char* input;
  bool valid;
};

void PrintTo(const CheckCase& c, std::ostream* os) { *os << c.name; }

class ChecksumTest : public ::testing::TestWithParam<CheckCase> {};

TEST_P(ChecksumTest, AcceptsExactlyTheValidInputs) {
  const CheckCase& c = GetParam();
  EXPECT_EQ(c.check(c.input), c.valid) << c.input;
}

bool ssn(std::string_view s) { return us_ssn_valid(s.substr(0, 3), s.substr(3, 2), s.substr(5)); }

INSTANTIATE_TEST_SUITE_P(
    Validators, ChecksumTest,
    ::testing::Values(
        CheckCase{"LuhnVisaTestCard", luhn_valid, "4111111111111111", true},
        CheckCase{"LuhnGroupedBySpaces", luhn_valid, "4111 1111 1111 1111", true},
        CheckCase{"LuhnGroupedByDashes", luhn_valid, "5500-0055-5555-5559", true},
        CheckCase{"LuhnAmex", luhn_valid, "378282246310005", true},
        CheckCase{"LuhnWrongCheckDigit", luhn_valid, "4111111111111112", false},
        CheckCase{"LuhnTooShort", luhn_valid, "00000000000", false},
        CheckCase{"LuhnLetter", luhn_valid, "4111a11111111111", false},
        CheckCase{"LuhnEmpty", luhn_valid, "", false},
        CheckCase{"CardVisa16", payment_card_valid, "4111111111111111", true},
        CheckCase{"CardVisa13", payment_card_valid, "4222222222222", true},
        CheckCase{"CardMastercard", payment_card_valid, "5500005555555559", true},
        CheckCase{"CardMastercard2Series", payment_card_valid, "2223000048400011", true},
        CheckCase{"CardAmex", payment_card_valid, "378282246310005", true},
        CheckCase{"CardDiscover", payment_card_valid, "6011111111111117", true},
        CheckCase{"CardJcb", payment_card_valid, "3530111333300000", true},
        CheckCase{"CardDiners14", payment_card_valid, "30569309025904", true},
        CheckCase{"CardUnionPay", payment_card_valid, "6200000000000005", true},
        CheckCase{"CardLuhnValidButNoSchemePrefix", payment_card_valid, "1234567890123452", false},
        CheckCase{"CardLuhnValidStartingWithNine", payment_card_valid, "9000000000000001", false},
        CheckCase{"CardAmexWrongLength", payment_card_valid, "3782822463100005", false},
        CheckCase{"CardVisaWrongLength", payment_card_valid, "41111111111111", false},
        CheckCase{"CardWrongCheckDigit", payment_card_valid, "4111111111111112", false},
        CheckCase{"CardWithSeparatorsNeedsDigitsOnly", payment_card_valid, "4111 1111 1111 1111",
                  false},
        CheckCase{"IbanDe", iban_valid, "DE89370400440532013000", true},
        CheckCase{"IbanDeGrouped", iban_valid, "DE89 3704 0044 0532 0130 00", true},
        CheckCase{"IbanGbWithLetters", iban_valid, "GB82WEST12345698765432", true},
        CheckCase{"IbanBadChecksum", iban_valid, "DE89370400440532013001", false},
        CheckCase{"IbanDigitInCountry", iban_valid, "D189370400440532013000", false},
        CheckCase{"IbanTooShort", iban_valid, "DE8937", false},
        CheckCase{"IbanTooLong", iban_valid, "DE89370400440532013000DE89370400440532013000", false},
        CheckCase{"IbanLowerCase", iban_valid, "de89370400440532013000", false},
        // Valid mod-97 but one character short of Germany's 22.
        CheckCase{"IbanWrongCountryLength", iban_valid, "DE5137040044053201300", false},
        CheckCase{"IbanUnknownCountry", iban_valid, "XX82WEST12345698765432", false},
        CheckCase{"SsnValid", ssn, "078051120", true},
        CheckCase{"SsnArea000", ssn, "000123456", false},
        CheckCase{"SsnArea666", ssn, "666123456", false},
        CheckCase{"SsnArea9xx", ssn, "900123456", false},
        CheckCase{"SsnGroup00", ssn, "123001234", false},
        CheckCase{"SsnSerial0000", ssn, "123450000", false},
        CheckCase{"NinoValid", uk_nino_valid, "AB123456C", true},
        CheckCase{"NinoBadFirstLetter", uk_nino_valid, "DA123456C", false},
        CheckCase{"NinoBadSecondLetter", uk_nino_valid, "AO123456C", false},
        CheckCase{"NinoReservedPrefix", uk_nino_valid, "GB123456C", false},
        CheckCase{"NinoBadSuffix", uk_nino_valid, "AB123456E", false},
        CheckCase{"BsnValid", nl_bsn_valid, "111222333", true},
        CheckCase{"BsnValid2", nl_bsn_valid, "123456782", true},
        CheckCase{"BsnFailsElevenProof", nl_bsn_valid, "123456789", false},
        CheckCase{"BsnAllZero", nl_bsn_valid, "000000000", false},
        CheckCase{"BsnEightDigits", nl_bsn_valid, "12345678", false},
        CheckCase{"SteuerIdValid", de_steuer_id_valid, "86095742719", true},
        CheckCase{"SteuerIdValid2", de_steuer_id_valid, "12345678911", true},
        CheckCase{"SteuerIdWrongCheckDigit", de_steuer_id_valid, "86095742718", false},
        CheckCase{"SteuerIdNoRepeatedDigit", de_steuer_id_valid, "65123487095", false},
        CheckCase{"SteuerIdLeadingZero", de_steuer_id_valid, "06095742719", false}),
    [](const auto& info) { return std::string(info.param.name); });

// Every SEPA country (and its registry length) with a valid example from its registry entry.
class SepaIbanTest : public ::testing::TestWithParam<const char*> {};

TEST_P(SepaIbanTest, ValidExampleAndLengthsAndChecksum) {
  std::string iban = GetParam();
  EXPECT_EQ(iban_length(iban.substr(0, 2)), iban.size()) << iban;
  EXPECT_TRUE(iban_valid(iban)) << iban;
  std::string grouped;
  for (size_t k = 0; k < iban.size(); ++k) {
    if (k > 0 && k % 4 == 0) grouped.push_back(' ');
    grouped.push_back(iban[k]);
  }
  EXPECT_TRUE(iban_valid(grouped)) << grouped;
  std::string altered = iban;
  altered.back() = altered.back() == '9' ? '8' : (altered.back() == 'Z' ? 'Y' : '9');
  EXPECT_FALSE(iban_valid(altered)) << altered;
  EXPECT_FALSE(iban_valid(iban + "0")) << "one character too long";
  EXPECT_FALSE(iban_valid(iban.substr(0, iban.size() - 1))) << "one character too short";
}

INSTANTIATE_TEST_SUITE_P(
    Validators, SepaIbanTest,
    ::testing::Values(
        "AD1200012030200359100100", "AT611904300234573201", "BE68539007547034",
        "BG80BNBG96611020345678", "CH9300762011623852957", "CY17002001280000001200527600",
        "CZ6508000000192000145399", "DE89370400440532013000", "DK5000400440116243",
        "EE382200221020145685", "ES9121000418450200051332", "FI2112345600000785",
        "FR1420041010050500013M02606", "GB82WEST12345698765432", "GI75NWBK000000007099453",
        "GR1601101250000000012300695", "HR1210010051863000160", "HU42117730161111101800000000",
        "IE29AIBK93115212345678", "IS140159260076545510730339", "IT60X0542811101000000123456",
        "LI21088100002324013AA", "LT121000011101001000", "LU280019400644750000",
        "LV80BANK0000435195001", "MC5811222000010123456789030", "MT84MALT011000012345MTLCAST001S",
        "NL91ABNA0417164300", "NO9386011117947", "PL61109010140000071219812874",
        "PT50000201231234567890154", "RO49AAAA1B31007593840000", "SE4550000000058398257466",
        "SI56263300012039086", "SK3112000000198742637541", "SM86U0322509800000000270100",
        "VA59001123000012345678"),
    [](const auto& info) { return std::string(info.param).substr(0, 2); });

// --- confirm(): the span to mask, in context --------------------------------------------------

struct ConfirmCase {
  const char* name;
  Validator validator;
  const char* value;
  const char* candidate;  // located in value (first occurrence)
  const char* masked;     // expected span text, nullptr: not confirmed
};

void PrintTo(const ConfirmCase& c, std::ostream* os) { *os << c.name; }

class ConfirmTest : public ::testing::TestWithParam<ConfirmCase> {};

TEST_P(ConfirmTest, ConfirmsAndNarrowsInContext) {
  const ConfirmCase& c = GetParam();
  std::string_view value = c.value;
  size_t at = value.find(c.candidate);
  ASSERT_NE(at, std::string_view::npos);
  std::optional<ValueSpan> span =
      confirm(c.validator, value, {at, at + std::string_view(c.candidate).size()});
  if (c.masked == nullptr) {
    EXPECT_FALSE(span.has_value()) << value.substr(span->begin, span->end - span->begin);
    return;
  }
  ASSERT_TRUE(span.has_value());
  EXPECT_EQ(value.substr(span->begin, span->end - span->begin), c.masked);
}

INSTANTIATE_TEST_SUITE_P(
    Validators, ConfirmTest,
    ::testing::Values(
        ConfirmCase{"CardInsideLongerDigitRun", Validator::kPaymentCard, "qty 2 4111111111111111",
                    "2 4111111111111111", "4111111111111111"},
        ConfirmCase{"CardAfterPlusIsAPhone", Validator::kPaymentCard, "+4111111111111111",
                    "4111111111111111", nullptr},
        ConfirmCase{"CardInsideUuidLikeToken", Validator::kPaymentCard, "id-4111111111111111-x",
                    "4111111111111111", nullptr},
        ConfirmCase{"CardAfterJsonEscape", Validator::kPaymentCard, "a\\n4111111111111111",
                    "4111111111111111", "4111111111111111"},
        ConfirmCase{"IbanTakesCountryLength", Validator::kIban, "NL91 ABNA 0417 1643 00 EUR",
                    "NL91 ABNA 0417", "NL91 ABNA 0417 1643 00"},
        ConfirmCase{"IbanGluedToWord", Validator::kIban, "NL91ABNA0417164300X",
                    "NL91ABNA0417164300", nullptr},
        ConfirmCase{"PhoneInternational", Validator::kPhone, "tel +31-20-555-0104.",
                    "+31-20-555-0104", "+31-20-555-0104"},
        ConfirmCase{"PhoneTooFewDigits", Validator::kPhone, "+31 20 555", "+31 20 555", nullptr},
        ConfirmCase{"PhoneTooManyDigits", Validator::kPhone, "+31 2055501041234567",
                    "+31 2055501041234567", nullptr},
        ConfirmCase{"PhoneContinuesWithDash", Validator::kPhone, "+31-20-555-0104-17",
                    "+31-20-555-0104", nullptr},
        ConfirmCase{"PhoneNationalTrunk", Validator::kPhone, "020-555 0104", "020-555 0104",
                    "020-555 0104"},
        ConfirmCase{"PhoneNationalMixedSeparatorsIsADateTime", Validator::kPhone,
                    "06.12.2026 10:30", "06.12.2026 10", nullptr},
        ConfirmCase{"PhoneNationalCompactIsAmbiguous", Validator::kPhone, "0205550104",
                    "0205550104", nullptr},
        ConfirmCase{"PhoneNanpAreaCodeOne", Validator::kPhone, "155-123-4567", "155-123-4567",
                    nullptr},
        ConfirmCase{"SsnMixedSeparators", Validator::kUsSsn, "123-45 6789", "123-45 6789", nullptr},
        ConfirmCase{"SsnInsideLongerNumber", Validator::kUsSsn, "9-123-45-6789", "123-45-6789",
                    nullptr},
        ConfirmCase{"BsnAfterLabel", Validator::kNlBsn, "BSN: 1112.22.333", "BSN: 1112.22.333",
                    "1112.22.333"},
        ConfirmCase{"BsnFailsElevenProof", Validator::kNlBsn, "bsn 123456789", "bsn 123456789",
                    nullptr},
        ConfirmCase{"SteuerIdAfterLabel", Validator::kDeSteuerId, "Steuer-ID 86 095 742 719",
                    "Steuer-ID 86 095 742 719", "86 095 742 719"},
        ConfirmCase{"EmailAfterJsonEscapeLetter", Validator::kEmail, "x\\nada@example.com",
                    "nada@example.com", "ada@example.com"},
        ConfirmCase{"EmailFileNameIsNot", Validator::kEmail, "icon@2x.png", "icon@2x.png", nullptr},
        ConfirmCase{"EmailDoubleDotLocalPart", Validator::kEmail, "a..b@example.com",
                    "a..b@example.com", nullptr}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Confirm, OutOfRangeCandidateIsRejected) {
  EXPECT_FALSE(confirm(Validator::kNone, "abc", {2, 9}).has_value());
  EXPECT_FALSE(confirm(Validator::kPhone, "", {0, 0}).has_value());
}

}  // namespace
}  // namespace pgwarden::rules
