#include "dataplane/session/screen.h"

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
  return rules::rule_set_list_key(names);
}

Result<std::string> rule_set_file(const std::string& dir, const std::string& name) {
  return rules::rule_set_file(dir, name);
}

namespace {

Result<std::shared_ptr<const CompiledRules>> compile_bundle(const rules::RuleBundle& bundle,
                                                            std::string source) {
  auto compiled = bundle.compile();
  if (!compiled.is_ok()) return compiled.status();
  auto out = std::make_shared<CompiledRules>();
  out->by_list = std::move(*compiled);
  out->source = std::move(source);
  out->generation = bundle.generation;
  out->hash = bundle.hash;
  out->policy_lists = bundle.policy_lists;
  out->policy_masks = bundle.policy_masks;
  for (const auto& [key, set] : out->by_list) {
    out->rules += set->rule_set().size();
    if (set->loaded_from_cache()) ++out->loaded_lists;
  }
  return std::shared_ptr<const CompiledRules>(std::move(out));
}

}  // namespace

Result<std::shared_ptr<const CompiledRules>> load_rules(
    const std::string& dir, const std::vector<std::vector<std::string>>& lists) {
  auto bundle = rules::RuleBundle::read(dir, lists);
  if (!bundle.is_ok()) return bundle.status();
  return compile_bundle(*bundle, "local");
}

Result<std::shared_ptr<const CompiledRules>> compile_pushed_rules(const rules::RuleBundle& bundle) {
  return compile_bundle(bundle, "controlplane");
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

Result<std::shared_ptr<const rules::CompiledRuleSet>> Screen::resolve_for(
    const std::string& policy, const std::vector<std::string>& rule_sets) const {
  if (rules_ != nullptr) {
    auto p = rules_->policy_lists.find(policy);
    // A policy that no longer names rule sets does not take a live session's away: the
    // session's own list decides then.
    if (p != rules_->policy_lists.end() && !p->second.empty()) {
      auto it = rules_->by_list.find(p->second);
      if (it != rules_->by_list.end()) return it->second;
    }
  }
  return resolve(rule_sets);
}

const rules::RuleBundle::PolicyMasks* Screen::policy_masks(const std::string& policy) const {
  if (rules_ == nullptr) return nullptr;
  auto it = rules_->policy_masks.find(policy);
  return it != rules_->policy_masks.end() ? &it->second : nullptr;
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
