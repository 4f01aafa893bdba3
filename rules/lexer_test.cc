#include "rules/lexer.h"

#include <gtest/gtest.h>

#include <string>

namespace pgwarden::rules {
namespace {

struct ViewCase {
  const char* name;
  const char* sql;
  const char* code;
  const char* text;
};

class LexerViewTest : public ::testing::TestWithParam<ViewCase> {};

TEST_P(LexerViewTest, ProducesCodeAndTextViews) {
  const ViewCase& c = GetParam();
  LexedSql lexed = lex_sql(c.sql);
  EXPECT_EQ(lexed.code(), c.code) << c.sql;
  EXPECT_EQ(lexed.text(), c.text) << c.sql;
}

INSTANTIATE_TEST_SUITE_P(
    Views, LexerViewTest,
    ::testing::Values(
        ViewCase{"KeywordsAreLowerCased", "SELECT * FROM Users", "select * from users",
                 "select * from users"},
        ViewCase{"WhitespaceRunsFoldAndTrim", "  select\t\n  1 \r\n", "select 1", "select 1"},
        ViewCase{"BlockCommentBecomesSpace", "DROP/**/DATABASE x", "drop database x",
                 "drop database x"},
        ViewCase{"LineCommentBecomesSpace", "DROP--x\nDATABASE x", "drop database x",
                 "drop database x"},
        ViewCase{"NestedBlockComment", "a /* x /* y */ still comment */ b", "a b", "a b"},
        ViewCase{"StringLiteralBlankedInCodeKeptInText", "SELECT 'drop database', 1",
                 "select '', 1", "select 'drop database', 1"},
        ViewCase{"DoubledQuoteStaysInsideLiteral", "select 'it''s; drop' x", "select '' x",
                 "select 'it''s; drop' x"},
        ViewCase{"EscapeStringBackslashQuote", "select E'a\\'; drop database x' y", "select '' y",
                 "select E'a\\'; drop database x' y"},
        ViewCase{"StandardStringBackslashIsNotEscape", "select 'a\\'; drop database x",
                 "select ''; drop database x", "select 'a\\'; drop database x"},
        ViewCase{"UnicodeEscapeString", "select U&'d\\0061t' z", "select '' z",
                 "select U&'d\\0061t' z"},
        ViewCase{"DollarQuotedBody", "do $$ begin drop table t; end $$", "do ''",
                 "do $$ begin drop table t; end $$"},
        ViewCase{"TaggedDollarQuoteWithInnerDollars", "select $fn$ $$ x $$ $fn$ + 1",
                 "select '' + 1", "select $fn$ $$ x $$ $fn$ + 1"},
        ViewCase{"PositionalParameterIsNotDollarQuote", "select $1, $2", "select $1, $2",
                 "select $1, $2"},
        ViewCase{"PlainQuotedIdentifierIsUnquoted", "SELECT \"PG_READ_FILE\"('x')",
                 "select pg_read_file('')", "select pg_read_file('x')"},
        ViewCase{"QuotedIdentifierWithSpaceIsGuarded", "select \"My Col\" from t",
                 "select \"_my_col\" from t", "select \"_my_col\" from t"},
        ViewCase{"QuotedKeywordSequenceIsOneIdentifier",
                 "SELECT \"drop database\" FROM audit_words",
                 "select \"_drop_database\" from audit_words",
                 "select \"_drop_database\" from audit_words"},
        ViewCase{"QuotedKeywordIsGuarded", "SELECT \"drop\" database FROM t",
                 "select \"_drop\" database from t", "select \"_drop\" database from t"},
        ViewCase{"QuotedKeywordAnyCaseIsGuarded", "select \"TRUNCATE\", \"Where\" from t",
                 "select \"_truncate\", \"_where\" from t",
                 "select \"_truncate\", \"_where\" from t"},
        ViewCase{"QuotedRelationNameIsUnquoted", "select * from \"pg_catalog\".\"pg_shadow\"",
                 "select * from pg_catalog.pg_shadow", "select * from pg_catalog.pg_shadow"},
        ViewCase{"DoubledQuoteInsideIdentifierIsGuarded", "select \"a\"\" drop\" x",
                 "select \"_a___drop\" x", "select \"_a___drop\" x"},
        ViewCase{"UnterminatedQuotedIdentifierIsGuarded", "select \"x; drop database y",
                 "select \"_x__drop_database_y", "select \"_x__drop_database_y"},
        ViewCase{"PlainUnicodeQuotedIdentifierIsTheName", "select U&\"pg_read_file\"('x')",
                 "select u&pg_read_file('')", "select u&pg_read_file('x')"},
        ViewCase{"UnicodeQuotedKeywordIsGuarded", "select U&\"drop\" database",
                 "select u&\"_drop\" database", "select u&\"_drop\" database"},
        ViewCase{"UnicodeQuotedIdentifierKeptVerbatim", "select U&\"\\0070g\"()",
                 "select u&\"\\0070g\"()", "select u&\"\\0070g\"()"},
        ViewCase{"NumberFollowedByWordGetsBoundary", "select 1from t", "select 1 from t",
                 "select 1 from t"},
        ViewCase{"NumbersWithExponentAndHex", "select 1.5E-3, 0xFF", "select 1.5e-3, 0xff",
                 "select 1.5e-3, 0xff"},
        ViewCase{"DollarInsideIdentifier", "select a$b from t", "select a$b from t",
                 "select a$b from t"},
        ViewCase{"BitAndHexStrings", "select B'0101', X'1F'", "select '', ''",
                 "select B'0101', X'1F'"},
        ViewCase{"CommentMarkersInsideStringAreData", "select '/* -- ' from t", "select '' from t",
                 "select '/* -- ' from t"},
        ViewCase{"EmptyInput", "", "", ""}, ViewCase{"OnlyComment", "-- nothing", "", ""}),
    [](const ::testing::TestParamInfo<ViewCase>& info) { return std::string(info.param.name); });

TEST(LexerFlags, UnterminatedQuoteIsScannedToEndAndFlagged) {
  LexedSql lexed = lex_sql("select 'abc; drop database x");
  EXPECT_TRUE(lexed.flags().unterminated_quote);
  EXPECT_EQ(lexed.code(), "select ''");
  EXPECT_EQ(lexed.text(), "select 'abc; drop database x");
}

TEST(LexerFlags, UnterminatedCommentIsFlagged) {
  LexedSql lexed = lex_sql("select 1 /* /* */ drop database x");
  EXPECT_TRUE(lexed.flags().unterminated_comment);
  EXPECT_EQ(lexed.code(), "select 1");
}

TEST(LexerFlags, UnterminatedDollarQuoteAndIdentifierAreFlagged) {
  EXPECT_TRUE(lex_sql("select $a$ never closed").flags().unterminated_quote);
  EXPECT_TRUE(lex_sql("select \"never closed").flags().unterminated_quote);
  EXPECT_TRUE(lex_sql("select E'never \\' closed").flags().unterminated_quote);
  EXPECT_FALSE(lex_sql("select 'closed'").flags().unterminated_quote);
}

TEST(LexerFlags, StatementsAreCountedIgnoringEmptyOnes) {
  LexedSql one = lex_sql("select 1;;  ;");
  EXPECT_EQ(one.statement_count(), 1u);
  EXPECT_FALSE(one.flags().multi_statement);
  LexedSql two = lex_sql("select 1; drop database x");
  EXPECT_EQ(two.statement_count(), 2u);
  EXPECT_TRUE(two.flags().multi_statement);
  EXPECT_EQ(lex_sql("select ';' ; -- x").statement_count(), 1u);
  EXPECT_EQ(lex_sql("").statement_count(), 0u);
}

TEST(LexerFlags, UnicodeEscapeIsFlagged) {
  EXPECT_TRUE(lex_sql("select U&'\\0041'").flags().unicode_escape);
  EXPECT_FALSE(lex_sql("select u").flags().unicode_escape);
}

TEST(ShapeKey, EqualForLiteralWhitespaceCommentAndCaseChanges) {
  uint64_t a = lex_sql("SELECT * FROM t WHERE id = 1 AND name = 'bob'").shape_key();
  EXPECT_EQ(a, lex_sql("select *\n from t /* c */ where id=42 and name='alice' -- x").shape_key());
  EXPECT_EQ(a, lex_sql("select * from t where id = 1.5e3 and name = $$x$$").shape_key());
}

TEST(ShapeKey, DiffersForDifferentStructure) {
  uint64_t a = lex_sql("select * from t where id = 1").shape_key();
  EXPECT_NE(a, lex_sql("select * from u where id = 1").shape_key());
  EXPECT_NE(a, lex_sql("select * from t where id > 1").shape_key());
  EXPECT_NE(a, lex_sql("select * from t where id = 1; select 1").shape_key());
  EXPECT_NE(a, lex_sql("select * from t where id = $1").shape_key());
  EXPECT_NE(lex_sql("select $1").shape_key(), lex_sql("select $2").shape_key());
}

TEST(ShapeKey, QuotedIdentifierKeepsItsCase) {
  EXPECT_NE(lex_sql("select * from \"Users\"").shape_key(),
            lex_sql("select * from users").shape_key());
}

TEST(LexedSqlReuse, BuffersAreReusedAcrossStatements) {
  LexedSql lexed;
  lex_sql(std::string(500, 'a'), lexed);
  const char* code_data = lexed.code().data();
  lex_sql("select 1", lexed);
  EXPECT_EQ(lexed.code(), "select 1");
  EXPECT_EQ(lexed.code().data(), code_data);
  lex_sql("select 'x'", lexed);
  EXPECT_EQ(lexed.text(), "select 'x'");
}

// Reference for the block-copy fast paths: lower-case ASCII letters only.
std::string ascii_lower(std::string v) {
  for (char& ch : v) {
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  }
  return v;
}

TEST(LexerFastPaths, LongIdentifiersAcrossBlockBoundaries) {
  for (size_t len = 1; len <= 70; ++len) {
    std::string ident;
    for (size_t k = 0; k < len; ++k) ident.push_back("AbZz_9$\xc3Q"[k % 9]);
    if (ident[0] == '9' || ident[0] == '$') ident[0] = 'X';
    std::string sql = "SELECT " + ident + ", \"" + ident + "\" FROM T" + ident + "x";
    LexedSql lexed = lex_sql(sql);
    std::string lower = ascii_lower(ident);
    bool plain = ident.find_first_of("\xc3") == std::string::npos;
    std::string guarded = lower;
    for (char& ch : guarded) {
      if (ch == '$') ch = '_';
    }
    std::string quoted = plain ? lower : "\"_" + guarded + "\"";
    EXPECT_EQ(lexed.code(), "select " + lower + ", " + quoted + " from t" + lower + "x") << len;
  }
}

TEST(LexerRobustness, NumberWordRunsGrowTheViewsWithinBound) {
  std::string sql;
  for (int k = 0; k < 1000; ++k) sql += "1a.";
  LexedSql lexed = lex_sql(sql);
  EXPECT_EQ(lexed.code().size(), sql.size() / 3 * 4);
  EXPECT_EQ(lexed.code().substr(0, 8), "1 a.1 a.");
}

TEST(LexerFastPaths, QuotedIdentifierEndingAtInputEnd) {
  EXPECT_EQ(lex_sql("select \"AbcdefghijklmnopqrstuvwxyZ\"").code(),
            "select abcdefghijklmnopqrstuvwxyz");
  LexedSql open = lex_sql("select \"Abcdefghijklmnopqrstuvwxyz");
  EXPECT_EQ(open.code(), "select \"_abcdefghijklmnopqrstuvwxyz");
  EXPECT_TRUE(open.flags().unterminated_quote);
  EXPECT_EQ(lex_sql("select \"a\"\"b\"").code(), "select \"_a__b\"");
  EXPECT_EQ(lex_sql("select \"Select\"").code(), "select \"_select\"");
}

TEST(ShapeKey, ShapeStreamSeparatesTokenBoundaries) {
  EXPECT_NE(lex_sql("select ab c").shape(), lex_sql("select a bc").shape());
  EXPECT_NE(lex_sql("select \"ab\" c").shape_key(), lex_sql("select \"a\" bc").shape_key());
  EXPECT_NE(lex_sql("select U&\"a\"").shape(), lex_sql("select \"a\"").shape());
  EXPECT_EQ(lex_sql("SELECT  \"Users\"").shape(), lex_sql("select \"Users\"").shape());
}

TEST(LexerRobustness, AllSingleBytesAndTruncationsAreSafe) {
  std::string sql = "select E'a\\'' \"q\"\"x\" $t$ $ $t$ /* /* */ */ -- c\n U&'x' 1e+ 0x; $1";
  for (size_t len = 0; len <= sql.size(); ++len) {
    LexedSql lexed = lex_sql(std::string_view(sql).substr(0, len));
    EXPECT_LE(lexed.code().size(), 2 * len + 2);
    EXPECT_LE(lexed.text().size(), 2 * len + 2);
  }
  for (int ch = 0; ch < 256; ++ch) {
    std::string one(1, static_cast<char>(ch));
    LexedSql lexed = lex_sql(one);
    EXPECT_LE(lexed.code().size(), 2u);
  }
}

}  // namespace
}  // namespace pgwarden::rules
