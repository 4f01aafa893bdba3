// BudgetLedger: the usage counters of every (budget, identity) in its current window — the
// seam between budget accounting and where the counts live. One node: FileBudgetLedger, in
// memory and persisted to <state_dir>/budgets.json. Several nodes (issue 17): a ledger over the
// shared state store implements the same interface (add() as an UPSERT ... RETURNING of the
// window's row, reset() as a DELETE, changes announced with NOTIFY so every node's sessions learn
// of an exhausted budget).
//
// Windows are fixed: a counter belongs to the window starting at `window_start_ms`; counts of
// an older window read as zero (and are replaced by the first add() of the new one).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/protocol/budget.h"
#include "common/status.h"

namespace pgwarden::budgets {

struct LedgerEntry {
  std::string budget;
  std::string identity;
  int64_t window_start_ms = 0;
  protocol::BudgetUsage used;
};

class BudgetLedger {
 public:
  virtual ~BudgetLedger() = default;
  // Adds `delta` to the counter of (budget, identity) in the window starting at
  // `window_start_ms` (a counter of an older window starts again from zero). Returns the
  // counter after the addition.
  virtual protocol::BudgetUsage add(const std::string& budget, const std::string& identity,
                                    int64_t window_start_ms,
                                    const protocol::BudgetUsage& delta) = 0;
  // The counter in that window (zero when none).
  virtual protocol::BudgetUsage get(const std::string& budget, const std::string& identity,
                                    int64_t window_start_ms) const = 0;
  // Forgets the counters of `identity` (of `budget` only, when not empty). Returns how many.
  virtual Result<size_t> reset(const std::string& identity, const std::string& budget) = 0;
  virtual std::vector<LedgerEntry> list() const = 0;
  // Makes every change so far durable.
  virtual Status flush() = 0;
};

class FileBudgetLedger : public BudgetLedger {
 public:
  // Reads <state_dir>/budgets.json when it exists. A file that does not parse is an error (cp
  // must not start and forget what agents used).
  static Result<std::unique_ptr<FileBudgetLedger>> open(const std::string& state_dir);

  protocol::BudgetUsage add(const std::string& budget, const std::string& identity,
                            int64_t window_start_ms, const protocol::BudgetUsage& delta) override;
  protocol::BudgetUsage get(const std::string& budget, const std::string& identity,
                            int64_t window_start_ms) const override;
  // Persisted at once.
  Result<size_t> reset(const std::string& identity, const std::string& budget) override;
  std::vector<LedgerEntry> list() const override;
  // Rewrites the file atomically when something changed since the last flush (cp calls it
  // every 500 ms and when it stops: a crash loses at most that much accounting).
  Status flush() override;
  const std::string& path() const { return path_; }

 private:
  explicit FileBudgetLedger(std::string path) : path_(std::move(path)) {}
  using Key = std::pair<std::string, std::string>;  // budget, identity
  struct Counter {
    int64_t window_start_ms = 0;
    protocol::BudgetUsage used;
  };
  std::string path_;
  mutable std::mutex mu_;
  std::map<Key, Counter> counters_;
  uint64_t changes_ = 0;
  std::mutex flush_mu_;   // serialises writers of the file
  uint64_t flushed_ = 0;  // changes_ as of the last successful flush (guarded by mu_)
};

}  // namespace pgwarden::budgets
