#include "dataplane/session/cursor_statements.h"

#include <algorithm>

namespace pgwarden::session {
namespace {

std::vector<std::string_view> words(std::string_view statement) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < statement.size()) {
    while (i < statement.size() && statement[i] == ' ') ++i;
    size_t start = i;
    while (i < statement.size() && statement[i] != ' ') ++i;
    if (i > start) out.push_back(statement.substr(start, i - start));
  }
  return out;
}

bool mentions(std::string_view text, std::string_view word) {
  auto it = std::search(text.begin(), text.end(), word.begin(), word.end(), [](char a, char b) {
    return (a >= 'A' && a <= 'Z' ? a - 'A' + 'a' : a) == b;
  });
  return it != text.end();
}

}  // namespace

std::vector<CursorStatement> cursor_statements(std::string_view code) {
  std::vector<CursorStatement> out;
  size_t start = 0;
  while (start <= code.size()) {
    size_t end = code.find(';', start);
    if (end == std::string_view::npos) end = code.size();
    std::vector<std::string_view> w = words(code.substr(start, end - start));
    start = end + 1;
    if (w.size() < 2) continue;
    CursorStatement s;
    if (w[0] == "declare") {
      // DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR [{WITH|WITHOUT}
      // HOLD] FOR query
      auto cursor = std::find(w.begin() + 2, w.end(), std::string_view("cursor"));
      if (cursor == w.end()) continue;
      auto for_kw = std::find(cursor, w.end(), std::string_view("for"));
      for (auto it = cursor; it != for_kw && it + 1 != w.end(); ++it) {
        if (*it == "with" && *(it + 1) == "hold") s.with_hold = true;
      }
      s.kind = CursorStatement::Kind::kDeclare;
      s.name = std::string(w[1]);
    } else if (w[0] == "fetch" || w[0] == "move") {
      // FETCH [direction] [FROM|IN] name: the name is always the last word.
      s.kind = CursorStatement::Kind::kFetch;
      s.name = std::string(w.back());
    } else if (w[0] == "close") {
      if (w[1] == "all") {
        s.kind = CursorStatement::Kind::kCloseAll;
      } else {
        s.kind = CursorStatement::Kind::kClose;
        s.name = std::string(w[1]);
      }
    } else if (w[0] == "discard" && w[1] == "all") {
      s.kind = CursorStatement::Kind::kCloseAll;
    } else {
      continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

bool may_declare_cursor(std::string_view sql) { return mentions(sql, "cursor"); }

bool may_touch_cursor(std::string_view sql, bool fetch_only) {
  if (mentions(sql, "fetch") || mentions(sql, "move")) return true;
  if (fetch_only) return false;
  return mentions(sql, "cursor") || mentions(sql, "close") || mentions(sql, "discard");
}

}  // namespace pgwarden::session
