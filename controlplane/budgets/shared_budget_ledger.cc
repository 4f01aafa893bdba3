#include "controlplane/budgets/shared_budget_ledger.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <set>

namespace pgwarden::budgets {

namespace {

state::BudgetCounter to_counter(const std::string& budget, const std::string& identity,
                                int64_t window_start_ms, const protocol::BudgetUsage& u) {
  state::BudgetCounter c{budget, identity, window_start_ms, {}};
  static_assert(sizeof(c.used) == sizeof(u.v));
  for (size_t m = 0; m < protocol::kBudgetMeasures; ++m) c.used[m] = u.v[m];
  return c;
}

}  // namespace

Result<std::unique_ptr<SharedBudgetLedger>> SharedBudgetLedger::open(
    SharedBudgetLedgerOptions options) {
  if (options.store == nullptr || !options.store->shared()) {
    return invalid_argument("a shared budget ledger needs a shared state store");
  }
  // The first read tells no one: there are no sessions yet.
  auto on_change = std::move(options.on_remote_change);
  std::unique_ptr<SharedBudgetLedger> ledger(new SharedBudgetLedger(std::move(options)));
  PGW_RETURN_IF_ERROR(ledger->refresh({}));
  ledger->options_.on_remote_change = std::move(on_change);
  if (ledger->options_.start_flusher) {
    SharedBudgetLedger* raw = ledger.get();
    ledger->flusher_ = std::thread([raw] { raw->flusher_loop(); });
  }
  return ledger;
}

SharedBudgetLedger::~SharedBudgetLedger() { stop(); }

void SharedBudgetLedger::stop() {
  {
    std::lock_guard lock(wake_mu_);
    stopping_ = true;
  }
  wake_cv_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  {
    std::lock_guard lock(flush_mu_);
    if (stopped_) return;
  }
  Status st = flush_now();
  if (!st.is_ok()) {
    spdlog::error("budget usage of {} counters not written to the state store: {}", pending(),
                  st.message());
  }
  std::lock_guard lock(flush_mu_);
  stopped_ = true;
}

void SharedBudgetLedger::flusher_loop() {
  std::unique_lock lock(wake_mu_);
  while (!stopping_) {
    wake_cv_.wait_for(lock, std::chrono::milliseconds(options_.flush_interval_ms),
                      [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    // Errors are the store's to log (once per outage); the deltas stay pending.
    if (pending() > 0) (void)flush_now();
    lock.lock();
  }
}

protocol::BudgetUsage SharedBudgetLedger::add(const std::string& budget,
                                              const std::string& identity, int64_t window_start_ms,
                                              const protocol::BudgetUsage& delta) {
  std::lock_guard lock(mu_);
  Key key{budget, identity};
  // A later window starts from zero; what is still pending of an earlier one is dropped (that
  // window is over, nothing enforces it any more).
  for (auto* m : {&counters_, &pending_}) {
    Counter& c = (*m)[key];
    if (c.window_start_ms != window_start_ms) c = Counter{window_start_ms, {}};
    c.used.add(delta);
  }
  return counters_[key].used;
}

protocol::BudgetUsage SharedBudgetLedger::get(const std::string& budget,
                                              const std::string& identity,
                                              int64_t window_start_ms) const {
  std::lock_guard lock(mu_);
  auto it = counters_.find({budget, identity});
  if (it == counters_.end() || it->second.window_start_ms != window_start_ms) return {};
  return it->second.used;
}

Result<size_t> SharedBudgetLedger::reset(const std::string& identity, const std::string& budget) {
  std::lock_guard order(flush_mu_);
  auto n = options_.store->reset_budget_counters(identity, budget);
  if (!n.is_ok()) return n.status();
  std::lock_guard lock(mu_);
  for (auto* m : {&counters_, &pending_}) {
    for (auto it = m->begin(); it != m->end();) {
      bool hit = it->first.second == identity && (budget.empty() || it->first.first == budget);
      it = hit ? m->erase(it) : std::next(it);
    }
  }
  return n;
}

std::vector<LedgerEntry> SharedBudgetLedger::list() const {
  std::lock_guard lock(mu_);
  std::vector<LedgerEntry> out;
  for (const auto& [key, c] : counters_) {
    out.push_back(LedgerEntry{key.first, key.second, c.window_start_ms, c.used});
  }
  return out;
}

Status SharedBudgetLedger::flush() {
  wake_cv_.notify_all();
  return Status::ok();
}

size_t SharedBudgetLedger::pending() const {
  std::lock_guard lock(mu_);
  return pending_.size();
}

void SharedBudgetLedger::take_total(const state::BudgetCounter& c,
                                    std::map<std::string, bool>* changed) {
  Key key{c.budget, c.identity};
  Counter next{c.window_start_ms, {}};
  for (size_t m = 0; m < protocol::kBudgetMeasures; ++m) next.used.v[m] = c.used[m];
  if (auto p = pending_.find(key); p != pending_.end()) {
    if (p->second.window_start_ms == next.window_start_ms) {
      next.used.add(p->second.used);
    } else if (p->second.window_start_ms > next.window_start_ms) {
      next = p->second;  // the store's row is of a window that is over here
    }
  }
  Counter& cur = counters_[key];
  if (cur.window_start_ms == next.window_start_ms && cur.used.v == next.used.v) return;
  bool lowered = false;
  if (cur.window_start_ms == next.window_start_ms) {
    for (size_t m = 0; m < protocol::kBudgetMeasures; ++m) {
      lowered = lowered || next.used.v[m] < cur.used.v[m];
    }
  }
  (*changed)[c.identity] = (*changed)[c.identity] || lowered;
  cur = next;
}

void SharedBudgetLedger::notify(const std::map<std::string, bool>& changed) {
  if (!options_.on_remote_change) return;
  for (const auto& [identity, lowered] : changed) options_.on_remote_change(identity, lowered);
}

Status SharedBudgetLedger::flush_now() {
  std::map<std::string, bool> changed;
  {
    std::lock_guard order(flush_mu_);
    if (stopped_) return Status::ok();
    std::map<Key, Counter> sending;
    {
      std::lock_guard lock(mu_);
      sending.swap(pending_);
    }
    if (sending.empty()) return Status::ok();
    std::vector<state::BudgetCounter> deltas;
    for (const auto& [key, c] : sending) {
      deltas.push_back(to_counter(key.first, key.second, c.window_start_ms, c.used));
    }
    auto totals = options_.store->add_budget_usage(deltas);
    std::lock_guard lock(mu_);
    if (!totals.is_ok()) {
      // Kept for the next attempt, merged with what was added meanwhile.
      for (auto& [key, c] : sending) {
        auto [it, fresh] = pending_.try_emplace(key, c);
        if (fresh) continue;
        if (it->second.window_start_ms == c.window_start_ms) it->second.used.add(c.used);
      }
      return totals.status();
    }
    for (const state::BudgetCounter& c : *totals) take_total(c, &changed);
  }
  notify(changed);
  return Status::ok();
}

Status SharedBudgetLedger::refresh(const std::vector<std::string>& identities) {
  std::map<std::string, bool> changed;
  {
    std::lock_guard order(flush_mu_);
    std::vector<state::BudgetCounter> rows;
    std::vector<std::string> wanted =
        identities.empty() ? std::vector<std::string>{""} : identities;
    for (const std::string& identity : wanted) {
      auto r = options_.store->list_budget_counters(identity);
      if (!r.is_ok()) return r.status();
      rows.insert(rows.end(), r->begin(), r->end());
    }
    std::set<std::string> scope(identities.begin(), identities.end());
    std::lock_guard lock(mu_);
    std::set<Key> seen;
    for (const state::BudgetCounter& c : rows) {
      seen.insert({c.budget, c.identity});
      take_total(c, &changed);
    }
    // Counters the store no longer has were reset on another node.
    for (auto it = counters_.begin(); it != counters_.end();) {
      const Key& key = it->first;
      bool gone = (scope.empty() || scope.count(key.second) > 0) && seen.count(key) == 0 &&
                  pending_.count(key) == 0;
      if (!gone) {
        ++it;
        continue;
      }
      changed[key.second] = true;
      it = counters_.erase(it);
    }
  }
  notify(changed);
  return Status::ok();
}

}  // namespace pgwarden::budgets
