// AdminServer: pgwarden-cp's admin API for pgwardenctl (docs/cli.md).
//
// Transport: a Unix stream socket ($.control_plane.admin_socket; a stale socket file is
// replaced). It is bound owner-only (umask 0177), then chgrp'ed to
// $.control_plane.admin_socket_group (if set) and chmod'ed to
// $.control_plane.admin_socket_mode (default 0600), so it is never more open than
// configured. Framed exactly like the dp <-> cp protocol (4-byte big-endian length + one
// JSON object, common/protocol/frame.h). Requests:
//   {"id": N, "type": "admin", "command": "approvals.list", "args": {...},
//    "principal": "alice", "credential": "..."}
// Responses: {"id": N, "ok": true, "result": {...}} or
//   {"id": N, "ok": false, "error": {"code": "permission_denied", "sqlstate", "message"}}.
//
// Access control: socket file permissions, then every request's principal + credential is
// checked against $.control_plane.admin_principals (salted PBKDF2 hash, constant-time
// compare; an unknown principal costs the same as a wrong credential). Failures are audited
// (event admin_auth, decision rejected, the peer's SO_PEERCRED uid/pid) and answered with
// error unauthenticated. Every accepted command is audited as event "admin" with the
// principal, its groups, the command and the outcome. The credential is never logged or
// audited.
//
// Approvals are decided with the admin principal as reviewer (name + configured groups);
// ApprovalStore enforces the policy's approver groups and never-self.
//
// Threads: one accept thread; each connection is served on its own thread (at most
// kMaxAdminConnections at once; more are refused), with a receive timeout so an idle client
// cannot pin a thread forever. Thread-safety: start/stop from one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"
#include "controlplane/approvals/approval_store.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/budgets/budget_book.h"
#include "controlplane/config/config.h"
#include "controlplane/fleet/remote_recording.h"
#include "controlplane/identity/identity.h"
#include "controlplane/server/revocation_store.h"

namespace pgwarden::server {

inline constexpr int kMaxAdminConnections = 16;

// What the admin API acts on. config and audit are required; every other member is optional
// (a command whose backend is missing answers error unavailable).
struct AdminBackend {
  config::ConfigStore* config = nullptr;
  audit::AuditLog* audit = nullptr;
  approvals::ApprovalStore* approvals = nullptr;
  // Recordings directory; "" = <state_dir>/recordings of the current config.
  std::string recordings_dir;
  // Directory of the rule set files <name>.rules that policies name in rule_sets.
  std::string rules_dir;
  // Reloads the configuration (and pushes the new policy version to dataplanes). Default:
  // config->reload().
  std::function<config::LoadOutcome()> reload;
  // After a successful reload (config.reload, rules.reload, rules.add/remove): waits until
  // every connected dataplane enforces the running rules generation, at most `timeout_ms`;
  // returns the names of those that did not confirm (EscalationServer::wait_rules_enforced).
  // Unset: reloads return without waiting.
  std::function<std::vector<std::string>(int64_t timeout_ms)> wait_rules_enforced;
  // Validates a token against the configured identity providers.
  std::function<identity::IdentityResult(std::string_view token)> validate_token;
  // Runtime figures merged into `status`: e.g. {"dp_connections", "sessions", "counters"}.
  std::function<nlohmann::json()> runtime_status;
  // Live sessions: [{"session_id", "identity", "target", ...}], merged into sessions.list.
  std::function<nlohmann::json()> live_sessions;
  // Whether the session's recording is open in this cp (sessions.verify tells a session that
  // is still open from one that ended in a crash). Unset: unknown.
  std::function<bool(const std::string& session_id)> recording_open;
  // A recording this node does not have, from the node that does (shared state store;
  // fleet::fetch_recording): sessions.{show,replay,verify} verify the copy here. Unset: they
  // only read this node's recordings directory.
  std::function<Result<std::unique_ptr<fleet::FetchedRecording>>(const std::string& session_id)>
      fetch_recording;
  // Latest dataplane stats snapshots: DataplaneRegistry::to_json() ({"dataplanes": [...]}),
  // answered by the `dataplane` command.
  std::function<nlohmann::json()> dataplanes;
  // Ends live sessions: `selector` {"session_id"?, "identity"?, "key"?} (every given field
  // must match), audited with `reason`, the principal `by` and `cause`. Returns the ended
  // session ids (EscalationServer::kill_sessions; with a shared state store also those of
  // other nodes, which are asked through the store: unavailable when it cannot be reached).
  // Unset: sessions.kill is unavailable.
  std::function<Result<std::vector<std::string>>(const nlohmann::json& selector,
                                                 const std::string& reason, const std::string& by,
                                                 const std::string& cause)>
      kill_sessions;
  // identities.* (revocations persisted in the state directory); null: unavailable.
  RevocationStore* revocations = nullptr;
  // budgets.{list,show,reset} (docs/budgets.md); null: unavailable. push_budgets tells the
  // live sessions of an identity its budgets after a reset (EscalationServer::push_budgets).
  budgets::BudgetBook* budgets = nullptr;
  std::function<size_t(const std::string& subject)> push_budgets;
  std::string version = "pgwarden-cp/0.1";
};

// Who runs an admin command: authenticated by the caller of execute() (the Unix socket's
// admin_principals check, or the HTTPS server's bearer token / browser session).
struct AdminCaller {
  std::string name;
  std::vector<std::string> groups;
  std::string via;   // "socket", "https:bearer", "https:oidc", "https:saml", "https:break_glass"
  std::string peer;  // "uid=..,pid=.." (socket) or "ip=..." (https); audited
  std::string role;  // the HTTPS role ("reviewer", ...); audited when not empty
};

class AdminServer {
 public:
  // `backend.config` and `backend.audit` must outlive the server.
  explicit AdminServer(AdminBackend backend);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds $.control_plane.admin_socket of the current config with its mode and group.
  // failed_precondition when no admin socket is configured; unavailable (and no socket
  // left behind) when bind, chgrp (unknown group, or one the process may not use) or chmod
  // fails.
  Status start();
  void stop();  // idempotent; closes connections and joins every thread

  // Handles one decoded request (authentication included) and returns the response. Exposed
  // for tests; the socket path goes through it too. `peer` is audited ("uid=..,pid=..").
  nlohmann::json handle(const nlohmann::json& request, const std::string& peer);

  // Runs `command` (the socket's command names: "approvals.approve", ...) with `args` for an
  // already authenticated caller and audits it (event "admin": principal, groups, command,
  // outcome, via, peer). The one implementation behind both the socket and the HTTPS API;
  // authorization (roles) is the HTTPS layer's job. Thread-safe; works without start().
  Result<nlohmann::json> execute(const std::string& command, const nlohmann::json& args,
                                 const AdminCaller& who);

 private:
  using Principal = AdminCaller;
  void accept_loop();
  void serve(int fd);
  Result<nlohmann::json> run(const std::string& command, const nlohmann::json& args,
                             const Principal& who, std::shared_ptr<const config::Config> cfg);
  std::string recordings_dir(const config::Config& cfg) const;
  Result<nlohmann::json> rules_command(const std::string& sub, const nlohmann::json& args,
                                       const config::Config& cfg);
  // rules.test: {sql, sets? | policy?} -> {verdict, matches} against the rules_dir sets.
  Result<nlohmann::json> rules_test(const nlohmann::json& args, const config::Config& cfg);
  // audit.search: the newest `limit` records of the audit file sink matching the filters.
  Result<nlohmann::json> audit_search(const nlohmann::json& args, const config::Config& cfg);
  Result<nlohmann::json> reload_config(const std::string& event, const Principal& who);
  // How long a reload waits for every dataplane to enforce the new rules generation.
  static constexpr int64_t kRulesEnforcedWaitMs = 10000;
  // Ok when every connected dataplane enforces the running rules generation (waited for);
  // else deadline_exceeded naming those that did not confirm.
  Status wait_enforced(const config::Config& applied);
  // budgets.{list,show,reset}.
  Result<nlohmann::json> budget_command(const std::string& command, const nlohmann::json& args,
                                        const config::Config& cfg);
  // sessions.kill and identities.{revoke,unrevoke,list}.
  Result<nlohmann::json> revocation_command(const std::string& command, const nlohmann::json& args,
                                            const Principal& who);

  AdminBackend b_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::string socket_path_;
  int listen_fd_ = -1;
  int wake_fd_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  struct Conn {
    int fd = -1;
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void reap(bool all);
  std::mutex conns_mu_;
  std::list<Conn> conns_;
  std::mutex rules_mu_;  // serialises rule file edits
};

// Status -> admin error code name ("permission_denied", "not_found", ...).
std::string_view admin_error_code(const Status& status);

}  // namespace pgwarden::server
