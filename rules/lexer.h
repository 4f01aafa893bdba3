// SQL lexer for the prescreen: one pass over raw SQL text produces
//  * the code view: comments removed, whitespace runs folded to one space, keywords and
//    identifiers lower-cased, plain quoted identifiers that are not SQL keywords unquoted
//    ("Pg_Read_File" -> pg_read_file), every other quoted identifier guarded so no keyword
//    rule can match inside or across it ("drop database" -> "_drop_database", "drop" ->
//    "_drop"), and every string literal (standard, E'', U&'', B'', X'', N'', and
//    dollar-quoted) replaced by an empty literal `''`. Deny/approve rules on keywords match
//    this view, so neither `SELECT 'drop database'` nor `SELECT "drop database" FROM t`
//    trips `drop database`;
//  * the text view: the same, except that string literals are kept verbatim (for rules on
//    values such as file paths);
//  * the shape key: a 64-bit hash of the token stream with literal values (strings, numbers)
//    replaced by placeholders. Statements that differ only in literal values, whitespace,
//    comments or keyword case share a shape key; quoted identifiers hash with their exact
//    spelling, because "Users" and users are different relations in PostgreSQL.
//
// Lexical rules follow PostgreSQL with standard_conforming_strings = on (backslash is an
// escape only inside E'...'); the default rule set denies changing that setting.
// Malformed SQL (unterminated quote or comment) is scanned to the end and flagged; nothing
// after the opening delimiter is ever dropped from the text view.
//
// Thread-safety: lex_sql is reentrant. A LexedSql is a plain value; reuse one per thread to
// avoid allocation (its buffers keep their capacity across calls).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pgwarden::rules {

struct LexFlags {
  bool unterminated_quote = false;    // a '...', E'...', $tag$ or "..." was not closed
  bool unterminated_comment = false;  // a /* ... */ (possibly nested) was not closed
  bool multi_statement = false;       // more than one non-empty statement
  bool unicode_escape = false;        // a U&'...' or U&"..." token was seen
};

class LexedSql {
 public:
  // Lower-cased SQL with literal contents blanked (`''`); see the file comment.
  std::string_view code() const { return code_; }
  // Lower-cased SQL with literals kept verbatim.
  std::string_view text() const { return text_; }
  uint64_t shape_key() const { return shape_key_; }
  // The canonical token stream the shape key hashes (binary; literals reduced to their
  // kind). The shape key is a fast hash, not collision-resistant against an adversary, so a
  // cache keyed by shape_key() must store shape() and compare it on a hit.
  std::string_view shape() const { return shape_; }
  // Number of non-empty statements separated by top-level `;`.
  uint32_t statement_count() const { return statement_count_; }
  const LexFlags& flags() const { return flags_; }

 private:
  friend void lex_sql(std::string_view sql, LexedSql& out);

  std::string code_;
  std::string text_;
  std::string shape_;
  uint64_t shape_key_ = 0;
  uint32_t statement_count_ = 0;
  LexFlags flags_;
};

// Lexes `sql` into `out`, overwriting it. Never fails: malformed input is flagged.
// Allocates only when `out`'s buffers are smaller than the input needs (about 6x its size
// in total, kept across calls).
void lex_sql(std::string_view sql, LexedSql& out);

inline LexedSql lex_sql(std::string_view sql) {
  LexedSql out;
  lex_sql(sql, out);
  return out;
}

}  // namespace pgwarden::rules
