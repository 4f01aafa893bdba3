// PendingLogins: one worker's budget for connections that have not completed their part of
// the login yet (accepted, TLS handshake, StartupMessage, until the password message), kept
// apart from authenticated sessions so that a flood of idle or slow clients cannot take the
// slots of agents that log in (docs/operations.md, "Login floods").
//
// Two caps: in total and per client address. A new connection over a cap evicts the pending
// login that has done the least: fewest login steps completed (a step is a complete
// startup-phase message or the end of the TLS handshake), then the longest time since its
// last step. For the per-address cap the victim comes from that address; for the total cap
// from the address holding the most pending logins among those with an evictable victim (a
// flooding address pays first; one whose logins are all progressing is passed over). A victim
// that completed no step at all (idle, or trickling a packet byte by byte) is always
// evictable; one that did is evicted only after `min_evict_age_ms` without progress,
// otherwise the new connection is refused. A real client completes a step within
// milliseconds of connecting, so a flood of idle or slow connections — even a reconnecting
// one, even from the address of real agents (NAT) — only ever evicts itself.
//
// Not thread-safe: one per worker, used on the worker's loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>

namespace pgwarden::session {

class PendingLogins {
 public:
  struct Limits {
    size_t total = 256;
    size_t per_source = 32;
    int64_t min_evict_age_ms = 250;
  };
  enum class Cap { kNone, kTotal, kPerSource };
  struct Decision {
    bool admitted = false;
    Cap cap = Cap::kNone;  // the cap that was reached (evicting or refusing)
    uint64_t evict = 0;    // pending login to end now (0: none)
  };

  // Decides about connection `id` from `source` (its IP address) accepted at `now_ms`.
  // Admitted: it is counted; `evict`, if set, is no longer counted and must be ended by the
  // caller.
  Decision admit(uint64_t id, const std::string& source, int64_t now_ms, const Limits& limits);
  // The pending login admit() would evict now for a connection from `source` (0: none).
  uint64_t victim(const std::string& source, int64_t now_ms, const Limits& limits) const;
  // `id` completed a login step at `now_ms` (no-op when it is not pending).
  void progress(uint64_t id, int64_t now_ms);
  // `id` finished (or gave up) its part of the login. Idempotent.
  void remove(uint64_t id);

  size_t size() const { return by_id_.size(); }
  size_t from(const std::string& source) const;
  size_t sources() const { return by_source_.size(); }

 private:
  static constexpr int kMaxSteps = 3;  // SSLRequest, TLS handshake, StartupMessage
  struct Entry {
    std::string source;
    int steps = 0;
    int64_t progress_ms = 0;  // accept or the last step
  };
  // (steps, progress_ms, id): the first is the one that has done the least.
  using Key = std::tuple<int, int64_t, uint64_t>;
  using Queue = std::set<Key>;
  Decision choose(const std::string& source, int64_t now_ms, const Limits& limits) const;
  // The victim from `source` if it may be evicted now; 0 otherwise.
  uint64_t evictable(const std::string& source, int64_t now_ms, const Limits& limits) const;

  std::unordered_map<uint64_t, Entry> by_id_;
  std::map<std::string, Queue> by_source_;
};

}  // namespace pgwarden::session
