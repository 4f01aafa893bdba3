// ControlPlane: everything pgwarden-cp runs, owned in one place, so the escalation server
// (dp <-> cp) and the admin API (pgwardenctl) act on the same objects.
//
// Owns, in construction order: the ConfigStore (already loaded), the audit log (its file /
// stderr sinks plus an optional PostgreSQL sink), the identity authenticator (a
// TokenValidator rebuilt whenever the config version changes), the ApprovalStore (journal in
// <state_dir>/approvals.jsonl, webhook from $.approvals.webhook_url), the Recorder
// (<state_dir>/recordings, retention applied every $.recording.retention.interval_s), the
// mask planner (one PgCatalog metadata connection per target), the RevocationStore
// (<state_dir>/revocations.json), the session TicketKey (<state_dir>/ticket.key), the budget
// ledger (<state_dir>/budgets.json, or the shared store's counters) and the EscalationServer.
// With a shared state store it also writes each rules generation it installs there, and
// loads the fleet's node key (state_store.node_key_file) for node-to-node requests.
// Destruction is the reverse: the server stops first, so no callback outlives its target.
//
// Thread-safety: accessors may be called from any thread after open(); start()/stop() from
// one thread; reload() from any thread.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "controlplane/approvals/approval_store.h"
#include "controlplane/approvals/chat.h"
#include "controlplane/approvals/webhook.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/audit_pg/audit_pg_sink.h"
#include "controlplane/budgets/shared_budget_ledger.h"
#include "controlplane/config/config.h"
#include "controlplane/fleet/node_auth.h"
#include "controlplane/identity/validator.h"
#include "controlplane/recording/recorder.h"
#include "controlplane/server/escalation_server.h"
#include "controlplane/server/identity_authenticator.h"
#include "controlplane/server/mask_planner.h"
#include "controlplane/state/state_store.h"

namespace pgwarden::server {

class ControlPlane {
 public:
  // REQUIRES: store->current() is a loaded config. Creates state_dir (0700), opens the audit
  // sinks, the approval journal and the recordings dir, loads identity provider keys.
  // Errors: unavailable / invalid_argument with a message for the operator (never secrets).
  // `rules_dir` holds the rule set files the policies name: every load validates them and
  // the escalation server pushes them to dataplanes ("" = rules are not managed by cp).
  static Result<std::unique_ptr<ControlPlane>> open(std::unique_ptr<config::ConfigStore> store,
                                                    std::string rules_dir = "");
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  // Binds the dp socket and starts serving; starts the retention thread.
  Status start();
  // Stops the server and background threads. Idempotent.
  void stop();
  // Reloads the config file (see EscalationServer::reload); a valid config also rebuilds the
  // token validator for new authentications.
  config::LoadOutcome reload();

  config::ConfigStore& config_store() { return *store_; }
  audit::AuditLog& audit() { return *audit_; }
  approvals::ApprovalStore& approvals() { return *approvals_; }
  recording::Recorder& recorder() { return *recorder_; }
  EscalationServer& escalation_server() { return *server_; }
  // <state_dir>/revocations.json (pgwardenctl identities ...).
  RevocationStore& revocations() { return *revocations_; }
  // Per-identity budgets over <state_dir>/budgets.json or the shared store (pgwardenctl
  // budgets ...).
  budgets::BudgetBook& budgets() { return *budgets_; }
  // The PostgreSQL audit sinks ($.audit.sinks[] of type postgres), in config order.
  const std::vector<std::unique_ptr<audit_pg::AuditPgSink>>& audit_pg_sinks() const {
    return audit_pg_;
  }
  // nullptr when no $.approvals.webhook_url is configured.
  const approvals::WebhookNotifier* webhook() const { return webhook_.get(); }
  // The state store ($.control_plane.state_store): the file store or the shared PostgreSQL.
  state::StateStore& state() { return *state_; }
  // The fleet's node key (state_store.node_key_file); null when none is configured.
  std::shared_ptr<const fleet::NodeKey> node_key() const { return node_key_; }
  // Every node of a shared store with the rules generation it last loaded, for `status`:
  // {"nodes": [{"node_id", "admin_url", "rules_generation", "rules_hash", "loaded_ms",
  // "same_rules"}]} ({"error"} when the store cannot be read); null with the file store.
  nlohmann::json fleet_status();
  // nullptr when no $.approvals.chat is configured. The chat callback the HTTPS listener
  // serves at POST /api/v1/chat/slack (a public route: the request signature authenticates).
  approvals::ChatCallback* chat_callback() { return chat_callback_.get(); }
  const approvals::WebhookNotifier* chat_webhook() const { return chat_webhook_.get(); }
  // The validator for the current config (admin API: validating reviewers' tokens).
  Result<std::shared_ptr<const identity::TokenValidator>> token_validator();
  // Applies recording retention now (also done periodically). Returns deleted session ids.
  Result<std::vector<std::string>> apply_recording_retention();

 private:
  ControlPlane() = default;
  void retention_loop();
  // Applies a change another node made (the state store's listener thread).
  void apply_state_change(const state::StateChange& change);
  // Re-reads approvals and revocations from a shared store (at start and after an outage).
  Status sync_from_state();
  // Writes the rules generation the escalation server runs to the state store.
  void record_rules_generation();

  std::unique_ptr<config::ConfigStore> store_;
  std::unique_ptr<state::StateStore> state_;  // outlives everything that writes to it
  std::vector<std::unique_ptr<audit_pg::AuditPgSink>> audit_pg_;  // outlives audit_
  std::unique_ptr<audit::AuditLog> audit_;
  std::shared_ptr<IdentityAuthenticator> identity_;
  std::unique_ptr<approvals::WebhookNotifier> webhook_;
  std::unique_ptr<approvals::WebhookNotifier> chat_webhook_;
  std::unique_ptr<approvals::ChatCallback> chat_callback_;
  std::unique_ptr<approvals::ApprovalStore> approvals_;
  std::unique_ptr<recording::Recorder> recorder_;
  std::shared_ptr<CatalogMaskPlanner> mask_planner_;
  std::unique_ptr<RevocationStore> revocations_;
  std::unique_ptr<TicketKey> tickets_;
  std::unique_ptr<budgets::BudgetBook> budgets_;           // <state_dir>/budgets.json or the store
  budgets::SharedBudgetLedger* shared_budgets_ = nullptr;  // owned by budgets_; null: file
  std::shared_ptr<const fleet::NodeKey> node_key_;
  std::unique_ptr<EscalationServer> server_;

  std::mutex retention_mu_;
  std::condition_variable retention_cv_;
  bool stopping_ = false;
  std::thread retention_thread_;
};

}  // namespace pgwarden::server
