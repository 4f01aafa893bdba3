// PostgreSQL's SQL keywords, for the lexer: a quoted identifier that spells a keyword
// ("drop", "database") is an identifier to PostgreSQL, never the keyword, so the lexer must
// not render it where keyword rules match.
//
// Thread-safety: pure functions over constant data.
#pragma once

#include <span>
#include <string_view>

namespace pgwarden::rules {

// True when `lower_word` (ASCII lower case) is one of PostgreSQL 15's keywords, of any
// category (reserved or not).
bool is_sql_keyword(std::string_view lower_word);

// Every keyword, sorted; for tests.
std::span<const std::string_view> sql_keywords();

}  // namespace pgwarden::rules
