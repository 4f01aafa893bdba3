// libFuzzer target for the pgwire codec: the framer in both directions and every parser.
//
// Input: byte 0 selects the direction (bit 0: 0 frontend, 1 backend) and a split pattern
// (bits 1-7); the rest is the byte stream. The stream is framed whole and again fed in chunks;
// both must give the same messages (split invariance) or the target traps. Every framed
// message is run through the parsers valid for its type, and every parser also runs on the raw
// stream, so parsers see bytes the framer would never hand them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/pgwire/framer.h"
#include "dataplane/pgwire/messages.h"

namespace pgwarden::pgwire {
namespace {

volatile size_t g_sink;  // keeps iteration results alive

template <typename T>
void walk(const ListView<T>& list) {
  size_t n = 0;
  for (const T& v : list) {
    (void)v;
    ++n;
  }
  if (n != list.size()) __builtin_trap();
  g_sink = g_sink + n;
}

template <typename T>
void try_parse(Bytes body) {
  T out{};
  FrameError e = parse(body, &out);
  if (!e.ok() && (e.sqlstate().empty() || e.message().empty())) __builtin_trap();
  if (!e.ok()) return;
  if constexpr (requires { out.parameters; }) walk(out.parameters);
  if constexpr (requires { out.params; }) walk(out.params);
  if constexpr (requires { out.param_formats; }) walk(out.param_formats);
  if constexpr (requires { out.result_formats; }) walk(out.result_formats);
  if constexpr (requires { out.param_types; }) walk(out.param_types);
  if constexpr (requires { out.args; }) walk(out.args);
  if constexpr (requires { out.columns; }) walk(out.columns);
  if constexpr (requires { out.fields; }) walk(out.fields);
  if constexpr (requires { out.types; }) walk(out.types);
  if constexpr (requires { out.column_formats; }) walk(out.column_formats);
  if constexpr (requires { out.mechanisms; }) walk(out.mechanisms);
  if constexpr (requires { out.unrecognized_options; }) walk(out.unrecognized_options);
  if constexpr (requires { out.sqlstate(); }) g_sink = g_sink + out.sqlstate().size();
}

void parse_all(Bytes b) {
  try_parse<StartupMessage>(b);
  try_parse<SslRequest>(b);
  try_parse<GssEncRequest>(b);
  try_parse<CancelRequest>(b);
  try_parse<PasswordMessage>(b);
  try_parse<SaslInitialResponse>(b);
  try_parse<SaslResponse>(b);
  try_parse<Query>(b);
  try_parse<Parse>(b);
  try_parse<Bind>(b);
  try_parse<Describe>(b);
  try_parse<Close>(b);
  try_parse<Execute>(b);
  try_parse<Sync>(b);
  try_parse<CopyData>(b);
  try_parse<CopyFail>(b);
  try_parse<FunctionCall>(b);
  try_parse<Authentication>(b);
  try_parse<ParameterStatus>(b);
  try_parse<BackendKeyData>(b);
  try_parse<ReadyForQuery>(b);
  try_parse<RowDescription>(b);
  try_parse<DataRow>(b);
  try_parse<CommandComplete>(b);
  try_parse<ErrorResponse>(b);
  try_parse<NoticeResponse>(b);
  try_parse<ParameterDescription>(b);
  try_parse<CopyInResponse>(b);
  try_parse<NotificationResponse>(b);
  try_parse<NegotiateProtocolVersion>(b);
  try_parse<FunctionCallResponse>(b);
}

void parse_message_by_type(Direction d, const Message& m) {
  Bytes b = m.body;
  if (m.type == 0) {
    switch (m.startup) {
      case StartupKind::kStartupMessage:
        return try_parse<StartupMessage>(b);
      case StartupKind::kSslRequest:
        return try_parse<SslRequest>(b);
      case StartupKind::kGssEncRequest:
        return try_parse<GssEncRequest>(b);
      case StartupKind::kCancel:
        return try_parse<CancelRequest>(b);
      case StartupKind::kNone:
        __builtin_trap();
    }
  }
  if (d == Direction::kFrontend) {
    switch (m.type) {
      case 'p':
        try_parse<PasswordMessage>(b);
        try_parse<SaslInitialResponse>(b);
        return try_parse<SaslResponse>(b);
      case 'Q':
        return try_parse<Query>(b);
      case 'P':
        return try_parse<Parse>(b);
      case 'B':
        return try_parse<Bind>(b);
      case 'D':
        return try_parse<Describe>(b);
      case 'C':
        return try_parse<Close>(b);
      case 'E':
        return try_parse<Execute>(b);
      case 'S':
        return try_parse<Sync>(b);
      case 'H':
        return try_parse<Flush>(b);
      case 'X':
        return try_parse<Terminate>(b);
      case 'd':
        return try_parse<CopyData>(b);
      case 'c':
        return try_parse<CopyDone>(b);
      case 'f':
        return try_parse<CopyFail>(b);
      case 'F':
        return try_parse<FunctionCall>(b);
      default:
        __builtin_trap();  // the framer admitted a type it should have rejected
    }
  }
  switch (m.type) {
    case 'R':
      return try_parse<Authentication>(b);
    case 'S':
      return try_parse<ParameterStatus>(b);
    case 'K':
      return try_parse<BackendKeyData>(b);
    case 'Z':
      return try_parse<ReadyForQuery>(b);
    case 'T':
      return try_parse<RowDescription>(b);
    case 'D':
      return try_parse<DataRow>(b);
    case 'C':
      return try_parse<CommandComplete>(b);
    case 'I':
      return try_parse<EmptyQueryResponse>(b);
    case 'E':
      return try_parse<ErrorResponse>(b);
    case 'N':
      return try_parse<NoticeResponse>(b);
    case '1':
      return try_parse<ParseComplete>(b);
    case '2':
      return try_parse<BindComplete>(b);
    case '3':
      return try_parse<CloseComplete>(b);
    case 'n':
      return try_parse<NoData>(b);
    case 's':
      return try_parse<PortalSuspended>(b);
    case 't':
      return try_parse<ParameterDescription>(b);
    case 'G':
      return try_parse<CopyInResponse>(b);
    case 'H':
      return try_parse<CopyOutResponse>(b);
    case 'W':
      return try_parse<CopyBothResponse>(b);
    case 'A':
      return try_parse<NotificationResponse>(b);
    case 'v':
      return try_parse<NegotiateProtocolVersion>(b);
    case 'V':
      return try_parse<FunctionCallResponse>(b);
    case 'd':
      return try_parse<CopyData>(b);
    case 'c':
      return try_parse<CopyDone>(b);
    default:
      __builtin_trap();
  }
}

// Frames `stream`, feeding chunks of sizes from `pattern` (0 = whole); returns the message
// bytes, then the error name if the stream ended in one.
std::vector<std::string> frame(Direction d, Bytes stream, uint8_t pattern, bool parse) {
  FramerOptions options;
  options.max_message_bytes = 1 << 20;
  BufferingFramer framer(d, options);
  std::vector<std::string> out;
  size_t pos = 0;
  size_t step = 0;
  while (pos < stream.size() || step == 0) {
    size_t chunk = pattern == 0 ? stream.size() : 1 + ((pattern * (step + 7)) % 13);
    chunk = std::min(chunk, stream.size() - pos);
    framer.feed(stream.subspan(pos, chunk));
    pos += chunk;
    ++step;
    while (true) {
      FrameResult r = framer.next();
      if (r.status == FrameStatus::kNeedMore) break;
      if (r.status == FrameStatus::kError) {
        if (!framer.framer().failed() || framer.buffered() != 0) __builtin_trap();
        out.push_back(std::string(r.error.name()));
        return out;
      }
      if (r.consumed != r.message.bytes.size()) __builtin_trap();
      if (parse) parse_message_by_type(d, r.message);
      out.push_back(std::string(as_string_view(r.message.bytes)));
    }
    if (framer.buffered() > options.max_message_bytes + 5) __builtin_trap();
  }
  return out;
}

}  // namespace
}  // namespace pgwarden::pgwire

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pgwarden::pgwire;
  if (size < 1) return 0;
  Direction d = (data[0] & 1) ? Direction::kBackend : Direction::kFrontend;
  uint8_t pattern = static_cast<uint8_t>(data[0] >> 1);
  Bytes stream(data + 1, size - 1);
  std::vector<std::string> whole = frame(d, stream, 0, true);
  if (pattern != 0 && frame(d, stream, pattern, false) != whole) __builtin_trap();
  parse_all(stream);
  return 0;
}
