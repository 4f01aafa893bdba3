// SharedBudgetLedger: the budget counters of several gateway nodes, kept in the shared state
// store (state::StateStore::add_budget_usage, docs/budgets.md "Several gateway nodes").
//
// The statement path never waits for the store: add() adds to this node's view of the counter
// (the store's total as last read, plus what this node added since) and to a pending delta.
// A flusher thread writes the pending deltas of every counter in one statement (an UPSERT ...
// RETURNING of each window's row) every `flush_interval_ms`, takes the totals it returns (the
// other nodes' usage included) and announces the change to the other nodes, which re-read the
// counters of those identities (refresh()). So a node sees what the others ran within about
// one flush interval plus the store's round trip: the overshoot of a limit across nodes is
// bounded by what the identity runs on the other nodes in that time.
//
// Store outage: local-only. Deltas stay pending (nothing is lost) and are written when the
// store is back; meanwhile each node enforces on its own view (the totals it last read plus
// its own usage), so during an outage an identity can also use, on each other node, what that
// node's view leaves of the limit. reset() needs the store (fails closed: unavailable).
//
// Thread-safety: every method may be called from any thread. `on_remote_change` runs on the
// flusher thread or on refresh()'s caller, without the ledger's lock.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/budgets/budget_ledger.h"
#include "controlplane/state/state_store.h"

namespace pgwarden::budgets {

struct SharedBudgetLedgerOptions {
  state::StateStore* store = nullptr;  // REQUIRES: not null, shared, outlives the ledger
  int flush_interval_ms = 200;
  // Another node's usage (or reset) changed the counters of `identity` in this node's view.
  // `lowered`: a counter went down (reset): sessions must learn their new state even when no
  // budget is exhausted.
  std::function<void(const std::string& identity, bool lowered)> on_remote_change;
  bool start_flusher = true;  // false: the owner calls flush_now() (tests)
};

class SharedBudgetLedger final : public BudgetLedger {
 public:
  // Reads every counter from the store. unavailable when it cannot be reached.
  static Result<std::unique_ptr<SharedBudgetLedger>> open(SharedBudgetLedgerOptions options);
  ~SharedBudgetLedger() override;  // stop()
  // Stops the flusher and writes what is pending (once; lost if the store is down then). No
  // on_remote_change call after it returns. Idempotent.
  void stop();

  protocol::BudgetUsage add(const std::string& budget, const std::string& identity,
                            int64_t window_start_ms, const protocol::BudgetUsage& delta) override;
  protocol::BudgetUsage get(const std::string& budget, const std::string& identity,
                            int64_t window_start_ms) const override;
  // In the store first (unavailable when it cannot be reached), then here; pending deltas of
  // the identity are dropped with its counters.
  Result<size_t> reset(const std::string& identity, const std::string& budget) override;
  std::vector<LedgerEntry> list() const override;
  // Wakes the flusher (never waits for the store: cp's sweep calls it every 500 ms).
  Status flush() override;

  // Writes the pending deltas now and takes the store's totals. On error they stay pending.
  Status flush_now();
  // Re-reads the counters of `identities` from the store (every counter when empty): another
  // node changed them, or the change feed was interrupted.
  Status refresh(const std::vector<std::string>& identities);
  // Deltas not yet in the store (counters with a pending delta).
  size_t pending() const;

 private:
  explicit SharedBudgetLedger(SharedBudgetLedgerOptions options) : options_(std::move(options)) {}
  using Key = std::pair<std::string, std::string>;  // budget, identity
  struct Counter {
    int64_t window_start_ms = 0;
    protocol::BudgetUsage used;  // the store's total as last read + pending of this window
  };
  // REQUIRES: mu_ held. Sets the counter of `c` from the store's total plus this node's pending
  // delta of that window; records in `changed` whether the view moved (and down or not).
  void take_total(const state::BudgetCounter& c, std::map<std::string, bool>* changed);
  void notify(const std::map<std::string, bool>& changed);
  void flusher_loop();

  SharedBudgetLedgerOptions options_;
  mutable std::mutex mu_;
  std::map<Key, Counter> counters_;
  std::map<Key, Counter> pending_;  // not yet in the store; one window per counter
  std::mutex flush_mu_;             // one flush at a time (the order of the store's totals)
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool stopping_ = false;  // guarded by wake_mu_
  bool stopped_ = false;   // guarded by flush_mu_
  std::thread flusher_;
};

}  // namespace pgwarden::budgets
