// Post-match validators for detect rules: a Hyperscan pattern finds candidates, a validator
// confirms them (checksum, length, number ranges, the text around the match) so that masking
// does not fire on every long number, date or id. A rule names its validator in the rule
// file (`validator = iban`, docs/rules.md); confirm() dispatches on it.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "rules/rule_set.h"

namespace pgwarden::rules {

// Byte offsets [begin, end) in a scanned value.
struct ValueSpan {
  size_t begin = 0;
  size_t end = 0;
};

// Confirms the candidate `value[candidate.begin, candidate.end)` that a rule with `validator`
// matched, and returns the span to mask: the candidate itself, a part of it (a card number
// inside a longer run of digits, the digits after a `BSN:` label) or, for IBANs, the exact
// country length from the candidate's start. nullopt: not a match. The text around the span
// is checked too: a number that continues past the span (`-`, `.`, `/`, `:` or `_` followed
// by a letter or digit, or a letter or digit right next to it) is part of something else
// (a UUID, a date, an IP address, a version) and is not confirmed.
// REQUIRES: candidate.begin <= candidate.end <= value.size().
std::optional<ValueSpan> confirm(Validator validator, std::string_view value, ValueSpan candidate);

// True when the digits of `candidate` (spaces and dashes ignored; any other non-digit makes
// it false) number 12..19 and pass the Luhn (mod 10) check used by payment cards.
bool luhn_valid(std::string_view candidate);

// True when `digits` (digits only) is a payment card number: 13..19 digits, an issuer prefix
// and length of a card scheme (Visa, Mastercard, American Express, Discover, JCB, Diners,
// UnionPay, Maestro, Mir, RuPay) and the Luhn check.
bool payment_card_valid(std::string_view digits);

// The IBAN length of a country (ISO 13616 registry, upper-case code), 0 when the country
// has no IBAN.
size_t iban_length(std::string_view country);

// True when `candidate` (spaces ignored) is an IBAN: an upper-case country code with IBANs,
// exactly that country's length, letters/digits, and the ISO 13616 mod-97 check.
bool iban_valid(std::string_view candidate);

// US social security number: area 001-899 except 666, group 01-99, serial 0001-9999.
bool us_ssn_valid(std::string_view area, std::string_view group, std::string_view serial);

// UK National Insurance number `compact` (9 characters, upper case, no blanks): two prefix
// letters allowed by HMRC (not D F I Q U V, second not O, not BG GB KN NK NT TN ZZ), six
// digits, suffix A-D.
bool uk_nino_valid(std::string_view compact);

// Dutch BSN (9 digits): the 11-proof 9*d1 + 8*d2 + ... + 2*d8 - d9 = 0 (mod 11), not 0.
bool nl_bsn_valid(std::string_view digits);

// German tax id (Steuerliche Identifikationsnummer, 11 digits): no leading zero, in the first
// ten digits exactly one digit occurs two or three times, and the ISO 7064 MOD 11,10 check
// digit.
bool de_steuer_id_valid(std::string_view digits);

}  // namespace pgwarden::rules
