#include "dataplane/session/dp_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace pgwarden::session {

namespace {

using nlohmann::json;

std::string resolve(const std::string& base, const std::string& p) {
  if (p.empty() || p[0] == '/' || base.empty()) return p;
  return base + "/" + p;
}

Status bad(const std::string& path, const std::string& what) {
  return invalid_argument("config " + path + ": " + what);
}

template <typename T>
Status read_int(const json& obj, const char* key, const std::string& path, T* out, T min,
                T max) {
  if (!obj.contains(key)) return Status::ok();
  const json& v = obj[key];
  if (!v.is_number_integer()) return bad(path + "." + key, "must be an integer");
  auto n = v.get<int64_t>();
  if (n < static_cast<int64_t>(min) || n > static_cast<int64_t>(max)) {
    return bad(path + "." + key, "out of range [" + std::to_string(static_cast<int64_t>(min)) +
                                     ", " + std::to_string(static_cast<int64_t>(max)) + "]");
  }
  *out = static_cast<T>(n);
  return Status::ok();
}

Status read_string(const json& obj, const char* key, const std::string& path, std::string* out) {
  if (!obj.contains(key)) return Status::ok();
  if (!obj[key].is_string()) return bad(path + "." + key, "must be a string");
  *out = obj[key].get<std::string>();
  return Status::ok();
}

Status read_bool(const json& obj, const char* key, const std::string& path, bool* out) {
  if (!obj.contains(key)) return Status::ok();
  if (!obj[key].is_boolean()) return bad(path + "." + key, "must be true or false");
  *out = obj[key].get<bool>();
  return Status::ok();
}

bool is_loopback(const std::string& a) {
  return a == "localhost" || a == "::1" || a.rfind("127.", 0) == 0;
}

}  // namespace

Result<DataplaneConfig> parse_dataplane_config(const std::string& json_text,
                                               const std::string& base_dir) {
  json root = json::parse(json_text, nullptr, false);
  if (root.is_discarded() || !root.is_object()) return bad("$", "not a JSON object");
  DataplaneConfig c;
  if (root.contains("controlplane") && root["controlplane"].is_object()) {
    PGW_RETURN_IF_ERROR(
        read_string(root["controlplane"], "socket", "$.controlplane", &c.controlplane_socket));
  }
  if (!root.contains("dataplane")) return bad("$.dataplane", "missing");
  const json& dp = root["dataplane"];
  if (!dp.is_object()) return bad("$.dataplane", "must be an object");
  const std::string p = "$.dataplane";
  PGW_RETURN_IF_ERROR(read_int(dp, "workers", p, &c.workers, 0, 256));
  PGW_RETURN_IF_ERROR(read_string(dp, "controlplane_socket", p, &c.controlplane_socket));
  PGW_RETURN_IF_ERROR(read_string(dp, "rules_dir", p, &c.rules_dir));
  c.controlplane_socket = resolve(base_dir, c.controlplane_socket);
  c.rules_dir = resolve(base_dir, c.rules_dir);
  if (!dp.contains("listeners") || !dp["listeners"].is_array() || dp["listeners"].empty()) {
    return bad(p + ".listeners", "must be a non-empty array");
  }
  for (size_t i = 0; i < dp["listeners"].size(); ++i) {
    const json& l = dp["listeners"][i];
    std::string lp = p + ".listeners[" + std::to_string(i) + "]";
    if (!l.is_object()) return bad(lp, "must be an object");
    ListenerConfig lc;
    PGW_RETURN_IF_ERROR(read_string(l, "address", lp, &lc.address));
    PGW_RETURN_IF_ERROR(read_int(l, "port", lp, &lc.port, 1, 65535));
    PGW_RETURN_IF_ERROR(read_bool(l, "loopback_only", lp, &lc.loopback_only));
    if (l.contains("tls")) {
      const json& t = l["tls"];
      if (!t.is_object()) return bad(lp + ".tls", "must be an object");
      PGW_RETURN_IF_ERROR(read_string(t, "cert_file", lp + ".tls", &lc.tls_cert_file));
      PGW_RETURN_IF_ERROR(read_string(t, "key_file", lp + ".tls", &lc.tls_key_file));
      if (lc.tls_cert_file.empty() || lc.tls_key_file.empty()) {
        return bad(lp + ".tls", "needs cert_file and key_file");
      }
      lc.tls_cert_file = resolve(base_dir, lc.tls_cert_file);
      lc.tls_key_file = resolve(base_dir, lc.tls_key_file);
    }
    if (lc.loopback_only && !is_loopback(lc.address)) {
      return bad(lp + ".loopback_only", "requires a loopback address (127.x.x.x or ::1)");
    }
    c.listeners.push_back(std::move(lc));
  }
  if (dp.contains("limits")) {
    const json& l = dp["limits"];
    std::string lp = p + ".limits";
    if (!l.is_object()) return bad(lp, "must be an object");
    Limits& m = c.limits;
    PGW_RETURN_IF_ERROR(read_int(l, "max_connections", lp, &m.max_connections, 1, 1000000));
    PGW_RETURN_IF_ERROR(
        read_int<int64_t>(l, "auth_timeout_ms", lp, &m.auth_timeout_ms, 100, 3600000));
    PGW_RETURN_IF_ERROR(
        read_int<int64_t>(l, "idle_timeout_ms", lp, &m.idle_timeout_ms, 0, 86400000LL * 30));
    PGW_RETURN_IF_ERROR(read_int<uint32_t>(l, "max_message_bytes", lp, &m.max_message_bytes,
                                           1024, 1u << 30));
    PGW_RETURN_IF_ERROR(read_int<size_t>(l, "output_buffer_bytes", lp, &m.output_buffer_bytes,
                                         16384, size_t{1} << 30));
    PGW_RETURN_IF_ERROR(read_int<int64_t>(l, "escalation_timeout_ms", lp,
                                          &m.escalation_timeout_ms, 10, 600000));
    PGW_RETURN_IF_ERROR(read_int<int64_t>(l, "approval_timeout_ms", lp, &m.approval_timeout_ms,
                                          10, 86400000));
    PGW_RETURN_IF_ERROR(
        read_int<int64_t>(l, "drain_timeout_ms", lp, &m.drain_timeout_ms, 0, 3600000));
    PGW_RETURN_IF_ERROR(read_int<size_t>(l, "verdict_cache_entries", lp,
                                         &m.verdict_cache_entries, 0, 100000000));
  }
  return c;
}

Result<DataplaneConfig> load_dataplane_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) return invalid_argument("cannot read config file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string base;
  auto slash = path.rfind('/');
  if (slash != std::string::npos) base = path.substr(0, slash);
  return parse_dataplane_config(ss.str(), base.empty() ? "." : base);
}

}  // namespace pgwarden::session
