#include "controlplane/policy/lineage.h"

#include <gtest/gtest.h>

#include "controlplane/policy/fake_lineage_catalog.h"
#include "controlplane/policy/sql_analysis.h"

namespace pgwarden::policy {
namespace {

std::string short_name(const SourceColumn& s) {
  std::string t = s.schema + "." + s.table;
  if (t == "crm.customers") return "c." + s.column;
  if (t == "crm.orders") return "o." + s.column;
  if (t == "public.customers") return "pc." + s.column;
  return s.qualified();
}

std::string join(const std::set<SourceColumn>& s) {
  std::string out;
  for (const auto& c : s) {
    if (!out.empty()) out += ",";
    out += short_name(c);
  }
  return out;
}

// "name=as_is~transformed!" per output, ";"-separated ("!" = origin lost).
std::string outputs(const StatementLineage& l) {
  std::string out;
  for (const auto& o : l.outputs) {
    if (!out.empty()) out += ";";
    out += o.name + "=" + join(o.lineage.as_is);
    if (!o.lineage.transformed.empty()) out += "~" + join(o.lineage.transformed);
    if (o.lineage.origin_lost && !o.lineage.as_is.empty()) out += "!";
  }
  return out;
}

// "CLAUSE:col[/null|/join]" sorted, ";"-separated.
std::string predicates(const StatementLineage& l) {
  std::set<std::string> items;
  for (const auto& p : l.predicates) {
    std::string s = p.clause + ":" + short_name(p.source);
    if (p.form == PredicateForm::kIsNull) s += "/null";
    if (p.form == PredicateForm::kEqualityJoin) s += "/join=" + short_name(p.other);
    items.insert(s);
  }
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ";";
    out += s;
  }
  return out;
}

struct Case {
  const char* sql;
  const char* outputs;     // expected outputs(), or nullptr to skip
  const char* predicates;  // expected predicates(), or nullptr to skip
};

class LineageCorpus : public ::testing::TestWithParam<Case> {};

TEST_P(LineageCorpus, OutputsAndPredicates) {
  FakeCatalog catalog;
  StatementLineage l = lineage_of_sql(GetParam().sql, catalog);
  ASSERT_EQ(l.error, "") << GetParam().sql;
  if (GetParam().outputs) {
    EXPECT_EQ(outputs(l), GetParam().outputs) << GetParam().sql;
  }
  if (GetParam().predicates) {
    EXPECT_EQ(predicates(l), GetParam().predicates) << GetParam().sql;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Corpus, LineageCorpus,
    ::testing::Values(
        // As is: plain references, aliases, qualification, quoting.
        Case{"SELECT ssn FROM crm.customers", "ssn=c.ssn", ""},
        Case{"SELECT c.ssn AS x, \"email\" FROM crm.customers c", "x=c.ssn;email=c.email", ""},
        Case{"SELECT crm.customers.ssn FROM crm.customers", "ssn=c.ssn", ""},
        Case{"SELECT * FROM crm.customers",
             "id=c.id;name=c.name;ssn=c.ssn;email=c.email;phone=c.phone", ""},
        Case{"TABLE crm.orders", "id=o.id;customer_id=o.customer_id;total=o.total;note=o.note", ""},
        Case{"SELECT o.*, c.ssn FROM crm.orders o JOIN crm.customers c ON c.id = o.customer_id",
             "id=o.id;customer_id=o.customer_id;total=o.total;note=o.note;ssn=c.ssn",
             "JOIN ON:c.id/join=o.customer_id;JOIN ON:o.customer_id/join=c.id"},
        // Sub-selects, CTEs, LATERAL.
        Case{"SELECT x FROM (SELECT ssn AS x FROM crm.customers) s", "x=c.ssn", ""},
        Case{"SELECT s.y FROM (SELECT ssn FROM crm.customers) AS s(y)", "y=c.ssn", ""},
        Case{"WITH t AS (SELECT * FROM crm.customers) SELECT ssn, email FROM t",
             "ssn=c.ssn;email=c.email", ""},
        Case{"WITH t(a) AS (SELECT md5(ssn) FROM crm.customers) SELECT a FROM t", "a=~c.ssn", ""},
        Case{"SELECT l.s FROM crm.customers c, LATERAL (SELECT c.ssn AS s) l", "s=c.ssn!", ""},
        // Transformed.
        Case{"SELECT md5(ssn) FROM crm.customers", "md5=~c.ssn", ""},
        Case{"SELECT ssn::text || '' AS x FROM crm.customers", "x=~c.ssn", ""},
        Case{"SELECT ssn COLLATE \"C\" FROM crm.customers", "?column?=~c.ssn", ""},
        Case{"SELECT (c).ssn FROM crm.customers c", "?column?=~c.email,c.id,c.name,c.phone,c.ssn",
             ""},
        Case{"SELECT c FROM crm.customers c", "c=~c.email,c.id,c.name,c.phone,c.ssn", ""},
        Case{"SELECT row_to_json(c.*) FROM crm.customers c",
             "row_to_json=~c.email,c.id,c.name,c.phone,c.ssn", ""},
        Case{"SELECT to_jsonb(c) FROM crm.customers c",
             "to_jsonb=~c.email,c.id,c.name,c.phone,c.ssn", ""},
        Case{"SELECT ROW(id, ssn) FROM crm.customers", "?column?=~c.id,c.ssn", ""},
        Case{"SELECT string_agg(ssn, ',') FROM crm.customers", "string_agg=~c.ssn", ""},
        Case{"SELECT format('%s', ssn) FROM crm.customers", "format=~c.ssn", ""},
        Case{"SELECT CASE WHEN ssn LIKE '1%' THEN 1 END FROM crm.customers", "?column?=~c.ssn", ""},
        Case{"SELECT coalesce(ssn, email) FROM crm.customers", "?column?=~c.email,c.ssn", ""},
        Case{"SELECT (SELECT ssn FROM crm.customers LIMIT 1)", "?column?=~c.ssn", ""},
        Case{"SELECT ARRAY(SELECT ssn FROM crm.customers)", "?column?=~c.ssn", ""},
        Case{"SELECT unnest(array[ssn]) FROM crm.customers", "unnest=~c.ssn", ""},
        Case{"SELECT u FROM crm.customers c, unnest(array[c.ssn]) u", "u=~c.ssn", ""},
        Case{"SELECT count(*), count(ssn) FROM crm.customers", "count=;count=", "count:c.ssn/null"},
        Case{"SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM crm.customers",
             "count=", "FILTER:c.ssn"},
        // Set operations: as is, but no origin in the RowDescription; all but UNION ALL
        // compare rows (predicates).
        Case{"SELECT ssn FROM crm.customers UNION SELECT note FROM crm.orders", "ssn=c.ssn,o.note!",
             "UNION:c.ssn;UNION:o.note"},
        Case{"SELECT ssn FROM crm.customers UNION ALL SELECT note FROM crm.orders",
             "ssn=c.ssn,o.note!", ""},
        Case{"SELECT 'x' INTERSECT SELECT email FROM crm.customers", "?column?=c.email!",
             "INTERSECT:c.email"},
        Case{"SELECT * FROM crm.customers c, LATERAL (VALUES (c.id)) v(x)", nullptr, ""},
        Case{"SELECT x FROM crm.customers c, LATERAL (VALUES (c.ssn)) v(x)", "x=c.ssn!", ""},
        Case{"SELECT count(DISTINCT ssn) FROM crm.customers", "count=",
             "aggregate DISTINCT:c.ssn;count:c.ssn/null"},
        Case{"VALUES (1, 'a')", "column1=;column2=", ""},
        // Views (and views over views): lineage of the view columns.
        Case{"SELECT * FROM crm.customers_view", "id=c.id;name=c.name;ssn=c.ssn;contact=~c.email",
             ""},
        Case{"SELECT ssn, ident FROM crm.customers_v2", "ssn=c.ssn;ident=c.id", ""},
        Case{"SELECT id FROM crm.vip", "id=c.id", "WHERE:c.ssn"},
        // Unqualified names: every schema's candidate (search_path is unknown).
        Case{"SELECT id FROM customers", "id=c.id,pc.id", ""},
        // Predicates everywhere.
        Case{"SELECT id FROM crm.customers WHERE ssn LIKE '123%'", "id=c.id", "WHERE:c.ssn"},
        Case{"SELECT id FROM crm.customers WHERE email IS NOT NULL AND phone IS NULL", "id=c.id",
             "WHERE:c.email/null;WHERE:c.phone/null"},
        Case{"SELECT id FROM crm.customers GROUP BY ssn, id HAVING count(email) > 1", "id=c.id",
             "GROUP BY:c.id;GROUP BY:c.ssn;count:c.email/null"},
        Case{"SELECT id FROM crm.customers GROUP BY id HAVING max(email) > 'a'", "id=c.id",
             "GROUP BY:c.id;HAVING:c.email"},
        Case{"SELECT id FROM crm.customers ORDER BY email", nullptr, "ORDER BY:c.email"},
        Case{"SELECT ssn AS s FROM crm.customers ORDER BY 1", nullptr, "ORDER BY:c.ssn"},
        Case{"SELECT md5(ssn) AS h FROM crm.customers ORDER BY h", nullptr, "ORDER BY:c.ssn"},
        Case{"SELECT DISTINCT ON (ssn) id FROM crm.customers", nullptr, "DISTINCT ON:c.ssn"},
        Case{"SELECT DISTINCT id FROM crm.customers", nullptr, "DISTINCT:c.id"},
        Case{"SELECT row_number() OVER (PARTITION BY ssn ORDER BY phone) FROM crm.customers",
             nullptr, "window:c.phone;window:c.ssn"},
        Case{"SELECT x FROM (SELECT ssn AS x FROM crm.customers) s WHERE x = '1'", nullptr,
             "WHERE:c.ssn"},
        Case{"SELECT id FROM crm.orders o WHERE EXISTS (SELECT 1 FROM crm.customers c "
             "WHERE c.id = o.customer_id AND c.ssn > '5')",
             "id=o.id", "WHERE:c.id/join=o.customer_id;WHERE:c.ssn;WHERE:o.customer_id/join=c.id"},
        Case{"SELECT id FROM crm.orders WHERE customer_id IN (SELECT id FROM crm.customers)",
             nullptr, "WHERE:c.id;WHERE:o.customer_id"},
        Case{"SELECT 1 FROM generate_series(1, 1) g WHERE EXISTS (SELECT 1 FROM crm.customers "
             "c2 WHERE ssn LIKE '1%')",
             nullptr, "WHERE:c.ssn"},
        Case{"SELECT o.id FROM crm.orders o JOIN crm.customers c USING (id)", nullptr,
             "JOIN USING:c.id/join=o.id;JOIN USING:o.id/join=c.id"},
        Case{"SELECT string_agg(name, ',' ORDER BY ssn) FROM crm.customers", nullptr,
             "aggregate ORDER BY:c.ssn"},
        // DML: written data and RETURNING (origin lost).
        Case{"UPDATE crm.orders SET note = c.ssn FROM crm.customers c WHERE c.id = "
             "crm.orders.customer_id RETURNING crm.orders.id",
             "id=o.id!", nullptr},
        Case{"DELETE FROM crm.customers WHERE id = 1 RETURNING ssn", "ssn=c.ssn!", "WHERE:c.id"},
        // Recursive CTE: the recursion carries the sources; set operation loses the origin.
        Case{"WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM crm.customers UNION ALL "
             "SELECT n + 1, s FROM r WHERE n < 3) SELECT s FROM r",
             nullptr, nullptr}));

TEST(Lineage, RecursiveCteCarriesSourcesWithOriginLost) {
  FakeCatalog catalog;
  StatementLineage l = lineage_of_sql(
      "WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM crm.customers UNION ALL "
      "SELECT n + 1, s FROM r WHERE n < 3) SELECT s FROM r",
      catalog);
  ASSERT_EQ(l.error, "");
  ASSERT_EQ(l.outputs.size(), 1u);
  EXPECT_TRUE(l.outputs[0].lineage.all().count({"crm", "customers", "ssn"}));
  EXPECT_TRUE(l.outputs[0].lineage.origin_lost);
}

TEST(Lineage, WrittenDataAndSinks) {
  FakeCatalog catalog;
  StatementLineage l =
      lineage_of_sql("INSERT INTO crm.orders (note) SELECT ssn FROM crm.customers", catalog);
  ASSERT_EQ(l.error, "");
  EXPECT_EQ(join(l.written_from), "c.ssn");
  EXPECT_EQ(l.written_to, "crm.orders");

  l = lineage_of_sql("UPDATE crm.orders SET note = (SELECT md5(ssn) FROM crm.customers LIMIT 1)",
                     catalog);
  EXPECT_EQ(join(l.written_from), "c.ssn");

  l = lineage_of_sql("CREATE TABLE t AS SELECT email FROM crm.customers", catalog);
  EXPECT_EQ(l.sink, "CREATE TABLE AS");
  EXPECT_EQ(join(l.written_from), "c.email");

  l = lineage_of_sql("SELECT phone INTO t2 FROM crm.customers", catalog);
  EXPECT_EQ(l.sink, "SELECT INTO");
  EXPECT_EQ(join(l.written_from), "c.phone");

  l = lineage_of_sql("COPY (SELECT email FROM crm.customers) TO STDOUT", catalog);
  EXPECT_EQ(l.sink, "COPY (query) TO");
  EXPECT_EQ(outputs(l), "email=c.email");

  l = lineage_of_sql("DECLARE cur CURSOR FOR SELECT md5(ssn) FROM crm.customers", catalog);
  EXPECT_EQ(outputs(l), "md5=~c.ssn");

  l = lineage_of_sql("PREPARE p AS SELECT id FROM crm.customers WHERE ssn = $1", catalog);
  EXPECT_EQ(predicates(l), "WHERE:c.ssn");

  l = lineage_of_sql("EXPLAIN ANALYZE SELECT id FROM crm.customers WHERE ssn = '1'", catalog);
  EXPECT_EQ(outputs(l), "");
  EXPECT_EQ(predicates(l), "WHERE:c.ssn");
}

TEST(Lineage, OpaqueFunctionsAndDo) {
  FakeCatalog catalog;
  StatementLineage l = lineage_of_sql("SELECT leak(id) FROM crm.customers", catalog);
  ASSERT_EQ(l.error, "");
  ASSERT_EQ(l.opaque_functions.size(), 1u);
  EXPECT_EQ(l.opaque_functions.begin()->name, "leak");

  l = lineage_of_sql("SELECT hstore(c) FROM crm.customers c", catalog);
  EXPECT_EQ(l.opaque_functions.size(), 1u);
  l = lineage_of_sql("SELECT public.md5('x')", catalog);
  EXPECT_EQ(l.opaque_functions.size(), 1u);
  l = lineage_of_sql("SELECT pg_catalog.md5('x'), lower('X')", catalog);
  EXPECT_TRUE(l.opaque_functions.empty());
  l = lineage_of_sql("SELECT not_a_known_function(1)", catalog);
  EXPECT_EQ(l.opaque_functions.size(), 1u);
  l = lineage_of_sql("CALL crm.proc()", catalog);
  EXPECT_EQ(l.opaque_functions.size(), 1u);
  l = lineage_of_sql("DO $$ BEGIN END $$", catalog);
  EXPECT_EQ(l.opaque_code, "DO");
}

TEST(Lineage, FailsClosedOnWhatItCannotResolve) {
  FakeCatalog catalog;
  EXPECT_NE(lineage_of_sql("SELECT \"SSN\" FROM crm.customers", catalog).error, "");
  EXPECT_NE(lineage_of_sql("SELECT x FROM crm.nothing", catalog).error, "");
  EXPECT_NE(lineage_of_sql("SELECT q.ssn FROM crm.customers", catalog).error, "");
  std::string e = lineage_of_sql("SELECT id FROM crm.loop", catalog).error;
  EXPECT_NE(e.find("nested"), std::string::npos) << e;
}

TEST(Lineage, ViewLineageForThePlanner) {
  FakeCatalog catalog;
  auto cols = view_lineage("crm", "customers_v2", catalog);
  ASSERT_TRUE(cols.is_ok());
  ASSERT_EQ(cols->size(), 2u);
  EXPECT_EQ((*cols)[1].name, "ssn");
  EXPECT_EQ(join((*cols)[1].lineage.as_is), "c.ssn");
  EXPECT_FALSE(view_lineage("crm", "customers", catalog).is_ok());
}

TEST(Lineage, AnalyseSqlCarriesLineageIntoPrepareInner) {
  FakeCatalog catalog;
  SqlAnalysis a = analyse_sql("PREPARE p AS SELECT md5(ssn) FROM crm.customers", &catalog);
  ASSERT_EQ(a.statements.size(), 1u);
  ASSERT_TRUE(a.statements[0].lineage);
  ASSERT_TRUE(a.statements[0].inner);
  ASSERT_TRUE(a.statements[0].inner->lineage);
  EXPECT_EQ(outputs(*a.statements[0].inner->lineage), "md5=~c.ssn");
  EXPECT_FALSE(analyse_sql("SELECT 1").statements[0].lineage);
}

}  // namespace
}  // namespace pgwarden::policy
