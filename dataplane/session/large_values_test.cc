#include "dataplane/session/large_values.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace pgwarden::session {
namespace {

using json = nlohmann::json;

void put16(std::string& out, uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}
void put32(std::string& out, int32_t v) {
  auto u = static_cast<uint32_t>(v);
  for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((u >> s) & 0xff);
}

// A DataRow body: Int16 count, then each value (nullopt = NULL).
std::string row_body(const std::vector<std::optional<std::string>>& values) {
  std::string out;
  put16(out, static_cast<uint16_t>(values.size()));
  for (const auto& v : values) {
    if (!v) {
      put32(out, -1);
      continue;
    }
    put32(out, static_cast<int32_t>(v->size()));
    out += *v;
  }
  return out;
}

json feed_whole(const std::string& body, std::vector<int16_t> formats, size_t* used = nullptr) {
  ValueListStream s;
  s.start(std::move(formats), true);
  size_t n = s.feed(body);
  if (used != nullptr) *used = n;
  EXPECT_TRUE(s.complete());
  return s.take_values();
}

json feed_in_pieces(const std::string& body, std::vector<int16_t> formats, size_t piece) {
  ValueListStream s;
  s.start(std::move(formats), true);
  for (size_t i = 0; i < body.size(); i += piece) {
    s.feed(std::string_view(body).substr(i, piece));
  }
  EXPECT_TRUE(s.complete());
  return s.take_values();
}

TEST(ValueListStreamTest, ShortValuesAreRecordedWholeAndNullStaysNull) {
  std::string body = row_body({std::string("abc"), std::nullopt, std::string("")});
  size_t used = 0;
  json v = feed_whole(body, {0, 0, 0}, &used);
  EXPECT_EQ(used, body.size());
  EXPECT_EQ(v, json::array({"abc", nullptr, ""}));
}

TEST(ValueListStreamTest, BinaryAndInvalidUtf8ValuesAreHex) {
  std::string body = row_body({std::string("\x01\x02", 2), std::string("\xff", 1)});
  json v = feed_whole(body, {1, 0});
  EXPECT_EQ(v, json::array({"\\x0102", "\\xff"}));
}

TEST(ValueListStreamTest, LongValueIsPrefixLengthAndDigest) {
  std::string big(3 * kRecordedValueBytes + 17, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  std::string body = row_body({std::string("id1"), big});
  json v = feed_whole(body, {0, 0});
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0], "id1");
  ASSERT_TRUE(v[1].is_object()) << v[1].dump();
  EXPECT_EQ(v[1]["length"], big.size());
  EXPECT_EQ(v[1]["sha256"], sha256_hex(big));
  EXPECT_EQ(v[1]["prefix"], big.substr(0, kRecordedPrefixBytes));
}

TEST(ValueListStreamTest, SplitInvarianceByteByByteAndOddChunks) {
  std::string big(kRecordedValueBytes + 1, 'q');
  std::string body = row_body({std::string("é-text"), std::nullopt, big, std::string(7, 'z')});
  json whole = feed_whole(body, {0});
  for (size_t piece : {size_t{1}, size_t{3}, size_t{4096}, size_t{kRecordedValueBytes}}) {
    EXPECT_EQ(feed_in_pieces(body, {0}, piece), whole) << "piece " << piece;
  }
}

TEST(ValueListStreamTest, TextPrefixIsNotCutInsideACharacter) {
  // 'é' is two bytes: a prefix boundary falls inside one of them.
  std::string big = "a";
  while (big.size() < 2 * kRecordedValueBytes) big += "\xc3\xa9";
  json v = feed_whole(row_body({big}), {0});
  ASSERT_TRUE(v[0].is_object());
  std::string prefix = v[0]["prefix"];
  EXPECT_LE(prefix.size(), kRecordedPrefixBytes);
  EXPECT_GE(prefix.size(), kRecordedPrefixBytes - 1);
  EXPECT_EQ(prefix.rfind('\\', 0), std::string::npos) << "rendered as hex";
}

TEST(ValueListStreamTest, ManyWideColumnsStayWithinTheRowBudget) {
  std::vector<std::optional<std::string>> values(200, std::string(kRecordedValueBytes, 'w'));
  ValueListStream s;
  s.start({0}, true);
  std::string body = row_body(values);
  s.feed(body);
  ASSERT_TRUE(s.complete());
  EXPECT_LT(s.rendered_bytes(), kRecordedRowBytes + 200 * 128);
  json v = s.take_values();
  EXPECT_TRUE(v[0].is_string());
  EXPECT_TRUE(v[199].is_object());
  EXPECT_EQ(v[199]["prefix"], "");
  EXPECT_EQ(v[199]["sha256"], sha256_hex(*values[199]));
}

TEST(ValueListStreamTest, StopAfterCutsTheListOnceTheBudgetIsSpent) {
  std::vector<std::optional<std::string>> values(50, std::string(1000, 'p'));
  ValueListStream s;
  s.start({}, true, 10 * 1000);
  s.feed(row_body(values));
  ASSERT_TRUE(s.complete());
  EXPECT_TRUE(s.summarised());
  EXPECT_EQ(s.take_values().size(), 10u);
}

TEST(ValueListStreamTest, NegativeLengthFails) {
  std::string body;
  put16(body, 1);
  put32(body, -7);
  ValueListStream s;
  s.start({}, true);
  s.feed(body);
  EXPECT_TRUE(s.failed());
}

TEST(ValueListStreamTest, TracksTheLargestValueWithoutRecording) {
  std::string body = row_body({std::string(5, 'a'), std::string(900, 'b'), std::string(3, 'c')});
  ValueListStream s;
  s.start({}, false);
  s.feed(body);
  EXPECT_TRUE(s.complete());
  EXPECT_EQ(s.largest_index(), 1);
  EXPECT_EQ(s.largest_length(), 900u);
  EXPECT_TRUE(s.take_values().empty());
}

TEST(RowReducerTest, ValuesOfValueIndependentColumnsBecomePlaceholders) {
  std::string big(5000, 'B');
  std::string body = row_body({std::string("keep"), big, std::nullopt, std::string("k2")});
  std::string want =
      row_body({std::string("keep"), std::string("x"), std::nullopt, std::string("k2")});
  for (size_t piece : {size_t{1}, size_t{7}, body.size()}) {
    RowReducer r;
    r.start({false, true, true, false}, 1000);
    for (size_t i = 0; i < body.size(); i += piece) r.feed(std::string_view(body).substr(i, piece));
    ASSERT_TRUE(r.ok()) << "piece " << piece;
    EXPECT_EQ(r.body(), want);
  }
}

TEST(RowReducerTest, OverTheCapOrTrailingBytesFails) {
  std::string body = row_body({std::string(2000, 'a')});
  RowReducer r;
  r.start({false}, 1000);
  r.feed(body);
  EXPECT_FALSE(r.ok());
  RowReducer t;
  t.start({true}, 1000);
  t.feed(body + "junk");
  EXPECT_FALSE(t.ok());
}

TEST(RowReducerTest, SplitsBeforeALongValueInTheUnmaskedTail) {
  std::string big(5000, 'U');
  std::string body = row_body({std::string("m1"), std::string("m2"), big, std::string("t")});
  for (size_t piece : {size_t{1}, size_t{9}, body.size()}) {
    RowReducer r;
    r.start({false, true, false, false}, 1000, /*unmasked_from=*/2, /*split_above=*/100);
    size_t consumed = 0;
    for (size_t i = 0; i < body.size() && !r.split(); i += piece) {
      consumed += r.feed(std::string_view(body).substr(i, piece));
    }
    ASSERT_TRUE(r.split()) << "piece " << piece;
    EXPECT_EQ(r.split_index(), 2u);
    EXPECT_EQ(r.split_length(), big.size());
    EXPECT_EQ(r.count(), 4u);
    // The count, "m1" and m2's placeholder; consumed up to and including big's length.
    std::string head = row_body({std::string("m1"), std::string("x")});
    EXPECT_EQ(r.body().substr(2), head.substr(2));
    EXPECT_EQ(consumed, 2 + 4 + 2 + 4 + 2 + 4u);
  }
}

std::string bind_body(const std::string& portal, const std::string& statement,
                      std::vector<int16_t> formats,
                      const std::vector<std::optional<std::string>>& params) {
  std::string out = portal;
  out += '\0';
  out += statement;
  out += '\0';
  put16(out, static_cast<uint16_t>(formats.size()));
  for (int16_t f : formats) put16(out, static_cast<uint16_t>(f));
  out += row_body(params);
  put16(out, 1);
  put16(out, 1);  // binary results
  return out;
}

TEST(BindStreamTest, NamesAndParametersFedInAnyPieces) {
  std::string big(2 * kRecordedValueBytes, '\x07');
  std::string body = bind_body("p1", "stmt_a", {0, 1}, {std::string("42"), big});
  for (size_t piece : {size_t{1}, size_t{5}, size_t{1000}, body.size()}) {
    BindStream b;
    b.start();
    for (size_t i = 0; i < body.size(); i += piece) b.feed(std::string_view(body).substr(i, piece));
    ASSERT_TRUE(b.ok()) << "piece " << piece;
    EXPECT_EQ(b.portal(), "p1");
    EXPECT_EQ(b.statement(), "stmt_a");
    EXPECT_TRUE(b.params_summarised());
    json p = b.take_params();
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p[0], "42");
    EXPECT_EQ(p[1]["length"], big.size());
    EXPECT_EQ(p[1]["sha256"], sha256_hex(big));
    EXPECT_EQ(p[1]["prefix"].get<std::string>().substr(0, 6), "\\x0707");
  }
}

TEST(BindStreamTest, AnOverlongNameFails) {
  std::string body(kMaxBindNameBytes + 10, 'n');
  BindStream b;
  b.start();
  b.feed(body);
  EXPECT_FALSE(b.ok());
}

}  // namespace
}  // namespace pgwarden::session
