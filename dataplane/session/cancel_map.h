// CancelMap: gateway BackendKeyData -> upstream BackendKeyData and address. Shared by all
// workers (a CancelRequest arrives on a new connection, possibly on another worker), guarded
// by a mutex: it is touched at login, logout and cancel, never per statement (a pooled
// session re-points its own entry per transaction, CancelEntry).
//
// The gateway key a client sees carries the upstream backend's real process id (so NOTIFY's
// pid, pg_backend_pid() and BackendKeyData agree) and a secret key of the gateway's own: the
// upstream's secret never leaves the gateway. Two upstream servers may use the same pid, so
// entries are keyed on the pair (pid, gateway secret), and a cancel is forwarded only when
// both halves match.
#pragma once

#include <cstdint>
#include <memory>
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

// The target of one issued key. Its session points it at the backend serving each transaction
// (transaction pooling, twice per transaction) through this handle: no map lookup and no
// map-wide lock on that path, only this entry's own. Thread-safe.
class CancelEntry {
 public:
  explicit CancelEntry(CancelTarget target) : target_(std::move(target)) {}
  void set(const CancelTarget& target);
  // No backend now: a cancel for the key is ignored until the next set().
  void clear();
  // The target, or nothing when cleared (or set to a target with process_id 0).
  std::optional<CancelTarget> get() const;

 private:
  mutable std::mutex mu_;
  CancelTarget target_;
};

class CancelMap {
 public:
  // Issues a gateway key for `target`: the upstream's process id and a fresh random secret
  // (unique among the entries with that pid). `entry`, when given, receives the key's entry,
  // which stays valid (though no longer found) after remove(). Thread-safe.
  GatewayKey add(CancelTarget target, std::shared_ptr<CancelEntry>* entry = nullptr);
  void remove(GatewayKey key);
  // The target if both halves of the key match and its entry is not cleared. Thread-safe.
  std::optional<CancelTarget> find(int32_t process_id, int32_t secret_key) const;
  size_t size() const;

 private:
  static uint64_t slot(int32_t process_id, int32_t secret_key) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(process_id)) << 32) |
           static_cast<uint32_t>(secret_key);
  }
  mutable std::mutex mu_;
  // slot(pid, gateway secret) -> entry
  std::unordered_map<uint64_t, std::shared_ptr<CancelEntry>> map_;
};

// Connects to the upstream (bounded by `timeout_ms`) and sends its CancelRequest. Blocking:
// run it off the event loop (send_cancel_async does).
Status send_cancel(const CancelTarget& target, int timeout_ms);
// Runs send_cancel on a short-lived thread; at most a few run at once (extra ones are dropped,
// as PostgreSQL cancels are best effort).
void send_cancel_async(CancelTarget target);

}  // namespace pgwarden::session
