#include "dataplane/pgwire/frame_error.h"

#include "dataplane/pgwire/messages.h"

namespace pgwarden::pgwire {

namespace {
// "'Q'" for printable type bytes, "0x07" otherwise, "startup packet" for type 0.
std::string describe_type(uint8_t type) {
  if (type == 0) return "startup packet";
  if (type >= 0x20 && type < 0x7f) return std::string("message type '") + char(type) + "'";
  static const char kHex[] = "0123456789abcdef";
  return std::string("message type 0x") + kHex[type >> 4] + kHex[type & 0xf];
}
}  // namespace

std::string_view FrameError::sqlstate() const {
  switch (code) {
    case FrameErrorCode::kNone:
      return "";
    case FrameErrorCode::kMessageTooLarge:
    case FrameErrorCode::kStartupTooLarge:
      return "54000";  // program_limit_exceeded
    case FrameErrorCode::kUnsupportedProtocol:
      return "0A000";  // feature_not_supported, as PostgreSQL answers an unknown version
    default:
      return "08P01";  // protocol_violation
  }
}

std::string_view FrameError::name() const {
  switch (code) {
    case FrameErrorCode::kNone:
      return "none";
    case FrameErrorCode::kLengthTooSmall:
      return "length_too_small";
    case FrameErrorCode::kMessageTooLarge:
      return "message_too_large";
    case FrameErrorCode::kStartupTooLarge:
      return "startup_too_large";
    case FrameErrorCode::kInvalidMessageType:
      return "invalid_message_type";
    case FrameErrorCode::kUnsupportedProtocol:
      return "unsupported_protocol";
    case FrameErrorCode::kInvalidRequestLength:
      return "invalid_request_length";
    case FrameErrorCode::kDataAfterCancelRequest:
      return "data_after_cancel_request";
    case FrameErrorCode::kTruncatedField:
      return "truncated_field";
    case FrameErrorCode::kMissingNul:
      return "missing_nul";
    case FrameErrorCode::kTrailingBytes:
      return "trailing_bytes";
    case FrameErrorCode::kInvalidFieldValue:
      return "invalid_field_value";
  }
  return "unknown";
}

std::string FrameError::message() const {
  std::string what = describe_type(type);
  std::string v = std::to_string(value);
  switch (code) {
    case FrameErrorCode::kNone:
      return "no error";
    case FrameErrorCode::kLengthTooSmall:
      return "invalid length " + v + " of " + what + " (below the minimum)";
    case FrameErrorCode::kMessageTooLarge:
      return "invalid length " + v + " of " + what + ": exceeds the gateway's message size limit";
    case FrameErrorCode::kStartupTooLarge:
      return "invalid length " + v + " of startup packet: exceeds the limit";
    case FrameErrorCode::kInvalidMessageType:
      return "invalid frontend/backend " + what + " in this protocol state";
    case FrameErrorCode::kUnsupportedProtocol:
      return "unsupported frontend protocol " + std::to_string(value >> 16) + "." +
             std::to_string(value & 0xffff) + ": the gateway supports 3.0";
    case FrameErrorCode::kInvalidRequestLength:
      return "invalid length " + v + " of SSL, GSSAPI encryption or cancel request";
    case FrameErrorCode::kDataAfterCancelRequest:
      return "unexpected data after a cancel request";
    case FrameErrorCode::kTruncatedField:
      return "invalid " + what + ": a field runs past the end of the message";
    case FrameErrorCode::kMissingNul:
      return "invalid " + what + ": a string is not NUL-terminated";
    case FrameErrorCode::kTrailingBytes:
      return "invalid " + what + ": " + v + " unexpected bytes after the last field";
    case FrameErrorCode::kInvalidFieldValue:
      return "invalid " + what + ": invalid field value " + v;
  }
  return "invalid message";
}

Status FrameError::to_status() const {
  if (ok()) return Status::ok();
  StatusCode status_code =
      (code == FrameErrorCode::kMessageTooLarge || code == FrameErrorCode::kStartupTooLarge)
          ? StatusCode::kResourceExhausted
          : StatusCode::kInvalidArgument;
  return Status(status_code, message(), std::string(sqlstate()));
}

void append_frame_error_response(std::string& out, const FrameError& error) {
  append_error_response(out, "FATAL", error.sqlstate(), error.message());
}

}  // namespace pgwarden::pgwire
