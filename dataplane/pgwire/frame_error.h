// FrameError: why bytes from a peer are not a valid protocol 3.0 message.
//
// A FrameError is a small value (no allocation) carried by the framer and the message parsers.
// Every error maps to the SQLSTATE a gateway puts in the ErrorResponse it sends before closing
// the connection (08P01 protocol_violation, 54000 program_limit_exceeded, 0A000
// feature_not_supported), and to a message a human can act on (built only on the error path).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::pgwire {

enum class FrameErrorCode : uint8_t {
  kNone = 0,
  kLengthTooSmall,          // Int32 length below the minimum for the message     (08P01)
  kMessageTooLarge,         // length above FramerOptions::max_message_bytes       (54000)
  kStartupTooLarge,         // startup packet above FramerOptions::max_startup_bytes (54000)
  kInvalidMessageType,      // type byte not valid in this phase and direction    (08P01)
  kUnsupportedProtocol,     // StartupMessage version other than 3.x              (0A000)
  kInvalidRequestLength,    // SSLRequest/GSSENCRequest/CancelRequest of wrong length (08P01)
  kDataAfterCancelRequest,  // bytes after a CancelRequest                        (08P01)
  kTruncatedField,          // a field runs past the end of the message           (08P01)
  kMissingNul,              // a String without its terminating NUL               (08P01)
  kTrailingBytes,           // bytes left after the last field                    (08P01)
  kInvalidFieldValue,       // e.g. negative count, length < -1, format not 0/1   (08P01)
};

struct FrameError {
  FrameErrorCode code = FrameErrorCode::kNone;
  uint8_t type = 0;    // message type byte concerned; 0 for startup-phase packets
  uint32_t value = 0;  // offending length, protocol version or field value

  bool ok() const { return code == FrameErrorCode::kNone; }
  // SQLSTATE for the ErrorResponse ("08P01", "54000", "0A000"; "" when ok()).
  std::string_view sqlstate() const;
  // Stable snake_case name for counters and logs, e.g. "message_too_large".
  std::string_view name() const;
  // Human message, e.g. "invalid message length 2 for message type 'Q'".
  std::string message() const;
  // Status with the SQLSTATE (kResourceExhausted for size caps, else kInvalidArgument).
  Status to_status() const;
};

inline bool operator==(const FrameError& a, const FrameError& b) {
  return a.code == b.code && a.type == b.type && a.value == b.value;
}

// Appends ErrorResponse ('E', severity FATAL: a framing error ends the connection) carrying
// the error's SQLSTATE and message.
void append_frame_error_response(std::string& out, const FrameError& error);

}  // namespace pgwarden::pgwire
