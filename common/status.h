// Status and Result<T>: the error type of control-plane and setup code.
//
// Success costs one enum compare; an error carries a code and a message a human can act
// on. A Status may also carry a PostgreSQL SQLSTATE so that errors that end up in front of a
// client become an ErrorResponse without a translation table at every call site.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace pgwarden {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad input from a peer, a file or an operator
  kNotFound,
  kPermissionDenied,
  kUnauthenticated,
  kUnavailable,  // a dependency (cp, upstream, JWKS endpoint) cannot be reached
  kDeadlineExceeded,
  kResourceExhausted,  // a cap was hit
  kFailedPrecondition,
  kInternal,
};

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message, std::string sqlstate = {})
      : code_(code), message_(std::move(message)), sqlstate_(std::move(sqlstate)) {}

  static Status ok() { return Status(); }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // PostgreSQL SQLSTATE for errors a client can see; empty when not client-facing.
  const std::string& sqlstate() const { return sqlstate_; }

  // "InvalidArgument: message" for logs and CLI output.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string sqlstate_;
};

inline Status invalid_argument(std::string msg, std::string sqlstate = {}) {
  return Status(StatusCode::kInvalidArgument, std::move(msg), std::move(sqlstate));
}
inline Status not_found(std::string msg) { return Status(StatusCode::kNotFound, std::move(msg)); }
inline Status permission_denied(std::string msg, std::string sqlstate = "42501") {
  return Status(StatusCode::kPermissionDenied, std::move(msg), std::move(sqlstate));
}
inline Status unauthenticated(std::string msg, std::string sqlstate = "28000") {
  return Status(StatusCode::kUnauthenticated, std::move(msg), std::move(sqlstate));
}
inline Status unavailable(std::string msg, std::string sqlstate = "08006") {
  return Status(StatusCode::kUnavailable, std::move(msg), std::move(sqlstate));
}
inline Status deadline_exceeded(std::string msg) {
  return Status(StatusCode::kDeadlineExceeded, std::move(msg), "57014");
}
inline Status resource_exhausted(std::string msg, std::string sqlstate = "54000") {
  return Status(StatusCode::kResourceExhausted, std::move(msg), std::move(sqlstate));
}
inline Status failed_precondition(std::string msg) {
  return Status(StatusCode::kFailedPrecondition, std::move(msg));
}
inline Status internal_error(std::string msg) {
  return Status(StatusCode::kInternal, std::move(msg), "XX000");
}

// An errno as an operator reads it: "No space left on device (ENOSPC)".
std::string errno_text(int err);
// A failed write to pgwarden's own storage (recording, audit log, approval journal) as the
// refusal a client gets: 53100 disk_full for ENOSPC and EDQUOT, 58030 io_error otherwise.
Status storage_write_error(int err, std::string message);

// Result<T>: a T or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    assert(!std::get<Status>(v_).is_ok() && "Result built from an ok Status");
  }

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }

  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace pgwarden

// Propagate a non-ok Status from an expression returning Status.
#define PGW_RETURN_IF_ERROR(expr)      \
  do {                                 \
    ::pgwarden::Status _st = (expr);   \
    if (!_st.is_ok()) return _st;      \
  } while (0)
