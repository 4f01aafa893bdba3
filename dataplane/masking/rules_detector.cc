#include "dataplane/masking/rules_detector.h"

namespace pgwarden::masking {

namespace {

void copy_spans(const std::vector<rules::DetectSpan>& in, std::vector<DetectSpan>* out) {
  for (const auto& s : in) out->push_back({s.begin, s.end});
}

}  // namespace

Detector make_rules_detector(std::shared_ptr<const rules::CompiledRuleSet> set) {
  return [set = std::move(set)](std::string_view value, std::vector<DetectSpan>* out) {
    thread_local std::vector<rules::DetectSpan> spans;
    spans.clear();
    if (set == nullptr || !set->detect(value, spans).is_ok()) {
      out->push_back({0, value.size()});
      return;
    }
    copy_spans(spans, out);
  };
}

Detector make_matcher_detector(const rules::Matcher& matcher) {
  return [&matcher](std::string_view value, std::vector<DetectSpan>* out) {
    thread_local std::vector<rules::DetectSpan> spans;
    spans.clear();
    std::shared_ptr<const rules::CompiledRuleSet> pinned;
    if (!matcher.detect(value, spans, pinned).is_ok()) {
      out->push_back({0, value.size()});
      return;
    }
    copy_spans(spans, out);
  };
}

}  // namespace pgwarden::masking
