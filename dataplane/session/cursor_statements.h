// What a statement text does to SQL cursors (DECLARE, FETCH/MOVE, CLOSE, DISCARD ALL), read
// from the lexer's code view so that comments, literals and quoting cannot hide a cursor name.
//
// The session keeps the text of each cursor's DECLARE and the rules generation that screened
// it, so that a FETCH after a rules reload re-screens the cursor's query
// (Session::refuse_stale_cursor, docs/operations.md "Reloading rules").
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pgwarden::session {

struct CursorStatement {
  enum class Kind {
    kDeclare,   // DECLARE name ... CURSOR ... FOR query
    kFetch,     // FETCH or MOVE (reads or moves the cursor `name`)
    kClose,     // CLOSE name
    kCloseAll,  // CLOSE ALL, DISCARD ALL
  };
  Kind kind = Kind::kDeclare;
  // As the lexer's code view spells it: lower-cased, a quoted name guarded ("_name"). Both
  // sides are read the same way, so a DECLARE and its FETCH agree; names that differ only in
  // case or quoting fold together (which makes the check stricter, never weaker).
  std::string name;
  bool with_hold = false;  // kDeclare: WITH HOLD (outlives its transaction)

  bool operator==(const CursorStatement&) const = default;
};

// The cursor statements among the top-level statements of `code` (rules::LexedSql::code()),
// in order. Statements that do not touch a cursor are skipped.
std::vector<CursorStatement> cursor_statements(std::string_view code);

// Cheap test on raw SQL: whether `sql` may contain a cursor statement (a keyword cannot be
// quoted or escaped, so a text without these words has none). `fetch_only`: FETCH or MOVE.
bool may_touch_cursor(std::string_view sql, bool fetch_only);
// The same for DECLARE ... CURSOR alone (the word "cursor").
bool may_declare_cursor(std::string_view sql);

}  // namespace pgwarden::session
