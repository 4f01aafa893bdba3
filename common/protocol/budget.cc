#include "common/protocol/budget.h"

#include <ctime>

namespace pgwarden::protocol {

using json = nlohmann::json;

namespace {
constexpr std::string_view kMeasureNames[kBudgetMeasures] = {"statements", "rows_returned",
                                                             "result_bytes", "masked_cells"};

bool u64_field(const json& j, const char* key, uint64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) return false;
  *out = it->get<uint64_t>();
  return true;
}

bool i64_field(const json& j, const char* key, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return false;
  *out = it->get<int64_t>();
  return true;
}
}  // namespace

std::string_view budget_measure_name(size_t measure) {
  return measure < kBudgetMeasures ? kMeasureNames[measure] : "unknown";
}

void BudgetUsage::add(const BudgetUsage& o) {
  for (size_t i = 0; i < kBudgetMeasures; ++i) {
    v[i] = o.v[i] > UINT64_MAX - v[i] ? UINT64_MAX : v[i] + o.v[i];
  }
}

bool BudgetUsage::empty() const {
  for (uint64_t x : v) {
    if (x != 0) return false;
  }
  return true;
}

json BudgetUsage::to_json() const {
  json j = json::object();
  for (size_t i = 0; i < kBudgetMeasures; ++i) j[std::string(kMeasureNames[i])] = v[i];
  return j;
}

int BudgetState::exhausted_measure() const {
  for (size_t i = 0; i < kBudgetMeasures; ++i) {
    if (limit[i] != kNoBudgetLimit && used.v[i] >= limit[i]) return static_cast<int>(i);
  }
  return -1;
}

bool BudgetState::roll(int64_t now_ms) {
  if (window_ms <= 0 || now_ms < resets_at_ms()) return false;
  window_start_ms = now_ms - now_ms % window_ms;
  used = BudgetUsage{};
  return true;
}

std::string utc_time_text(int64_t unix_ms) {
  time_t t = static_cast<time_t>(unix_ms / 1000);
  tm parts{};
  gmtime_r(&t, &parts);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &parts);
  return buf;
}

std::string BudgetState::refusal_message(std::string_view subject, int64_t now_ms) const {
  int m = exhausted_measure();
  size_t i = m < 0 ? 0 : static_cast<size_t>(m);
  int64_t in_s = std::max<int64_t>(0, (resets_at_ms() - now_ms + 999) / 1000);
  return "pgwarden: budget \"" + name + "\" of " + std::string(subject) +
         " is exhausted: " + std::string(kMeasureNames[i]) + " " + std::to_string(used.v[i]) +
         " of " + std::to_string(limit[i]) + " in the " + window + " window; it resets at " +
         utc_time_text(resets_at_ms()) + " (in " + std::to_string(in_s) + " s)";
}

json BudgetState::to_json() const {
  json limits = json::object();
  for (size_t i = 0; i < kBudgetMeasures; ++i) {
    if (limit[i] != kNoBudgetLimit) limits[std::string(kMeasureNames[i])] = limit[i];
  }
  int m = exhausted_measure();
  return json{{"name", name},
              {"window", window},
              {"window_ms", window_ms},
              {"window_start_ms", window_start_ms},
              {"resets_at_ms", resets_at_ms()},
              {"on_exceed", approve ? "approve" : "deny"},
              {"limits", std::move(limits)},
              {"used", used.to_json()},
              {"exhausted", m < 0 ? json(nullptr) : json(std::string(kMeasureNames[m]))}};
}

Result<BudgetState> BudgetState::from_json(const json& j) {
  auto bad = [](std::string what) { return invalid_argument("malformed budget: " + what); };
  if (!j.is_object()) return bad("not an object");
  BudgetState b;
  if (!j.contains("name") || !j["name"].is_string() ||
      j["name"].get_ref<const std::string&>().empty())
    return bad("name");
  b.name = j["name"].get<std::string>();
  if (!j.contains("window") || !j["window"].is_string()) return bad("window");
  b.window = j["window"].get<std::string>();
  if (!i64_field(j, "window_ms", &b.window_ms) || b.window_ms <= 0) return bad("window_ms");
  if (!i64_field(j, "window_start_ms", &b.window_start_ms)) return bad("window_start_ms");
  std::string on_exceed = j.value("on_exceed", std::string());
  if (on_exceed != "deny" && on_exceed != "approve") return bad("on_exceed");
  b.approve = on_exceed == "approve";
  const json* limits = j.contains("limits") ? &j["limits"] : nullptr;
  const json* used = j.contains("used") ? &j["used"] : nullptr;
  if (limits == nullptr || !limits->is_object() || used == nullptr || !used->is_object())
    return bad("limits/used");
  for (size_t i = 0; i < kBudgetMeasures; ++i) {
    const char* key = kMeasureNames[i].data();
    if (limits->contains(key) && !u64_field(*limits, key, &b.limit[i])) return bad(key);
    if (used->contains(key) && !u64_field(*used, key, &b.used.v[i])) return bad(key);
  }
  return b;
}

}  // namespace pgwarden::protocol
