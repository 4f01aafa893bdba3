// RecordingHold: when a statement of a recording-required session may run again after cp
// answered recording_backpressure (53000: the recorder cannot take its record yet). The
// statement is held (the client just waits) and retried with exponential backoff
// (kFirstRetryMs doubling up to kMaxRetryMs, never past the deadline) until cp accepts it or
// the hold has lasted `timeout_ms` (limits.recording_hold_timeout_ms); then it is refused.
//
// One per session; plain value, not thread-safe (the session's worker thread).
#pragma once

#include <cstdint>
#include <optional>

namespace pgwarden::session {

class RecordingHold {
 public:
  static constexpr int64_t kFirstRetryMs = 2;
  static constexpr int64_t kMaxRetryMs = 100;

  // Called for each recording_backpressure answer at `now_ms` (monotonic). The first call
  // starts the hold. Returns the delay before the next attempt, or nullopt when the hold has
  // reached `timeout_ms` (the statement must be refused; the hold is reset).
  std::optional<int64_t> next_retry(int64_t now_ms, int64_t timeout_ms);
  // The statement was accepted (or the session moved on): the next hold starts afresh.
  void reset();

  bool holding() const { return since_ms_ >= 0; }
  // How long the current hold has lasted (0 when not holding).
  int64_t held_ms(int64_t now_ms) const { return holding() ? now_ms - since_ms_ : 0; }
  int attempts() const { return attempts_; }

 private:
  int64_t since_ms_ = -1;
  int64_t backoff_ms_ = 0;
  int attempts_ = 0;
};

}  // namespace pgwarden::session
