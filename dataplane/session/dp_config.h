// DataplaneConfig: the `dataplane` section of the pgwarden JSON config file, as pgwarden-dp
// reads it (docs/dataplane.md lists every field). Parsing validates and reports the JSON path
// of the first bad field. Plain values; copy freely.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

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
  int max_connections = 1000;               // 53300 beyond this
  int64_t auth_timeout_ms = 15000;          // accept -> ReadyForQuery
  int64_t idle_timeout_ms = 0;              // 0 = none; no client message for this long -> 57P05
  uint32_t max_message_bytes = 64u << 20;   // client message cap (54000)
  size_t output_buffer_bytes = 1u << 20;    // per direction; above it the other side is paused
  int64_t escalation_timeout_ms = 5000;     // authenticate, scram_*, analyse
  int64_t approval_timeout_ms = 300000;     // approval holds
  int64_t drain_timeout_ms = 30000;         // SIGTERM: in-flight statements get this long
  size_t verdict_cache_entries = 65536;     // per worker
};

struct DataplaneConfig {
  int workers = 0;  // 0 = one per core
  std::string controlplane_socket = "/run/pgwarden/cp.sock";
  std::string rules_dir;  // rule set files; empty = <source root>/rules/sets
  std::vector<ListenerConfig> listeners;
  Limits limits;
};

// Parses the whole config file text; reads `dataplane` (and `controlplane.socket` when
// `dataplane.controlplane_socket` is absent). Relative paths resolve against `base_dir`.
Result<DataplaneConfig> parse_dataplane_config(const std::string& json_text,
                                               const std::string& base_dir);
Result<DataplaneConfig> load_dataplane_config(const std::string& path);

}  // namespace pgwarden::session
