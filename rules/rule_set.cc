#include "rules/rule_set.h"

#include <hs/hs.h>
#include <openssl/evp.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <unordered_map>

namespace pgwarden::rules {
namespace {

std::string_view trim(std::string_view s) {
  size_t b = 0;
  while (b < s.size() && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r')) ++b;
  size_t e = s.size();
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r')) --e;
  return s.substr(b, e - b);
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char ch : id) {
    bool ok =
        (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

struct FlagName {
  std::string_view name;
  unsigned flag;
};
constexpr std::array<FlagName, 5> kFlagNames = {{
    {"caseless", HS_FLAG_CASELESS},
    {"dotall", HS_FLAG_DOTALL},
    {"multiline", HS_FLAG_MULTILINE},
    {"utf8", HS_FLAG_UTF8},
    {"ucp", HS_FLAG_UCP},
}};

// One rule while its lines are being read.
struct PendingRule {
  Rule rule;
  std::map<std::string, uint32_t, std::less<>> seen;  // key -> line
  std::optional<std::string> pattern;
  std::optional<std::string> literal;
  bool has_view = false;
  bool has_severity = false;
  bool has_action = false;
  bool has_validator = false;
};

class Parser {
 public:
  explicit Parser(std::vector<RuleDiagnostic>& diags) : diags_(diags) {}

  void parse_source(const RuleSource& src) {
    file_ = src.name;
    if (src.content.size() > kMaxRuleFileBytes) {
      error(0, "file is larger than " + std::to_string(kMaxRuleFileBytes) + " bytes");
      return;
    }
    std::string_view rest = src.content;
    uint32_t line_no = 0;
    while (!rest.empty()) {
      ++line_no;
      size_t nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
      parse_line(trim(line), line_no);
    }
    finish_rule();
  }

  std::vector<Rule> take_rules() { return std::move(rules_); }

 private:
  void error(uint32_t line, std::string reason) {
    diags_.push_back({file_, line, std::move(reason)});
  }

  void parse_line(std::string_view line, uint32_t line_no) {
    if (line.empty() || line[0] == '#') return;
    if (line[0] == '[') {
      finish_rule();
      if (line.back() != ']') {
        error(line_no, "rule header must be [rule.id]");
        return;
      }
      std::string_view id = trim(line.substr(1, line.size() - 2));
      if (!valid_id(id)) {
        error(line_no,
              "invalid rule id '" + std::string(id) + "' (use 1-128 characters of a-z 0-9 _ . -)");
        return;
      }
      pending_.emplace();
      pending_->rule.id = id;
      pending_->rule.file = file_;
      pending_->rule.line = line_no;
      return;
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) {
      error(line_no, "expected 'key = value', a [rule.id] header or a # comment");
      return;
    }
    if (!pending_) {
      error(line_no, "key outside of a rule; start a rule with [rule.id]");
      return;
    }
    std::string_view key = trim(line.substr(0, eq));
    std::string_view value = trim(line.substr(eq + 1));
    auto [it, inserted] = pending_->seen.emplace(std::string(key), line_no);
    if (!inserted) {
      error(line_no, "duplicate key '" + std::string(key) + "' (first at line " +
                         std::to_string(it->second) + ")");
      return;
    }
    set_key(key, value, line_no);
  }

  void set_key(std::string_view key, std::string_view value, uint32_t line_no) {
    Rule& r = pending_->rule;
    if (key == "action") {
      pending_->has_action = true;
      if (value == "deny") {
        r.action = Action::kDeny;
      } else if (value == "approve") {
        r.action = Action::kApprove;
      } else if (value == "detect") {
        r.action = Action::kDetect;
      } else {
        pending_->has_action = false;
        error(line_no, "unknown action '" + std::string(value) + "' (deny, approve, detect)");
      }
    } else if (key == "view") {
      pending_->has_view = true;
      if (value == "code") {
        r.view = View::kCode;
      } else if (value == "text") {
        r.view = View::kText;
      } else if (value == "value") {
        r.view = View::kValue;
      } else {
        error(line_no, "unknown view '" + std::string(value) + "' (code, text, value)");
      }
    } else if (key == "pattern" || key == "literal") {
      if (value.empty()) {
        error(line_no, std::string(key) + " is empty");
      } else if (value.size() > kMaxPatternBytes) {
        error(line_no,
              std::string(key) + " is longer than " + std::to_string(kMaxPatternBytes) + " bytes");
      } else if (key == "pattern") {
        pending_->pattern = std::string(value);
      } else {
        pending_->literal = std::string(value);
      }
    } else if (key == "flags") {
      std::string_view rest = value;
      while (!rest.empty()) {
        size_t comma = rest.find(',');
        std::string_view name = trim(rest.substr(0, comma));
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        bool known = false;
        for (const FlagName& f : kFlagNames) {
          if (f.name == name) {
            r.hs_flags |= f.flag;
            known = true;
          }
        }
        if (!known) {
          error(line_no, "unknown flag '" + std::string(name) +
                             "' (caseless, dotall, multiline, utf8, ucp)");
        }
      }
    } else if (key == "message") {
      r.message = value;
    } else if (key == "severity") {
      pending_->has_severity = true;
      if (value == "low") {
        r.severity = Severity::kLow;
      } else if (value == "medium") {
        r.severity = Severity::kMedium;
      } else if (value == "high") {
        r.severity = Severity::kHigh;
      } else if (value == "critical") {
        r.severity = Severity::kCritical;
      } else {
        error(line_no,
              "unknown severity '" + std::string(value) + "' (low, medium, high, critical)");
      }
    } else if (key == "validator") {
      pending_->has_validator = true;
      if (!validator_from_name(value, &r.validator)) {
        error(line_no, "unknown validator '" + std::string(value) + "' (" +
                           std::string(validator_names()) + ")");
      }
    } else {
      error(line_no, "unknown key '" + std::string(key) +
                         "' (action, view, pattern, literal, flags, message, severity, "
                         "validator)");
    }
  }

  void finish_rule() {
    if (!pending_) return;
    PendingRule p = std::move(*pending_);
    pending_.reset();
    Rule& r = p.rule;
    const uint32_t at = r.line;
    size_t before = diags_.size();
    if (!p.has_action) error(at, "rule " + r.id + ": missing 'action'");
    if (!p.has_severity) error(at, "rule " + r.id + ": missing 'severity'");
    if (p.pattern && p.literal) {
      error(at, "rule " + r.id + ": has both 'pattern' and 'literal'");
    } else if (!p.pattern && !p.literal) {
      error(at, "rule " + r.id + ": missing 'pattern' (or 'literal')");
    } else {
      r.pattern = p.pattern ? *p.pattern : escape_literal(*p.literal);
    }
    if (p.has_action) {
      if (r.action == Action::kDetect) {
        if (p.has_view && r.view != View::kValue) {
          error(at, "rule " + r.id + ": detect rules scan result values; view must be 'value'");
        }
        r.view = View::kValue;
        r.hs_flags |= HS_FLAG_SOM_LEFTMOST;
      } else {
        if (!p.has_view) error(at, "rule " + r.id + ": missing 'view' (code or text)");
        if (r.view == View::kValue) {
          error(at, "rule " + r.id + ": view 'value' is only for detect rules");
        }
        if (r.message.empty()) error(at, "rule " + r.id + ": missing 'message'");
        if (p.has_validator) error(at, "rule " + r.id + ": 'validator' is only for detect rules");
        // Deny/approve only need to know that a rule matched, not where or how often.
        r.hs_flags |= HS_FLAG_SINGLEMATCH;
      }
    }
    if (diags_.size() == before) check_pattern(r);
    if (diags_.size() != before) return;
    auto [it, inserted] = ids_.emplace(r.id, rules_.size());
    if (!inserted) {
      const Rule& first = rules_[it->second];
      error(at, "duplicate rule id '" + r.id + "' (first defined at " + first.file + ":" +
                    std::to_string(first.line) + ")");
      return;
    }
    if (rules_.size() >= kMaxRules) {
      error(at, "more than " + std::to_string(kMaxRules) + " rules");
      return;
    }
    rules_.push_back(std::move(r));
  }

  // Asks Hyperscan whether it accepts the expression with these flags.
  void check_pattern(const Rule& r) {
    hs_expr_info_t* info = nullptr;
    hs_compile_error_t* err = nullptr;
    if (hs_expression_info(r.pattern.c_str(), r.hs_flags, &info, &err) != HS_SUCCESS) {
      error(r.line, "rule " + r.id + ": pattern rejected by Hyperscan: " +
                        (err != nullptr && err->message != nullptr ? err->message : "unknown"));
      hs_free_compile_error(err);
      return;
    }
    bool matches_empty = info->min_width == 0;
    std::free(info);
    if (matches_empty) {
      error(r.line, "rule " + r.id + ": pattern can match an empty string");
    }
  }

  std::vector<RuleDiagnostic>& diags_;
  std::string file_;
  std::optional<PendingRule> pending_;
  std::vector<Rule> rules_;
  std::unordered_map<std::string, size_t> ids_;
};

void hash_field(EVP_MD_CTX* ctx, std::string_view field) {
  uint64_t len = field.size();
  EVP_DigestUpdate(ctx, &len, sizeof(len));
  EVP_DigestUpdate(ctx, field.data(), field.size());
}

std::string compute_content_hash(const std::vector<Rule>& rules) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  hash_field(ctx, "pgwarden-rules-v1");
  for (const Rule& r : rules) {
    hash_field(ctx, r.id);
    hash_field(ctx, action_name(r.action));
    hash_field(ctx, view_name(r.view));
    hash_field(ctx, r.pattern);
    hash_field(ctx, std::to_string(r.hs_flags));
    hash_field(ctx, r.message);
    hash_field(ctx, severity_name(r.severity));
    hash_field(ctx, validator_name(r.validator));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  EVP_DigestFinal_ex(ctx, md, &md_len);
  EVP_MD_CTX_free(ctx);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < md_len; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 15]);
  }
  return hex;
}

}  // namespace

std::string_view action_name(Action action) {
  switch (action) {
    case Action::kDeny:
      return "deny";
    case Action::kApprove:
      return "approve";
    case Action::kDetect:
      return "detect";
  }
  return "?";
}

std::string_view view_name(View view) {
  switch (view) {
    case View::kCode:
      return "code";
    case View::kText:
      return "text";
    case View::kValue:
      return "value";
  }
  return "?";
}

std::string_view severity_name(Severity severity) {
  switch (severity) {
    case Severity::kLow:
      return "low";
    case Severity::kMedium:
      return "medium";
    case Severity::kHigh:
      return "high";
    case Severity::kCritical:
      return "critical";
  }
  return "?";
}

namespace {

struct ValidatorName {
  Validator validator;
  std::string_view name;
};

constexpr ValidatorName kValidatorNames[] = {
    {Validator::kNone, "none"},
    {Validator::kLuhn, "luhn"},
    {Validator::kPaymentCard, "payment_card"},
    {Validator::kIban, "iban"},
    {Validator::kPhone, "phone"},
    {Validator::kUsSsn, "us_ssn"},
    {Validator::kUkNino, "uk_nino"},
    {Validator::kNlBsn, "nl_bsn"},
    {Validator::kDeSteuerId, "de_steuer_id"},
    {Validator::kEmail, "email"},
};

}  // namespace

std::string_view validator_name(Validator validator) {
  for (const ValidatorName& v : kValidatorNames) {
    if (v.validator == validator) return v.name;
  }
  return "?";
}

bool validator_from_name(std::string_view name, Validator* out) {
  for (const ValidatorName& v : kValidatorNames) {
    if (v.validator != Validator::kNone && v.name == name) {
      *out = v.validator;
      return true;
    }
  }
  return false;
}

std::string_view validator_names() {
  return "luhn, payment_card, iban, phone, us_ssn, uk_nino, nl_bsn, de_steuer_id, email";
}

std::string RuleDiagnostic::to_string() const {
  return file + ":" + std::to_string(line) + ": " + reason;
}

std::string escape_literal(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char ch : bytes) {
    auto u = static_cast<unsigned char>(ch);
    bool plain = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
                 u == '_' || u == ' ';
    if (plain) {
      out.push_back(ch);
    } else {
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

Result<RuleSet> RuleSet::parse(std::span<const RuleSource> sources,
                               std::vector<RuleDiagnostic>* diagnostics) {
  std::vector<RuleDiagnostic> diags;
  Parser parser(diags);
  for (const RuleSource& src : sources) parser.parse_source(src);
  if (sources.empty()) diags.push_back({"(none)", 0, "no rule files given"});
  if (!diags.empty()) {
    std::string msg;
    for (const RuleDiagnostic& d : diags) {
      if (!msg.empty()) msg += '\n';
      msg += d.to_string();
    }
    if (diagnostics != nullptr) diagnostics->insert(diagnostics->end(), diags.begin(), diags.end());
    return invalid_argument(std::move(msg));
  }
  RuleSet set;
  set.rules_ = parser.take_rules();
  set.content_hash_ = compute_content_hash(set.rules_);
  return set;
}

Result<RuleSet> RuleSet::load_files(std::span<const std::string> paths,
                                    std::vector<RuleDiagnostic>* diagnostics) {
  std::vector<RuleSource> sources;
  std::vector<RuleDiagnostic> io_errors;
  for (const std::string& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      io_errors.push_back({path, 0, "cannot open file"});
      continue;
    }
    std::string content;
    char buf[65536];
    while (in.read(buf, sizeof(buf)) || in.gcount() > 0) {
      content.append(buf, static_cast<size_t>(in.gcount()));
      if (content.size() > kMaxRuleFileBytes) break;
    }
    sources.push_back({path, std::move(content)});
  }
  if (!io_errors.empty()) {
    std::string msg;
    for (const RuleDiagnostic& d : io_errors) {
      if (!msg.empty()) msg += '\n';
      msg += d.to_string();
    }
    if (diagnostics != nullptr) {
      diagnostics->insert(diagnostics->end(), io_errors.begin(), io_errors.end());
    }
    return invalid_argument(std::move(msg));
  }
  return parse(sources, diagnostics);
}

const Rule* RuleSet::find(std::string_view id) const {
  for (const Rule& r : rules_) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

}  // namespace pgwarden::rules
