#include "controlplane/policy/effect.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
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

std::string resolved(const PgQuery__RangeVar* rv) {
  return RelationRef{std::string(sv(rv->schemaname)), std::string(sv(rv->relname))}.resolved();
}

// Reads one condition of one write against its target (alias or name).
class ConditionReader {
 public:
  // `target`: the write's alias (or its name); `relation`: its resolved "schema.table".
  ConditionReader(std::string target, std::string relation)
      : target_(std::move(target)), relation_(std::move(relation)) {}

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
    if (any(ConditionReach::kTautology)) return ConditionReach::kTautology;
    return ConditionReach::kTrue;
  }

  static ConditionReach combine_or(const std::vector<ConditionReach>& rs) {
    auto any = [&](ConditionReach x) { return std::find(rs.begin(), rs.end(), x) != rs.end(); };
    if (any(ConditionReach::kTrue)) return ConditionReach::kTrue;
    if (any(ConditionReach::kTautology)) return ConditionReach::kTautology;
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
        if (b->boolop == PG_QUERY__BOOL_EXPR_TYPE__OR_EXPR) {
          if (auto all = covers_every_value(b)) rs.push_back(*all);
          return combine_or(rs);
        }
        if (rs.size() != 1) return ConditionReach::kRowDependent;
        if (rs[0] == ConditionReach::kTrue) return ConditionReach::kFalse;
        if (rs[0] == ConditionReach::kFalse) return ConditionReach::kTrue;
        // NOT of a tautology is false or NULL on every row: it reaches none.
        if (rs[0] == ConditionReach::kTautology) return ConditionReach::kRowDependent;
        return rs[0];
      }
      case PG_QUERY__NODE__NODE_BOOLEAN_TEST: {
        const PgQuery__BooleanTest* t = n->boolean_test;
        ConditionReach a = reach(t->arg, depth + 1);
        if (a == ConditionReach::kTautology) {
          // true or NULL on every row: IS TRUE keeps that, IS NOT FALSE makes it true; the
          // other tests reach no row or only rows with NULLs.
          if (t->booltesttype == PG_QUERY__BOOL_TEST_TYPE__IS_NOT_FALSE)
            return ConditionReach::kTrue;
          if (t->booltesttype == PG_QUERY__BOOL_TEST_TYPE__IS_TRUE) return a;
          return ConditionReach::kRowDependent;
        }
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
    if (auto t = tautology(n)) return *t;
    return from_value(value(n, depth), n);
  }

  // --- tautologies over the target row ------------------------------------------------
  //
  // Conditions that read the row but do not choose among rows: they are true on every row
  // (or on every row whose compared values are not NULL). Over-reading here only asks for an
  // approval; under-reading lets an unbounded write through.

  // Structural equality of two parse subtrees, ignoring token locations. Notes in literals_
  // when a constant took part (`k + 1 = k + 1` has the shape of `k + 1 = k + 2`).
  bool same_tree(const ProtobufCMessage* a, const ProtobufCMessage* b, int depth) {
    if (!a || !b) return a == b;
    if (a->descriptor != b->descriptor || depth > kMaxDepth) return false;
    const ProtobufCMessageDescriptor* d = a->descriptor;
    if (d == &pg_query__a__const__descriptor) literals_ = true;
    const char* pa = reinterpret_cast<const char*>(a);
    const char* pb = reinterpret_cast<const char*>(b);
    for (unsigned i = 0; i < d->n_fields; ++i) {
      const ProtobufCFieldDescriptor& fd = d->fields[i];
      if (std::string_view(fd.name) == "location") continue;
      if (fd.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t wa = *reinterpret_cast<const uint32_t*>(pa + fd.quantifier_offset);
        uint32_t wb = *reinterpret_cast<const uint32_t*>(pb + fd.quantifier_offset);
        if (wa != wb) return false;
        if (wa != fd.id) continue;
      }
      size_t n = 1;
      const char* va = pa + fd.offset;
      const char* vb = pb + fd.offset;
      if (fd.label == PROTOBUF_C_LABEL_REPEATED) {
        n = *reinterpret_cast<const size_t*>(pa + fd.quantifier_offset);
        if (n != *reinterpret_cast<const size_t*>(pb + fd.quantifier_offset)) return false;
        va = *reinterpret_cast<const char* const*>(va);
        vb = *reinterpret_cast<const char* const*>(vb);
        if (n == 0) continue;
        if (!va || !vb) return false;
      }
      for (size_t k = 0; k < n; ++k) {
        if (!same_field(fd, va, vb, k, depth)) return false;
      }
    }
    return true;
  }

  bool same_field(const ProtobufCFieldDescriptor& fd, const char* va, const char* vb, size_t k,
                  int depth) {
    switch (fd.type) {
      case PROTOBUF_C_TYPE_MESSAGE: {
        auto ma = reinterpret_cast<const ProtobufCMessage* const*>(va)[k];
        auto mb = reinterpret_cast<const ProtobufCMessage* const*>(vb)[k];
        return same_tree(ma, mb, depth + 1);
      }
      case PROTOBUF_C_TYPE_STRING: {
        const char* sa = reinterpret_cast<const char* const*>(va)[k];
        const char* sb = reinterpret_cast<const char* const*>(vb)[k];
        return sv(sa) == sv(sb);
      }
      case PROTOBUF_C_TYPE_BYTES: {
        const auto& ba = reinterpret_cast<const ProtobufCBinaryData*>(va)[k];
        const auto& bb = reinterpret_cast<const ProtobufCBinaryData*>(vb)[k];
        return ba.len == bb.len && (ba.len == 0 || std::memcmp(ba.data, bb.data, ba.len) == 0);
      }
      case PROTOBUF_C_TYPE_INT64:
      case PROTOBUF_C_TYPE_SINT64:
      case PROTOBUF_C_TYPE_SFIXED64:
      case PROTOBUF_C_TYPE_UINT64:
      case PROTOBUF_C_TYPE_FIXED64:
      case PROTOBUF_C_TYPE_DOUBLE:
        return std::memcmp(va + 8 * k, vb + 8 * k, 8) == 0;
      default:  // 32-bit scalars, enums and protobuf_c_boolean
        return std::memcmp(va + 4 * k, vb + 4 * k, 4) == 0;
    }
  }

  bool same_expr(const PgQuery__Node* a, const PgQuery__Node* b) {
    return same_tree(msg(a), msg(b), 0);
  }

  // A string constant (possibly cast), for LIKE patterns; nullopt otherwise.
  std::optional<std::string> string_constant(const PgQuery__Node* n) {
    Value v = value(n, 0);
    literals_ = true;
    if (v.type == Value::Type::kString) return v.s;
    return std::nullopt;
  }

  std::optional<ConditionReach> tautology(const PgQuery__Node* n) {
    if (n->node_case == PG_QUERY__NODE__NODE_SUB_LINK) return self_sublink(n->sub_link);
    if (n->node_case != PG_QUERY__NODE__NODE_A_EXPR) return std::nullopt;
    const PgQuery__AExpr* e = n->a_expr;
    if (!e->lexpr || !e->rexpr || !refers_to_target(msg(e->lexpr), 0)) return std::nullopt;
    const std::string op = last_name(e->name, e->n_name);
    switch (e->kind) {
      case PG_QUERY__A__EXPR__KIND__AEXPR_OP:
        // x = x, x <= x, x >= x: true wherever x is not NULL (also NaN = NaN in PostgreSQL).
        if ((op == "=" || op == "<=" || op == ">=") && same_expr(e->lexpr, e->rexpr)) {
          return ConditionReach::kTautology;
        }
        // x ~ '' / '.*' (regular expressions matching every string).
        if (op == "~" || op == "~*") {
          auto p = string_constant(e->rexpr);
          if (p && (p->empty() || *p == ".*" || *p == "^" || *p == "^.*" || *p == ".*$")) {
            return ConditionReach::kTautology;
          }
        }
        break;
      case PG_QUERY__A__EXPR__KIND__AEXPR_NOT_DISTINCT:
        if (same_expr(e->lexpr, e->rexpr)) return ConditionReach::kTrue;
        break;
      case PG_QUERY__A__EXPR__KIND__AEXPR_LIKE:
      case PG_QUERY__A__EXPR__KIND__AEXPR_ILIKE:
        if (op == "~~" || op == "~~*") {
          auto p = string_constant(e->rexpr);
          if (p && !p->empty() && p->find_first_not_of('%') == std::string::npos) {
            return ConditionReach::kTautology;
          }
          if (same_expr(e->lexpr, e->rexpr) &&
              e->rexpr->node_case != PG_QUERY__NODE__NODE_A_CONST) {
            // v LIKE v is not always true ('%' and '_' in v), so it is not read as one.
            break;
          }
        }
        break;
      case PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN:
      case PG_QUERY__A__EXPR__KIND__AEXPR_BETWEEN_SYM:
        if (e->rexpr->node_case == PG_QUERY__NODE__NODE_LIST && e->rexpr->list->n_items == 2) {
          const PgQuery__Node* lo = e->rexpr->list->items[0];
          const PgQuery__Node* hi = e->rexpr->list->items[1];
          if (same_expr(e->lexpr, lo) && same_expr(e->lexpr, hi)) return ConditionReach::kTautology;
        }
        break;
      default:
        break;
    }
    return std::nullopt;
  }

  // One comparison `x <op> constant` (or `constant <op> x`) inside an OR, as a set of values.
  struct Ray {
    const PgQuery__Node* expr = nullptr;
    enum class Kind { kBelow, kAbove, kPoint, kAllBut } kind = Kind::kPoint;
    Value at;
    bool closed = false;  // kBelow/kAbove include `at`
  };

  std::optional<Ray> ray_of(const PgQuery__Node* n) {
    if (!n || n->node_case != PG_QUERY__NODE__NODE_A_EXPR) return std::nullopt;
    const PgQuery__AExpr* e = n->a_expr;
    if (e->kind != PG_QUERY__A__EXPR__KIND__AEXPR_OP || !e->lexpr || !e->rexpr) return std::nullopt;
    std::string op = last_name(e->name, e->n_name);
    const PgQuery__Node* x = e->lexpr;
    Value c = value(e->rexpr, 0);
    if (!c.known()) {
      // constant <op> x: mirror the operator.
      c = value(e->lexpr, 0);
      x = e->rexpr;
      if (op == "<")
        op = ">";
      else if (op == ">")
        op = "<";
      else if (op == "<=")
        op = ">=";
      else if (op == ">=")
        op = "<=";
    }
    if (!c.known() || c.type == Value::Type::kNull || !refers_to_target(msg(x), 0)) {
      return std::nullopt;
    }
    literals_ = true;
    Ray r;
    r.expr = x;
    r.at = c;
    if (op == "=") {
      r.kind = Ray::Kind::kPoint;
    } else if (op == "<>" || op == "!=") {
      r.kind = Ray::Kind::kAllBut;
    } else if (op == "<" || op == "<=") {
      r.kind = Ray::Kind::kBelow;
      r.closed = op == "<=";
    } else if (op == ">" || op == ">=") {
      r.kind = Ray::Kind::kAbove;
      r.closed = op == ">=";
    } else {
      return std::nullopt;
    }
    return r;
  }

  // `x < 5 OR x >= 5`, `x <> 3 OR x = 3`, `p OR NOT p` (tautologies), `x IS NULL OR x IS NOT
  // NULL` (true): the branches of one OR, read over the same expression, leave no value out.
  std::optional<ConditionReach> covers_every_value(const PgQuery__BoolExpr* b) {
    // p OR NOT p; x IS NULL OR x IS NOT NULL. Pairs are looked for among few branches: more
    // negated or IS [NOT] NULL branches than this are read as a tautology (fail closed), so
    // that a long OR costs linear time.
    constexpr size_t kMaxPairedBranches = 64;
    std::vector<const PgQuery__Node*> negated, null_tests;
    for (size_t i = 0; i < b->n_args; ++i) {
      const PgQuery__Node* a = b->args[i];
      if (!a) continue;
      if (a->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
          a->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__NOT_EXPR && a->bool_expr->n_args == 1) {
        negated.push_back(a->bool_expr->args[0]);
      } else if (a->node_case == PG_QUERY__NODE__NODE_NULL_TEST) {
        null_tests.push_back(a);
      }
    }
    if (negated.size() + null_tests.size() > kMaxPairedBranches) return ConditionReach::kTautology;
    for (const PgQuery__Node* p : negated) {
      for (size_t i = 0; i < b->n_args; ++i) {
        if (b->args[i] && same_expr(b->args[i], p) && refers_to_target(msg(p), 0)) {
          return ConditionReach::kTautology;
        }
      }
    }
    for (const PgQuery__Node* x : null_tests) {
      for (const PgQuery__Node* y : null_tests) {
        if (x->null_test->nulltesttype != y->null_test->nulltesttype &&
            same_expr(x->null_test->arg, y->null_test->arg)) {
          return ConditionReach::kTrue;
        }
      }
    }
    std::vector<Ray> rays;
    for (size_t i = 0; i < b->n_args; ++i) {
      if (auto r = ray_of(b->args[i])) rays.push_back(std::move(*r));
    }
    // Rays grouped by the expression they compare (rays is complete: pointers stay valid).
    std::vector<std::vector<const Ray*>> groups;
    for (const Ray& r : rays) {
      auto g = std::find_if(groups.begin(), groups.end(), [&](const std::vector<const Ray*>& g) {
        return same_expr(g.front()->expr, r.expr);
      });
      if (g == groups.end()) {
        groups.push_back({&r});
      } else {
        g->push_back(&r);
      }
    }
    for (const auto& g : groups) {
      if (g.size() > 1 && covers_all(g)) return ConditionReach::kTautology;
    }
    return std::nullopt;
  }

  // Three-way order of two constants (nullopt when they do not compare exactly).
  static std::optional<int> order(const Value& a, const Value& b) {
    Value lt = compare("<", a, b), eq = compare("=", a, b);
    if (eq.type != Value::Type::kBool) return std::nullopt;
    if (eq.b) return 0;
    if (lt.type != Value::Type::kBool) return std::nullopt;
    return lt.b ? -1 : 1;
  }

  // A constant as a map key: equal keys are equal values.
  static std::string key_of(const Value& v) {
    switch (v.type) {
      case Value::Type::kInt:
        return "i" + std::to_string(v.i);
      case Value::Type::kBool:
        return v.b ? "b1" : "b0";
      case Value::Type::kString:
        return "s" + v.s;
      default:
        return "?";
    }
  }

  // Whether the union of `rays`, all over one expression, leaves no value out. Linear in their
  // number (an OR may be long): integers are ordered exactly; other constants only meet when
  // equal (`v > 'a' OR v <= 'a'`), since their order depends on a collation.
  static bool covers_all(const std::vector<const Ray*>& rays) {
    using K = Ray::Kind;
    struct Sides {
      bool below = false, below_closed = false, above = false, above_closed = false;
      bool point = false;
    };
    std::map<std::string, Sides> by_value;
    const Ray* all_but = nullptr;
    const Ray* below = nullptr;  // the integer ray below reaching highest
    const Ray* above = nullptr;  // the integer ray above reaching lowest
    for (const Ray* r : rays) {
      if (r->kind == K::kAllBut) {
        // x <> a OR x <> b with a != b: every value.
        if (all_but != nullptr) {
          auto o = order(all_but->at, r->at);
          if (o && *o != 0) return true;
        } else {
          all_but = r;
        }
        continue;
      }
      Sides& s = by_value[key_of(r->at)];
      s.point |= r->kind == K::kPoint;
      s.below |= r->kind == K::kBelow;
      s.below_closed |= r->kind == K::kBelow && r->closed;
      s.above |= r->kind == K::kAbove;
      s.above_closed |= r->kind == K::kAbove && r->closed;
      if (r->at.type != Value::Type::kInt) continue;
      if (r->kind == K::kBelow &&
          (!below || r->at.i > below->at.i || (r->at.i == below->at.i && r->closed))) {
        below = r;
      }
      if (r->kind == K::kAbove &&
          (!above || r->at.i < above->at.i || (r->at.i == above->at.i && r->closed))) {
        above = r;
      }
    }
    if (all_but != nullptr && contains_other(rays, all_but, all_but->at)) return true;
    if (below && above && below->at.i > above->at.i) return true;  // they overlap
    for (const auto& [key, s] : by_value) {
      // They meet at one value: covered when either side or a point includes it.
      if (s.below && s.above && (s.below_closed || s.above_closed || s.point)) return true;
    }
    return false;
  }

  static bool contains_other(const std::vector<const Ray*>& rays, const Ray* self, const Value& v) {
    for (const Ray* r : rays) {
      if (r == self) continue;
      auto o = order(v, r->at);
      if (!o) continue;
      if (r->kind == Ray::Kind::kPoint && *o == 0) return true;
      if (r->kind == Ray::Kind::kBelow && (*o < 0 || (*o == 0 && r->closed))) return true;
      if (r->kind == Ray::Kind::kAbove && (*o > 0 || (*o == 0 && r->closed))) return true;
      if (r->kind == Ray::Kind::kAllBut && *o != 0) return true;
    }
    return false;
  }

  // `x IN (SELECT x FROM <target>)`, `x = ANY (SELECT x FROM <target>)` and
  // `EXISTS (SELECT .. FROM <target> s WHERE s.x = <target>.x)`: a semi-join of the target
  // with itself on the same column keeps every row whose x is not NULL.
  std::optional<ConditionReach> self_sublink(const PgQuery__SubLink* l) {
    const PgQuery__Node* sub = l->subselect;
    if (!sub || sub->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) return std::nullopt;
    const PgQuery__SelectStmt* s = sub->select_stmt;
    if (s->n_from_clause != 1 || !s->from_clause[0] ||
        s->from_clause[0]->node_case != PG_QUERY__NODE__NODE_RANGE_VAR || s->n_group_clause ||
        s->having_clause || s->limit_count || s->limit_offset || s->with_clause ||
        s->n_distinct_clause ||
        (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE &&
         s->op != PG_QUERY__SET_OPERATION__SET_OPERATION_UNDEFINED)) {
      return std::nullopt;
    }
    const PgQuery__RangeVar* rv = s->from_clause[0]->range_var;
    if (relation_.empty() || resolved(rv) != relation_) return std::nullopt;
    const std::string inner = rv->alias && rv->alias->aliasname ? std::string(rv->alias->aliasname)
                                                                : std::string(sv(rv->relname));
    if (l->sub_link_type == PG_QUERY__SUB_LINK_TYPE__ANY_SUBLINK) {
      const std::string op = last_name(l->oper_name, l->n_oper_name);
      if (!(op.empty() || op == "=") || s->where_clause || s->n_target_list != 1 ||
          !s->target_list[0] || s->target_list[0]->node_case != PG_QUERY__NODE__NODE_RES_TARGET) {
        return std::nullopt;
      }
      auto outer_col = target_column(l->testexpr);
      auto inner_col = column_of(s->target_list[0]->res_target->val, inner);
      if (outer_col && inner_col && *outer_col == *inner_col) return ConditionReach::kTautology;
      return std::nullopt;
    }
    if (l->sub_link_type == PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK && s->where_clause &&
        inner != target_) {
      // Every conjunct is `inner.c = target.c` (either order) for the same column c.
      std::vector<const PgQuery__Node*> conjuncts;
      const PgQuery__Node* w = s->where_clause;
      if (w->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
          w->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
        for (size_t i = 0; i < w->bool_expr->n_args; ++i)
          conjuncts.push_back(w->bool_expr->args[i]);
      } else {
        conjuncts.push_back(w);
      }
      for (const PgQuery__Node* c : conjuncts) {
        if (!c || c->node_case != PG_QUERY__NODE__NODE_A_EXPR ||
            c->a_expr->kind != PG_QUERY__A__EXPR__KIND__AEXPR_OP ||
            last_name(c->a_expr->name, c->a_expr->n_name) != "=") {
          return std::nullopt;
        }
        auto qualified = [&](const PgQuery__Node* n,
                             const std::string& q) -> std::optional<std::string> {
          if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF ||
              n->column_ref->n_fields != 2) {
            return std::nullopt;
          }
          const PgQuery__Node* f0 = n->column_ref->fields[0];
          const PgQuery__Node* f1 = n->column_ref->fields[1];
          if (!f0 || !f1 || f0->node_case != PG_QUERY__NODE__NODE_STRING ||
              f1->node_case != PG_QUERY__NODE__NODE_STRING || sv(f0->string->sval) != q) {
            return std::nullopt;
          }
          return std::string(sv(f1->string->sval));
        };
        const PgQuery__Node* a = c->a_expr->lexpr;
        const PgQuery__Node* b = c->a_expr->rexpr;
        auto ai = qualified(a, inner), bt = qualified(b, target_);
        auto at = qualified(a, target_), bi = qualified(b, inner);
        bool ok = (ai && bt && *ai == *bt) || (at && bi && *at == *bi);
        if (!ok) return std::nullopt;
      }
      return ConditionReach::kTautology;
    }
    return std::nullopt;
  }

  // The column name of `n` when it is a column of the target row (unqualified or qualified
  // with the target's name).
  std::optional<std::string> target_column(const PgQuery__Node* n) const {
    return column_of(n, target_);
  }

  static std::optional<std::string> column_of(const PgQuery__Node* n, const std::string& q) {
    if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF) return std::nullopt;
    const PgQuery__ColumnRef* c = n->column_ref;
    for (size_t i = 0; i < c->n_fields; ++i) {
      if (!c->fields[i] || c->fields[i]->node_case != PG_QUERY__NODE__NODE_STRING) {
        return std::nullopt;
      }
    }
    if (c->n_fields == 1) return std::string(sv(c->fields[0]->string->sval));
    if (c->n_fields == 2 && sv(c->fields[0]->string->sval) == q) {
      return std::string(sv(c->fields[1]->string->sval));
    }
    return std::nullopt;
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
  std::string relation_;
  std::vector<Scope> scopes_;
  bool literals_ = false;
};

std::string target_name(const PgQuery__RangeVar* rv) {
  if (rv->alias && rv->alias->aliasname) return std::string(rv->alias->aliasname);
  return std::string(sv(rv->relname));
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
  ConditionReader reader(target ? target_name(target) : std::string(),
                         target ? resolved(target) : std::string());
  ConditionReach r = reader.reach(condition);
  e.uses_literals = reader.literals();
  if (r == ConditionReach::kTrue) {
    e.reach = WriteReach::kWhereConstantTrue;
  } else if (r == ConditionReach::kRowIndependent) {
    e.reach = WriteReach::kWhereRowIndependent;
  } else if (r == ConditionReach::kTautology) {
    e.reach = WriteReach::kWhereTautology;
  }
  return e;
}

// A dotted name from a DROP object (a List of String, or one String for schemas).
std::string object_name(const PgQuery__Node* o) {
  if (!o) return "?";
  if (o->node_case == PG_QUERY__NODE__NODE_STRING) return std::string(sv(o->string->sval));
  if (o->node_case != PG_QUERY__NODE__NODE_LIST) return "?";
  std::string out;
  for (size_t i = 0; i < o->list->n_items; ++i) {
    const PgQuery__Node* part = o->list->items[i];
    if (!part || part->node_case != PG_QUERY__NODE__NODE_STRING) return "?";
    if (!out.empty()) out += '.';
    out += sv(part->string->sval);
  }
  if (o->list->n_items == 1) {
    return RelationRef{std::string(), out}.resolved();  // schema-less: as relations resolve
  }
  return out;
}

bool drops_data(PgQuery__ObjectType type) {
  switch (type) {
    case PG_QUERY__OBJECT_TYPE__OBJECT_TABLE:
    case PG_QUERY__OBJECT_TYPE__OBJECT_MATVIEW:
    case PG_QUERY__OBJECT_TYPE__OBJECT_SCHEMA:
    case PG_QUERY__OBJECT_TYPE__OBJECT_EXTENSION:  // its member tables go with it
      return true;
    default:
      return false;
  }
}

std::string_view drop_verb(PgQuery__ObjectType type) {
  switch (type) {
    case PG_QUERY__OBJECT_TYPE__OBJECT_TABLE:
      return "DROP TABLE";
    case PG_QUERY__OBJECT_TYPE__OBJECT_MATVIEW:
      return "DROP MATERIALIZED VIEW";
    case PG_QUERY__OBJECT_TYPE__OBJECT_SCHEMA:
      return "DROP SCHEMA";
    case PG_QUERY__OBJECT_TYPE__OBJECT_EXTENSION:
      return "DROP EXTENSION";
    default:
      return "DROP ... CASCADE";
  }
}

// The ALTER TABLE (or ALTER TYPE) subcommands that destroy stored values or take rows out of
// the table, as the verb of their effect; "" for the others. Each is judged by what it does
// to stored rows, not by its words:
//   DROP COLUMN / DROP ATTRIBUTE       the column's values are gone;
//   ALTER COLUMN ... TYPE [USING]      every value is rewritten: USING may compute anything
//                                      (`USING NULL`), and a narrower type rounds or truncates
//                                      (numeric scale, timestamptz -> date);
//   DETACH PARTITION, NO INHERIT       the partition's (child's) rows vanish from the parent.
// Not destructive: ADD COLUMN, DROP CONSTRAINT [CASCADE] (drops constraints, never rows),
// DROP EXPRESSION (keeps the stored values), SET/RESET options, ATTACH PARTITION, INHERIT,
// CLUSTER ON, SET ACCESS METHOD / TABLESPACE (rewrites keep every value).
std::string_view alter_table_loss(const PgQuery__AlterTableCmd* cmd) {
  switch (cmd->subtype) {
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DropColumn:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DropColumnRecurse:
      return "ALTER TABLE ... DROP";
    case PG_QUERY__ALTER_TABLE_TYPE__AT_AlterColumnType:
      return "ALTER TABLE ... ALTER COLUMN ... TYPE";
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DetachPartition:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DetachPartitionFinalize:
      return "ALTER TABLE ... DETACH PARTITION";
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DropInherit:
      return "ALTER TABLE ... NO INHERIT";
    case PG_QUERY__ALTER_TABLE_TYPE__AT_SetUnLogged:
      // Its rows are no longer in the WAL: a crash empties the table, a standby or a restore
      // from WAL archives does not have them.
      return "ALTER TABLE ... SET UNLOGGED";
    default:
      return "";
  }
}

// ALTER TABLE subcommands that change which trigger or rule code runs on later writes (by any
// session, where no request is made): ENABLE [REPLICA | ALWAYS] arms code analysis cannot
// see; DISABLE switches off what guarded the table (a trigger refusing deletes, an audit
// trigger; DISABLE TRIGGER ALL also foreign-key enforcement and cascades). "" for others.
std::string_view alter_table_code_change(const PgQuery__AlterTableCmd* cmd) {
  switch (cmd->subtype) {
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableTrig:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableAlwaysTrig:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableReplicaTrig:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableTrigAll:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableTrigUser:
      return "ALTER TABLE ... ENABLE TRIGGER";
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DisableTrig:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DisableTrigAll:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DisableTrigUser:
      return "ALTER TABLE ... DISABLE TRIGGER";
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableRule:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableAlwaysRule:
    case PG_QUERY__ALTER_TABLE_TYPE__AT_EnableReplicaRule:
      return "ALTER TABLE ... ENABLE RULE";
    case PG_QUERY__ALTER_TABLE_TYPE__AT_DisableRule:
      return "ALTER TABLE ... DISABLE RULE";
    default:
      return "";
  }
}

// The large-object functions of pg_catalog that destroy or overwrite stored data, as the
// verb of their effect; "" for any other call. lo_unlink removes the object, lo_truncate /
// lo_truncate64 cut it short, lo_put and lowrite overwrite its bytes in place. Creating,
// reading and importing large objects destroy nothing. A same-named function in another
// schema is code pgwarden cannot see (unknown_effect, decided with the catalog).
std::string_view large_object_loss(const PgQuery__FuncCall* f) {
  if (f->n_funcname == 0 || f->n_funcname > 2) return "";
  std::string_view parts[2];
  for (size_t i = 0; i < f->n_funcname; ++i) {
    const PgQuery__Node* n = f->funcname[i];
    if (!n || n->node_case != PG_QUERY__NODE__NODE_STRING) return "";
    parts[i] = sv(n->string->sval);
  }
  if (f->n_funcname == 2 && parts[0] != "pg_catalog") return "";
  const std::string_view name = parts[f->n_funcname - 1];
  for (std::string_view lo : {"lo_unlink", "lo_truncate", "lo_truncate64", "lo_put", "lowrite"}) {
    if (name == lo) return lo;
  }
  return "";
}

// DROP of stored data or with CASCADE, DROP DATABASE, ALTER TABLE ... DROP COLUMN: one
// effect per object. Code that runs where analysis cannot see (DO, CREATE TRIGGER / RULE,
// whose bodies run on later writes): one unknown_effect. True when `m` was one of those.
bool collect_utility(const ProtobufCMessage* m, std::vector<WriteEffect>* out) {
  const ProtobufCMessageDescriptor* d = m->descriptor;
  if (d == &pg_query__drop_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__DropStmt*>(m);
    const bool cascade = s->behavior == PG_QUERY__DROP_BEHAVIOR__DROP_CASCADE;
    if (drops_data(s->remove_type) || cascade) {
      const std::string verb(drop_verb(s->remove_type));
      for (size_t i = 0; i < s->n_objects; ++i) {
        out->push_back(WriteEffect{verb, object_name(s->objects[i]), WriteReach::kDrop, false});
      }
    } else if (s->remove_type == PG_QUERY__OBJECT_TYPE__OBJECT_TRIGGER ||
               s->remove_type == PG_QUERY__OBJECT_TYPE__OBJECT_RULE) {
      // Like ALTER TABLE ... DISABLE TRIGGER / RULE: code that ran on every later write (and
      // may have guarded the table: a trigger refusing deletes, an audit trigger) is gone.
      const std::string verb =
          s->remove_type == PG_QUERY__OBJECT_TYPE__OBJECT_TRIGGER ? "DROP TRIGGER" : "DROP RULE";
      for (size_t i = 0; i < s->n_objects; ++i) {
        out->push_back(
            WriteEffect{verb, object_name(s->objects[i]), WriteReach::kUnknownEffect, false});
      }
    }
    return true;
  }
  if (d == &pg_query__dropdb_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__DropdbStmt*>(m);
    out->push_back(
        WriteEffect{"DROP DATABASE", std::string(sv(s->dbname)), WriteReach::kDrop, false});
    return true;
  }
  if (d == &pg_query__alter_table_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__AlterTableStmt*>(m);
    for (size_t i = 0; i < s->n_cmds; ++i) {
      const PgQuery__Node* c = s->cmds[i];
      if (!c || c->node_case != PG_QUERY__NODE__NODE_ALTER_TABLE_CMD) continue;
      const std::string_view verb = alter_table_loss(c->alter_table_cmd);
      if (!verb.empty()) {
        out->push_back(WriteEffect{std::string(verb),
                                   s->relation ? resolved(s->relation) : std::string("?"),
                                   WriteReach::kDrop, false});
      }
      const std::string_view code = alter_table_code_change(c->alter_table_cmd);
      if (!code.empty()) {
        out->push_back(WriteEffect{std::string(code),
                                   s->relation ? resolved(s->relation) : std::string("?"),
                                   WriteReach::kUnknownEffect, false});
      }
    }
    return false;  // its expressions (defaults, USING) may hold sub-statements
  }
  if (d == &pg_query__drop_owned_stmt__descriptor) {
    // DROP OWNED BY r drops every table (and everything else) r owns in the database.
    const auto* s = reinterpret_cast<const PgQuery__DropOwnedStmt*>(m);
    for (size_t i = 0; i < s->n_roles; ++i) {
      const PgQuery__Node* r = s->roles[i];
      std::string role = "?";
      if (r && r->node_case == PG_QUERY__NODE__NODE_ROLE_SPEC) {
        role = r->role_spec->rolename ? std::string(r->role_spec->rolename)
                                      : std::string("CURRENT_USER");
      }
      out->push_back(WriteEffect{"DROP OWNED BY", role, WriteReach::kDrop, false});
    }
    return true;
  }
  if (d == &pg_query__refresh_mat_view_stmt__descriptor) {
    // WITH NO DATA empties the materialized view (until the next REFRESH recomputes it).
    const auto* s = reinterpret_cast<const PgQuery__RefreshMatViewStmt*>(m);
    if (s->skip_data) {
      out->push_back(WriteEffect{"REFRESH MATERIALIZED VIEW ... WITH NO DATA",
                                 s->relation ? resolved(s->relation) : std::string("?"),
                                 WriteReach::kDrop, false});
    }
    return true;
  }
  if (d == &pg_query__do_stmt__descriptor) {
    out->push_back(WriteEffect{"DO", "", WriteReach::kUnknownEffect, false});
    return true;
  }
  if (d == &pg_query__create_trig_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__CreateTrigStmt*>(m);
    out->push_back(WriteEffect{"CREATE TRIGGER",
                               s->relation ? resolved(s->relation) : std::string("?"),
                               WriteReach::kUnknownEffect, false});
    return true;
  }
  if (d == &pg_query__rule_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__RuleStmt*>(m);
    // A rule that only does NOTHING or SELECT changes nothing by itself.
    bool acts = false;
    for (size_t i = 0; i < s->n_actions; ++i) {
      const PgQuery__Node* a = s->actions[i];
      if (a && a->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) acts = true;
    }
    if (acts) {
      out->push_back(WriteEffect{"CREATE RULE",
                                 s->relation ? resolved(s->relation) : std::string("?"),
                                 WriteReach::kUnknownEffect, false});
    }
    return true;
  }
  return false;
}

// `INSERT INTO t SELECT ... FROM t [WHERE ...] ON CONFLICT DO UPDATE [WHERE ...]`: every row
// the source reads from t itself conflicts with itself and is updated, so the source's WHERE
// over t (and the DO UPDATE's WHERE) is the write's reach. nullopt for any other INSERT (its
// rows are bounded by its source: the planner threshold judges them).
std::optional<WriteEffect> self_upsert_effect(const PgQuery__InsertStmt* s) {
  const PgQuery__OnConflictClause* oc = s->on_conflict_clause;
  if (!oc || oc->action != PG_QUERY__ON_CONFLICT_ACTION__ONCONFLICT_UPDATE || !s->relation ||
      !s->select_stmt || s->select_stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) {
    return std::nullopt;
  }
  const std::string verb = "INSERT ... ON CONFLICT DO UPDATE";
  const PgQuery__SelectStmt* sel = s->select_stmt->select_stmt;
  const std::string target = resolved(s->relation);
  for (size_t i = 0; i < sel->n_from_clause; ++i) {
    const PgQuery__Node* f = sel->from_clause[i];
    if (!f || f->node_case != PG_QUERY__NODE__NODE_RANGE_VAR || resolved(f->range_var) != target) {
      continue;
    }
    WriteEffect e = condition_effect(verb, f->range_var, sel->where_clause);
    if (oc->where_clause) {
      WriteEffect guard = condition_effect(verb, s->relation, oc->where_clause);
      e.uses_literals |= guard.uses_literals;
      if (guard.reach == WriteReach::kRestricted) e.reach = WriteReach::kRestricted;
    }
    return e;
  }
  return std::nullopt;
}

// --- bind parameters that choose rows --------------------------------------------------

int count_params(const ProtobufCMessage* m, int depth) {
  if (!m || depth > kMaxDepth) return 0;
  if (m->descriptor == &pg_query__param_ref__descriptor) return 1;
  int n = 0;
  for_each_child(m, [&](const ProtobufCMessage* c) { n += count_params(c, depth + 1); });
  return n;
}

const PgQuery__Node* without_casts(const PgQuery__Node* n) {
  while (n && n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST && n->type_cast) n = n->type_cast->arg;
  return n;
}

// `column = $n` (either side, casts allowed): whatever $n is, it chooses the rows holding one
// value, which the generic plan estimates from the column's statistics.
bool column_equals_param(const PgQuery__Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_A_EXPR) return false;
  const PgQuery__AExpr* e = n->a_expr;
  if (e->kind != PG_QUERY__A__EXPR__KIND__AEXPR_OP || last_name(e->name, e->n_name) != "=") {
    return false;
  }
  const PgQuery__Node* l = without_casts(e->lexpr);
  const PgQuery__Node* r = without_casts(e->rexpr);
  auto is = [](const PgQuery__Node* x, PgQuery__Node__NodeCase c) {
    return x && x->node_case == c;
  };
  return (is(l, PG_QUERY__NODE__NODE_COLUMN_REF) && is(r, PG_QUERY__NODE__NODE_PARAM_REF)) ||
         (is(l, PG_QUERY__NODE__NODE_PARAM_REF) && is(r, PG_QUERY__NODE__NODE_COLUMN_REF));
}

// Parameters of a condition outside its top-level `column = $n` conjuncts.
int free_params(const PgQuery__Node* cond, int depth) {
  if (!cond || depth > kMaxDepth) return 0;
  if (cond->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
      cond->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
    int n = 0;
    for (size_t i = 0; i < cond->bool_expr->n_args; ++i) {
      n += free_params(cond->bool_expr->args[i], depth + 1);
    }
    return n;
  }
  return column_equals_param(cond) ? 0 : count_params(msg(cond), depth);
}

int free_params_in(PgQuery__Node* const* items, size_t n) {
  int count = 0;
  for (size_t i = 0; i < n; ++i) count += count_params(msg(items[i]), 0);
  return count;
}

// A MERGE source whose parameters only fill a VALUES list: as many rows whatever the values.
int free_params_of_merge_source(const PgQuery__Node* source) {
  if (source && source->node_case == PG_QUERY__NODE__NODE_RANGE_SUBSELECT &&
      source->range_subselect->subquery &&
      source->range_subselect->subquery->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
    const PgQuery__SelectStmt* v = source->range_subselect->subquery->select_stmt;
    if (v->n_values_lists > 0 && v->n_from_clause == 0 && !v->where_clause && !v->larg &&
        !v->with_clause) {
      return 0;
    }
  }
  return count_params(msg(source), 0);
}

void collect(const ProtobufCMessage* m, int depth, std::vector<WriteEffect>* out) {
  if (!m || depth > kMaxDepth) return;
  const ProtobufCMessageDescriptor* d = m->descriptor;
  if (d == &pg_query__explain_stmt__descriptor || d == &pg_query__prepare_stmt__descriptor ||
      d == &pg_query__create_function_stmt__descriptor) {
    return;
  }
  if (collect_utility(m, out)) return;
  if (d == &pg_query__update_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__UpdateStmt*>(m);
    out->push_back(condition_effect("UPDATE", s->relation, s->where_clause));
    const int params = free_params(s->where_clause, 0) +
                       free_params_in(s->from_clause, s->n_from_clause) +
                       count_params(msg(s->with_clause), 0);
    out->back().parameters_choose_rows = params > 0;
  } else if (d == &pg_query__delete_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__DeleteStmt*>(m);
    out->push_back(condition_effect("DELETE", s->relation, s->where_clause));
    const int params = free_params(s->where_clause, 0) +
                       free_params_in(s->using_clause, s->n_using_clause) +
                       count_params(msg(s->with_clause), 0);
    out->back().parameters_choose_rows = params > 0;
  } else if (d == &pg_query__merge_stmt__descriptor) {
    const auto* s = reinterpret_cast<const PgQuery__MergeStmt*>(m);
    out->push_back(condition_effect("MERGE", s->relation, s->join_condition));
    if (!s->join_condition) out->back().reach = WriteReach::kWhereAbsent;
    const int params = free_params(s->join_condition, 0) +
                       free_params_of_merge_source(s->source_relation) +
                       count_params(msg(s->with_clause), 0);
    out->back().parameters_choose_rows = params > 0;
  } else if (d == &pg_query__insert_stmt__descriptor) {
    if (auto e = self_upsert_effect(reinterpret_cast<const PgQuery__InsertStmt*>(m))) {
      out->push_back(std::move(*e));
    }
  } else if (d == &pg_query__func_call__descriptor) {
    const std::string_view lo = large_object_loss(reinterpret_cast<const PgQuery__FuncCall*>(m));
    if (!lo.empty()) {
      out->push_back(
          WriteEffect{std::string(lo) + "()", "a large object", WriteReach::kDrop, false});
    }
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
    case WriteReach::kWhereTautology:
      return "where_tautology";
    case WriteReach::kTruncate:
      return "truncate";
    case WriteReach::kDrop:
      return "drop";
    case WriteReach::kUnknownEffect:
      return "unknown_effect";
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
    case WriteReach::kWhereTautology:
      return verb + " on " + relation + " has a " + clause +
             " that holds for every row (but those with NULL in what it compares): it changes "
             "every row";
    case WriteReach::kTruncate:
      return "TRUNCATE removes every row of " + relation;
    case WriteReach::kDrop:
      if (verb == "ALTER TABLE ... ALTER COLUMN ... TYPE") {
        return verb + " on " + relation +
               " rewrites every stored value of the column (USING may compute anything, a "
               "narrower type rounds or truncates)";
      }
      if (verb == "ALTER TABLE ... DETACH PARTITION" || verb == "ALTER TABLE ... NO INHERIT") {
        return verb + " on " + relation +
               " takes the partition's (child's) rows out of the table: they vanish from it";
      }
      if (verb == "ALTER TABLE ... SET UNLOGGED") {
        return verb + " on " + relation +
               " takes its rows out of the WAL: a crash empties the table, and standbys and "
               "restores from WAL archives lose them";
      }
      if (verb == "REFRESH MATERIALIZED VIEW ... WITH NO DATA") {
        return verb + " on " + relation +
               " empties the materialized view: its rows are gone until the next REFRESH";
      }
      if (verb.ends_with("()")) {
        return verb + " destroys or overwrites the stored contents of " + relation;
      }
      if (verb == "DROP OWNED BY") {
        return "DROP OWNED BY " + relation +
               " drops every table (and other object) the role owns: stored data is destroyed";
      }
      return verb + " on " + relation +
             " destroys stored data (every row, or with CASCADE whatever depends on it)";
    case WriteReach::kUnknownEffect:
      if (verb == "DO") {
        return "DO runs a code block pgwarden cannot analyse: what it changes is unknown";
      }
      if (verb == "DROP TRIGGER" || verb == "DROP RULE") {
        return verb + " " + relation +
               " removes code that ran on every later write of its table (it may have guarded "
               "the table: a trigger refusing deletes, an audit trigger)";
      }
      if (verb.starts_with("ALTER TABLE ... ENABLE") ||
          verb.starts_with("ALTER TABLE ... DISABLE")) {
        return verb + " on " + relation +
               " changes which trigger or rule code runs on every later write (a disabled "
               "trigger may have guarded the table, foreign keys included; an enabled one runs "
               "code pgwarden cannot analyse)";
      }
      return verb + " on " + relation +
             " installs code that runs on later writes, which pgwarden cannot analyse";
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
    case ConditionReach::kTautology:
      return "tautology";
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
    ConditionReader reader("t", "public.t");
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
