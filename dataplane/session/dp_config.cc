#include "dataplane/session/dp_config.h"

#include <sched.h>

#include <algorithm>

#include "dataplane/session/event_loop.h"

namespace pgwarden::session {

DataplaneConfig dataplane_config_from(const config::Config& c) {
  DataplaneConfig d;
  const config::DataplaneListener& l = c.dataplane;
  ListenerConfig lc;
  lc.address = l.address;
  lc.port = l.port;
  if (l.tls) {
    lc.tls_cert_file = l.tls_cert_file;
    lc.tls_key_file = l.tls_key_file;
  }
  lc.loopback_only = l.loopback_only;
  d.listeners.push_back(lc);
  d.workers = l.worker_threads;
  d.controlplane_socket = c.control_plane.socket_path;
  d.metrics_listen = c.metrics.dataplane_listen;
  d.limits.max_connections = l.max_connections;
  d.limits.auth_timeout_ms = int64_t{l.auth_timeout_s} * 1000;
  d.limits.idle_timeout_ms = int64_t{l.idle_timeout_s} * 1000;
  d.limits.max_message_bytes = static_cast<uint32_t>(std::max(l.max_message_bytes, 1024));
  d.limits.recording_hold_timeout_ms = c.recording.hold_timeout_ms;
  d.limits.cp_unavailable_wait_ms = c.limits.cp_unavailable_wait_ms;
  d.limits.max_pending_logins = c.limits.max_pending_logins;
  d.limits.max_pending_logins_per_source = c.limits.max_pending_logins_per_source;
  d.limits.startup_timeout_ms = c.limits.startup_timeout_ms;
  for (const auto& p : c.policies) {
    if (std::find(d.rule_set_lists.begin(), d.rule_set_lists.end(), p.rule_sets) ==
        d.rule_set_lists.end()) {
      d.rule_set_lists.push_back(p.rule_sets);
    }
  }
  return d;
}

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

int default_worker_threads() { return std::max(1, usable_cpus() / 2); }

Result<DataplaneConfig> load_dataplane_config(const std::string& path) {
  config::ValidationOptions opts;
  opts.check_environment = false;
  config::LoadOutcome out = config::load_config_file(path, static_cast<uint64_t>(unix_ms()), opts);
  if (!out.ok()) return invalid_argument("invalid config " + path + ":\n" + out.error_text());
  return dataplane_config_from(*out.config);
}

}  // namespace pgwarden::session
