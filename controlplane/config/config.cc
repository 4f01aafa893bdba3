#include "controlplane/config/config.h"
#include "controlplane/policy/mask_lineage.h"

#include <grp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/ascii.h"
#include "common/metrics/listen_address.h"
#include "controlplane/identity/service_key.h"
#include "controlplane/identity/validator.h"
#include "controlplane/net/http_client.h"
#include "controlplane/policy/evaluator.h"
#include "controlplane/policy/glob.h"

namespace pgwarden::config {

namespace {

using json = nlohmann::json;

bool is_word(std::string_view s, std::string_view extra) {
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || extra.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string check_listen_address(const std::string& listen) {
  return metrics::check_listen_address(listen);
}

namespace {

// Reads one JSON document into structs, recording every problem with its path.
class Parser : public JsonReader {
 public:
  Parser(const ValidationOptions& options, std::vector<ConfigError>& errors)
      : JsonReader(errors, options.check_environment), options_(options) {}

  // obj[key] names a value of the enum E (common/protocol/grant_types.h: one table of names
  // for the file, the wire and both processes). False when it is set but names none.
  template <typename E>
  bool named(const json& obj, const std::string& key, const std::string& path,
             std::string_view what, E& out, bool required = false) {
    std::string name;
    str(obj, key, path, name, required);
    if (name.empty()) return !required && !obj.contains(key);  // absent, or reported by str()
    if (auto v = protocol::enum_from_name<E>(name)) {
      out = *v;
      return true;
    }
    error(path + "." + key, "unknown " + std::string(what) + " " + json_quote(name) + " (" +
                                protocol::enum_names_list<E>() + ")");
    return false;
  }

  std::optional<vault::CredentialHash> credential_hash(const json& obj, const std::string& path) {
    std::string text;
    str(obj, "credential_hash", path, text, true);
    if (text.empty()) return std::nullopt;
    auto h = vault::parse_credential_hash(text);
    if (!h.is_ok()) {
      error(path + ".credential_hash", h.status().message());
      return std::nullopt;
    }
    return std::move(h.value());
  }

  // A secret named by `file_key` (a readable file) or `env_key` (a set environment
  // variable): at most one of them, exactly one when `required`. nullopt when neither is set
  // or on error (reported under `path`).
  std::optional<vault::SecretSource> secret_source(const json& obj, const std::string& path,
                                                   const std::string& file_key,
                                                   const std::string& env_key, bool required) {
    std::string file, env;
    str(obj, file_key, path, file);
    str(obj, env_key, path, env);
    if ((!file.empty() && !env.empty()) || (required && file.empty() && env.empty())) {
      error(path, std::string("needs ") + (required ? "exactly" : "at most") + " one of " +
                      file_key + ", " + env_key);
      return std::nullopt;
    }
    if (!file.empty()) {
      check_readable(path + "." + file_key, file);
      return vault::SecretSource{vault::SecretSource::Kind::kFile, file};
    }
    if (env.empty()) return std::nullopt;
    if (options_.check_environment && std::getenv(env.c_str()) == nullptr) {
      error(path + "." + env_key, "environment variable " + json_quote(env) + " is not set");
    }
    return vault::SecretSource{vault::SecretSource::Kind::kEnv, env};
  }

  void parse_root(const json& root, Config& c) {
    if (!object(root, "$",
                {"listeners", "control_plane", "identity", "targets", "policies", "audit",
                 "approvals", "masking", "recording", "limits", "metrics", "budgets"})) {
      return;
    }
    if (const json* l = field(root, "listeners", "$", true)) parse_listeners(*l, c);
    if (const json* cp = field(root, "control_plane", "$", true)) {
      parse_control_plane(*cp, c);
    }
    if (const json* id = field(root, "identity", "$", false)) parse_identity(*id, c);
    array_of_objects(root, "targets", "$", true,
                     [&](const json& j, const std::string& p) { parse_target(j, p, c); });
    array_of_objects(root, "policies", "$", true,
                     [&](const json& j, const std::string& p) { parse_policy(j, p, c); });
    if (const json* a = field(root, "audit", "$", false)) parse_audit(*a, c);
    if (const json* a = field(root, "approvals", "$", false)) parse_approvals(*a, c);
    if (const json* m = field(root, "masking", "$", false)) parse_masking(*m, c);
    if (const json* r = field(root, "recording", "$", false)) parse_recording(*r, c);
    if (const json* l = field(root, "limits", "$", false)) parse_limits(*l, "$.limits", c);
    if (const json* m = field(root, "metrics", "$", false)) parse_metrics(*m, c);
    if (const json* b = field(root, "budgets", "$", false)) {
      std::vector<std::pair<std::string, std::string>> errors;
      c.budgets = budgets::parse_budget_rules(*b, "$.budgets", errors);
      for (auto& [path, message] : errors) error(path, std::move(message));
    }
    cross_check(root, c);
  }

  void parse_listeners(const json& j, Config& c) {
    protocol::read_listeners(*this, j, c.dataplane, c.limits);
  }

  void parse_control_plane(const json& j, Config& c) {
    const std::string p = "$.control_plane";
    if (!object(j, p,
                {"socket", "worker_threads", "max_dp_connections", "max_sessions", "state_dir",
                 "admin_socket", "admin_socket_mode", "admin_socket_group", "admin_principals",
                 "state_store", "http"})) {
      return;
    }
    ControlPlaneSettings& s = c.control_plane;
    protocol::read_controlplane_socket(*this, j, s.socket_path);
    str(j, "state_dir", p, s.state_dir, true);
    str(j, "admin_socket", p, s.admin_socket);
    parse_admin_socket_access(j, p, s);
    integer(j, "worker_threads", p, s.worker_threads, 1, 256);
    integer(j, "max_dp_connections", p, s.max_dp_connections, 1, 4096);
    integer(j, "max_sessions", p, s.max_sessions, 1, 10000000);
    for (auto [key, value] :
         {std::pair{"state_dir", &s.state_dir}, std::pair{"admin_socket", &s.admin_socket}}) {
      if (!value->empty() && (*value)[0] != '/') error(p + "." + key, "must be an absolute path");
    }
    std::set<std::string> names;
    array_of_objects(j, "admin_principals", p, false, [&](const json& e, const std::string& ep) {
      if (!object(e, ep, {"name", "credential_hash", "groups"})) return;
      AdminPrincipal a;
      str(e, "name", ep, a.name, true);
      auto h = credential_hash(e, ep);
      strings(e, "groups", ep, a.groups);
      if (!a.name.empty() && !names.insert(a.name).second) {
        error(ep + ".name", "duplicate admin principal " + json_quote(a.name));
      }
      if (h) a.credential = std::move(*h);
      s.admin_principals.push_back(std::move(a));
    });
    if (const json* http = field(j, "http", p, false)) parse_http(*http, s);
    // After http: the state store's admin_url names that listener.
    if (const json* st = field(j, "state_store", p, false)) parse_state_store(*st, s);
    if (!s.admin_principals.empty() && s.admin_socket.empty() && !s.http.break_glass) {
      error(p + ".admin_socket", "is required when admin_principals are configured");
    }
  }

  void parse_state_store(const json& j, ControlPlaneSettings& s) {
    const std::string p = "$.control_plane.state_store";
    if (!object(j, p,
                {"kind", "dsn_file", "node_id", "connect_timeout_ms", "admin_url", "node_key_file",
                 "node_ca_file", "budget_flush_ms"})) {
      return;
    }
    StateStoreSettings& st = s.state_store;
    std::string kind = "file";
    str(j, "kind", p, kind);
    str(j, "dsn_file", p, st.dsn_file);
    str(j, "node_id", p, st.node_id);
    integer(j, "connect_timeout_ms", p, st.connect_timeout_ms, 100, 60000);
    str(j, "admin_url", p, st.admin_url);
    str(j, "node_key_file", p, st.node_key_file);
    str(j, "node_ca_file", p, st.node_ca_file);
    integer(j, "budget_flush_ms", p, st.budget_flush_ms, 10, 10000);
    if (kind == "file") {
      st.kind = StateStoreSettings::Kind::kFile;
      if (!st.dsn_file.empty() || !st.node_id.empty() || !st.admin_url.empty() ||
          !st.node_key_file.empty() || !st.node_ca_file.empty()) {
        error(p,
              "dsn_file, node_id, admin_url, node_key_file and node_ca_file only apply to kind "
              "\"postgres\"");
      }
      return;
    }
    if (!st.admin_url.empty()) {
      if (!st.admin_url.starts_with("https://")) {
        error(p + ".admin_url", "must be an https:// URL (this node's control_plane.http)");
      }
      if (s.http.listen.empty()) {
        error(p + ".admin_url", "needs control_plane.http (the HTTPS admin API it names)");
      }
      if (st.node_key_file.empty()) {
        error(p + ".node_key_file", "is required with admin_url (other nodes sign with it)");
      }
    }
    if (!st.node_key_file.empty()) check_readable(p + ".node_key_file", st.node_key_file);
    if (!st.node_ca_file.empty()) check_readable(p + ".node_ca_file", st.node_ca_file);
    if (kind != "postgres") {
      error(p + ".kind", "must be \"file\" or \"postgres\"");
      return;
    }
    st.kind = StateStoreSettings::Kind::kPostgres;
    if (st.dsn_file.empty()) error(p + ".dsn_file", "is required for kind \"postgres\"");
    if (!st.dsn_file.empty()) check_readable(p + ".dsn_file", st.dsn_file);
    bool name_ok = !st.node_id.empty() && st.node_id.size() <= 63;
    for (char ch : st.node_id) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') {
        name_ok = false;
      }
    }
    if (!name_ok) {
      error(p + ".node_id", "is required for kind \"postgres\": 1..63 of [A-Za-z0-9._-]");
    }
  }

  void parse_http(const json& j, ControlPlaneSettings& cp) {
    const std::string p = "$.control_plane.http";
    if (!object(j, p,
                {"listen", "tls_cert_file", "tls_key_file", "public_url", "console_dir",
                 "role_groups", "session_ttl_s", "login_rate_per_minute", "login_rate_burst",
                 "threads", "break_glass", "oidc", "saml"})) {
      return;
    }
    HttpSettings& h = cp.http;
    str(j, "listen", p, h.listen, true);
    if (!h.listen.empty()) {
      std::string msg = check_listen_address(h.listen);
      if (!msg.empty()) error(p + ".listen", msg);
    }
    // TLS is not optional: the API carries bearer tokens and session cookies.
    str(j, "tls_cert_file", p, h.tls_cert_file, true);
    str(j, "tls_key_file", p, h.tls_key_file, true);
    if (!h.tls_cert_file.empty()) check_readable(p + ".tls_cert_file", h.tls_cert_file);
    if (!h.tls_key_file.empty()) check_readable(p + ".tls_key_file", h.tls_key_file);
    str(j, "public_url", p, h.public_url, true);
    if (!h.public_url.empty() &&
        (h.public_url.rfind("https://", 0) != 0 || h.public_url.size() <= 8 ||
         h.public_url.find_first_of(" \t\r\n?#") != std::string::npos)) {
      error(p + ".public_url", "must be an https:// URL without query or fragment");
    }
    str(j, "console_dir", p, h.console_dir);
    if (!h.console_dir.empty() && h.console_dir[0] != '/') {
      error(p + ".console_dir", "must be an absolute path");
    }
    if (const json* rg = field(j, "role_groups", p, false)) {
      const std::string rp = p + ".role_groups";
      if (object(*rg, rp, {"viewer", "reviewer", "operator", "admin"})) {
        strings(*rg, "viewer", rp, h.role_groups.viewer);
        strings(*rg, "reviewer", rp, h.role_groups.reviewer);
        strings(*rg, "operator", rp, h.role_groups.operators);
        strings(*rg, "admin", rp, h.role_groups.admin);
      }
    }
    integer(j, "session_ttl_s", p, h.session_ttl_s, 60, 7 * 86400);
    integer(j, "login_rate_per_minute", p, h.login_rate_per_minute, 1, 100000);
    integer(j, "login_rate_burst", p, h.login_rate_burst, 1, 100000);
    integer(j, "threads", p, h.threads, 1, 256);
    boolean(j, "break_glass", p, h.break_glass);
    if (h.break_glass && cp.admin_principals.empty()) {
      error(p + ".break_glass", "needs $.control_plane.admin_principals");
    }
    if (const json* o = field(j, "oidc", p, false)) parse_http_oidc(*o, h);
    if (const json* s = field(j, "saml", p, false)) parse_http_saml(*s, h);
  }

  void parse_http_saml(const json& j, HttpSettings& h) {
    const std::string p = "$.control_plane.http.saml";
    if (!object(j, p,
                {"idp_metadata_file", "entity_id", "groups_attribute", "name_attribute",
                 "clock_skew_s"})) {
      return;
    }
    HttpSamlSettings s;
    str(j, "idp_metadata_file", p, s.idp_metadata_file, true);
    if (!s.idp_metadata_file.empty()) check_readable(p + ".idp_metadata_file", s.idp_metadata_file);
    str(j, "entity_id", p, s.entity_id);
    str(j, "groups_attribute", p, s.groups_attribute);
    if (s.groups_attribute.empty()) error(p + ".groups_attribute", "must not be empty");
    str(j, "name_attribute", p, s.name_attribute);
    integer(j, "clock_skew_s", p, s.clock_skew_s, 0, 600);
    h.saml = std::move(s);
  }

  void parse_http_oidc(const json& j, HttpSettings& h) {
    const std::string p = "$.control_plane.http.oidc";
    static constexpr std::string_view kClientKeys[] = {
        "client_id",      "client_secret_file", "client_secret_env", "authorization_endpoint",
        "token_endpoint", "device_authorization_endpoint", "scopes", "name_claim"};
    static constexpr std::string_view kProviderKeys[] = {
        "name",     "issuer",       "audiences",  "jwks_file", "jwks_url",      "discovery_url",
        "ca_file",  "groups_claim", "algorithms", "leeway_s",  "jwks_refresh_s", "jwks_min_refresh_s"};
    if (!j.is_object()) {
      error(p, "must be an object");
      return;
    }
    json provider = json::object();
    for (const auto& [key, value] : j.items()) {
      bool client = std::find(std::begin(kClientKeys), std::end(kClientKeys), key) !=
                    std::end(kClientKeys);
      bool prov = std::find(std::begin(kProviderKeys), std::end(kProviderKeys), key) !=
                  std::end(kProviderKeys);
      if (prov) provider[key] = value;
      if (!client && !prov) error(p + "." + key, "unknown key " + json_quote(key));
    }
    HttpOidcSettings o;
    str(j, "client_id", p, o.client_id, true);
    if (!provider.contains("audiences") && !o.client_id.empty()) {
      provider["audiences"] = json::array({o.client_id});
    }
    if (!provider.contains("name")) provider["name"] = "people";
    // The provider keys and checks are $.identity.providers[i]'s (one parser).
    Config scratch;
    std::set<std::string> issuers, names;
    parse_provider(provider, p, scratch, issuers, names);
    if (!scratch.identity_providers.empty()) o.provider = scratch.identity_providers.front();
    o.client_secret =
        secret_source(j, p, "client_secret_file", "client_secret_env", false);
    str(j, "authorization_endpoint", p, o.authorization_endpoint, true);
    str(j, "token_endpoint", p, o.token_endpoint, true);
    str(j, "device_authorization_endpoint", p, o.device_authorization_endpoint);
    for (auto [key, value] : {std::pair{"authorization_endpoint", &o.authorization_endpoint},
                              std::pair{"token_endpoint", &o.token_endpoint},
                              std::pair{"device_authorization_endpoint",
                                        &o.device_authorization_endpoint}}) {
      if (!value->empty() && value->rfind("https://", 0) != 0) {
        error(p + "." + key, "must be an https:// URL");
      }
    }
    str(j, "scopes", p, o.scopes);
    str(j, "name_claim", p, o.name_claim);
    h.oidc = std::move(o);
  }

  void parse_admin_socket_access(const json& j, const std::string& p, ControlPlaneSettings& s) {
    std::string mode;
    str(j, "admin_socket_mode", p, mode);
    if (!mode.empty()) {
      // "0660" or "660": owner, group, others digits; no setuid/setgid/sticky.
      std::string digits = mode.size() == 4 && mode[0] == '0' ? mode.substr(1) : mode;
      if (digits.size() != 3 || digits.find_first_not_of("01234567") != std::string::npos) {
        error(p + ".admin_socket_mode",
              "must be an octal mode string such as \"0660\", got " + json_quote(mode));
      } else {
        auto m = static_cast<mode_t>(std::stoul(digits, nullptr, 8));
        if ((m & 0007) != 0) {
          error(p + ".admin_socket_mode",
                "must not grant any permission to others (last digit must be 0), got " +
                    json_quote(mode));
        } else if ((m & 0600) != 0600) {
          error(p + ".admin_socket_mode",
                "must give the owner read and write (06x0), got " + json_quote(mode));
        } else {
          s.admin_socket_mode = m;
        }
      }
    }
    str(j, "admin_socket_group", p, s.admin_socket_group);
    if (!s.admin_socket_group.empty() && options_.check_environment) {
      auto gid = lookup_group(s.admin_socket_group);
      if (!gid.is_ok()) error(p + ".admin_socket_group", gid.status().message());
    }
    if ((j.contains("admin_socket_mode") || j.contains("admin_socket_group")) &&
        !j.contains("admin_socket")) {
      error(p + ".admin_socket", "is required when admin_socket_mode or admin_socket_group is set");
    }
  }

  void parse_identity(const json& j, Config& c) {
    const std::string p = "$.identity";
    if (!object(j, p, {"providers", "service_keys"})) return;
    std::set<std::string> issuers, names;
    array_of_objects(j, "providers", p, false, [&](const json& e, const std::string& ep) {
      parse_provider(e, ep, c, issuers, names);
    });
    std::set<std::string> ids;
    array_of_objects(j, "service_keys", p, false, [&](const json& e, const std::string& ep) {
      if (!object(e, ep, {"id", "salt", "hash", "identity", "groups"})) return;
      identity::ServiceKeyConfig k;
      str(e, "id", ep, k.id, true);
      if (!k.id.empty() && !ids.insert(k.id).second) {
        error(ep + ".id", "duplicate service key id " + json_quote(k.id));
      }
      str(e, "salt", ep, k.salt, true);
      str(e, "hash", ep, k.hash, true);
      str(e, "identity", ep, k.identity, true);
      strings(e, "groups", ep, k.groups, true, true);
      if (!k.id.empty() && !k.salt.empty() && !k.hash.empty()) {
        // identity's checks: id syntax, salt encoding, hash format and KDF bounds.
        Status st = identity::validate_service_key_config(k);
        if (!st.is_ok()) error(ep, st.message());
      }
      c.service_keys.push_back(std::move(k));
    });
  }

  void parse_provider(const json& e, const std::string& ep, Config& c,
                      std::set<std::string>& issuers, std::set<std::string>& names) {
    if (!object(
            e, ep,
            {"name", "issuer", "audiences", "jwks_file", "jwks_url", "discovery_url", "ca_file",
             "groups_claim", "algorithms", "leeway_s", "jwks_refresh_s", "jwks_min_refresh_s"})) {
      return;
    }
    identity::IdentityProviderConfig pr;
    const size_t errors_before = error_count();
    str(e, "issuer", ep, pr.issuer, true);
    if (!pr.issuer.empty() && !issuers.insert(pr.issuer).second) {
      error(ep + ".issuer", "duplicate issuer " + json_quote(pr.issuer));
    }
    str(e, "name", ep, pr.name);
    if (pr.name.empty()) pr.name = pr.issuer;
    if (!pr.name.empty() && !names.insert(pr.name).second) {
      error(ep + ".name", "duplicate provider name " + json_quote(pr.name));
    }
    strings(e, "audiences", ep, pr.audiences, true, true);
    str(e, "jwks_file", ep, pr.jwks_file);
    str(e, "jwks_url", ep, pr.jwks_url);
    str(e, "discovery_url", ep, pr.discovery_url);
    str(e, "ca_file", ep, pr.ca_file);
    int sources = !pr.jwks_file.empty() + !pr.jwks_url.empty() + !pr.discovery_url.empty();
    if (sources != 1) error(ep, "needs exactly one of jwks_file, jwks_url, discovery_url");
    for (auto [key, value] :
         {std::pair{"jwks_url", &pr.jwks_url}, std::pair{"discovery_url", &pr.discovery_url}}) {
      if (!value->empty() && value->rfind("https://", 0) != 0) {
        error(ep + "." + key, "must be an https:// URL");
      }
    }
    if (!pr.jwks_file.empty()) check_readable(ep + ".jwks_file", pr.jwks_file);
    if (!pr.ca_file.empty()) check_readable(ep + ".ca_file", pr.ca_file);
    str(e, "groups_claim", ep, pr.groups_claim);
    strings(e, "algorithms", ep, pr.algorithms, false, true, [](const std::string& a) {
      if (a == "none" || a.rfind("HS", 0) == 0) {
        return "algorithm " + json_quote(a) + " is not allowed (unsigned or symmetric)";
      }
      return std::string();
    });
    int leeway = 60, refresh = 3600, min_refresh = 30;
    integer(e, "leeway_s", ep, leeway, 0, 300);
    integer(e, "jwks_refresh_s", ep, refresh, 10, 86400);
    integer(e, "jwks_min_refresh_s", ep, min_refresh, 1, 3600);
    pr.leeway_seconds = leeway;
    pr.refresh_interval_seconds = refresh;
    pr.refresh_min_interval_seconds = min_refresh;
    if (error_count() == errors_before) {
      // identity's own checks (the TokenValidator refuses what they refuse): known
      // algorithms, audiences, intervals...
      Status st = identity::validate_provider_config(pr);
      if (!st.is_ok()) error(ep, st.message());
    }
    c.identity_providers.push_back(std::move(pr));
  }

  void parse_target(const json& e, const std::string& ep, Config& c) {
    if (!object(e, ep,
                {"name", "host", "port", "unix_socket", "database", "role", "credential", "tls",
                 "pool_mode", "pool_size", "pool_wait_timeout_ms"})) {
      return;
    }
    Target t;
    str(e, "name", ep, t.name, true);
    if (!t.name.empty() && !is_word(t.name, "-.")) {
      error(ep + ".name", "must be letters, digits, '_', '-' or '.'");
    }
    for (const Target& other : c.targets) {
      if (!t.name.empty() && other.name == t.name) {
        error(ep + ".name", "duplicate target " + json_quote(t.name));
      }
    }
    str(e, "host", ep, t.host);
    str(e, "unix_socket", ep, t.unix_socket);
    integer(e, "port", ep, t.port, 1, 65535);
    if (t.host.empty() == t.unix_socket.empty()) {
      error(ep, "needs exactly one of host, unix_socket");
    }
    if (!t.unix_socket.empty() && t.unix_socket[0] != '/') {
      error(ep + ".unix_socket", "must be an absolute directory path");
    }
    str(e, "database", ep, t.database, true);
    str(e, "role", ep, t.role, true);
    named(e, "pool_mode", ep, "pool mode", t.pool_mode);
    integer(e, "pool_size", ep, t.pool_size, 1, 10000);
    integer(e, "pool_wait_timeout_ms", ep, t.pool_wait_timeout_ms, 1, 3600000);
    if (const json* cred = field(e, "credential", ep, true)) {
      std::string cp = ep + ".credential";
      if (object(*cred, cp, {"file", "env"})) {
        if (auto source = secret_source(*cred, cp, "file", "env", true)) t.credential = *source;
      }
    }
    bool mode_known = true;
    if (const json* tls = field(e, "tls", ep, false)) {
      std::string tp = ep + ".tls";
      if (object(*tls, tp, {"mode", "ca_file"})) {
        mode_known = named(*tls, "mode", tp, "TLS mode", t.tls_mode, true);
        str(*tls, "ca_file", tp, t.ca_file);
        if (!t.ca_file.empty()) {
          if (t.tls_mode == UpstreamTlsMode::kDisable) {
            error(tp + ".ca_file", "is only meaningful with mode verify-full or require");
          }
          check_readable(tp + ".ca_file", t.ca_file);
        }
      }
    }
    if (!t.unix_socket.empty()) {
      if (mode_known && field(e, "tls", ep, false) != nullptr &&
          t.tls_mode != UpstreamTlsMode::kDisable) {
        error(ep + ".tls.mode", "must be \"disable\" for a unix_socket target");
      }
      t.tls_mode = UpstreamTlsMode::kDisable;
    }
    c.targets.push_back(std::move(t));
  }

  std::string check_glob(const std::string& g, const char* what) {
    if (g == "*") return {};
    size_t dots = std::count(g.begin(), g.end(), '.');
    if (dots != 1 || g.front() == '.' || g.back() == '.' || !is_word(g, ".*?$")) {
      return std::string("must be a \"schema.") + what + "\" glob (letters, digits, _, $, * ?)";
    }
    return {};
  }

  // policy.allowed_startup_settings: globs of setting names (letters, digits, _ . * ?).
  void parse_startup_settings(const json& e, const std::string& ep, policy::Policy& pol) {
    if (!e.is_object() || !e.contains("allowed_startup_settings")) return;
    std::vector<std::string> globs;
    strings(e, "allowed_startup_settings", ep, globs, false, false, [](const std::string& g) {
      for (char ch : g) {
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '*' &&
            ch != '?') {
          return std::string("must be a setting name glob (letters, digits, _ . * ?)");
        }
      }
      std::string lower = ascii_lower(g);
      if (lower == "role" || lower == "session_authorization") {
        return "\"" + g + "\" changes the identity of the session and can never be allowed";
      }
      return std::string();
    });
    pol.allowed_startup_settings = std::move(globs);
  }

  void parse_policy(const json& e, const std::string& ep, Config& c) {
    if (!object(
            e, ep,
            {"name", "groups", "targets", "allowed_kinds", "allowed_relations", "allowed_functions",
             "read_only", "approve_kinds", "rule_sets", "masks", "deny_masked_in_expressions",
             "approvals", "recording", "allow_function_call", "approve_unbounded_writes",
             "approve_when_rows_over", "dry_run", "token_expiry", "allowed_startup_settings"})) {
      return;
    }
    policy::Policy pol;
    str(e, "name", ep, pol.name, true);
    for (const auto& other : c.policies) {
      if (!pol.name.empty() && other.name == pol.name) {
        error(ep + ".name", "duplicate policy " + json_quote(pol.name));
      }
    }
    strings(e, "groups", ep, pol.groups, true, true);
    strings(e, "targets", ep, pol.targets, true, true);
    auto kind_check = [this](const std::string& k) {
      bool known = options_.known_statement_kind ? options_.known_statement_kind(k)
                                                 : policy::is_kind_entry(k);
      return known ? std::string() : "unknown statement kind " + json_quote(k);
    };
    strings(e, "allowed_kinds", ep, pol.allowed_kinds, false, false, kind_check);
    strings(e, "allowed_relations", ep, pol.allowed_relations, false, false,
            [this](const std::string& g) { return check_glob(g, "table"); });
    strings(e, "allowed_functions", ep, pol.allowed_functions, false, false,
            [this](const std::string& g) { return check_glob(g, "function"); });
    boolean(e, "read_only", ep, pol.read_only);
    strings(e, "approve_kinds", ep, pol.approve_kinds, false, false, kind_check);
    protocol::read_rule_sets(*this, e, ep, options_.known_rule_set, pol.rule_sets);
    array_of_objects(e, "masks", ep, false,
                     [&](const json& m, const std::string& mp) { parse_mask(m, mp, pol); });
    boolean(e, "deny_masked_in_expressions", ep, pol.deny_masked_in_expressions);
    boolean(e, "allow_function_call", ep, pol.allow_function_call);
    std::string token_expiry;
    str(e, "token_expiry", ep, token_expiry);
    if (token_expiry == "keep") {
      pol.keep_session_past_token_expiry = true;
    } else if (!token_expiry.empty() && token_expiry != "end") {
      error(ep + ".token_expiry", "unknown value " + json_quote(token_expiry) + " (end, keep)");
    }
    parse_startup_settings(e, ep, pol);
    if (const json* a = field(e, "approvals", ep, false)) {
      std::string ap = ep + ".approvals";
      if (object(*a, ap,
                 {"approver_groups", "timeout_s", "required_approvals", "break_glass_groups"})) {
        strings(*a, "approver_groups", ap, pol.approvals.approver_groups, true, true);
        integer(*a, "timeout_s", ap, pol.approvals.timeout_seconds, 1, 86400);
        integer(*a, "required_approvals", ap, pol.approvals.required_approvals, 1, 16);
        strings(*a, "break_glass_groups", ap, pol.approvals.break_glass_groups);
      }
    }
    if (!pol.approve_kinds.empty() && pol.approvals.approver_groups.empty()) {
      error(ep + ".approvals.approver_groups", "is required when approve_kinds is set");
    }
    parse_effect_approvals(e, ep, pol);
    if (const json* r = field(e, "recording", ep, false)) {
      std::string rp = ep + ".recording";
      if (object(*r, rp, {"level", "required", "row_cap"})) {
        named(*r, "level", rp, "recording level", pol.recording);
        boolean(*r, "required", rp, pol.recording_required);
        integer(*r, "row_cap", rp, pol.recording_row_cap, 0, 1000000);
      }
    }
    if (pol.read_only) {
      static const std::set<std::string> kWrites = {
          "insert", "update", "delete", "merge", "truncate", "copy_from_stdin", "ddl"};
      for (size_t i = 0; i < pol.allowed_kinds.size(); ++i) {
        if (kWrites.count(pol.allowed_kinds[i])) {
          error(ep + ".allowed_kinds[" + std::to_string(i) + "]",
                "read_only policy cannot allow " + json_quote(pol.allowed_kinds[i]) +
                    " (set read_only to false)");
        }
      }
    }
    c.policies.push_back(std::move(pol));
  }

  // Approvals by effect (docs/approvals.md).
  void parse_effect_approvals(const json& e, const std::string& ep, policy::Policy& pol) {
    boolean(e, "approve_unbounded_writes", ep, pol.approve_unbounded_writes);
    integer(e, "approve_when_rows_over", ep, pol.approve_when_rows_over, 0, 2000000000);
    boolean(e, "dry_run", ep, pol.dry_run);
    if (pol.approve_when_rows_over > 0 && pol.approvals.approver_groups.empty()) {
      error(ep + ".approvals.approver_groups", "is required when approve_when_rows_over is set");
    }
  }

  void parse_mask(const json& m, const std::string& mp, policy::Policy& pol) {
    if (!object(m, mp,
                {"column", "name", "type", "function", "text", "keep_last", "allow_predicates"})) {
      return;
    }
    policy::MaskRule r;
    str(m, "column", mp, r.column_glob);
    str(m, "name", mp, r.name_pattern);
    str(m, "type", mp, r.type_name);
    int selectors = !r.column_glob.empty() + !r.name_pattern.empty() + !r.type_name.empty();
    if (selectors != 1) error(mp, "needs exactly one of column, name, type");
    if (!r.column_glob.empty() &&
        (std::count(r.column_glob.begin(), r.column_glob.end(), '.') != 2 ||
         !is_word(r.column_glob, ".*?$"))) {
      error(mp + ".column", "must be a \"schema.table.column\" glob");
    }
    str(m, "function", mp, r.function, true);
    static const std::set<std::string> kFunctions = {"redact", "partial", "hash", "email", "null"};
    if (!r.function.empty() && !kFunctions.count(r.function)) {
      error(mp + ".function", "unknown mask function " + json_quote(r.function));
    }
    if (m.contains("text") && r.function != "redact") {
      error(mp + ".text", "only applies to function \"redact\"");
    }
    if (m.contains("keep_last") && r.function != "partial") {
      error(mp + ".keep_last", "only applies to function \"partial\"");
    }
    if (const json* t = field(m, "text", mp, false)) {
      if (t->is_string()) {
        r.text = t->get<std::string>();
      } else {
        error(mp + ".text", "must be a string");
      }
    }
    integer(m, "keep_last", mp, r.keep_last, 0, 64);
    parse_mask_predicates(m, mp, r);
    pol.masks.push_back(std::move(r));
  }

  // Predicate forms a mask lets through (docs/masking.md, "Predicates"): "is_null",
  // "equality_join"; column masks only (type masks are not seen by the lineage).
  void parse_mask_predicates(const json& m, const std::string& mp, policy::MaskRule& r) {
    strings(m, "allow_predicates", mp, r.allow_predicates);
    for (const std::string& p : r.allow_predicates) {
      if (p != "is_null" && p != "equality_join") {
        error(mp + ".allow_predicates",
              "unknown predicate form " + json_quote(p) + " (is_null, equality_join)");
      }
    }
    if (!r.allow_predicates.empty() && !r.type_name.empty()) {
      error(mp + ".allow_predicates", "only applies to column and name masks");
    }
  }

  void parse_audit(const json& j, Config& c) {
    if (!object(j, "$.audit", {"sinks"})) return;
    array_of_objects(j, "sinks", "$.audit", false, [&](const json& e, const std::string& ep) {
      if (!object(e, ep, {"type", "path", "conninfo_file", "target", "table"})) return;
      AuditSink s;
      std::string type;
      str(e, "type", ep, type, true);
      str(e, "path", ep, s.path);
      str(e, "conninfo_file", ep, s.conninfo_file);
      str(e, "target", ep, s.target);
      str(e, "table", ep, s.table);
      if (type == "file") {
        s.kind = AuditSink::Kind::kFile;
        if (s.path.empty()) s.path = "audit.log";
      } else if (type == "stderr") {
        s.kind = AuditSink::Kind::kStderr;
        if (!s.path.empty()) error(ep + ".path", "only applies to type \"file\"");
      } else if (type == "postgres") {
        s.kind = AuditSink::Kind::kPostgres;
        if (!s.path.empty()) error(ep + ".path", "only applies to type \"file\"");
        if (s.conninfo_file.empty() == s.target.empty()) {
          error(ep, "needs exactly one of conninfo_file, target");
        }
        if (!s.conninfo_file.empty()) check_readable(ep + ".conninfo_file", s.conninfo_file);
        if (!is_word(s.table, ".")) error(ep + ".table", "must be a table name");
      } else if (!type.empty()) {
        error(ep + ".type",
              "unknown audit sink type " + json_quote(type) + " (file, stderr, postgres)");
      }
      if (s.kind != AuditSink::Kind::kPostgres &&
          (!s.conninfo_file.empty() || !s.target.empty() || e.contains("table"))) {
        error(ep, "conninfo_file, target and table only apply to type \"postgres\"");
      }
      c.audit_sinks.push_back(std::move(s));
    });
  }

  void parse_approvals(const json& j, Config& c) {
    const std::string p = "$.approvals";
    if (!object(j, p,
                {"webhook_url", "webhook_ca_file", "webhook_timeout_ms",
                 "webhook_connect_timeout_ms", "webhook_authorization_file",
                 "webhook_authorization_env", "reminder_interval_s", "identity_links", "chat"})) {
      return;
    }
    ApprovalsSettings& a = c.approvals;
    integer(j, "reminder_interval_s", p, a.reminder_interval_s, 0, 3600);
    std::map<std::string, std::string> owner;  // identity -> the person it is linked to
    array_of_objects(j, "identity_links", p, false, [&](const json& e, const std::string& ep) {
      if (!object(e, ep, {"person", "identities"})) return;
      ApprovalsSettings::IdentityLink link;
      str(e, "person", ep, link.person, true);
      strings(e, "identities", ep, link.identities, true, true);
      std::vector<std::string> all = link.identities;
      all.push_back(link.person);
      for (const std::string& id : all) {
        auto [it, fresh] = owner.emplace(id, link.person);
        if (!fresh && it->second != link.person) {
          error(ep, json_quote(id) + " is already linked to " + json_quote(it->second));
        }
      }
      a.identity_links.push_back(std::move(link));
    });
    if (const json* chat = field(j, "chat", p, false)) parse_chat(*chat, a);
    str(j, "webhook_url", p, a.webhook_url);
    if (!a.webhook_url.empty()) {
      auto url = net::parse_url(a.webhook_url, /*allow_plain_http=*/true);
      if (!url) error(p + ".webhook_url", url.status().message());
    }
    str(j, "webhook_ca_file", p, a.webhook_ca_file);
    if (!a.webhook_ca_file.empty()) check_readable(p + ".webhook_ca_file", a.webhook_ca_file);
    integer(j, "webhook_timeout_ms", p, a.webhook_timeout_ms, 100, 60000);
    integer(j, "webhook_connect_timeout_ms", p, a.webhook_connect_timeout_ms, 100, 60000);
    a.webhook_authorization =
        secret_source(j, p, "webhook_authorization_file", "webhook_authorization_env", false);
    if (a.webhook_url.empty()) {
      for (const char* key : {"webhook_ca_file", "webhook_timeout_ms", "webhook_connect_timeout_ms",
                              "webhook_authorization_file", "webhook_authorization_env"}) {
        if (j.contains(key)) error(p + "." + key, "needs webhook_url");
      }
    }
  }

  void parse_chat(const json& j, ApprovalsSettings& a) {
    const std::string p = "$.approvals.chat";
    if (!object(j, p,
                {"webhook_url", "webhook_ca_file", "signing_secret_file", "signing_secret_env",
                 "timestamp_window_s", "users"})) {
      return;
    }
    ApprovalsSettings::Chat chat;
    str(j, "webhook_url", p, chat.webhook_url, true);
    if (!chat.webhook_url.empty()) {
      auto url = net::parse_url(chat.webhook_url, /*allow_plain_http=*/true);
      if (!url) error(p + ".webhook_url", url.status().message());
    }
    str(j, "webhook_ca_file", p, chat.webhook_ca_file);
    if (!chat.webhook_ca_file.empty()) check_readable(p + ".webhook_ca_file", chat.webhook_ca_file);
    chat.signing_secret = secret_source(j, p, "signing_secret_file", "signing_secret_env", true);
    integer(j, "timestamp_window_s", p, chat.timestamp_window_s, 30, 900);
    if (const json* users = field(j, "users", p, true)) {
      if (!users->is_object()) {
        error(p + ".users", "must be an object: chat user id -> {identity, groups}");
      } else {
        for (const auto& [uid, u] : users->items()) {
          std::string up = p + ".users." + uid;
          if (!object(u, up, {"identity", "groups"})) continue;
          ApprovalsSettings::ChatUser user;
          str(u, "identity", up, user.identity, true);
          strings(u, "groups", up, user.groups, true, true);
          chat.users[uid] = std::move(user);
        }
      }
    }
    a.chat = std::move(chat);
  }

  void parse_masking(const json& j, Config& c) {
    const std::string p = "$.masking";
    if (!object(j, p, {"key_file", "key_env", "catalog_ttl_s"})) return;
    c.masking.key = secret_source(j, p, "key_file", "key_env", false);
    integer(j, "catalog_ttl_s", p, c.masking.catalog_ttl_s, 1, 86400);
  }

  // $.recording.sync: "always" or an interval in ms; $.recording.checkpoint_interval_ms.
  void parse_recording_sync(const json& j, Config& c) {
    const std::string p = "$.recording";
    if (const json* s = field(j, "sync", p, false)) {
      if (s->is_string() && s->get<std::string>() == "always") {
        c.recording.sync_always = true;
      } else if (s->is_number_integer() && s->get<int64_t>() >= 1 && s->get<int64_t>() <= 60000) {
        c.recording.sync_interval_ms = s->get<int>();
      } else {
        error(p + ".sync", "must be \"always\" or an interval in milliseconds (1..60000)");
      }
    }
    integer(j, "checkpoint_interval_ms", p, c.recording.checkpoint_interval_ms, 100, 3600000);
  }

  void parse_recording(const json& j, Config& c) {
    const std::string p = "$.recording";
    if (!object(
            j, p,
            {"retention", "queue_capacity", "hold_timeout_ms", "sync", "checkpoint_interval_ms"})) {
      return;
    }
    integer(j, "queue_capacity", p, c.recording.queue_capacity, 16, 1 << 20);
    parse_recording_sync(j, c);
    protocol::read_recording_hold_timeout(*this, j, c.recording.hold_timeout_ms);
    if (const json* r = field(j, "retention", p, false)) {
      std::string rp = p + ".retention";
      if (object(*r, rp, {"max_age_days", "max_total_bytes", "interval_s"})) {
        integer(*r, "max_age_days", rp, c.recording.retention_max_age_days, 0, 36500);
        integer(*r, "interval_s", rp, c.recording.retention_interval_s, 10, 86400);
        if (const json* b = field(*r, "max_total_bytes", rp, false)) {
          if (!b->is_number_unsigned()) {
            error(rp + ".max_total_bytes", "must be a non-negative integer");
          } else {
            c.recording.retention_max_total_bytes = b->get<uint64_t>();
          }
        }
      }
    }
  }

  void parse_limits(const json& j, const std::string& p, Config& c) {
    protocol::read_limits(*this, j, p, c.limits);
  }

  void parse_metrics(const json& j, Config& c) {
    const std::string p = "$.metrics";
    if (!object(j, p, {"controlplane_listen", "dataplane_listen"})) return;
    protocol::read_listen_address(*this, j, "controlplane_listen", p,
                                  c.metrics.controlplane_listen);
    protocol::read_listen_address(*this, j, "dataplane_listen", p, c.metrics.dataplane_listen);
    if (!c.metrics.controlplane_listen.empty() &&
        c.metrics.controlplane_listen == c.metrics.dataplane_listen) {
      error(p + ".dataplane_listen",
            "must differ from controlplane_listen (both processes "
            "usually run on one host)");
    }
  }

  void cross_check(const json& root, Config& c) {
    for (size_t i = 0; i < c.policies.size(); ++i) {
      for (size_t k = 0; k < c.policies[i].targets.size(); ++k) {
        const std::string& t = c.policies[i].targets[k];
        if (t != "*" && c.find_target(t) == nullptr) {
          error("$.policies[" + std::to_string(i) + "].targets[" + std::to_string(k) + "]",
                "unknown target " + json_quote(t));
        }
      }
    }
    if (c.policies.empty() && root.contains("policies") && root["policies"].is_array()) {
      error("$.policies", "must not be empty (nothing could be allowed)");
    }
    if (c.identity_providers.empty() && c.service_keys.empty() && root.is_object() &&
        !root.contains("identity")) {
      error("$.identity", "is required: configure providers or service_keys");
    }
    for (size_t i = 0; i < c.audit_sinks.size(); ++i) {
      const AuditSink& s = c.audit_sinks[i];
      if (s.kind == AuditSink::Kind::kPostgres && !s.target.empty() &&
          c.find_target(s.target) == nullptr) {
        error("$.audit.sinks[" + std::to_string(i) + "].target",
              "unknown target " + json_quote(s.target));
      }
    }
    bool needs_mask_key = false;
    for (const policy::Policy& pol : c.policies) {
      for (const policy::MaskRule& m : pol.masks) {
        if (m.function == "hash") needs_mask_key = true;
      }
    }
    if (needs_mask_key && !c.masking.key) {
      error("$.masking", "key_file or key_env is required: a policy uses the hash mask");
    }
    for (AuditSink& s : c.audit_sinks) {
      if (s.kind == AuditSink::Kind::kFile && !s.path.empty() && s.path[0] != '/' &&
          !c.control_plane.state_dir.empty()) {
        s.path = c.control_plane.state_dir + "/" + s.path;
      }
    }
    if (c.audit_sinks.empty() && !c.control_plane.state_dir.empty()) {
      c.audit_sinks.push_back({AuditSink::Kind::kFile, c.control_plane.state_dir + "/audit.log"});
    }
  }

 private:
  const ValidationOptions& options_;
};

}  // namespace

Result<gid_t> lookup_group(const std::string& name) {
  std::vector<char> buf(16384);
  group g{};
  group* found = nullptr;
  int rc = getgrnam_r(name.c_str(), &g, buf.data(), buf.size(), &found);
  if (rc != 0)
    return unavailable("cannot look up group " + json_quote(name) + ": " + std::strerror(rc));
  if (found == nullptr) return invalid_argument("unknown group " + json_quote(name));
  return found->gr_gid;
}

std::string Config::console_public_url() const {
  // Without console files there is no page behind the link (/approvals/ID would be a 404).
  return control_plane.http.console_dir.empty() ? std::string() : control_plane.http.public_url;
}

const Target* Config::find_target(std::string_view name) const {
  for (const Target& t : targets) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const policy::Policy* Config::select_policy(const std::vector<std::string>& groups,
                                            std::string_view target) const {
  for (const policy::Policy& p : policies) {
    bool group_ok = false;
    for (const std::string& g : p.groups) {
      if (g == "*" || std::find(groups.begin(), groups.end(), g) != groups.end()) {
        group_ok = true;
        break;
      }
    }
    bool target_ok = false;
    for (const std::string& t : p.targets) {
      if (t == "*" || policy::glob_match(t, target)) {
        target_ok = true;
        break;
      }
    }
    if (group_ok && target_ok) return &p;
  }
  return nullptr;
}

std::string LoadOutcome::error_text() const {
  std::string out;
  for (const ConfigError& e : errors) out += e.to_string() + "\n";
  return out;
}

LoadOutcome parse_config(std::string_view json_text, uint64_t version,
                         const ValidationOptions& options) {
  LoadOutcome outcome;
  json root = parse_json_document(json_text, outcome.errors);
  if (root.is_discarded()) return outcome;
  auto config = std::make_shared<Config>();
  Parser parser(options, outcome.errors);
  parser.parse_root(root, *config);
  if (!outcome.errors.empty()) return outcome;
  config->version = version;
  for (policy::Policy& p : config->policies) p.version = p.masks_version = version;
  outcome.config = std::move(config);
  return outcome;
}

LoadOutcome load_config_file(const std::string& path, uint64_t version,
                             const ValidationOptions& options) {
  LoadOutcome outcome;
  std::string text;
  if (!read_document_file(path, kMaxConfigFileBytes, text, outcome.errors)) return outcome;
  return parse_config(text, version, options);
}

LoadOutcome ConfigStore::reload() { return reload(nullptr); }

LoadOutcome ConfigStore::reload(
    const std::function<std::vector<ConfigError>(const Config&)>& accept) {
  std::lock_guard<std::mutex> serial(reload_mu_);
  uint64_t candidate = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The version is only consumed by a successful load, so versions stay dense in use.
    candidate =
        std::max(last_version_ + 1,
                 static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count()));
  }
  LoadOutcome outcome = load_config_file(path_, candidate, options_);
  if (outcome.ok()) {
    std::shared_ptr<const Config> previous = current();
    if (previous) {
      // A policy whose masks did not change keeps their version: sessions under it re-check
      // nothing (the copy is the one place the new config is written to).
      auto next = std::make_shared<Config>(*outcome.config);
      for (policy::Policy& p : next->policies) {
        for (const policy::Policy& old : previous->policies) {
          if (old.name == p.name && policy::masks_fingerprint(old) == policy::masks_fingerprint(p)) {
            p.masks_version = old.masks_version;
          }
        }
      }
      outcome.config = std::move(next);
    }
  }
  if (outcome.ok() && accept) {
    std::vector<ConfigError> errors = accept(*outcome.config);
    if (!errors.empty()) {
      outcome.config = nullptr;
      outcome.errors = std::move(errors);
    }
  }
  if (outcome.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    last_version_ = candidate;
    current_ = outcome.config;
  }
  return outcome;
}

std::shared_ptr<const Config> ConfigStore::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

}  // namespace pgwarden::config
