#include "rules/validators.h"

#include <array>
#include <string>

namespace pgwarden::rules {
namespace {

bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }
bool is_upper(char ch) { return ch >= 'A' && ch <= 'Z'; }
bool is_alpha(char ch) { return is_upper(ch) || (ch >= 'a' && ch <= 'z'); }
bool is_alnum(char ch) { return is_digit(ch) || is_alpha(ch); }
char to_upper(char ch) { return (ch >= 'a' && ch <= 'z') ? static_cast<char>(ch - 32) : ch; }

// Characters that join two alphanumeric runs into one token (dates, UUIDs, IPs, versions).
bool is_joiner(char ch) { return ch == '-' || ch == '.' || ch == '/' || ch == ':' || ch == '_'; }

// value[pos] is the letter of a backslash escape (`\n` in JSON or array text): the letter is
// not part of the text around it.
bool is_escape_letter(std::string_view value, size_t pos) {
  char ch = value[pos];
  if (ch != 'n' && ch != 't' && ch != 'r' && ch != 'b' && ch != 'f') return false;
  size_t backslashes = 0;
  while (pos > backslashes && value[pos - 1 - backslashes] == '\\') ++backslashes;
  return backslashes % 2 == 1;
}

// The span is a token of its own: nothing alphanumeric next to it, no joiner leading on to
// more alphanumerics, and (when `plus_joins`) no `+` in front (a number after `+` is an
// international phone number or a signed number, not a card or an id).
bool isolated(std::string_view value, ValueSpan span, bool plus_joins, bool check_before) {
  if (check_before && span.begin > 0) {
    size_t p = span.begin - 1;
    char ch = value[p];
    if (is_alnum(ch) && !is_escape_letter(value, p)) return false;
    if (plus_joins && ch == '+') return false;
    if (is_joiner(ch) && p > 0 && is_alnum(value[p - 1]) && !is_escape_letter(value, p - 1)) {
      return false;
    }
  }
  if (span.end < value.size()) {
    char ch = value[span.end];
    if (is_alnum(ch)) return false;
    if (is_joiner(ch) && span.end + 1 < value.size() && is_alnum(value[span.end + 1])) {
      return false;
    }
  }
  return true;
}

std::optional<ValueSpan> checked(std::string_view value, ValueSpan span, bool plus_joins,
                                 bool check_before = true) {
  if (span.begin >= span.end || !isolated(value, span, plus_joins, check_before)) {
    return std::nullopt;
  }
  return span;
}

// --- payment cards ---------------------------------------------------------------------------

int prefix_number(std::string_view digits, size_t len) {
  int v = 0;
  for (size_t k = 0; k < len && k < digits.size(); ++k) v = v * 10 + (digits[k] - '0');
  return v;
}

bool card_scheme_accepts(std::string_view d) {
  const size_t n = d.size();
  const int p1 = d[0] - '0';
  const int p2 = prefix_number(d, 2);
  const int p3 = prefix_number(d, 3);
  const int p4 = prefix_number(d, 4);
  const bool n16_19 = n >= 16 && n <= 19;
  switch (p1) {
    case 2:  // Mir 2200-2204, Mastercard 2221-2720
      return (p4 >= 2200 && p4 <= 2204 && n16_19) || (p4 >= 2221 && p4 <= 2720 && n == 16);
    case 3:  // Amex 34/37, JCB 3528-3589, Diners 300-305/3095/36/38/39
      if (p2 == 34 || p2 == 37) return n == 15;
      if (p4 >= 3528 && p4 <= 3589) return n16_19;
      return ((p3 >= 300 && p3 <= 305) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39) &&
             n >= 14;
    case 4:  // Visa
      return n == 13 || n == 16 || n == 19;
    case 5:  // Mastercard 51-55; Maestro 50, 56-59
      if (p2 >= 51 && p2 <= 55) return n == 16;
      return true;
    case 6:  // Discover, UnionPay 62, Maestro, RuPay 60/65
      return true;
    case 8:  // UnionPay 81, RuPay 82
      return (p2 == 81 || p2 == 82) && n16_19;
    default:
      return false;
  }
}

// A run of digit groups separated by single blanks or dashes; the longest sub-run of whole
// groups that is a valid card and stands alone.
std::optional<ValueSpan> confirm_card(std::string_view value, ValueSpan c) {
  struct Group {
    size_t begin, end;
  };
  std::array<Group, 20> groups;
  size_t count = 0;
  size_t k = c.begin;
  while (k < c.end) {
    if (!is_digit(value[k])) {
      ++k;
      continue;
    }
    size_t b = k;
    while (k < c.end && is_digit(value[k])) ++k;
    if (count == groups.size()) return std::nullopt;
    groups[count++] = {b, k};
  }
  std::string digits;
  for (size_t i = 0; i < count; ++i) {
    for (size_t j = count; j-- > i;) {
      size_t total = 0;
      for (size_t g = i; g <= j; ++g) total += groups[g].end - groups[g].begin;
      if (total < 13 || total > 19) continue;
      digits.clear();
      for (size_t g = i; g <= j; ++g) {
        digits.append(value.substr(groups[g].begin, groups[g].end - groups[g].begin));
      }
      if (!payment_card_valid(digits)) continue;
      if (auto span = checked(value, {groups[i].begin, groups[j].end}, true)) return span;
    }
  }
  return std::nullopt;
}

// --- IBAN --------------------------------------------------------------------------------------

struct IbanCountry {
  char code[3];
  uint8_t length;
};

// ISO 13616 registry: every SEPA country and territory, and the other countries that issue
// IBANs, sorted by code.
constexpr IbanCountry kIbanCountries[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22},
    {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24},
    {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18},
    {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27},
    {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27},
    {"JO", 30}, {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20},
    {"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MK", 19}, {"MN", 20}, {"MR", 27},
    {"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18}, {"NO", 15}, {"OM", 23}, {"PK", 24}, {"PL", 28},
    {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33}, {"SA", 24}, {"SC", 31},
    {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"SO", 23}, {"ST", 25}, {"SV", 28},
    {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

// From the candidate's start, exactly the country's number of letters and digits, single
// blanks or dashes between them allowed.
std::optional<ValueSpan> confirm_iban(std::string_view value, ValueSpan c) {
  if (c.end - c.begin < 4) return std::nullopt;
  size_t want = iban_length(value.substr(c.begin, 2));
  if (want == 0) return std::nullopt;
  std::string compact;
  size_t k = c.begin;
  size_t end = c.begin;
  while (k < value.size() && compact.size() < want) {
    char ch = value[k];
    if (is_digit(ch) || is_upper(ch)) {
      compact.push_back(ch);
      end = ++k;
    } else if ((ch == ' ' || ch == '-') && compact.size() >= 4 && k + 1 < value.size() &&
               is_alnum(value[k + 1])) {
      ++k;
    } else {
      break;
    }
  }
  if (compact.size() != want || !iban_valid(compact)) return std::nullopt;
  // Blank-separated groups may be followed by other words ("... 00 EUR"); a letter or digit
  // right after the last character means a longer token.
  ValueSpan span{c.begin, end};
  if (end < value.size() && is_alnum(value[end])) return std::nullopt;
  if (c.begin > 0 && is_alnum(value[c.begin - 1]) && !is_escape_letter(value, c.begin - 1)) {
    return std::nullopt;
  }
  return span;
}

// --- phone numbers -----------------------------------------------------------------------------

// International (`+CC` / `00CC`), national with a trunk 0 (`020 7946 0958`, `(030) 1234567`,
// `06-12345678`, `01 23 45 67 89`) or North American (`(555) 123-4567`).
std::optional<ValueSpan> confirm_phone(std::string_view value, ValueSpan c) {
  std::string_view text = value.substr(c.begin, c.end - c.begin);
  if (text.empty()) return std::nullopt;
  size_t digits = 0;
  for (char ch : text) digits += is_digit(ch) ? 1 : 0;
  if (text[0] == '+' || text.starts_with("00")) {
    size_t trunk = text.find("(0)") != std::string_view::npos ? 1 : 0;
    size_t prefix_zeros = text[0] == '+' ? 0 : 2;
    size_t significant = digits - trunk - prefix_zeros;
    if (significant < 8 || significant > 15) return std::nullopt;
    if (text[0] == '+' && c.begin > 0) {
      // `+` starts a token of its own (`tel:+31...`): only a letter or digit glued to it
      // makes it part of something else.
      char before = value[c.begin - 1];
      if (is_alnum(before) && !is_escape_letter(value, c.begin - 1)) return std::nullopt;
      return checked(value, {c.begin, c.end}, false, /*check_before=*/false);
    }
    return checked(value, c, false);
  }
  size_t first = text[0] == '(' ? 1 : 0;
  if (first >= text.size() || !is_digit(text[first])) return std::nullopt;
  if (text[first] == '0') {
    if (digits < 9 || digits > 12) return std::nullopt;
    // After the area code (its separator may differ: `020-555 0104`, `(020) 7946 0958`)
    // every separator is the same, so a date followed by a time is not a number.
    size_t k = first;
    while (k < text.size() && is_digit(text[k])) ++k;
    if (k < text.size() && text[k] == ')') ++k;
    if (k >= text.size()) return std::nullopt;  // needs a separator: compact is ambiguous
    ++k;
    char separator = 0;
    size_t group = 0;
    for (; k < text.size(); ++k) {
      if (is_digit(text[k])) {
        ++group;
        continue;
      }
      if (separator != 0 && text[k] != separator) return std::nullopt;
      if (group < 2) return std::nullopt;
      separator = text[k];
      group = 0;
    }
    if (group < 2) return std::nullopt;
    return checked(value, c, true);
  }
  // North American: ten digits, area code 2-9xx; a leading `1-` / `1 ` / `1.` (the trunk
  // prefix, `1-800-555-0199`) belongs to the number.
  if (digits != 10 || text[first] < '2') return std::nullopt;
  if (c.begin >= 2 && value[c.begin - 2] == '1' &&
      (value[c.begin - 1] == '-' || value[c.begin - 1] == ' ' || value[c.begin - 1] == '.') &&
      (c.begin == 2 || !is_digit(value[c.begin - 3]))) {
    if (auto span = checked(value, {c.begin - 2, c.end}, true)) return span;
  }
  return checked(value, c, true);
}

// --- national ids ------------------------------------------------------------------------------

std::optional<ValueSpan> confirm_us_ssn(std::string_view value, ValueSpan c) {
  std::string_view t = value.substr(c.begin, c.end - c.begin);
  if (t.size() != 11 || t[3] != t[6] || (t[3] != '-' && t[3] != ' ')) return std::nullopt;
  if (!us_ssn_valid(t.substr(0, 3), t.substr(4, 2), t.substr(7, 4))) return std::nullopt;
  return checked(value, c, true);
}

std::optional<ValueSpan> confirm_uk_nino(std::string_view value, ValueSpan c) {
  std::string compact;
  for (size_t k = c.begin; k < c.end; ++k) {
    if (value[k] != ' ') compact.push_back(to_upper(value[k]));
  }
  if (!uk_nino_valid(compact)) return std::nullopt;
  return checked(value, c, true);
}

// A labelled number (`BSN: 1234.56.782`): the span is the digits after the label.
std::optional<ValueSpan> confirm_labelled(std::string_view value, ValueSpan c, size_t length,
                                          bool (*valid)(std::string_view)) {
  size_t k = c.end;
  while (k > c.begin && (is_digit(value[k - 1]) || value[k - 1] == ' ' || value[k - 1] == '.')) {
    --k;
  }
  while (k < c.end && !is_digit(value[k])) ++k;
  std::string digits;
  for (size_t p = k; p < c.end; ++p) {
    if (is_digit(value[p])) digits.push_back(value[p]);
  }
  if (digits.size() != length || !valid(digits)) return std::nullopt;
  return checked(value, {k, c.end}, true);
}

std::optional<ValueSpan> confirm_email(std::string_view value, ValueSpan c) {
  if (c.begin < c.end && is_escape_letter(value, c.begin)) ++c.begin;
  std::string_view t = value.substr(c.begin, c.end - c.begin);
  size_t at = t.rfind('@');
  if (at == std::string_view::npos || at == 0 || at > 64 || t.size() - at - 1 > 253) {
    return std::nullopt;
  }
  std::string_view local = t.substr(0, at);
  if (local.front() != '"' && local.front() != '\\' &&
      (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos)) {
    return std::nullopt;
  }
  // `icon@2x.png` is a file name.
  std::string tld(t.substr(t.rfind('.') + 1));
  for (char& ch : tld) ch = static_cast<char>(ch | 0x20);
  for (const char* ext : {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tiff"}) {
    if (tld == ext) return std::nullopt;
  }
  return c;
}

}  // namespace

std::optional<ValueSpan> confirm(Validator validator, std::string_view value, ValueSpan c) {
  if (c.begin > c.end || c.end > value.size()) return std::nullopt;
  switch (validator) {
    case Validator::kNone:
      return c;
    case Validator::kLuhn: {
      std::string_view t = value.substr(c.begin, c.end - c.begin);
      if (!luhn_valid(t)) return std::nullopt;
      return c;
    }
    case Validator::kPaymentCard:
      return confirm_card(value, c);
    case Validator::kIban:
      return confirm_iban(value, c);
    case Validator::kPhone:
      return confirm_phone(value, c);
    case Validator::kUsSsn:
      return confirm_us_ssn(value, c);
    case Validator::kUkNino:
      return confirm_uk_nino(value, c);
    case Validator::kNlBsn:
      return confirm_labelled(value, c, 9, nl_bsn_valid);
    case Validator::kDeSteuerId:
      return confirm_labelled(value, c, 11, de_steuer_id_valid);
    case Validator::kEmail:
      return confirm_email(value, c);
  }
  return std::nullopt;
}

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

bool payment_card_valid(std::string_view digits) {
  if (digits.size() < 13 || digits.size() > 19) return false;
  for (char ch : digits) {
    if (!is_digit(ch)) return false;
  }
  return card_scheme_accepts(digits) && luhn_valid(digits);
}

size_t iban_length(std::string_view country) {
  if (country.size() != 2) return 0;
  for (const IbanCountry& c : kIbanCountries) {
    if (c.code[0] == country[0] && c.code[1] == country[1]) return c.length;
  }
  return 0;
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
  if (!is_upper(compact[0]) || !is_upper(compact[1]) || !is_digit(compact[2]) ||
      !is_digit(compact[3])) {
    return false;
  }
  if (iban_length(std::string_view(compact, 2)) != len) return false;
  // Move the first four characters to the end, letters become 10..35, then mod 97 == 1.
  int rem = 0;
  for (size_t k = 0; k < len; ++k) {
    char ch = compact[(k + 4) % len];
    if (is_digit(ch)) {
      rem = (rem * 10 + (ch - '0')) % 97;
    } else if (is_upper(ch)) {
      rem = (rem * 100 + (ch - 'A' + 10)) % 97;
    } else {
      return false;
    }
  }
  return rem == 1;
}

bool us_ssn_valid(std::string_view area, std::string_view group, std::string_view serial) {
  if (area.size() != 3 || group.size() != 2 || serial.size() != 4) return false;
  for (std::string_view part : {area, group, serial}) {
    for (char ch : part) {
      if (!is_digit(ch)) return false;
    }
  }
  int a = prefix_number(area, 3);
  return a != 0 && a != 666 && a < 900 && group != "00" && serial != "0000";
}

bool uk_nino_valid(std::string_view c) {
  if (c.size() != 9 || !is_upper(c[0]) || !is_upper(c[1])) return false;
  for (size_t k = 2; k < 8; ++k) {
    if (!is_digit(c[k])) return false;
  }
  if (c[8] < 'A' || c[8] > 'D') return false;
  constexpr std::string_view kBadFirst = "DFIQUV";
  constexpr std::string_view kBadSecond = "DFIOQUV";
  if (kBadFirst.find(c[0]) != std::string_view::npos) return false;
  if (kBadSecond.find(c[1]) != std::string_view::npos) return false;
  std::string_view prefix = c.substr(0, 2);
  for (std::string_view bad : {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}) {
    if (prefix == bad) return false;
  }
  return true;
}

bool nl_bsn_valid(std::string_view d) {
  if (d.size() != 9) return false;
  int sum = 0;
  for (size_t k = 0; k < 9; ++k) {
    if (!is_digit(d[k])) return false;
    int weight = k < 8 ? static_cast<int>(9 - k) : -1;
    sum += weight * (d[k] - '0');
  }
  return sum != 0 && sum % 11 == 0;
}

bool de_steuer_id_valid(std::string_view d) {
  if (d.size() != 11 || d[0] == '0') return false;
  int counts[10] = {};
  for (char ch : d) {
    if (!is_digit(ch)) return false;
  }
  for (size_t k = 0; k < 10; ++k) ++counts[d[k] - '0'];
  int repeated = 0;
  for (int n : counts) {
    if (n > 3) return false;
    if (n >= 2) ++repeated;
  }
  if (repeated != 1) return false;
  // ISO 7064 MOD 11,10.
  int product = 10;
  for (size_t k = 0; k < 10; ++k) {
    int sum = (d[k] - '0' + product) % 10;
    if (sum == 0) sum = 10;
    product = (sum * 2) % 11;
  }
  int check = 11 - product;
  if (check == 10) check = 0;
  return check == d[10] - '0';
}

}  // namespace pgwarden::rules
