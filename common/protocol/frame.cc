#include "common/protocol/frame.h"

namespace pgwarden::protocol {

namespace {

Status bad_frame(std::string msg) { return invalid_argument(std::move(msg), "08P01"); }

// Max nesting of [ and { outside strings; stops counting once past the limit.
bool depth_ok(std::string_view s) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

}  // namespace

Status append_frame(std::string& out, std::string_view payload, size_t max_bytes) {
  if (payload.empty() || payload.size() > max_bytes) {
    return resource_exhausted("frame payload of " + std::to_string(payload.size()) +
                              " bytes is outside 1.." + std::to_string(max_bytes));
  }
  uint32_t n = static_cast<uint32_t>(payload.size());
  out.push_back(static_cast<char>(n >> 24));
  out.push_back(static_cast<char>(n >> 16));
  out.push_back(static_cast<char>(n >> 8));
  out.push_back(static_cast<char>(n));
  out.append(payload.data(), payload.size());
  return Status::ok();
}

Status append_message(std::string& out, const json& message) {
  // Replace invalid UTF-8 rather than throw: strings may come from SQL text.
  return append_frame(out, message.dump(-1, ' ', false, json::error_handler_t::replace));
}

Result<std::optional<std::string>> FrameDecoder::next() {
  if (failed()) return bad_frame("stream is out of sync after a bad frame");
  if (buffered() < 4) return std::optional<std::string>();
  auto u = reinterpret_cast<const unsigned char*>(buf_.data() + pos_);
  uint32_t n = (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | u[3];
  if (n == 0) {
    error_ = FrameError::kEmptyFrame;
    return bad_frame("frame length 0");
  }
  if (n > max_bytes_) {
    error_ = FrameError::kFrameTooLarge;
    return bad_frame("frame length " + std::to_string(n) + " exceeds " +
                     std::to_string(max_bytes_) + " bytes");
  }
  if (buffered() < 4 + size_t{n}) return std::optional<std::string>();
  std::string payload = buf_.substr(pos_ + 4, n);
  pos_ += 4 + n;
  // Compact once the consumed prefix dominates, keeping feed() amortised O(1).
  if (pos_ > 65536 && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return std::optional<std::string>(std::move(payload));
}

Result<json> parse_payload(std::string_view payload) {
  if (!depth_ok(payload)) return bad_frame("JSON nested deeper than 32 levels");
  json j = json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad_frame("frame is not valid JSON");
  if (!j.is_object()) return bad_frame("frame is not a JSON object");
  return j;
}

}  // namespace pgwarden::protocol
