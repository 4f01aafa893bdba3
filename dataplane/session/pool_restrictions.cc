#include "dataplane/session/pool_restrictions.h"

#include <vector>

namespace pgwarden::session {

namespace {

bool word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// Words, and punctuation as one-character tokens ('' for a blanked literal stays two quotes).
std::vector<std::string_view> tokens(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
    } else if (word_char(c)) {
      size_t j = i;
      while (j < s.size() && word_char(s[j])) ++j;
      out.push_back(s.substr(i, j - i));
      i = j;
    } else {
      out.push_back(s.substr(i, 1));
      ++i;
    }
  }
  return out;
}

std::string refusal(std::string_view what, std::string_view instead) {
  std::string m = "pgwarden: ";
  m += what;
  m += " is not supported in transaction pooling mode (this target has pool_mode "
       "\"transaction\": the upstream connection is shared between agents and session state "
       "would outlive your transaction); ";
  m += instead;
  return m;
}

// One statement: tokens [b, e).
std::string check_statement(const std::vector<std::string_view>& t, size_t b, size_t e) {
  auto at = [&](size_t i) -> std::string_view { return i < e ? t[i] : std::string_view(); };
  std::string_view first = at(b);
  if (first == "set") {
    std::string_view next = at(b + 1);
    if (next != "local" && next != "transaction" && next != "constraints") {
      return refusal("SET",
                     "use SET LOCAL inside a transaction (BEGIN; SET LOCAL ...; ...; "
                     "COMMIT), or a startup parameter the policy allows");
    }
  } else if (first == "listen") {
    return refusal("LISTEN", "use a target with pool_mode \"session\" for notifications");
  } else if (first == "prepare" && at(b + 1) != "transaction") {
    return refusal("SQL-level PREPARE",
                   "use protocol-level prepared statements (libpq PQprepare, a driver's "
                   "prepared statements), which the gateway prepares on every server connection");
  } else if (first == "deallocate") {
    return refusal("DEALLOCATE",
                   "close protocol-level prepared statements (libpq PQclosePrepared)");
  } else if (first == "discard") {
    return refusal("DISCARD", "nothing to discard: the gateway keeps pooled connections clean");
  } else if (first == "load") {
    return refusal("LOAD", "use a target with pool_mode \"session\"");
  } else if (first == "declare") {
    for (size_t i = b + 1; i + 1 < e; ++i) {
      if (t[i] == "for") break;
      if (t[i] == "with" && t[i + 1] == "hold") {
        return refusal("DECLARE ... WITH HOLD",
                       "use a cursor WITHOUT HOLD inside the transaction that reads it");
      }
    }
  } else if (first == "create") {
    size_t i = b + 1;
    if (at(i) == "or" && at(i + 1) == "replace") i += 2;
    if (at(i) == "global" || at(i) == "local") ++i;
    if (at(i) == "temp" || at(i) == "temporary") {
      bool on_commit_drop = false;
      for (size_t j = i; j + 2 < e; ++j) {
        if (t[j] == "on" && t[j + 1] == "commit" && t[j + 2] == "drop") on_commit_drop = true;
      }
      if (!(at(i + 1) == "table" && on_commit_drop)) {
        return refusal("a temporary object",
                       "create temporary tables with ON COMMIT DROP inside a transaction");
      }
    }
  }
  for (size_t i = b; i < e; ++i) {
    std::string_view w = t[i];
    if (w == "into" && (at(i + 1) == "temp" || at(i + 1) == "temporary" ||
                        ((at(i + 1) == "local" || at(i + 1) == "global") &&
                         (at(i + 2) == "temp" || at(i + 2) == "temporary")))) {
      return refusal("SELECT ... INTO TEMP",
                     "create temporary tables with ON COMMIT DROP inside a transaction");
    }
    if (at(i + 1) != "(") continue;
    if (w == "pg_advisory_lock" || w == "pg_advisory_lock_shared" || w == "pg_try_advisory_lock" ||
        w == "pg_try_advisory_lock_shared") {
      return refusal("a session-level advisory lock (" + std::string(w) + ")",
                     "use pg_advisory_xact_lock / pg_try_advisory_xact_lock, released at the end "
                     "of the transaction");
    }
    if (w == "set_config") {
      // The last argument at depth 1 must be the literal true (is_local).
      int depth = 0;
      size_t last_comma = 0;
      size_t close = 0;
      for (size_t j = i + 1; j < e; ++j) {
        if (t[j] == "(") ++depth;
        if (t[j] == ")" && --depth == 0) {
          close = j;
          break;
        }
        if (t[j] == "," && depth == 1) last_comma = j;
      }
      bool local =
          close != 0 && last_comma != 0 && close == last_comma + 2 && t[last_comma + 1] == "true";
      if (!local) {
        return refusal("set_config(..., false)",
                       "pass true as its third argument (transaction-local), inside a "
                       "transaction");
      }
    }
  }
  return {};
}

}  // namespace

std::string transaction_pooling_refusal(std::string_view code_view) {
  std::vector<std::string_view> t = tokens(code_view);
  size_t b = 0;
  for (size_t i = 0; i <= t.size(); ++i) {
    if (i == t.size() || t[i] == ";") {
      if (i > b) {
        std::string r = check_statement(t, b, i);
        if (!r.empty()) return r;
      }
      b = i + 1;
    }
  }
  return {};
}

}  // namespace pgwarden::session
