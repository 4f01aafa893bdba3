#include "common/protocol/event_record.h"

#include <gtest/gtest.h>

#include <string>

namespace pgwarden::protocol {
namespace {

using json = nlohmann::json;

TEST(EventRecord, StatementRoundTripsToTheJsonPathFields) {
  StatementFields f;
  f.verdict = Verdict::kAllow;
  f.source = DecisionSource::kCache;
  f.has_shape_key = true;
  f.shape_key = 0xabcdef0123456789ull;
  f.ts_ms = 1700000000123;
  f.sql = "SELECT 1";
  f.rule = "allow_reads";
  f.approval_id = "ap-1";
  std::string payload;
  f.encode(payload);
  auto j = record_to_json(RecordType::kStatement, payload);
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  EXPECT_EQ(*j, (json{{"kind", "statement"},
                      {"sql", "SELECT 1"},
                      {"shape_key", "abcdef0123456789"},
                      {"verdict", "allow"},
                      {"rule", "allow_reads"},
                      {"source", "cache"},
                      {"approval_id", "ap-1"},
                      {"ts_ms", 1700000000123}}));
}

TEST(EventRecord, ExecuteRecordCarriesPortalAndParams) {
  StatementFields f;
  f.source = DecisionSource::kExecute;
  f.sql = "SELECT $1";
  f.portal = "";
  f.params_json = R"(["42"])";
  f.params_truncated = true;
  std::string payload;
  f.encode(payload);
  auto j = record_to_json(RecordType::kStatementRecord, payload);
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)["portal"], "");
  EXPECT_EQ((*j)["params"], json::array({"42"}));
  EXPECT_EQ((*j)["params_truncated"], true);
  EXPECT_FALSE(j->contains("shape_key"));
}

TEST(EventRecord, StatementEndRendersErrorsAndInvalidUtf8LikeTheJsonPath) {
  StatementEndFields f;
  f.verdict = Verdict::kDeny;
  f.sql = std::string_view("SELECT '\xff'", 10);
  f.rule = "r";
  f.duration_ms = 5;
  f.rows = 3;
  f.rows_recorded = 2;
  f.executed = true;
  f.sqlstate = "42P01";
  f.error = "relation \"x\" does not exist";
  std::string payload;
  f.encode(payload);
  auto j = record_to_json(RecordType::kStatementEnd, payload);
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)["phase"], "end");
  EXPECT_EQ((*j)["sql"], "\\x53454c4543542027ff27");
  EXPECT_EQ((*j)["error"]["sqlstate"], "42P01");
  EXPECT_EQ((*j)["rows"], 3);
  EXPECT_EQ((*j)["executed"], true);
}

TEST(EventRecord, StatementEndCarriesResultBytesAndMaskedCellsAndReadsLayoutOne) {
  StatementEndFields f;
  f.sql = "select 1";
  f.rows = 7;
  f.result_bytes = 123456789012ull;
  f.masked_cells = 42;
  std::string payload;
  f.encode(payload);
  auto d = StatementEndFields::decode(payload);
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->result_bytes, 123456789012ull);
  EXPECT_EQ(d->masked_cells, 42u);
  auto j = record_to_json(RecordType::kStatementEnd, payload);
  ASSERT_TRUE(j.is_ok());
  EXPECT_EQ((*j)["result_bytes"], 123456789012ull);
  EXPECT_EQ((*j)["masked_cells"], 42);
  // A layout-1 payload (an older dp) has no trailing counters: both read as 0.
  auto old = StatementEndFields::decode(payload.substr(0, payload.size() - 16));
  ASSERT_TRUE(old.is_ok());
  EXPECT_EQ(old->rows, 7u);
  EXPECT_EQ(old->result_bytes, 0u);
  // Anything else after the error text is malformed.
  EXPECT_FALSE(StatementEndFields::decode(payload.substr(0, payload.size() - 8)).is_ok());
  EXPECT_FALSE(StatementEndFields::decode(payload + "x").is_ok());
}

TEST(EventRecord, RowsKeepNullsAndHexBinaryColumns) {
  RowsWriter w;
  w.add_column("id", 23, 0);
  w.add_column("blob", 17, 1);
  w.begin_row(2);
  w.add_value("1");
  w.add_value(std::string_view("\x01\x02", 2));
  w.begin_row(2);
  w.add_null();
  w.add_null();
  auto j = record_to_json(RecordType::kRows, w.take(99));
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  EXPECT_EQ(
      *j,
      (json{{"kind", "rows"},
            {"columns", {{{"name", "id"}, {"type_oid", 23}}, {{"name", "blob"}, {"type_oid", 17}}}},
            {"rows", {{"1", "\\x0102"}, {nullptr, nullptr}}},
            {"ts_ms", 99}}));
}

TEST(EventRecord, RenderedRowsPassAsTheCallerRenderedThem) {
  RowsWriter w;
  w.add_column("doc", 25, 0);
  w.begin_row(1);
  w.add_value("short");
  json summary = {{"length", 3000000}, {"sha256", "ab"}, {"prefix", "xx"}};
  w.add_rendered_row(json::array({summary}));
  auto j = record_to_json(RecordType::kRows, w.take(5));
  ASSERT_TRUE(j.is_ok()) << j.status().message();
  EXPECT_EQ((*j)["rows"], json::array({json::array({"short"}), json::array({summary})}));
  // A rendered row that is not a JSON array is refused.
  RowsWriter bad;
  bad.add_column("doc", 25, 0);
  bad.add_rendered_row(json("not a row"));
  EXPECT_FALSE(record_to_json(RecordType::kRows, bad.take(5)).is_ok());
}

// Every prefix of a valid payload (and the payload with a byte more) is refused, never read
// past: the decoder validates each length before it reads.
TEST(EventRecord, TruncatedOrPaddedPayloadsAreRefused) {
  StatementFields f;
  f.sql = "SELECT 1";
  f.rule = "r";
  std::string st;
  f.encode(st);
  StatementEndFields e;
  e.sql = "x";
  std::string end;
  e.encode(end);
  RowsWriter w;
  w.add_column("c", 25, 0);
  w.begin_row(1);
  w.add_value("v");
  std::string rows = w.take(1);
  for (auto [type, payload] :
       {std::pair{RecordType::kStatement, st}, std::pair{RecordType::kStatementEnd, end},
        std::pair{RecordType::kRows, rows}}) {
    ASSERT_TRUE(record_to_json(type, payload).is_ok());
    for (size_t n = 0; n < payload.size(); ++n) {
      // A statement end without its layout-2 trailer is a valid layout-1 payload.
      if (type == RecordType::kStatementEnd && n == payload.size() - 16) continue;
      EXPECT_FALSE(record_to_json(type, payload.substr(0, n)).is_ok()) << n;
    }
    EXPECT_FALSE(record_to_json(type, payload + "x").is_ok());
  }
  EXPECT_FALSE(record_to_json(static_cast<RecordType>(77), "").is_ok());
  EXPECT_FALSE(record_to_json(RecordType::kEventJson, "[1]").is_ok());
}

}  // namespace
}  // namespace pgwarden::protocol
