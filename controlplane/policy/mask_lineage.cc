#include "controlplane/policy/mask_lineage.h"

#include <algorithm>

#include "controlplane/policy/glob.h"

namespace pgwarden::policy {

namespace {

constexpr auto kFold = GlobCase::kInsensitive;

std::string selector(const MaskRule& r) {
  return !r.column_glob.empty() ? "column " + r.column_glob : "name " + r.name_pattern;
}

bool allows(const MaskRule& r, std::string_view form) {
  return std::find(r.allow_predicates.begin(), r.allow_predicates.end(), form) !=
         r.allow_predicates.end();
}

// allowed_functions as the evaluator matches them: a glob without a dot matches the bare
// name, else "schema.name" (an unqualified user function is taken to live in public).
bool function_allowed(const Policy& policy, const FunctionName& f) {
  std::string qualified = (f.schema.empty() ? std::string("public") : f.schema) + "." + f.name;
  for (const std::string& g : policy.allowed_functions) {
    if (g.find('.') == std::string::npos ? glob_match(g, f.name) : glob_match(g, qualified)) {
      return true;
    }
  }
  return false;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

}  // namespace

const MaskRule* mask_rule_for_source(const Policy& policy, const SourceColumn& source) {
  const std::string qualified = source.qualified();
  for (const MaskRule& rule : policy.masks) {
    if (!rule.column_glob.empty() && glob_match(rule.column_glob, qualified, kFold)) return &rule;
    if (!rule.name_pattern.empty() && glob_match(rule.name_pattern, source.column, kFold)) {
      return &rule;
    }
  }
  return nullptr;
}

std::string masks_fingerprint(const Policy& policy) {
  // Each field length-prefixed, so no two different lists give one string.
  std::string out;
  auto add = [&out](std::string_view v) {
    out += std::to_string(v.size());
    out += ':';
    out += v;
  };
  add(policy.deny_masked_in_expressions ? "1" : "0");
  for (const MaskRule& r : policy.masks) {
    add(r.column_glob);
    add(r.name_pattern);
    add(r.type_name);
    add(r.function);
    add(r.text);
    add(std::to_string(r.keep_last));
    add(std::to_string(r.allow_predicates.size()));
    for (const std::string& a : r.allow_predicates) add(a);
  }
  return out;
}

bool has_column_masks(const Policy& policy) {
  return std::any_of(policy.masks.begin(), policy.masks.end(), [](const MaskRule& r) {
    return !r.column_glob.empty() || !r.name_pattern.empty();
  });
}

std::optional<LineageRefusal> check_lineage(const Policy& policy, const StatementLineage& l) {
  if (!has_column_masks(policy)) return std::nullopt;
  if (!l.error.empty()) {
    return LineageRefusal{"lineage_unknown", "cannot tell which columns this statement reads (" +
                                                 l.error + "); refused because policy " +
                                                 quoted(policy.name) + " masks columns"};
  }
  if (!l.opaque_code.empty()) {
    return LineageRefusal{"opaque_code", l.opaque_code + " is refused while policy " +
                                             quoted(policy.name) +
                                             " masks columns: the code it runs or the "
                                             "relation it reads cannot be checked"};
  }
  for (const SourceColumn& s : l.altered) {
    if (const MaskRule* r = mask_rule_for_source(policy, s)) {
      return LineageRefusal{"masked_ddl",
                            l.altered_by +
                                " is refused: it changes a relation that holds or shows masked "
                                "column " +
                                s.qualified() + " (mask " + selector(*r) +
                                "), and changing its definition (names, constraints, indexes, "
                                "triggers, row security) could move its values out of the "
                                "mask's reach or reveal them"};
    }
  }
  for (const std::string& schema : l.renamed_schemas) {
    for (const MaskRule& r : policy.masks) {
      std::string_view glob = r.column_glob;
      if (glob.empty()) continue;
      if (glob_match(glob.substr(0, glob.find('.')), schema, kFold)) {
        return LineageRefusal{"masked_ddl", "renaming schema " + schema + " is refused: mask " +
                                                selector(r) +
                                                " names it, and would no longer match"};
      }
    }
  }
  for (const FunctionName& f : l.opaque_functions) {
    if (!function_allowed(policy, f)) {
      std::string name = (f.schema.empty() ? "" : f.schema + ".") + f.name;
      return LineageRefusal{"opaque_function",
                            "function " + name +
                                " is not a built-in function: its body may return masked " +
                                "columns, and policy " + quoted(policy.name) +
                                " masks columns and does not list it in allowed_functions"};
    }
  }
  for (const FunctionName& f : l.query_text_functions) {
    if (!function_allowed(policy, f)) {
      return LineageRefusal{"opaque_function",
                            "function " + f.name +
                                " runs SQL given as text or reads a relation, cursor or file "
                                "named by a value, which cannot be checked for masked columns; "
                                "policy " +
                                quoted(policy.name) +
                                " masks columns and does not list it in allowed_functions"};
    }
  }
  const bool copy = l.sink == "COPY (query) TO";
  for (const OutputColumn& o : l.outputs) {
    for (const SourceColumn& s : o.lineage.transformed) {
      if (const MaskRule* r = mask_rule_for_source(policy, s)) {
        return LineageRefusal{"masked_derived",
                              "output column " + quoted(o.name) +
                                  " is computed from masked column " + s.qualified() + " (mask " +
                                  selector(*r) +
                                  "): functions, casts, operators and row, array or JSON "
                                  "values of a masked column are refused; select the column "
                                  "itself to get its masked value"};
      }
    }
    const MaskRule* first = nullptr;
    for (const SourceColumn& s : o.lineage.as_is) {
      const MaskRule* r = mask_rule_for_source(policy, s);
      if (r == nullptr) continue;
      if (copy) {
        return LineageRefusal{"masked_copy", "COPY (query) would copy masked column " +
                                                 s.qualified() + " (mask " + selector(*r) +
                                                 ") in output column " + quoted(o.name) +
                                                 "; use SELECT, or COPY the table itself"};
      }
      if (o.lineage.origin_lost) {
        return LineageRefusal{
            "masked_origin_lost",
            "output column " + quoted(o.name) + " returns masked column " + s.qualified() +
                " (mask " + selector(*r) +
                ") through a set operation (UNION, INTERSECT, EXCEPT), RETURNING or an outer "
                "query reference, where the result does not name its source column and the "
                "mask cannot be applied; select the column directly"};
      }
      if (first != nullptr && first != r) {
        return LineageRefusal{"masked_origin_lost",
                              "output column " + quoted(o.name) +
                                  " returns columns masked by different rules (" +
                                  selector(*first) + ", " + selector(*r) + ")"};
      }
      first = r;
    }
  }
  for (const SourceColumn& s : l.written_from) {
    if (const MaskRule* r = mask_rule_for_source(policy, s)) {
      std::string where = l.written_to.empty() ? std::string("another relation") : l.written_to;
      if (l.sink == "CREATE VIEW") {
        return LineageRefusal{"masked_copied",
                              "view " + where + " would show masked column " + s.qualified() +
                                  " (mask " + selector(*r) +
                                  ") under a new name, which statements already checked (cached "
                                  "or prepared) for that name never saw; select from " +
                                  s.schema + "." + s.table + " instead"};
      }
      return LineageRefusal{"masked_copied", "statement copies masked column " + s.qualified() +
                                                 " (mask " + selector(*r) + ") into " + where +
                                                 ", out of the mask's reach"};
    }
  }
  for (const PredicateUse& p : l.predicates) {
    const MaskRule* r = mask_rule_for_source(policy, p.source);
    if (r == nullptr) continue;
    if (p.form == PredicateForm::kIsNull && allows(*r, "is_null")) continue;
    if (p.form == PredicateForm::kEqualityJoin && allows(*r, "equality_join")) {
      const MaskRule* other = mask_rule_for_source(policy, p.other);
      if (other != nullptr && allows(*other, "equality_join")) continue;
    }
    const std::string why =
        p.form == PredicateForm::kIsNull
            ? ": telling NULL from not NULL reveals whether a value is there (allow it with the "
              "mask's \"allow_predicates\": [\"is_null\"])"
            : ": filtering, joining, grouping or sorting on a masked column reveals its values";
    return LineageRefusal{"masked_predicate", "masked column " + p.source.qualified() +
                                                  " (mask " + selector(*r) + ") is used in " +
                                                  p.clause + why};
  }
  for (const SourceColumn& s : l.computed) {
    if (const MaskRule* r = mask_rule_for_source(policy, s)) {
      return LineageRefusal{"masked_derived",
                            "masked column " + s.qualified() + " (mask " + selector(*r) +
                                ") is computed on (function, operator, cast or row value) even "
                                "though the result is not returned: its errors and side "
                                "effects can reveal the value"};
    }
  }
  return std::nullopt;
}

bool decided_by_literals(const Policy& policy, const StatementLineage& l) {
  return std::any_of(l.by_position.begin(), l.by_position.end(), [&](const SourceColumn& s) {
    return mask_rule_for_source(policy, s) != nullptr;
  });
}

}  // namespace pgwarden::policy
