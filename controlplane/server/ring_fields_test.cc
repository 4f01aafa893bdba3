#include "controlplane/server/ring_fields.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "controlplane/recording/recorder.h"
#include "controlplane/recording/recording_file.h"

namespace pgwarden::server {
namespace {

using json = nlohmann::json;
using protocol::RecordType;

// What the JSON path records: record_to_json() without "kind", serialised from the tree.
std::string tree_canonical(RecordType type, const std::string& payload) {
  auto j = protocol::record_to_json(type, payload);
  EXPECT_TRUE(j.is_ok()) << j.status().message();
  j->erase("kind");
  return recording::RecordFields::from_json(*j).to_canonical();
}

std::string typed_canonical(RecordType type, const std::string& payload) {
  recording::RecordFields f;
  std::string sql;
  Status st = ring_record_fields(type, payload, f, sql);
  EXPECT_TRUE(st.is_ok()) << st.message();
  return f.to_canonical();
}

// Strings that stress the serialiser: ASCII, escapes, UTF-8, invalid UTF-8 (truncated and
// overlong sequences, lone continuation bytes), empty.
std::string random_text(std::mt19937& rng) {
  static const std::vector<std::string> kPieces = {
      "SELECT ",      "abc",  "\"", "\\",         "\n",   "\t",   std::string(1, '\0'),
      "\x01",         "é",    "€",  "𝄞",          "\xff", "\xc3", "\xc0\x80",
      "\xed\xa0\x80", "\x80", "",   "1234567890", "'x'"};
  std::string s;
  int n = static_cast<int>(rng() % 8);
  for (int i = 0; i < n; ++i) s += kPieces[rng() % kPieces.size()];
  return s;
}

TEST(RingFields, StatementRecordsSerialiseLikeTheJsonPath) {
  std::mt19937 rng(15);
  for (int i = 0; i < 2000; ++i) {
    std::string sql = random_text(rng), rule = random_text(rng), approval = random_text(rng),
                portal = random_text(rng);
    std::vector<std::string> params_choices = {"", R"(["42",null])", R"([{"b":1,"a":"\u00e9"}])",
                                               "not json", R"(["x\"y"])"};
    std::string params = params_choices[rng() % params_choices.size()];
    protocol::StatementFields f;
    f.verdict = rng() % 2 ? protocol::Verdict::kAllow : protocol::Verdict::kDeny;
    f.source = static_cast<protocol::DecisionSource>(rng() % 8);
    f.has_shape_key = rng() % 2;
    f.params_truncated = rng() % 2;
    f.shape_key = (static_cast<uint64_t>(rng()) << 32) | rng();
    f.ts_ms = 1700000000000 + static_cast<int64_t>(rng());
    f.sql = sql;
    f.rule = rule;
    f.approval_id = approval;
    f.portal = portal;
    f.params_json = params;
    std::string payload;
    f.encode(payload);
    for (RecordType t : {RecordType::kStatement, RecordType::kStatementRecord}) {
      ASSERT_EQ(typed_canonical(t, payload), tree_canonical(t, payload)) << "case " << i;
    }
  }
}

// A write-ahead record after a cp crash: the recording's last record, read back from the file,
// is recognised as the record a payload makes — and two executions of one prepared statement
// in the same millisecond (same SQL and source, other parameters) are told apart.
TEST(RingFields, ARecordReadBackIsRecognisedByItsPayloadAndNotByASiblingExecution) {
  char tmpl[] = "/tmp/pgw-ringfields-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  auto execution = [](const std::string& params) {
    protocol::StatementFields f;
    f.verdict = protocol::Verdict::kAllow;
    f.source = protocol::DecisionSource::kCache;
    f.ts_ms = 1764029901002;
    f.sql = "INSERT INTO t VALUES ($1)";
    f.portal = "";
    f.params_json = params;
    std::string payload;
    f.encode(payload);
    return payload;
  };
  const std::string first = execution(R"(["1"])");
  const std::string second = execution(R"(["2"])");
  {
    recording::RecorderOptions o;
    o.dir = dir + "/recordings";
    auto rec = recording::Recorder::open(o);
    ASSERT_TRUE(rec.is_ok());
    recording::SessionStart start;
    start.session_id = "s1";
    ASSERT_TRUE((*rec)->start_session(start).is_ok());
    recording::RecordFields fields;
    std::string sql;
    ASSERT_TRUE(ring_record_fields(RecordType::kStatementRecord, first, fields, sql).is_ok());
    ASSERT_TRUE((*rec)->append("s1", "statement", std::move(fields), {}).is_ok());
    ASSERT_TRUE((*rec)->flush().is_ok());
  }
  auto tail = recording::read_recording_tail(dir + "/recordings/s1.jsonl");
  ASSERT_TRUE(tail.is_ok());
  ASSERT_TRUE(tail->ok) << tail->reason;
  EXPECT_TRUE(recorded_as(tail->last, first)) << tail->last.dump();
  EXPECT_FALSE(recorded_as(tail->last, second));
  EXPECT_FALSE(recorded_as(tail->last, "garbage"));
  std::filesystem::remove_all(dir);
}

TEST(RingFields, CompletionsSerialiseLikeTheJsonPath) {
  std::mt19937 rng(16);
  for (int i = 0; i < 2000; ++i) {
    std::string sql = random_text(rng), rule = random_text(rng), approval = random_text(rng),
                sqlstate = rng() % 2 ? std::string() : std::string("42P01"),
                error = random_text(rng);
    protocol::StatementEndFields f;
    f.verdict = rng() % 2 ? protocol::Verdict::kAllow : protocol::Verdict::kDeny;
    f.executed = rng() % 2;
    f.ts_ms = static_cast<int64_t>(rng()) - (1 << 30);
    f.duration_ms = rng() % 100000;
    f.rows = (static_cast<uint64_t>(rng()) << 32) | rng();
    f.rows_recorded = static_cast<int32_t>(rng());
    f.sql = sql;
    f.rule = rule;
    f.approval_id = approval;
    f.sqlstate = sqlstate;
    f.error = error;
    std::string payload;
    f.encode(payload);
    ASSERT_EQ(typed_canonical(RecordType::kStatementEnd, payload),
              tree_canonical(RecordType::kStatementEnd, payload))
        << "case " << i;
  }
}

TEST(RingFields, RowsSerialiseAndCutLikeTheJsonPath) {
  std::mt19937 rng(17);
  for (int i = 0; i < 500; ++i) {
    protocol::RowsWriter w;
    uint32_t ncols = rng() % 5;
    for (uint32_t c = 0; c < ncols; ++c) {
      w.add_column(random_text(rng), rng() % 3000, static_cast<int16_t>(rng() % 2));
    }
    uint32_t nrows = rng() % 6;
    for (uint32_t k = 0; k < nrows; ++k) {
      if (rng() % 7 == 0) {
        w.add_rendered_row(json::array({"a", nullptr, {{"length", 5}, {"sha256", "00"}}}));
        continue;
      }
      uint32_t nvals = rng() % 4 == 0 ? ncols + 1 : ncols;  // a row wider than its columns
      w.begin_row(nvals);
      for (uint32_t v = 0; v < nvals; ++v) {
        if (rng() % 5 == 0) {
          w.add_null();
        } else {
          w.add_value(random_text(rng));
        }
      }
    }
    std::string payload = w.take(1700000000000 + i);
    ASSERT_EQ(typed_canonical(RecordType::kRows, payload),
              tree_canonical(RecordType::kRows, payload))
        << "case " << i;
    // The Recorder cuts the rows member to the row cap: both must cut alike.
    recording::RecordFields typed;
    std::string sql;
    ASSERT_TRUE(ring_record_fields(RecordType::kRows, payload, typed, sql).is_ok());
    auto j = protocol::record_to_json(RecordType::kRows, payload);
    j->erase("kind");
    recording::RecordFields tree = recording::RecordFields::from_json(*j);
    ASSERT_EQ(typed.rows_count(), tree.rows_count());
    int64_t keep = typed.rows_count() / 2;
    typed.cut_rows(keep);
    tree.cut_rows(keep);
    ASSERT_EQ(typed.to_canonical(), tree.to_canonical()) << "case " << i;
  }
}

TEST(RingFields, MalformedPayloadsAreRefused) {
  recording::RecordFields f;
  std::string sql;
  for (RecordType t : {RecordType::kStatement, RecordType::kStatementRecord,
                       RecordType::kStatementEnd, RecordType::kRows}) {
    EXPECT_FALSE(ring_record_fields(t, "\x01\x02", f, sql).is_ok());
  }
  EXPECT_FALSE(ring_record_fields(RecordType::kEventJson, "{}", f, sql).is_ok());
  // A rows payload whose column count lies.
  std::string lie(8, '\0');
  lie += std::string("\xff\xff\xff\x0f", 4);
  EXPECT_FALSE(ring_record_fields(RecordType::kRows, lie, f, sql).is_ok());
}

// The audit line of a statement event built from its fields is the line of the JSON path
// (EscalationServer::audit_record_of: sql, verdict as decision, rule, message as reason when
// non-empty strings; every other field as an extra key).
TEST(RingFields, AuditLinesMatchTheJsonPath) {
  std::mt19937 rng(18);
  for (int i = 0; i < 1000; ++i) {
    std::string sql = random_text(rng), rule = random_text(rng);
    protocol::StatementFields f;
    f.source = static_cast<protocol::DecisionSource>(rng() % 8);
    f.has_shape_key = rng() % 2;
    f.shape_key = rng();
    f.ts_ms = 1700000000000;
    f.sql = sql;
    f.rule = rule;
    std::string payload;
    f.encode(payload);
    recording::RecordFields fields;
    std::string out_sql;
    ASSERT_TRUE(ring_record_fields(RecordType::kStatement, payload, fields, out_sql).is_ok());
    audit::AuditRecord typed{.event = "statement",
                             .session_id = "00000000000000ab",
                             .identity = "agent-7",
                             .policy = "p",
                             .policy_version = 3};
    audit_fields(fields, typed);

    auto j = protocol::record_to_json(RecordType::kStatement, payload);
    j->erase("kind");
    audit::AuditRecord tree{.event = "statement",
                            .session_id = "00000000000000ab",
                            .identity = "agent-7",
                            .policy = "p",
                            .policy_version = 3};
    auto take = [&](const char* key, std::string& out) {
      if (j->contains(key) && (*j)[key].is_string()) out = (*j)[key].get<std::string>();
    };
    take("sql", tree.sql);
    take("verdict", tree.decision);
    take("rule", tree.rule);
    take("message", tree.reason);
    for (const auto& [k, v] : j->items()) {
      if (k != "sql" && k != "verdict" && k != "rule" && k != "message") tree.extra[k] = v;
    }
    ASSERT_EQ(audit::AuditLog::line(typed, "2026-12-06T00:00:00.000Z"),
              audit::AuditLog::line(tree, "2026-12-06T00:00:00.000Z"))
        << "case " << i;
    EXPECT_EQ(out_sql, sql);
  }
}

}  // namespace
}  // namespace pgwarden::server
