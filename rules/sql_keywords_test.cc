#include "rules/sql_keywords.h"

#include <gtest/gtest.h>
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <string>

namespace pgwarden::rules {
namespace {

// PostgreSQL's own scanner (libpg_query) classifies the single word `word`.
PgQuery__KeywordKind scanner_keyword_kind(const std::string& word) {
  PgQueryScanResult result = pg_query_scan(word.c_str());
  PgQuery__KeywordKind kind = PG_QUERY__KEYWORD_KIND__NO_KEYWORD;
  if (result.error == nullptr) {
    PgQuery__ScanResult* scan = pg_query__scan_result__unpack(
        nullptr, result.pbuf.len, reinterpret_cast<const uint8_t*>(result.pbuf.data));
    if (scan != nullptr && scan->n_tokens == 1) kind = scan->tokens[0]->keyword_kind;
    if (scan != nullptr) pg_query__scan_result__free_unpacked(scan, nullptr);
  }
  pg_query_free_scan_result(result);
  return kind;
}

TEST(SqlKeywords, EveryEntryIsAKeywordToPostgresScanner) {
  ASSERT_GT(sql_keywords().size(), 400u);
  for (std::string_view word : sql_keywords()) {
    EXPECT_TRUE(is_sql_keyword(word)) << word;
    EXPECT_NE(scanner_keyword_kind(std::string(word)), PG_QUERY__KEYWORD_KIND__NO_KEYWORD) << word;
  }
  EXPECT_TRUE(std::is_sorted(sql_keywords().begin(), sql_keywords().end()));
}

// Names that rules refer to as identifiers must not be in the list: a quoted one would be
// hidden from the rule.
TEST(SqlKeywords, IdentifiersRulesNameAreNotKeywords) {
  for (const char* word :
       {"pg_shadow", "pg_read_file", "superuser", "bypassrls", "replication", "dblink", "lo_import",
        "session_authorization", "pg_authid", "standard_conforming_strings", "set_config"}) {
    EXPECT_FALSE(is_sql_keyword(word)) << word;
    EXPECT_EQ(scanner_keyword_kind(word), PG_QUERY__KEYWORD_KIND__NO_KEYWORD) << word;
  }
}

TEST(SqlKeywords, StatementKeywordsAreKeywords) {
  for (const char* word : {"drop", "database", "truncate", "select", "role", "where", "do", "alter",
                           "system", "copy", "program", "uescape"}) {
    EXPECT_TRUE(is_sql_keyword(word)) << word;
  }
  EXPECT_FALSE(is_sql_keyword("DROP"));  // callers pass lower case
  EXPECT_FALSE(is_sql_keyword(""));
}

}  // namespace
}  // namespace pgwarden::rules
