#include "dataplane/pgwire/framer.h"

#include <algorithm>

namespace pgwarden::pgwire {

namespace {
constexpr size_t kTypedHeaderBytes = 5;    // Byte1 type + Int32 length
constexpr size_t kStartupHeaderBytes = 8;  // Int32 length + Int32 code

FrameResult need_more(size_t need) {
  FrameResult r;
  r.status = FrameStatus::kNeedMore;
  r.need = need;
  return r;
}
}  // namespace

bool is_valid_message_type(Direction direction, uint8_t type) {
  if (direction == Direction::kFrontend) {
    switch (type) {
      case 'Q':
      case 'P':
      case 'B':
      case 'D':
      case 'E':
      case 'S':
      case 'H':
      case 'C':
      case 'd':
      case 'c':
      case 'f':
      case 'F':
      case 'X':
      case 'p':
        return true;
      default:
        return false;
    }
  }
  switch (type) {
    case 'R':
    case 'S':
    case 'K':
    case 'Z':
    case 'T':
    case 'D':
    case 'C':
    case 'I':
    case 'E':
    case 'N':
    case '1':
    case '2':
    case '3':
    case 'n':
    case 't':
    case 's':
    case 'G':
    case 'H':
    case 'W':
    case 'd':
    case 'c':
    case 'A':
    case 'v':
    case 'V':
      return true;
    default:
      return false;
  }
}

Framer::Framer(Direction direction, FramerOptions options)
    : direction_(direction),
      options_(options),
      phase_(direction == Direction::kFrontend ? Phase::kStartup : Phase::kNormal) {}

FrameResult Framer::fail(FrameError error) {
  phase_ = Phase::kFailed;
  error_ = error;
  FrameResult r;
  r.status = FrameStatus::kError;
  r.error = error;
  return r;
}

FrameResult Framer::next(Bytes input) {
  switch (phase_) {
    case Phase::kFailed: {
      FrameResult r;
      r.status = FrameStatus::kError;
      r.error = error_;
      return r;
    }
    case Phase::kCancelled:
      if (!input.empty()) return fail({FrameErrorCode::kDataAfterCancelRequest, 0, 0});
      return need_more(0);
    case Phase::kStartup:
      return next_startup(input);
    case Phase::kNormal:
      return next_typed(input);
  }
  return need_more(0);
}

FrameResult Framer::next_startup(Bytes input) {
  if (input.size() < 4) return need_more(kStartupHeaderBytes);
  uint32_t length = load_be32(input.data());
  if (length < kStartupHeaderBytes) return fail({FrameErrorCode::kLengthTooSmall, 0, length});
  if (length > options_.max_startup_bytes) {
    return fail({FrameErrorCode::kStartupTooLarge, 0, length});
  }
  if (input.size() < kStartupHeaderBytes) return need_more(length);
  uint32_t code = load_be32(input.data() + 4);
  StartupKind kind;
  switch (code) {
    case kSslRequestCode:
      kind = StartupKind::kSslRequest;
      if (length != 8) return fail({FrameErrorCode::kInvalidRequestLength, 0, length});
      break;
    case kGssEncRequestCode:
      kind = StartupKind::kGssEncRequest;
      if (length != 8) return fail({FrameErrorCode::kInvalidRequestLength, 0, length});
      break;
    case kCancelRequestCode:
      kind = StartupKind::kCancel;
      if (length != 16) return fail({FrameErrorCode::kInvalidRequestLength, 0, length});
      break;
    default:
      // Protocol 3.x; a minor version above what the server speaks is answered by the caller
      // with NegotiateProtocolVersion, as PostgreSQL does.
      if ((code >> 16) != 3) return fail({FrameErrorCode::kUnsupportedProtocol, 0, code});
      kind = StartupKind::kStartupMessage;
      break;
  }
  if (input.size() < length) return need_more(length);
  FrameResult r;
  r.status = FrameStatus::kMessage;
  r.consumed = length;
  r.message.type = 0;
  r.message.startup = kind;
  r.message.startup_code = code;
  r.message.bytes = input.first(length);
  r.message.body = input.subspan(4, length - 4);
  if (kind == StartupKind::kStartupMessage) phase_ = Phase::kNormal;
  if (kind == StartupKind::kCancel) phase_ = Phase::kCancelled;
  return r;
}

FrameResult Framer::next_typed(Bytes input) {
  if (input.empty()) return need_more(kTypedHeaderBytes);
  uint8_t type = input[0];
  if (!is_valid_message_type(direction_, type)) {
    return fail({FrameErrorCode::kInvalidMessageType, type, 0});
  }
  if (input.size() < kTypedHeaderBytes) return need_more(kTypedHeaderBytes);
  uint32_t length = load_be32(input.data() + 1);
  if (length < 4) return fail({FrameErrorCode::kLengthTooSmall, type, length});
  if (length > options_.max_message_bytes) {
    return fail({FrameErrorCode::kMessageTooLarge, type, length});
  }
  size_t total = static_cast<size_t>(length) + 1;
  if (input.size() < total) return need_more(total);
  FrameResult r;
  r.status = FrameStatus::kMessage;
  r.consumed = total;
  r.message.type = type;
  r.message.bytes = input.first(total);
  r.message.body = input.subspan(kTypedHeaderBytes, length - 4);
  return r;
}

void BufferingFramer::feed(Bytes data) {
  if (framer_.failed()) return;
  if (start_ > 0) {
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(start_));
    start_ = 0;
  }
  buffer_.insert(buffer_.end(), data.begin(), data.end());
}

FrameResult BufferingFramer::next() {
  FrameResult r = framer_.next(Bytes(buffer_).subspan(start_));
  if (r.status == FrameStatus::kMessage) start_ += r.consumed;
  if (r.status == FrameStatus::kError) {
    buffer_.clear();
    buffer_.shrink_to_fit();
    start_ = 0;
  }
  return r;
}

}  // namespace pgwarden::pgwire
