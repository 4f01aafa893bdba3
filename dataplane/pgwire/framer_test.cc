#include "dataplane/pgwire/framer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "dataplane/pgwire/messages.h"
#include "common/source_root.h"

namespace pgwarden::pgwire {
namespace {

// One framed result reduced to comparable values.
struct Framed {
  FrameStatus status;
  uint8_t type;
  StartupKind startup;
  std::string bytes;
  FrameErrorCode error;
  bool operator==(const Framed&) const = default;
};

std::string str(Bytes b) { return std::string(as_string_view(b)); }

// Feeds `stream` to a BufferingFramer in chunks ending at `cuts` and collects every message and
// the final error (if any).
std::vector<Framed> frame_with_cuts(Direction direction, const std::string& stream,
                                    std::vector<size_t> cuts, FramerOptions options = {}) {
  BufferingFramer framer(direction, options);
  std::vector<Framed> out;
  cuts.push_back(stream.size());
  size_t pos = 0;
  for (size_t cut : cuts) {
    if (cut < pos) continue;
    framer.feed(as_bytes(std::string_view(stream).substr(pos, cut - pos)));
    pos = cut;
    while (true) {
      FrameResult r = framer.next();
      if (r.status == FrameStatus::kNeedMore) break;
      if (r.status == FrameStatus::kError) {
        out.push_back({r.status, r.error.type, StartupKind::kNone, "", r.error.code});
        return out;
      }
      out.push_back({r.status, r.message.type, r.message.startup, str(r.message.bytes),
                     FrameErrorCode::kNone});
    }
  }
  return out;
}

std::vector<size_t> every_byte(size_t n) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < n; ++i) cuts.push_back(i);
  return cuts;
}

std::vector<size_t> random_cuts(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<size_t> cuts;
  if (n < 2) return cuts;
  std::uniform_int_distribution<size_t> dist(1, n - 1);
  for (int i = 0; i < 8; ++i) cuts.push_back(dist(rng));
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

// The session engine's way: a caller-owned buffer, read() in fixed chunks, compaction.
std::vector<Framed> frame_caller_buffer(Direction direction, const std::string& stream,
                                        size_t chunk) {
  Framer framer(direction);
  std::vector<uint8_t> buf;
  std::vector<Framed> out;
  for (size_t pos = 0; pos < stream.size(); pos += chunk) {
    std::string_view piece = std::string_view(stream).substr(pos, chunk);
    buf.insert(buf.end(), piece.begin(), piece.end());
    size_t start = 0;
    while (true) {
      FrameResult r = framer.next(Bytes(buf).subspan(start));
      if (r.status == FrameStatus::kNeedMore) break;
      if (r.status == FrameStatus::kError) {
        out.push_back({r.status, r.error.type, StartupKind::kNone, "", r.error.code});
        return out;
      }
      // Zero copy: the view points into the caller's buffer.
      EXPECT_EQ(r.message.bytes.data(), buf.data() + start);
      out.push_back({r.status, r.message.type, r.message.startup, str(r.message.bytes),
                     FrameErrorCode::kNone});
      start += r.consumed;
    }
    buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(start));
  }
  return out;
}

struct StreamCase {
  std::string name;
  Direction direction;
  std::string stream;
  size_t expected_messages;
  FrameErrorCode final_error = FrameErrorCode::kNone;
};

void PrintTo(const StreamCase& c, std::ostream* os) { *os << c.name; }

std::string frontend_session() {
  std::string s;
  const Parameter params[] = {{"user", "app"}, {"database", "demo"}};
  append_startup_message(s, params);
  append_password_message(s, "secret");
  append_query(s, "SELECT 1; SELECT 2");
  append_parse(s, "s1", "SELECT $1::int", std::vector<uint32_t>{23});
  const std::optional<std::string_view> values[] = {"42"};
  append_bind(s, "", "s1", {}, values, {});
  append_describe(s, 'P', "");
  append_execute(s, "", 0);
  append_sync(s);
  append_flush(s);
  append_copy_data(s, std::string(3000, 'x'));
  append_copy_done(s);
  append_close(s, 'S', "s1");
  append_terminate(s);
  return s;
}

std::string frontend_ssl_then_startup() {
  std::string s;
  append_ssl_request(s);
  append_gssenc_request(s);
  const Parameter params[] = {{"user", "app"}};
  append_startup_message(s, params);
  append_query(s, "");
  return s;
}

std::string backend_session() {
  std::string s;
  append_authentication_cleartext_password(s);
  append_authentication_ok(s);
  append_parameter_status(s, "server_version", "15.0");
  append_backend_key_data(s, 1234, 5678);
  append_ready_for_query(s, 'I');
  FieldDescription f{"id", 16384, 1, 23, 4, -1, 0};
  append_row_description(s, std::span<const FieldDescription>(&f, 1));
  for (int i = 0; i < 20; ++i) {
    const std::optional<std::string_view> cols[] = {std::to_string(i)};
    append_data_row(s, cols);
  }
  append_command_complete(s, "SELECT 20");
  append_notice_response(s, "NOTICE", "00000", "hello");
  append_error_response(s, "ERROR", "42601", "syntax error");
  append_ready_for_query(s, 'E');
  return s;
}

std::vector<StreamCase> stream_cases() {
  std::vector<StreamCase> cases;
  cases.push_back(
      {"FrontendStartupAndExtendedQuery", Direction::kFrontend, frontend_session(), 13});
  cases.push_back({"FrontendSslThenStartup", Direction::kFrontend, frontend_ssl_then_startup(), 4});
  {
    std::string s;
    append_cancel_request(s, 1, 2);
    cases.push_back({"FrontendCancelRequest", Direction::kFrontend, s, 1});
    s += "x";
    cases.push_back({"FrontendBytesAfterCancelRequestAreRejected", Direction::kFrontend, s, 1,
                     FrameErrorCode::kDataAfterCancelRequest});
  }
  cases.push_back({"BackendSessionWithRows", Direction::kBackend, backend_session(), 30});
  {
    std::string s = backend_session();
    s += std::string("\x01\x00\x00\x00\x04", 5);  // invalid backend type byte
    cases.push_back({"BackendStreamEndingInGarbage", Direction::kBackend, s, 30,
                     FrameErrorCode::kInvalidMessageType});
  }
  {
    std::string s = frontend_session();
    s.insert(s.size() - 5, std::string("Q\x00\x00\x00\x02", 5));  // length 2 < 4
    cases.push_back({"FrontendStreamWithShortLength", Direction::kFrontend, s, 12,
                     FrameErrorCode::kLengthTooSmall});
  }
  return cases;
}

class SplitInvarianceTest : public ::testing::TestWithParam<StreamCase> {};

TEST_P(SplitInvarianceTest, SameResultWholeByteByByteAndAtRandomSplits) {
  const StreamCase& c = GetParam();
  std::vector<Framed> whole = frame_with_cuts(c.direction, c.stream, {});
  size_t messages = 0;
  for (const Framed& f : whole) messages += f.status == FrameStatus::kMessage;
  EXPECT_EQ(messages, c.expected_messages);
  if (c.final_error == FrameErrorCode::kNone) {
    ASSERT_FALSE(whole.empty());
    EXPECT_EQ(whole.back().status, FrameStatus::kMessage);
    std::string joined;
    for (const Framed& f : whole) joined += f.bytes;
    EXPECT_EQ(joined, c.stream);  // every byte accounted for, in order
  } else {
    ASSERT_FALSE(whole.empty());
    EXPECT_EQ(whole.back().status, FrameStatus::kError);
    EXPECT_EQ(whole.back().error, c.final_error);
  }
  EXPECT_EQ(frame_with_cuts(c.direction, c.stream, every_byte(c.stream.size())), whole);
  for (unsigned seed = 1; seed <= 20; ++seed) {
    EXPECT_EQ(frame_with_cuts(c.direction, c.stream, random_cuts(c.stream.size(), seed)), whole)
        << "seed " << seed;
  }
  for (size_t chunk : {1u, 3u, 7u, 64u, 4096u}) {
    EXPECT_EQ(frame_caller_buffer(c.direction, c.stream, chunk), whole) << "chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(Streams, SplitInvarianceTest, ::testing::ValuesIn(stream_cases()),
                         [](const auto& info) { return info.param.name; });

// Streams from the fuzz seed corpus, most captured from real psql/pgbench sessions against
// PostgreSQL 15 (first byte: 0 = client to server, 1 = server to client).
std::vector<StreamCase> captured_cases() {
  std::vector<StreamCase> cases;
  std::filesystem::path dir =
      std::filesystem::path(PGW_SOURCE_ROOT) / "tests/fuzz/corpus/fuzz_pgwire";
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    bool frontend = name.ends_with("_frontend");
    if (!frontend && !name.ends_with("_backend")) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string data = ss.str();
    // Skip hand-made seeds: split patterns (first byte > 1) and deliberately bad streams.
    if (data.empty() || (data[0] != 0 && data[0] != 1) || name.starts_with("bad_")) continue;
    std::string clean;
    for (char ch : name) clean += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
    cases.push_back(
        {clean, frontend ? Direction::kFrontend : Direction::kBackend, data.substr(1), 0});
  }
  std::sort(cases.begin(), cases.end(),
            [](const StreamCase& a, const StreamCase& b) { return a.name < b.name; });
  return cases;
}

class CapturedStreamTest : public ::testing::TestWithParam<StreamCase> {};

TEST_P(CapturedStreamTest, RealSessionFramesAndEveryMessageValidatesAtAnySplit) {
  const StreamCase& c = GetParam();
  std::vector<Framed> whole = frame_with_cuts(c.direction, c.stream, {});
  std::string joined;
  for (const Framed& f : whole) {
    EXPECT_EQ(f.status, FrameStatus::kMessage) << static_cast<int>(f.error);
    joined += f.bytes;
  }
  EXPECT_EQ(joined, c.stream);

  BufferingFramer framer(c.direction);
  framer.feed(as_bytes(c.stream));
  for (FrameResult r = framer.next(); r.status == FrameStatus::kMessage; r = framer.next()) {
    FrameError e = validate_message(c.direction, r.message);
    EXPECT_TRUE(e.ok()) << e.message();
  }
  EXPECT_EQ(frame_with_cuts(c.direction, c.stream, every_byte(c.stream.size())), whole);
  for (unsigned seed = 1; seed <= 5; ++seed) {
    EXPECT_EQ(frame_with_cuts(c.direction, c.stream, random_cuts(c.stream.size(), seed)), whole);
  }
}

INSTANTIATE_TEST_SUITE_P(Captured, CapturedStreamTest, ::testing::ValuesIn(captured_cases()),
                         [](const auto& info) { return info.param.name; });

// ----- malformed input -------------------------------------------------------------------------

std::string be32(uint32_t v) {
  std::string s;
  append_uint32(s, v);
  return s;
}

struct BadCase {
  std::string name;
  Direction direction;
  bool skip_startup;  // frontend: send a valid StartupMessage first (normal phase)
  std::string bytes;
  FrameErrorCode code;
  std::string sqlstate;
  uint32_t max_message_bytes = kDefaultMaxMessageBytes;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

std::vector<BadCase> bad_cases() {
  return {
      {"TypedLengthBelowFourIsRejected", Direction::kFrontend, true, "Q" + be32(3),
       FrameErrorCode::kLengthTooSmall, "08P01"},
      {"TypedLengthOverDefaultMaximumIsRejected", Direction::kBackend, false,
       "D" + be32(kDefaultMaxMessageBytes + 1), FrameErrorCode::kMessageTooLarge, "54000"},
      {"TypedLengthOverConfiguredMaximumIsRejected", Direction::kFrontend, true,
       "Q" + be32(1025) + "SELECT", FrameErrorCode::kMessageTooLarge, "54000", 1024},
      {"HugeLengthNearFourGigabytesIsRejected", Direction::kBackend, false, "D" + be32(0xffffffff),
       FrameErrorCode::kMessageTooLarge, "54000"},
      {"StartupPacketOverTenThousandBytesIsRejected", Direction::kFrontend, false,
       be32(10001) + be32(kProtocolVersion3), FrameErrorCode::kStartupTooLarge, "54000"},
      {"StartupPacketShorterThanEightBytesIsRejected", Direction::kFrontend, false, be32(7),
       FrameErrorCode::kLengthTooSmall, "08P01"},
      {"ProtocolVersionTwoIsUnsupported", Direction::kFrontend, false,
       be32(9) + be32(2u << 16) + std::string(1, '\0'), FrameErrorCode::kUnsupportedProtocol,
       "0A000"},
      {"ProtocolVersionFourIsUnsupported", Direction::kFrontend, false,
       be32(9) + be32(4u << 16) + std::string(1, '\0'), FrameErrorCode::kUnsupportedProtocol,
       "0A000"},
      {"SslRequestWithWrongLengthIsRejected", Direction::kFrontend, false,
       be32(12) + be32(kSslRequestCode) + be32(0), FrameErrorCode::kInvalidRequestLength, "08P01"},
      {"CancelRequestWithWrongLengthIsRejected", Direction::kFrontend, false,
       be32(12) + be32(kCancelRequestCode) + be32(0), FrameErrorCode::kInvalidRequestLength,
       "08P01"},
      {"BackendTypeByteFromFrontendIsRejected", Direction::kFrontend, true, "Z" + be32(5) + "I",
       FrameErrorCode::kInvalidMessageType, "08P01"},
      {"FrontendTypeByteFromBackendIsRejected", Direction::kBackend, false,
       "Q" + be32(5) + std::string(1, '\0'), FrameErrorCode::kInvalidMessageType, "08P01"},
      {"StartupPacketInNormalPhaseIsRejected", Direction::kFrontend, true,
       be32(8) + be32(kSslRequestCode), FrameErrorCode::kInvalidMessageType, "08P01"},
      {"StartupPacketToBackendFramerIsRejected", Direction::kBackend, false,
       be32(8) + be32(kSslRequestCode), FrameErrorCode::kInvalidMessageType, "08P01"},
  };
}

class MalformedStreamTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(MalformedStreamTest, YieldsTypedErrorWithSqlstateAndStaysFailed) {
  const BadCase& c = GetParam();
  std::string stream;
  if (c.skip_startup) {
    const Parameter params[] = {{"user", "u"}};
    append_startup_message(stream, params);
  }
  stream += c.bytes;
  FramerOptions options;
  options.max_message_bytes = c.max_message_bytes;
  for (const auto& cuts : {std::vector<size_t>{}, every_byte(stream.size())}) {
    std::vector<Framed> got = frame_with_cuts(c.direction, stream, cuts, options);
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(got.back().status, FrameStatus::kError);
    EXPECT_EQ(got.back().error, c.code);
  }

  BufferingFramer framer(c.direction, options);
  framer.feed(as_bytes(stream));
  FrameResult r = framer.next();
  if (c.skip_startup) r = framer.next();
  ASSERT_EQ(r.status, FrameStatus::kError);
  EXPECT_EQ(r.error.sqlstate(), c.sqlstate);
  EXPECT_FALSE(r.error.message().empty());
  EXPECT_EQ(r.error.to_status().sqlstate(), c.sqlstate);
  EXPECT_TRUE(framer.framer().failed());
  EXPECT_EQ(framer.buffered(), 0u);

  // One-way: valid input afterwards is dropped and the same error returned.
  std::string valid;
  append_sync(valid);
  framer.feed(as_bytes(valid));
  EXPECT_EQ(framer.buffered(), 0u);
  FrameResult again = framer.next();
  EXPECT_EQ(again.status, FrameStatus::kError);
  EXPECT_EQ(again.error, r.error);
}

INSTANTIATE_TEST_SUITE_P(BadInput, MalformedStreamTest, ::testing::ValuesIn(bad_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(FramerTest, InvalidTypeByteFailsBeforeTheLengthArrives) {
  Framer framer(Direction::kBackend);
  const uint8_t q = 'Q';
  FrameResult r = framer.next(Bytes(&q, 1));
  EXPECT_EQ(r.status, FrameStatus::kError);
  EXPECT_EQ(r.error.code, FrameErrorCode::kInvalidMessageType);
  EXPECT_EQ(r.error.type, 'Q');
}

TEST(FramerTest, OversizedLengthFailsBeforeTheBodyIsBuffered) {
  Framer framer(Direction::kBackend);
  std::string header = "D" + be32(100u << 20);
  FrameResult r = framer.next(as_bytes(header));
  EXPECT_EQ(r.status, FrameStatus::kError);
  EXPECT_EQ(r.error.code, FrameErrorCode::kMessageTooLarge);
  EXPECT_EQ(r.error.value, 100u << 20);
}

TEST(FramerTest, NeedMoreReportsHeaderThenWholeMessageSize) {
  Framer framer(Direction::kBackend);
  std::string msg;
  append_command_complete(msg, "SELECT 1");
  FrameResult r = framer.next(as_bytes(msg).first(2));
  EXPECT_EQ(r.status, FrameStatus::kNeedMore);
  EXPECT_EQ(r.need, 5u);
  r = framer.next(as_bytes(msg).first(6));
  EXPECT_EQ(r.status, FrameStatus::kNeedMore);
  EXPECT_EQ(r.need, msg.size());
  r = framer.next(as_bytes(msg));
  EXPECT_EQ(r.status, FrameStatus::kMessage);
  EXPECT_EQ(r.consumed, msg.size());
  EXPECT_EQ(r.message.type, 'C');
  EXPECT_EQ(as_string_view(r.message.body), std::string_view("SELECT 1\0", 9));
}

TEST(FramerTest, FrontendPhasesFollowTheStartupSequence) {
  Framer framer(Direction::kFrontend);
  EXPECT_EQ(framer.phase(), Framer::Phase::kStartup);
  std::string ssl;
  append_ssl_request(ssl);
  FrameResult r = framer.next(as_bytes(ssl));
  ASSERT_EQ(r.status, FrameStatus::kMessage);
  EXPECT_EQ(r.message.startup, StartupKind::kSslRequest);
  EXPECT_EQ(r.message.startup_code, kSslRequestCode);
  EXPECT_EQ(framer.phase(), Framer::Phase::kStartup);

  std::string startup;
  const Parameter params[] = {{"user", "u"}, {"database", "d"}};
  append_startup_message(startup, params, (3u << 16) | 2);  // 3.2: framed, minor negotiated
  r = framer.next(as_bytes(startup));
  ASSERT_EQ(r.status, FrameStatus::kMessage);
  EXPECT_EQ(r.message.startup, StartupKind::kStartupMessage);
  EXPECT_EQ(r.message.startup_code, (3u << 16) | 2);
  EXPECT_EQ(framer.phase(), Framer::Phase::kNormal);
}

TEST(FramerTest, CancelRequestEndsTheStream) {
  Framer framer(Direction::kFrontend);
  std::string cancel;
  append_cancel_request(cancel, 77, 88);
  FrameResult r = framer.next(as_bytes(cancel));
  ASSERT_EQ(r.status, FrameStatus::kMessage);
  EXPECT_EQ(r.message.startup, StartupKind::kCancel);
  EXPECT_EQ(framer.phase(), Framer::Phase::kCancelled);
  EXPECT_EQ(framer.next(Bytes()).status, FrameStatus::kNeedMore);
}

TEST(FramerTest, FrameErrorBecomesAFatalErrorResponseWithItsSqlstate) {
  FrameError error{FrameErrorCode::kMessageTooLarge, 'Q', 1u << 30};
  std::string out;
  append_frame_error_response(out, error);
  Framer framer(Direction::kBackend);
  FrameResult r = framer.next(as_bytes(out));
  ASSERT_EQ(r.status, FrameStatus::kMessage);
  ASSERT_EQ(r.consumed, out.size());
  ErrorResponse e;
  ASSERT_TRUE(parse_message(r.message, &e).ok());
  EXPECT_EQ(e.sqlstate(), "54000");
  EXPECT_EQ(e.severity(), "FATAL");
  EXPECT_NE(e.message().find("1073741824"), std::string_view::npos);
  EXPECT_NE(e.message().find("'Q'"), std::string_view::npos);
}

TEST(FramerTest, ErrorNamesAreDistinct) {
  std::set<std::string_view> names;
  for (int c = 0; c <= static_cast<int>(FrameErrorCode::kInvalidFieldValue); ++c) {
    FrameError e{static_cast<FrameErrorCode>(c), 'X', 1};
    EXPECT_TRUE(names.insert(e.name()).second) << e.name();
    if (c != 0) {
      EXPECT_FALSE(e.sqlstate().empty());
    }
  }
}

}  // namespace
}  // namespace pgwarden::pgwire
