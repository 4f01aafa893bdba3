// DataplaneConfig: what pgwarden-dp needs from the shared pgwarden config file
// (common/protocol/dataplane_settings.h: `$.listeners.dataplane`, `$.limits`,
// `$.control_plane.socket`, the policies' rule sets, ...), plus dataplane limits that have
// fixed defaults. Plain values; copy freely.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/protocol/dataplane_settings.h"

namespace pgwarden::session {

struct ListenerConfig {
  std::string address = "127.0.0.1";
  int port = 6432;
  std::string tls_cert_file;  // both empty: no TLS on this listener (SSLRequest answered 'N')
  std::string tls_key_file;
  // The listener is bound to a loopback address and may accept a token without TLS.
  bool loopback_only = false;
};

struct Limits {
  // Authenticated sessions (and logins past their password message); 53300 beyond this.
  // Connections still in their login do not count: they have their own budget below.
  int max_connections = 1000;
  // $.limits: connections that have not sent their password message yet, in total and per
  // client IP address; each worker enforces its share (the limit divided by the workers,
  // rounded up). Over budget, the pending login that has done the least (from the address
  // with the most pending logins) is evicted, or the new connection is refused when every
  // candidate completed a login step within kMinEvictAgeMs (worker.h). 53300 either way
  // (PendingLogins).
  int max_pending_logins = 1024;
  int max_pending_logins_per_source = 128;
  int64_t startup_timeout_ms = 5000;      // accept (TLS handshake included) -> password message
  int64_t auth_timeout_ms = 10000;        // accept -> ReadyForQuery
  int64_t idle_timeout_ms = 3600000;      // 0 = none; no client message for this long -> 57P05
  uint32_t max_message_bytes = 1u << 20;  // client message cap (54000)
  size_t output_buffer_bytes = 1u << 20;  // per direction; above it the other side is paused
  int64_t escalation_timeout_ms = 5000;   // authenticate, scram_*, analyse
  int64_t approval_timeout_ms = 3600000;  // approval holds (cp times out first)
  int64_t drain_timeout_ms = 30000;       // SIGTERM: in-flight statements get this long
  size_t verdict_cache_entries = 65536;   // per worker
  // $.recording.hold_timeout_ms: a statement of a recording-required session waits this long
  // for the recorder to accept its record, then gets 53000.
  int64_t recording_hold_timeout_ms = 30000;
  // $.limits.cp_unavailable_wait_ms: while cp is unreachable, a statement that needs it waits
  // this long for the reconnection (and the sessions' re-registration), then gets 08006.
  int64_t cp_unavailable_wait_ms = 5000;
};

struct DataplaneConfig {
  int workers = 0;  // 0 = default_worker_threads()
  std::string controlplane_socket;
  std::string rules_dir;  // rule set files <name>.rules
  std::vector<ListenerConfig> listeners;
  Limits limits;
  // $.metrics.dataplane_listen: the Prometheus endpoint ("" = none; fixed for the process).
  std::string metrics_listen;
  // Every distinct rule_sets list named by a policy (compiled at load time).
  std::vector<std::vector<std::string>> rule_set_lists;
};

DataplaneConfig dataplane_config_from(const protocol::DataplaneSettings& s);

// CPUs this process may run on (its affinity mask), at least 1.
int usable_cpus();

// Workers when the configuration names none: half the usable CPUs, at least 1. dp shares
// the machine with pgwarden-cp (which works for every statement dp forwards) and with the
// kernel's TCP and TLS work; measured on 2 CPUs, one worker used 10-25 % less dp CPU per
// statement than two at every load with equal or higher throughput (docs/benchmarks.md).
int default_worker_threads();
// Loads the dataplane's parts of the config file (protocol::load_dataplane_settings: the
// control plane validates the rest and holds the secrets).
Result<DataplaneConfig> load_dataplane_config(const std::string& path);

}  // namespace pgwarden::session
