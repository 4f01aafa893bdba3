#include "controlplane/policy/effect.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "controlplane/policy/sql_analysis.h"

namespace pgwarden::policy {
namespace {

// Same bound as the analysis walker: deeper trees are refused there before we get here.
constexpr int kMaxDepth = 2000;

std::string_view sv(const char* s) { return s ? std::string_view(s) : std::string_view(); }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

template <typename F>
void for_each_child(const ProtobufCMessage* m, F&& f) {
  const ProtobufCMessageDescriptor* d = m->descriptor;
  const char* base = reinterpret_cast<const char*>(m);
  for (unsigned i = 0; i < d->n_fields; ++i) {
    const ProtobufCFieldDescriptor& fd = d->fields[i];
    if (fd.type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (fd.label == PROTOBUF_C_LABEL_REPEATED) {
      size_t count = *reinterpret_cast<const size_t*>(base + fd.quantifier_offset);
      auto* items = *reinterpret_cast<ProtobufCMessage* const* const*>(base + fd.offset);
      for (size_t k = 0; k < count && items; ++k) {
        if (items[k]) f(items[k]);
      }
      continue;
    }
    if (fd.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      uint32_t which = *reinterpret_cast<const uint32_t*>(base + fd.quantifier_offset);
      if (which != fd.id) continue;
    }
    const ProtobufCMessage* c = *reinterpret_cast<ProtobufCMessage* const*>(base + fd.offset);
    if (c) f(c);
  }
}

const ProtobufCMessage* msg(const void* p) { return static_cast<const ProtobufCMessage*>(p); }

// PostgreSQL's boolean input (boolin): whitespace-trimmed, case-insensitive prefixes of
// true/false/yes/no, "on", "off"/"of", "1", "0".
std::optional<bool> parse_bool(std::string_view raw) {
  std::string s = lower(trim(raw));
  if (s.empty()) return std::nullopt;
  auto prefix_of = [&](std::string_view word) {
    return s.size() <= word.size() && word.substr(0, s.size()) == s;
  };
  switch (s[0]) {
    case 't':
      if (prefix_of("true")) return true;
      break;
    case 'f':
      if (prefix_of("false")) return false;
      break;
    case 'y':
      if (prefix_of("yes")) return true;
      break;
    case 'n':
      if (prefix_of("no")) return false;
      break;
    case 'o':
      if (s == "on") return true;
      if (s.size() >= 2 && prefix_of("off")) return false;
      break;
    case '1':
      if (s.size() == 1) return true;
      break;
    case '0':
      if (s.size() == 1) return false;
      break;
    default:
      break;
  }
  return std::nullopt;
}

// An integer in int64 range written as [sign]digits (int8in also trims whitespace).
std::optional<int64_t> parse_int(std::string_view raw) {
  std::string_view s = trim(raw);
  if (s.empty()) return std::nullopt;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  for (size_t k = i; k < s.size(); ++k) {
    if (s[k] < '0' || s[k] > '9') return std::nullopt;
  }
  if (s.size() - i > 18) return std::nullopt;  // keeps the arithmetic below exact
  return std::strtoll(std::string(s).c_str(), nullptr, 10);
}

// A folded constant. Only exact values: integers (no decimals, whose comparisons depend on
// numeric vs float semantics), booleans, strings (as written) and NULL.
struct Value {
  enum class Type { kUnknown, kNull, kBool, kInt, kString };
  Type type = Type::kUnknown;
  bool b = false;
  int64_t i = 0;
  std::string s;

  static Value unknown() { return {}; }
  static Value null() { return {Type::kNull, false, 0, {}}; }
  static Value boolean(bool v) { return {Type::kBool, v, 0, {}}; }
  static Value integer(int64_t v) { return {Type::kInt, false, v, {}}; }
  static Value string(std::string v) { return {Type::kString, false, 0, std::move(v)}; }
  bool known() const { return type != Type::kUnknown; }
};

std::string last_name(PgQuery__Node* const* items, size_t n) {
  if (n == 0 || !items[n - 1] || items[n - 1]->node_case != PG_QUERY__NODE__NODE_STRING) return "";
  return lower(sv(items[n - 1]->string->sval));
}

// Reads one condition of one write against its target (alias or name).
class ConditionReader {
 public:
  explicit ConditionReader(std::string target) : target_(std::move(target)) {}

  bool literals() const { return literals_; }

  ConditionReach reach(const PgQuery__Node* n, int depth = 0) {
    ConditionReach r = classify(n, depth);
    if (r == ConditionReach::kTrue || r == ConditionReach::kFalse || r == ConditionReach::kNull) {
      literals_ = true;
    }
    return r;
  }

 private:
  struct Scope {
    bool has_from = false;
    std::set<std::string> names;
  };

  ConditionReach from_value(const Value& v, const PgQuery__Node* n) {
    switch (v.type) {
      case Value::Type::kBool:
        return v.b ? ConditionReach::kTrue : ConditionReach::kFalse;
      case Value::Type::kNull:
        return ConditionReach::kNull;
      case Value::Type::kString:
        if (auto b = parse_bool(v.s)) return *b ? ConditionReach::kTrue : ConditionReach::kFalse;
        break;
      default:
        break;
    }
    return refers_to_target(msg(n), 0) ? ConditionReach::kRowDependent
                                       : ConditionReach::kRowIndependent;
  }

  static ConditionReach combine_and(const std::vector<ConditionReach>& rs) {
    auto any = [&](ConditionReach x) { return std::find(rs.begin(), rs.end(), x) != rs.end(); };
    if (any(ConditionReach::kFalse)) return ConditionReach::kFalse;
    if (any(ConditionReach::kRowDependent)) return ConditionReach::kRowDependent;
    if (any(ConditionReach::kRowIndependent)) return ConditionReach::kRowIndependent;
    if (any(ConditionReach::kNull)) return ConditionReach::kNull;
    return ConditionReach::kTrue;
  }

  static ConditionReach combine_or(const std::vector<ConditionReach>& rs) {
    auto any = [&](ConditionReach x) { return std::find(rs.begin(), rs.end(), x) != rs.end(); };
    if (any(ConditionReach::kTrue)) return ConditionReach::kTrue;
    if (any(ConditionReach::kRowIndependent)) return ConditionReach::kRowIndependent;
    if (any(ConditionReach::kRowDependent)) return ConditionReach::kRowDependent;
    if (any(ConditionReach::kNull)) return ConditionReach::kNull;
    return ConditionReach::kFalse;
  }

  ConditionReach classify(const PgQuery__Node* n, int depth) {
    if (!n || depth > kMaxDepth) return ConditionReach::kRowDependent;
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_BOOL_EXPR: {
        const PgQuery__BoolExpr* b = n->bool_expr;
        std::vector<ConditionReach> rs;
        for (size_t i = 0; i < b->n_args; ++i) rs.push_back(reach(b->args[i], depth + 1));
        if (b->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) return combine_and(rs);
        if (b->boolop == PG_QUERY__BOOL_EXPR_TYPE__OR_EXPR) return combine_or(rs);
        if (rs.size() != 1) return ConditionReach::kRowDependent;
        if (rs[0] == ConditionReach::kTrue) return ConditionReach::kFalse;
        if (rs[0] == ConditionReach::kFalse) return ConditionReach::kTrue;
        return rs[0];
      }
      case PG_QUERY__NODE__NODE_BOOLEAN_TEST: {
        const PgQuery__BooleanTest* t = n->boolean_test;
        ConditionReach a = reach(t->arg, depth + 1);
        if (a == ConditionReach::kRowDependent || a == ConditionReach::kRowIndependent) return a;
        bool is_true = a == ConditionReach::kTrue, is_false = a == ConditionReach::kFalse,
             is_null = a == ConditionReach::kNull;
        bool out = false;
        switch (t->booltesttype) {
          case PG_QUERY__BOOL_TEST_TYPE__IS_TRUE:
            out = is_true;
            break;
          case PG_QUERY__BOOL_TEST_TYPE__IS_NOT_TRUE:
            out = !is_true;
            break;
          case PG_QUERY__BOOL_TEST_TYPE__IS_FALSE:
            out = is_false;
            break;
          case PG_QUERY__BOOL_TEST_TYPE__IS_NOT_FALSE:
            out = !is_false;
            break;
          case PG_QUERY__BOOL_TEST_TYPE__IS_UNKNOWN:
            out = is_null;
            break;
          case PG_QUERY__BOOL_TEST_TYPE__IS_NOT_UNKNOWN:
            out = !is_null;
            break;
          default:
            return ConditionReach::kRowDependent;
        }
        return out ? ConditionReach::kTrue : ConditionReach::kFalse;
      }
      case PG_QUERY__NODE__NODE_SUB_LINK: {
        const PgQuery__SubLink* l = n->sub_link;
        if (l->sub_link_type == PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK) {
          if (const PgQuery__SelectStmt* s = simple_select(l->subselect)) {
            ConditionReach w =
                s->where_clause ? reach(s->where_clause, depth + 1) : ConditionReach::kTrue;
            if (w == ConditionReach::kTrue) return ConditionReach::kTrue;
            if (w == ConditionReach::kFalse || w == ConditionReach::kNull) {
              return ConditionReach::kFalse;
            }
          }
        }
        break;
      }
      default:
        break;
    }
    return from_value(value(n, depth), n);
  }

  // SELECT <targets> [WHERE ...] without FROM, grouping, limits, set operations or VALUES.
  static const PgQuery__SelectStmt* simple_select(const PgQuery__Node* n) {
    if (!n || n->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) return nullptr;
    const PgQuery__SelectStmt* s = n->select_stmt;
    if (s->n_from_clause || s->n_group_clause || s->having_clause || s->n_values_lists ||
        s->limit_count || s->limit_offset || s->n_window_clause || s->with_clause ||
        s->n_distinct_clause || s->n_locking_clause ||
        (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE &&
         s->op != PG_QUERY__SET_OPERATION__SET_OPERATION_UNDEFINED)) {
      return nullptr;
    }
    return s;
  }

  Value value(const PgQuery__Node* n, int depth) {
    if (!n || depth > kMaxDepth) return Value::unknown();
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_A_CONST:
        return constant(n->a_const);
      case PG_QUERY__NODE__NODE_TYPE_CAST:
        return cast(value(n->type_cast->arg, depth + 1), n->type_cast->type_name);
      case PG_QUERY__NODE__NODE_A_EXPR:
        return a_expr(n->a_expr, depth);
      case PG_QUERY__NODE__NODE_BOOL_EXPR:
      case PG_QUERY__NODE__NODE_BOOLEAN_TEST:
      case PG_QUERY__NODE__NODE_NULL_TEST: {
        ConditionReach r = n->node_case == PG_QUERY__NODE__NODE_NULL_TEST
                               ? null_test(n->null_test, depth)
                               : reach(n, depth + 1);
        if (r == ConditionReach::kTrue) return Value::boolean(true);
        if (r == ConditionReach::kFalse) return Value::boolean(false);
        if (r == ConditionReach::kNull) return Value::null();
        return Value::unknown();
      }
      case PG_QUERY__NODE__NODE_COALESCE_EXPR: {
        const PgQuery__CoalesceExpr* c = n->coalesce_expr;
        for (size_t i = 0; i < c->n_args; ++i) {
          Value v = value(c->args[i], depth + 1);
          if (!v.known()) return Value::unknown();
          if (v.type != Value::Type::kNull) return v;
        }
        return Value::null();
      }
      case PG_QUERY__NODE__NODE_SUB_LINK: {
        const PgQuery__SubLink* l = n->sub_link;
        if (l->sub_link_type != PG_QUERY__SUB_LINK_TYPE__EXPR_SUBLINK) break;
        const PgQuery__SelectStmt* s = simple_select(l->subselect);
        if (!s || s->n_target_list != 1 || !s->target_list[0] ||
            s->target_list[0]->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
          break;
        }
        ConditionReach w =
            s->where_clause ? reach(s->where_clause, depth + 1) : ConditionReach::kTrue;
        if (w == ConditionReach::kFalse || w == ConditionReach::kNull) return Value::null();
        if (w != ConditionReach::kTrue) break;
        return value(s->target_list[0]->res_target->val, depth + 1);
      }
      default:
        break;
    }
    return Value::unknown();
  }

  ConditionReach null_test(const PgQuery__NullTest* t, int depth) {
    Value v = value(t->arg, depth + 1);
    if (!v.known() || t->argisrow) {
      return refers_to_target(msg(t), 0) ? ConditionReach::kRowDependent
                                         : ConditionReach::kRowIndependent;
    }
    bool is_null = v.type == Value::Type::kNull;
    bool want_null = t->nulltesttype == PG_QUERY__NULL_TEST_TYPE__IS_NULL;
    return is_null == want_null ? ConditionReach::kTrue : ConditionReach::kFalse;
  }

  static Value constant(const PgQuery__AConst* c) {
    if (c->isnull) return Value::null();
    switch (c->val_case) {
      case PG_QUERY__A__CONST__VAL_IVAL:
        return Value::integer(c->ival ? c->ival->ival : 0);
      case PG_QUERY__A__CONST__VAL_FVAL: {
        // Integers beyond int32 arrive as "float" text; real decimals are not folded.
        auto i = c->fval ? parse_int(sv(c->fval->fval)) : std::nullopt;
        return i ? Value::integer(*i) : Value::unknown();
      }
      case PG_QUERY__A__CONST__VAL_BOOLVAL:
        return Value::boolean(c->boolval && c->boolval->boolval);
      case PG_QUERY__A__CONST__VAL_SVAL:
        return c->sval ? Value::string(std::string(sv(c->sval->sval))) : Value::unknown();
      default:
        return Value::unknown();
    }
  }

  static Value cast(const Value& v, const PgQuery__TypeName* t) {
    if (v.type == Value::Type::kNull) return Value::null();
    if (!v.known() || !t || t->n_typmods || t->n_array_bounds || t->setof || t->pct_type) {
      return Value::unknown();
    }
    const std::string type = last_name(t->names, t->n_names);
    if (type == "bool" || type == "boolean") {
      if (v.type == Value::Type::kBool) return v;
      if (v.type == Value::Type::kInt) return Value::boolean(v.i != 0);
      if (auto b = parse_bool(v.s)) return Value::boolean(*b);
      return Value::unknown();
    }
    if (type == "int2" || type == "int4" || type == "int8" || type == "int" || type == "integer" ||
        type == "smallint" || type == "bigint" || type == "numeric" || type == "decimal" ||
        type == "float4" || type == "float8" || type == "real") {
      if (v.type == Value::Type::kInt) return v;
      if (v.type == Value::Type::kBool && (type == "int4" || type == "int" || type == "integer")) {
        return Value::integer(v.b ? 1 : 0);
      }
      if (v.type == Value::Type::kString) {
        if (auto i = parse_int(v.s)) return Value::integer(*i);
      }
      return Value::unknown();
    }
    if (type == "text" || type == "varchar") {
      if (v.type == Value::Type::kString) return v;
      if (v.type == Value::Type::kInt) return Value::string(std::to_string(v.i));
      if (v.type == Value::Type::kBool) return Value::string(v.b ? "true" : "false");
    }
    return Value::unknown();
  }

  // Three-valued comparison of two constants; unknown when the types do not fold exactly.
  static Value compare(std::string_view op, const Value& a, const Value& b) {
    if (!a.known() || !b.known()) return Value::unknown();
    if (a.type == Value::Type::kNull || b.type == Value::Type::kNull) return Value::null();
    int cmp = 0;
    bool ordered = true;
    using T = Value::Type;
    if (a.type == T::kInt && b.type == T::kInt) {
      cmp = a.i < b.i ? -1 : a.i > b.i ? 1 : 0;
    } else if ((a.type == T::kInt && b.type == T::kString) ||
               (a.type == T::kString && b.type == T::kInt)) {
      auto other = parse_int(a.type == T::kString ? a.s : b.s);
      if (!other) return Value::unknown();
      int64_t x = a.type == T::kInt ? a.i : *other, y = b.type == T::kInt ? b.i : *other;
      cmp = x < y ? -1 : x > y ? 1 : 0;
    } else if (a.type == T::kBool || b.type == T::kBool) {
      auto as_bool = [](const Value& v) -> std::optional<bool> {
        if (v.type == T::kBool) return v.b;
        if (v.type == T::kString) return parse_bool(v.s);
        return std::nullopt;
      };
      auto x = as_bool(a), y = as_bool(b);
      if (!x || !y) return Value::unknown();
      cmp = *x == *y ? 0 : (*x ? 1 : -1);
    } else if (a.type == T::kString && b.type == T::kString) {
      cmp = a.s == b.s ? 0 : 1;
      ordered = false;  // only equality is collation-independent
    } else {
      return Value::unknown();
    }
    if (op == "=") return Value::boolean(cmp == 0);
    if (op == "<>" || op == "!=") return Value::boolean(cmp != 0);
    if (!ordered) return Value::unknown();
    if (op == "<") return Value::boolean(cmp < 0);
    if (op == ">") return Value::boolean(cmp > 0);
    if (op == "<=") return Value::boolean(cmp <= 0);
    if (op == ">=") return Value::boolean(cmp >= 0);
    return Value::unknown();
  }

  static Value arithmetic(std::string_view op, const Value& a, const Value& b) {
    if (!a.known() || !b.known()) return Value::unknown();
    if (a.type == Value::Type::kNull || b.type == Value::Type::kNull) return Value::null();
    if (a.type != Value::Type::kInt || b.type != Value::Type::kInt) return Value::unknown();
    int64_t out = 0;
    bool overflow = op == "+"   ? __builtin_add_overflow(a.i, b.i, &out)
                    : op == "-" ? __builtin_sub_overflow(a.i, b.i, &out)
                    : op == "*" ? __builtin_mul_overflow(a.i, b.i, &out)
                                : true;
    return overflow ? Value::unknown() : Value::integer(out);
  }

  static Value negate(Value v) {
    if (v.type == Value::Type::kNull) return v;
    if (v.type != Value::Type::kInt || v.i == INT64_MIN) return Value::unknown();
    return Value::integer(-v.i);
  }

  static Value not3(const Value& v) {
    if (v.type == Value::Type::kBool) return Value::boolean(!v.b);
    return v;
  }

  Value a_expr(const PgQuery__AExpr* e, int depth) {
    const std::string op = last_name(e->name, e->n_name);
    switch (e->kind) {
      case PG_QUERY__A__EXPR__KIND__AEXPR_OP: {
        Value r = value(e->rexpr, depth + 1);
        if (!e->lexpr) {
          if (op == "-") return negate(r);
          if (op == "+" && (r.type == Value::Type::kInt || r.type == Value::Type::kNull)) return r;
          return Value::unknown();
        }
        Value l = value(e->lexpr, depth + 1);
        if (op == "+" || op == "-" || op == "*") return arithmetic(op, l, r);
        return compare(op, l, r);
      }
      case PG_QUERY__A__EXPR__KIND__AEXPR_DISTINCT:
      case PG_QUERY__A__EXPR__KIND__AEXPR_NOT_DISTINCT: {
        Value l = value(e->lexpr, depth + 1), r = value(e->rexpr, depth + 1);
        if (!l.known() || !r.known()) return Value::unknown();
        bool ln = l.type == Value::Type::kNull, rn = r.type == Value::Type::kNull;
        bool same = false;
        if (ln || rn) {
          same = ln && rn;
        } else {
          Value eq = compare("=", l, r);
          if (eq.type != Value::Type::kBool) return Value::unknown();
          same = eq.b;
        }
        bool distinct_kind = e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_DISTINCT;
        return Value::boolean(distinct_kind ? !same : same);
      }
      case PG_QUERY__A__EXPR__KIND__AEXPR_NULLIF: {
        Value l = value(e->lexpr, depth + 1), r = value(e->rexpr, depth + 1);
        Value eq = compare("=", l, r);
        if (l.type == Value::Type::kNull) return l;
        if (eq.type == Value::Type::kNull) return l;  // NULL second argument: the first
        if (eq.type != Value::Type::kBool) return Value::unknown();
        return eq.b ? Value::null() : l;
      }
      case PG_QUERY__A__EXPR__KIND__AEXPR_IN: {
        if (!e->rexpr || e->rexpr->node_case != PG_QUERY__NODE__NODE_LIST) return Value::unknown();
        Value l = value(e->lexpr, depth + 1);
        bool seen_null = false;
        for (size_t i = 0; i < e->rexpr->list->n_items; ++i) {
          Value eq = compare("=", l, value(e->rexpr->list->items[i], depth + 1));
          if (!eq.known()) return Value::unknown();
          if (eq.type == Value::Type::kNull) {
            seen_null = true;
          } else if (eq.b) {
            return op == "=" ? Value::boolean(true) : Value::boolean(false);
          }
        }
        Value none = seen_null ? Value::null() : Value::boolean(false);
        return op == "=" ? none : not3(none);
      }
      case PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN:
      case PG_QUERY__A__EXPR__KIND__AEXPR_NOT_BETWEEN:
      case PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN_SYM:
      case PG_QUERY__A__EXPR__KIND__AEXPR_NOT_BETWEEN_SYM: {
        if (!e->rexpr || e->rexpr->node_case != PG_QUERY__NODE__NODE_LIST ||
            e->rexpr->list->n_items != 2) {
          return Value::unknown();
        }
        Value a = value(e->lexpr, depth + 1);
        Value lo = value(e->rexpr->list->items[0], depth + 1);
        Value hi = value(e->rexpr->list->items[1], depth + 1);
        for (const Value* v : {&a, &lo, &hi}) {
          if (v->type != Value::Type::kInt) {
            return v->type == Value::Type::kNull && a.known() && lo.known() && hi.known()
                       ? Value::null()
                       : Value::unknown();
          }
        }
        bool sym = e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN_SYM ||
                   e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_NOT_BETWEEN_SYM;
        int64_t l = lo.i, h = hi.i;
        if (sym && l > h) std::swap(l, h);
        bool in = a.i >= l && a.i <= h;
        bool negated = e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_NOT_BETWEEN ||
                       e->kind == PG_QUERY__A__EXPR__KIND__AEXPR_NOT_BETWEEN_SYM;
        return Value::boolean(negated ? !in : in);
      }
      default:
        return Value::unknown();
    }
  }

  // --- does an expression read the target row? ---------------------------------------

  static void from_names(const PgQuery__Node* n, std::set<std::string>* names) {
    if (!n) return;
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_RANGE_VAR: {
        const PgQuery__RangeVar* rv = n->range_var;
        names->insert(rv->alias && rv->alias->aliasname ? std::string(rv->alias->aliasname)
                                                        : std::string(sv(rv->relname)));
        break;
      }
      case PG_QUERY__NODE__NODE_JOIN_EXPR:
        from_names(n->join_expr->larg, names);
        from_names(n->join_expr->rarg, names);
        if (n->join_expr->alias) names->insert(std::string(sv(n->join_expr->alias->aliasname)));
        break;
      case PG_QUERY__NODE__NODE_RANGE_SUBSELECT:
        if (n->range_subselect->alias) {
          names->insert(std::string(sv(n->range_subselect->alias->aliasname)));
        }
        break;
      case PG_QUERY__NODE__NODE_RANGE_FUNCTION:
        if (n->range_function->alias) {
          names->insert(std::string(sv(n->range_function->alias->aliasname)));
        }
        break;
      default:
        break;
    }
  }

  bool column_is_target(const PgQuery__ColumnRef* c) const {
    if (c->n_fields == 0) return true;
    if (c->n_fields == 1) {
      for (const Scope& s : scopes_) {
        if (s.has_from) return false;  // binds to the sub-select's FROM first
      }
      return true;
    }
    const PgQuery__Node* q = c->fields[c->n_fields - 2];
    if (!q || q->node_case != PG_QUERY__NODE__NODE_STRING) return true;
    const std::string qualifier(sv(q->string->sval));
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      if (it->names.count(qualifier)) return false;
    }
    return qualifier == target_;
  }

  bool refers_to_target(const ProtobufCMessage* m, int depth) {
    if (!m || depth > kMaxDepth) return true;
    const ProtobufCMessageDescriptor* d = m->descriptor;
    if (d == &pg_query__column_ref__descriptor) {
      return column_is_target(reinterpret_cast<const PgQuery__ColumnRef*>(m));
    }
    if (d == &pg_query__current_of_expr__descriptor) return true;
    bool pushed = false;
    if (d == &pg_query__select_stmt__descriptor) {
      const auto* s = reinterpret_cast<const PgQuery__SelectStmt*>(m);
      Scope scope;
      scope.has_from = s->n_from_clause > 0;
      for (size_t i = 0; i < s->n_from_clause; ++i) from_names(s->from_clause[i], &scope.names);
      scopes_.push_back(std::move(scope));
      pushed = true;
    }
    bool found = false;
    for_each_child(m, [&](const ProtobufCMessage* c) {
      if (!found && refers_to_target(c, depth + 1)) found = true;
    });
    if (pushed) scopes_.pop_back();
    return found;
  }

  std::string target_;
  std::vector<Scope> scopes_;
  bool literals_ = false;
};

std::string target_name(const PgQuery__RangeVar* rv) {
  if (rv->alias && rv->alias->aliasname) return std::string(rv->alias->aliasname);
  return std::string(sv(rv->relname));
}

std::string resolved(const PgQuery__RangeVar* rv) {
  return RelationRef{std::string(sv(rv->schemaname)), std::string(sv(rv->relname))}.resolved();
}

WriteEffect condition_effect(std::string verb, const PgQuery__RangeVar* target,
                             const PgQuery__Node* condition) {
  WriteEffect e;
  e.verb = std::move(verb);
  e.relation = target ? resolved(target) : std::string("?");
  if (!condition) {
    e.reach = WriteReach::kWhereAbsent;
    return e;
  }
  ConditionReader reader(target ? target_name(target) : std::string());
  ConditionReach r = reader.reach(condition);
  e.uses_literals = reader.literals();
  if (r == ConditionReach::kTrue) {
    e.reach = WriteReach::kWhereConstantTrue;
  } else if (r == ConditionReach::kRowIndependent) {
    e.reach = WriteReach::kWhereRowIndependent;
  }
  return e;
}

void collect(const ProtobufCMessage* m, int depth, std::vector<WriteEffect>* out) {
  if (!m || depth > kMaxDepth) return;
  const ProtobufCMessageDescriptor* d = m->descriptor;
  if (d == &pg_query__explain_stmt__descriptor || d == &pg_query__prepare_stmt__descriptor ||
      d == &pg_query__rule_stmt__descriptor || d == &pg_query__create_function_stmt__descriptor) {
    return;
  }
  if (d == &pg_query__update_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__UpdateStmt*>(m);
    out->push_back(condition_effect("UPDATE", s->relation, s->where_clause));
  } else if (d == &pg_query__delete_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__DeleteStmt*>(m);
    out->push_back(condition_effect("DELETE", s->relation, s->where_clause));
  } else if (d == &pg_query__merge_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__MergeStmt*>(m);
    out->push_back(condition_effect("MERGE", s->relation, s->join_condition));
    if (!s->join_condition) out->back().reach = WriteReach::kWhereAbsent;
  } else if (d == &pg_query__truncate_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__TruncateStmt*>(m);
    for (size_t i = 0; i < s->n_relations; ++i) {
      const PgQuery__Node* r = s->relations[i];
      if (!r || r->node_case != PG_QUERY__NODE__NODE_RANGE_VAR) continue;
      out->push_back(WriteEffect{"TRUNCATE", resolved(r->range_var), WriteReach::kTruncate, false});
    }
    return;
  }
  for_each_child(m, [&](const ProtobufCMessage* c) { collect(c, depth + 1, out); });
}

}  // namespace

std::string_view write_reach_rule(WriteReach reach) {
  switch (reach) {
    case WriteReach::kRestricted:
      return "restricted";
    case WriteReach::kWhereAbsent:
      return "where_absent";
    case WriteReach::kWhereConstantTrue:
      return "where_constant_true";
    case WriteReach::kWhereRowIndependent:
      return "where_row_independent";
    case WriteReach::kTruncate:
      return "truncate";
  }
  return "restricted";
}

std::string WriteEffect::describe() const {
  const std::string clause = verb == "MERGE" ? "ON condition" : "WHERE clause";
  switch (reach) {
    case WriteReach::kWhereAbsent:
      return verb + " on " + relation + " has no " + clause + ": it changes every row";
    case WriteReach::kWhereConstantTrue:
      return verb + " on " + relation + " has a " + clause +
             " that is always true: it changes every row";
    case WriteReach::kWhereRowIndependent:
      return verb + " on " + relation + " has a " + clause +
             " that does not depend on the row: it changes every row or none";
    case WriteReach::kTruncate:
      return "TRUNCATE removes every row of " + relation;
    case WriteReach::kRestricted:
      break;
  }
  return verb + " on " + relation + " is restricted by its " + clause;
}

std::vector<WriteEffect> find_write_effects(const PgQuery__Node* stmt) {
  std::vector<WriteEffect> out;
  collect(msg(stmt), 0, &out);
  return out;
}

std::string_view condition_reach_name(ConditionReach reach) {
  switch (reach) {
    case ConditionReach::kTrue:
      return "true";
    case ConditionReach::kFalse:
      return "false";
    case ConditionReach::kNull:
      return "null";
    case ConditionReach::kRowIndependent:
      return "row_independent";
    case ConditionReach::kRowDependent:
      return "row_dependent";
  }
  return "row_dependent";
}

ConditionReach classify_condition_sql(std::string_view condition) {
  const std::string sql = "DELETE FROM t WHERE " + std::string(condition);
  PgQueryProtobufParseResult parsed = pg_query_parse_protobuf(sql.c_str());
  if (parsed.error) {
    pg_query_free_protobuf_parse_result(parsed);
    return ConditionReach::kRowDependent;
  }
  PgQuery__ParseResult* tree = pg_query__parse_result__unpack(
      nullptr, parsed.parse_tree.len, reinterpret_cast<const uint8_t*>(parsed.parse_tree.data));
  pg_query_free_protobuf_parse_result(parsed);
  ConditionReach r = ConditionReach::kRowDependent;
  if (tree && tree->n_stmts == 1 && tree->stmts[0]->stmt &&
      tree->stmts[0]->stmt->node_case == PG_QUERY__NODE__NODE_DELETE_STMT) {
    ConditionReader reader("t");
    r = reader.reach(tree->stmts[0]->stmt->delete_stmt->where_clause);
  }
  if (tree) pg_query__parse_result__free_unpacked(tree, nullptr);
  return r;
}

std::string inner_statement_text(std::string_view wrapper) {
  const std::string text(wrapper);
  PgQueryScanResult scanned = pg_query_scan(text.c_str());
  if (scanned.error) {
    pg_query_free_scan_result(scanned);
    return "";
  }
  PgQuery__ScanResult* scan = pg_query__scan_result__unpack(
      nullptr, scanned.pbuf.len, reinterpret_cast<const uint8_t*>(scanned.pbuf.data));
  pg_query_free_scan_result(scanned);
  if (!scan) return "";
  std::string out;
  const size_t n = scan->n_tokens;
  PgQuery__ScanToken** t = scan->tokens;
  auto skip_parens = [&](size_t i) {
    // i is at '('; returns the index after the matching ')', or n.
    int level = 0;
    for (; i < n; ++i) {
      if (t[i]->token == PG_QUERY__TOKEN__ASCII_40) ++level;
      if (t[i]->token == PG_QUERY__TOKEN__ASCII_41 && --level == 0) return i + 1;
    }
    return n;
  };
  size_t i = n;  // index of the inner statement's first token; n = none
  if (n >= 3 && t[0]->token == PG_QUERY__TOKEN__PREPARE) {
    size_t k = 2;  // after the name
    if (k < n && t[k]->token == PG_QUERY__TOKEN__ASCII_40) k = skip_parens(k);
    if (k < n && t[k]->token == PG_QUERY__TOKEN__AS) i = k + 1;
  } else if (n >= 2 && t[0]->token == PG_QUERY__TOKEN__EXPLAIN) {
    size_t k = 1;
    if (t[k]->token == PG_QUERY__TOKEN__ASCII_40) {
      k = skip_parens(k);
    } else {
      while (k < n &&
             (t[k]->token == PG_QUERY__TOKEN__ANALYZE || t[k]->token == PG_QUERY__TOKEN__ANALYSE ||
              t[k]->token == PG_QUERY__TOKEN__VERBOSE)) {
        ++k;
      }
    }
    i = k;
  }
  if (i < n && t[i]->start >= 0 && static_cast<size_t>(t[i]->start) < text.size()) {
    std::string_view rest = std::string_view(text).substr(static_cast<size_t>(t[i]->start));
    while (!rest.empty() && (rest.back() == ';' || rest.back() == ' ' || rest.back() == '\n' ||
                             rest.back() == '\t' || rest.back() == '\r')) {
      rest.remove_suffix(1);
    }
    out = std::string(rest);
  }
  pg_query__scan_result__free_unpacked(scan, nullptr);
  return out;
}

}  // namespace pgwarden::policy
