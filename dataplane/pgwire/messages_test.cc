#include "dataplane/pgwire/messages.h"

#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace pgwarden::pgwire {
namespace {

using Opt = std::optional<std::string_view>;

std::string str(Bytes b) { return std::string(as_string_view(b)); }

template <typename T>
std::vector<T> collect(const ListView<T>& list) {
  std::vector<T> out;
  for (const T& v : list) out.push_back(v);
  return out;
}

std::vector<std::optional<std::string>> values(const ListView<Value>& list) {
  std::vector<std::optional<std::string>> out;
  for (const Value& v : list) {
    out.push_back(v.is_null ? std::nullopt : std::optional<std::string>(std::string(v.text())));
  }
  return out;
}

// How a message is framed: startup packet, or typed in either direction.
enum class Kind { kStartup, kFrontend, kBackend };

struct RoundTripCase {
  std::string name;
  Kind kind;
  std::function<void(std::string&)> build;
  std::function<void(const Message&)> check;
};

void PrintTo(const RoundTripCase& c, std::ostream* os) { *os << c.name; }

// Frames exactly one message from `bytes` (frontend typed messages after a StartupMessage).
Message frame_one(Kind kind, const std::string& bytes, std::string& storage) {
  Framer framer(kind == Kind::kBackend ? Direction::kBackend : Direction::kFrontend);
  storage.clear();
  size_t skip = 0;
  if (kind == Kind::kFrontend) {
    const Parameter p[] = {{"user", "u"}};
    append_startup_message(storage, p);
    skip = storage.size();
  }
  storage += bytes;
  Bytes input = as_bytes(storage);
  if (skip > 0) {
    FrameResult r = framer.next(input);
    EXPECT_EQ(r.status, FrameStatus::kMessage);
    input = input.subspan(skip);
  }
  FrameResult r = framer.next(input);
  EXPECT_EQ(r.status, FrameStatus::kMessage) << r.error.message();
  EXPECT_EQ(r.consumed, bytes.size());
  return r.message;
}

template <typename T>
T parsed(const Message& m) {
  T out{};
  FrameError e = parse_message(m, &out);
  EXPECT_TRUE(e.ok()) << e.message();
  return out;
}

std::vector<RoundTripCase> round_trip_cases() {
  std::vector<RoundTripCase> c;
  // --- startup phase ---
  c.push_back({"StartupMessageWithParameters", Kind::kStartup,
               [](std::string& o) {
                 const Parameter p[] = {{"user", "alice"},
                                        {"database", "crm"},
                                        {"application_name", ""},
                                        {"options", "-c search_path=crm"}};
                 append_startup_message(o, p);
               },
               [](const Message& m) {
                 EXPECT_EQ(m.startup, StartupKind::kStartupMessage);
                 auto s = parsed<StartupMessage>(m);
                 EXPECT_EQ(s.protocol_version, kProtocolVersion3);
                 ASSERT_EQ(s.parameters.size(), 4u);
                 EXPECT_EQ(s.find("user"), "alice");
                 EXPECT_EQ(s.find("database"), "crm");
                 EXPECT_EQ(s.find("application_name"), "");
                 EXPECT_EQ(s.find("options"), "-c search_path=crm");
                 EXPECT_EQ(s.find("missing"), std::nullopt);
               }});
  c.push_back(
      {"StartupMessageWithoutParameters", Kind::kStartup,
       [](std::string& o) { append_startup_message(o, {}); },
       [](const Message& m) { EXPECT_TRUE(parsed<StartupMessage>(m).parameters.empty()); }});
  c.push_back({"SslRequest", Kind::kStartup, [](std::string& o) { append_ssl_request(o); },
               [](const Message& m) {
                 EXPECT_EQ(m.startup, StartupKind::kSslRequest);
                 parsed<SslRequest>(m);
               }});
  c.push_back({"GssEncRequest", Kind::kStartup, [](std::string& o) { append_gssenc_request(o); },
               [](const Message& m) {
                 EXPECT_EQ(m.startup, StartupKind::kGssEncRequest);
                 parsed<GssEncRequest>(m);
               }});
  c.push_back({"CancelRequest", Kind::kStartup,
               [](std::string& o) { append_cancel_request(o, 4242, -17); },
               [](const Message& m) {
                 EXPECT_EQ(m.startup, StartupKind::kCancel);
                 auto r = parsed<CancelRequest>(m);
                 EXPECT_EQ(r.process_id, 4242);
                 EXPECT_EQ(r.secret_key, -17);
               }});
  // --- frontend ---
  c.push_back({"PasswordMessage", Kind::kFrontend,
               [](std::string& o) { append_password_message(o, "eyJhbGciOi.token"); },
               [](const Message& m) {
                 EXPECT_EQ(parsed<PasswordMessage>(m).password, "eyJhbGciOi.token");
               }});
  c.push_back(
      {"SaslInitialResponseWithData", Kind::kFrontend,
       [](std::string& o) { append_sasl_initial_response(o, "SCRAM-SHA-256", "n,,n=,r=abc"); },
       [](const Message& m) {
         auto s = parsed<SaslInitialResponse>(m);
         EXPECT_EQ(s.mechanism, "SCRAM-SHA-256");
         EXPECT_TRUE(s.has_data);
         EXPECT_EQ(str(s.data), "n,,n=,r=abc");
       }});
  c.push_back(
      {"SaslInitialResponseWithoutData", Kind::kFrontend,
       [](std::string& o) { append_sasl_initial_response(o, "SCRAM-SHA-256", std::nullopt); },
       [](const Message& m) {
         auto s = parsed<SaslInitialResponse>(m);
         EXPECT_FALSE(s.has_data);
         EXPECT_TRUE(s.data.empty());
       }});
  c.push_back({"SaslResponse", Kind::kFrontend,
               [](std::string& o) { append_sasl_response(o, std::string("c=biws,r=x\0p", 12)); },
               [](const Message& m) {
                 EXPECT_EQ(str(parsed<SaslResponse>(m).data), std::string("c=biws,r=x\0p", 12));
               }});
  c.push_back({"Query", Kind::kFrontend,
               [](std::string& o) { append_query(o, "SELECT id, email FROM crm.customers"); },
               [](const Message& m) {
                 EXPECT_EQ(parsed<Query>(m).sql, "SELECT id, email FROM crm.customers");
               }});
  c.push_back({"ParseWithParameterTypes", Kind::kFrontend,
               [](std::string& o) {
                 const uint32_t types[] = {23, 0, 25};
                 append_parse(o, "stmt1", "SELECT $1, $2, $3", types);
               },
               [](const Message& m) {
                 auto p = parsed<Parse>(m);
                 EXPECT_EQ(p.statement, "stmt1");
                 EXPECT_EQ(p.query, "SELECT $1, $2, $3");
                 EXPECT_EQ(collect(p.param_types), (std::vector<uint32_t>{23, 0, 25}));
               }});
  c.push_back({"BindWithFormatsValuesAndNull", Kind::kFrontend,
               [](std::string& o) {
                 const int16_t pf[] = {0, 1, 0};
                 const Opt params[] = {"42", std::string_view("\x00\x01", 2), std::nullopt};
                 const int16_t rf[] = {1};
                 append_bind(o, "portal", "stmt1", pf, params, rf);
               },
               [](const Message& m) {
                 auto b = parsed<Bind>(m);
                 EXPECT_EQ(b.portal, "portal");
                 EXPECT_EQ(b.statement, "stmt1");
                 EXPECT_EQ(collect(b.param_formats), (std::vector<int16_t>{0, 1, 0}));
                 EXPECT_EQ(values(b.params), (std::vector<std::optional<std::string>>{
                                                 "42", std::string("\x00\x01", 2), std::nullopt}));
                 EXPECT_EQ(collect(b.result_formats), (std::vector<int16_t>{1}));
               }});
  c.push_back({"BindWithNothing", Kind::kFrontend,
               [](std::string& o) { append_bind(o, "", "", {}, {}, {}); },
               [](const Message& m) {
                 auto b = parsed<Bind>(m);
                 EXPECT_TRUE(b.params.empty());
                 EXPECT_TRUE(b.param_formats.empty());
                 EXPECT_TRUE(b.result_formats.empty());
               }});
  c.push_back({"DescribePortal", Kind::kFrontend,
               [](std::string& o) { append_describe(o, 'P', "p1"); },
               [](const Message& m) {
                 auto d = parsed<Describe>(m);
                 EXPECT_EQ(d.kind, 'P');
                 EXPECT_EQ(d.name, "p1");
               }});
  c.push_back({"CloseStatement", Kind::kFrontend,
               [](std::string& o) { append_close(o, 'S', "stmt1"); },
               [](const Message& m) {
                 auto d = parsed<Close>(m);
                 EXPECT_EQ(d.kind, 'S');
                 EXPECT_EQ(d.name, "stmt1");
               }});
  c.push_back({"Execute", Kind::kFrontend, [](std::string& o) { append_execute(o, "p1", 100); },
               [](const Message& m) {
                 auto e = parsed<Execute>(m);
                 EXPECT_EQ(e.portal, "p1");
                 EXPECT_EQ(e.max_rows, 100);
               }});
  c.push_back({"Sync", Kind::kFrontend, [](std::string& o) { append_sync(o); },
               [](const Message& m) { parsed<Sync>(m); }});
  c.push_back({"Flush", Kind::kFrontend, [](std::string& o) { append_flush(o); },
               [](const Message& m) { parsed<Flush>(m); }});
  c.push_back({"Terminate", Kind::kFrontend, [](std::string& o) { append_terminate(o); },
               [](const Message& m) { parsed<Terminate>(m); }});
  c.push_back({"CopyDataFromFrontend", Kind::kFrontend,
               [](std::string& o) { append_copy_data(o, "1\talice\n"); },
               [](const Message& m) { EXPECT_EQ(str(parsed<CopyData>(m).data), "1\talice\n"); }});
  c.push_back({"CopyDoneFromFrontend", Kind::kFrontend, [](std::string& o) { append_copy_done(o); },
               [](const Message& m) { parsed<CopyDone>(m); }});
  c.push_back({"CopyFail", Kind::kFrontend,
               [](std::string& o) { append_copy_fail(o, "client gave up"); },
               [](const Message& m) { EXPECT_EQ(parsed<CopyFail>(m).message, "client gave up"); }});
  c.push_back(
      {"FunctionCall", Kind::kFrontend,
       [](std::string& o) {
         const int16_t af[] = {0};
         const Opt args[] = {"7", std::nullopt};
         append_function_call(o, 1598, af, args, 1);
       },
       [](const Message& m) {
         auto f = parsed<FunctionCall>(m);
         EXPECT_EQ(f.function_oid, 1598u);
         EXPECT_EQ(collect(f.arg_formats), (std::vector<int16_t>{0}));
         EXPECT_EQ(values(f.args), (std::vector<std::optional<std::string>>{"7", std::nullopt}));
         EXPECT_EQ(f.result_format, 1);
       }});
  // --- backend ---
  c.push_back({"AuthenticationOk", Kind::kBackend,
               [](std::string& o) { append_authentication_ok(o); },
               [](const Message& m) { EXPECT_EQ(parsed<Authentication>(m).code, kAuthOk); }});
  c.push_back({"AuthenticationCleartextPassword", Kind::kBackend,
               [](std::string& o) { append_authentication_cleartext_password(o); },
               [](const Message& m) {
                 EXPECT_EQ(parsed<Authentication>(m).code, kAuthCleartextPassword);
               }});
  c.push_back({"AuthenticationMd5Password", Kind::kBackend,
               [](std::string& o) {
                 append_authentication_md5_password(o, {1, 2, 0, 255});
               },
               [](const Message& m) {
                 auto a = parsed<Authentication>(m);
                 EXPECT_EQ(a.code, kAuthMd5Password);
                 EXPECT_EQ(str(a.salt), std::string("\x01\x02\x00\xff", 4));
               }});
  c.push_back({"AuthenticationSasl", Kind::kBackend,
               [](std::string& o) {
                 const std::string_view mechs[] = {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"};
                 append_authentication_sasl(o, mechs);
               },
               [](const Message& m) {
                 auto a = parsed<Authentication>(m);
                 EXPECT_EQ(a.code, kAuthSasl);
                 EXPECT_EQ(collect(a.mechanisms),
                           (std::vector<std::string_view>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}));
               }});
  c.push_back({"AuthenticationSaslContinue", Kind::kBackend,
               [](std::string& o) { append_authentication_sasl_continue(o, "r=abc,s=xyz,i=4096"); },
               [](const Message& m) {
                 auto a = parsed<Authentication>(m);
                 EXPECT_EQ(a.code, kAuthSaslContinue);
                 EXPECT_EQ(str(a.data), "r=abc,s=xyz,i=4096");
               }});
  c.push_back({"AuthenticationSaslFinal", Kind::kBackend,
               [](std::string& o) { append_authentication_sasl_final(o, "v=sig"); },
               [](const Message& m) {
                 auto a = parsed<Authentication>(m);
                 EXPECT_EQ(a.code, kAuthSaslFinal);
                 EXPECT_EQ(str(a.data), "v=sig");
               }});
  c.push_back({"ParameterStatus", Kind::kBackend,
               [](std::string& o) { append_parameter_status(o, "TimeZone", "UTC"); },
               [](const Message& m) {
                 auto p = parsed<ParameterStatus>(m);
                 EXPECT_EQ(p.name, "TimeZone");
                 EXPECT_EQ(p.value, "UTC");
               }});
  c.push_back({"BackendKeyData", Kind::kBackend,
               [](std::string& o) { append_backend_key_data(o, 31337, -2); },
               [](const Message& m) {
                 auto k = parsed<BackendKeyData>(m);
                 EXPECT_EQ(k.process_id, 31337);
                 EXPECT_EQ(k.secret_key, -2);
               }});
  for (char status : {'I', 'T', 'E'}) {
    c.push_back(
        {std::string("ReadyForQuery") + status, Kind::kBackend,
         [status](std::string& o) { append_ready_for_query(o, status); },
         [status](const Message& m) { EXPECT_EQ(parsed<ReadyForQuery>(m).status, status); }});
  }
  c.push_back({"RowDescription", Kind::kBackend,
               [](std::string& o) {
                 const FieldDescription f[] = {{"id", 16390, 1, 23, 4, -1, 0},
                                               {"email", 16390, 3, 25, -1, -1, 0},
                                               {"?column?", 0, 0, 1043, -1, 36, 1}};
                 append_row_description(o, f);
               },
               [](const Message& m) {
                 auto t = parsed<RowDescription>(m);
                 auto f = collect(t.fields);
                 ASSERT_EQ(f.size(), 3u);
                 EXPECT_EQ(f[0].name, "id");
                 EXPECT_EQ(f[0].table_oid, 16390u);
                 EXPECT_EQ(f[0].attnum, 1);
                 EXPECT_EQ(f[0].type_oid, 23u);
                 EXPECT_EQ(f[0].typlen, 4);
                 EXPECT_EQ(f[0].typmod, -1);
                 EXPECT_EQ(f[1].name, "email");
                 EXPECT_EQ(f[1].attnum, 3);
                 EXPECT_EQ(f[1].typlen, -1);
                 EXPECT_EQ(f[2].table_oid, 0u);
                 EXPECT_EQ(f[2].typmod, 36);
                 EXPECT_EQ(f[2].format, 1);
               }});
  c.push_back({"DataRowWithNullAndEmpty", Kind::kBackend,
               [](std::string& o) {
                 const Opt cols[] = {"1", std::nullopt, "", "alice@example.com"};
                 append_data_row(o, cols);
               },
               [](const Message& m) {
                 auto d = parsed<DataRow>(m);
                 EXPECT_EQ(values(d.columns), (std::vector<std::optional<std::string>>{
                                                  "1", std::nullopt, "", "alice@example.com"}));
               }});
  c.push_back({"CommandComplete", Kind::kBackend,
               [](std::string& o) { append_command_complete(o, "INSERT 0 5"); },
               [](const Message& m) { EXPECT_EQ(parsed<CommandComplete>(m).tag, "INSERT 0 5"); }});
  c.push_back({"EmptyQueryResponse", Kind::kBackend,
               [](std::string& o) { append_empty_query_response(o); },
               [](const Message& m) { parsed<EmptyQueryResponse>(m); }});
  c.push_back({"ErrorResponseWithAllFields", Kind::kBackend,
               [](std::string& o) {
                 const ErrorField f[] = {{'S', "ERROR"},  {'V', "ERROR"},
                                         {'C', "42P01"},  {'M', "relation \"x\" does not exist"},
                                         {'D', "detail"}, {'H', "hint"},
                                         {'P', "15"},     {'F', "parse_relation.c"},
                                         {'L', "1384"},   {'R', "parserOpenTable"}};
                 append_error_fields(o, 'E', f);
               },
               [](const Message& m) {
                 auto e = parsed<ErrorResponse>(m);
                 EXPECT_EQ(e.fields.size(), 10u);
                 EXPECT_EQ(e.severity(), "ERROR");
                 EXPECT_EQ(e.sqlstate(), "42P01");
                 EXPECT_EQ(e.message(), "relation \"x\" does not exist");
                 EXPECT_EQ(e.get(kFieldDetail), "detail");
                 EXPECT_EQ(e.get(kFieldHint), "hint");
                 EXPECT_EQ(e.get(kFieldPosition), "15");
                 EXPECT_EQ(e.get('R'), "parserOpenTable");
                 EXPECT_EQ(e.get('W'), "");
               }});
  c.push_back({"ErrorResponseHelper", Kind::kBackend,
               [](std::string& o) {
                 append_error_response(o, "ERROR", "42501", "permission denied by policy");
               },
               [](const Message& m) {
                 auto e = parsed<ErrorResponse>(m);
                 EXPECT_EQ(e.severity(), "ERROR");
                 EXPECT_EQ(e.get(kFieldSeverity), "ERROR");
                 EXPECT_EQ(e.sqlstate(), "42501");
                 EXPECT_EQ(e.message(), "permission denied by policy");
               }});
  c.push_back({"NoticeResponse", Kind::kBackend,
               [](std::string& o) { append_notice_response(o, "WARNING", "01000", "careful"); },
               [](const Message& m) {
                 auto n = parsed<NoticeResponse>(m);
                 EXPECT_EQ(n.severity(), "WARNING");
                 EXPECT_EQ(n.sqlstate(), "01000");
                 EXPECT_EQ(n.message(), "careful");
               }});
  c.push_back({"ParseComplete", Kind::kBackend, [](std::string& o) { append_parse_complete(o); },
               [](const Message& m) { parsed<ParseComplete>(m); }});
  c.push_back({"BindComplete", Kind::kBackend, [](std::string& o) { append_bind_complete(o); },
               [](const Message& m) { parsed<BindComplete>(m); }});
  c.push_back({"CloseComplete", Kind::kBackend, [](std::string& o) { append_close_complete(o); },
               [](const Message& m) { parsed<CloseComplete>(m); }});
  c.push_back({"NoData", Kind::kBackend, [](std::string& o) { append_no_data(o); },
               [](const Message& m) { parsed<NoData>(m); }});
  c.push_back({"PortalSuspended", Kind::kBackend,
               [](std::string& o) { append_portal_suspended(o); },
               [](const Message& m) { parsed<PortalSuspended>(m); }});
  c.push_back({"ParameterDescription", Kind::kBackend,
               [](std::string& o) {
                 const uint32_t t[] = {23, 25, 0xffffffff};
                 append_parameter_description(o, t);
               },
               [](const Message& m) {
                 EXPECT_EQ(collect(parsed<ParameterDescription>(m).types),
                           (std::vector<uint32_t>{23, 25, 0xffffffff}));
               }});
  c.push_back({"CopyInResponse", Kind::kBackend,
               [](std::string& o) {
                 const int16_t f[] = {0, 0};
                 append_copy_in_response(o, 0, f);
               },
               [](const Message& m) {
                 auto r = parsed<CopyInResponse>(m);
                 EXPECT_EQ(r.format, 0);
                 EXPECT_EQ(collect(r.column_formats), (std::vector<int16_t>{0, 0}));
               }});
  c.push_back({"CopyOutResponse", Kind::kBackend,
               [](std::string& o) {
                 const int16_t f[] = {1};
                 append_copy_out_response(o, 1, f);
               },
               [](const Message& m) {
                 auto r = parsed<CopyOutResponse>(m);
                 EXPECT_EQ(r.format, 1);
                 EXPECT_EQ(collect(r.column_formats), (std::vector<int16_t>{1}));
               }});
  c.push_back(
      {"CopyBothResponse", Kind::kBackend,
       [](std::string& o) { append_copy_both_response(o, 0, {}); },
       [](const Message& m) { EXPECT_TRUE(parsed<CopyBothResponse>(m).column_formats.empty()); }});
  c.push_back({"CopyDataFromBackend", Kind::kBackend,
               [](std::string& o) { append_copy_data(o, std::string(70000, 'z')); },
               [](const Message& m) {
                 EXPECT_EQ(str(parsed<CopyData>(m).data), std::string(70000, 'z'));
               }});
  c.push_back({"CopyDoneFromBackend", Kind::kBackend, [](std::string& o) { append_copy_done(o); },
               [](const Message& m) { parsed<CopyDone>(m); }});
  c.push_back({"NotificationResponse", Kind::kBackend,
               [](std::string& o) { append_notification_response(o, 99, "jobs", "{\"id\":1}"); },
               [](const Message& m) {
                 auto n = parsed<NotificationResponse>(m);
                 EXPECT_EQ(n.process_id, 99);
                 EXPECT_EQ(n.channel, "jobs");
                 EXPECT_EQ(n.payload, "{\"id\":1}");
               }});
  c.push_back({"NegotiateProtocolVersion", Kind::kBackend,
               [](std::string& o) {
                 const std::string_view opts[] = {"_pq_.compression", "_pq_.x"};
                 append_negotiate_protocol_version(o, 0, opts);
               },
               [](const Message& m) {
                 auto n = parsed<NegotiateProtocolVersion>(m);
                 EXPECT_EQ(n.newest_minor, 0);
                 EXPECT_EQ(collect(n.unrecognized_options),
                           (std::vector<std::string_view>{"_pq_.compression", "_pq_.x"}));
               }});
  c.push_back(
      {"FunctionCallResponseNull", Kind::kBackend,
       [](std::string& o) { append_function_call_response(o, std::nullopt); },
       [](const Message& m) { EXPECT_TRUE(parsed<FunctionCallResponse>(m).result.is_null); }});
  c.push_back({"FunctionCallResponseValue", Kind::kBackend,
               [](std::string& o) { append_function_call_response(o, "t"); },
               [](const Message& m) {
                 auto r = parsed<FunctionCallResponse>(m);
                 EXPECT_FALSE(r.result.is_null);
                 EXPECT_EQ(r.result.text(), "t");
               }});
  return c;
}

class RoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTripTest, BuiltMessageFramesAndParsesBackToTheSameFields) {
  const RoundTripCase& c = GetParam();
  std::string bytes;
  c.build(bytes);
  std::string storage;
  Message m = frame_one(c.kind, bytes, storage);
  EXPECT_EQ(str(m.bytes), bytes);
  c.check(m);

  // Appending to a non-empty buffer writes the same bytes after what is there.
  std::string prefixed = "prefix";
  c.build(prefixed);
  EXPECT_EQ(prefixed, "prefix" + bytes);
}

INSTANTIATE_TEST_SUITE_P(AllMessages, RoundTripTest, ::testing::ValuesIn(round_trip_cases()),
                         [](const auto& info) { return info.param.name; });

// ----- malformed bodies ------------------------------------------------------------------------

std::string be16(int16_t v) {
  std::string s;
  append_int16(s, v);
  return s;
}
std::string be32(int32_t v) {
  std::string s;
  append_int32(s, v);
  return s;
}
const std::string kNul(1, '\0');

struct BadBodyCase {
  std::string name;
  std::function<FrameError(Bytes)> parse;
  std::string body;
  FrameErrorCode code;
};

void PrintTo(const BadBodyCase& c, std::ostream* os) { *os << c.name; }

template <typename T>
std::function<FrameError(Bytes)> parser() {
  return [](Bytes b) {
    T out{};
    return parse(b, &out);
  };
}

std::vector<BadBodyCase> bad_body_cases() {
  using C = FrameErrorCode;
  const std::string v3 = be32(static_cast<int32_t>(kProtocolVersion3));
  return {
      {"QueryWithoutNul", parser<Query>(), "SELECT 1", C::kMissingNul},
      {"QueryWithTrailingBytes", parser<Query>(), "SELECT 1" + kNul + "x", C::kTrailingBytes},
      {"SyncWithBody", parser<Sync>(), "x", C::kTrailingBytes},
      {"TerminateWithBody", parser<Terminate>(), "xx", C::kTrailingBytes},
      {"BackendKeyDataTruncated", parser<BackendKeyData>(), be32(1) + "ab", C::kTruncatedField},
      {"StartupWithoutFinalTerminator", parser<StartupMessage>(), v3 + "user" + kNul + "u" + kNul,
       C::kMissingNul},
      {"StartupWithNameButNoValue", parser<StartupMessage>(), v3 + "user" + kNul, C::kMissingNul},
      {"StartupWithUnsupportedVersion", parser<StartupMessage>(), be32(2 << 16) + kNul,
       C::kUnsupportedProtocol},
      {"StartupWithBytesAfterTerminator", parser<StartupMessage>(), v3 + kNul + "x",
       C::kTrailingBytes},
      {"CancelRequestTruncated", parser<CancelRequest>(),
       be32(static_cast<int32_t>(kCancelRequestCode)) + be32(1), C::kTruncatedField},
      {"ParseWith65535TypesButNoBytes", parser<Parse>(), "s" + kNul + "q" + kNul + be16(-1),
       C::kTruncatedField},
      {"ParseWithMoreTypesThanBytes", parser<Parse>(), "s" + kNul + "q" + kNul + be16(3) + be32(23),
       C::kTruncatedField},
      {"BindWithValueLengthBelowMinusOne", parser<Bind>(),
       kNul + kNul + be16(0) + be16(1) + be32(-2) + be16(0), C::kInvalidFieldValue},
      {"BindWithValueLongerThanMessage", parser<Bind>(),
       kNul + kNul + be16(0) + be16(1) + be32(1000) + "ab", C::kTruncatedField},
      {"BindWithFormatCodeTwo", parser<Bind>(), kNul + kNul + be16(1) + be16(2) + be16(0) + be16(0),
       C::kInvalidFieldValue},
      {"BindWithFormatCountNotMatchingParams", parser<Bind>(),
       kNul + kNul + be16(2) + be16(0) + be16(0) + be16(1) + be32(1) + "x" + be16(0),
       C::kInvalidFieldValue},
      {"BindWith65531ResultFormatsButNoBytes", parser<Bind>(),
       kNul + kNul + be16(0) + be16(0) + be16(-5), C::kTruncatedField},
      {"DescribeWithUnknownKind", parser<Describe>(), "X" + std::string("name") + kNul,
       C::kInvalidFieldValue},
      {"CloseEmpty", parser<Close>(), "", C::kTruncatedField},
      {"ExecuteWithNegativeMaxRows", parser<Execute>(), kNul + be32(-1), C::kInvalidFieldValue},
      {"SaslInitialResponseLengthPastEnd", parser<SaslInitialResponse>(),
       "SCRAM-SHA-256" + kNul + be32(50) + "abc", C::kTruncatedField},
      {"SaslInitialResponseLengthShortOfEnd", parser<SaslInitialResponse>(),
       "SCRAM-SHA-256" + kNul + be32(1) + "abc", C::kTrailingBytes},
      {"FunctionCallWithoutResultFormat", parser<FunctionCall>(), be32(1) + be16(0) + be16(0),
       C::kTruncatedField},
      {"AuthenticationUnknownCode", parser<Authentication>(), be32(6), C::kInvalidFieldValue},
      {"AuthenticationMd5ShortSalt", parser<Authentication>(), be32(5) + "ab", C::kTruncatedField},
      {"AuthenticationOkWithTrailingBytes", parser<Authentication>(), be32(0) + "z",
       C::kTrailingBytes},
      {"AuthenticationSaslWithoutTerminator", parser<Authentication>(),
       be32(10) + "SCRAM-SHA-256" + kNul, C::kMissingNul},
      {"ReadyForQueryUnknownStatus", parser<ReadyForQuery>(), "X", C::kInvalidFieldValue},
      {"ReadyForQueryEmpty", parser<ReadyForQuery>(), "", C::kTruncatedField},
      {"RowDescriptionTruncatedField", parser<RowDescription>(),
       be16(1) + "id" + kNul + be32(1) + be16(1), C::kTruncatedField},
      {"RowDescription65535FieldsButNoBytes", parser<RowDescription>(), be16(-1), C::kMissingNul},
      {"RowDescriptionFormatThree", parser<RowDescription>(),
       be16(1) + "id" + kNul + be32(1) + be16(1) + be32(23) + be16(4) + be32(-1) + be16(3),
       C::kInvalidFieldValue},
      {"DataRowLengthBelowMinusOne", parser<DataRow>(), be16(1) + be32(-7), C::kInvalidFieldValue},
      {"DataRowMoreColumnsThanBytes", parser<DataRow>(), be16(2) + be32(1) + "a",
       C::kTruncatedField},
      {"DataRowHugeValueLength", parser<DataRow>(), be16(1) + be32(0x7fffffff) + "abc",
       C::kTruncatedField},
      {"DataRowMissingCount", parser<DataRow>(), "a", C::kTruncatedField},
      {"CommandCompleteWithoutNul", parser<CommandComplete>(), "SELECT 1", C::kMissingNul},
      {"ErrorResponseWithoutTerminator", parser<ErrorResponse>(), "SERROR" + kNul,
       C::kTruncatedField},
      {"ErrorResponseFieldWithoutNul", parser<ErrorResponse>(), "MERROR", C::kMissingNul},
      {"NoticeResponseWithTrailingBytes", parser<NoticeResponse>(), "Mhi" + kNul + kNul + "x",
       C::kTrailingBytes},
      {"ParameterDescriptionTruncated", parser<ParameterDescription>(), be16(2) + be32(23),
       C::kTruncatedField},
      {"CopyInResponseFormatTwo", parser<CopyInResponse>(), std::string(1, '\2') + be16(0),
       C::kInvalidFieldValue},
      {"CopyOutResponse65535ColumnsButNoBytes", parser<CopyOutResponse>(), kNul + be16(-1),
       C::kTruncatedField},
      {"NotificationResponseMissingPayload", parser<NotificationResponse>(),
       be32(1) + "chan" + kNul, C::kMissingNul},
      {"NegotiateProtocolVersionCountTooLarge", parser<NegotiateProtocolVersion>(),
       be32(0) + be32(1000000) + "a" + kNul, C::kTruncatedField},
      {"NegotiateProtocolVersionNegativeCount", parser<NegotiateProtocolVersion>(),
       be32(0) + be32(-1), C::kInvalidFieldValue},
      {"FunctionCallResponseTruncated", parser<FunctionCallResponse>(), be32(5) + "ab",
       C::kTruncatedField},
      {"ParseCompleteWithBody", parser<ParseComplete>(), "1", C::kTrailingBytes},
  };
}

class BadBodyTest : public ::testing::TestWithParam<BadBodyCase> {};

TEST_P(BadBodyTest, IsRejectedWithTypedProtocolViolation) {
  const BadBodyCase& c = GetParam();
  FrameError e = c.parse(as_bytes(c.body));
  EXPECT_EQ(e.code, c.code) << e.message();
  EXPECT_FALSE(e.sqlstate().empty());
  if (c.code != FrameErrorCode::kUnsupportedProtocol) {
    EXPECT_EQ(e.sqlstate(), "08P01");
  }
}

INSTANTIATE_TEST_SUITE_P(Malformed, BadBodyTest, ::testing::ValuesIn(bad_body_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(MessagesTest, ParseMessageChecksTheTypeByte) {
  std::string bytes;
  append_command_complete(bytes, "SELECT 1");
  Framer framer(Direction::kBackend);
  FrameResult r = framer.next(as_bytes(bytes));
  ASSERT_EQ(r.status, FrameStatus::kMessage);
  ErrorResponse e;
  FrameError err = parse_message(r.message, &e);
  EXPECT_EQ(err.code, FrameErrorCode::kInvalidMessageType);
  EXPECT_EQ(err.type, 'C');
}

TEST(MessagesTest, CountsAreUnsignedUpTo65535AsInPostgreSQL) {
  // PostgreSQL reads Int16 counts unsigned: 65,535 parameters are valid, 32,768 is no "-32768".
  for (size_t n : {size_t{32768}, size_t{65535}}) {
    std::vector<Oid> types(n, 23);
    std::string parse_bytes;
    append_parse(parse_bytes, "s", "select 1", types);
    Parse p;
    ASSERT_TRUE(parse(as_bytes(parse_bytes).subspan(5), &p).ok()) << n;
    EXPECT_EQ(p.param_types.size(), n);

    std::vector<std::optional<std::string_view>> values(n, std::string_view("7"));
    const Int16 text[] = {0};
    std::string bind_bytes;
    append_bind(bind_bytes, "", "s", text, values, {});
    Bind b;
    ASSERT_TRUE(parse(as_bytes(bind_bytes).subspan(5), &b).ok()) << n;
    EXPECT_EQ(b.params.size(), n);
  }
}

TEST(MessagesTest, BuildersCutStringsAtEmbeddedNulSoOutputStaysWellFormed) {
  std::string bytes;
  append_query(bytes, std::string_view("SELECT 1\0; DROP TABLE x", 23));
  Framer framer(Direction::kFrontend);
  std::string stream;
  const Parameter p[] = {{"user", "u"}};
  append_startup_message(stream, p);
  size_t skip = stream.size();
  stream += bytes;
  ASSERT_EQ(framer.next(as_bytes(stream)).status, FrameStatus::kMessage);
  FrameResult r = framer.next(as_bytes(stream).subspan(skip));
  ASSERT_EQ(r.status, FrameStatus::kMessage);
  Query q;
  ASSERT_TRUE(parse_message(r.message, &q).ok());
  EXPECT_EQ(q.sql, "SELECT 1");
  EXPECT_TRUE(has_nul(std::string_view("a\0b", 3)));
}

TEST(MessagesTest, DataRowCanBeRewrittenColumnByColumn) {
  std::string original;
  const Opt cols[] = {"1", "alice@example.com", std::nullopt};
  append_data_row(original, cols);
  Framer framer(Direction::kBackend);
  FrameResult r = framer.next(as_bytes(original));
  ASSERT_EQ(r.status, FrameStatus::kMessage);
  DataRow row;
  ASSERT_TRUE(parse_message(r.message, &row).ok());

  std::string rewritten;
  size_t at = begin_message(rewritten, 'D');
  append_int16(rewritten, static_cast<int16_t>(row.columns.size()));
  int index = 0;
  for (const Value& v : row.columns) {
    if (index++ == 1) {
      append_value(rewritten, "****");
    } else {
      append_value(rewritten, v.is_null ? Opt() : Opt(v.text()));
    }
  }
  finish_message(rewritten, at);

  std::string expected;
  const Opt masked[] = {"1", "****", std::nullopt};
  append_data_row(expected, masked);
  EXPECT_EQ(rewritten, expected);
}

TEST(MessagesTest, ListViewsCanBeIteratedRepeatedly) {
  std::string bytes;
  const Opt cols[] = {"a", "b", "c"};
  append_data_row(bytes, cols);
  Framer framer(Direction::kBackend);
  FrameResult r = framer.next(as_bytes(bytes));
  DataRow row;
  ASSERT_TRUE(parse_message(r.message, &row).ok());
  EXPECT_EQ(values(row.columns), values(row.columns));
  EXPECT_EQ(std::distance(row.columns.begin(), row.columns.end()), 3);
}

}  // namespace
}  // namespace pgwarden::pgwire
