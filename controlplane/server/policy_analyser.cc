#include "controlplane/server/policy_analyser.h"

#include <algorithm>
#include <optional>
#include <set>
#include <string_view>

#include "controlplane/policy/evaluator.h"
#include "controlplane/policy/glob.h"
#include "controlplane/policy/mask_lineage.h"
#include "controlplane/policy/sql_analysis.h"

namespace pgwarden::server {

namespace {

using policy::StatementAnalysis;
using policy::StatementKind;

bool is_write_kind(StatementKind k) {
  return k == StatementKind::kInsert || k == StatementKind::kUpdate ||
         k == StatementKind::kDelete || k == StatementKind::kMerge;
}

bool writes_rows(const StatementAnalysis& s) {
  return is_write_kind(s.kind) ||
         std::any_of(s.nested_kinds.begin(), s.nested_kinds.end(), is_write_kind);
}

bool session_dependent(StatementKind k) {
  switch (k) {
    case StatementKind::kSet:
    case StatementKind::kReset:
    case StatementKind::kPrepare:
    case StatementKind::kExecute:
    case StatementKind::kDeallocate:
    case StatementKind::kDiscard:
    case StatementKind::kDo:
    case StatementKind::kCall:
      return true;
    default:
      return false;
  }
}

// Literal values or session state may change the verdict of a statement of this shape.
bool literal_sensitive(const StatementAnalysis& s) {
  if (session_dependent(s.kind)) return true;
  // EXPLAIN ANALYZE EXECUTE p: the nested EXECUTE depends on the session's PREPARE.
  if (std::any_of(s.nested_kinds.begin(), s.nested_kinds.end(), session_dependent)) return true;
  if (s.inner && literal_sensitive(*s.inner)) return true;
  for (const policy::WriteEffect& e : s.write_effects) {
    // `WHERE 1=2` and `WHERE 1=1` have the same shape.
    if (e.uses_literals || e.reach != policy::WriteReach::kRestricted) return true;
  }
  return !s.settings.empty();
}

// A write whose rows the planner is asked about; text "" when it cannot be asked (COPY).
struct WriteProbe {
  std::string text;
  std::vector<std::string> functions;  // names the statement calls (planning may run some)
  // Why no estimate bounds the rows whatever the bind parameters are; "" when one does.
  std::string parameters;
};

// "public.t has trigger trg, which runs public.f()" for the first trigger whose function is
// neither in pg_catalog nor listed in the policy's allowed_functions; "" when none.
std::string untrusted_trigger(const policy::Policy& pol, const std::vector<TriggerRef>& triggers) {
  for (const TriggerRef& t : triggers) {
    policy::FunctionRef f{t.function_schema, t.function_name};
    if (f.schema == "pg_catalog" || policy::function_listed(pol, f)) continue;
    return t.relation + " has trigger " + t.trigger + ", which runs " + f.resolved() + "()";
  }
  return "";
}

WriteProbe probe_of(const StatementAnalysis& st, std::string text) {
  WriteProbe w{std::move(text), {}, {}};
  for (const policy::FunctionRef& f : st.functions) w.functions.push_back(f.name);
  for (const policy::WriteEffect& e : st.write_effects) {
    if (!e.parameters_choose_rows) continue;
    w.parameters = e.verb + " on " + e.relation +
                   " chooses its rows with bind parameters other than as `column = $n`: the "
                   "planner's estimate holds for no particular value (`k > $1` is a third of "
                   "the table, and may be all of it)";
    break;
  }
  return w;
}

void collect_writes(const StatementAnalysis& st, const policy::PreparedStatements* names,
                    std::vector<WriteProbe>* out) {
  switch (st.kind) {
    case StatementKind::kPrepare:  // runs nothing; its EXECUTE is estimated
    case StatementKind::kExplain:
      return;
    case StatementKind::kExplainAnalyze:
      if (!st.inner) return;
      if (st.inner->kind == StatementKind::kExecute) return collect_writes(*st.inner, names, out);
      if (writes_rows(*st.inner)) out->push_back(probe_of(*st.inner, st.inner->text));
      return;
    case StatementKind::kExecute: {
      const auto* candidates = names != nullptr ? names->find(st.prepared_name) : nullptr;
      if (candidates == nullptr) return;
      for (const auto& c : *candidates) {
        if (writes_rows(*c)) out->push_back(probe_of(*c, c->text));
      }
      return;
    }
    default:
      if (writes_rows(st)) {
        out->push_back(
            probe_of(st, st.kind == StatementKind::kCopyToStdout ? std::string() : st.text));
      }
      return;
  }
}

// Every write effect (`field` = &StatementAnalysis::write_effects) or function call
// (&StatementAnalysis::functions) a statement runs: its own, and those of EXPLAIN ANALYZE /
// PREPARE / EXECUTE inner statements.
template <typename T>
void collect_run(const StatementAnalysis& st, const policy::PreparedStatements* names,
                 std::vector<T> StatementAnalysis::*field, std::vector<T>* out) {
  out->insert(out->end(), (st.*field).begin(), (st.*field).end());
  if (st.inner && st.kind != StatementKind::kExplain) collect_run(*st.inner, names, field, out);
  if (st.kind == StatementKind::kExecute && names != nullptr) {
    if (const auto* candidates = names->find(st.prepared_name)) {
      for (const auto& c : *candidates) collect_run(*c, names, field, out);
    }
  }
}

// Functions a dry run may call: built-in, no side effects outside the transaction. Anything
// else (nextval, pg_notify, dblink, user functions, ...) skips the dry run.
bool dry_run_safe_function(const policy::FunctionRef& f) {
  static const std::set<std::string_view> kSafe = {"lower",
                                                   "upper",
                                                   "length",
                                                   "char_length",
                                                   "octet_length",
                                                   "substr",
                                                   "substring",
                                                   "left",
                                                   "right",
                                                   "trim",
                                                   "btrim",
                                                   "ltrim",
                                                   "rtrim",
                                                   "replace",
                                                   "concat",
                                                   "concat_ws",
                                                   "lpad",
                                                   "rpad",
                                                   "split_part",
                                                   "strpos",
                                                   "position",
                                                   "md5",
                                                   "abs",
                                                   "round",
                                                   "floor",
                                                   "ceil",
                                                   "ceiling",
                                                   "trunc",
                                                   "mod",
                                                   "now",
                                                   "statement_timestamp",
                                                   "transaction_timestamp",
                                                   "date_trunc",
                                                   "date_part",
                                                   "extract",
                                                   "to_char",
                                                   "to_date",
                                                   "to_timestamp",
                                                   "to_number",
                                                   "age",
                                                   "make_date",
                                                   "make_interval",
                                                   "jsonb_build_object",
                                                   "json_build_object",
                                                   "jsonb_set",
                                                   "jsonb_build_array",
                                                   "json_build_array",
                                                   "to_jsonb",
                                                   "to_json",
                                                   "array_length",
                                                   "cardinality",
                                                   "array_append",
                                                   "array_remove",
                                                   "format",
                                                   "initcap",
                                                   "reverse",
                                                   "starts_with",
                                                   "count",
                                                   "sum",
                                                   "avg",
                                                   "min",
                                                   "max",
                                                   "bool_and",
                                                   "bool_or",
                                                   "string_agg",
                                                   "array_agg"};
  return (f.schema.empty() || f.schema == "pg_catalog") && kSafe.count(f.name) > 0;
}

// Why the statement string cannot be dry-run; "" when it can (then *out is the statement).
std::string dry_run_obstacle(const policy::SqlAnalysis& a, const StatementAnalysis** out) {
  if (a.statements.size() != 1) return "the string holds several statements";
  const StatementAnalysis& st = a.statements[0];
  if (!is_write_kind(st.kind)) {
    return "only a single UPDATE, DELETE, INSERT or MERGE is dry-run (this is " +
           std::string(policy::statement_kind_name(st.kind)) + ")";
  }
  for (StatementKind k : st.nested_kinds) {
    if (is_write_kind(k)) return "it contains a data-modifying WITH";
  }
  for (const policy::FunctionRef& f : st.functions) {
    if (!dry_run_safe_function(f)) {
      return "it calls " + f.resolved() +
             ", whose effects (sequences, notifications, other connections) a rollback may "
             "not undo";
    }
  }
  *out = &st;
  return "";
}

bool mentions_default(std::string_view text) {
  auto word_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
           static_cast<unsigned char>(c) >= 0x80;
  };
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  for (size_t at = lower.find("default"); at != std::string::npos;
       at = lower.find("default", at + 1)) {
    bool start = at == 0 || !word_char(lower[at - 1]);
    bool end = at + 7 >= lower.size() || !word_char(lower[at + 7]);
    if (start && end) return true;
  }
  return false;
}

std::string with_commas(int64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0 && digits[i - 1] != '-') out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

void SessionSqlState::put_effect(const std::string& sql, approvals::ApprovalEffect effect) {
  if (pending_effects.size() >= kMaxPendingEffects && !pending_effects.count(sql)) {
    pending_effects.erase(pending_effects.begin());
  }
  pending_effects[sql] = std::move(effect);
}

approvals::ApprovalEffect SessionSqlState::take_effect(const std::string& sql) {
  auto it = pending_effects.find(sql);
  if (it == pending_effects.end()) return {};
  approvals::ApprovalEffect e = std::move(it->second);
  pending_effects.erase(it);
  return e;
}

// Mask rules name columns ASCII case-insensitively, as mask plans do.
constexpr auto kFold = policy::GlobCase::kInsensitive;

const policy::MaskRule* masked_rule_for(const policy::Policy& policy,
                                        const policy::ColumnUse& use) {
  const bool has_relation = !use.relation.name.empty();
  const std::string relation = has_relation ? use.relation.resolved() : std::string();
  for (const policy::MaskRule& rule : policy.masks) {
    if (!rule.column_glob.empty()) {
      size_t dot = rule.column_glob.rfind('.');
      std::string_view table_part = std::string_view(rule.column_glob).substr(0, dot);
      std::string_view column_part = std::string_view(rule.column_glob).substr(dot + 1);
      bool table_ok = !has_relation || policy::glob_match(table_part, relation, kFold);
      bool column_ok = use.column == "*" || policy::glob_match(column_part, use.column, kFold);
      if (dot != std::string::npos && table_ok && column_ok) return &rule;
    } else if (!rule.name_pattern.empty()) {
      if (use.column == "*" || policy::glob_match(rule.name_pattern, use.column, kFold))
        return &rule;
    }
  }
  return nullptr;
}

std::string PolicyAnalyser::unanalysable_function(
    const SessionView& session, const std::vector<policy::FunctionRef>& functions) const {
  std::shared_ptr<policy::LineageCatalog> catalog;
  for (const policy::FunctionRef& f : functions) {
    if (policy::function_listed(session.policy, f) || f.schema == "pg_catalog") continue;
    if (!f.schema.empty()) return f.resolved();
    // Unqualified: built in only when every function of that name is in pg_catalog (as
    // lineage reads it; the session's search_path is unknown).
    if (!catalog) {
      auto c = catalogs_ ? catalogs_(session.config, session.target)
                         : Result<std::shared_ptr<policy::LineageCatalog>>(
                               unavailable("no catalog on this gateway"));
      if (!c.is_ok())
        return f.name + " (the catalog could not be asked: " + c.status().message() + ")";
      catalog = std::move(c).value();
    }
    auto schemas = catalog->function_schemas(f.name);
    if (!schemas.is_ok()) {
      return f.name + " (the catalog could not be asked: " + schemas.status().message() + ")";
    }
    for (const std::string& schema : *schemas) {
      if (schema != "pg_catalog") return schema + "." + f.name;
    }
    if (schemas->empty()) return f.name + " (no such function in the catalog)";
  }
  return "";
}

protocol::AnalyseResponse PolicyAnalyser::analyse(const SessionView& session,
                                                  const protocol::AnalyseRequest& request) {
  std::shared_ptr<policy::LineageCatalog> catalog;
  if (catalogs_ && policy::has_column_masks(session.policy)) {
    auto c = catalogs_(session.config, session.target);
    if (!c.is_ok()) {
      return {"deny", "policy.lineage_unavailable",
              "cannot check this statement against the masked columns of policy \"" +
                  session.policy.name + "\": " + c.status().message(),
              false};
    }
    catalog = std::move(c).value();
  }
  const policy::Policy& pol = session.policy;
  policy::SqlAnalysis analysis = policy::analyse_sql(request.sql, catalog.get());
  SessionSqlState* state = session.sql_state;
  std::unique_lock<std::mutex> lock;
  if (state != nullptr) lock = std::unique_lock<std::mutex>(state->mu);
  // PREPARE / DEALLOCATE / DISCARD change the session's names only when the final answer is
  // not deny (the statement then reaches PostgreSQL): they are staged on a copy.
  const bool renames = std::any_of(
      analysis.statements.begin(), analysis.statements.end(), [](const StatementAnalysis& s) {
        return s.kind == StatementKind::kPrepare || s.kind == StatementKind::kDeallocate ||
               s.kind == StatementKind::kDiscard;
      });
  std::optional<policy::PreparedStatements> staged;
  policy::PreparedStatements* names = nullptr;
  if (state != nullptr) {
    if (renames) staged = state->prepared;
    names = renames ? &*staged : &state->prepared;
  }
  policy::Decision d = policy::evaluate(pol, analysis, names);
  // EXECUTE runs what its PREPARE analysed: that lineage is checked again under the masks the
  // session has now (they may have changed since, docs/masking.md "Verdicts across a policy
  // reload"). Taken while the session's state is held.
  std::vector<std::pair<std::string, std::shared_ptr<const StatementAnalysis>>> executed;
  if (catalog && names != nullptr) {
    for (const auto& st : analysis.statements) {
      const StatementAnalysis* e = &st;
      if (e->kind != StatementKind::kExecute && e->inner) e = e->inner.get();  // EXPLAIN ANALYZE
      if (e->kind != StatementKind::kExecute) continue;
      if (const auto* candidates = names->find(e->prepared_name)) {
        for (const auto& c : *candidates) executed.emplace_back(e->prepared_name, c);
      }
    }
  }
  auto commit_names = [&] {
    if (staged) state->prepared = std::move(*staged);
  };

  protocol::AnalyseResponse r;
  r.verdict = std::string(policy::verdict_name(d.verdict));
  r.rule = "policy." + d.rule;
  r.message = d.message;
  bool cacheable = !analysis.parse_error.has_value() && d.verdict != policy::Verdict::kApprove;
  for (const auto& s : analysis.statements) {
    if (literal_sensitive(s)) cacheable = false;
    // `ORDER BY 1` and `ORDER BY 2` share a shape: when a position may name a masked output,
    // the lineage decision depends on the number (docs/masking.md, "Caching").
    if (catalog && s.lineage && policy::decided_by_literals(pol, *s.lineage)) cacheable = false;
  }

  std::vector<WriteProbe> writes;
  std::vector<policy::WriteEffect> effects;
  std::vector<policy::FunctionRef> functions;
  if (d.verdict != policy::Verdict::kDeny) {
    for (const auto& s : analysis.statements) {
      collect_writes(s, names, &writes);
      collect_run(s, names, &StatementAnalysis::write_effects, &effects);
      collect_run(s, names, &StatementAnalysis::functions, &functions);
    }
  }
  if (!writes.empty() && pol.approve_when_rows_over > 0) cacheable = false;
  r.cacheable = cacheable;
  // The probes below may take seconds: the session's state is not held meanwhile (the
  // dataplane sends a session's statements one at a time; `staged` is committed at the end).
  if (lock.owns_lock()) lock.unlock();

  if (analysis.parse_error) {
    // Unparseable SQL is never forwarded, but the client gets what PostgreSQL would have said:
    // the parser's own message, its SQLSTATE and the cursor position.
    r.sqlstate = analysis.parse_error->sqlstate;
    r.message = analysis.parse_error->message;
    r.position = analysis.parse_error->cursor_position;
    return r;
  }
  if (d.verdict != policy::Verdict::kDeny && pol.deny_masked_in_expressions) {
    for (const auto& st : analysis.statements) {
      for (const auto& use : st.columns) {
        if (!use.in_expression) continue;
        if (const policy::MaskRule* rule = masked_rule_for(pol, use)) {
          std::string col =
              use.relation.name.empty() ? use.column : use.relation.resolved() + "." + use.column;
          std::string selector =
              !rule->column_glob.empty() ? rule->column_glob : rule->name_pattern;
          return {"deny", "policy.masked_column_in_expression",
                  "column " + col + " is masked (" + selector +
                      ") and may not be used inside an expression",
                  cacheable};
        }
      }
    }
  }
  // After deny_masked_in_expressions (its older, name-based rule keeps its name where both
  // apply), before the prescreen's approve matches (a refusal beats an approval).
  if (d.verdict != policy::Verdict::kDeny && catalog) {
    for (const auto& st : analysis.statements) {
      if (!st.lineage) continue;
      if (auto refusal = policy::check_lineage(session.policy, *st.lineage)) {
        // An unknown relation may exist a moment later (CREATE TABLE, a catalog that was
        // unreachable): that refusal is not a property of the statement's shape.
        bool transient = refusal->rule == "lineage_unknown";
        return {"deny", "policy." + refusal->rule, refusal->message, cacheable && !transient};
      }
    }
    for (const auto& [name, c] : executed) {
      // Its PREPARE passed these checks under the masks of that time, or had no lineage (the
      // policy masked no column then): its text is analysed now.
      std::vector<std::shared_ptr<const policy::StatementLineage>> lineages;
      if (c->lineage) {
        lineages.push_back(c->lineage);
      } else if (!c->text.empty()) {
        policy::SqlAnalysis again = policy::analyse_sql(c->text, catalog.get());
        for (const auto& st : again.statements) {
          if (st.lineage) lineages.push_back(st.lineage);
        }
      }
      if (lineages.empty()) {
        return {"deny", "policy.masks_changed",
                "prepared statement \"" + name + "\" was prepared before policy \"" + pol.name +
                    "\" masked columns and cannot be checked against them: PREPARE it again "
                    "(prepared before the policy changed)",
                false};
      }
      for (const auto& l : lineages) {
        if (auto refusal = policy::check_lineage(session.policy, *l)) {
          return {"deny", "policy." + refusal->rule,
                  refusal->message + " (prepared before the policy changed)", false};
        }
      }
    }
  }
  if (d.verdict != policy::Verdict::kDeny) {
    // The prescreen's matches narrow what the policy allows, never widen it (deny > approve >
    // allow): a deny rule denies, an approve rule turns the allow (or an approval by effect,
    // whose reasons stay in the request) into a reviewer's decision under the rule's own
    // message. Neither answer is cacheable: the dp consults its verdict cache only for
    // statements without deny/approve matches.
    const protocol::PrescreenHit* approve = nullptr;
    for (const auto& hit : request.prescreen) {
      if (hit.action == "deny") {
        return {"deny", hit.rule, "statement denied by rule " + hit.rule, false};
      }
      if (hit.action == "approve" && approve == nullptr) approve = &hit;
    }
    if (approve != nullptr && d.rule != "approve_kinds") {
      r = {"approve", approve->rule, "statement matches approve rule " + approve->rule, false};
    }
  }

  // Code outside pg_catalog (user-defined functions and procedures, extensions' functions)
  // may change anything: under a policy that lets writes through, a call needs an approval
  // unless allowed_functions vouches for it (rule unknown_effect).
  std::string unknown_code = r.verdict != "deny" && !pol.read_only && pol.approve_unbounded_writes
                                 ? unanalysable_function(session, functions)
                                 : std::string();

  approvals::ApprovalEffect effect;
  if (!unknown_code.empty()) {
    std::string why = "it calls " + unknown_code +
                      ", which pgwarden cannot analyse: what it changes is unknown; policy \"" +
                      pol.name +
                      "\" needs a human approval for that (or lists it in "
                      "allowed_functions)";
    if (r.verdict == "allow") {
      r = {"approve", "policy.unknown_effect", why, false};
    } else {
      effect.reasons.push_back("unknown_effect: " + why);
    }
  }
  const bool threshold = pol.approve_when_rows_over > 0;
  if (threshold && r.verdict != "deny") {
    // COPY ... FROM appends rows (not counted), but a trigger on the table runs code on each:
    // as for any write, an untrusted trigger leaves it without a bound. It cannot be
    // EXPLAINed, so the catalog is asked directly.
    for (const auto& st : analysis.statements) {
      if ((st.kind != StatementKind::kCopyFromStdin && st.kind != StatementKind::kCopyFile) ||
          st.copy_relation.name.empty()) {
        continue;
      }
      r.cacheable = false;  // a trigger may be created later
      auto triggers = probe_ ? probe_->insert_triggers(session.target, st.copy_relation.resolved())
                             : Result<std::vector<TriggerRef>>(unavailable("no effect probe"));
      std::string why = !triggers.is_ok()
                            ? "its triggers could not be listed: " + triggers.status().message()
                            : untrusted_trigger(pol, *triggers);
      if (why.empty()) continue;
      effect.estimate_note = "no bound: " + why;
      const std::string over = "COPY into " + st.copy_relation.resolved() + " has no bound (" +
                               why + ": what its code writes is not known), and policy \"" +
                               pol.name + "\" approves writes over " +
                               with_commas(pol.approve_when_rows_over) +
                               " rows: a human approval is needed";
      if (r.verdict == "allow") {
        r = {"approve", "policy.rows_over", over, false};
      } else {
        effect.reasons.push_back("rows_over: " + over);
      }
      break;
    }
  }
  if (r.verdict != "deny" && !writes.empty() &&
      (threshold || (r.verdict == "approve" && pol.dry_run))) {
    // Every write of the request counts: the statements of a multi-statement string and the
    // data-modifying CTEs of each add up, with the rows their foreign keys cascade to.
    int64_t total = 0;
    std::string cascades, unanalysed;
    for (const WriteProbe& w : writes) {
      Result<RowEstimate> rows =
          w.text.empty()
              ? Result<RowEstimate>(failed_precondition("this statement form cannot be EXPLAINed"))
          : probe_ ? Result<RowEstimate>(RowEstimate{})
                   : Result<RowEstimate>(unavailable("no effect probe"));
      if (rows.is_ok() && !w.parameters.empty()) rows = failed_precondition(w.parameters);
      if (rows.is_ok() && !w.functions.empty()) {
        // Planning evaluates immutable and stable functions on constants: a user-defined one
        // would run on cp's connection, so such a statement is not EXPLAINed.
        auto user = probe_->plan_time_functions(session.target, w.functions);
        if (!user.is_ok()) {
          rows = user.status();
        } else if (!user->empty()) {
          rows = failed_precondition("it calls " + *user +
                                     ", a user-defined function the planner may run");
        }
      }
      if (rows.is_ok()) rows = probe_->estimate_rows(session.target, w.text);
      if (rows.is_ok()) {
        // A trigger's code may write any table: the estimate holds only when the functions
        // every trigger runs are built in or vouched for by allowed_functions.
        if (std::string t = untrusted_trigger(pol, rows->triggers); !t.empty()) {
          rows = failed_precondition(t +
                                     ": what its code writes is not in the estimate (list "
                                     "the function in allowed_functions to trust it)");
        }
      }
      if (!rows.is_ok()) {
        effect.estimate_note = "no planner estimate: " + rows.status().message();
        total = -1;
        break;
      }
      total += rows->rows;
      if (!rows->cascades.empty()) cascades += (cascades.empty() ? "" : ", ") + rows->cascades;
      if (!rows->unanalysed.empty()) {
        unanalysed += (unanalysed.empty() ? "" : "; ") + rows->unanalysed;
      }
    }
    effect.estimated_rows = total;
    if (total >= 0) {
      std::string note =
          cascades.empty() ? "" : "includes rows that foreign keys change: " + cascades;
      if (!unanalysed.empty()) note += (note.empty() ? "" : "; ") + unanalysed;
      effect.estimate_note = note;
    }
    std::string over;
    if (threshold && total < 0) {
      over = "the planner's row estimate is unavailable (" + effect.estimate_note +
             "), and policy \"" + pol.name + "\" approves writes over " +
             with_commas(pol.approve_when_rows_over) + " rows: a human approval is needed";
    } else if (threshold && total > pol.approve_when_rows_over) {
      over = "the planner estimates " + with_commas(total) + " rows changed" +
             (writes.size() > 1 ? " by the " + std::to_string(writes.size()) + " writes" : "") +
             (effect.estimate_note.empty() ? std::string() : " (" + effect.estimate_note + ")") +
             ", over policy \"" + pol.name + "\"'s approve_when_rows_over of " +
             with_commas(pol.approve_when_rows_over);
    }
    if (!over.empty()) {
      if (r.verdict == "allow") {
        r = {"approve", "policy.rows_over", over, false};
      } else {
        effect.reasons.push_back("rows_over: " + over);
      }
    }
  }

  if (r.verdict == "approve") {
    std::string rule = r.rule.rfind("policy.", 0) == 0 ? r.rule.substr(7) : r.rule;
    effect.reasons.insert(effect.reasons.begin(), rule + ": " + r.message);
    for (const policy::WriteEffect& e : effects) {
      if (e.reach == policy::WriteReach::kRestricted) continue;
      std::string line = std::string(policy::write_reach_rule(e.reach)) + ": " + e.describe();
      if (std::find(effect.reasons.begin(), effect.reasons.end(), line) == effect.reasons.end() &&
          r.message.find(e.describe()) == std::string::npos) {
        effect.reasons.push_back(std::move(line));
      }
    }
    if (pol.dry_run) {
      const StatementAnalysis* st = nullptr;
      std::string obstacle = dry_run_obstacle(analysis, &st);
      if (obstacle.empty() && !probe_) obstacle = "no effect probe on this gateway";
      if (obstacle.empty()) {
        std::vector<std::string> relations;
        for (const auto& rel : st->relations_written) relations.push_back(rel.resolved());
        // INSERT and MERGE fill defaults (sequences); an UPDATE only with SET c = DEFAULT
        // (looked for as a word in the text: a false positive only skips the dry run).
        bool defaults = st->kind == StatementKind::kInsert || st->kind == StatementKind::kMerge ||
                        mentions_default(st->text);
        auto irreversible = probe_->irreversible_effects(session.target, relations, defaults);
        obstacle = irreversible.is_ok() ? *irreversible : irreversible.status().message();
      }
      if (obstacle.empty()) {
        auto rows = probe_->dry_run(session.target, st->text);
        if (rows.is_ok()) {
          effect.dry_run_rows = *rows;
        } else {
          effect.dry_run_note = rows.status().message();
        }
      } else {
        effect.dry_run_note = "no dry run: " + obstacle;
      }
    }
    if (state != nullptr) {
      lock.lock();
      state->put_effect(request.sql, std::move(effect));
    }
  }
  if (r.verdict != "deny" && staged) {
    if (!lock.owns_lock()) lock.lock();
    commit_names();
  }
  return r;
}

}  // namespace pgwarden::server
