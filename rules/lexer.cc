#include "rules/lexer.h"

#include <array>
#include <cstring>

#include "rules/sql_keywords.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// Output buffers have this much slack past their worst-case size so that the word-run copy
// below may store a whole block and then advance by fewer bytes.
constexpr size_t kSlack = 16;

// Copies the run of identifier bytes at p[0, max) lower-cased to the three outputs and
// returns its length. `ascii_only` stops at bytes >= 0x80 too (the plain-identifier test for
// quoted identifiers). May write up to kSlack bytes past the run in each output.
inline size_t copy_word_run(const unsigned char* p, size_t max, bool ascii_only, char* o1, char* o2,
                            char* o3) {
  size_t k = 0;
#if defined(__SSE2__)
  const __m128i a_1 = _mm_set1_epi8('a' - 1), z_1 = _mm_set1_epi8('z' + 1);
  const __m128i upper_a_1 = _mm_set1_epi8('A' - 1), upper_z_1 = _mm_set1_epi8('Z' + 1);
  const __m128i d0_1 = _mm_set1_epi8('0' - 1), d9_1 = _mm_set1_epi8('9' + 1);
  const __m128i underscore = _mm_set1_epi8('_'), dollar = _mm_set1_epi8('$');
  const __m128i case_bit = _mm_set1_epi8(0x20), zero = _mm_setzero_si128();
  while (k + 16 <= max) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k));
    __m128i folded = _mm_or_si128(x, case_bit);
    __m128i alpha = _mm_and_si128(_mm_cmpgt_epi8(folded, a_1), _mm_cmplt_epi8(folded, z_1));
    __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, d0_1), _mm_cmplt_epi8(x, d9_1));
    __m128i word =
        _mm_or_si128(_mm_or_si128(alpha, digit),
                     _mm_or_si128(_mm_cmpeq_epi8(x, underscore), _mm_cmpeq_epi8(x, dollar)));
    if (!ascii_only) word = _mm_or_si128(word, _mm_cmplt_epi8(x, zero));
    __m128i upper = _mm_and_si128(_mm_cmpgt_epi8(x, upper_a_1), _mm_cmplt_epi8(x, upper_z_1));
    __m128i lowered = _mm_or_si128(x, _mm_and_si128(upper, case_bit));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o1 + k), lowered);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o2 + k), lowered);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o3 + k), lowered);
    unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(word));
    if (mask != 0xFFFF) return k + static_cast<size_t>(__builtin_ctz(~mask));
    k += 16;
  }
#endif
  for (; k < max; ++k) {
    unsigned char ch = p[k];
    if (!is(ch, kWordCont) || (ascii_only && ch >= 0x80)) break;
    char lower = kLower[ch];
    o1[k] = lower;
    o2[k] = lower;
    o3[k] = lower;
  }
  return k;
}

// memcpy for the short copies that dominate SQL tokens, without a libc call: one 16-byte
// block when both the source (inside [src, src_end)) and the destination slack allow it.
inline void copy_token(char* dst, const unsigned char* src, size_t len,
                       const unsigned char* src_end) {
#if defined(__SSE2__)
  if (len <= 16 && src_end - src >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    return;
  }
#endif
  std::memcpy(dst, src, len);
}

// Token kinds in the shape stream. They are never word bytes, and every token after its
// kind byte is self-delimiting (word bytes, one op byte, or a length-prefixed identifier),
// so the stream is an unambiguous encoding of the token sequence.
enum TokenKind : char {
  kKindWord = 1,
  kKindQuotedIdent = 2,
  kKindString = 3,
  kKindNumber = 4,
  kKindParam = 5,
  kKindOp = 6,
};

inline uint64_t rotl(uint64_t v, int r) { return (v << r) | (v >> (64 - r)); }

// Hash of the shape stream: four independent multiply lanes over 32-byte blocks (so the
// multiplies overlap), then murmur3's fmix64 for avalanche. Not collision-resistant against
// an adversary: caches keyed by it must compare LexedSql::shape() on a hit.
uint64_t hash_shape(const char* p, size_t len) {
  constexpr uint64_t kMul[4] = {0x9E3779B97F4A7C15ULL, 0xC2B2AE3D27D4EB4FULL, 0x165667B19E3779F9ULL,
                                0x27D4EB2F165667C5ULL};
  uint64_t lane[4] = {0x6a09e667f3bcc909ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
                      0xa54ff53a5f1d36f1ULL};
  const size_t total = len;
  while (len >= 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t v;
      std::memcpy(&v, p + 8 * k, 8);
      lane[k] = rotl((lane[k] ^ v) * kMul[k], 31);
    }
    p += 32;
    len -= 32;
  }
  uint64_t h = total * kMul[0];
  for (int k = 0; k < 4; ++k) h = rotl(h ^ (lane[k] * kMul[3 - k]), 27) * kMul[1];
  while (len >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = rotl(h ^ (v * kMul[2]), 29) * kMul[0];
    p += 8;
    len -= 8;
  }
  if (len > 0) {
    uint64_t v = 0;
    std::memcpy(&v, p, len);
    h = rotl(h ^ (v * kMul[2]), 29) * kMul[0];
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

// Cursor state of one lexing pass; the two views are written through raw pointers into
// buffers sized up front (each view and the shape stream at most 2 * input size + 8 bytes).
struct Pass {
  const unsigned char* s;
  size_t n;
  char* code;
  char* text;
  char* shape;
  char* code_begin;
  bool pending_space = false;
  bool statement_has_tokens = false;
  uint32_t statements = 0;
  LexFlags flags;

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

  void shape_kind(TokenKind kind) { *shape++ = kind; }

  // Quoted identifiers keep their exact bytes in the shape, length-prefixed (varint).
  void shape_quoted(const unsigned char* p, size_t len) {
    *shape++ = kKindQuotedIdent;
    size_t v = len;
    do {
      *shape++ = static_cast<char>((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
      v >>= 7;
    } while (v != 0);
    copy_token(shape, p, len, s + n);
    shape += len;
  }

  // A string literal s[b, e): blanked in the code view, verbatim in the text view.
  void emit_string(size_t b, size_t e) {
    begin_token();
    *code++ = '\'';
    *code++ = '\'';
    copy_token(text, s + b, e - b, s + n);
    text += e - b;
    shape_kind(kKindString);
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

  // Quoted identifier at q ('"'); returns the end. A quoted identifier is one identifier
  // token to PostgreSQL, never a keyword, so:
  //  * a plain name that is not a keyword ("Pg_Read_File", "pg_shadow") is unquoted and
  //    lower-cased in both views, so rules that name a function, relation or setting see the
  //    name whether or not it was quoted;
  //  * anything else ("drop", "drop database", "My Col") is guarded (see emit_guarded), so no
  //    keyword rule can match inside it or across it.
  // `unicode` (U&"..."): a body with anything but plain name bytes stays verbatim, quotes
  // included, because escapes can spell any name and a rule refuses them.
  size_t quoted_identifier(size_t q, bool unicode = false) {
    begin_token();
    // Fast path: "plain_identifier" with no doubled quotes. The shape stores the original
    // bytes, so it is written separately from the lower-cased views.
    if (q + 1 < n && is(s[q + 1], kWordStart) && s[q + 1] < 0x80) {
      char* shape_body = shape + 2;  // after kind + one-byte length, if it fits
      size_t len = copy_word_run(s + q + 1, n - q - 1, true, code, text, shape_body);
      size_t close = q + 1 + len;
      if (close < n && s[close] == '"' && !(close + 1 < n && s[close + 1] == '"') && len <= 0x7f) {
        if (is_sql_keyword(std::string_view(code, len))) {
          emit_guarded(q + 1, close, true);
        } else {
          code += len;
          text += len;
        }
        if (unicode) {
          shape_quoted(s + q - 2, len + 4);
        } else {
          shape_quoted(s + q + 1, len);
        }
        return close + 1;
      }
    }
    // Common case in one pass: copy lower-cased while checking plainness; redo guarded (or
    // verbatim) if the identifier turns out not to be a plain non-keyword name.
    char* code_start = code;
    char* text_start = text;
    bool plain = q + 1 < n && is(s[q + 1], kWordStart) && s[q + 1] < 0x80;
    size_t k = q + 1;
    while (k < n) {
      unsigned char ch = s[k];
      if (ch == '"') {
        if (k + 1 < n && s[k + 1] == '"') {
          plain = false;
          k += 2;
          continue;
        }
        break;
      }
      plain = plain && is(ch, kWordCont) && ch < 0x80;
      char lower = kLower[ch];
      *code++ = lower;
      *text++ = lower;
      ++k;
    }
    const bool terminated = k < n;
    if (!terminated) flags.unterminated_quote = true;
    const size_t end = terminated ? k + 1 : n;
    if (!plain || !terminated ||
        is_sql_keyword(std::string_view(code_start, static_cast<size_t>(code - code_start)))) {
      code = code_start;
      text = text_start;
      if (unicode && !plain) {
        std::memcpy(code, s + q, end - q);
        std::memcpy(text, s + q, end - q);
        code += end - q;
        text += end - q;
      } else {
        emit_guarded(q + 1, terminated ? k : n, terminated);
      }
    }
    if (unicode) {
      shape_quoted(s + q - 2, end - q + 2);  // with the U& prefix: unlike any plain "..." body
    } else {
      shape_quoted(s + q + 1, (terminated ? k : n) - q - 1);
    }
    return end;
  }

  // Writes the identifier body s[b, e) as `"_body"` (no closing quote when unterminated):
  // ASCII letters lower-cased, every other ASCII byte that is not a letter, digit or `_`
  // (blanks, punctuation, doubled quotes) replaced by `_`, bytes >= 0x80 kept. The leading
  // `_` makes the first word of the body part of a longer word, so `\bdrop` cannot match
  // `"drop"`; the quotes stop `\s+` from joining the body with the tokens around it; and the
  // body has no blanks left for a keyword sequence to match inside. Output is the input
  // length plus one.
  void emit_guarded(size_t b, size_t e, bool terminated) {
    *code++ = '"';
    *text++ = '"';
    *code++ = '_';
    *text++ = '_';
    for (size_t k = b; k < e; ++k) {
      unsigned char ch = s[k];
      char out = kLower[ch];
      if (ch < 0x80 && !is(ch, kWordCont)) out = '_';
      if (ch == '$') out = '_';
      *code++ = out;
      *text++ = out;
    }
    if (terminated) {
      *code++ = '"';
      *text++ = '"';
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
    shape_kind(kKindNumber);
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
      emit_lowered(i, k);
      shape_kind(kKindParam);
      std::memcpy(shape, s + i + 1, k - i - 1);
      shape += k - i - 1;
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
    *shape++ = kKindOp;
    *shape++ = ch;
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
            *shape++ = kKindOp;
            *shape++ = ';';
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
          // U&"..." may spell any name with escapes: a body that is not a plain name is kept
          // verbatim (and flagged) so a rule can refuse it rather than the lexer guessing at
          // UESCAPE; a plain one is the name itself (`u&pg_read_file`).
          flags.unicode_escape = true;
          begin_token();
          *code++ = 'u';
          *text++ = 'u';
          *code++ = '&';
          *text++ = '&';
          return quoted_identifier(i + 2, true);
        }
      }
    }
    begin_token();
    *shape++ = kKindWord;
    size_t len = copy_word_run(s + i, n - i, false, code, text, shape);
    code += len;
    text += len;
    shape += len;
    return i + len;
  }
};

}  // namespace

void lex_sql(std::string_view sql, LexedSql& out) {
  // A view grows past the input only by the space kept between a number and a word that
  // follows it (`1from` -> `1 from`, at most one per 3 input bytes) and by closing an
  // unterminated quote (`'` -> `''`); twice the input bounds both.
  const size_t cap = 2 * sql.size() + 2 + kSlack;
  const size_t shape_cap = 2 * sql.size() + 8 + kSlack;
  if (out.code_.size() < cap) out.code_.resize(cap);
  if (out.text_.size() < cap) out.text_.resize(cap);
  if (out.shape_.size() < shape_cap) out.shape_.resize(shape_cap);
  Pass pass{reinterpret_cast<const unsigned char*>(sql.data()),
            sql.size(),
            out.code_.data(),
            out.text_.data(),
            out.shape_.data(),
            out.code_.data()};
  pass.run();
  out.code_.resize(pass.code - out.code_.data());
  out.text_.resize(pass.text - out.text_.data());
  out.shape_.resize(pass.shape - out.shape_.data());
  out.shape_key_ = hash_shape(out.shape_.data(), out.shape_.size());
  out.statement_count_ = pass.statements;
  out.flags_ = pass.flags;
  out.flags_.multi_statement = pass.statements > 1;
}

}  // namespace pgwarden::rules
