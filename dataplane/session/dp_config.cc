#include "dataplane/session/dp_config.h"

#include <sched.h>

#include <algorithm>

#include "dataplane/session/event_loop.h"

namespace pgwarden::session {

DataplaneConfig dataplane_config_from(const protocol::DataplaneSettings& s) {
  DataplaneConfig d;
  const protocol::DataplaneListener& l = s.listener;
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
  d.controlplane_socket = s.controlplane_socket;
  d.metrics_listen = s.metrics_listen;
  d.limits.max_connections = l.max_connections;
  d.limits.auth_timeout_ms = int64_t{l.auth_timeout_s} * 1000;
  d.limits.idle_timeout_ms = int64_t{l.idle_timeout_s} * 1000;
  d.limits.max_message_bytes = static_cast<uint32_t>(std::max(l.max_message_bytes, 1024));
  d.limits.recording_hold_timeout_ms = s.recording_hold_timeout_ms;
  d.limits.cp_unavailable_wait_ms = s.limits.cp_unavailable_wait_ms;
  d.limits.max_pending_logins = s.limits.max_pending_logins;
  d.limits.max_pending_logins_per_source = s.limits.max_pending_logins_per_source;
  d.limits.startup_timeout_ms = s.limits.startup_timeout_ms;
  d.rule_set_lists = s.rule_set_lists;
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
  auto settings = protocol::load_dataplane_settings(path);
  if (!settings.is_ok()) return settings.status();
  return dataplane_config_from(*settings);
}

}  // namespace pgwarden::session
