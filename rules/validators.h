// Post-match validators for detect rules: a regex finds candidates, these confirm them so
// that masking does not fire on every long number.
//
// Thread-safety: pure functions.
#pragma once

#include <string_view>

namespace pgwarden::rules {

// True when the digits of `candidate` (spaces and dashes ignored; any other non-digit makes
// it false) number 12..19 and pass the Luhn (mod 10) check used by payment cards.
bool luhn_valid(std::string_view candidate);

// True when `candidate` (spaces ignored) is 15..34 characters: two letters, two check digits,
// then letters/digits, and passes the ISO 13616 mod-97 check.
bool iban_valid(std::string_view candidate);

}  // namespace pgwarden::rules
