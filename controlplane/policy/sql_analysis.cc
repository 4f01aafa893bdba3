#include "controlplane/policy/sql_analysis.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <initializer_list>

namespace pgwarden::policy {
namespace {

constexpr std::array<std::string_view, 34> kKindNames = {
#define PGW_KIND_NAME(id, name) name,
    PGW_STATEMENT_KINDS(PGW_KIND_NAME)
#undef PGW_KIND_NAME
};

// Parse trees deeper than this are refused (fail closed) instead of risking the stack.
constexpr int kMaxWalkDepth = 2000;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view str(const char* s) { return s ? std::string_view(s) : std::string_view(); }

// Text of an A_Const (or a TypeCast of one, e.g. INTERVAL '1 day'); "?" when not constant.
std::string const_text(const PgQuery__Node* n) {
  if (!n) return "?";
  if (n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST && n->type_cast->arg) {
    return const_text(n->type_cast->arg);
  }
  if (n->node_case == PG_QUERY__NODE__NODE_STRING) return std::string(str(n->string->sval));
  if (n->node_case == PG_QUERY__NODE__NODE_INTEGER) return std::to_string(n->integer->ival);
  if (n->node_case == PG_QUERY__NODE__NODE_BOOLEAN) {
    return n->boolean->boolval ? "true" : "false";
  }
  if (n->node_case != PG_QUERY__NODE__NODE_A_CONST) return "?";
  const PgQuery__AConst* c = n->a_const;
  if (c->isnull) return "null";
  switch (c->val_case) {
    case PG_QUERY__A__CONST__VAL_IVAL:
      return std::to_string(c->ival ? c->ival->ival : 0);
    case PG_QUERY__A__CONST__VAL_FVAL:
      return c->fval ? std::string(str(c->fval->fval)) : "?";
    case PG_QUERY__A__CONST__VAL_BOOLVAL:
      return c->boolval && c->boolval->boolval ? "true" : "false";
    case PG_QUERY__A__CONST__VAL_SVAL:
      return c->sval ? std::string(str(c->sval->sval)) : "?";
    case PG_QUERY__A__CONST__VAL_BSVAL:
      return c->bsval ? std::string(str(c->bsval->bsval)) : "?";
    default:
      return "?";
  }
}

// Joins String nodes of a name list ("schema", "name") into a RelationRef/FunctionRef pair.
bool name_list(PgQuery__Node* const* items, size_t n, std::string* schema, std::string* name) {
  std::vector<std::string_view> parts;
  for (size_t i = 0; i < n; ++i) {
    if (!items[i] || items[i]->node_case != PG_QUERY__NODE__NODE_STRING) return false;
    parts.push_back(str(items[i]->string->sval));
  }
  if (parts.empty()) return false;
  *name = std::string(parts.back());
  *schema = parts.size() >= 2 ? std::string(parts[parts.size() - 2]) : std::string();
  return true;
}

template <typename T>
void add_unique(std::vector<T>* v, T item) {
  if (std::find(v->begin(), v->end(), item) == v->end()) v->push_back(std::move(item));
}

// Walks one statement's protobuf parse tree. Generic traversal goes through protobuf-c
// descriptors, so every node type is visited; the node types that matter for policy get
// dedicated handlers.
class Walker {
 public:
  explicit Walker(StatementAnalysis* out) : out_(out) {}

  // Returns false when the tree was too deep to analyse.
  bool run(const PgQuery__Node* stmt) {
    classify_and_walk(stmt);
    if (!too_deep_) out_->write_effects = find_write_effects(stmt);
    if (locks_rows_) add_unique(&out_->nested_kinds, StatementKind::kSelectForUpdate);
    // The statement's own kind is not "nested".
    std::erase(out_->nested_kinds, out_->kind);
    return !too_deep_;
  }

 private:
  enum class Role { kRead, kWrite };
  struct FromEntry {
    std::string name;  // alias, or the relation's own name
    RelationRef relation;
    bool base = false;  // a real relation (not a subquery, function or CTE)
  };

  // --- generic traversal -------------------------------------------------------------

  void walk(const ProtobufCMessage* m) {
    if (!m) return;
    if (++depth_ > kMaxWalkDepth) {
      too_deep_ = true;
      --depth_;
      return;
    }
    if (!too_deep_) dispatch(m);
    --depth_;
  }

  void walk(const PgQuery__Node* n) { walk(reinterpret_cast<const ProtobufCMessage*>(n)); }

  // Visits every message-typed field of m except those at the given offsets.
  void walk_fields(const ProtobufCMessage* m, std::initializer_list<size_t> skip = {}) {
    const ProtobufCMessageDescriptor* d = m->descriptor;
    const char* base = reinterpret_cast<const char*>(m);
    for (unsigned i = 0; i < d->n_fields; ++i) {
      const ProtobufCFieldDescriptor& f = d->fields[i];
      if (f.type != PROTOBUF_C_TYPE_MESSAGE) continue;
      if (std::find(skip.begin(), skip.end(), static_cast<size_t>(f.offset)) != skip.end()) {
        continue;
      }
      if (f.label == PROTOBUF_C_LABEL_REPEATED) {
        size_t count = *reinterpret_cast<const size_t*>(base + f.quantifier_offset);
        auto* items = *reinterpret_cast<ProtobufCMessage* const* const*>(base + f.offset);
        for (size_t k = 0; k < count && items; ++k) walk(items[k]);
        continue;
      }
      if (f.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t which = *reinterpret_cast<const uint32_t*>(base + f.quantifier_offset);
        if (which != f.id) continue;
      }
      walk(*reinterpret_cast<ProtobufCMessage* const*>(base + f.offset));
    }
  }

  template <typename T>
  static const ProtobufCMessage* msg(const T* p) {
    return reinterpret_cast<const ProtobufCMessage*>(p);
  }

  void dispatch(const ProtobufCMessage* m) {
    const ProtobufCMessageDescriptor* d = m->descriptor;
    if (d == &pg_query__range_var__descriptor) {
      range_var(reinterpret_cast<const PgQuery__RangeVar*>(m), role_);
    } else if (d == &pg_query__select_stmt__descriptor) {
      select_stmt(reinterpret_cast<const PgQuery__SelectStmt*>(m));
    } else if (d == &pg_query__insert_stmt__descriptor) {
      insert_stmt(reinterpret_cast<const PgQuery__InsertStmt*>(m));
    } else if (d == &pg_query__update_stmt__descriptor) {
      update_stmt(reinterpret_cast<const PgQuery__UpdateStmt*>(m));
    } else if (d == &pg_query__delete_stmt__descriptor) {
      delete_stmt(reinterpret_cast<const PgQuery__DeleteStmt*>(m));
    } else if (d == &pg_query__merge_stmt__descriptor) {
      merge_stmt(reinterpret_cast<const PgQuery__MergeStmt*>(m));
    } else if (d == &pg_query__func_call__descriptor) {
      func_call(reinterpret_cast<const PgQuery__FuncCall*>(m));
    } else if (d == &pg_query__column_ref__descriptor) {
      column_ref(reinterpret_cast<const PgQuery__ColumnRef*>(m), /*in_expression=*/true);
    } else if (d == &pg_query__locking_clause__descriptor) {
      locks_rows_ = true;
      walk_fields(m);
    } else {
      walk_fields(m);
    }
  }

  // --- relations, CTE scopes, FROM scopes -------------------------------------------

  bool is_cte_name(std::string_view name) const {
    for (const auto& scope : cte_scopes_) {
      if (std::find(scope.begin(), scope.end(), name) != scope.end()) return true;
    }
    return false;
  }

  static RelationRef relation_of(const PgQuery__RangeVar* rv) {
    return RelationRef{std::string(str(rv->schemaname)), std::string(str(rv->relname))};
  }

  // A relation named in a FROM list or a utility statement. Unqualified names that match a
  // visible CTE are not relations.
  void range_var(const PgQuery__RangeVar* rv, Role role) {
    if (!rv || str(rv->relname).empty()) return;
    if (str(rv->schemaname).empty() && is_cte_name(str(rv->relname))) return;
    add_relation(relation_of(rv), role);
  }

  void add_relation(RelationRef r, Role role) {
    add_unique(role == Role::kWrite ? &out_->relations_written : &out_->relations_read,
               std::move(r));
  }

  // The target of INSERT/UPDATE/DELETE/MERGE: always a real relation (never a CTE).
  void write_target(const PgQuery__RangeVar* rv) {
    if (rv && !str(rv->relname).empty()) add_relation(relation_of(rv), Role::kWrite);
  }

  // Pushes a CTE scope and walks the CTE bodies. Non-recursive WITH: each body sees only
  // the CTEs before it (so `WITH t AS (SELECT * FROM t)` reads the real table t).
  void push_with(const PgQuery__WithClause* with) {
    cte_scopes_.emplace_back();
    if (!with) return;
    const size_t scope = cte_scopes_.size() - 1;
    if (with->recursive) {
      for (size_t i = 0; i < with->n_ctes; ++i) {
        const PgQuery__Node* n = with->ctes[i];
        if (n && n->node_case == PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR) {
          cte_scopes_[scope].push_back(std::string(str(n->common_table_expr->ctename)));
        }
      }
    }
    for (size_t i = 0; i < with->n_ctes; ++i) {
      const PgQuery__Node* n = with->ctes[i];
      if (!n || n->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR) continue;
      const PgQuery__CommonTableExpr* cte = n->common_table_expr;
      Role saved = role_;
      role_ = Role::kRead;
      walk(cte->ctequery);
      role_ = saved;
      if (!with->recursive) cte_scopes_[scope].push_back(std::string(str(cte->ctename)));
    }
  }
  void pop_with() { cte_scopes_.pop_back(); }

  void collect_from(const PgQuery__Node* n, std::vector<FromEntry>* scope) const {
    if (!n) return;
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_RANGE_VAR: {
        const PgQuery__RangeVar* rv = n->range_var;
        FromEntry e;
        e.relation = relation_of(rv);
        e.name = rv->alias && !str(rv->alias->aliasname).empty() ? std::string(rv->alias->aliasname)
                                                                 : e.relation.name;
        e.base = !(e.relation.schema.empty() && is_cte_name(e.relation.name));
        if (!e.base) e.relation = RelationRef{};
        scope->push_back(std::move(e));
        break;
      }
      case PG_QUERY__NODE__NODE_JOIN_EXPR:
        collect_from(n->join_expr->larg, scope);
        collect_from(n->join_expr->rarg, scope);
        break;
      case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        const PgQuery__Alias* a = n->range_subselect->alias;
        scope->push_back(FromEntry{a ? std::string(str(a->aliasname)) : "", {}, false});
        break;
      }
      case PG_QUERY__NODE__NODE_RANGE_FUNCTION: {
        const PgQuery__Alias* a = n->range_function->alias;
        scope->push_back(FromEntry{a ? std::string(str(a->aliasname)) : "", {}, false});
        break;
      }
      default:
        scope->push_back(FromEntry{});
        break;
    }
  }

  void push_from(PgQuery__Node* const* items, size_t n, const PgQuery__RangeVar* target) {
    std::vector<FromEntry> scope;
    if (target) {
      FromEntry e;
      e.relation = relation_of(target);
      e.name = target->alias && !str(target->alias->aliasname).empty()
                   ? std::string(target->alias->aliasname)
                   : e.relation.name;
      e.base = true;
      scope.push_back(std::move(e));
    }
    for (size_t i = 0; i < n; ++i) collect_from(items[i], &scope);
    from_scopes_.push_back(std::move(scope));
  }
  void pop_from() { from_scopes_.pop_back(); }

  // --- statements ----------------------------------------------------------------------

  void select_stmt(const PgQuery__SelectStmt* s) {
    Role saved = role_;
    role_ = Role::kRead;
    push_with(s->with_clause);
    push_from(s->from_clause, s->n_from_clause, nullptr);
    if (s->into_clause && s->into_clause->rel)
      add_relation(relation_of(s->into_clause->rel), Role::kWrite);
    output_list(s->target_list, s->n_target_list);
    walk_fields(msg(s), {offsetof(PgQuery__SelectStmt, with_clause),
                         offsetof(PgQuery__SelectStmt, target_list),
                         offsetof(PgQuery__SelectStmt, into_clause)});
    pop_from();
    pop_with();
    role_ = saved;
  }

  // SELECT / RETURNING lists: a bare column is plain output, anything else an expression.
  void output_list(PgQuery__Node* const* items, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const PgQuery__Node* item = items[i];
      if (item && item->node_case == PG_QUERY__NODE__NODE_RES_TARGET && item->res_target->val &&
          item->res_target->val->node_case == PG_QUERY__NODE__NODE_COLUMN_REF) {
        column_ref(item->res_target->val->column_ref, /*in_expression=*/false);
        walk_fields(msg(item->res_target), {offsetof(PgQuery__ResTarget, val)});
      } else {
        walk(item);
      }
    }
  }

  void insert_stmt(const PgQuery__InsertStmt* s) {
    add_unique(&out_->nested_kinds, StatementKind::kInsert);
    Role saved = role_;
    role_ = Role::kRead;
    push_with(s->with_clause);
    write_target(s->relation);
    push_from(nullptr, 0, s->relation);
    output_list(s->returning_list, s->n_returning_list);
    walk_fields(
        msg(s),
        {offsetof(PgQuery__InsertStmt, with_clause), offsetof(PgQuery__InsertStmt, relation),
         offsetof(PgQuery__InsertStmt, returning_list), offsetof(PgQuery__InsertStmt, cols)});
    pop_from();
    pop_with();
    role_ = saved;
  }

  void update_stmt(const PgQuery__UpdateStmt* s) {
    add_unique(&out_->nested_kinds, StatementKind::kUpdate);
    Role saved = role_;
    role_ = Role::kRead;
    push_with(s->with_clause);
    write_target(s->relation);
    push_from(s->from_clause, s->n_from_clause, s->relation);
    output_list(s->returning_list, s->n_returning_list);
    walk_fields(msg(s), {offsetof(PgQuery__UpdateStmt, with_clause),
                         offsetof(PgQuery__UpdateStmt, relation),
                         offsetof(PgQuery__UpdateStmt, returning_list)});
    pop_from();
    pop_with();
    role_ = saved;
  }

  void delete_stmt(const PgQuery__DeleteStmt* s) {
    add_unique(&out_->nested_kinds, StatementKind::kDelete);
    Role saved = role_;
    role_ = Role::kRead;
    push_with(s->with_clause);
    write_target(s->relation);
    push_from(s->using_clause, s->n_using_clause, s->relation);
    output_list(s->returning_list, s->n_returning_list);
    walk_fields(msg(s), {offsetof(PgQuery__DeleteStmt, with_clause),
                         offsetof(PgQuery__DeleteStmt, relation),
                         offsetof(PgQuery__DeleteStmt, returning_list)});
    pop_from();
    pop_with();
    role_ = saved;
  }

  void merge_stmt(const PgQuery__MergeStmt* s) {
    add_unique(&out_->nested_kinds, StatementKind::kMerge);
    Role saved = role_;
    role_ = Role::kRead;
    push_with(s->with_clause);
    write_target(s->relation);
    PgQuery__Node* source[1] = {s->source_relation};
    push_from(source, s->source_relation ? 1 : 0, s->relation);
    walk_fields(msg(s), {offsetof(PgQuery__MergeStmt, with_clause),
                         offsetof(PgQuery__MergeStmt, relation)});
    pop_from();
    pop_with();
    role_ = saved;
  }

  // --- expressions -----------------------------------------------------------------------

  void func_call(const PgQuery__FuncCall* f) {
    FunctionRef ref;
    if (name_list(f->funcname, f->n_funcname, &ref.schema, &ref.name)) {
      if (ref.name == "set_config" && (ref.schema.empty() || ref.schema == "pg_catalog")) {
        SettingChange change{"*", "?"};
        if (f->n_args >= 1) {
          std::string p = const_text(f->args[0]);
          change.parameter = p == "?" ? "*" : lower(p);
        }
        if (f->n_args >= 2) change.value = const_text(f->args[1]);
        add_unique(&out_->settings, std::move(change));
      }
      add_unique(&out_->functions, std::move(ref));
    }
    walk_fields(msg(f));
  }

  void column_ref(const PgQuery__ColumnRef* c, bool in_expression) {
    std::vector<std::string_view> parts;
    for (size_t i = 0; i < c->n_fields; ++i) {
      const PgQuery__Node* n = c->fields[i];
      if (!n) return;
      if (n->node_case == PG_QUERY__NODE__NODE_STRING) {
        parts.push_back(str(n->string->sval));
      } else if (n->node_case == PG_QUERY__NODE__NODE_A_STAR) {
        parts.push_back("*");
      } else {
        return;
      }
    }
    if (parts.empty()) return;
    ColumnUse use;
    use.column = std::string(parts.back());
    use.in_expression = in_expression;
    if (parts.size() >= 3) {
      use.relation =
          RelationRef{std::string(parts[parts.size() - 3]), std::string(parts[parts.size() - 2])};
    } else if (parts.size() == 2) {
      use.relation = resolve_qualifier(parts[0]);
    } else if (!from_scopes_.empty() && from_scopes_.back().size() == 1 &&
               from_scopes_.back()[0].base) {
      use.relation = from_scopes_.back()[0].relation;
    }
    add_unique(&out_->columns, std::move(use));
  }

  RelationRef resolve_qualifier(std::string_view q) const {
    for (auto it = from_scopes_.rbegin(); it != from_scopes_.rend(); ++it) {
      for (const FromEntry& e : *it) {
        if (e.name == q) return e.base ? e.relation : RelationRef{};
      }
    }
    return RelationRef{};
  }

  // --- statement classification ------------------------------------------------------

  void set_kind(StatementKind kind) { out_->kind = kind; }

  static std::string_view node_name(const PgQuery__Node* n) {
    // The oneof member is a message whose descriptor's short name is the node type.
    const ProtobufCMessageDescriptor* d = n->base.descriptor;
    for (unsigned i = 0; i < d->n_fields; ++i) {
      const ProtobufCFieldDescriptor& f = d->fields[i];
      if (f.id == static_cast<uint32_t>(n->node_case) && f.type == PROTOBUF_C_TYPE_MESSAGE) {
        return str(static_cast<const ProtobufCMessageDescriptor*>(f.descriptor)->short_name);
      }
    }
    return "Unknown";
  }

  void classify_and_walk(const PgQuery__Node* n) {
    if (!n) return;
    out_->node = std::string(node_name(n));
    role_ = Role::kRead;
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_SELECT_STMT:
        walk(n);
        if (n->select_stmt->into_clause) {
          set_kind(StatementKind::kDdlCreate);
        } else {
          set_kind(locks_rows_ ? StatementKind::kSelectForUpdate : StatementKind::kSelect);
        }
        return;
      case PG_QUERY__NODE__NODE_INSERT_STMT:
        set_kind(StatementKind::kInsert);
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_UPDATE_STMT:
        set_kind(StatementKind::kUpdate);
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_DELETE_STMT:
        set_kind(StatementKind::kDelete);
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_MERGE_STMT:
        set_kind(StatementKind::kMerge);
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_COPY_STMT:
        copy_stmt(n->copy_stmt);
        return;
      case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
        variable_set(n->variable_set_stmt);
        return;
      case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
        set_kind(StatementKind::kShow);
        out_->detail = lower(str(n->variable_show_stmt->name));
        return;
      case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
        transaction_stmt(n->transaction_stmt);
        return;
      case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
        explain_stmt(n->explain_stmt);
        return;
      case PG_QUERY__NODE__NODE_PREPARE_STMT: {
        set_kind(StatementKind::kPrepare);
        out_->prepared_name = std::string(str(n->prepare_stmt->name));
        merge_inner(n->prepare_stmt->query, /*executed=*/true);
        return;
      }
      case PG_QUERY__NODE__NODE_EXECUTE_STMT:
        set_kind(StatementKind::kExecute);
        out_->prepared_name = std::string(str(n->execute_stmt->name));
        walk(n);  // parameters may call functions
        return;
      case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
        set_kind(StatementKind::kDeallocate);
        out_->prepared_name = std::string(str(n->deallocate_stmt->name));
        return;
      case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
        // DECLARE c CURSOR FOR <query>: the query decides.
        walk(n->declare_cursor_stmt->query);
        set_kind(locks_rows_ ? StatementKind::kSelectForUpdate : StatementKind::kSelect);
        out_->detail = "declare_cursor";
        return;
      case PG_QUERY__NODE__NODE_FETCH_STMT:
      case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
        // Reads from a cursor whose DECLARE was evaluated.
        set_kind(StatementKind::kSelect);
        out_->detail = "cursor";
        return;
      case PG_QUERY__NODE__NODE_DO_STMT:
        set_kind(StatementKind::kDo);
        return;
      case PG_QUERY__NODE__NODE_CALL_STMT:
        set_kind(StatementKind::kCall);
        role_ = Role::kWrite;
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_CREATE_FUNCTION_STMT:
        set_kind(StatementKind::kCreateFunction);
        role_ = Role::kWrite;
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_LISTEN_STMT:
      case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
        set_kind(StatementKind::kListen);
        return;
      case PG_QUERY__NODE__NODE_NOTIFY_STMT:
        set_kind(StatementKind::kNotify);
        return;
      case PG_QUERY__NODE__NODE_VACUUM_STMT:
        set_kind(n->vacuum_stmt->is_vacuumcmd ? StatementKind::kVacuum : StatementKind::kAnalyze);
        role_ = Role::kWrite;
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_LOCK_STMT:
        set_kind(StatementKind::kLock);
        role_ = Role::kWrite;
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_DISCARD_STMT: {
        set_kind(StatementKind::kDiscard);
        static constexpr std::array<std::string_view, 5> kTargets = {"", "all", "plans",
                                                                     "sequences", "temp"};
        int t = n->discard_stmt->target;
        out_->detail = std::string(t >= 0 && t < 5 ? kTargets[t] : "");
        return;
      }
      case PG_QUERY__NODE__NODE_TRUNCATE_STMT:
        set_kind(StatementKind::kTruncate);
        role_ = Role::kWrite;
        walk(n);
        return;
      case PG_QUERY__NODE__NODE_DROP_STMT:
        set_kind(StatementKind::kDdlDrop);
        drop_stmt(n->drop_stmt);
        return;
      default:
        break;
    }
    set_kind(utility_kind(out_->node));
    // DDL and other utilities: every relation they name counts as written (fail closed);
    // queries inside them (CREATE VIEW ... AS SELECT) switch back to read.
    role_ = Role::kWrite;
    walk(n);
  }

  static StatementKind utility_kind(std::string_view node) {
    static constexpr std::array<std::string_view, 10> kGrant = {
        "GrantStmt",      "GrantRoleStmt", "AlterDefaultPrivilegesStmt",
        "CreateRoleStmt", "AlterRoleStmt", "AlterRoleSetStmt",
        "DropRoleStmt",   "DropOwnedStmt", "ReassignOwnedStmt",
        "AlterPolicyStmt"};
    static constexpr std::array<std::string_view, 7> kCreate = {
        "ViewStmt", "IndexStmt",    "DefineStmt",       "CompositeTypeStmt",
        "RuleStmt", "CreatedbStmt", "CreateTableAsStmt"};
    static constexpr std::array<std::string_view, 8> kAlter = {"RenameStmt",
                                                               "CommentStmt",
                                                               "SecLabelStmt",
                                                               "AlterOwnerStmt",
                                                               "AlterObjectSchemaStmt",
                                                               "RefreshMatViewStmt",
                                                               "ClusterStmt",
                                                               "ReindexStmt"};
    auto in = [&](const auto& list) {
      return std::find(list.begin(), list.end(), node) != list.end();
    };
    if (node == "AlterPolicyStmt") return StatementKind::kDdlAlter;
    if (in(kGrant)) return StatementKind::kGrant;
    if (node == "AlterSystemStmt") return StatementKind::kOther;
    if (in(kCreate) || node.starts_with("Create")) return StatementKind::kDdlCreate;
    if (in(kAlter) || node.starts_with("Alter")) return StatementKind::kDdlAlter;
    if (node.starts_with("Drop")) return StatementKind::kDdlDrop;
    return StatementKind::kOther;
  }

  void drop_stmt(const PgQuery__DropStmt* d) {
    switch (d->remove_type) {
      case PG_QUERY__OBJECT_TYPE__OBJECT_TABLE:
      case PG_QUERY__OBJECT_TYPE__OBJECT_VIEW:
      case PG_QUERY__OBJECT_TYPE__OBJECT_MATVIEW:
      case PG_QUERY__OBJECT_TYPE__OBJECT_SEQUENCE:
      case PG_QUERY__OBJECT_TYPE__OBJECT_INDEX:
      case PG_QUERY__OBJECT_TYPE__OBJECT_FOREIGN_TABLE:
        break;
      default:
        return;
    }
    for (size_t i = 0; i < d->n_objects; ++i) {
      const PgQuery__Node* o = d->objects[i];
      if (!o || o->node_case != PG_QUERY__NODE__NODE_LIST) continue;
      RelationRef r;
      if (name_list(o->list->items, o->list->n_items, &r.schema, &r.name)) {
        add_relation(std::move(r), Role::kWrite);
      }
    }
  }

  void copy_stmt(const PgQuery__CopyStmt* c) {
    out_->copy_direction = c->is_from ? CopyDirection::kFrom : CopyDirection::kTo;
    out_->copy_target = std::string(str(c->filename));
    if (c->is_program) {
      set_kind(StatementKind::kCopyProgram);
    } else if (!out_->copy_target.empty()) {
      set_kind(StatementKind::kCopyFile);
    } else {
      set_kind(c->is_from ? StatementKind::kCopyFromStdin : StatementKind::kCopyToStdout);
    }
    if (c->relation) {
      out_->copy_relation = relation_of(c->relation);
      add_relation(out_->copy_relation, c->is_from ? Role::kWrite : Role::kRead);
    }
    out_->copy_query = c->query != nullptr;
    for (size_t i = 0; i < c->n_attlist; ++i) {
      const PgQuery__Node* a = c->attlist[i];
      if (a && a->node_case == PG_QUERY__NODE__NODE_STRING) {
        out_->copy_columns.emplace_back(str(a->string->sval));
      }
    }
    for (size_t i = 0; i < c->n_options; ++i) {
      const PgQuery__Node* o = c->options[i];
      if (!o || o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) continue;
      const PgQuery__DefElem* d = o->def_elem;
      CopyOption opt{lower(str(d->defname)), "", true};
      if (d->arg != nullptr) {
        bool list = d->arg->node_case == PG_QUERY__NODE__NODE_LIST ||
                    d->arg->node_case == PG_QUERY__NODE__NODE_A_STAR;
        opt.constant = !list;
        if (!list) opt.value = const_text(d->arg);
      }
      out_->copy_options.push_back(std::move(opt));
    }
    role_ = Role::kRead;
    walk_fields(msg(c), {offsetof(PgQuery__CopyStmt, relation)});
  }

  static std::string transaction_mode(const PgQuery__DefElem* d) {
    std::string_view name = str(d->defname);
    std::string value = const_text(d->arg);
    if (name == "transaction_read_only") return value == "0" ? "read write" : "read only";
    if (name == "transaction_deferrable") return value == "0" ? "not deferrable" : "deferrable";
    if (name == "transaction_isolation") return "isolation level " + value;
    return std::string(name);
  }

  // DefElem transaction options as modes and setting changes (read only / read write).
  void transaction_options(PgQuery__Node* const* items, size_t n, std::string_view param_prefix) {
    for (size_t i = 0; i < n; ++i) {
      const PgQuery__Node* o = items[i];
      if (!o || o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) continue;
      const PgQuery__DefElem* d = o->def_elem;
      out_->transaction_modes.push_back(transaction_mode(d));
      std::string value = const_text(d->arg);
      if (str(d->defname) == "transaction_read_only" ||
          str(d->defname) == "transaction_deferrable") {
        value = value == "0" ? "off" : "on";
      }
      add_unique(&out_->settings,
                 SettingChange{std::string(param_prefix) + std::string(str(d->defname)), value});
    }
  }

  void variable_set(const PgQuery__VariableSetStmt* v) {
    std::string name = lower(str(v->name));
    switch (v->kind) {
      case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
        set_kind(StatementKind::kReset);
        add_unique(&out_->settings, SettingChange{name, ""});
        return;
      case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
        set_kind(StatementKind::kReset);
        add_unique(&out_->settings, SettingChange{"*", ""});
        return;
      case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI:
        set_kind(StatementKind::kSet);
        // SET TRANSACTION ... / SET SESSION CHARACTERISTICS AS TRANSACTION ...
        transaction_options(v->args, v->n_args,
                            name == "session characteristics" ? "default_" : "");
        out_->detail = name;
        return;
      case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT:
        set_kind(StatementKind::kSet);
        add_unique(&out_->settings, SettingChange{name, ""});
        return;
      default: {
        set_kind(StatementKind::kSet);
        std::string value;
        for (size_t i = 0; i < v->n_args; ++i) {
          if (i) value += ", ";
          value += const_text(v->args[i]);
        }
        if (v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_CURRENT) value = "?";
        add_unique(&out_->settings, SettingChange{name, value});
        return;
      }
    }
  }

  void transaction_stmt(const PgQuery__TransactionStmt* t) {
    set_kind(StatementKind::kTransaction);
    switch (t->kind) {
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
        out_->transaction_action = "begin";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
        out_->transaction_action = "start";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
        out_->transaction_action = "commit";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
        out_->transaction_action = "rollback";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
        out_->transaction_action = "savepoint";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
        out_->transaction_action = "release";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
        out_->transaction_action = "rollback_to";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
        out_->transaction_action = "prepare_transaction";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT_PREPARED:
        out_->transaction_action = "commit_prepared";
        break;
      case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_PREPARED:
        out_->transaction_action = "rollback_prepared";
        break;
      default:
        out_->transaction_action = "other";
        break;
    }
    transaction_options(t->options, t->n_options, "");
  }

  void explain_stmt(const PgQuery__ExplainStmt* e) {
    bool analyze = false;
    for (size_t i = 0; i < e->n_options; ++i) {
      const PgQuery__Node* o = e->options[i];
      if (!o || o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM) continue;
      if (str(o->def_elem->defname) == "analyze") {
        std::string v = o->def_elem->arg ? lower(const_text(o->def_elem->arg)) : "true";
        analyze = !(v == "false" || v == "off" || v == "0" || v == "no");
      }
    }
    set_kind(analyze ? StatementKind::kExplainAnalyze : StatementKind::kExplain);
    merge_inner(e->query, analyze);
  }

  // Analyses an inner statement (EXPLAIN, PREPARE) and merges its lists into this one.
  void merge_inner(const PgQuery__Node* query, bool executed) {
    auto inner = std::make_shared<StatementAnalysis>();
    inner->text = inner_statement_text(out_->text);
    Walker w(inner.get());
    if (!w.run(query)) too_deep_ = true;
    for (const auto& r : inner->relations_read) add_unique(&out_->relations_read, r);
    for (const auto& r : inner->relations_written) {
      add_unique(executed ? &out_->relations_written : &out_->relations_read, r);
    }
    for (const auto& f : inner->functions) add_unique(&out_->functions, f);
    for (const auto& c : inner->columns) add_unique(&out_->columns, c);
    for (const auto& s : inner->settings) add_unique(&out_->settings, s);
    if (executed) {
      add_unique(&out_->nested_kinds, inner->kind);
      for (StatementKind k : inner->nested_kinds) add_unique(&out_->nested_kinds, k);
    }
    out_->inner = std::move(inner);
  }

  StatementAnalysis* out_;
  Role role_ = Role::kRead;
  std::vector<std::vector<std::string>> cte_scopes_;
  std::vector<std::vector<FromEntry>> from_scopes_;
  bool locks_rows_ = false;
  bool too_deep_ = false;
  int depth_ = 0;
};

std::string trimmed(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\n' || s[b] == '\t' || s[b] == '\r')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\n' || s[e - 1] == '\t' || s[e - 1] == '\r' ||
                   s[e - 1] == ';')) {
    --e;
  }
  return std::string(s.substr(b, e - b));
}

}  // namespace

std::string_view statement_kind_name(StatementKind kind) {
  size_t i = static_cast<size_t>(kind);
  return i < kKindNames.size() ? kKindNames[i] : "other";
}

std::optional<StatementKind> statement_kind_from_name(std::string_view name) {
  for (size_t i = 0; i < kKindNames.size(); ++i) {
    if (kKindNames[i] == name) return static_cast<StatementKind>(i);
  }
  return std::nullopt;
}

const std::vector<StatementKind>& all_statement_kinds() {
  static const std::vector<StatementKind> kAll = [] {
    std::vector<StatementKind> v;
    for (size_t i = 0; i < kKindNames.size(); ++i) v.push_back(static_cast<StatementKind>(i));
    return v;
  }();
  return kAll;
}

std::string RelationRef::resolved() const {
  if (!schema.empty()) return schema + "." + name;
  return (name.starts_with("pg_") ? "pg_catalog." : "public.") + name;
}

std::string FunctionRef::resolved() const {
  return (schema.empty() ? std::string("pg_catalog") : schema) + "." + name;
}

SqlAnalysis analyse_sql(std::string_view sql) { return analyse_sql(sql, nullptr); }

SqlAnalysis analyse_sql(std::string_view sql, LineageCatalog* catalog) {
  SqlAnalysis result;
  if (sql.size() > kMaxSqlBytes) {
    result.parse_error =
        ParseError{"statement text longer than " + std::to_string(kMaxSqlBytes) + " bytes", 0};
    return result;
  }
  if (sql.find('\0') != std::string_view::npos) {
    result.parse_error =
        ParseError{"statement text contains a NUL byte", static_cast<int>(sql.find('\0')) + 1};
    return result;
  }
  const std::string text(sql);
  PgQueryProtobufParseResult parsed = pg_query_parse_protobuf(text.c_str());
  if (parsed.error) {
    result.parse_error = ParseError{parsed.error->message ? parsed.error->message : "syntax error",
                                    parsed.error->cursorpos};
    pg_query_free_protobuf_parse_result(parsed);
    return result;
  }
  PgQuery__ParseResult* tree = pg_query__parse_result__unpack(
      nullptr, parsed.parse_tree.len, reinterpret_cast<const uint8_t*>(parsed.parse_tree.data));
  pg_query_free_protobuf_parse_result(parsed);
  if (!tree) {
    result.parse_error = ParseError{"parse tree could not be decoded", 0};
    return result;
  }
  for (size_t i = 0; i < tree->n_stmts; ++i) {
    const PgQuery__RawStmt* raw = tree->stmts[i];
    if (!raw || !raw->stmt) continue;
    StatementAnalysis st;
    size_t begin =
        std::min<size_t>(static_cast<size_t>(std::max(raw->stmt_location, 0)), sql.size());
    size_t len = raw->stmt_len > 0 ? static_cast<size_t>(raw->stmt_len) : sql.size() - begin;
    st.text = trimmed(sql.substr(begin, len));
    Walker walker(&st);
    if (!walker.run(raw->stmt)) {
      result.statements.clear();
      result.parse_error =
          ParseError{"statement is nested too deeply to analyse", static_cast<int>(begin) + 1};
      break;
    }
    if (catalog != nullptr) {
      auto lineage = std::make_shared<StatementLineage>(compute_lineage(raw->stmt, *catalog));
      st.lineage = lineage;
      if (st.inner) {
        auto inner = std::make_shared<StatementAnalysis>(*st.inner);
        inner->lineage = lineage;
        st.inner = std::move(inner);
      }
    }
    result.statements.push_back(std::move(st));
  }
  pg_query__parse_result__free_unpacked(tree, nullptr);
  return result;
}

}  // namespace pgwarden::policy
