// Compiled rule sets and the prescreen matcher.
//
// A RuleSet compiles to up to three Hyperscan block-mode databases, one per view: `code` and
// `text` (deny/approve rules, scanned against LexedSql::code()/text()) and `value` (detect
// rules, scanned against result values with leftmost start-of-match for masking spans).
// Compiled databases can be cached on disk, keyed by the rule set's content hash, so that a
// restart deserializes instead of recompiling.
//
// Thread-safety: CompiledRuleSet is immutable and every const method may be called from any
// number of threads at once; each thread uses its own Hyperscan scratch (thread-local, grown
// on first use with a new set, freed at thread exit). Matcher swaps sets atomically: a scan
// pins the set it started with, so scans in flight finish on the old set.
#pragma once

#include <hs/hs.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "rules/lexer.h"
#include "rules/rule_set.h"

namespace pgwarden::rules {

// allow = no deny or approve rule matched; deny wins over approve.
enum class Verdict : uint8_t { kAllow, kDeny, kApprove };
std::string_view verdict_name(Verdict verdict);

// Receives every matching deny/approve rule of one scan, after Hyperscan has finished (so
// a sink may itself scan). `rule` lives as long as the CompiledRuleSet that matched it.
class MatchSink {
 public:
  virtual ~MatchSink() = default;
  virtual void on_match(const Rule& rule) = 0;
  // The scan could not run (Hyperscan error, no rule set); the verdict is then kDeny.
  virtual void on_scan_error(std::string_view reason) { (void)reason; }
};

// A detect match: value bytes [begin, end) matched `rule` (and its validator, if any).
struct DetectSpan {
  uint32_t begin = 0;
  uint32_t end = 0;
  const Rule* rule = nullptr;  // lives as long as the CompiledRuleSet
};

struct CompileOptions {
  // Directory for serialized databases (<content hash>.hsdb). Empty: no disk cache. The
  // directory must be writable only by the gateway's user: a cached database is trusted.
  std::string cache_dir;
  // Databases made by serialize() for the same rules (e.g. by pgwarden-cp on this host):
  // used instead of compiling when they load here (same Hyperscan version and platform),
  // else the rules are compiled. Trusted like the cache: only from the gateway itself.
  std::string_view serialized;
};

class CompiledRuleSet {
 public:
  // Compiles `rules` (or loads it from options.cache_dir). Errors name the rule's file:line.
  static Result<std::shared_ptr<const CompiledRuleSet>> compile(RuleSet rules,
                                                                const CompileOptions& options = {});

  CompiledRuleSet(const CompiledRuleSet&) = delete;
  CompiledRuleSet& operator=(const CompiledRuleSet&) = delete;
  ~CompiledRuleSet();

  // Scans sql.code() with the code database and sql.text() with the text database; reports
  // every matching deny/approve rule to `sink` and returns the verdict. A scan error
  // returns kDeny (fail closed) and calls sink.on_scan_error().
  Verdict scan(const LexedSql& sql, MatchSink& sink) const;

  // Appends validated detect matches in `value` to `out` (sorted by begin; overlapping
  // matches of one rule merged). Returns a non-ok Status when the scan could not run; the
  // caller must then treat the whole value as sensitive.
  Status detect(std::string_view value, std::vector<DetectSpan>& out) const;

  const RuleSet& rule_set() const { return rules_; }
  // Total bytes of the compiled databases (hs_database_size).
  size_t database_bytes() const;
  bool loaded_from_cache() const { return loaded_from_cache_; }
  // The compiled databases (hs_serialize_database per view, with the Hyperscan version) for
  // CompileOptions::serialized; "" when Hyperscan cannot serialize them.
  std::string serialize() const;
  // Wall time spent compiling (or deserializing) in compile().
  double build_milliseconds() const { return build_ms_; }
  bool has_detect_rules() const { return dbs_[static_cast<int>(View::kValue)] != nullptr; }

 private:
  CompiledRuleSet() = default;
  friend struct CompiledRuleSetAccess;

  RuleSet rules_;
  hs_database_t* dbs_[3] = {nullptr, nullptr, nullptr};  // indexed by View
  uint64_t generation_ = 0;  // unique per instance; keys the thread-local scratch sizing
  bool loaded_from_cache_ = false;
  double build_ms_ = 0;
};

// The result of Matcher::prescreen: keeps the set alive so `matches` stay valid.
struct PrescreenResult {
  Verdict verdict = Verdict::kAllow;
  bool scan_failed = false;
  std::vector<const Rule*> matches;
  std::shared_ptr<const CompiledRuleSet> rules;
};

// Holds the current CompiledRuleSet of one consumer (a policy's rule sets) and swaps it
// atomically. Without a set every scan fails closed (kDeny).
class Matcher {
 public:
  Matcher() = default;
  explicit Matcher(std::shared_ptr<const CompiledRuleSet> set) : current_(std::move(set)) {}

  // Parses and compiles `paths`, then installs the result. On any error the current set
  // stays in place and the Status lists the problems (file:line: reason).
  Status load(std::span<const std::string> paths, const CompileOptions& options = {});
  void install(std::shared_ptr<const CompiledRuleSet> set) { current_.store(std::move(set)); }
  std::shared_ptr<const CompiledRuleSet> current() const { return current_.load(); }

  Verdict scan(const LexedSql& sql, MatchSink& sink) const;
  PrescreenResult prescreen(const LexedSql& sql) const;
  // Like CompiledRuleSet::detect; the spans' rules stay valid while `pinned` is held.
  Status detect(std::string_view value, std::vector<DetectSpan>& out,
                std::shared_ptr<const CompiledRuleSet>& pinned) const;

 private:
  std::atomic<std::shared_ptr<const CompiledRuleSet>> current_;
};

}  // namespace pgwarden::rules
