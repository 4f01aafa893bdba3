#include "common/protocol/dataplane_settings.h"

#include <arpa/inet.h>

#include <algorithm>

#include "common/metrics/listen_address.h"

namespace pgwarden::protocol {

using json = nlohmann::json;

bool is_ip_address(const std::string& a) {
  in_addr v4;
  in6_addr v6;
  return inet_pton(AF_INET, a.c_str(), &v4) == 1 || inet_pton(AF_INET6, a.c_str(), &v6) == 1;
}

bool is_loopback_address(const std::string& a) {
  if (a == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, a.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return a == "::1";
}

void read_listeners(JsonReader& r, const json& j, DataplaneListener& l, LimitsSettings& limits) {
  if (!r.object(j, "$.listeners", {"dataplane"})) return;
  const json* dp = r.field(j, "dataplane", "$.listeners", true);
  if (dp == nullptr) return;
  const std::string p = "$.listeners.dataplane";
  if (!r.object(*dp, p,
                {"address", "port", "tls", "loopback_only", "max_connections", "auth_timeout_s",
                 "idle_timeout_s", "max_message_bytes", "worker_threads", "limits"})) {
    return;
  }
  r.str(*dp, "address", p, l.address);
  if (!is_ip_address(l.address) && l.address != "localhost") {
    r.error(p + ".address", "must be an IP address or \"localhost\"");
  }
  r.integer(*dp, "port", p, l.port, 1, 65535);
  r.boolean(*dp, "loopback_only", p, l.loopback_only);
  r.integer(*dp, "max_connections", p, l.max_connections, 1, 1000000);
  r.integer(*dp, "auth_timeout_s", p, l.auth_timeout_s, 1, 600);
  r.integer(*dp, "idle_timeout_s", p, l.idle_timeout_s, 1, 7 * 86400);
  r.integer(*dp, "max_message_bytes", p, l.max_message_bytes, 1024, 1 << 30);
  r.integer(*dp, "worker_threads", p, l.worker_threads, 1, 256);
  if (const json* lim = r.field(*dp, "limits", p, false)) read_limits(r, *lim, p + ".limits", limits);
  if (const json* tls = r.field(*dp, "tls", p, false)) {
    if (r.object(*tls, p + ".tls", {"cert_file", "key_file"})) {
      r.str(*tls, "cert_file", p + ".tls", l.tls_cert_file, true);
      r.str(*tls, "key_file", p + ".tls", l.tls_key_file, true);
      l.tls = true;
      r.check_readable(p + ".tls.cert_file", l.tls_cert_file);
      r.check_readable(p + ".tls.key_file", l.tls_key_file);
    }
  }
  if (!l.tls && !l.loopback_only) {
    r.error(p + ".tls", "is required unless loopback_only is true (tokens travel as passwords)");
  }
  if (l.loopback_only && !is_loopback_address(l.address)) {
    r.error(p + ".address", "must be a loopback address when loopback_only is true");
  }
}

void read_limits(JsonReader& r, const json& j, const std::string& p, LimitsSettings& out) {
  if (!r.object(j, p,
                {"max_pending_logins", "max_pending_logins_per_source", "startup_timeout_ms",
                 "cp_unavailable_wait_ms"})) {
    return;
  }
  r.integer(j, "cp_unavailable_wait_ms", p, out.cp_unavailable_wait_ms, 0, 600000);
  r.integer(j, "max_pending_logins", p, out.max_pending_logins, 1, 1000000);
  r.integer(j, "max_pending_logins_per_source", p, out.max_pending_logins_per_source, 1, 1000000);
  r.integer(j, "startup_timeout_ms", p, out.startup_timeout_ms, 100, 600000);
}

void read_controlplane_socket(JsonReader& r, const json& j, std::string& out) {
  const std::string p = "$.control_plane";
  r.str(j, "socket", p, out, true);
  if (!out.empty() && out[0] != '/') r.error(p + ".socket", "must be an absolute path");
  if (out.size() > 107) {
    r.error(p + ".socket", "is longer than a Unix socket path may be (107 bytes)");
  }
}

void read_recording_hold_timeout(JsonReader& r, const json& recording, int& out) {
  r.integer(recording, "hold_timeout_ms", "$.recording", out, 0, 3600000);
}

void read_listen_address(JsonReader& r, const json& metrics, const std::string& key,
                         const std::string& path, std::string& out) {
  r.str(metrics, key, path, out);
  if (!metrics.contains(key)) return;
  if (std::string bad = metrics::check_listen_address(out); !bad.empty()) {
    r.error(path + "." + key, json_quote(out) + ": " + bad);
  }
}

void read_rule_sets(JsonReader& r, const json& policy, const std::string& path,
                    const std::function<bool(std::string_view)>& known,
                    std::vector<std::string>& out) {
  auto is_name = [](std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == '-';
    });
  };
  r.strings(policy, "rule_sets", path, out, false, false, [&](const std::string& name) {
    bool ok = known ? known(name) : is_name(name);
    return ok ? std::string() : "unknown rule set " + json_quote(name);
  });
}

Result<DataplaneSettings> load_dataplane_settings(const std::string& path) {
  std::vector<FieldError> errors;
  DataplaneSettings d;
  std::string text;
  if (read_document_file(path, kMaxConfigFileBytes, text, errors)) {
    json root = parse_json_document(text, errors);
    JsonReader r(errors, /*check_environment=*/false);
    if (errors.empty() && !root.is_object()) r.error("$", "must be an object");
    if (errors.empty()) {
      if (const json* l = r.field(root, "listeners", "$", true)) {
        read_listeners(r, *l, d.listener, d.limits);
      }
      if (const json* cp = r.field(root, "control_plane", "$", true)) {
        if (cp->is_object()) {
          read_controlplane_socket(r, *cp, d.controlplane_socket);
        } else {
          r.error("$.control_plane", "must be an object");
        }
      }
      if (const json* rec = r.field(root, "recording", "$", false); rec && rec->is_object()) {
        read_recording_hold_timeout(r, *rec, d.recording_hold_timeout_ms);
      }
      if (const json* lim = r.field(root, "limits", "$", false)) {
        read_limits(r, *lim, "$.limits", d.limits);
      }
      if (const json* m = r.field(root, "metrics", "$", false); m && m->is_object()) {
        read_listen_address(r, *m, "dataplane_listen", "$.metrics", d.metrics_listen);
      }
      r.array_of_objects(root, "policies", "$", true, [&](const json& p, const std::string& pp) {
        if (!p.is_object()) return r.error(pp, "must be an object");
        std::vector<std::string> sets;
        read_rule_sets(r, p, pp, {}, sets);
        if (std::find(d.rule_set_lists.begin(), d.rule_set_lists.end(), sets) ==
            d.rule_set_lists.end()) {
          d.rule_set_lists.push_back(std::move(sets));
        }
      });
    }
  }
  if (!errors.empty()) {
    std::string text_out = "invalid config " + path + ":\n";
    for (const FieldError& e : errors) text_out += e.to_string() + "\n";
    return invalid_argument(text_out);
  }
  return d;
}

}  // namespace pgwarden::protocol
