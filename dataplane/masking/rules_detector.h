// Adapts the rules module's content detectors (Hyperscan PII patterns, `detect` rules of a
// policy's rule sets) to the RowMasker's Detector callback.
//
// A detector scan that cannot run (Hyperscan error) marks the whole value as sensitive:
// masking fails closed rather than letting an unscanned value through.
//
// Thread-safety: the returned Detector may be called from any thread; the rule set (or the
// Matcher) must outlive it (the Detector holds a shared_ptr to the set it was made with).
#pragma once

#include <memory>

#include "dataplane/masking/mask_apply.h"
#include "rules/matcher.h"

namespace pgwarden::masking {

// Detects with one compiled rule set.
Detector make_rules_detector(std::shared_ptr<const rules::CompiledRuleSet> set);

// Detects with whatever set `matcher` holds at scan time (follows reloads).
// REQUIRES: `matcher` outlives the Detector.
Detector make_matcher_detector(const rules::Matcher& matcher);

}  // namespace pgwarden::masking
