// What pgwarden-dp takes from the shared configuration file, defined once for both processes.
//
// The file is the control plane's (controlplane/config validates all of it, docs/
// configuration.md); the dataplane reads only its own parts through this module, so it neither
// includes control-plane code nor learns anything it does not need (no credentials, no
// policies beyond their rule-set lists). The control plane's parser reads these parts with the
// same functions: one set of defaults and bounds for both processes.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/json_reader.h"
#include "common/status.h"

namespace pgwarden::protocol {

// $.listeners.dataplane: where agents connect (served by pgwarden-dp).
struct DataplaneListener {
  std::string address = "127.0.0.1";
  int port = 6432;
  bool tls = false;  // true when tls.cert_file/key_file are set
  std::string tls_cert_file;
  std::string tls_key_file;
  // Plaintext (no TLS) is only allowed on a loopback address with loopback_only = true; the
  // dp then also refuses non-loopback peers.
  bool loopback_only = false;
  int max_connections = 1000;
  int auth_timeout_s = 10;
  int idle_timeout_s = 3600;
  int max_message_bytes = 1 << 20;
  int worker_threads = 0;  // 0 = default_worker_threads() in pgwarden-dp
};

// $.limits (also accepted as $.listeners.dataplane.limits): gateway-wide waiting budgets of
// pgwarden-dp, and its budget for connections that have not completed their login, separate
// from max_connections (docs/operations.md, "Login floods").
struct LimitsSettings {
  // While cp is unreachable, a statement that needs cp (a verdict-cache miss, the record of a
  // recording-required session, a mask plan, an approval) waits this long for the connection
  // to come back, then gets 08006 (0 = refuse at once).
  int cp_unavailable_wait_ms = 5000;
  // The login budget, separate from max_connections (authenticated sessions).
  int max_pending_logins = 1024;            // connections before the password message
  int max_pending_logins_per_source = 128;  // of those, from one client IP address
  int startup_timeout_ms = 5000;            // accept (TLS included) -> password message
};

// Default of $.recording.hold_timeout_ms: how long a statement of a recording-required session
// is held while the recorder is behind before it is refused with 53000 (0 = refuse at once).
inline constexpr int kDefaultRecordingHoldTimeoutMs = 30000;

struct DataplaneSettings {
  DataplaneListener listener;
  LimitsSettings limits;
  std::string controlplane_socket;                            // $.control_plane.socket
  int recording_hold_timeout_ms = kDefaultRecordingHoldTimeoutMs;  // $.recording.hold_timeout_ms
  std::string metrics_listen;                                 // $.metrics.dataplane_listen
  // Every distinct $.policies[*].rule_sets list (compiled by the dp at load time), in file order.
  std::vector<std::vector<std::string>> rule_set_lists;
};

bool is_ip_address(const std::string& a);
bool is_loopback_address(const std::string& a);  // "localhost", 127.0.0.0/8, ::1

// The readers of each part, for both processes (errors are added to the reader with paths).
// $.listeners (only its `dataplane` key); $.listeners.dataplane.limits goes into `limits`.
void read_listeners(JsonReader& r, const nlohmann::json& listeners, DataplaneListener& out,
                    LimitsSettings& limits);
// $.limits or $.listeners.dataplane.limits at `path`.
void read_limits(JsonReader& r, const nlohmann::json& j, const std::string& path,
                 LimitsSettings& out);
// $.control_plane.socket (required): an absolute path that fits a Unix socket address.
void read_controlplane_socket(JsonReader& r, const nlohmann::json& control_plane,
                              std::string& out);
// $.recording.hold_timeout_ms.
void read_recording_hold_timeout(JsonReader& r, const nlohmann::json& recording, int& out);
// $.metrics.<key> at `path`: "ADDRESS:PORT" (common/metrics/listen_address.h).
void read_listen_address(JsonReader& r, const nlohmann::json& metrics, const std::string& key,
                         const std::string& path, std::string& out);
// $.policies[i].rule_sets at `path`; `known` says whether a rule set name exists (the
// default accepts [A-Za-z0-9_.-]+ names).
void read_rule_sets(JsonReader& r, const nlohmann::json& policy, const std::string& path,
                    const std::function<bool(std::string_view)>& known,
                    std::vector<std::string>& out);

// Reads the dataplane's parts of the configuration file at `path`. The rest of the file is
// the control plane's to validate; a file it would refuse is refused by pgwarden-cp at its
// start or reload. invalid_argument listing every error (one per line) when the dataplane's
// parts are invalid. Files the document names are not checked here (the dp opens its TLS files
// itself and says which one it could not read).
Result<DataplaneSettings> load_dataplane_settings(const std::string& path);

}  // namespace pgwarden::protocol
