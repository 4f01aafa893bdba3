#include "controlplane/policy/lineage.h"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <optional>

namespace pgwarden::policy {

void ColumnLineage::add_transformed(const ColumnLineage& other) {
  transformed.insert(other.as_is.begin(), other.as_is.end());
  transformed.insert(other.transformed.begin(), other.transformed.end());
}

void ColumnLineage::add(const ColumnLineage& other) {
  as_is.insert(other.as_is.begin(), other.as_is.end());
  transformed.insert(other.transformed.begin(), other.transformed.end());
  if (!other.as_is.empty() && other.origin_lost) origin_lost = true;
}

std::set<SourceColumn> ColumnLineage::all() const {
  std::set<SourceColumn> out = as_is;
  out.insert(transformed.begin(), transformed.end());
  return out;
}

namespace {

constexpr int kMaxDepth = 1000;

std::string_view str(const char* s) { return s ? std::string_view(s) : std::string_view(); }

// Schemas whose views are catalogs, not data: their columns are taken as they are (pgwarden
// does not look into information_schema or pg_catalog view definitions).
bool system_schema(std::string_view schema) {
  return schema == "pg_catalog" || schema == "information_schema";
}

// Catalog relations holding column statistics, i.e. sample values of any column.
bool statistics_view(std::string_view name) {
  return name == "pg_stats" || name == "pg_stats_ext" || name == "pg_stats_ext_exprs" ||
         name == "pg_statistic" || name == "pg_statistic_ext_data";
}

// pg_catalog functions that run a query given as text, or read a relation, cursor, schema or
// database named by an argument value, or read server files or the WAL: the lineage cannot see
// what they read (PostgreSQL 13-17).
bool query_text_function(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "query_to_xml",
      "query_to_xmlschema",
      "query_to_xml_and_xmlschema",
      "table_to_xml",
      "table_to_xmlschema",
      "table_to_xml_and_xmlschema",
      "cursor_to_xml",
      "cursor_to_xmlschema",
      "schema_to_xml",
      "schema_to_xmlschema",
      "schema_to_xml_and_xmlschema",
      "database_to_xml",
      "database_to_xmlschema",
      "database_to_xml_and_xmlschema",
      "ts_stat",
      "ts_rewrite",
      "pg_read_file",
      "pg_read_binary_file",
      "lo_import",
      "pg_logical_slot_get_changes",
      "pg_logical_slot_peek_changes",
      "pg_logical_slot_get_binary_changes",
      "pg_logical_slot_peek_binary_changes",
  };
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

bool is_node(const PgQuery__Node* n, PgQuery__Node__NodeCase c) {
  return n != nullptr && n->node_case == c;
}

template <typename T>
const ProtobufCMessage* msg(const T* p) {
  return reinterpret_cast<const ProtobufCMessage*>(p);
}

struct ScopeColumn {
  std::string name;
  ColumnLineage lineage;
};

// One entry of a FROM list (a relation, sub-select, CTE reference, function or join alias).
struct FromItem {
  std::string alias;                 // the name that qualifies its columns
  std::vector<std::string> schemas;  // base relations: candidate schemas
  std::string relname;               // base relations: the relation's own name
  std::vector<ScopeColumn> columns;  // in output order
  bool open = false;                 // columns unknown (functions): any name matches
  ColumnLineage open_lineage;        // what an open item's columns derive from
  bool qualified_only = false;       // a join alias: its columns are also in members
};
using Scope = std::vector<FromItem>;

struct Cte {
  std::string name;
  std::vector<OutputColumn> outputs;
  bool open = false;  // a recursive CTE's self-reference before its columns are known
};

class LineageWalker {
 public:
  LineageWalker(LineageCatalog& catalog, int view_depth, StatementLineage* out)
      : catalog_(catalog), view_depth_(view_depth), out_(out) {}

  void statement(const PgQuery__Node* n) {
    if (!n) return;
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_SELECT_STMT: {
        out_->outputs = select(n->select_stmt);
        if (n->select_stmt->into_clause) {
          out_->sink = "SELECT INTO";
          write_outputs(into_name(n->select_stmt->into_clause));
        }
        break;
      }
      case PG_QUERY__NODE__NODE_INSERT_STMT:
      case PG_QUERY__NODE__NODE_UPDATE_STMT:
      case PG_QUERY__NODE__NODE_DELETE_STMT:
      case PG_QUERY__NODE__NODE_MERGE_STMT:
        out_->outputs = query_node(n);
        break;
      case PG_QUERY__NODE__NODE_COPY_STMT:
        if (n->copy_stmt->query) {
          out_->outputs = query_node(n->copy_stmt->query);
          out_->sink = "COPY (query) TO";
        } else {
          copy_table_to_server(n->copy_stmt);
        }
        break;
      case PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT:
        out_->outputs = query_node(n->create_table_as_stmt->query);
        out_->sink = "CREATE TABLE AS";
        write_outputs(into_name(n->create_table_as_stmt->into));
        break;
      case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
        out_->outputs = query_node(n->declare_cursor_stmt->query);
        break;
      case PG_QUERY__NODE__NODE_PREPARE_STMT:
        statement(n->prepare_stmt->query);
        break;
      case PG_QUERY__NODE__NODE_EXECUTE_STMT:
        // EXECUTE p((SELECT ssn ...)): the prepared statement was checked with $1 standing for
        // a value of no source; it may return it (PostgreSQL reports no origin for a
        // parameter) or compute on it. Every source of an argument counts as computed on.
        // (PostgreSQL 15 refuses sub-selects there, 0A000; this does not rely on it.)
        for (size_t i = 0; i < n->execute_stmt->n_params; ++i) {
          ColumnLineage l = expression(n->execute_stmt->params[i]);
          for (const auto& src : l.all()) out_->computed.insert(src);
        }
        break;
      case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
        // EXPLAIN returns a plan, not rows; its predicates still count (ANALYZE shows row
        // counts) and so does what an executed statement writes.
        statement(n->explain_stmt->query);
        out_->outputs.clear();
        out_->sink.clear();
        break;
      case PG_QUERY__NODE__NODE_CALL_STMT:
        if (n->call_stmt->funccall) {
          ColumnLineage ignored;
          any(msg(n->call_stmt->funccall), &ignored);
        }
        break;
      case PG_QUERY__NODE__NODE_DO_STMT:
        out_->opaque_code = "DO";
        break;
      case PG_QUERY__NODE__NODE_VIEW_STMT: {
        // Decided like its SELECT, and what it shows counts as copied under the view's name:
        // verdicts cached (and statements prepared) for that name never checked its sources.
        out_->outputs = query_node(n->view_stmt->query);
        out_->sink = "CREATE VIEW";
        const PgQuery__RangeVar* v = n->view_stmt->view;
        std::string name = v ? std::string(str(v->relname)) : std::string();
        if (v && !str(v->schemaname).empty()) name = std::string(str(v->schemaname)) + "." + name;
        write_outputs(std::move(name));
        break;
      }
      case PG_QUERY__NODE__NODE_CREATE_FOREIGN_TABLE_STMT:
        // A foreign table reads a relation named in its options, possibly this database's
        // crm.customers through a loopback server, under a name no mask covers.
        out_->opaque_code = "CREATE FOREIGN TABLE";
        break;
      case PG_QUERY__NODE__NODE_IMPORT_FOREIGN_SCHEMA_STMT:
        out_->opaque_code = "IMPORT FOREIGN SCHEMA";
        break;
      case PG_QUERY__NODE__NODE_RULE_STMT:
        // A rule rewrites later statements (of any session) unseen.
        out_->opaque_code = "CREATE RULE";
        break;
      case PG_QUERY__NODE__NODE_CREATE_TRIG_STMT: {
        const PgQuery__CreateTrigStmt* t = n->create_trig_stmt;
        alter(t->relation, "CREATE TRIGGER");
        // The trigger function runs on every write of the table: as if called.
        function_reference(t->funcname, t->n_funcname);
        functions_in(msg(t));
        break;
      }
      case PG_QUERY__NODE__NODE_ALTER_TABLE_STMT: {
        const PgQuery__AlterTableStmt* a = n->alter_table_stmt;
        alter(a->relation, "ALTER TABLE");
        // ATTACH PARTITION t: t's rows are shown under the parent's name from then on, where
        // a mask on t's columns no longer matches (PostgreSQL reports the parent as their
        // origin). DETACH moves rows the other way.
        for (size_t i = 0; i < a->n_cmds; ++i) {
          const PgQuery__Node* c = a->cmds[i];
          if (!is_node(c, PG_QUERY__NODE__NODE_ALTER_TABLE_CMD)) continue;
          const PgQuery__Node* def = c->alter_table_cmd->def;
          if (is_node(def, PG_QUERY__NODE__NODE_PARTITION_CMD)) {
            alter(def->partition_cmd->name, "ATTACH / DETACH PARTITION");
          }
        }
        functions_in(msg(a));
        break;
      }
      case PG_QUERY__NODE__NODE_RENAME_STMT: {
        const PgQuery__RenameStmt* r = n->rename_stmt;
        if (r->rename_type == PG_QUERY__OBJECT_TYPE__OBJECT_SCHEMA) {
          out_->renamed_schemas.insert(std::string(str(r->subname)));
        } else {
          alter(r->relation, "RENAME");
        }
        break;
      }
      case PG_QUERY__NODE__NODE_ALTER_OBJECT_SCHEMA_STMT:
        alter(n->alter_object_schema_stmt->relation, "SET SCHEMA");
        break;
      case PG_QUERY__NODE__NODE_INDEX_STMT:
        alter(n->index_stmt->relation, "CREATE INDEX");
        functions_in(msg(n->index_stmt));
        break;
      case PG_QUERY__NODE__NODE_CREATE_POLICY_STMT: {
        const PgQuery__CreatePolicyStmt* p = n->create_policy_stmt;
        alter(p->table, "CREATE POLICY");
        row_security(p->table, p->qual, p->with_check);
        functions_in(msg(p));
        break;
      }
      case PG_QUERY__NODE__NODE_ALTER_POLICY_STMT: {
        const PgQuery__AlterPolicyStmt* p = n->alter_policy_stmt;
        alter(p->table, "ALTER POLICY");
        row_security(p->table, p->qual, p->with_check);
        functions_in(msg(p));
        break;
      }
      case PG_QUERY__NODE__NODE_CLUSTER_STMT:
        // CLUSTER t USING idx rewrites t in the index's order: with an index on a masked
        // column, every later scan without ORDER BY returns rows sorted by the value. (A bare
        // CLUSTER repeats the orders the operator chose.)
        alter(n->cluster_stmt->relation, "CLUSTER");
        break;
      case PG_QUERY__NODE__NODE_CREATE_STATS_STMT:
        for (size_t i = 0; i < n->create_stats_stmt->n_relations; ++i) {
          const PgQuery__Node* r = n->create_stats_stmt->relations[i];
          if (is_node(r, PG_QUERY__NODE__NODE_RANGE_VAR)) alter(r->range_var, "CREATE STATISTICS");
        }
        break;
      case PG_QUERY__NODE__NODE_DEFINE_STMT:
        // CREATE OPERATOR / AGGREGATE: their support functions run wherever the operator or
        // aggregate is used, without a call the analysis could see.
        for (size_t i = 0; i < n->define_stmt->n_definition; ++i) {
          const PgQuery__Node* d = n->define_stmt->definition[i];
          if (is_node(d, PG_QUERY__NODE__NODE_DEF_ELEM)) definition_function(d->def_elem->arg);
        }
        break;
      case PG_QUERY__NODE__NODE_CREATE_CAST_STMT:
        if (n->create_cast_stmt->func) {
          function_reference(n->create_cast_stmt->func->objname,
                             n->create_cast_stmt->func->n_objname);
        }
        break;
      default:
        // Other DDL: user functions in defaults, generated columns, CHECK constraints, domain
        // checks run later without a call.
        functions_in(msg(n));
        break;
    }
  }

 private:
  // --- errors ------------------------------------------------------------------------

  void fail(std::string message) {
    if (out_->error.empty()) out_->error = std::move(message);
  }
  bool failed() const { return !out_->error.empty(); }

  // --- DDL -------------------------------------------------------------------------------

  // A relation whose definition the statement changes: its columns, or a view's sources (a
  // name the catalog does not know has none cp could mask).
  void alter(const PgQuery__RangeVar* rv, const char* how) {
    if (!rv) return;
    auto candidates = relations(std::string(str(rv->schemaname)), std::string(str(rv->relname)));
    if (!candidates) {
      fail(candidates.status().message());
      return;
    }
    for (const CatalogRelation& rel : *candidates) {
      if ((rel.kind == 'v' || rel.kind == 'm') && !system_schema(rel.schema)) {
        for (const OutputColumn& c : view_columns(rel)) {
          for (const SourceColumn& s : c.lineage.all()) out_->altered.insert(s);
        }
        continue;
      }
      for (const auto& c : rel.columns) out_->altered.insert(SourceColumn{rel.schema, rel.name, c});
    }
    if (out_->altered_by.empty()) out_->altered_by = how;
  }

  // A function named by a list of String nodes (`schema.name` or `name`).
  void function_reference(PgQuery__Node* const* parts, size_t n) {
    FunctionName f;
    for (size_t i = 0; i < n; ++i) {
      if (!is_node(parts[i], PG_QUERY__NODE__NODE_STRING)) return;
      f.schema = std::move(f.name);
      f.name = std::string(str(parts[i]->string->sval));
    }
    if (!f.name.empty()) functions_.insert(std::move(f));
  }

  // CREATE OPERATOR / AGGREGATE definition element: `function = f`, `sfunc = s.f`, ...
  void definition_function(const PgQuery__Node* arg) {
    if (is_node(arg, PG_QUERY__NODE__NODE_TYPE_NAME)) {
      function_reference(arg->type_name->names, arg->type_name->n_names);
    } else if (is_node(arg, PG_QUERY__NODE__NODE_LIST)) {
      function_reference(arg->list->items, arg->list->n_items);
    }
  }

  // Every function called anywhere in `m` (no column is resolved: DDL has no FROM scope), and
  // every foreign key it declares.
  void functions_in(const ProtobufCMessage* m) {
    if (!m || failed()) return;
    if (++depth_ > kMaxDepth) {
      fail("statement nested too deeply");
      --depth_;
      return;
    }
    if (m->descriptor == &pg_query__func_call__descriptor) {
      note_function(reinterpret_cast<const PgQuery__FuncCall*>(m));
    }
    if (m->descriptor == &pg_query__constraint__descriptor) {
      const auto* c = reinterpret_cast<const PgQuery__Constraint*>(m);
      if (c->contype == PG_QUERY__CONSTR_TYPE__CONSTR_FOREIGN) foreign_key(c);
    }
    each_child(m, [this](const ProtobufCMessage* child) { functions_in(child); });
    --depth_;
  }

  // A row-security policy's USING / WITH CHECK expressions filter the rows of its table for
  // every later statement (or refuse its writes), and may hold sub-selects over any table:
  // `USING (k IN (SELECT ssn FROM crm.customers))` makes each guess written to the table an
  // equality test. They are predicates over the table's columns.
  void row_security(const PgQuery__RangeVar* table, const PgQuery__Node* qual,
                    const PgQuery__Node* with_check) {
    if (!table || (!qual && !with_check)) return;
    auto known = relations(std::string(str(table->schemaname)), std::string(str(table->relname)));
    if (!known) {
      fail(known.status().message());
      return;
    }
    scopes_.emplace_back();
    if (known->empty()) {
      // A table created in this transaction: its columns hold nothing cp could mask (an open
      // item matches them); what the expressions read elsewhere is still resolved.
      FromItem item;
      item.alias = std::string(str(table->relname));
      item.open = true;
      scopes_.back().push_back(std::move(item));
    } else {
      scopes_.back().push_back(relation_item(table));
    }
    if (!failed()) {
      if (qual) predicate(qual, "row security policy");
      if (with_check) predicate(with_check, "row security policy");
    }
    scopes_.pop_back();
  }

  // REFERENCES t (cols): every insert or update of the referencing table then tells whether
  // the value it writes exists in t.cols (a foreign-key violation or not), an equality oracle
  // on the referenced columns. Without a column list the reference names t's primary key,
  // which the catalog interface does not tell: every column counts (fail closed). A table the
  // catalog does not know (created in this transaction, or the table being created referring
  // to itself) holds nothing cp could mask.
  void foreign_key(const PgQuery__Constraint* c) {
    const PgQuery__RangeVar* t = c->pktable;
    if (!t) return;
    auto candidates = relations(std::string(str(t->schemaname)), std::string(str(t->relname)));
    if (!candidates) {
      fail(candidates.status().message());
      return;
    }
    for (const CatalogRelation& rel : *candidates) {
      for (const std::string& column : rel.columns) {
        bool referenced = c->n_pk_attrs == 0;
        for (size_t i = 0; i < c->n_pk_attrs && !referenced; ++i) {
          const PgQuery__Node* a = c->pk_attrs[i];
          referenced = is_node(a, PG_QUERY__NODE__NODE_STRING) && str(a->string->sval) == column;
        }
        if (!referenced) continue;
        out_->predicates.insert({SourceColumn{rel.schema, rel.name, column},
                                 c->n_pk_attrs == 0
                                     ? "FOREIGN KEY without a column list (name the columns)"
                                     : "FOREIGN KEY",
                                 PredicateForm::kGeneral,
                                 {}});
      }
    }
  }

  // COPY table [(cols)] TO 'file' / PROGRAM 'cmd': the values leave for a place the result
  // masking never sees, from where COPY ... FROM or a file reader brings them back raw.
  void copy_table_to_server(const PgQuery__CopyStmt* c) {
    if (c->is_from || !c->relation || (!c->is_program && str(c->filename).empty())) return;
    FromItem item = relation_item(c->relation);
    if (failed()) return;
    if (c->n_attlist == 0) {
      for (const auto& col : item.columns) write(col.lineage);
    }
    for (size_t i = 0; i < c->n_attlist; ++i) {
      const PgQuery__Node* a = c->attlist[i];
      if (!is_node(a, PG_QUERY__NODE__NODE_STRING)) continue;
      std::optional<ScopeColumn> col = column_of(item, str(a->string->sval));
      if (!col) {
        fail("column " + std::string(str(a->string->sval)) + " of the copied table not found");
        return;
      }
      write(col->lineage);
    }
    out_->sink = c->is_program ? "COPY TO PROGRAM" : "COPY TO file";
    out_->written_to = std::string(c->is_program ? "program " : "server file ") + "'" +
                       std::string(str(c->filename)) + "'";
  }

  // --- queries -----------------------------------------------------------------------

  // A node that yields rows: SELECT/VALUES/set operation, or DML with RETURNING.
  std::vector<OutputColumn> query_node(const PgQuery__Node* n) {
    if (!n) return {};
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_SELECT_STMT:
        return select(n->select_stmt);
      case PG_QUERY__NODE__NODE_INSERT_STMT:
        return insert(n->insert_stmt);
      case PG_QUERY__NODE__NODE_UPDATE_STMT:
        return update(n->update_stmt);
      case PG_QUERY__NODE__NODE_DELETE_STMT:
        return delete_stmt(n->delete_stmt);
      case PG_QUERY__NODE__NODE_MERGE_STMT:
        merge(n->merge_stmt);
        return {};
      default:
        fail("cannot determine the columns of a " + std::to_string(n->node_case) + " node");
        return {};
    }
  }

  std::vector<OutputColumn> select(const PgQuery__SelectStmt* s) {
    if (!s) return {};
    if (++depth_ > kMaxDepth) {
      fail("statement nested too deeply");
      --depth_;
      return {};
    }
    push_with(s->with_clause);
    std::vector<OutputColumn> outputs;
    if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE &&
        s->op != PG_QUERY__SET_OPERATION__SET_OPERATION_UNDEFINED) {
      outputs = set_operation(s);
      scopes_.emplace_back();
      order_by(s->sort_clause, s->n_sort_clause, outputs);
      limits(s);
      scopes_.pop_back();
    } else if (s->n_values_lists > 0) {
      outputs = values(s);
      scopes_.emplace_back();
      order_by(s->sort_clause, s->n_sort_clause, outputs);
      limits(s);
      scopes_.pop_back();
    } else {
      scopes_.emplace_back();
      merged_columns_.push_back(0);
      for (size_t i = 0; i < s->n_from_clause; ++i) from_item(s->from_clause[i]);
      outputs = target_list(s->target_list, s->n_target_list, false);
      if (s->where_clause) predicate(s->where_clause, "WHERE");
      for (size_t i = 0; i < s->n_group_clause; ++i) {
        output_or_input(s->group_clause[i], outputs, "GROUP BY");
      }
      if (s->having_clause) predicate(s->having_clause, "HAVING");
      for (size_t i = 0; i < s->n_window_clause; ++i) general(s->window_clause[i], "window");
      for (size_t i = 0; i < s->n_distinct_clause; ++i) {
        // Plain DISTINCT is a list holding one empty node; DISTINCT ON lists expressions.
        const PgQuery__Node* d = s->distinct_clause[i];
        if (d && d->node_case != PG_QUERY__NODE__NODE__NOT_SET) {
          output_or_input(d, outputs, "DISTINCT ON");
        } else {
          // DISTINCT compares (and usually sorts by) every output: row counts and row order
          // then depend on the values, like GROUP BY.
          for (const auto& o : outputs) add_predicates(o.lineage, "DISTINCT");
        }
      }
      order_by(s->sort_clause, s->n_sort_clause, outputs);
      limits(s);
      merged_columns_.pop_back();
      scopes_.pop_back();
    }
    pop_with(s->with_clause);
    --depth_;
    return outputs;
  }

  std::vector<OutputColumn> set_operation(const PgQuery__SelectStmt* s) {
    std::vector<OutputColumn> left = select(s->larg);
    std::vector<OutputColumn> right = select(s->rarg);
    if (left.size() != right.size()) {
      // PostgreSQL would refuse; merge everything into everything (fail closed).
      ColumnLineage all;
      for (const auto& o : left) all.add(o.lineage);
      for (const auto& o : right) all.add(o.lineage);
      for (auto& o : left) o.lineage = all;
    } else {
      for (size_t i = 0; i < left.size(); ++i) left[i].lineage.add(right[i].lineage);
    }
    // UNION (without ALL), INTERSECT and EXCEPT (with or without ALL) compare whole rows:
    // which rows come back (and how many) depends on the values of every column, so each is
    // a predicate, whether or not the result is returned (`SELECT count(*) FROM (SELECT ssn
    // ... INTERSECT SELECT '123-45-6789') s` is an equality oracle). UNION ALL compares nothing.
    const char* compares = nullptr;
    if (s->op == PG_QUERY__SET_OPERATION__SETOP_INTERSECT) compares = "INTERSECT";
    if (s->op == PG_QUERY__SET_OPERATION__SETOP_EXCEPT) compares = "EXCEPT";
    if (s->op == PG_QUERY__SET_OPERATION__SETOP_UNION && !s->all) compares = "UNION";
    if (compares) {
      for (const auto& o : left) add_predicates(o.lineage, compares);
    }
    // PostgreSQL reports no column origin for set-operation results.
    for (auto& o : left) o.lineage.origin_lost = true;
    return left;
  }

  std::vector<OutputColumn> values(const PgQuery__SelectStmt* s) {
    std::vector<OutputColumn> outputs;
    for (size_t r = 0; r < s->n_values_lists; ++r) {
      const PgQuery__Node* row = s->values_lists[r];
      if (!is_node(row, PG_QUERY__NODE__NODE_LIST)) continue;
      for (size_t c = 0; c < row->list->n_items; ++c) {
        if (outputs.size() <= c) outputs.push_back({"column" + std::to_string(c + 1), {}});
        outputs[c].lineage.add(expression(row->list->items[c]));
      }
    }
    // PostgreSQL reports no column origin for a VALUES list's columns: a masked column carried
    // through one as is (`LATERAL (VALUES (c.ssn)) v(x)`) would reach the client unmasked.
    for (auto& o : outputs) o.lineage.origin_lost = true;
    return outputs;
  }

  void limits(const PgQuery__SelectStmt* s) {
    if (s->limit_count) general(s->limit_count, "LIMIT");
    if (s->limit_offset) general(s->limit_offset, "LIMIT");
  }

  // ORDER BY: an output column name or position, else an expression over the FROM list.
  void order_by(PgQuery__Node* const* items, size_t n, const std::vector<OutputColumn>& outputs) {
    for (size_t i = 0; i < n; ++i) {
      const PgQuery__Node* item = items[i];
      if (is_node(item, PG_QUERY__NODE__NODE_SORT_BY)) {
        output_or_input(item->sort_by->node, outputs, "ORDER BY");
        for (size_t k = 0; k < item->sort_by->n_use_op; ++k)
          general(item->sort_by->use_op[k], "ORDER BY");
      } else {
        output_or_input(item, outputs, "ORDER BY");
      }
    }
  }

  // GROUP BY / ORDER BY / DISTINCT ON item: `1` names output 1, a bare name may name an output
  // column or an input column (PostgreSQL prefers one or the other by clause; both count here).
  void output_or_input(const PgQuery__Node* n, const std::vector<OutputColumn>& outputs,
                       const char* clause) {
    if (!n) return;
    if (is_node(n, PG_QUERY__NODE__NODE_GROUPING_SET)) {
      // GROUPING SETS / ROLLUP / CUBE: each element groups like a GROUP BY item (a position
      // or name in one counts as it would at the top: read both ways, fail closed).
      for (size_t i = 0; i < n->grouping_set->n_content; ++i) {
        output_or_input(n->grouping_set->content[i], outputs, clause);
      }
      return;
    }
    if (is_node(n, PG_QUERY__NODE__NODE_ROW_EXPR)) {
      // `GROUP BY ROLLUP ((a, b))`: a parenthesised list of grouping items.
      for (size_t i = 0; i < n->row_expr->n_args; ++i) {
        output_or_input(n->row_expr->args[i], outputs, clause);
      }
      return;
    }
    if (is_node(n, PG_QUERY__NODE__NODE_LIST)) {
      for (size_t i = 0; i < n->list->n_items; ++i) {
        output_or_input(n->list->items[i], outputs, clause);
      }
      return;
    }
    if (is_node(n, PG_QUERY__NODE__NODE_A_CONST) &&
        n->a_const->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
      // Which output the number names is a literal's value, invisible in the shape key.
      for (const auto& o : outputs) {
        for (const auto& src : o.lineage.all()) out_->by_position.insert(src);
      }
      int pos = n->a_const->ival ? n->a_const->ival->ival : 0;
      // `*` over JOIN ... USING / NATURAL lists each merged column once where this analysis
      // lists it per side: positions after it may be off by that many (take them all).
      int shift = merged_columns_.empty() ? 0 : merged_columns_.back();
      for (int k = pos - shift; k <= pos + shift; ++k) {
        if (k >= 1 && static_cast<size_t>(k) <= outputs.size()) {
          add_predicates(outputs[k - 1].lineage, clause);
        }
      }
      return;
    }
    if (is_node(n, PG_QUERY__NODE__NODE_COLUMN_REF) && n->column_ref->n_fields == 1 &&
        is_node(n->column_ref->fields[0], PG_QUERY__NODE__NODE_STRING)) {
      std::string_view name = str(n->column_ref->fields[0]->string->sval);
      bool named_output = false;
      for (const auto& o : outputs) {
        if (o.name == name) {
          add_predicates(o.lineage, clause);
          named_output = true;
        }
      }
      if (named_output) {
        std::optional<ColumnLineage> input = resolve(n->column_ref, /*quiet=*/true);
        if (input) add_predicates(*input, clause);
        return;
      }
    }
    general(n, clause);
  }

  // SELECT list / RETURNING list.
  std::vector<OutputColumn> target_list(PgQuery__Node* const* items, size_t n, bool returning) {
    std::vector<OutputColumn> outputs;
    for (size_t i = 0; i < n; ++i) {
      const PgQuery__Node* item = items[i];
      if (!is_node(item, PG_QUERY__NODE__NODE_RES_TARGET)) continue;
      const PgQuery__ResTarget* rt = item->res_target;
      const PgQuery__Node* val = rt->val;
      if (is_node(val, PG_QUERY__NODE__NODE_COLUMN_REF) && val->column_ref->n_fields > 0 &&
          is_node(val->column_ref->fields[val->column_ref->n_fields - 1],
                  PG_QUERY__NODE__NODE_A_STAR)) {
        star(val->column_ref, &outputs);
        continue;
      }
      OutputColumn o;
      o.name = std::string(str(rt->name));
      if (o.name.empty()) o.name = default_name(val);
      o.lineage = expression(val);
      outputs.push_back(std::move(o));
    }
    if (returning) {
      for (auto& o : outputs) o.lineage.origin_lost = true;
    }
    return outputs;
  }

  static std::string default_name(const PgQuery__Node* val) {
    if (is_node(val, PG_QUERY__NODE__NODE_COLUMN_REF) && val->column_ref->n_fields > 0) {
      const PgQuery__Node* last = val->column_ref->fields[val->column_ref->n_fields - 1];
      if (is_node(last, PG_QUERY__NODE__NODE_STRING)) return std::string(str(last->string->sval));
    }
    if (is_node(val, PG_QUERY__NODE__NODE_FUNC_CALL) && val->func_call->n_funcname > 0) {
      const PgQuery__Node* last = val->func_call->funcname[val->func_call->n_funcname - 1];
      if (is_node(last, PG_QUERY__NODE__NODE_STRING)) return std::string(str(last->string->sval));
    }
    return "?column?";
  }

  // `*` or `t.*` in a SELECT list: every column, as is.
  void star(const PgQuery__ColumnRef* c, std::vector<OutputColumn>* outputs) {
    if (scopes_.empty()) return;
    const Scope& scope = scopes_.back();
    if (c->n_fields == 1) {
      for (const FromItem& item : scope) {
        if (item.qualified_only) continue;
        expand(item, outputs);
      }
      return;
    }
    size_t level = 0;
    const FromItem* item = find_item(c->fields, c->n_fields - 1, &level);
    if (!item) {
      fail("cannot resolve " + qualifier_text(c->fields, c->n_fields - 1) + ".*");
      return;
    }
    size_t first = outputs->size();
    expand(*item, outputs);
    if (level + 1 != scopes_.size()) {
      for (size_t i = first; i < outputs->size(); ++i) (*outputs)[i].lineage.origin_lost = true;
    }
  }

  static void expand(const FromItem& item, std::vector<OutputColumn>* outputs) {
    if (item.open) {
      ColumnLineage l;
      l.add_transformed(item.open_lineage);
      outputs->push_back({item.alias, std::move(l)});
      return;
    }
    for (const auto& c : item.columns) outputs->push_back({c.name, c.lineage});
  }

  // --- FROM ------------------------------------------------------------------------

  void from_item(const PgQuery__Node* n) {
    if (!n) return;
    switch (n->node_case) {
      case PG_QUERY__NODE__NODE_RANGE_VAR: {
        FromItem item = relation_item(n->range_var);
        scopes_.back().push_back(std::move(item));
        return;
      }
      case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        const PgQuery__RangeSubselect* rs = n->range_subselect;
        FromItem item;
        item.alias = rs->alias ? std::string(str(rs->alias->aliasname)) : std::string();
        std::vector<OutputColumn> outs = query_node(rs->subquery);
        for (auto& o : outs) item.columns.push_back({o.name, std::move(o.lineage)});
        if (rs->alias) rename(&item, rs->alias);
        scopes_.back().push_back(std::move(item));
        return;
      }
      case PG_QUERY__NODE__NODE_RANGE_FUNCTION: {
        const PgQuery__RangeFunction* rf = n->range_function;
        FromItem item;
        item.alias = rf->alias ? std::string(str(rf->alias->aliasname)) : std::string();
        item.open = true;
        ColumnLineage l;
        for (size_t i = 0; i < rf->n_functions; ++i) any(msg(rf->functions[i]), &l);
        item.open_lineage = std::move(l);
        if (item.alias.empty() && rf->n_functions > 0) item.alias = first_function_name(rf);
        scopes_.back().push_back(std::move(item));
        return;
      }
      case PG_QUERY__NODE__NODE_JOIN_EXPR: {
        const PgQuery__JoinExpr* j = n->join_expr;
        size_t first = scopes_.back().size();
        from_item(j->larg);
        from_item(j->rarg);
        if (j->quals) predicate(j->quals, "JOIN ON");
        // USING / NATURAL compare the named columns of both sides.
        for (size_t i = 0; i < j->n_using_clause; ++i) {
          const PgQuery__Node* u = j->using_clause[i];
          if (!is_node(u, PG_QUERY__NODE__NODE_STRING)) continue;
          std::string name(str(u->string->sval));
          join_using(first, name);
        }
        if (j->is_natural) {
          std::vector<std::string> names;
          for (size_t k = first; k < scopes_.back().size(); ++k) {
            for (const auto& c : scopes_.back()[k].columns) names.push_back(c.name);
          }
          std::sort(names.begin(), names.end());
          for (size_t k = 1; k < names.size(); ++k) {
            if (names[k] == names[k - 1]) join_using(first, names[k]);
          }
        }
        const PgQuery__Alias* alias = j->alias ? j->alias : j->join_using_alias;
        if (alias) {
          FromItem item;
          item.alias = std::string(str(alias->aliasname));
          item.qualified_only = true;
          for (size_t k = first; k < scopes_.back().size(); ++k) {
            const FromItem& m = scopes_.back()[k];
            if (m.qualified_only) continue;
            if (m.open) {
              item.open = true;
              item.open_lineage.add(m.open_lineage);
            }
            for (const auto& c : m.columns) item.columns.push_back(c);
          }
          scopes_.back().push_back(std::move(item));
        }
        return;
      }
      default: {
        // RangeTableSample, RangeTableFunc (XMLTABLE), ...: an open item over whatever
        // the node references.
        FromItem item;
        item.open = true;
        ColumnLineage l;
        if (is_node(n, PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE)) {
          size_t before = scopes_.back().size();
          from_item(n->range_table_sample->relation);
          if (scopes_.back().size() > before) {
            for (size_t i = 0; i < n->range_table_sample->n_args; ++i) {
              general(n->range_table_sample->args[i], "TABLESAMPLE");
            }
            // The seed decides which rows come back as much as the percentage does.
            if (n->range_table_sample->repeatable) {
              general(n->range_table_sample->repeatable, "TABLESAMPLE REPEATABLE");
            }
            return;
          }
        }
        any(msg(n), &l);
        item.open_lineage = std::move(l);
        scopes_.back().push_back(std::move(item));
        return;
      }
    }
  }

  void join_using(size_t first, const std::string& name) {
    if (!merged_columns_.empty()) ++merged_columns_.back();
    std::vector<const ColumnLineage*> sides;
    for (size_t k = first; k < scopes_.back().size(); ++k) {
      for (const auto& c : scopes_.back()[k].columns) {
        if (c.name == name) sides.push_back(&c.lineage);
      }
    }
    // Two plain columns compare as an equality join (which `allow_predicates: equality_join`
    // may admit when both are masked); a side with no source column (a literal, `VALUES`, a
    // parameter) makes it an equality test against a value the client chose: a predicate.
    if (sides.size() == 2 && sides[0]->transformed.empty() && sides[1]->transformed.empty() &&
        !sides[0]->as_is.empty() && !sides[1]->as_is.empty()) {
      for (const auto& a : sides[0]->as_is) {
        for (const auto& b : sides[1]->as_is) {
          out_->predicates.insert({a, "JOIN USING", PredicateForm::kEqualityJoin, b});
          out_->predicates.insert({b, "JOIN USING", PredicateForm::kEqualityJoin, a});
        }
      }
      return;
    }
    for (const ColumnLineage* l : sides) add_predicates(*l, "JOIN USING");
  }

  static std::string first_function_name(const PgQuery__RangeFunction* rf) {
    const PgQuery__Node* f = rf->functions[0];
    if (is_node(f, PG_QUERY__NODE__NODE_LIST) && f->list->n_items > 0 &&
        is_node(f->list->items[0], PG_QUERY__NODE__NODE_FUNC_CALL)) {
      return default_name(f->list->items[0]);
    }
    return std::string();
  }

  static void rename(FromItem* item, const PgQuery__Alias* alias) {
    for (size_t i = 0; i < alias->n_colnames && i < item->columns.size(); ++i) {
      if (is_node(alias->colnames[i], PG_QUERY__NODE__NODE_STRING)) {
        item->columns[i].name = std::string(str(alias->colnames[i]->string->sval));
      }
    }
  }

  const Cte* find_cte(std::string_view name) const {
    for (auto it = ctes_.rbegin(); it != ctes_.rend(); ++it) {
      if (it->name == name) return &*it;
    }
    return nullptr;
  }

  FromItem relation_item(const PgQuery__RangeVar* rv) {
    FromItem item;
    std::string schema(str(rv->schemaname));
    std::string name(str(rv->relname));
    item.alias = rv->alias && !str(rv->alias->aliasname).empty()
                     ? std::string(str(rv->alias->aliasname))
                     : name;
    if (schema.empty()) {
      if (const Cte* cte = find_cte(name)) {
        item.open = cte->open;
        for (const auto& o : cte->outputs) item.columns.push_back({o.name, o.lineage});
        if (rv->alias) rename(&item, rv->alias);
        return item;
      }
    }
    item.relname = name;
    if ((schema.empty() || schema == "pg_catalog") && statistics_view(name)) {
      fail("pg_catalog." + name +
           " shows sample values of every column, masked ones included (most_common_vals, "
           "histogram_bounds)");
      return item;
    }
    auto candidates = relations(schema, name);
    if (!candidates) {
      fail(candidates.status().message());
      return item;
    }
    if (candidates->empty()) {
      fail("relation " + (schema.empty() ? name : schema + "." + name) + " not found");
      return item;
    }
    // Several candidates (an unqualified name in several schemas): the union of their
    // columns, by name, so whichever the session's search_path picks is covered.
    for (const CatalogRelation& rel : *candidates) {
      item.schemas.push_back(rel.schema);
      std::vector<OutputColumn> cols;
      if ((rel.kind == 'v' || rel.kind == 'm') && !system_schema(rel.schema)) {
        cols = view_columns(rel);
        if (failed()) return item;
      } else {
        for (const auto& c : rel.columns) {
          ColumnLineage l;
          l.as_is.insert(SourceColumn{rel.schema, rel.name, c});
          cols.push_back({c, std::move(l)});
        }
      }
      for (auto& c : cols) {
        auto it = std::find_if(item.columns.begin(), item.columns.end(),
                               [&](const ScopeColumn& s) { return s.name == c.name; });
        if (it == item.columns.end()) {
          item.columns.push_back({c.name, std::move(c.lineage)});
        } else {
          it->lineage.add(c.lineage);
        }
      }
    }
    if (rv->alias) rename(&item, rv->alias);
    return item;
  }

  Result<std::vector<CatalogRelation>> relations(const std::string& schema,
                                                 const std::string& name) {
    std::string key = schema + "." + name;
    if (auto it = relation_cache_.find(key); it != relation_cache_.end()) return it->second;
    auto r = catalog_.relations(schema, name);
    if (r.is_ok()) relation_cache_[key] = *r;
    return r;
  }

  // A view's columns: its definition analysed like a query. PostgreSQL reports a view
  // column's origin as the view itself, which the mask planner resolves with view_lineage(),
  // so the origin is not lost here.
  std::vector<OutputColumn> view_columns(const CatalogRelation& rel) {
    if (view_depth_ + 1 > kMaxViewDepth) {
      fail("views nested more than " + std::to_string(kMaxViewDepth) + " deep at " + rel.schema +
           "." + rel.name);
      return {};
    }
    StatementLineage inner = lineage_at_depth(rel.view_definition, catalog_, view_depth_ + 1);
    if (!inner.error.empty()) {
      fail("view " + rel.schema + "." + rel.name + ": " + inner.error);
      return {};
    }
    out_->predicates.insert(inner.predicates.begin(), inner.predicates.end());
    out_->opaque_functions.insert(inner.opaque_functions.begin(), inner.opaque_functions.end());
    out_->query_text_functions.insert(inner.query_text_functions.begin(),
                                      inner.query_text_functions.end());
    std::vector<OutputColumn> cols = std::move(inner.outputs);
    if (cols.size() != rel.columns.size()) {
      fail("view " + rel.schema + "." + rel.name + ": definition has " +
           std::to_string(cols.size()) + " columns, the catalog " +
           std::to_string(rel.columns.size()));
      return {};
    }
    for (size_t i = 0; i < cols.size(); ++i) {
      cols[i].name = rel.columns[i];
      cols[i].lineage.origin_lost = false;
    }
    return cols;
  }

  // --- CTEs --------------------------------------------------------------------------

  void push_with(const PgQuery__WithClause* with) {
    if (!with) return;
    for (size_t i = 0; i < with->n_ctes; ++i) {
      const PgQuery__Node* n = with->ctes[i];
      if (!is_node(n, PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR)) continue;
      const PgQuery__CommonTableExpr* cte = n->common_table_expr;
      Cte entry{std::string(str(cte->ctename)), {}};
      if (with->recursive) {
        // First pass: the self-reference has no columns yet (an open placeholder); second
        // pass: it carries everything the first pass found (fail closed over the recursion).
        entry.open = true;
        ctes_.push_back(entry);
        std::vector<OutputColumn> first = query_node(cte->ctequery);
        ctes_.back().open = false;
        ColumnLineage all;
        for (const auto& o : first) all.add_transformed(o.lineage);
        for (auto& o : first) o.lineage.add(all);
        ctes_.back().outputs = first;
        alias_columns(cte, &ctes_.back().outputs);
        std::vector<OutputColumn> second = query_node(cte->ctequery);
        for (auto& o : second) o.lineage.origin_lost = true;
        ctes_.back().outputs = std::move(second);
        alias_columns(cte, &ctes_.back().outputs);
        search_and_cycle(cte, &ctes_.back().outputs);
      } else {
        entry.outputs = query_node(cte->ctequery);
        alias_columns(cte, &entry.outputs);
        ctes_.push_back(std::move(entry));
      }
    }
  }

  // `SEARCH ... BY cols SET seq` orders the recursion by the named columns and adds `seq`, a
  // row of their values; `CYCLE cols SET mark USING path` compares them and adds `mark` and
  // `path`, an array of rows of their values. The named columns are predicates; the added
  // columns are transformed from them (PostgreSQL reports no origin for them).
  void search_and_cycle(const PgQuery__CommonTableExpr* cte, std::vector<OutputColumn>* outs) {
    auto named = [&](PgQuery__Node* const* cols, size_t n, const char* clause) {
      ColumnLineage l;
      for (size_t i = 0; i < n; ++i) {
        if (!is_node(cols[i], PG_QUERY__NODE__NODE_STRING)) continue;
        std::string_view name = str(cols[i]->string->sval);
        bool found = false;
        for (const auto& o : *outs) {
          if (o.name == name) {
            l.add_transformed(o.lineage);
            found = true;
          }
        }
        if (!found) fail("column " + std::string(name) + " of " + clause + " not found");
      }
      add_predicates(l, clause);
      for (const auto& src : l.all()) out_->computed.insert(src);
      l.origin_lost = true;
      return l;
    };
    if (const PgQuery__CTESearchClause* sc = cte->search_clause) {
      ColumnLineage l = named(sc->search_col_list, sc->n_search_col_list, "SEARCH");
      outs->push_back({std::string(str(sc->search_seq_column)), l});
    }
    if (const PgQuery__CTECycleClause* cc = cte->cycle_clause) {
      ColumnLineage l = named(cc->cycle_col_list, cc->n_cycle_col_list, "CYCLE");
      outs->push_back({std::string(str(cc->cycle_mark_column)), l});
      outs->push_back({std::string(str(cc->cycle_path_column)), l});
    }
  }

  void pop_with(const PgQuery__WithClause* with) {
    if (!with) return;
    for (size_t i = 0; i < with->n_ctes && !ctes_.empty(); ++i) ctes_.pop_back();
  }

  static void alias_columns(const PgQuery__CommonTableExpr* cte, std::vector<OutputColumn>* outs) {
    for (size_t i = 0; i < cte->n_aliascolnames && i < outs->size(); ++i) {
      if (is_node(cte->aliascolnames[i], PG_QUERY__NODE__NODE_STRING)) {
        (*outs)[i].name = std::string(str(cte->aliascolnames[i]->string->sval));
      }
    }
  }

  // --- DML -----------------------------------------------------------------------------

  FromItem target_item(const PgQuery__RangeVar* rv) {
    FromItem item = relation_item(rv);
    out_->written_to = rv ? (str(rv->schemaname).empty() ? std::string(str(rv->relname))
                                                         : std::string(str(rv->schemaname)) + "." +
                                                               std::string(str(rv->relname)))
                          : std::string();
    return item;
  }

  void write(const ColumnLineage& l) {
    auto all = l.all();
    out_->written_from.insert(all.begin(), all.end());
  }

  void write_outputs(std::string target) {
    for (const auto& o : out_->outputs) write(o.lineage);
    out_->written_to = std::move(target);
  }

  static std::string into_name(const PgQuery__IntoClause* into) {
    if (!into || !into->rel) return std::string();
    std::string s(str(into->rel->schemaname));
    return (s.empty() ? "" : s + ".") + std::string(str(into->rel->relname));
  }

  std::vector<OutputColumn> insert(const PgQuery__InsertStmt* s) {
    push_with(s->with_clause);
    std::vector<OutputColumn> source = query_node(s->select_stmt);
    for (const auto& o : source) write(o.lineage);
    scopes_.emplace_back();
    if (s->relation) scopes_.back().push_back(target_item(s->relation));
    std::vector<OutputColumn> outputs;
    if (s->on_conflict_clause) {
      const PgQuery__OnConflictClause* oc = s->on_conflict_clause;
      if (!scopes_.back().empty()) {
        FromItem excluded = scopes_.back().front();
        excluded.alias = "excluded";
        scopes_.back().push_back(std::move(excluded));
      }
      if (oc->infer) {
        // The conflict target decides which rows are "already there": a predicate.
        const PgQuery__InferClause* inf = oc->infer;
        for (size_t i = 0; i < inf->n_index_elems; ++i) {
          const PgQuery__Node* e = inf->index_elems[i];
          if (!is_node(e, PG_QUERY__NODE__NODE_INDEX_ELEM)) continue;
          if (e->index_elem->expr) general(e->index_elem->expr, "ON CONFLICT");
          if (!str(e->index_elem->name).empty() && !scopes_.back().empty()) {
            if (auto col = column_of(scopes_.back().front(), str(e->index_elem->name))) {
              add_predicates(col->lineage, "ON CONFLICT");
            }
          }
        }
        if (inf->where_clause) predicate(inf->where_clause, "ON CONFLICT");
      }
      for (size_t i = 0; i < oc->n_target_list; ++i) set_target(oc->target_list[i]);
      if (oc->where_clause) predicate(oc->where_clause, "WHERE");
      if (scopes_.back().size() > 1) scopes_.back().pop_back();
    }
    outputs = target_list(s->returning_list, s->n_returning_list, true);
    scopes_.pop_back();
    pop_with(s->with_clause);
    return outputs;
  }

  void set_target(const PgQuery__Node* n) {
    if (is_node(n, PG_QUERY__NODE__NODE_RES_TARGET)) {
      write(expression(n->res_target->val));
      for (size_t i = 0; i < n->res_target->n_indirection; ++i) {
        write(expression(n->res_target->indirection[i]));
      }
    } else {
      write(expression(n));
    }
  }

  std::vector<OutputColumn> update(const PgQuery__UpdateStmt* s) {
    push_with(s->with_clause);
    scopes_.emplace_back();
    if (s->relation) scopes_.back().push_back(target_item(s->relation));
    for (size_t i = 0; i < s->n_from_clause; ++i) from_item(s->from_clause[i]);
    for (size_t i = 0; i < s->n_target_list; ++i) set_target(s->target_list[i]);
    if (s->where_clause) predicate(s->where_clause, "WHERE");
    std::vector<OutputColumn> outputs = target_list(s->returning_list, s->n_returning_list, true);
    scopes_.pop_back();
    pop_with(s->with_clause);
    return outputs;
  }

  std::vector<OutputColumn> delete_stmt(const PgQuery__DeleteStmt* s) {
    push_with(s->with_clause);
    scopes_.emplace_back();
    if (s->relation) scopes_.back().push_back(target_item(s->relation));
    for (size_t i = 0; i < s->n_using_clause; ++i) from_item(s->using_clause[i]);
    if (s->where_clause) predicate(s->where_clause, "WHERE");
    std::vector<OutputColumn> outputs = target_list(s->returning_list, s->n_returning_list, true);
    scopes_.pop_back();
    pop_with(s->with_clause);
    return outputs;
  }

  void merge(const PgQuery__MergeStmt* s) {
    push_with(s->with_clause);
    scopes_.emplace_back();
    if (s->relation) scopes_.back().push_back(target_item(s->relation));
    from_item(s->source_relation);
    if (s->join_condition) predicate(s->join_condition, "MERGE ON");
    for (size_t i = 0; i < s->n_merge_when_clauses; ++i) {
      const PgQuery__Node* w = s->merge_when_clauses[i];
      if (!is_node(w, PG_QUERY__NODE__NODE_MERGE_WHEN_CLAUSE)) continue;
      const PgQuery__MergeWhenClause* c = w->merge_when_clause;
      if (c->condition) predicate(c->condition, "MERGE WHEN");
      for (size_t k = 0; k < c->n_target_list; ++k) set_target(c->target_list[k]);
      for (size_t k = 0; k < c->n_values; ++k) write(expression(c->values[k]));
    }
    scopes_.pop_back();
    pop_with(s->with_clause);
  }

  // --- expressions -------------------------------------------------------------------

  // The lineage of one value expression: a plain column reference is as is, anything else
  // transformed from every source found inside it.
  ColumnLineage expression(const PgQuery__Node* n) {
    if (!n) return {};
    if (is_node(n, PG_QUERY__NODE__NODE_COLUMN_REF)) {
      std::optional<ColumnLineage> l = resolve(n->column_ref, false);
      return l ? *l : ColumnLineage{};
    }
    ColumnLineage acc;
    any(msg(n), &acc);
    return acc;
  }

  // Records every source of `n` as a predicate use of `clause`.
  void general(const PgQuery__Node* n, const char* clause) {
    ColumnLineage l = expression(n);
    add_predicates(l, clause);
  }

  void add_predicates(const ColumnLineage& l, const char* clause) {
    for (const auto& s : l.all()) out_->predicates.insert({s, clause, PredicateForm::kGeneral, {}});
  }

  // A boolean condition: AND/OR/NOT are looked through so `x IS NULL` and `a.c = b.c` keep
  // their narrow forms; everything else is a general use.
  void predicate(const PgQuery__Node* n, const char* clause) {
    if (!n) return;
    if (is_node(n, PG_QUERY__NODE__NODE_BOOL_EXPR)) {
      for (size_t i = 0; i < n->bool_expr->n_args; ++i) predicate(n->bool_expr->args[i], clause);
      return;
    }
    if (is_node(n, PG_QUERY__NODE__NODE_NULL_TEST) &&
        is_node(n->null_test->arg, PG_QUERY__NODE__NODE_COLUMN_REF)) {
      ColumnLineage l = expression(n->null_test->arg);
      if (l.transformed.empty()) {
        for (const auto& s : l.as_is)
          out_->predicates.insert({s, clause, PredicateForm::kIsNull, {}});
        return;
      }
    }
    if (is_node(n, PG_QUERY__NODE__NODE_A_EXPR) &&
        n->a_expr->kind == PG_QUERY__A__EXPR__KIND__AEXPR_OP && n->a_expr->n_name == 1 &&
        is_node(n->a_expr->name[0], PG_QUERY__NODE__NODE_STRING) &&
        str(n->a_expr->name[0]->string->sval) == "=" &&
        is_node(n->a_expr->lexpr, PG_QUERY__NODE__NODE_COLUMN_REF) &&
        is_node(n->a_expr->rexpr, PG_QUERY__NODE__NODE_COLUMN_REF)) {
      ColumnLineage a = expression(n->a_expr->lexpr);
      ColumnLineage b = expression(n->a_expr->rexpr);
      if (a.transformed.empty() && b.transformed.empty() && !a.as_is.empty() && !b.as_is.empty()) {
        for (const auto& x : a.as_is) {
          for (const auto& y : b.as_is) {
            out_->predicates.insert({x, clause, PredicateForm::kEqualityJoin, y});
            out_->predicates.insert({y, clause, PredicateForm::kEqualityJoin, x});
          }
        }
        return;
      }
    }
    general(n, clause);
  }

  // Collects, as transformed sources into `acc`, every source referenced anywhere in `m`.
  // Unknown node types are walked field by field: nothing is ignored.
  void any(const ProtobufCMessage* m, ColumnLineage* acc) {
    if (!m || failed()) return;
    if (++depth_ > kMaxDepth) {
      fail("expression nested too deeply");
      --depth_;
      return;
    }
    const ProtobufCMessageDescriptor* d = m->descriptor;
    if (d == &pg_query__column_ref__descriptor) {
      std::optional<ColumnLineage> l =
          resolve(reinterpret_cast<const PgQuery__ColumnRef*>(m), false);
      if (l) {
        acc->add_transformed(*l);
        for (const auto& s : l->all()) out_->computed.insert(s);
      }
    } else if (d == &pg_query__sub_link__descriptor) {
      const auto* sl = reinterpret_cast<const PgQuery__SubLink*>(m);
      any(msg(sl->testexpr), acc);
      if (sl->sub_link_type == PG_QUERY__SUB_LINK_TYPE__EXISTS_SUBLINK &&
          is_node(sl->subselect, PG_QUERY__NODE__NODE_SELECT_STMT)) {
        // EXISTS tells whether a row exists, decided by the sub-select's own predicates (which
        // select() records), whatever its columns are.
        select(sl->subselect->select_stmt);
      } else {
        any(msg(sl->subselect), acc);
      }
    } else if (d == &pg_query__select_stmt__descriptor) {
      // A sub-select used as a value (a function argument, an operand, ARRAY(...), IN): the
      // expression computes on its columns, returned or not (`set_config('x', (SELECT ssn
      // ...), false)` in an unused column or a FROM function stores the value elsewhere).
      for (const auto& o : select(reinterpret_cast<const PgQuery__SelectStmt*>(m))) {
        acc->add_transformed(o.lineage);
        for (const auto& src : o.lineage.all()) out_->computed.insert(src);
      }
    } else if (d == &pg_query__insert_stmt__descriptor || d == &pg_query__update_stmt__descriptor ||
               d == &pg_query__delete_stmt__descriptor) {
      fail("data-modifying statement inside an expression");
    } else if (d == &pg_query__func_call__descriptor) {
      func_call(reinterpret_cast<const PgQuery__FuncCall*>(m), acc);
    } else if (d == &pg_query__window_def__descriptor) {
      const auto* w = reinterpret_cast<const PgQuery__WindowDef*>(m);
      for (size_t i = 0; i < w->n_partition_clause; ++i) general(w->partition_clause[i], "window");
      for (size_t i = 0; i < w->n_order_clause; ++i) general(w->order_clause[i], "window");
      if (w->start_offset) general(w->start_offset, "window");
      if (w->end_offset) general(w->end_offset, "window");
    } else {
      fields(m, acc);
    }
    --depth_;
  }

  void fields(const ProtobufCMessage* m, ColumnLineage* acc) {
    each_child(m, [this, acc](const ProtobufCMessage* child) { any(child, acc); });
  }

  // Calls `visit` with every message-typed field of `m` (each element of repeated ones, the set
  // member of a oneof; null fields included).
  template <typename Visit>
  static void each_child(const ProtobufCMessage* m, Visit&& visit) {
    const ProtobufCMessageDescriptor* d = m->descriptor;
    const char* base = reinterpret_cast<const char*>(m);
    for (unsigned i = 0; i < d->n_fields; ++i) {
      const ProtobufCFieldDescriptor& f = d->fields[i];
      if (f.type != PROTOBUF_C_TYPE_MESSAGE) continue;
      if (f.label == PROTOBUF_C_LABEL_REPEATED) {
        size_t count = *reinterpret_cast<const size_t*>(base + f.quantifier_offset);
        auto* items = *reinterpret_cast<ProtobufCMessage* const* const*>(base + f.offset);
        for (size_t k = 0; k < count && items; ++k) visit(items[k]);
        continue;
      }
      if (f.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t which = *reinterpret_cast<const uint32_t*>(base + f.quantifier_offset);
        if (which != f.id) continue;
      }
      visit(*reinterpret_cast<ProtobufCMessage* const*>(base + f.offset));
    }
  }

  // Records a called function (for classify_functions) and whether it is one that runs SQL
  // text or reads a relation named by a value; returns its name.
  FunctionName note_function(const PgQuery__FuncCall* f) {
    FunctionName name;
    std::vector<std::string_view> parts;
    for (size_t i = 0; i < f->n_funcname; ++i) {
      if (is_node(f->funcname[i], PG_QUERY__NODE__NODE_STRING)) {
        parts.push_back(str(f->funcname[i]->string->sval));
      }
    }
    if (!parts.empty()) {
      name.name = std::string(parts.back());
      if (parts.size() >= 2) name.schema = std::string(parts[parts.size() - 2]);
      functions_.insert(name);
      if ((name.schema.empty() || name.schema == "pg_catalog") && query_text_function(name.name)) {
        out_->query_text_functions.insert(name);
      }
    }
    return name;
  }

  void func_call(const PgQuery__FuncCall* f, ColumnLineage* acc) {
    FunctionName name = note_function(f);
    // count(*) / count(col) reveal how many rows, not a value. Only plain column references
    // are ignored: count(set_config('x', ssn, false)) would store the value elsewhere.
    bool count = name.name == "count" && (name.schema.empty() || name.schema == "pg_catalog");
    for (size_t i = 0; count && i < f->n_args; ++i) {
      if (!is_node(f->args[i], PG_QUERY__NODE__NODE_COLUMN_REF)) count = false;
    }
    if (!count) {
      for (size_t i = 0; i < f->n_args; ++i) any(msg(f->args[i]), acc);
    } else {
      // Neither a source nor computed on, but count(col) counts the rows where col IS NOT
      // NULL: over a chosen row it tells whether the value is NULL, exactly what
      // `WHERE col IS NOT NULL` tells. The same predicate form, so the same mask setting
      // (allow_predicates is_null) decides both.
      for (size_t i = 0; i < f->n_args; ++i) {
        ColumnLineage l = expression(f->args[i]);
        for (const auto& src : l.all()) {
          out_->predicates.insert({src, "count", PredicateForm::kIsNull, {}});
        }
      }
    }
    // An aggregate's DISTINCT compares its arguments' values: count(DISTINCT ssn) over two
    // chosen rows tells whether they are equal (an equality oracle, like GROUP BY).
    if (f->agg_distinct) {
      for (size_t i = 0; i < f->n_args; ++i) general(f->args[i], "aggregate DISTINCT");
    }
    for (size_t i = 0; i < f->n_agg_order; ++i) general(f->agg_order[i], "aggregate ORDER BY");
    if (f->agg_filter) predicate(f->agg_filter, "FILTER");
    if (f->over) any(msg(f->over), acc);
  }

  // --- names -------------------------------------------------------------------------

  static std::string qualifier_text(PgQuery__Node* const* fields, size_t n) {
    std::string out;
    for (size_t i = 0; i < n; ++i) {
      if (i) out += '.';
      if (is_node(fields[i], PG_QUERY__NODE__NODE_STRING)) out += str(fields[i]->string->sval);
    }
    return out;
  }

  // The FROM item named by a qualifier (`t`, `s.t`, `db.s.t`), innermost scope first.
  const FromItem* find_item(PgQuery__Node* const* fields, size_t n, size_t* level = nullptr) const {
    std::vector<std::string_view> q;
    for (size_t i = 0; i < n; ++i) {
      if (!is_node(fields[i], PG_QUERY__NODE__NODE_STRING)) return nullptr;
      q.push_back(str(fields[i]->string->sval));
    }
    if (q.empty()) return nullptr;
    for (size_t s = scopes_.size(); s-- > 0;) {
      for (const FromItem& item : scopes_[s]) {
        bool match = false;
        if (q.size() == 1) {
          match = item.alias == q[0];
        } else {
          std::string_view schema = q[q.size() - 2];
          match = item.relname == q.back() && item.alias == item.relname &&
                  std::find(item.schemas.begin(), item.schemas.end(), schema) != item.schemas.end();
        }
        if (match) {
          if (level) *level = s;
          return &item;
        }
      }
    }
    return nullptr;
  }

  // The column `name` of `item` (several columns may carry one name after an alias list
  // renamed one: their union, as PostgreSQL would refuse the ambiguity anyway).
  static std::optional<ScopeColumn> column_of(const FromItem& item, std::string_view name) {
    std::optional<ScopeColumn> found;
    for (const auto& c : item.columns) {
      if (c.name != name) continue;
      if (!found) {
        found = c;
      } else {
        found->lineage.add(c.lineage);
      }
    }
    return found;
  }

  static ColumnLineage whole_row(const FromItem& item) {
    ColumnLineage l;
    for (const auto& c : item.columns) l.add_transformed(c.lineage);
    if (item.open) l.add_transformed(item.open_lineage);
    return l;
  }

  // A ColumnRef's lineage; nullopt (and a failure unless quiet) when it names nothing.
  std::optional<ColumnLineage> resolve(const PgQuery__ColumnRef* c, bool quiet) {
    size_t n = c->n_fields;
    if (n == 0) return std::nullopt;
    const PgQuery__Node* last = c->fields[n - 1];
    if (is_node(last, PG_QUERY__NODE__NODE_A_STAR)) {
      // `t.*` / `*` inside an expression (row_to_json(t.*), count(*) handled by the caller).
      if (n == 1) {
        ColumnLineage l;
        if (!scopes_.empty()) {
          for (const FromItem& item : scopes_.back()) l.add_transformed(whole_row(item));
        }
        return l;
      }
      const FromItem* item = find_item(c->fields, n - 1);
      if (!item) {
        if (!quiet) fail("cannot resolve " + qualifier_text(c->fields, n - 1) + ".*");
        return std::nullopt;
      }
      return whole_row(*item);
    }
    if (!is_node(last, PG_QUERY__NODE__NODE_STRING)) return std::nullopt;
    std::string_view column = str(last->string->sval);
    if (n == 1) {
      // Innermost level first; an open item (a function's columns) matches any name but does
      // not stop the search, so a real column further out is not missed (fail closed).
      ColumnLineage l;
      bool found = false;
      for (size_t s = scopes_.size(); s-- > 0;) {
        bool here = false;
        for (const FromItem& item : scopes_[s]) {
          if (item.qualified_only) continue;
          if (std::optional<ScopeColumn> col = column_of(item, column)) {
            ColumnLineage cl = col->lineage;
            if (s + 1 != scopes_.size()) cl.origin_lost = true;
            l.add(cl);
            here = found = true;
          } else if (item.open) {
            l.add_transformed(item.open_lineage);
            found = true;
          }
        }
        if (here) return l;
      }
      // A FROM item's name used as a value: the whole row.
      for (size_t s = scopes_.size(); s-- > 0;) {
        for (const FromItem& item : scopes_[s]) {
          if (item.alias == column) {
            l.add_transformed(whole_row(item));
            return l;
          }
        }
      }
      if (found) return l;
      if (!quiet) fail("column " + std::string(column) + " not found in any FROM item");
      return std::nullopt;
    }
    size_t level = 0;
    if (const FromItem* item = find_item(c->fields, n - 1, &level)) {
      ColumnLineage l;
      if (std::optional<ScopeColumn> col = column_of(*item, column)) {
        l = col->lineage;
        if (level + 1 != scopes_.size()) l.origin_lost = true;
        return l;
      }
      if (item->open) {
        l.add_transformed(item->open_lineage);
        return l;
      }
      if (!quiet) {
        fail("column " + qualifier_text(c->fields, n) + " not found");
      }
      return std::nullopt;
    }
    // `col.field` is a composite column's field only in parentheses; without a FROM item of
    // that name PostgreSQL refuses, so an unresolved qualifier is an error here too.
    if (!quiet) fail("cannot resolve " + qualifier_text(c->fields, n));
    return std::nullopt;
  }

 public:
  // After the walk: functions cp cannot see into.
  void classify_functions() {
    for (const FunctionName& f : functions_) {
      if (failed()) return;
      if (!f.schema.empty()) {
        if (f.schema != "pg_catalog") out_->opaque_functions.insert(f);
        continue;
      }
      auto schemas = catalog_.function_schemas(f.name);
      if (!schemas) {
        fail(schemas.status().message());
        return;
      }
      bool builtin =
          !schemas->empty() && std::all_of(schemas->begin(), schemas->end(),
                                           [](const std::string& s) { return s == "pg_catalog"; });
      if (!builtin) out_->opaque_functions.insert(f);
    }
  }

  static StatementLineage lineage_at_depth(std::string_view sql, LineageCatalog& catalog,
                                           int view_depth);

 private:
  LineageCatalog& catalog_;
  int view_depth_;
  StatementLineage* out_;
  std::vector<Scope> scopes_;
  std::vector<int> merged_columns_;  // per SELECT level: columns merged by USING / NATURAL
  std::vector<Cte> ctes_;
  std::set<FunctionName> functions_;
  std::map<std::string, std::vector<CatalogRelation>> relation_cache_;
  int depth_ = 0;
};

StatementLineage LineageWalker::lineage_at_depth(std::string_view sql, LineageCatalog& catalog,
                                                 int view_depth) {
  StatementLineage out;
  const std::string text(sql);
  PgQueryProtobufParseResult parsed = pg_query_parse_protobuf(text.c_str());
  if (parsed.error) {
    out.error = std::string("cannot parse: ") +
                (parsed.error->message ? parsed.error->message : "syntax error");
    pg_query_free_protobuf_parse_result(parsed);
    return out;
  }
  PgQuery__ParseResult* tree = pg_query__parse_result__unpack(
      nullptr, parsed.parse_tree.len, reinterpret_cast<const uint8_t*>(parsed.parse_tree.data));
  pg_query_free_protobuf_parse_result(parsed);
  if (!tree) {
    out.error = "parse tree could not be decoded";
    return out;
  }
  if (tree->n_stmts != 1 || !tree->stmts[0] || !tree->stmts[0]->stmt) {
    out.error = "expected exactly one statement";
  } else {
    LineageWalker w(catalog, view_depth, &out);
    w.statement(tree->stmts[0]->stmt);
    w.classify_functions();
  }
  pg_query__parse_result__free_unpacked(tree, nullptr);
  return out;
}

}  // namespace

StatementLineage compute_lineage(const PgQuery__Node* stmt, LineageCatalog& catalog) {
  StatementLineage out;
  LineageWalker w(catalog, 0, &out);
  w.statement(stmt);
  w.classify_functions();
  return out;
}

StatementLineage lineage_of_sql(std::string_view sql, LineageCatalog& catalog) {
  return LineageWalker::lineage_at_depth(sql, catalog, 0);
}

Result<std::vector<OutputColumn>> view_lineage(const std::string& schema, const std::string& name,
                                               LineageCatalog& catalog) {
  auto rels = catalog.relations(schema, name);
  if (!rels) return rels.status();
  for (const CatalogRelation& rel : *rels) {
    if (rel.kind != 'v' && rel.kind != 'm') continue;
    StatementLineage l = LineageWalker::lineage_at_depth(rel.view_definition, catalog, 1);
    if (!l.error.empty())
      return failed_precondition("view " + schema + "." + name + ": " + l.error);
    if (l.outputs.size() != rel.columns.size()) {
      return failed_precondition("view " + schema + "." + name + ": column count differs");
    }
    for (size_t i = 0; i < l.outputs.size(); ++i) l.outputs[i].name = rel.columns[i];
    return l.outputs;
  }
  return not_found("relation " + schema + "." + name + " is not a view");
}

}  // namespace pgwarden::policy
