#include "controlplane/server/copy_planner.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "common/ascii.h"
#include "controlplane/policy/sql_analysis.h"
#include "controlplane/server/policy_analyser.h"

namespace pgwarden::server {

namespace {

using json = nlohmann::json;

struct CopyFormatSpec {
  std::string format = "text";
  std::string delimiter;
  std::string null;
  std::string quote = "\"";
  std::string escape;
  bool header = false;
};

Status refused(std::string message) {
  return permission_denied("pgwarden: COPY TO STDOUT refused: " + std::move(message));
}

// PostgreSQL's boolean spellings for an option; nullopt for anything else.
std::optional<bool> option_bool(const policy::CopyOption& o) {
  if (!o.constant) return std::nullopt;
  std::string v = ascii_lower(o.value);
  if (v.empty() || v == "true" || v == "on" || v == "1" || v == "yes" || v == "t") return true;
  if (v == "false" || v == "off" || v == "0" || v == "no" || v == "f") return false;
  return std::nullopt;
}

Result<CopyFormatSpec> copy_format(const std::vector<policy::CopyOption>& options) {
  CopyFormatSpec f;
  for (const auto& o : options) {
    if (o.name == "format" && o.constant &&
        (o.value == "text" || o.value == "csv" || o.value == "binary")) {
      f.format = o.value;
    }
  }
  const bool csv = f.format == "csv";
  f.delimiter = csv ? "," : "\t";
  f.null = csv ? "" : "\\N";
  for (const auto& o : options) {
    bool ok = false;
    if (o.name == "format") {
      ok = o.constant && o.value == f.format;
    } else if (o.name == "delimiter" || o.name == "quote" || o.name == "escape") {
      ok = o.constant && o.value.size() == 1 && (csv || o.name == "delimiter");
      if (ok)
        (o.name == "delimiter" ? f.delimiter : o.name == "quote" ? f.quote : f.escape) = o.value;
    } else if (o.name == "null") {
      ok = o.constant;
      f.null = o.value;
    } else if (o.name == "header") {
      std::optional<bool> b = option_bool(o);
      ok = b.has_value();
      f.header = b.value_or(false);
    } else if (o.name == "force_quote") {
      ok = csv;
    }
    if (!ok) {
      return refused("COPY option " + o.name + (o.constant ? " '" + o.value + "'" : "") +
                     " is not supported by pgwarden's masking of COPY output (supported: "
                     "format, delimiter, null, header, quote, escape, force_quote)");
    }
  }
  if (f.escape.empty()) f.escape = f.quote;
  return f;
}

bool has_type_rule(const policy::Policy& policy) {
  return std::any_of(policy.masks.begin(), policy.masks.end(),
                     [](const policy::MaskRule& m) { return !m.type_name.empty(); });
}

// The plan for one candidate table; nullopt when the table lacks a listed column.
Result<std::optional<maskplan::MaskPlan>> plan_table(const maskplan::TableInfo& table,
                                                     const std::vector<std::string>& list,
                                                     const policy::Policy& policy,
                                                     maskplan::Catalog& catalog,
                                                     std::string_view hash_key) {
  std::vector<maskplan::ResultField> fields;
  auto field = [&](const maskplan::TableColumn& c) {
    fields.push_back({c.name, table.oid, c.attnum, c.type_oid, 0});
  };
  if (list.empty()) {
    for (const auto& c : table.columns) {
      if (!c.generated) field(c);
    }
  } else {
    for (const std::string& name : list) {
      auto it = std::find_if(table.columns.begin(), table.columns.end(),
                             [&](const maskplan::TableColumn& c) { return c.name == name; });
      if (it == table.columns.end()) return std::optional<maskplan::MaskPlan>();
      field(*it);
    }
  }
  auto plan = maskplan::build_mask_plan(fields, policy, catalog, hash_key);
  if (!plan.is_ok()) return plan.status();
  return std::optional<maskplan::MaskPlan>(std::move(*plan));
}

// nullopt when no table of that name is visible to the catalog.
Result<std::optional<maskplan::MaskPlan>> plan_for_table(const policy::StatementAnalysis& st,
                                                         const policy::Policy& policy,
                                                         maskplan::Catalog& catalog,
                                                         std::string_view hash_key) {
  const policy::RelationRef& rel = st.copy_relation;
  auto tables = catalog.find_tables(rel.schema, rel.name);
  if (!tables.is_ok()) return tables.status();
  std::optional<maskplan::MaskPlan> chosen;
  std::string chosen_name;
  for (const auto& t : *tables) {
    auto plan = plan_table(t, st.copy_columns, policy, catalog, hash_key);
    if (!plan.is_ok()) return plan.status();
    if (!plan->has_value()) continue;
    if (chosen && chosen->to_json() != (*plan)->to_json()) {
      return refused("the table name " + rel.name + " matches " + chosen_name + " and " + t.schema +
                     "." + t.name +
                     ", which are masked differently; schema-qualify the table name");
    }
    if (!chosen) {
      chosen = std::move(**plan);
      chosen_name = t.schema + "." + t.name;
    }
  }
  if (!chosen) return std::optional<maskplan::MaskPlan>();
  return chosen;
}

// A table the catalog does not see: one the session created itself (uncommitted, temporary)
// or one the catalog role may not read. Masks are chosen by name, so it is masked only if a
// rule could cover one of its columns: a column rule whose table part matches its name (any
// table when the name is unqualified: the session's search_path is unknown), a column-name
// rule, or a type rule. Otherwise its rows pass like a COPY (query)'s, detectors included.
Status check_unseen_table(const policy::StatementAnalysis& st, const policy::Policy& policy) {
  const policy::RelationRef& rel = st.copy_relation;
  std::string name = rel.schema.empty() ? rel.name : rel.schema + "." + rel.name;
  policy::ColumnUse any;
  if (!rel.schema.empty()) any.relation = rel;
  any.column = "*";
  const policy::MaskRule* rule = masked_rule_for(policy, any);
  if (rule == nullptr && !has_type_rule(policy)) return Status::ok();
  std::string why =
      rule == nullptr
          ? "this policy masks columns by type"
          : "mask rule " + (!rule->column_glob.empty() ? rule->column_glob : rule->name_pattern) +
                " may cover its columns";
  return refused("table " + name + (st.copy_columns.empty() ? "" : " with the listed columns") +
                 " is not visible to pgwarden's catalog lookup (created in this session, or "
                 "not readable by the catalog role) and " +
                 why + (rel.schema.empty() ? "; schema-qualify the table name" : ""));
}

}  // namespace

Result<protocol::MaskPlanResponse> plan_copy(const protocol::CopyPlanRequest& request,
                                             const policy::Policy& policy,
                                             maskplan::Catalog& catalog,
                                             std::string_view hash_key) {
  policy::SqlAnalysis analysis = policy::analyse_sql(request.sql);
  const policy::StatementAnalysis* st = nullptr;
  int seen = 0;
  for (const auto& s : analysis.statements) {
    if (s.kind != policy::StatementKind::kCopyToStdout) continue;
    if (seen++ == request.index) {
      st = &s;
      break;
    }
  }
  if (st == nullptr) {
    return invalid_argument(
        "copy: the SQL holds no COPY TO STDOUT number " + std::to_string(request.index), "08P01");
  }
  auto format = copy_format(st->copy_options);
  if (!format.is_ok()) return format.status();
  const bool binary = format->format == "binary";
  if (binary != (request.format == 1)) {
    return refused("the COPY output format differs from the statement's options");
  }

  maskplan::MaskPlan plan;
  bool line_detect = false;
  if (st->copy_query) {
    for (const policy::ColumnUse& use : st->columns) {
      if (const policy::MaskRule* rule = masked_rule_for(policy, use)) {
        std::string col =
            use.relation.name.empty() ? use.column : use.relation.resolved() + "." + use.column;
        std::string selector = !rule->column_glob.empty() ? rule->column_glob : rule->name_pattern;
        return refused("COPY (query) output cannot be masked and the query uses column " + col +
                       ", which is masked (" + selector +
                       "); use SELECT, or COPY the table itself");
      }
    }
    if (has_type_rule(policy)) {
      return refused(
          "COPY (query) output cannot be masked and this policy masks columns by type; use "
          "SELECT, or COPY the table itself");
    }
    plan.column_count = static_cast<size_t>(request.columns);
    line_detect = true;
  } else if (auto p = plan_for_table(*st, policy, catalog, hash_key); !p.is_ok()) {
    return p.status();
  } else if (!p->has_value()) {
    PGW_RETURN_IF_ERROR(check_unseen_table(*st, policy));
    plan.column_count = static_cast<size_t>(request.columns);
    line_detect = true;
  } else {
    plan = std::move(**p);
    if (plan.column_count != static_cast<size_t>(request.columns)) {
      return refused("the COPY output has " + std::to_string(request.columns) +
                     " columns but the catalog lists " + std::to_string(plan.column_count) +
                     " for it (was the table changed?)");
    }
    bool masked =
        std::any_of(plan.columns.begin(), plan.columns.end(),
                    [](const maskplan::PlannedColumn& c) { return c.function != "detect"; });
    if (binary && masked) {
      return refused(
          "binary COPY cannot be masked and this table has masked columns; use FORMAT text or "
          "FORMAT csv");
    }
  }
  protocol::MaskPlanResponse response;
  response.plan = plan.to_json();
  response.copy = {{"format", format->format},  {"delimiter", format->delimiter},
                   {"null", format->null},      {"quote", format->quote},
                   {"escape", format->escape},  {"header", format->header},
                   {"line_detect", line_detect}};
  return response;
}

}  // namespace pgwarden::server
