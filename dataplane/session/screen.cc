#include "dataplane/session/screen.h"

#include <unistd.h>

namespace pgwarden::session {

namespace {

class CollectMatches : public rules::MatchSink {
 public:
  explicit CollectMatches(ScreenResult* out) : out_(out) {}
  void on_match(const rules::Rule& rule) override {
    out_->matches.push_back(
        PrescreenMatch{rule.id, std::string(rules::action_name(rule.action)), rule.message});
  }
  void on_scan_error(std::string_view reason) override {
    out_->matches.push_back(PrescreenMatch{"prescreen_error", "deny",
                                           "the prescreen could not run: " + std::string(reason)});
  }

 private:
  ScreenResult* out_;
};

}  // namespace

std::string rule_set_list_key(const std::vector<std::string>& names) {
  std::string key;
  for (const auto& n : names) {
    if (!key.empty()) key += ',';
    key += n;
  }
  return key;
}

Result<std::string> rule_set_file(const std::string& dir, const std::string& name) {
  std::vector<std::string> candidates = {name};
  if (name.rfind("default-", 0) == 0) candidates.push_back(name.substr(8));
  if (name.size() > 7 && name.compare(name.size() - 7, 7, "-detect") == 0) {
    candidates.push_back(name.substr(0, name.size() - 7));
  }
  for (const auto& c : candidates) {
    std::string path = dir + "/" + c + ".rules";
    if (access(path.c_str(), R_OK) == 0) return path;
  }
  return not_found("rule set \"" + name + "\" has no file " + dir + "/" + name + ".rules");
}

Result<std::shared_ptr<const CompiledRules>> load_rules(
    const std::string& dir, const std::vector<std::vector<std::string>>& lists) {
  auto out = std::make_shared<CompiledRules>();
  for (const auto& list : lists) {
    if (list.empty()) continue;
    std::vector<std::string> paths;
    for (const auto& name : list) {
      auto p = rule_set_file(dir, name);
      if (!p.is_ok()) return p.status();
      paths.push_back(*p);
    }
    auto set = rules::RuleSet::load_files(paths);
    if (!set.is_ok()) return set.status();
    auto compiled = rules::CompiledRuleSet::compile(std::move(*set));
    if (!compiled.is_ok()) return compiled.status();
    out->by_list.emplace(rule_set_list_key(list), std::move(*compiled));
  }
  return std::shared_ptr<const CompiledRules>(std::move(out));
}

Screen::Screen() = default;
Screen::~Screen() = default;

void Screen::set_rules(std::shared_ptr<const CompiledRules> rules) {
  rules_ = std::move(rules);
  ++generation_;
}

Result<std::shared_ptr<const rules::CompiledRuleSet>> Screen::resolve(
    const std::vector<std::string>& rule_sets) const {
  if (rule_sets.empty()) return std::shared_ptr<const rules::CompiledRuleSet>();
  if (rules_ != nullptr) {
    auto it = rules_->by_list.find(rule_set_list_key(rule_sets));
    if (it != rules_->by_list.end()) return it->second;
  }
  return not_found("rule sets [" + rule_set_list_key(rule_sets) +
                   "] are not loaded in the dataplane (reload pgwarden-dp)");
}

void Screen::screen(std::string_view sql, const rules::CompiledRuleSet* set, ScreenResult* out) {
  out->matches.clear();
  rules::lex_sql(sql, lexed_);
  out->shape_key = lexed_.shape_key();
  if (set == nullptr) return;
  CollectMatches sink(out);
  set->scan(lexed_, sink);
}

}  // namespace pgwarden::session
