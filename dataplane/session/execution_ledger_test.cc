#include "dataplane/session/execution_ledger.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace pgwarden::session {
namespace {

namespace pw = pgwarden::pgwire;

// One built frontend message and a Message view of it (type, whole bytes, body).
struct Built {
  std::string bytes;
  pw::Message message() const {
    pw::Message m;
    m.type = static_cast<uint8_t>(bytes[0]);
    m.bytes = pw::as_bytes(bytes);
    m.body = m.bytes.subspan(5);
    return m;
  }
};

Built parse_msg(std::string_view name, std::string_view sql) {
  Built b;
  pw::append_parse(b.bytes, name, sql);
  return b;
}
Built bind_msg(std::string_view portal, std::string_view stmt,
               std::vector<std::optional<std::string_view>> params = {},
               std::vector<pw::Int16> formats = {}) {
  Built b;
  pw::append_bind(b.bytes, portal, stmt, formats, params, {});
  return b;
}
Built execute_msg(std::string_view portal) {
  Built b;
  pw::append_execute(b.bytes, portal, 0);
  return b;
}
Built close_msg(char kind, std::string_view name) {
  Built b;
  pw::append_close(b.bytes, kind, name);
  return b;
}

TEST(ExecutionLedgerTest, ARecordedParseCoversOnlyTheFirstExecution) {
  ExecutionLedger l;
  l.on_forwarded(parse_msg("s1", "INSERT INTO t VALUES ($1)").message(), true, "policy");
  l.on_forwarded(bind_msg("", "s1", {"a"}).message(), false, "");
  EXPECT_EQ(l.uncovered(""), nullptr);
  // Executing the same portal again (a suspended portal) is the same run: still covered.
  l.on_forwarded(execute_msg("").message(), false, "");
  EXPECT_EQ(l.uncovered(""), nullptr);

  // The second Bind of the statement is a new execution: it needs its own record.
  l.on_forwarded(bind_msg("", "s1", {"b"}).message(), false, "");
  const ExecutionLedger::Portal* p = l.uncovered("");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->sql, "INSERT INTO t VALUES ($1)");
  EXPECT_EQ(p->rule, "policy");
  EXPECT_EQ(p->params, nlohmann::json::array({"b"}));
  // Forwarded after its record: covered until bound again.
  l.on_forwarded(execute_msg("").message(), true, "policy");
  EXPECT_EQ(l.uncovered(""), nullptr);
  l.on_forwarded(bind_msg("", "s1", {"c"}).message(), false, "");
  EXPECT_NE(l.uncovered(""), nullptr);
}

TEST(ExecutionLedgerTest, AnUnrecordedParseCoversNothing) {
  ExecutionLedger l;
  l.on_forwarded(parse_msg("", "SELECT 1").message(), false, "");
  l.on_forwarded(bind_msg("", "").message(), false, "");
  EXPECT_NE(l.uncovered(""), nullptr);
}

TEST(ExecutionLedgerTest, UnknownAndClosedNamesNeedARecord) {
  ExecutionLedger l;
  EXPECT_NE(l.uncovered("never-bound"), nullptr);
  EXPECT_EQ(l.uncovered("never-bound")->sql, "");
  l.on_forwarded(parse_msg("s", "SELECT $1").message(), true, "r");
  l.on_forwarded(bind_msg("p", "s", {"1"}).message(), false, "");
  EXPECT_EQ(l.uncovered("p"), nullptr);
  l.on_forwarded(close_msg('P', "p").message(), false, "");
  EXPECT_NE(l.uncovered("p"), nullptr);
  // A statement closed and bound again is unknown: a record, without its text.
  l.on_forwarded(close_msg('S', "s").message(), false, "");
  l.on_forwarded(bind_msg("p", "s", {"2"}).message(), false, "");
  ASSERT_NE(l.uncovered("p"), nullptr);
  EXPECT_EQ(l.uncovered("p")->sql, "");
  EXPECT_EQ(l.uncovered("p")->params, nlohmann::json::array({"2"}));
}

TEST(ExecutionLedgerTest, EvictionCostsRecordsNeverCoverage) {
  ExecutionLedger l;
  l.on_forwarded(parse_msg("keep", "SELECT 1").message(), true, "r");
  for (size_t i = 0; i < ExecutionLedger::kMaxNames + 1; ++i) {
    l.on_forwarded(parse_msg("s" + std::to_string(i), "SELECT 2").message(), true, "r");
  }
  l.on_forwarded(bind_msg("", "keep").message(), false, "");
  EXPECT_NE(l.uncovered(""), nullptr);  // evicted: no credit survives
}

TEST(ExecutionLedgerTest, ParamsRenderTextNullAndBinaryWithinABudget) {
  std::string raw("\x00\x01\xff", 3);
  Built b = bind_msg("", "", {"text", std::nullopt, raw}, {0, 0, 1});
  pw::Bind bind;
  ASSERT_TRUE(pw::parse(b.message().body, &bind).ok());
  bool truncated = true;
  nlohmann::json p = render_params(bind, 1024, &truncated);
  EXPECT_FALSE(truncated);
  EXPECT_EQ(p, nlohmann::json::parse(R"(["text", null, {"binary_hex": "0001ff"}])"));

  // One format code applies to every parameter.
  Built all_binary = bind_msg("", "", {"A", "B"}, {1});
  ASSERT_TRUE(pw::parse(all_binary.message().body, &bind).ok());
  EXPECT_EQ(render_params(bind, 1024, &truncated),
            nlohmann::json::parse(R"([{"binary_hex": "41"}, {"binary_hex": "42"}])"));

  std::string big(100, 'x');
  Built large = bind_msg("", "", {big, "tail"});
  ASSERT_TRUE(pw::parse(large.message().body, &bind).ok());
  p = render_params(bind, 10, &truncated);
  EXPECT_TRUE(truncated);
  EXPECT_EQ(p, nlohmann::json::array({std::string(10, 'x'), ""}));
}

}  // namespace
}  // namespace pgwarden::session
