// Rule sets: the text files under rules/sets/ (format in docs/rules.md), parsed and validated.
//
//   # comment
//   [deny.drop_database]
//   action   = deny                     # deny | approve | detect
//   view     = code                     # code | text (deny/approve); detect rules scan values
//   pattern  = \bdrop\s+database\b      # Hyperscan regex; or `literal = exact bytes`
//   flags    = caseless, dotall         # optional: caseless dotall multiline utf8 ucp
//   message  = DROP DATABASE is not allowed through the gateway
//   severity = critical                 # low | medium | high | critical
//   validator = iban                    # detect only, optional: see Validator
//
// Parsing reports every problem (unknown key, duplicate id, missing key, pattern rejected by
// Hyperscan, ...) as file:line: reason, and yields no RuleSet when there is any problem, so
// a bad rule set can never replace a good one.
//
// Thread-safety: a RuleSet is an immutable value after parse; share it freely.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::rules {

enum class Action : uint8_t { kDeny, kApprove, kDetect };
enum class View : uint8_t { kCode, kText, kValue };  // kValue: result values (detect rules)
enum class Severity : uint8_t { kLow, kMedium, kHigh, kCritical };
// Post-match validators of detect rules (rules/validators.h, docs/rules.md).
enum class Validator : uint8_t {
  kNone,
  kLuhn,         // Luhn over 12..19 digits
  kPaymentCard,  // card scheme prefix and length, Luhn; finds the card inside longer digit runs
  kIban,         // ISO 13616 country length and mod-97
  kPhone,        // international, national trunk-0 and North American phone numbers
  kUsSsn,        // US SSN ranges
  kUkNino,       // UK National Insurance number
  kNlBsn,        // Dutch BSN 11-proof (the digits after a label)
  kDeSteuerId,   // German tax id, ISO 7064 MOD 11,10 (the digits after a label)
  kEmail,        // e-mail address shape
};

std::string_view action_name(Action action);
std::string_view view_name(View view);
std::string_view severity_name(Severity severity);
std::string_view validator_name(Validator validator);
// The validator called `name` in rule files; false when there is none.
bool validator_from_name(std::string_view name, Validator* out);
// Every validator name, comma separated (for diagnostics and docs).
std::string_view validator_names();

struct Rule {
  std::string id;  // stable, unique within a set: [a-z0-9_.-]+
  Action action = Action::kDeny;
  View view = View::kCode;
  std::string pattern;    // Hyperscan expression (a `literal` is stored hex-escaped)
  unsigned hs_flags = 0;  // HS_FLAG_* passed to the compiler, including implied flags
  std::string message;    // shown to the client on deny/approve
  Severity severity = Severity::kMedium;
  Validator validator = Validator::kNone;
  std::string file;  // where the rule was defined, for diagnostics
  uint32_t line = 0;
};

struct RuleDiagnostic {
  std::string file;
  uint32_t line = 0;
  std::string reason;
  std::string to_string() const;  // "file:line: reason"
};

struct RuleSource {
  std::string name;  // file name shown in diagnostics
  std::string content;
};

// Caps that bound memory on hostile input.
inline constexpr size_t kMaxRuleFileBytes = 16 * 1024 * 1024;
inline constexpr size_t kMaxRules = 100000;
inline constexpr size_t kMaxPatternBytes = 16 * 1024;

class RuleSet {
 public:
  RuleSet() = default;

  // Parses and validates every source as one set (ids unique across sources). On failure
  // the Status message lists every problem, one "file:line: reason" per line; when
  // `diagnostics` is non-null the problems are also appended there.
  static Result<RuleSet> parse(std::span<const RuleSource> sources,
                               std::vector<RuleDiagnostic>* diagnostics = nullptr);
  // Reads the files then parses them. Unreadable files are diagnostics too (line 0).
  static Result<RuleSet> load_files(std::span<const std::string> paths,
                                    std::vector<RuleDiagnostic>* diagnostics = nullptr);

  const std::vector<Rule>& rules() const { return rules_; }
  size_t size() const { return rules_.size(); }
  const Rule* find(std::string_view id) const;
  // Hex SHA-256 over the canonical form of every rule (order-sensitive); the on-disk
  // database cache key.
  const std::string& content_hash() const { return content_hash_; }

 private:
  std::vector<Rule> rules_;
  std::string content_hash_;
};

// Escapes arbitrary bytes into a Hyperscan expression matching them literally.
std::string escape_literal(std::string_view bytes);

}  // namespace pgwarden::rules
