// PendingLogins: one worker's budget for connections that have not completed their part of
// the login yet (accepted, TLS handshake, StartupMessage, until the password message), kept
// apart from authenticated sessions so that a flood of idle or slow clients cannot take the
// slots of agents that log in (docs/operations.md, "Login floods").
//
// Two caps: in total and per client address. A new connection over a cap evicts the most
// stalled pending login — the one whose last progress (accept, a complete startup-phase
// message, the end of its TLS handshake) is oldest — provided it stalled for at least
// `min_evict_age_ms`: for the per-address cap the most stalled from that address; for the
// total cap the most stalled from the address holding the most pending logins (a flooding
// address pays first). A real client progresses every few milliseconds while an idle or
// trickling one does not, so a flood evicts itself, also when it shares the address of real
// agents (NAT). When every candidate progressed more recently, the new connection is refused
// instead.
//
// Not thread-safe: one per worker, used on the worker's loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

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
  // `id` made progress at `now_ms` (no-op when it is not pending).
  void progress(uint64_t id, int64_t now_ms);
  // `id` finished (or gave up) its part of the login. Idempotent.
  void remove(uint64_t id);

  size_t size() const { return by_id_.size(); }
  size_t from(const std::string& source) const;
  size_t sources() const { return by_source_.size(); }

 private:
  using Queue = std::set<std::pair<int64_t, uint64_t>>;  // (progress_ms, id), most stalled first
  // The most stalled pending login of `source` if it stalled long enough; 0 otherwise.
  uint64_t evictable(const std::string& source, int64_t now_ms, const Limits& limits) const;

  std::unordered_map<uint64_t, std::pair<std::string, int64_t>> by_id_;
  std::map<std::string, Queue> by_source_;
};

}  // namespace pgwarden::session
