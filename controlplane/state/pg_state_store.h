// PgStateStore: the shared state store in one PostgreSQL database (state_store.h,
// docs/scale-out.md).
//
// Schema: created and migrated by pgwarden-cp at open, under an advisory lock so nodes that
// start together migrate once. `pgwarden_schema_version` holds one row per applied version;
// a database whose version is newer than this binary knows is refused (failed_precondition):
// an old node never writes a schema it does not understand.
//
// Writes: approvals are rows keyed by id holding the ApprovalRequest snapshot; a decision is
// an UPDATE ... WHERE state = 'pending' (compare-and-set: two nodes deciding the same request
// cannot both win). Standing grants are written with the approval that makes them. Every
// change is NOTIFY'd on channel `pgwarden_state` in the same transaction, with a JSON payload
// {"k": kind, "key", "node", "ts"} (kill: also the selector, reason, by, cause).
//
// Connections: one for synchronous writes and reads (serialised), one for LISTEN on the
// listener thread, one for the background writer (session registry, recordings index, rule
// generations; queued, retried in order). A failed write closes the connection and reports
// unavailable; the next call reconnects (connect_timeout_ms). The listener reconnects every
// 200 ms after a failure and then delivers kResync (changes may have been missed).
//
// Secrets: the conninfo is never logged or put into an error message; errors carry libpq's
// message, which names host and port but never the password.
#pragma once

#include <memory>
#include <string>

#include "controlplane/state/state_store.h"

namespace pgwarden::state {

// The schema version this binary creates and understands.
inline constexpr int kStateSchemaVersion = 2;

struct PgStateStoreOptions {
  std::string conninfo;      // libpq conninfo: a secret
  std::string node_id;       // REQUIRES: not empty, unique per node
  std::string admin_socket;  // this node's admin socket, for replay from other nodes
  std::string admin_url;     // this node's HTTPS admin API, for replay from other nodes
  int connect_timeout_ms = 2000;
  size_t background_queue_cap = 100000;  // registry/index writes beyond this are dropped, counted
};

class PgStateStore final : public StateStore {
 public:
  // Connects, creates or migrates the schema, registers the node. unavailable when the
  // database cannot be reached, failed_precondition when its schema is newer.
  static Result<std::unique_ptr<PgStateStore>> open(PgStateStoreOptions options);
  ~PgStateStore() override;

  std::string_view kind() const override { return "postgres"; }
  bool shared() const override { return true; }
  const std::string& node_id() const override;

  Status put_approval(const nlohmann::json& snapshot, bool create) override;
  Result<std::optional<nlohmann::json>> get_approval(const std::string& id) override;
  Result<std::vector<nlohmann::json>> list_approvals(int64_t since_ms) override;
  Status put_revocation(const nlohmann::json& entry) override;
  Status remove_revocation(const std::string& name, const std::string& kind) override;
  Result<std::vector<nlohmann::json>> list_revocations() override;
  Status publish_kill(const nlohmann::json& selector, const std::string& reason,
                      const std::string& by, const std::string& cause) override;
  void session_started(const SessionEntry& entry) override;
  void session_ended(const std::string& session_id) override;
  void recording_indexed(const RecordingEntry& entry) override;
  Result<std::optional<SessionEntry>> find_session(const std::string& session_id) override;
  Result<std::optional<RecordingEntry>> find_recording(const std::string& session_id) override;
  Result<std::optional<NodeEntry>> find_node(const std::string& node_id) override;
  Result<std::vector<NodeEntry>> list_nodes() override;
  void rules_loaded(uint64_t generation, const std::string& digest) override;
  Result<std::vector<RuleGenerationEntry>> list_rule_generations() override;
  Result<std::vector<BudgetCounter>> add_budget_usage(
      const std::vector<BudgetCounter>& deltas) override;
  Result<std::vector<BudgetCounter>> list_budget_counters(const std::string& identity) override;
  Result<size_t> reset_budget_counters(const std::string& identity,
                                       const std::string& budget) override;
  Status start(ChangeHandler handler) override;
  void stop() override;
  bool available() const override;

  // Background writes dropped for a full queue.
  uint64_t background_dropped() const;
  // Waits until the background queue is empty (tests); false on timeout.
  bool flush_background(int timeout_ms);

 private:
  struct Impl;
  explicit PgStateStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgwarden::state
