#include "controlplane/budgets/budget_ledger.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/atomic_file.h"

namespace pgwarden::budgets {

using json = nlohmann::json;

Result<std::unique_ptr<FileBudgetLedger>> FileBudgetLedger::open(const std::string& state_dir) {
  std::unique_ptr<FileBudgetLedger> ledger(new FileBudgetLedger(state_dir + "/budgets.json"));
  std::ifstream in(ledger->path_);
  if (!in) {
    if (errno == ENOENT) return ledger;
    return unavailable("cannot read " + ledger->path_ + ": " + std::strerror(errno));
  }
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, false);
  auto bad = [&](const std::string& why) {
    return invalid_argument(ledger->path_ + " is not a budget ledger (" + why +
                            "); move it away to start counting from zero");
  };
  if (!j.is_object() || j.value("version", 0) != 1 || !j.contains("counters") ||
      !j["counters"].is_array()) {
    return bad("expected {\"version\": 1, \"counters\": [...]}");
  }
  for (const json& e : j["counters"]) {
    if (!e.is_object() || !e.contains("budget") || !e["budget"].is_string() ||
        !e.contains("identity") || !e["identity"].is_string() || !e.contains("window_start_ms") ||
        !e["window_start_ms"].is_number_integer() || !e.contains("used") ||
        !e["used"].is_object()) {
      return bad("malformed counter");
    }
    Counter c;
    c.window_start_ms = e["window_start_ms"].get<int64_t>();
    for (size_t m = 0; m < protocol::kBudgetMeasures; ++m) {
      std::string key(protocol::budget_measure_name(m));
      if (!e["used"].contains(key)) continue;
      if (!e["used"][key].is_number_unsigned()) return bad("malformed counter");
      c.used.v[m] = e["used"][key].get<uint64_t>();
    }
    ledger->counters_[{e["budget"].get<std::string>(), e["identity"].get<std::string>()}] = c;
  }
  return ledger;
}

protocol::BudgetUsage FileBudgetLedger::add(const std::string& budget, const std::string& identity,
                                            int64_t window_start_ms,
                                            const protocol::BudgetUsage& delta) {
  std::lock_guard<std::mutex> lock(mu_);
  Counter& c = counters_[{budget, identity}];
  if (c.window_start_ms != window_start_ms) {
    c.window_start_ms = window_start_ms;
    c.used = protocol::BudgetUsage{};
  }
  c.used.add(delta);
  ++changes_;
  return c.used;
}

protocol::BudgetUsage FileBudgetLedger::get(const std::string& budget, const std::string& identity,
                                            int64_t window_start_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = counters_.find({budget, identity});
  if (it == counters_.end() || it->second.window_start_ms != window_start_ms) return {};
  return it->second.used;
}

Result<size_t> FileBudgetLedger::reset(const std::string& identity, const std::string& budget) {
  size_t n = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = counters_.begin(); it != counters_.end();) {
      if (it->first.second == identity && (budget.empty() || it->first.first == budget)) {
        it = counters_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    ++changes_;
  }
  Status st = flush();
  if (!st.is_ok()) return st;
  return n;
}

std::vector<LedgerEntry> FileBudgetLedger::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LedgerEntry> out;
  for (const auto& [key, c] : counters_) {
    out.push_back(LedgerEntry{key.first, key.second, c.window_start_ms, c.used});
  }
  return out;
}

Status FileBudgetLedger::flush() {
  std::lock_guard<std::mutex> writer(flush_mu_);
  json counters = json::array();
  uint64_t changes = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (changes_ == flushed_) return Status::ok();
    changes = changes_;
    for (const auto& [key, c] : counters_) {
      counters.push_back(json{{"budget", key.first},
                              {"identity", key.second},
                              {"window_start_ms", c.window_start_ms},
                              {"used", c.used.to_json()}});
    }
  }
  json doc = {{"version", 1}, {"counters", std::move(counters)}};
  Status st = replace_file_atomically(path_, doc.dump(1) + "\n", 0600);
  if (!st.is_ok()) return st;
  std::lock_guard<std::mutex> lock(mu_);
  flushed_ = changes;
  return Status::ok();
}

}  // namespace pgwarden::budgets
