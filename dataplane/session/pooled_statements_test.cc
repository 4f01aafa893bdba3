#include "dataplane/session/pooled_statements.h"

#include <gtest/gtest.h>

#include <vector>

#include "dataplane/pgwire/messages.h"

namespace pgwarden::session {
namespace {

namespace pw = pgwarden::pgwire;

// A typed message as the session's framer hands it over (views into `bytes`).
pw::Message frame(const std::string& bytes) {
  pw::Message m;
  m.type = static_cast<uint8_t>(bytes[0]);
  m.bytes = pw::Bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  m.body = m.bytes.subspan(5);
  return m;
}

TEST(PooledStatementsTest, RenamesParseBindDescribeAndClose) {
  std::string parse, bind, describe, close, out;
  const pw::Oid types[] = {23};
  pw::append_parse(parse, "s1", "SELECT $1::int", types);
  std::optional<std::string_view> params[] = {std::string_view("7")};
  pw::append_bind(bind, "p", "s1", {}, params, {});
  pw::append_describe(describe, 'S', "s1");
  pw::append_close(close, 'S', "s1");

  std::string want;
  pw::append_parse(want, "pgw_x", "SELECT $1::int", types);
  ASSERT_TRUE(append_renamed(frame(parse), "pgw_x", out));
  EXPECT_EQ(out, want);

  out.clear();
  want.clear();
  pw::append_bind(want, "p", "pgw_x", {}, params, {});
  ASSERT_TRUE(append_renamed(frame(bind), "pgw_x", out));
  EXPECT_EQ(out, want);

  out.clear();
  want.clear();
  pw::append_describe(want, 'S', "pgw_x");
  ASSERT_TRUE(append_renamed(frame(describe), "pgw_x", out));
  EXPECT_EQ(out, want);

  out.clear();
  want.clear();
  pw::append_close(want, 'S', "");
  ASSERT_TRUE(append_renamed(frame(close), "", out));
  EXPECT_EQ(out, want);
}

TEST(PooledStatementsTest, PortalsAndOtherMessagesAreNotRenamed) {
  std::string describe, query, out;
  pw::append_describe(describe, 'P', "s1");
  pw::append_query(query, "SELECT 1");
  EXPECT_FALSE(append_renamed(frame(describe), "pgw_x", out));
  EXPECT_FALSE(append_renamed(frame(query), "pgw_x", out));
  EXPECT_TRUE(out.empty());
}

TEST(PooledStatementsTest, ServerNameDependsOnTextAndTypesNotClientName) {
  std::string a, b, c, d;
  const pw::Oid int4[] = {23};
  const pw::Oid text[] = {25};
  pw::append_parse(a, "s1", "SELECT $1", int4);
  pw::append_parse(b, "other", "SELECT $1", int4);
  pw::append_parse(c, "s1", "SELECT $1", text);
  pw::append_parse(d, "s1", "SELECT $1 ", int4);
  std::string na = server_statement_name(parse_tail(frame(a)));
  EXPECT_EQ(na.size(), 4u + 32u);
  EXPECT_EQ(na.rfind("pgw_", 0), 0u);
  EXPECT_EQ(na, server_statement_name(parse_tail(frame(b))));
  EXPECT_NE(na, server_statement_name(parse_tail(frame(c))));
  EXPECT_NE(na, server_statement_name(parse_tail(frame(d))));
}

}  // namespace
}  // namespace pgwarden::session
