// Framer: splits a protocol 3.0 byte stream into whole messages, incrementally.
//
// Protocol reference: https://www.postgresql.org/docs/15/protocol-message-formats.html
//
// The framer does no I/O and owns no buffer. The caller keeps the stream's unconsumed bytes
// contiguous (read() appends, the caller compacts) and calls `next(input)` with them:
//
//   kMessage   `consumed` bytes at the front of `input` are one whole message; `message`
//              views them (valid while the caller's bytes stay put). Forward, rewrite or parse
//              it, then drop `consumed` bytes and call again.
//   kNeedMore  no whole message yet; `need` is the total byte count the first message needs
//              once known (header already validated), else the header size. Read more.
//   kError     the stream is invalid; `error` says why. The framer is now failed for good
//              (every later call returns the same error without reading input): send
//              `append_frame_error_response` and close.
//
// Validation happens before buffering: an invalid type byte fails as soon as that byte is
// seen, an invalid length as soon as its 4 bytes are seen, so no caller ever buffers towards a
// message that will be rejected (memory per connection ≤ max_message_bytes + 5).
//
// Direction:
//   kFrontend  client → server. Starts in the startup phase (packets without a type byte:
//              StartupMessage, SSLRequest, GSSENCRequest, CancelRequest). SSLRequest and
//              GSSENCRequest keep the startup phase (the StartupMessage follows, in TLS or not;
//              the caller does the TLS handshake between calls), StartupMessage 3.x moves to
//              the normal phase, CancelRequest ends the stream (kCancelled).
//   kBackend   server → client. Normal phase from the start. The single-byte answer to
//              SSLRequest/GSSENCRequest ('S'/'N'/'G') is not a message: read it before framing.
//
// Thread-safety: a Framer is per connection and not shared. `next` never allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dataplane/pgwire/frame_error.h"
#include "dataplane/pgwire/wire.h"

namespace pgwarden::pgwire {

enum class Direction : uint8_t { kFrontend, kBackend };

// Int32 request codes of startup-phase packets (the "protocol version" field).
inline constexpr uint32_t kProtocolVersion3 = 3u << 16;   // 196608 = 3.0
inline constexpr uint32_t kSslRequestCode = 80877103;     // 1234.5679
inline constexpr uint32_t kGssEncRequestCode = 80877104;  // 1234.5680
inline constexpr uint32_t kCancelRequestCode = 80877102;  // 1234.5678

inline constexpr uint32_t kDefaultMaxMessageBytes = 64u << 20;  // 64 MiB
inline constexpr uint32_t kDefaultMaxStartupBytes = 10000;      // PostgreSQL's own limit

struct FramerOptions {
  uint32_t max_message_bytes = kDefaultMaxMessageBytes;  // cap on a typed message's Int32 length
  uint32_t max_startup_bytes = kDefaultMaxStartupBytes;  // cap on a startup packet's length
};

enum class StartupKind : uint8_t { kNone, kStartupMessage, kSslRequest, kGssEncRequest, kCancel };

// A view of one whole message in the caller's buffer. No copies.
struct Message {
  uint8_t type = 0;                          // type byte; 0 for startup-phase packets
  StartupKind startup = StartupKind::kNone;  // which startup packet, when type == 0
  uint32_t startup_code = 0;                 // protocol version / request code, when type == 0
  Bytes bytes;                               // the whole message: [type] Int32 length, body
  Bytes body;  // after the Int32 length (startup packets: starts with the Int32 code)
};

enum class FrameStatus : uint8_t { kNeedMore, kMessage, kError };

struct FrameResult {
  FrameStatus status = FrameStatus::kNeedMore;
  size_t consumed = 0;  // bytes to drop from the front of input (kMessage only)
  size_t need = 0;      // kNeedMore: bytes the first message needs in total (see above)
  Message message;      // kMessage
  FrameError error;     // kError
};

class Framer {
 public:
  enum class Phase : uint8_t { kStartup, kNormal, kCancelled, kFailed };

  explicit Framer(Direction direction, FramerOptions options = {});

  // Frames the first message in `input` (see the file comment). Pure over `input`: calling it
  // twice with the same bytes gives the same answer, except that a kMessage result advances
  // the phase and a kError result fails the framer.
  FrameResult next(Bytes input);

  Direction direction() const { return direction_; }
  Phase phase() const { return phase_; }
  bool failed() const { return phase_ == Phase::kFailed; }
  const FrameError& error() const { return error_; }  // the error that failed the framer
  const FramerOptions& options() const { return options_; }

 private:
  FrameResult fail(FrameError error);
  FrameResult next_startup(Bytes input);
  FrameResult next_typed(Bytes input);

  Direction direction_;
  FramerOptions options_;
  Phase phase_;
  FrameError error_;
};

// True if `type` may start a message from this direction in the normal phase.
bool is_valid_message_type(Direction direction, uint8_t type);

// BufferingFramer: owns the buffer, for tests, tools and fuzzing (the session engine and
// packet layer use Framer on their own buffers). Not for the hot path: feed() may allocate.
class BufferingFramer {
 public:
  explicit BufferingFramer(Direction direction, FramerOptions options = {})
      : framer_(direction, options) {}

  // Appends bytes. Views returned by earlier `next` calls become invalid. Input offered after
  // the framer failed is dropped (nothing is buffered forever).
  void feed(Bytes data);
  // The next whole message, kNeedMore, or the (sticky) error. A kMessage view stays valid
  // until the next feed().
  FrameResult next();

  Framer& framer() { return framer_; }
  size_t buffered() const { return buffer_.size() - start_; }

 private:
  Framer framer_;
  std::vector<uint8_t> buffer_;
  size_t start_ = 0;
};

}  // namespace pgwarden::pgwire
