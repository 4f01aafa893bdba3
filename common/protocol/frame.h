// dp <-> cp escalation protocol v1: framing. docs/protocol.md is the normative spec.
//
// A frame is a 4-byte big-endian length N (1 <= N <= kMaxFrameBytes) followed by N bytes of
// UTF-8 JSON holding one object. FrameDecoder is incremental (feed any split of the stream,
// get the same frames) and one-way: after a bad length it stays failed, because the stream
// is out of sync and the only safe action is to answer with an error and close.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::protocol {

using json = nlohmann::json;

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kMaxFrameBytes = 1 << 20;
// The admin API's replies to pgwardenctl on cp's admin socket may be larger: a replayed
// recording is one reply. Both ends of that channel opt in (FrameDecoder, append_frame).
inline constexpr size_t kMaxAdminReplyBytes = 64 << 20;
inline constexpr int kMaxJsonDepth = 32;

// Appends one frame carrying `payload` to `out`. REQUIRES: 1 <= payload.size() <= max_bytes
// (checked: returns resource_exhausted otherwise and appends nothing).
Status append_frame(std::string& out, std::string_view payload,
                    size_t max_bytes = kMaxFrameBytes);
// Serialises `message` and appends it as one frame.
Status append_message(std::string& out, const json& message);

enum class FrameError { kNone, kEmptyFrame, kFrameTooLarge };

class FrameDecoder {
 public:
  // Frames longer than `max_bytes` are refused (kFrameTooLarge).
  explicit FrameDecoder(size_t max_bytes = kMaxFrameBytes) : max_bytes_(max_bytes) {}
  // Appends stream bytes. Cheap; parsing happens in next().
  void feed(std::string_view bytes) { buf_.append(bytes.data(), bytes.size()); }
  // The next complete payload, nullopt if more bytes are needed, or an error (code
  // "bad_frame", see error()) after which the decoder stays failed. The length is
  // validated before any payload byte is buffered beyond the 4-byte header, so a hostile
  // length never makes the caller hold more than max_bytes + what it fed.
  Result<std::optional<std::string>> next();

  FrameError error() const { return error_; }
  bool failed() const { return error_ != FrameError::kNone; }
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  size_t max_bytes_;
  std::string buf_;
  size_t pos_ = 0;
  FrameError error_ = FrameError::kNone;
};

// Parses a frame payload: must be a JSON object nested at most kMaxJsonDepth deep (checked
// before parsing so deep nesting cannot exhaust the stack).
Result<json> parse_payload(std::string_view payload);

}  // namespace pgwarden::protocol
