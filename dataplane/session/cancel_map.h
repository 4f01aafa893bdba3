// CancelMap: gateway BackendKeyData -> upstream BackendKeyData and address. Shared by all
// workers (a CancelRequest arrives on a new connection, possibly on another worker), guarded
// by a mutex: it is touched at login, logout and cancel, never per statement.
//
// The gateway key a client sees carries the upstream backend's real process id (so NOTIFY's
// pid, pg_backend_pid() and BackendKeyData agree) and a secret key of the gateway's own: the
// upstream's secret never leaves the gateway. Two upstream servers may use the same pid, so
// entries are keyed on the pair (pid, gateway secret), and a cancel is forwarded only when
// both halves match.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/status.h"

namespace pgwarden::session {

struct CancelTarget {
  std::string host;  // TCP host, or empty when unix_path is set
  int port = 5432;
  std::string unix_path;   // full socket path
  int32_t process_id = 0;  // the upstream's BackendKeyData
  int32_t secret_key = 0;
};

struct GatewayKey {
  int32_t process_id = 0;
  int32_t secret_key = 0;
};

class CancelMap {
 public:
  // Issues a gateway key for `target`: the upstream's process id and a fresh random secret
  // (unique among the entries with that pid). Thread-safe.
  GatewayKey add(CancelTarget target);
  void remove(GatewayKey key);
  // Points an issued key at another upstream backend (transaction pooling: the backend serving
  // the session's current transaction). A target with process_id 0 means "no backend now": a
  // cancel for the key is ignored. No-op for an unknown key. Thread-safe.
  void update(GatewayKey key, CancelTarget target);
  // The target if both halves of the key match. Thread-safe.
  std::optional<CancelTarget> find(int32_t process_id, int32_t secret_key) const;
  size_t size() const;

 private:
  static uint64_t slot(int32_t process_id, int32_t secret_key) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(process_id)) << 32) |
           static_cast<uint32_t>(secret_key);
  }
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, CancelTarget> map_;  // slot(pid, gateway secret) -> target
};

// Connects to the upstream (bounded by `timeout_ms`) and sends its CancelRequest. Blocking:
// run it off the event loop (send_cancel_async does).
Status send_cancel(const CancelTarget& target, int timeout_ms);
// Runs send_cancel on a short-lived thread; at most a few run at once (extra ones are dropped,
// as PostgreSQL cancels are best effort).
void send_cancel_async(CancelTarget target);

}  // namespace pgwarden::session
