#include "rules/lexer.h"

#include <array>
#include <cstring>

namespace pgwarden::rules {
namespace {

enum CharClass : uint8_t {
  kSpace = 1,
  kWordStart = 2,  // letters, '_', bytes >= 0x80 (PostgreSQL treats them as letters)
  kWordCont = 4,   // word start, digits, '$'
  kDigit = 8,
  kHexDigit = 16,
};

constexpr std::array<uint8_t, 256> kClass = [] {
  std::array<uint8_t, 256> t{};
  for (int ch : {' ', '\t', '\n', '\r', '\f', '\v'}) t[ch] = kSpace;
  for (int ch = 0; ch < 256; ++ch) {
    bool letter = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch >= 0x80;
    bool digit = ch >= '0' && ch <= '9';
    if (letter) t[ch] |= kWordStart | kWordCont;
    if (digit) t[ch] |= kWordCont | kDigit | kHexDigit;
    if ((ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')) t[ch] |= kHexDigit;
  }
  t['$'] |= kWordCont;
  return t;
}();

constexpr std::array<char, 256> kLower = [] {
  std::array<char, 256> t{};
  for (int ch = 0; ch < 256; ++ch) {
    t[ch] = static_cast<char>((ch >= 'A' && ch <= 'Z') ? ch + ('a' - 'A') : ch);
  }
  return t;
}();

inline bool is(uint8_t ch, uint8_t cls) { return (kClass[ch] & cls) != 0; }

// Token kinds mixed into the shape key; values are arbitrary but fixed.
enum class TokenKind : uint64_t {
  kWord = 0x11,
  kQuotedIdent = 0x22,
  kString = 0x33,
  kNumber = 0x44,
  kParam = 0x55,
  kOp = 0x66,
};

class ShapeHasher {
 public:
  void token(TokenKind kind) { mix(static_cast<uint64_t>(kind)); }
  void token(TokenKind kind, const char* p, size_t len) {
    mix(static_cast<uint64_t>(kind) | (static_cast<uint64_t>(len) << 8));
    while (len >= 8) {
      uint64_t v;
      std::memcpy(&v, p, 8);
      mix(v);
      p += 8;
      len -= 8;
    }
    if (len > 0) {
      uint64_t v = 0;
      std::memcpy(&v, p, len);
      mix(v);
    }
  }
  uint64_t finish() const {
    // murmur3 fmix64: every input bit affects every output bit.
    uint64_t k = h_;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
  }

 private:
  void mix(uint64_t v) {
    h_ ^= v;
    h_ *= 0x9E3779B97F4A7C15ULL;
    h_ = (h_ << 27) | (h_ >> 37);
  }
  uint64_t h_ = 0x6a09e667f3bcc909ULL;
};

// Cursor state of one lexing pass; the two views are written through raw pointers into
// buffers sized up front (each view is at most input size + 1 bytes).
struct Pass {
  const unsigned char* s;
  size_t n;
  char* code;
  char* text;
  char* code_begin;
  bool pending_space = false;
  bool statement_has_tokens = false;
  uint32_t statements = 0;
  LexFlags flags;
  ShapeHasher shape;

  void separator() { pending_space = code != code_begin; }

  void begin_token() {
    if (pending_space) {
      *code++ = ' ';
      *text++ = ' ';
      pending_space = false;
    }
    statement_has_tokens = true;
  }

  // Copies s[b, e) lower-cased into both views.
  void emit_lowered(size_t b, size_t e) {
    for (size_t k = b; k < e; ++k) {
      char ch = kLower[s[k]];
      *code++ = ch;
      *text++ = ch;
    }
  }

  // A string literal s[b, e): blanked in the code view, verbatim in the text view.
  void emit_string(size_t b, size_t e) {
    begin_token();
    *code++ = '\'';
    *code++ = '\'';
    std::memcpy(text, s + b, e - b);
    text += e - b;
    shape.token(TokenKind::kString);
  }

  // End (one past the closing quote) of a '...' literal whose opening quote is at q.
  size_t end_of_standard_string(size_t q) {
    size_t k = q + 1;
    while (true) {
      const void* hit = k < n ? std::memchr(s + k, '\'', n - k) : nullptr;
      if (hit == nullptr) {
        flags.unterminated_quote = true;
        return n;
      }
      k = static_cast<const unsigned char*>(hit) - s;
      if (k + 1 < n && s[k + 1] == '\'') {
        k += 2;
        continue;
      }
      return k + 1;
    }
  }

  // Same for E'...', where a backslash escapes the next byte.
  size_t end_of_escape_string(size_t q) {
    size_t k = q + 1;
    while (k < n) {
      unsigned char ch = s[k];
      if (ch == '\\') {
        k += 2;
      } else if (ch == '\'') {
        if (k + 1 < n && s[k + 1] == '\'') {
          k += 2;
        } else {
          return k + 1;
        }
      } else {
        ++k;
      }
    }
    flags.unterminated_quote = true;
    return n;
  }

  // Quoted identifier at q ('"'); returns the end. Plain identifiers ("Pg_Read_File") are
  // unquoted and lower-cased in both views so rules see the name PostgreSQL resolves to a
  // function or relation; anything else is copied verbatim with its quotes.
  size_t quoted_identifier(size_t q) {
    size_t k = q + 1;
    bool plain = k < n && is(s[k], kWordStart) && s[k] < 0x80;
    while (true) {
      const void* hit = k < n ? std::memchr(s + k, '"', n - k) : nullptr;
      if (hit == nullptr) {
        flags.unterminated_quote = true;
        begin_token();
        std::memcpy(code, s + q, n - q);
        std::memcpy(text, s + q, n - q);
        code += n - q;
        text += n - q;
        shape.token(TokenKind::kQuotedIdent, reinterpret_cast<const char*>(s + q), n - q);
        return n;
      }
      size_t close = static_cast<const unsigned char*>(hit) - s;
      for (size_t m = k; m < close && plain; ++m) plain = is(s[m], kWordCont) && s[m] < 0x80;
      if (close + 1 < n && s[close + 1] == '"') {
        plain = false;
        k = close + 2;
        continue;
      }
      begin_token();
      if (plain) {
        emit_lowered(q + 1, close);
      } else {
        std::memcpy(code, s + q, close + 1 - q);
        std::memcpy(text, s + q, close + 1 - q);
        code += close + 1 - q;
        text += close + 1 - q;
      }
      shape.token(TokenKind::kQuotedIdent, reinterpret_cast<const char*>(s + q + 1), close - q - 1);
      return close + 1;
    }
  }

  size_t number(size_t i) {
    size_t k = i;
    if (s[k] == '0' && k + 2 < n &&
        (kLower[s[k + 1]] == 'x' || kLower[s[k + 1]] == 'o' || kLower[s[k + 1]] == 'b') &&
        is(s[k + 2], kHexDigit)) {
      k += 2;
      while (k < n && (is(s[k], kHexDigit) || s[k] == '_')) ++k;
    } else {
      while (k < n && (is(s[k], kDigit) || s[k] == '_')) ++k;
      if (k < n && s[k] == '.' && !(k + 1 < n && s[k + 1] == '.')) {
        ++k;
        while (k < n && (is(s[k], kDigit) || s[k] == '_')) ++k;
      }
      if (k < n && kLower[s[k]] == 'e') {
        size_t m = k + 1;
        if (m < n && (s[m] == '+' || s[m] == '-')) ++m;
        if (m < n && is(s[m], kDigit)) {
          k = m;
          while (k < n && is(s[k], kDigit)) ++k;
        }
      }
    }
    begin_token();
    emit_lowered(i, k);
    shape.token(TokenKind::kNumber);
    // `1from` is two tokens to PostgreSQL; keep a word boundary between them in the views.
    if (k < n && is(s[k], kWordCont)) pending_space = true;
    return k;
  }

  // `$` at i: positional parameter, dollar-quoted string, or an operator byte.
  size_t dollar(size_t i) {
    size_t k = i + 1;
    if (k < n && is(s[k], kDigit)) {
      while (k < n && is(s[k], kDigit)) ++k;
      begin_token();
      char* start = code;
      emit_lowered(i, k);
      shape.token(TokenKind::kParam, start, k - i);
      return k;
    }
    if (k < n && is(s[k], kWordStart)) {
      while (k < n && is(s[k], kWordCont) && s[k] != '$') ++k;
    }
    if (k < n && s[k] == '$') {
      std::string_view all(reinterpret_cast<const char*>(s), n);
      std::string_view tag = all.substr(i, k + 1 - i);
      size_t close = all.find(tag, k + 1);
      size_t end;
      if (close == std::string_view::npos) {
        flags.unterminated_quote = true;
        end = n;
      } else {
        end = close + tag.size();
      }
      emit_string(i, end);
      return end;
    }
    op(i);
    return i + 1;
  }

  void op(size_t i) {
    begin_token();
    char ch = static_cast<char>(s[i]);
    *code++ = ch;
    *text++ = ch;
    shape.token(TokenKind::kOp, &ch, 1);
  }

  void run() {
    size_t i = 0;
    while (i < n) {
      unsigned char ch = s[i];
      if (is(ch, kSpace)) {
        do ++i;
        while (i < n && is(s[i], kSpace));
        separator();
      } else if (is(ch, kWordStart)) {
        i = word(i);
      } else if (is(ch, kDigit) || (ch == '.' && i + 1 < n && is(s[i + 1], kDigit))) {
        i = number(i);
      } else {
        switch (ch) {
          case '-':
            if (i + 1 < n && s[i + 1] == '-') {
              const void* nl = std::memchr(s + i, '\n', n - i);
              i = nl == nullptr ? n : static_cast<const unsigned char*>(nl) - s + 1;
              separator();
            } else {
              op(i++);
            }
            break;
          case '/':
            if (i + 1 < n && s[i + 1] == '*') {
              i = block_comment(i);
              separator();
            } else {
              op(i++);
            }
            break;
          case '\'': {
            size_t end = end_of_standard_string(i);
            emit_string(i, end);
            i = end;
            break;
          }
          case '"':
            i = quoted_identifier(i);
            break;
          case '$':
            i = dollar(i);
            break;
          case ';': {
            bool closes_statement = statement_has_tokens;
            begin_token();
            *code++ = ';';
            *text++ = ';';
            shape.token(TokenKind::kOp, ";", 1);
            if (closes_statement) ++statements;
            statement_has_tokens = false;
            ++i;
            break;
          }
          default:
            op(i++);
        }
      }
    }
    // The last statement needs no `;`.
    if (statement_has_tokens) ++statements;
  }

  size_t block_comment(size_t i) {
    size_t depth = 1;
    size_t k = i + 2;
    while (k < n) {
      if (s[k] == '*' && k + 1 < n && s[k + 1] == '/') {
        k += 2;
        if (--depth == 0) return k;
      } else if (s[k] == '/' && k + 1 < n && s[k + 1] == '*') {
        k += 2;
        ++depth;
      } else {
        ++k;
      }
    }
    flags.unterminated_comment = true;
    return n;
  }

  size_t word(size_t i) {
    char lower = kLower[s[i]];
    if (i + 1 < n) {
      unsigned char next = s[i + 1];
      if (next == '\'') {
        size_t end = 0;
        if (lower == 'e') {
          end = end_of_escape_string(i + 1);
        } else if (lower == 'b' || lower == 'x' || lower == 'n') {
          end = end_of_standard_string(i + 1);
        }
        if (end != 0) {
          emit_string(i, end);
          return end;
        }
      } else if (lower == 'u' && next == '&' && i + 2 < n) {
        if (s[i + 2] == '\'') {
          flags.unicode_escape = true;
          size_t end = end_of_standard_string(i + 2);
          emit_string(i, end);
          return end;
        }
        if (s[i + 2] == '"') {
          // U&"..." may spell any name with escapes; kept verbatim (and flagged) so a rule
          // can refuse it rather than the lexer guessing at UESCAPE.
          flags.unicode_escape = true;
          begin_token();
          *code++ = 'u';
          *text++ = 'u';
          *code++ = '&';
          *text++ = '&';
          return quoted_identifier_verbatim(i + 2);
        }
      }
    }
    size_t k = i + 1;
    while (k < n && is(s[k], kWordCont)) ++k;
    begin_token();
    char* start = code;
    emit_lowered(i, k);
    shape.token(TokenKind::kWord, start, k - i);
    return k;
  }

  size_t quoted_identifier_verbatim(size_t q) {
    size_t k = q + 1;
    size_t end = n;
    while (k < n) {
      if (s[k] == '"') {
        if (k + 1 < n && s[k + 1] == '"') {
          k += 2;
          continue;
        }
        end = k + 1;
        break;
      }
      ++k;
    }
    if (k >= n) flags.unterminated_quote = true;
    std::memcpy(code, s + q, end - q);
    std::memcpy(text, s + q, end - q);
    code += end - q;
    text += end - q;
    shape.token(TokenKind::kQuotedIdent, reinterpret_cast<const char*>(s + q), end - q);
    return end;
  }
};

}  // namespace

void lex_sql(std::string_view sql, LexedSql& out) {
  const size_t cap = sql.size() + 2;
  if (out.code_.size() < cap) out.code_.resize(cap);
  if (out.text_.size() < cap) out.text_.resize(cap);
  Pass pass{reinterpret_cast<const unsigned char*>(sql.data()), sql.size(), out.code_.data(),
            out.text_.data(), out.code_.data()};
  pass.run();
  out.code_.resize(pass.code - out.code_.data());
  out.text_.resize(pass.text - out.text_.data());
  out.shape_key_ = pass.shape.finish();
  out.statement_count_ = pass.statements;
  out.flags_ = pass.flags;
  out.flags_.multi_statement = pass.statements > 1;
}

}  // namespace pgwarden::rules
