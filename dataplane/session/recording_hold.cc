#include "dataplane/session/recording_hold.h"

#include <algorithm>

namespace pgwarden::session {

std::optional<int64_t> RecordingHold::next_retry(int64_t now_ms, int64_t timeout_ms) {
  if (since_ms_ < 0) {
    since_ms_ = now_ms;
    backoff_ms_ = kFirstRetryMs;
  } else {
    backoff_ms_ = std::min(backoff_ms_ * 2, kMaxRetryMs);
  }
  ++attempts_;
  int64_t left = since_ms_ + timeout_ms - now_ms;
  if (left <= 0) {
    reset();
    return std::nullopt;
  }
  return std::min(backoff_ms_, left);
}

void RecordingHold::reset() {
  since_ms_ = -1;
  backoff_ms_ = 0;
  attempts_ = 0;
}

}  // namespace pgwarden::session
