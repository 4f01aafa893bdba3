#include "controlplane/budgets/budget_rule.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "controlplane/policy/glob.h"

namespace pgwarden::budgets {

using json = nlohmann::json;

namespace {

constexpr int64_t kMaxWindowMs = 366LL * 86400 * 1000;

// Splits "<digits><unit>"; false when there are no digits or they overflow.
bool split_number(const std::string& text, uint64_t* n, std::string* unit) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return false;
  *n = v;
  *unit = text.substr(i);
  return true;
}

}  // namespace

bool BudgetRule::applies_to(const std::string& subject,
                            const std::vector<std::string>& member_of) const {
  bool id = std::any_of(identities.begin(), identities.end(),
                        [&](const std::string& g) { return policy::glob_match(g, subject); });
  if (!id) return false;
  if (groups.empty()) return true;
  return std::any_of(groups.begin(), groups.end(), [&](const std::string& g) {
    return std::any_of(member_of.begin(), member_of.end(),
                       [&](const std::string& m) { return policy::glob_match(g, m); });
  });
}

Result<int64_t> parse_window(const std::string& text) {
  uint64_t n = 0;
  std::string unit;
  if (!split_number(text, &n, &unit)) {
    return invalid_argument("must be a number with a unit: s, m, h or d (e.g. \"1h\")");
  }
  uint64_t mult = 0;
  if (unit == "s") mult = 1000;
  if (unit == "m") mult = 60 * 1000;
  if (unit == "h") mult = 3600 * 1000;
  if (unit == "d") mult = 86400 * 1000;
  if (mult == 0) return invalid_argument("unknown unit \"" + unit + "\" (use s, m, h or d)");
  if (n == 0 || n > static_cast<uint64_t>(kMaxWindowMs) / mult) {
    return invalid_argument("must be between 1s and 366d");
  }
  return static_cast<int64_t>(n * mult);
}

Result<uint64_t> parse_byte_size(const json& value) {
  if (value.is_number_integer()) {
    if (!value.is_number_unsigned() && value.get<int64_t>() < 0) {
      return invalid_argument("must not be negative");
    }
    return value.get<uint64_t>();
  }
  if (!value.is_string()) return invalid_argument("must be a byte count or a size like \"50MB\"");
  uint64_t n = 0;
  std::string unit;
  if (!split_number(value.get<std::string>(), &n, &unit)) {
    return invalid_argument(
        "must be a size like \"50MB\" (units B, kB, MB, GB, TB, KiB, MiB, GiB, "
        "TiB)");
  }
  static const std::pair<const char*, uint64_t> kUnits[] = {{"", 1},
                                                            {"B", 1},
                                                            {"kB", 1000},
                                                            {"MB", 1000ull * 1000},
                                                            {"GB", 1000ull * 1000 * 1000},
                                                            {"TB", 1000ull * 1000 * 1000 * 1000},
                                                            {"KiB", 1ull << 10},
                                                            {"MiB", 1ull << 20},
                                                            {"GiB", 1ull << 30},
                                                            {"TiB", 1ull << 40}};
  for (const auto& [name, mult] : kUnits) {
    if (unit != name) continue;
    if (n > UINT64_MAX / mult) return invalid_argument("is too large");
    return n * mult;
  }
  return invalid_argument("unknown unit \"" + unit +
                          "\" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)");
}

std::vector<BudgetRule> parse_budget_rules(
    const json& value, const std::string& path,
    std::vector<std::pair<std::string, std::string>>& errors) {
  std::vector<BudgetRule> rules;
  auto error = [&](const std::string& p, std::string m) { errors.emplace_back(p, std::move(m)); };
  if (!value.is_array()) {
    error(path, "must be an array of budgets");
    return rules;
  }
  std::set<std::string> names;
  for (size_t i = 0; i < value.size(); ++i) {
    const json& e = value[i];
    const std::string ep = path + "[" + std::to_string(i) + "]";
    if (!e.is_object()) {
      error(ep, "must be an object");
      continue;
    }
    static const std::set<std::string> kKeys = {"name",         "identities",   "groups",
                                                "window",       "statements",   "rows_returned",
                                                "result_bytes", "masked_cells", "on_exceed"};
    size_t before = errors.size();
    for (const auto& [k, v] : e.items()) {
      if (!kKeys.count(k)) error(ep + "." + k, "unknown key \"" + k + "\"");
    }
    BudgetRule r;
    if (!e.contains("name") || !e["name"].is_string() ||
        e["name"].get_ref<const std::string&>().empty() ||
        e["name"].get_ref<const std::string&>().size() > 64) {
      error(ep + ".name", "is required: a non-empty string of at most 64 characters");
    } else {
      r.name = e["name"].get<std::string>();
      for (char c : r.name) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
          error(ep + ".name", "may hold letters, digits, '-', '_' and '.' only");
          break;
        }
      }
      if (!names.insert(r.name).second)
        error(ep + ".name", "duplicate budget name \"" + r.name + "\"");
    }
    auto globs = [&](const char* key, std::vector<std::string>& out, bool required) {
      if (!e.contains(key)) {
        if (required) error(ep + "." + key, "is required");
        return;
      }
      const json& a = e[key];
      if (!a.is_array() || (required && a.empty())) {
        error(ep + "." + key,
              required ? "must be a non-empty array of globs" : "must be an array of globs");
        return;
      }
      for (size_t k = 0; k < a.size(); ++k) {
        if (!a[k].is_string() || a[k].get_ref<const std::string&>().empty()) {
          error(ep + "." + key + "[" + std::to_string(k) + "]", "must be a non-empty string");
        } else {
          out.push_back(a[k].get<std::string>());
        }
      }
    };
    globs("identities", r.identities, true);
    globs("groups", r.groups, false);
    if (!e.contains("window") || !e["window"].is_string()) {
      error(ep + ".window", "is required: a duration like \"1h\" (units s, m, h, d)");
    } else {
      r.window = e["window"].get<std::string>();
      auto w = parse_window(r.window);
      if (w.is_ok()) {
        r.window_ms = *w;
      } else {
        error(ep + ".window", w.status().message());
      }
    }
    bool any_limit = false;
    for (size_t m = 0; m < protocol::kBudgetMeasures; ++m) {
      std::string key(protocol::budget_measure_name(m));
      if (!e.contains(key)) continue;
      const json& v = e[key];
      if (static_cast<protocol::BudgetMeasure>(m) == protocol::BudgetMeasure::kResultBytes) {
        auto n = parse_byte_size(v);
        if (!n.is_ok()) {
          error(ep + "." + key, n.status().message());
          continue;
        }
        r.limit[m] = *n;
      } else if (v.is_number_integer() && (v.is_number_unsigned() || v.get<int64_t>() >= 0)) {
        r.limit[m] = v.get<uint64_t>();
      } else {
        error(ep + "." + key, "must be a non-negative integer");
        continue;
      }
      if (r.limit[m] == protocol::kNoBudgetLimit) {
        error(ep + "." + key, "is too large");
        continue;
      }
      any_limit = true;
    }
    if (!any_limit && errors.size() == before) {
      error(ep, "needs at least one of statements, rows_returned, result_bytes, masked_cells");
    }
    if (e.contains("on_exceed")) {
      const json& o = e["on_exceed"];
      if (!o.is_string() || (o != "deny" && o != "approve")) {
        error(ep + ".on_exceed", "must be \"deny\" or \"approve\"");
      } else {
        r.approve = o == "approve";
      }
    }
    if (errors.size() == before) rules.push_back(std::move(r));
  }
  return rules;
}

}  // namespace pgwarden::budgets
