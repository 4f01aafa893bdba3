#include "controlplane/budgets/shared_budget_ledger.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>

namespace pgwarden::budgets {
namespace {

using protocol::BudgetMeasure;
using protocol::BudgetUsage;

// The budget counters of a shared store, in memory (the rest of the interface is unused).
// `down` makes every call unavailable, like a store outage.
class FakeSharedStore final : public state::FileStateStore {
 public:
  bool shared() const override { return true; }
  Result<std::vector<state::BudgetCounter>> add_budget_usage(
      const std::vector<state::BudgetCounter>& deltas) override {
    std::lock_guard lock(mu_);
    if (down) return unavailable("state store unavailable (budget usage)");
    ++writes;
    std::vector<state::BudgetCounter> out;
    for (const auto& d : deltas) {
      state::BudgetCounter& c = rows_[{d.budget, d.identity}];
      if (d.window_start_ms > c.window_start_ms)
        c = state::BudgetCounter{d.budget, d.identity, d.window_start_ms, {}};
      if (d.window_start_ms == c.window_start_ms) {
        for (size_t m = 0; m < c.used.size(); ++m) c.used[m] += d.used[m];
      }
      out.push_back(c);
    }
    return out;
  }
  Result<std::vector<state::BudgetCounter>> list_budget_counters(
      const std::string& identity) override {
    std::lock_guard lock(mu_);
    if (down) return unavailable("state store unavailable (list budget usage)");
    std::vector<state::BudgetCounter> out;
    for (const auto& [k, c] : rows_) {
      if (identity.empty() || k.second == identity) out.push_back(c);
    }
    return out;
  }
  Result<size_t> reset_budget_counters(const std::string& identity,
                                       const std::string& budget) override {
    std::lock_guard lock(mu_);
    if (down) return unavailable("state store unavailable (reset budget usage)");
    return static_cast<size_t>(std::erase_if(rows_, [&](const auto& r) {
      return r.first.second == identity && (budget.empty() || r.first.first == budget);
    }));
  }
  uint64_t statements(const std::string& identity) {
    std::lock_guard lock(mu_);
    return rows_[{"hourly", identity}].used[0];
  }

  bool down = false;
  int writes = 0;

 private:
  std::mutex mu_;
  std::map<std::pair<std::string, std::string>, state::BudgetCounter> rows_;
};

BudgetUsage statement(uint64_t rows) {
  BudgetUsage u;
  u[BudgetMeasure::kStatements] = 1;
  u[BudgetMeasure::kRows] = rows;
  return u;
}

struct Node {
  std::unique_ptr<SharedBudgetLedger> ledger;
  std::map<std::string, bool> told;  // identity -> lowered, from on_remote_change
};

std::unique_ptr<Node> node(FakeSharedStore& store) {
  auto n = std::make_unique<Node>();
  Node* raw = n.get();
  auto l = SharedBudgetLedger::open(
      {.store = &store,
       .on_remote_change = [raw](const std::string& id, bool lowered) { raw->told[id] = lowered; },
       .start_flusher = false});
  EXPECT_TRUE(l.is_ok()) << l.status().message();
  n->ledger = std::move(*l);
  return n;
}

constexpr int64_t kWindow = 3600000;

TEST(SharedBudgetLedgerTest, UsageIsBatchedLocallyAndWrittenInOneStoreCall) {
  FakeSharedStore store;
  auto a = node(store);
  for (int i = 0; i < 10; ++i) a->ledger->add("hourly", "svc:x", kWindow, statement(3));
  // The statement path saw every statement at once, without the store.
  EXPECT_EQ(a->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 10u);
  EXPECT_EQ(store.writes, 0);
  EXPECT_EQ(store.statements("svc:x"), 0u);
  ASSERT_TRUE(a->ledger->flush_now().is_ok());
  EXPECT_EQ(store.writes, 1);
  EXPECT_EQ(store.statements("svc:x"), 10u);
  EXPECT_EQ(a->ledger->pending(), 0u);
  EXPECT_TRUE(a->told.empty());  // nothing came from elsewhere
}

TEST(SharedBudgetLedgerTest, ANodeCountsWhatAnotherNodeRan) {
  FakeSharedStore store;
  auto a = node(store);
  auto b = node(store);
  for (int i = 0; i < 4; ++i) a->ledger->add("hourly", "svc:x", kWindow, statement(1));
  ASSERT_TRUE(a->ledger->flush_now().is_ok());
  // B hears of it (the store's notification) and re-reads the identity.
  ASSERT_TRUE(b->ledger->refresh({"svc:x"}).is_ok());
  EXPECT_EQ(b->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 4u);
  ASSERT_EQ(b->told.count("svc:x"), 1u);
  EXPECT_FALSE(b->told["svc:x"]);
  // B's own statement adds to that, and its flush returns both nodes' total.
  EXPECT_EQ(b->ledger->add("hourly", "svc:x", kWindow, statement(1))[BudgetMeasure::kStatements],
            5u);
  a->ledger->add("hourly", "svc:x", kWindow, statement(1));
  ASSERT_TRUE(a->ledger->flush_now().is_ok());
  ASSERT_TRUE(b->ledger->flush_now().is_ok());
  EXPECT_EQ(b->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 6u);
  EXPECT_EQ(store.statements("svc:x"), 6u);
}

TEST(SharedBudgetLedgerTest, AStoreOutageKeepsCountingLocallyAndLosesNothing) {
  FakeSharedStore store;
  auto a = node(store);
  a->ledger->add("hourly", "svc:x", kWindow, statement(1));
  store.down = true;
  EXPECT_EQ(a->ledger->flush_now().code(), StatusCode::kUnavailable);
  a->ledger->add("hourly", "svc:x", kWindow, statement(1));
  EXPECT_EQ(a->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 2u);
  EXPECT_EQ(a->ledger->flush_now().code(), StatusCode::kUnavailable);
  // An operator's reset needs the store: refused, nothing forgotten.
  auto reset = a->ledger->reset("svc:x", "");
  EXPECT_EQ(reset.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(a->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 2u);
  store.down = false;
  ASSERT_TRUE(a->ledger->flush_now().is_ok());
  EXPECT_EQ(store.statements("svc:x"), 2u);
  EXPECT_EQ(a->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 2u);
}

TEST(SharedBudgetLedgerTest, AResetOnOneNodeReachesTheOtherAsLowered) {
  FakeSharedStore store;
  auto a = node(store);
  auto b = node(store);
  a->ledger->add("hourly", "svc:x", kWindow, statement(1));
  ASSERT_TRUE(a->ledger->flush_now().is_ok());
  ASSERT_TRUE(b->ledger->refresh({"svc:x"}).is_ok());
  ASSERT_EQ(b->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 1u);
  auto n = a->ledger->reset("svc:x", "");
  ASSERT_TRUE(n.is_ok());
  EXPECT_EQ(*n, 1u);
  b->told.clear();
  ASSERT_TRUE(b->ledger->refresh({"svc:x"}).is_ok());
  EXPECT_EQ(b->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 0u);
  ASSERT_EQ(b->told.count("svc:x"), 1u);
  EXPECT_TRUE(b->told["svc:x"]);
}

TEST(SharedBudgetLedgerTest, ALaterWindowStartsFromZeroAndDropsTheOldPendingDelta) {
  FakeSharedStore store;
  auto a = node(store);
  a->ledger->add("hourly", "svc:x", kWindow, statement(1));
  a->ledger->add("hourly", "svc:x", 2 * kWindow, statement(1));
  EXPECT_EQ(a->ledger->get("hourly", "svc:x", kWindow)[BudgetMeasure::kStatements], 0u);
  EXPECT_EQ(a->ledger->get("hourly", "svc:x", 2 * kWindow)[BudgetMeasure::kStatements], 1u);
  ASSERT_TRUE(a->ledger->flush_now().is_ok());
  EXPECT_EQ(store.statements("svc:x"), 1u);
}

TEST(SharedBudgetLedgerTest, AFileStoreIsRefused) {
  state::FileStateStore file;
  EXPECT_EQ(SharedBudgetLedger::open({.store = &file}).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pgwarden::budgets
