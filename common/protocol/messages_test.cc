#include "common/protocol/messages.h"

#include <gtest/gtest.h>

#include <tuple>

namespace pgwarden::protocol {
namespace {

TEST(MessagesTest, RequestHeaderNeedsIdTypeAndDeadline) {
  EXPECT_TRUE(
      parse_request_header(json{{"id", 3}, {"type", "analyse"}, {"deadline_ms", 5}}).is_ok());
  EXPECT_TRUE(parse_request_header(json{{"id", 1}, {"type", "hello"}}).is_ok());
  EXPECT_FALSE(parse_request_header(json{{"id", 3}, {"type", "analyse"}}).is_ok());
  EXPECT_FALSE(
      parse_request_header(json{{"id", -1}, {"type", "analyse"}, {"deadline_ms", 5}}).is_ok());
  EXPECT_FALSE(parse_request_header(json{{"id", "3"}, {"type", "x"}, {"deadline_ms", 5}}).is_ok());
  EXPECT_FALSE(parse_request_header(json{{"type", "x"}, {"deadline_ms", 5}}).is_ok());
}

TEST(MessagesTest, AuthenticateRoundTripsAndErrorsNeverEchoTheToken) {
  AuthenticateRequest a{"s1", "secret-token", "agent", "crm", "10.0.0.1:5555", true};
  auto back = AuthenticateRequest::from_json(a.to_json(9, 100));
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->token, "secret-token");
  EXPECT_TRUE(back->tls);
  json bad = a.to_json(9, 100);
  bad["tls"] = "yes";
  auto r = AuthenticateRequest::from_json(bad);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message().find("secret-token"), std::string::npos);
}

TEST(MessagesTest, AuthenticateResponseRoundTrips) {
  AuthenticateResponse a;
  a.identity = {"svc:x", "service-key", {"ops"}};
  a.policy = {.name = "p",
              .version = 42,
              .read_only = true,
              .rule_sets = {"default-deny"},
              .recording = RecordingLevel::kMetadata,
              .recording_required = false,
              .masks_values = false};
  a.upstream = {.host = "127.0.0.1",
                .database = "demo",
                .role = "app",
                .tls_mode = UpstreamTlsMode::kVerifyFull,
                .pool_mode = PoolMode::kTransaction};
  a.startup_parameters["default_transaction_read_only"] = "on";
  json wire = a.to_json();
  // Enums travel by name (the same names as in the configuration file).
  EXPECT_EQ(wire["policy"]["recording"], "metadata");
  EXPECT_EQ(wire["upstream"]["tls_mode"], "verify-full");
  EXPECT_EQ(wire["upstream"]["pool_mode"], "transaction");
  auto back = AuthenticateResponse::from_json(make_ok(1, wire));
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->policy.version, 42u);
  EXPECT_EQ(back->policy.recording, RecordingLevel::kMetadata);
  EXPECT_FALSE(back->policy.recording_required);
  EXPECT_FALSE(back->policy.masks_values);
  EXPECT_EQ(back->upstream.tls_mode, UpstreamTlsMode::kVerifyFull);
  EXPECT_EQ(back->upstream.pool_mode, PoolMode::kTransaction);
  EXPECT_EQ(back->identity.groups, std::vector<std::string>{"ops"});
  EXPECT_EQ(back->startup_parameters.at("default_transaction_read_only"), "on");
}

// A grant whose typed fields name no known value is refused as a whole (the dp fails the
// login closed); fields an older cp does not send take the fail-closed defaults.
TEST(MessagesTest, AuthenticateResponseRefusesUnknownNamesAndDefaultsClosed) {
  AuthenticateResponse a;
  a.identity = {"svc:x", "service-key", {"ops"}};
  a.policy = {.name = "p", .version = 1};
  a.upstream = {.host = "127.0.0.1", .database = "demo", .role = "app"};
  for (auto [object, key, value] :
       {std::tuple{"policy", "recording", "everything"}, {"policy", "recording", "FULL"},
        {"upstream", "tls_mode", "prefer"}, {"upstream", "pool_mode", "statement"}}) {
    json wire = make_ok(1, a.to_json());
    wire[object][key] = value;
    auto r = AuthenticateResponse::from_json(wire);
    ASSERT_FALSE(r.is_ok()) << object << "." << key << " = " << value;
    EXPECT_NE(r.status().message().find(std::string("unknown value \"") + value + "\""),
              std::string::npos)
        << r.status().message();
  }
  json old = make_ok(1, a.to_json());
  old["policy"].erase("recording_required");
  old["policy"].erase("masks_values");
  old["upstream"].erase("pool_mode");
  auto back = AuthenticateResponse::from_json(old);
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_TRUE(back->policy.recording_required);
  EXPECT_TRUE(back->policy.masks_values);
  EXPECT_EQ(back->upstream.pool_mode, PoolMode::kSession);
  json no_level = make_ok(1, a.to_json());
  no_level["policy"].erase("recording");
  EXPECT_FALSE(AuthenticateResponse::from_json(no_level).is_ok());
}

TEST(MessagesTest, AnalyseValidatesPrescreenActions) {
  AnalyseRequest a{"s", "select 1", "ab12", {{"r1", "deny"}}};
  ASSERT_TRUE(AnalyseRequest::from_json(a.to_json(1, 1)).is_ok());
  json bad = a.to_json(1, 1);
  bad["prescreen"][0]["action"] = "maybe";
  EXPECT_FALSE(AnalyseRequest::from_json(bad).is_ok());
  EXPECT_FALSE(AnalyseResponse::from_json(json{{"verdict", "perhaps"}}).is_ok());
  EXPECT_TRUE(
      AnalyseResponse::from_json(AnalyseResponse{"deny", "r", "m", true}.to_json()).is_ok());
}

TEST(MessagesTest, AnalyseSqlMayBeEmptyButNotAbsent) {
  AnalyseRequest empty{"s", "", "", {}};
  auto back = AnalyseRequest::from_json(empty.to_json(1, 1));
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(back->sql, "");
  json absent = empty.to_json(1, 1);
  absent.erase("sql");
  EXPECT_FALSE(AnalyseRequest::from_json(absent).is_ok());
}

TEST(MessagesTest, AnalyseResponseCarriesThePostgresErrorOfAnUnparseableStatement) {
  AnalyseResponse r{"deny", "policy.parse_error", "syntax error at or near \"FORM\"", false};
  r.sqlstate = "42601";
  r.position = 10;
  auto back = AnalyseResponse::from_json(r.to_json());
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  EXPECT_EQ(back->sqlstate, "42601");
  EXPECT_EQ(back->position, 10);
  EXPECT_EQ(back->message, "syntax error at or near \"FORM\"");
  json old = {{"verdict", "deny"}};  // from a cp without the fields
  auto plain = AnalyseResponse::from_json(old);
  ASSERT_TRUE(plain.is_ok());
  EXPECT_EQ(plain->sqlstate, "");
  EXPECT_EQ(plain->position, 0);
}

TEST(MessagesTest, MaskPlanFieldsTypedAndCapped) {
  MaskPlanRequest m{"s", {{"ssn", 16384, 5, 25, 0}}};
  auto back = MaskPlanRequest::from_json(m.to_json(1, 1));
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->fields[0].table_oid, 16384u);
  json bad = m.to_json(1, 1);
  bad["fields"][0]["table_oid"] = -5;
  EXPECT_FALSE(MaskPlanRequest::from_json(bad).is_ok());
  json many = m.to_json(1, 1);
  many["fields"] = json::array();
  for (int i = 0; i < 1700; ++i) many["fields"].push_back(m.to_json(1, 1)["fields"][0]);
  EXPECT_FALSE(MaskPlanRequest::from_json(many).is_ok());
}

TEST(MessagesTest, MaskPlanCopyVariantRoundTripsAndIsRangeChecked) {
  MaskPlanRequest m{"s", {}, CopyPlanRequest{"COPY t TO STDOUT", 0, 0, 9}};
  auto back = MaskPlanRequest::from_json(m.to_json(1, 1));
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  ASSERT_TRUE(back->copy.has_value());
  EXPECT_EQ(back->copy->sql, "COPY t TO STDOUT");
  EXPECT_EQ(back->copy->columns, 9);
  json bad = m.to_json(1, 1);
  bad["copy"]["format"] = 2;
  EXPECT_FALSE(MaskPlanRequest::from_json(bad).is_ok());
  bad = m.to_json(1, 1);
  bad["copy"].erase("sql");
  EXPECT_FALSE(MaskPlanRequest::from_json(bad).is_ok());
  MaskPlanResponse r;
  r.plan = {{"column_count", 0}, {"columns", json::array()}};
  r.copy = {{"format", "csv"}};
  auto rback = MaskPlanResponse::from_json(r.to_json());
  ASSERT_TRUE(rback.is_ok());
  EXPECT_EQ(rback->copy["format"], "csv");
}

TEST(MessagesTest, EventKeepsExtraFieldsAndRejectsUnknownKinds) {
  auto e = Event::from_json(json{{"type", "event"},
                                 {"session_id", "s"},
                                 {"kind", "statement"},
                                 {"sql", "select 1"},
                                 {"verdict", "allow"}});
  ASSERT_TRUE(e.is_ok());
  EXPECT_EQ(e->fields["sql"], "select 1");
  EXPECT_EQ(e->to_json()["type"], "event");
  EXPECT_FALSE(
      Event::from_json(json{{"type", "event"}, {"session_id", "s"}, {"kind", "party"}}).is_ok());
}

TEST(MessagesTest, UpstreamBackendEventOfTransactionPoolingIsAKnownKind) {
  auto e = Event::from_json(json{
      {"type", "event"}, {"session_id", "s"}, {"kind", "upstream_backend"}, {"backend_pid", 4242}});
  ASSERT_TRUE(e.is_ok()) << e.status().to_string();
  EXPECT_EQ(e->fields["backend_pid"], 4242);
}

TEST(MessagesTest, DataplaneWideEventsNeedNoSessionButSessionEventsDo) {
  auto stats = Event::from_json(json{{"type", "event"},
                                     {"kind", "dataplane_stats"},
                                     {"dp", {{"name", "gw1"}}},
                                     {"interval_ms", 1000}});
  ASSERT_TRUE(stats.is_ok()) << stats.status().to_string();
  EXPECT_EQ(stats->fields["dp"]["name"], "gw1");
  EXPECT_TRUE(Event::from_json(json{{"type", "event"}, {"kind", "wire_rules_reload"}}).is_ok());
  EXPECT_FALSE(Event::from_json(json{{"type", "event"}, {"kind", "statement"}}).is_ok());
}

TEST(MessagesTest, ErrorResponseShape) {
  json e = make_error(5, error_code::kDeadlineExceeded, deadline_exceeded("late"));
  EXPECT_EQ(e["id"], 5);
  EXPECT_EQ(e["ok"], false);
  EXPECT_EQ(e["error"]["sqlstate"], "57014");
  EXPECT_EQ(e["error"]["code"], "deadline_exceeded");
  EXPECT_EQ(make_ok(5, json{{"a", 1}})["ok"], true);
}

}  // namespace
}  // namespace pgwarden::protocol
