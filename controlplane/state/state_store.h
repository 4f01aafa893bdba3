// StateStore: where a control plane keeps the state that several gateway nodes must share
// (docs/scale-out.md): approvals and their decisions, standing grants, revocations and killed
// sessions, the session registry (node -> sessions), rule-set generations, the audit stream
// and the recordings index.
//
// Two implementations behind this one interface:
//  * FileStateStore (kind "file", the default): one host. The approval journal and the
//    revocation file in the state directory (ApprovalStore, RevocationStore) are the store of
//    record, the session registry and the recordings index are this node's own; nothing is
//    shared and no change ever arrives from elsewhere. Every write succeeds.
//  * PgStateStore (kind "postgres", pg_state_store.h): one PostgreSQL database shared by the
//    nodes; every write goes there first (compare-and-set for approval decisions) and other
//    nodes learn of it through LISTEN/NOTIFY.
//
// The local files are written in both cases: with a shared store they are this node's cache
// (what it replays at start), the shared database decides.
//
// Records are the JSON snapshots the owning modules already make (ApprovalRequest::to_json,
// Revocation::to_json) so the store depends on no cp module and they on no store.
//
// Fail closed: a write that cannot reach a shared store returns unavailable (message without
// the conninfo); the caller refuses the operation. Registry and recordings-index writes are
// queued and retried (running sessions never wait for the store).
//
// Thread-safety: every method may be called from any thread. The change handler runs on the
// store's listener thread, one change at a time.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::state {

// A change another node made (never this node's own), from the store's change feed.
struct StateChange {
  enum class Kind {
    kApproval,     // `key`: the approval id; re-read it with get_approval()
    kRevocations,  // the revocation set changed; re-read it with list_revocations()
    kKill,         // `kill`: {"selector": {...}, "reason", "by", "cause", "node"}
    kBudgets,      // budget counters changed: `identities` lists whose; re-read them
    kResync,       // the feed was interrupted (store outage): re-read everything
  };
  Kind kind = Kind::kResync;
  std::string key;
  nlohmann::json kill;
  std::vector<std::string> identities;  // kBudgets
  int64_t sent_ms = 0;  // when the origin node published it (0 = unknown)
};
using ChangeHandler = std::function<void(const StateChange&)>;

// One live session in the registry.
struct SessionEntry {
  std::string session_id;
  std::string node_id;
  std::string identity;
  std::string target;
  int64_t started_ms = 0;
};

// Where a session's recording is: recordings stay files on the node that recorded them.
struct RecordingEntry {
  std::string session_id;
  std::string node_id;
  std::string file;   // path on that node
  std::string state;  // "open" | "closed"
};

// A node and how to reach its admin API (for replay from another node).
struct NodeEntry {
  std::string node_id;
  std::string admin_socket;  // Unix socket path on that node's host; "" = none
  std::string admin_url;     // its HTTPS admin API ("https://host:port"); "" = none
  int64_t seen_ms = 0;
};

// The latest rule-set generation a node loaded.
struct RuleGenerationEntry {
  std::string node_id;
  uint64_t generation = 0;
  std::string digest;  // sha256 of the compiled rule sources
  int64_t loaded_ms = 0;
};

// Usage of one budget by one identity in one window (docs/budgets.md): the measures in the
// order of protocol::BudgetMeasure (statements, rows_returned, result_bytes, masked_cells).
struct BudgetCounter {
  std::string budget;
  std::string identity;
  int64_t window_start_ms = 0;
  std::array<uint64_t, 4> used{};
};

class StateStore {
 public:
  virtual ~StateStore() = default;

  virtual std::string_view kind() const = 0;  // "file" | "postgres"
  // Whether other nodes share this store (false for the file store).
  virtual bool shared() const = 0;
  virtual const std::string& node_id() const = 0;

  // Approvals, as ApprovalRequest::to_json() snapshots ({"id", "state", ...}). `create`: a new
  // request (failed_precondition if the id is taken). Otherwise a transition out of "pending":
  // failed_precondition "already <state>" when another node got there first.
  virtual Status put_approval(const nlohmann::json& snapshot, bool create) = 0;
  virtual Result<std::optional<nlohmann::json>> get_approval(const std::string& id) = 0;
  // Pending requests of every node, and terminal ones decided at or after `since_ms`.
  virtual Result<std::vector<nlohmann::json>> list_approvals(int64_t since_ms) = 0;

  // Revocations, as Revocation::to_json() snapshots ({"name", "kind", ...}).
  virtual Status put_revocation(const nlohmann::json& entry) = 0;
  virtual Status remove_revocation(const std::string& name, const std::string& kind) = 0;
  virtual Result<std::vector<nlohmann::json>> list_revocations() = 0;

  // Asks every other node to end its sessions matching `selector` ({"session_id"?,
  // "identity"?, "key"?}); kept in the store (killed sessions).
  virtual Status publish_kill(const nlohmann::json& selector, const std::string& reason,
                              const std::string& by, const std::string& cause) = 0;

  // Session registry and recordings index: queued, written in the background, retried.
  virtual void session_started(const SessionEntry& entry) = 0;
  virtual void session_ended(const std::string& session_id) = 0;
  virtual void recording_indexed(const RecordingEntry& entry) = 0;
  virtual Result<std::optional<SessionEntry>> find_session(const std::string& session_id) = 0;
  virtual Result<std::optional<RecordingEntry>> find_recording(const std::string& session_id) = 0;
  virtual Result<std::optional<NodeEntry>> find_node(const std::string& node_id) = 0;

  // Every node that registered, by node id.
  virtual Result<std::vector<NodeEntry>> list_nodes() = 0;

  // A rule-set generation this node loaded (digest of the compiled sources); queued.
  virtual void rules_loaded(uint64_t generation, const std::string& digest) = 0;
  // The latest generation each node loaded, by node id.
  virtual Result<std::vector<RuleGenerationEntry>> list_rule_generations() = 0;

  // Budget counters, shared by the nodes. `deltas`: usage to add, each to the counter of its
  // (budget, identity) in its window, in one transaction (a counter of an older window starts
  // again from zero; a delta for a window older than the stored one is dropped: that window
  // is over). Returns the counters after the addition, and tells the other nodes (kBudgets).
  virtual Result<std::vector<BudgetCounter>> add_budget_usage(
      const std::vector<BudgetCounter>& deltas) = 0;
  // Every counter (of `identity` only, when not empty).
  virtual Result<std::vector<BudgetCounter>> list_budget_counters(const std::string& identity) = 0;
  // Deletes the counters of `identity` (of `budget` only, when not empty); tells the other
  // nodes. Returns how many.
  virtual Result<size_t> reset_budget_counters(const std::string& identity,
                                               const std::string& budget) = 0;

  // Starts the change feed; `handler` receives changes other nodes make. Call once.
  virtual Status start(ChangeHandler handler) = 0;
  // Stops the change feed and the background writer (queued writes are kept for no one:
  // the next process re-registers). The other methods keep working. Idempotent.
  virtual void stop() = 0;
  // Whether the last write / feed connection to a shared store worked.
  virtual bool available() const = 0;
};

// The single-host store: see the file comment. Not final: tests derive fakes of a shared store.
class FileStateStore : public StateStore {
 public:
  explicit FileStateStore(std::string node_id = "local") : node_id_(std::move(node_id)) {}
  std::string_view kind() const override { return "file"; }
  bool shared() const override { return false; }
  const std::string& node_id() const override { return node_id_; }
  Status put_approval(const nlohmann::json&, bool) override { return Status::ok(); }
  Result<std::optional<nlohmann::json>> get_approval(const std::string&) override {
    return std::optional<nlohmann::json>();
  }
  Result<std::vector<nlohmann::json>> list_approvals(int64_t) override {
    return std::vector<nlohmann::json>{};
  }
  Status put_revocation(const nlohmann::json&) override { return Status::ok(); }
  Status remove_revocation(const std::string&, const std::string&) override { return Status::ok(); }
  Result<std::vector<nlohmann::json>> list_revocations() override {
    return std::vector<nlohmann::json>{};
  }
  Status publish_kill(const nlohmann::json&, const std::string&, const std::string&,
                      const std::string&) override {
    return Status::ok();
  }
  void session_started(const SessionEntry&) override {}
  void session_ended(const std::string&) override {}
  void recording_indexed(const RecordingEntry&) override {}
  Result<std::optional<SessionEntry>> find_session(const std::string&) override {
    return std::optional<SessionEntry>();
  }
  Result<std::optional<RecordingEntry>> find_recording(const std::string&) override {
    return std::optional<RecordingEntry>();
  }
  Result<std::optional<NodeEntry>> find_node(const std::string&) override {
    return std::optional<NodeEntry>();
  }
  Result<std::vector<NodeEntry>> list_nodes() override { return std::vector<NodeEntry>{}; }
  void rules_loaded(uint64_t, const std::string&) override {}
  Result<std::vector<RuleGenerationEntry>> list_rule_generations() override {
    return std::vector<RuleGenerationEntry>{};
  }
  Result<std::vector<BudgetCounter>> add_budget_usage(const std::vector<BudgetCounter>&) override {
    return unavailable("the file state store keeps no budget counters");
  }
  Result<std::vector<BudgetCounter>> list_budget_counters(const std::string&) override {
    return std::vector<BudgetCounter>{};
  }
  Result<size_t> reset_budget_counters(const std::string&, const std::string&) override {
    return size_t{0};
  }
  Status start(ChangeHandler) override { return Status::ok(); }
  void stop() override {}
  bool available() const override { return true; }

 private:
  std::string node_id_;
};

}  // namespace pgwarden::state
