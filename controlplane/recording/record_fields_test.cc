#include "controlplane/recording/record_fields.h"

#include <gtest/gtest.h>

#include <random>

#include "controlplane/recording/recording_file.h"

namespace pgwarden::recording {
namespace {

std::string canonical(const nlohmann::json& j) {
  std::string out;
  append_canonical(out, j);
  return out;
}

TEST(CanonicalJsonTest, MatchesDumpForEveryKindOfValue) {
  const std::vector<nlohmann::json> values = {
      nullptr,
      true,
      false,
      0,
      -1,
      INT64_MIN,
      INT64_MAX,
      UINT64_MAX,
      1.5,
      -0.0,
      1e300,
      3.0,
      0.1,
      "",
      "plain ascii, long enough to take the eight-byte path",
      "quote \" backslash \\ slash / tab \t newline \n cr \r bs \b ff \f",
      std::string("nul \0 byte and \x01\x1f\x7f controls", 30),
      "utf-8: é ß € 𝄞 中文",
      "\xED\x9F\xBF and \xEE\x80\x80 and \xF4\x8F\xBF\xBF",  // edges of the valid ranges
      "invalid: \xC3 then \xFF, \xC0\xAF overlong, \xED\xA0\x80 surrogate, \xF4\x90\x80\x80",
      "truncated at the end \xE2\x82",
      nlohmann::json::array(),
      nlohmann::json::object(),
      {{"b", 1}, {"a", {1, "x", nullptr}}, {"\xC3", "bad key"}, {"é", {{"z", {}}, {"y", 2}}}},
      nlohmann::json::binary({1, 2, 3}),
  };
  for (const auto& v : values) {
    EXPECT_EQ(canonical(v), canonical_bytes(v))
        << v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  }
}

// Random strings over an alphabet rich in the bytes that need care (controls, quotes,
// backslashes, UTF-8 lead and continuation bytes in and out of order), at every length around
// the eight-byte steps.
TEST(CanonicalJsonTest, MatchesDumpForRandomBytes) {
  std::mt19937 rng(42);
  const std::string alphabet =
      std::string("aZ09 \"\\/\n\t\x01\x1f\x7f", 14) +
      "\xC2\xC3\xDF\xE0\xE2\xED\xEF\xF0\xF4\xF5\xFF\x80\x82\x8F\x90\x9F\xA0"
      "\xAC\xBF";
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 40, 'x');
    for (auto& c : s) c = alphabet[rng() % alphabet.size()];
    nlohmann::json j = {{"k", s}, {s, {s, 1}}};
    ASSERT_EQ(canonical(j), canonical_bytes(j)) << "case " << i;
  }
}

TEST(RecordFieldsTest, MembersInAnyOrderSerialiseLikeTheObject) {
  RecordFields f;
  f.add("sql", "SELECT 1")
      .add("verdict", "allow")
      .add("duration_us", 120)
      .add("approval_id", nullptr)
      .add("error", nlohmann::json{{"sqlstate", "42501"}, {"message", "no"}})
      .add("cached", true)
      .add("rows", uint64_t{3})
      .add("sql", std::string("SELECT 2"));  // a repeated key keeps its last value
  nlohmann::json j = {{"sql", "SELECT 2"},
                      {"verdict", "allow"},
                      {"duration_us", 120},
                      {"approval_id", nullptr},
                      {"cached", true},
                      {"rows", 3},
                      {"error", {{"sqlstate", "42501"}, {"message", "no"}}}};
  EXPECT_EQ(f.to_canonical(), canonical_bytes(j));
  EXPECT_TRUE(f.has("cached"));
  EXPECT_FALSE(f.has("tag"));
  EXPECT_EQ(f.rows_count(), -1);  // "rows" is a number here, not an array
  EXPECT_EQ(RecordFields::from_json(j).to_canonical(), canonical_bytes(j));
}

TEST(RecordFieldsTest, RowsAreCutToTheFirstElementsWhereverTheMemberIs) {
  nlohmann::json rows = {{1, "a"}, {2, nullptr}, {3, "c\"q"}, {4, "d"}};
  for (bool rows_last : {true, false}) {
    for (int keep = 0; keep <= 4; ++keep) {
      RecordFields f;
      f.add("columns", nlohmann::json{"id", "v"});
      f.add("rows", rows);
      if (!rows_last) f.add("after", "x");
      ASSERT_EQ(f.rows_count(), 4);
      f.cut_rows(keep);
      EXPECT_EQ(f.rows_count(), keep);
      nlohmann::json want = {{"columns", {"id", "v"}}, {"rows", nlohmann::json::array()}};
      for (int i = 0; i < keep; ++i) want["rows"].push_back(rows[i]);
      if (!rows_last) want["after"] = "x";
      EXPECT_EQ(f.to_canonical(), canonical_bytes(want)) << keep;
    }
  }
}

}  // namespace
}  // namespace pgwarden::recording
