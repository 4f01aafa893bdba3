// pgwarden configuration: one JSON file -> validated, immutable structs.
//
// docs/configuration.md is the operator reference; docs/examples/pgwarden.json is a complete
// example. Validation collects EVERY error, each with the JSON path of the offending value
// (`$.policies[2].masks[0].function: unknown mask function "blur"`), and rejects unknown keys.
// A Config is immutable once built and shared as std::shared_ptr<const Config>; ConfigStore
// swaps in a new one atomically on reload and keeps the old one when the new file is invalid.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json_reader.h"
#include "common/protocol/dataplane_settings.h"
#include "controlplane/budgets/budget_rule.h"
#include "controlplane/identity/identity.h"
#include "controlplane/policy/policy.h"
#include "controlplane/vault/credential_hash.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::config {

// $.listeners.dataplane and $.limits are pgwarden-dp's: defined (and read) in
// common/protocol/dataplane_settings.h, which both processes include.
using DataplaneListener = protocol::DataplaneListener;
using LimitsSettings = protocol::LimitsSettings;

// $.control_plane: the cp process itself.
struct AdminPrincipal {
  std::string name;
  vault::CredentialHash credential;
  std::vector<std::string> groups;
};

// $.control_plane.state_store (docs/scale-out.md): where approvals, standing grants,
// revocations, killed sessions, the session registry, rule-set generations, the audit stream
// and the recordings index live. kFile (the default): the files in state_dir, one host.
// kPostgres: one PostgreSQL database shared by several gateway nodes; the conninfo (with its
// password) is read from dsn_file and never logged.
struct StateStoreSettings {
  enum class Kind { kFile, kPostgres };
  Kind kind = Kind::kFile;
  std::string dsn_file;  // kPostgres: a file holding a libpq conninfo (mode 0600 advised)
  std::string node_id;   // kPostgres: this node's name in the store, unique per node
  int connect_timeout_ms = 2000;
  // kPostgres, recordings of other nodes (docs/scale-out.md): this node's HTTPS admin API as
  // the other nodes reach it ("https://gw-1.internal:8443"; needs control_plane.http), the
  // fleet's node key (a secret file, the same on every node) and the CA that verifies the
  // other nodes' HTTPS certificates ("" = the system's). All optional: without them, replay a
  // recording on the node that holds it.
  std::string admin_url;
  std::string node_key_file;
  std::string node_ca_file;
  // kPostgres: how often this node writes its budget usage to the store (docs/budgets.md).
  int budget_flush_ms = 200;
};

// $.control_plane.http.role_groups: which SSO groups give which role on the HTTPS admin API
// (controlplane/web/roles.h). A person gets the highest role any of their groups maps to.
struct RoleGroups {
  std::vector<std::string> viewer;
  std::vector<std::string> reviewer;
  std::vector<std::string> operators;  // "operator"
  std::vector<std::string> admin;
};

// $.control_plane.http.oidc: the identity provider for people (not agents). Its tokens are
// accepted as bearer tokens on the HTTPS API and it runs the browser login (authorization
// code + PKCE) and `pgwardenctl login` (device code).
struct HttpOidcSettings {
  // issuer, audiences (default [client_id]), jwks_file / jwks_url / discovery_url, ca_file,
  // groups_claim, algorithms, leeway: the same keys and checks as $.identity.providers[i].
  identity::IdentityProviderConfig provider;
  std::string client_id;
  std::optional<vault::SecretSource> client_secret;  // client_secret_file / _env; optional
  std::string authorization_endpoint;                // https:// URL
  std::string token_endpoint;                        // https:// URL
  std::string device_authorization_endpoint;         // https:// URL; "" = no device flow
  std::string scopes = "openid profile email groups";
  std::string name_claim = "preferred_username";  // falls back to "sub"
};

// $.control_plane.http.saml: the console's SAML 2.0 service provider (controlplane/sso). The
// ACS is <public_url>/auth/saml/acs; groups map to roles through role_groups, as for OIDC.
struct HttpSamlSettings {
  std::string idp_metadata_file;  // the IdP's EntityDescriptor (signing cert, SSO URL)
  std::string entity_id;          // ours; "" = <public_url>/auth/saml/metadata
  std::string groups_attribute = "groups";
  std::string name_attribute;  // "" = the Subject's NameID
  int clock_skew_s = 60;
};

// $.control_plane.http: the HTTPS admin API, people's SSO logins and the web console
// (controlplane/web/https_server.h). Off while listen is empty; TLS is required.
struct HttpSettings {
  std::string listen;  // "ADDRESS:PORT" (numeric IPv4 or bracketed IPv6)
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string public_url;   // https://host[:port] as browsers reach it (redirects, Origin)
  std::string console_dir;  // static console files served under /console/; "" = none
  RoleGroups role_groups;
  int session_ttl_s = 8 * 3600;  // browser sessions end this long after login
  int login_rate_per_minute = 10;  // per source IP, on /auth/* login endpoints
  int login_rate_burst = 10;
  int threads = 8;             // HTTPS worker threads
  bool break_glass = false;    // admin_principals may log in with HTTP Basic
  std::optional<HttpOidcSettings> oidc;
  std::optional<HttpSamlSettings> saml;
};

struct ControlPlaneSettings {
  std::string socket_path;  // dp <-> cp Unix socket
  int worker_threads = 4;
  int max_dp_connections = 64;
  int max_sessions = 100000;
  std::string state_dir;  // approvals, recordings, audit log
  std::string admin_socket;
  // Applied to admin_socket after bind: created owner-only, then chgrp'ed to
  // admin_socket_group (a group name, "" = the process's group) and chmod'ed to this mode.
  // Validated: no bit for others, owner read+write.
  mode_t admin_socket_mode = 0600;
  std::string admin_socket_group;
  std::vector<AdminPrincipal> admin_principals;
  StateStoreSettings state_store;
  HttpSettings http;
};

// $.identity.providers[i] and $.identity.service_keys[i] parse straight into
// identity::IdentityProviderConfig / identity::ServiceKeyConfig (controlplane/identity), the
// structs the TokenValidator takes: one definition, validated by identity's own checks.

// "" when `listen` is a valid $.metrics address ("ADDRESS:PORT", numeric IPv4 or bracketed
// IPv6, port 1..65535), else what is wrong with it.
std::string check_listen_address(const std::string& listen);

// The group id of `name` (getgrnam_r). invalid_argument "unknown group \"x\"" when there is
// no such group.
Result<gid_t> lookup_group(const std::string& name);

using UpstreamTlsMode = protocol::UpstreamTlsMode;  // common/protocol/grant_types.h

// $.targets[i]: a database agents may name in their StartupMessage.
struct Target {
  std::string name;
  std::string host;  // host + port, or unix_socket (directory), exactly one
  int port = 5432;
  std::string unix_socket;
  std::string database;
  std::string role;  // upstream role pgwarden logs in as (SCRAM-SHA-256)
  vault::SecretSource credential;
  UpstreamTlsMode tls_mode = UpstreamTlsMode::kVerifyFull;
  std::string ca_file;  // verify-full: CA bundle ("" = system store)
  // Upstream connection pooling in the dataplane (docs/dataplane.md "Transaction pooling").
  protocol::PoolMode pool_mode = protocol::PoolMode::kSession;
  int pool_size = 20;             // connections per pool key per dp worker
  int pool_wait_timeout_ms = 5000;
};

struct AuditSink {
  enum class Kind { kFile, kStderr, kPostgres };
  Kind kind = Kind::kFile;
  std::string path;  // kFile: absolute (relative paths are resolved against state_dir)
  // kPostgres: the libpq conninfo comes from conninfo_file (a secret file) or is built from
  // the named target (its credential from the vault); exactly one is set.
  std::string conninfo_file;
  std::string target;
  std::string table = "pgwarden_audit";
};

// $.approvals
struct ApprovalsSettings {
  // https:// URL (or http:// to a loopback host) POSTed for each new request; "" = none.
  std::string webhook_url;
  std::string webhook_ca_file;  // PEM bundle for https; "" = system trust store
  int webhook_timeout_ms = 3000;
  int webhook_connect_timeout_ms = 1000;
  // The Authorization header's value, from a file or an environment variable.
  std::optional<vault::SecretSource> webhook_authorization;
  // A held client gets a NOTICE when its request is created and again every this many
  // seconds while it waits; 0 = only the first one.
  int reminder_interval_s = 60;
  // $.approvals.identity_links: identities owned by one person (an SSO subject and the agent
  // identities / service keys they run). None of them may decide a request of another.
  struct IdentityLink {
    std::string person;
    std::vector<std::string> identities;
  };
  std::vector<IdentityLink> identity_links;
  // $.approvals.chat: Slack-compatible interactive messages and their signed callback.
  struct ChatUser {
    std::string identity;  // the reviewer's subject, as in their SSO token
    std::vector<std::string> groups;
  };
  struct Chat {
    std::string webhook_url;  // incoming-webhook URL the interactive message is POSTed to
    std::string webhook_ca_file;
    std::optional<vault::SecretSource> signing_secret;  // the Slack app's signing secret
    int timestamp_window_s = 300;
    std::map<std::string, ChatUser> users;  // chat user id -> reviewer
  };
  std::optional<Chat> chat;
};

// $.masking
struct MaskingSettings {
  // The master key the per-policy `hash` keys are derived from (>= 16 bytes). Required when
  // a policy has a `hash` mask.
  std::optional<vault::SecretSource> key;
  int catalog_ttl_s = 300;
};

// $.recording
struct RecordingSettings {
  int retention_max_age_days = 0;          // 0 = no age limit
  uint64_t retention_max_total_bytes = 0;  // 0 = no size limit
  int retention_interval_s = 3600;         // how often retention runs
  int queue_capacity = 8192;               // records waiting for the writer
  // dp: how long a statement of a recording-required session is held while the recorder is
  // behind before it is refused with 53000 (0 = refuse at once).
  int hold_timeout_ms = protocol::kDefaultRecordingHoldTimeoutMs;
  // Write-ahead durability (docs/recording.md): records are written (page cache) before the
  // statement runs; fdatasync follows at most sync_interval_ms later, or before the statement
  // runs with sync_always ($.recording.sync: "always" | ms).
  bool sync_always = false;
  int sync_interval_ms = 100;
  int checkpoint_interval_ms =
      1000;  // chain heads written to <state_dir>/recording_checkpoint.json
};


// $.metrics: the Prometheus /metrics endpoints (docs/monitoring.md). Each is off while its
// address is empty. "ADDRESS:PORT": a numeric IPv4 address or a bracketed IPv6 address.
struct MetricsSettings {
  std::string controlplane_listen;  // served by pgwarden-cp
  std::string dataplane_listen;     // served by pgwarden-dp (its --metrics-listen overrides it)
};

struct Config {
  uint64_t version = 0;  // policy version: new on every load, also set in each Policy
  DataplaneListener dataplane;
  ControlPlaneSettings control_plane;
  std::vector<identity::IdentityProviderConfig> identity_providers;
  std::vector<identity::ServiceKeyConfig> service_keys;
  std::vector<Target> targets;
  std::vector<policy::Policy> policies;
  std::vector<AuditSink> audit_sinks;
  ApprovalsSettings approvals;
  MaskingSettings masking;
  RecordingSettings recording;
  LimitsSettings limits;
  MetricsSettings metrics;
  std::vector<budgets::BudgetRule> budgets;  // $.budgets (docs/budgets.md)

  const Target* find_target(std::string_view name) const;
  // The web console's public base URL (links in approval notices and chat messages); "" when
  // no public_url or no console_dir is configured.
  std::string console_public_url() const;
  // The first policy in file order whose groups intersect `groups` (or contain "*") and
  // whose targets contain `target` (or "*"); nullptr when none: the session is refused.
  const policy::Policy* select_policy(const std::vector<std::string>& groups,
                                      std::string_view target) const;
};

using ConfigError = FieldError;  // common/json_reader.h

// Hooks for vocabularies owned by other modules (the lead wires the policy engine's statement
// kinds and the rule-set directory in). Defaults: kinds are [a-z_]+ words, rule sets are
// [A-Za-z0-9_.-]+ names; environment checks (credential files readable, env vars set) on.
struct ValidationOptions {
  std::function<bool(std::string_view)> known_statement_kind;
  std::function<bool(std::string_view)> known_rule_set;
  bool check_environment = true;
};

struct LoadOutcome {
  std::shared_ptr<const Config> config;  // null when errors is non-empty
  std::vector<ConfigError> errors;
  bool ok() const { return config != nullptr; }
  std::string error_text() const;  // one error per line
};

LoadOutcome parse_config(std::string_view json_text, uint64_t version,
                         const ValidationOptions& options = {});
LoadOutcome load_config_file(const std::string& path, uint64_t version,
                             const ValidationOptions& options = {});

// The live configuration. Thread-safe: current() may be called from any thread while
// reload() runs; readers keep the snapshot they got for as long as they hold it.
// Versions are unix-epoch milliseconds at load time, strictly increasing within a process,
// so they also increase across restarts (dp verdict caches never see a version twice).
class ConfigStore {
 public:
  explicit ConfigStore(std::string path, ValidationOptions options = {})
      : path_(std::move(path)), options_(std::move(options)) {}

  // Loads the file; on success the new config becomes current. On failure the current one
  // stays and the outcome carries the errors.
  LoadOutcome reload();
  // The same, but the loaded config becomes current only when `accept` finds no errors in
  // it (e.g. the rule sets it names must compile); its errors are then the outcome's.
  // `accept` runs without the lock current() takes, so readers are never held up by it;
  // reloads are serialised.
  LoadOutcome reload(const std::function<std::vector<ConfigError>(const Config&)>& accept);
  std::shared_ptr<const Config> current() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  ValidationOptions options_;
  std::mutex reload_mu_;  // serialises reloads
  mutable std::mutex mu_;
  std::shared_ptr<const Config> current_;
  uint64_t last_version_ = 0;
};

}  // namespace pgwarden::config
