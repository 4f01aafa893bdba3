#include "dataplane/session/cursor_statements.h"

#include <gtest/gtest.h>

#include "rules/lexer.h"

namespace pgwarden::session {
namespace {

using Kind = CursorStatement::Kind;

std::vector<CursorStatement> of(std::string_view sql) {
  return cursor_statements(rules::lex_sql(sql).code());
}

TEST(CursorStatements, DeclareNamesTheCursorAndItsHold) {
  EXPECT_EQ(of("DECLARE c CURSOR FOR SELECT 1"),
            (std::vector<CursorStatement>{{Kind::kDeclare, "c", false}}));
  EXPECT_EQ(of("declare C binary no scroll cursor with hold for select * from t"),
            (std::vector<CursorStatement>{{Kind::kDeclare, "c", true}}));
  EXPECT_EQ(of("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 'with hold'"),
            (std::vector<CursorStatement>{{Kind::kDeclare, "c", false}}));
  // A FOR ... WITH HOLD inside the query is not the cursor's option.
  EXPECT_EQ(of("DECLARE c CURSOR FOR SELECT 1 AS with, 2 AS hold"),
            (std::vector<CursorStatement>{{Kind::kDeclare, "c", false}}));
}

TEST(CursorStatements, FetchAndMoveNameTheirCursorInEveryForm) {
  for (const char* sql : {"FETCH c", "fetch next from c", "FETCH 10 IN c", "FETCH FORWARD ALL c",
                          "MOVE ABSOLUTE -1 FROM c", "fetch backward 3 from c ;",
                          "/* x */ FETCH  PRIOR\n FROM c -- y"}) {
    EXPECT_EQ(of(sql), (std::vector<CursorStatement>{{Kind::kFetch, "c", false}})) << sql;
  }
}

TEST(CursorStatements, QuotedNamesReadTheSameOnBothSides) {
  auto declared = of("DECLARE \"My Cur;sor\" CURSOR FOR SELECT 1");
  auto fetched = of("FETCH 1 FROM \"My Cur;sor\"");
  ASSERT_EQ(declared.size(), 1u);
  ASSERT_EQ(fetched.size(), 1u);
  EXPECT_EQ(declared[0].name, fetched[0].name);
}

TEST(CursorStatements, SeveralStatementsCloseAndDiscard) {
  EXPECT_EQ(of("BEGIN; DECLARE a CURSOR FOR SELECT ';'; FETCH a; CLOSE a; CLOSE ALL; DISCARD ALL; "
               "COMMIT"),
            (std::vector<CursorStatement>{{Kind::kDeclare, "a", false},
                                          {Kind::kFetch, "a", false},
                                          {Kind::kClose, "a", false},
                                          {Kind::kCloseAll, "", false},
                                          {Kind::kCloseAll, "", false}}));
  EXPECT_TRUE(of("SELECT 'fetch c'").empty());
  EXPECT_TRUE(of("DECLARE").empty());
}

TEST(CursorStatements, MayTouchCursorIsAPrefilter) {
  EXPECT_TRUE(may_touch_cursor("FeTcH c", true));
  EXPECT_TRUE(may_touch_cursor("move c", true));
  EXPECT_FALSE(may_touch_cursor("declare c cursor for select 1", true));
  EXPECT_TRUE(may_touch_cursor("declare c cursor for select 1", false));
  EXPECT_FALSE(may_touch_cursor("select 1", false));
  EXPECT_TRUE(may_declare_cursor("DECLARE c CURSOR FOR SELECT 1"));
  EXPECT_FALSE(may_declare_cursor("CLOSE c"));
}

}  // namespace
}  // namespace pgwarden::session
