#include "rules/validators.h"

namespace pgwarden::rules {

bool luhn_valid(std::string_view candidate) {
  int digits = 0;
  int sum = 0;
  // Walk from the right: every second digit is doubled.
  for (size_t k = candidate.size(); k-- > 0;) {
    char ch = candidate[k];
    if (ch == ' ' || ch == '-') continue;
    if (ch < '0' || ch > '9') return false;
    int d = ch - '0';
    if (digits % 2 == 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    ++digits;
  }
  return digits >= 12 && digits <= 19 && sum % 10 == 0;
}

bool iban_valid(std::string_view candidate) {
  char compact[34];
  size_t len = 0;
  for (char ch : candidate) {
    if (ch == ' ') continue;
    if (len == sizeof(compact)) return false;
    compact[len++] = ch;
  }
  if (len < 15) return false;
  auto upper = [](char ch) { return ch >= 'A' && ch <= 'Z'; };
  auto digit = [](char ch) { return ch >= '0' && ch <= '9'; };
  if (!upper(compact[0]) || !upper(compact[1]) || !digit(compact[2]) || !digit(compact[3])) {
    return false;
  }
  // Move the first four characters to the end, letters become 10..35, then mod 97 == 1.
  int rem = 0;
  for (size_t k = 0; k < len; ++k) {
    char ch = compact[(k + 4) % len];
    if (digit(ch)) {
      rem = (rem * 10 + (ch - '0')) % 97;
    } else if (upper(ch)) {
      rem = (rem * 100 + (ch - 'A' + 10)) % 97;
    } else {
      return false;
    }
  }
  return rem == 1;
}

}  // namespace pgwarden::rules
