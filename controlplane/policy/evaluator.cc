#include "controlplane/policy/evaluator.h"

#include <algorithm>
#include <array>
#include <optional>

#include "controlplane/policy/glob.h"

namespace pgwarden::policy {
namespace {

// Kept in sync with docs/policy.md, "Functions".
constexpr std::array<std::string_view, 8> kWriteFunctions = {"nextval",
                                                             "setval",
                                                             "pg_notify",
                                                             "txid_current",
                                                             "pg_current_xact_id",
                                                             "txid_current_if_assigned",
                                                             "pg_current_xact_id_if_assigned",
                                                             "set_config"};

constexpr std::array<std::string_view, 58> kDangerousFunctions = {
    // Other sessions and the server process.
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
    "pg_promote", "pg_log_backend_memory_contexts",
    // Server files.
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir",
    "pg_ls_replslotdir", "pg_stat_file", "pg_file_write", "pg_file_rename", "pg_file_unlink",
    "pg_file_sync", "pg_logdir_ls",
    // Large objects (server-side files and unaudited storage): also every "lo_*".
    "loread", "lowrite",
    // WAL, backups, replication.
    "pg_switch_wal", "pg_create_restore_point", "pg_backup_start", "pg_backup_stop",
    "pg_start_backup", "pg_stop_backup", "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot", "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
    "pg_logical_emit_message", "pg_logical_slot_get_changes", "pg_logical_slot_peek_changes",
    "pg_logical_slot_get_binary_changes", "pg_logical_slot_peek_binary_changes",
    "pg_replication_slot_advance", "pg_wal_replay_pause", "pg_wal_replay_resume",
    // Dynamic SQL: these run a query given as text, invisible to analysis.
    // (Also every "dblink*", "crosstab*" and "*_to_xml*".)
    "ts_stat", "ts_rewrite", "connectby", "query_to_xmlschema", "cursor_to_xmlschema",
    "table_to_xmlschema", "schema_to_xmlschema", "database_to_xmlschema",
    // Statistics resets and catalog writes. (Also every "pg_stat_reset*".)
    "pg_stat_statements_reset", "pg_import_system_collations", "pg_truncate_visibility_map",
    "pg_replication_origin_create", "pg_replication_origin_drop", "pg_replication_origin_advance",
    "pg_replication_origin_session_setup"};

// Kinds a read-only grant may run (further checked for writes, write functions and
// read-only switches).
constexpr std::array<StatementKind, 13> kReadOnlyKinds = {
    StatementKind::kSelect,  StatementKind::kCopyToStdout,   StatementKind::kShow,
    StatementKind::kSet,     StatementKind::kReset,          StatementKind::kTransaction,
    StatementKind::kPrepare, StatementKind::kExecute,        StatementKind::kDeallocate,
    StatementKind::kExplain, StatementKind::kExplainAnalyze, StatementKind::kListen,
    StatementKind::kDiscard};

// SET parameters that the plain "set" entry does not cover: they change who the session
// is. Policies name them explicitly ("set:role").
constexpr std::array<std::string_view, 3> kPrivilegedParameters = {"role", "session_authorization",
                                                                   "*"};

constexpr std::array<std::string_view, 3> kReadOnlyParameters = {"default_transaction_read_only",
                                                                 "transaction_read_only", "*"};

bool truthy(std::string_view v) {
  std::string s(v);
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s == "on" || s == "true" || s == "yes" || s == "1" || s == "t" || s == "y";
}

template <typename C, typename T>
bool contains(const C& c, const T& v) {
  return std::find(c.begin(), c.end(), v) != c.end();
}

int severity(Verdict v) {
  switch (v) {
    case Verdict::kAllow:
      return 0;
    case Verdict::kApprove:
      return 1;
    case Verdict::kDeny:
      return 2;
  }
  return 2;
}

// Keeps the first of the strictest decisions.
void combine(Decision* acc, Decision d) {
  if (severity(d.verdict) > severity(acc->verdict)) *acc = std::move(d);
}

Decision deny(std::string rule, std::string message) {
  return Decision{Verdict::kDeny, std::move(rule), std::move(message), -1, 0};
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string kind_upper(StatementKind k) {
  std::string s(statement_kind_name(k));
  for (char& c : s) c = c == '_' ? ' ' : static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
  return s;
}

class Evaluator {
 public:
  Evaluator(const Policy& policy, PreparedStatements* session)
      : policy_(policy), session_(session) {}

  Decision statement(const StatementAnalysis& st, int depth = 0) {
    if (depth > 4) return deny("allowed_kinds", "statement nesting too deep to evaluate");
    switch (st.kind) {
      case StatementKind::kExecute:
        return execute(st, depth);
      case StatementKind::kPrepare:
      case StatementKind::kExplainAnalyze:
        if (st.inner) return wrapper(st, depth);
        break;
      default:
        break;
    }
    return plain(st);
  }

  // Pending session changes (applied by the caller when the verdict is not deny).
  PreparedStatements* staged() { return staged_ ? &*staged_ : session_; }

  void prepare(const StatementAnalysis& st, Decision* d) {
    if (!st.inner) return;
    PreparedStatements* s = mutable_session();
    if (s && !s->add(st.prepared_name, st.inner)) {
      combine(d, deny("prepared_statement_limit",
                      "too many prepared statements in this session; DEALLOCATE some first"));
    }
  }

  void deallocate(const StatementAnalysis& st) {
    PreparedStatements* s = mutable_session();
    if (!s) return;
    if (st.kind == StatementKind::kDiscard) {
      if (st.detail == "all") s->clear();
    } else if (st.prepared_name.empty()) {
      s->clear();
    } else {
      s->remove(st.prepared_name);
    }
  }

  bool has_staged() const { return staged_.has_value(); }
  PreparedStatements take_staged() { return std::move(*staged_); }

 private:
  PreparedStatements* mutable_session() {
    if (!session_) return nullptr;
    if (!staged_) staged_ = *session_;
    return &*staged_;
  }

  const PreparedStatements* lookup_session() const { return staged_ ? &*staged_ : session_; }

  // EXECUTE: its own checks (parameters may call functions) plus every candidate analysis.
  Decision execute(const StatementAnalysis& st, int depth) {
    Decision d = plain(st);
    if (d.verdict == Verdict::kDeny) return d;
    const PreparedStatements* s = lookup_session();
    const PreparedStatements::Candidates* candidates = s ? s->find(st.prepared_name) : nullptr;
    if (!candidates) {
      return deny("unknown_prepared_statement",
                  "prepared statement " + quoted(st.prepared_name) +
                      " was not prepared through pgwarden in this session; PREPARE it first");
    }
    for (const auto& c : *candidates) combine(&d, statement(*c, depth + 1));
    return d;
  }

  // PREPARE / EXPLAIN ANALYZE: the wrapper kind must be allowed, and the inner statement
  // is evaluated as if it ran on its own.
  Decision wrapper(const StatementAnalysis& st, int depth) {
    if (auto d = check_kinds(st.kind, {})) return *d;
    Decision inner = statement(*st.inner, depth + 1);
    if (inner.verdict != Verdict::kAllow) return inner;
    if (contains_kind(policy_.approve_kinds, st.kind)) return approve(st.kind);
    return inner;
  }

  bool contains_kind(const std::vector<std::string>& list, StatementKind k) const {
    return kind_listed(list, k);
  }

  std::optional<Decision> check_read_only(const StatementAnalysis& st) const {
    if (!policy_.read_only) return std::nullopt;
    const std::string ro = "policy " + quoted(policy_.name) + " is read-only";
    if (!contains(kReadOnlyKinds, st.kind)) {
      return deny("read_only", kind_upper(st.kind) + " statements are not allowed: " + ro +
                                   "; ask for a read-write grant");
    }
    for (StatementKind k : st.nested_kinds) {
      if (!contains(kReadOnlyKinds, k)) {
        return deny("read_only", "the statement contains " + kind_upper(k) + ", which " + ro +
                                     " does not allow");
      }
    }
    if (!st.relations_written.empty()) {
      return deny("read_only",
                  "the statement writes to " + st.relations_written[0].resolved() + ": " + ro);
    }
    for (const FunctionRef& f : st.functions) {
      if (is_write_function(f.name) && f.name != "set_config") {
        return deny("read_only", "function " + f.resolved() + " writes (" + ro + ")");
      }
    }
    for (const SettingChange& s : st.settings) {
      if (contains(kReadOnlyParameters, s.parameter) && !truthy(s.value)) {
        return deny("read_only", "changing " + s.parameter + " would switch read-only off: " + ro);
      }
    }
    if (st.kind == StatementKind::kDiscard && st.detail == "all") {
      return deny("read_only", "DISCARD ALL resets transaction_read_only: " + ro);
    }
    return std::nullopt;
  }

  std::optional<Decision> check_kinds(StatementKind kind,
                                      const std::vector<StatementKind>& nested) const {
    auto not_allowed = [&](StatementKind k) {
      return deny("allowed_kinds", kind_upper(k) + " statements are not allowed by policy " +
                                       quoted(policy_.name) + " (allowed_kinds lacks " +
                                       quoted(statement_kind_name(k)) + ")");
    };
    if (!kind_listed(policy_.allowed_kinds, kind)) return not_allowed(kind);
    for (StatementKind k : nested) {
      if (!kind_listed(policy_.allowed_kinds, k)) return not_allowed(k);
    }
    return std::nullopt;
  }

  bool parameter_allowed(std::string_view parameter) const {
    for (const std::string& e : policy_.allowed_kinds) {
      if (e == "*") return true;
      if (e.starts_with("set:") && glob_match(std::string_view(e).substr(4), parameter)) {
        return true;
      }
      if (e == "set" && !contains(kPrivilegedParameters, parameter)) return true;
    }
    return false;
  }

  std::optional<Decision> check_settings(const StatementAnalysis& st) const {
    // Transaction modes and RESET are covered by their kinds; SET and set_config() name a
    // parameter the policy must allow.
    if (st.kind == StatementKind::kTransaction || st.kind == StatementKind::kReset ||
        st.kind == StatementKind::kDiscard) {
      return std::nullopt;
    }
    for (const SettingChange& s : st.settings) {
      std::string p = s.parameter;
      if (st.kind == StatementKind::kSet && p.rfind("transaction_", 0) == 0) continue;
      if (st.kind == StatementKind::kSet && p.rfind("default_transaction_", 0) == 0 &&
          st.detail == "session characteristics") {
        if (parameter_allowed("default_transaction_read_only") || parameter_allowed(p)) {
          continue;
        }
      }
      if (!parameter_allowed(p)) {
        return deny("set_parameter", "setting " + quoted(p) + " is not allowed by policy " +
                                         quoted(policy_.name) + " (add \"set\" or \"set:" + p +
                                         "\" to allowed_kinds)");
      }
    }
    return std::nullopt;
  }

  bool relation_allowed(const RelationRef& r) const {
    const std::string name = r.resolved();
    for (const std::string& g : policy_.allowed_relations) {
      if (glob_match(g, name)) return true;
    }
    return false;
  }

  std::optional<Decision> check_relations(const StatementAnalysis& st) const {
    for (const auto* list : {&st.relations_read, &st.relations_written}) {
      for (const RelationRef& r : *list) {
        if (!relation_allowed(r)) {
          return deny("allowed_relations", "relation " + r.resolved() +
                                               " is not in the allowed relations of policy " +
                                               quoted(policy_.name));
        }
      }
    }
    return std::nullopt;
  }

  bool function_allowed(const FunctionRef& f) const { return function_listed(policy_, f); }

  std::optional<Decision> check_functions(const StatementAnalysis& st) const {
    for (const FunctionRef& f : st.functions) {
      if (is_dangerous_function(f.name) && !function_allowed(f)) {
        return deny("dangerous_function",
                    "function " + f.resolved() +
                        " is on pgwarden's dangerous-function list and policy " +
                        quoted(policy_.name) + " does not list it in allowed_functions");
      }
    }
    return std::nullopt;
  }

  Decision approve(StatementKind k) const {
    return Decision{
        Verdict::kApprove, "approve_kinds",
        kind_upper(k) + " statements need a human approval under policy " + quoted(policy_.name),
        -1, 0};
  }

  Decision plain(const StatementAnalysis& st) const {
    if (auto d = check_read_only(st)) return *d;
    if (auto d = check_kinds(st.kind, st.nested_kinds)) return *d;
    if (auto d = check_settings(st)) return *d;
    if (auto d = check_relations(st)) return *d;
    if (auto d = check_functions(st)) return *d;
    if (contains_kind(policy_.approve_kinds, st.kind)) return approve(st.kind);
    for (StatementKind k : st.nested_kinds) {
      if (contains_kind(policy_.approve_kinds, k)) return approve(k);
    }
    if (policy_.approve_unbounded_writes) {
      for (const WriteEffect& e : st.write_effects) {
        if (e.reach == WriteReach::kRestricted) continue;
        return Decision{
            Verdict::kApprove, std::string(write_reach_rule(e.reach)),
            e.describe() + "; policy " + quoted(policy_.name) + " needs a human approval for that",
            -1, 0};
      }
    }
    return Decision{
        Verdict::kAllow, "allowed_kinds:" + std::string(statement_kind_name(st.kind)),
        std::string(statement_kind_name(st.kind)) + " allowed by policy " + quoted(policy_.name),
        -1, 0};
  }

  const Policy& policy_;
  PreparedStatements* session_;
  std::optional<PreparedStatements> staged_;
};

}  // namespace

bool function_listed(const Policy& policy, const FunctionRef& f) {
  const std::string name = f.resolved();
  for (const std::string& g : policy.allowed_functions) {
    if (g.find('.') == std::string::npos ? glob_match(g, f.name) : glob_match(g, name)) {
      return true;
    }
  }
  return false;
}

std::string_view verdict_name(Verdict verdict) {
  switch (verdict) {
    case Verdict::kAllow:
      return "allow";
    case Verdict::kApprove:
      return "approve";
    case Verdict::kDeny:
      return "deny";
  }
  return "deny";
}

const PreparedStatements::Candidates* PreparedStatements::find(std::string_view name) const {
  auto it = map_.find(std::string(name));
  return it == map_.end() ? nullptr : &it->second;
}

bool PreparedStatements::add(const std::string& name,
                             std::shared_ptr<const StatementAnalysis> analysis) {
  auto it = map_.find(name);
  if (it == map_.end()) {
    if (map_.size() >= kMaxNames) return false;
    map_.emplace(name, Candidates{std::move(analysis)});
    return true;
  }
  if (it->second.size() >= kMaxCandidatesPerName) return false;
  it->second.push_back(std::move(analysis));
  return true;
}

void PreparedStatements::remove(const std::string& name) { map_.erase(name); }

bool is_write_function(std::string_view name) { return contains(kWriteFunctions, name); }

bool is_dangerous_function(std::string_view name) {
  return contains(kDangerousFunctions, name) || name.starts_with("lo_") ||
         name.starts_with("dblink") || name.starts_with("crosstab") ||
         name.starts_with("pg_stat_reset") || name.find("_to_xml") != std::string_view::npos;
}

bool kind_listed(const std::vector<std::string>& entries, StatementKind kind) {
  const std::string_view name = statement_kind_name(kind);
  for (const std::string& e : entries) {
    if (e == "*" || e == name) return true;
    if (e == "ddl" && (kind == StatementKind::kDdlCreate || kind == StatementKind::kDdlAlter ||
                       kind == StatementKind::kDdlDrop)) {
      return true;
    }
    if (e == "copy" &&
        (kind == StatementKind::kCopyToStdout || kind == StatementKind::kCopyFromStdin)) {
      return true;
    }
    if (e == "prepared" && (kind == StatementKind::kPrepare || kind == StatementKind::kExecute ||
                            kind == StatementKind::kDeallocate)) {
      return true;
    }
    if (e == "write" && (kind == StatementKind::kInsert || kind == StatementKind::kUpdate ||
                         kind == StatementKind::kDelete || kind == StatementKind::kMerge)) {
      return true;
    }
    if (kind == StatementKind::kSet && e.starts_with("set:")) return true;
  }
  return false;
}

bool is_kind_entry(std::string_view entry) {
  if (entry == "*" || entry == "ddl" || entry == "copy" || entry == "write" ||
      entry == "prepared") {
    return true;
  }
  if (statement_kind_from_name(entry)) return true;
  if (!entry.starts_with("set:") || entry.size() == 4) return false;
  for (char c : entry.substr(4)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '*' || c == '?';
    if (!ok) return false;
  }
  return true;
}

Decision evaluate(const Policy& policy, const SqlAnalysis& analysis, PreparedStatements* session) {
  if (analysis.parse_error) {
    Decision d = deny(
        "parse_error",
        "could not parse the statement: " + analysis.parse_error->message +
            (analysis.parse_error->cursor_position > 0
                 ? " (at character " + std::to_string(analysis.parse_error->cursor_position) + ")"
                 : std::string()));
    d.cursor_position = analysis.parse_error->cursor_position;
    return d;
  }
  if (analysis.statements.empty()) {
    return Decision{Verdict::kAllow, "empty_statement", "empty statement", -1, 0};
  }
  Evaluator ev(policy, session);
  Decision result{Verdict::kAllow, "", "", -1, 0};
  const bool multi = analysis.statements.size() > 1;
  for (size_t i = 0; i < analysis.statements.size(); ++i) {
    const StatementAnalysis& st = analysis.statements[i];
    Decision d = ev.statement(st);
    if (d.verdict != Verdict::kDeny) {
      if (st.kind == StatementKind::kPrepare) ev.prepare(st, &d);
      if (st.kind == StatementKind::kDeallocate ||
          (st.kind == StatementKind::kDiscard && st.detail == "all")) {
        ev.deallocate(st);
      }
    }
    d.statement_index = static_cast<int>(i);
    if (multi && d.verdict != Verdict::kAllow) {
      d.message = "statement " + std::to_string(i + 1) + ": " + d.message;
    }
    if (i == 0) {
      result = std::move(d);
    } else {
      combine(&result, std::move(d));
    }
  }
  if (result.verdict != Verdict::kDeny && session && ev.has_staged()) {
    *session = ev.take_staged();
  }
  return result;
}

Decision evaluate_sql(const Policy& policy, std::string_view sql, PreparedStatements* session) {
  return evaluate(policy, analyse_sql(sql), session);
}

std::map<std::string, std::string> upstream_startup_parameters(const Policy& policy) {
  std::map<std::string, std::string> params;
  if (policy.read_only) params.emplace("default_transaction_read_only", "on");
  return params;
}

}  // namespace pgwarden::policy
