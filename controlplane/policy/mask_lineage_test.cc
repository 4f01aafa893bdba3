#include "controlplane/policy/mask_lineage.h"

#include <gtest/gtest.h>

#include "controlplane/policy/fake_lineage_catalog.h"

namespace pgwarden::policy {
namespace {

// The quick-start shape: ssn, email and phone of crm.customers masked; email allows
// IS [NOT] NULL and equality joins.
Policy masking_policy() {
  Policy p;
  p.name = "agents";
  MaskRule ssn;
  ssn.name_pattern = "*ssn*";
  ssn.function = "hash";
  MaskRule email;
  email.column_glob = "crm.*.email";
  email.function = "email";
  email.allow_predicates = {"is_null", "equality_join"};
  MaskRule phone;
  phone.column_glob = "crm.customers.phone";
  phone.function = "redact";
  MaskRule inet;
  inet.type_name = "inet";
  inet.function = "null";
  p.masks = {ssn, email, phone, inet};
  p.allowed_functions = {"public.allowed_fn"};
  return p;
}

struct Case {
  const char* sql;
  const char* rule;  // "" = allowed
};

class MaskLineageCorpus : public ::testing::TestWithParam<Case> {};

TEST_P(MaskLineageCorpus, Decision) {
  FakeCatalog catalog;
  catalog.add_function("allowed_fn", "public");
  StatementLineage l = lineage_of_sql(GetParam().sql, catalog);
  auto refusal = check_lineage(masking_policy(), l);
  EXPECT_EQ(refusal ? refusal->rule : std::string(), GetParam().rule)
      << GetParam().sql << "\n"
      << (refusal ? refusal->message : std::string());
}

INSTANTIATE_TEST_SUITE_P(
    Corpus, MaskLineageCorpus,
    ::testing::Values(
        // Masked as is: the mask plan masks them.
        Case{"SELECT ssn, email, phone FROM crm.customers", ""},
        Case{"SELECT * FROM crm.customers", ""},
        Case{"SELECT x FROM (SELECT ssn AS x FROM crm.customers) s", ""},
        Case{"WITH t AS (SELECT * FROM crm.customers) SELECT * FROM t", ""},
        Case{"SELECT * FROM crm.customers_v2", ""},
        Case{"SELECT count(*), count(id) FROM crm.customers", ""},
        // count(col) counts the non-NULL values: an IS NULL test, allowed where the mask
        // allows is_null (email), refused elsewhere.
        Case{"SELECT count(email) FROM crm.customers", ""},
        Case{"SELECT count(ssn) FROM crm.customers WHERE id = 3", "masked_predicate"},
        Case{"SELECT count(c.phone) FROM crm.customers c", "masked_predicate"},
        Case{"DECLARE c CURSOR FOR SELECT ssn FROM crm.customers", ""},
        Case{"SELECT id, name FROM crm.customers WHERE id = 3 ORDER BY name", ""},
        // Derived from a masked source.
        Case{"SELECT md5(ssn) FROM crm.customers", "masked_derived"},
        Case{"SELECT ssn::text || '' FROM crm.customers", "masked_derived"},
        Case{"SELECT ssn::bytea FROM crm.customers", "masked_derived"},
        Case{"SELECT reverse(email) FROM crm.customers", "masked_derived"},
        Case{"SELECT split_part(email, '@', 1) FROM crm.customers", "masked_derived"},
        Case{"SELECT (c).ssn FROM crm.customers c", "masked_derived"},
        Case{"SELECT c FROM crm.customers c", "masked_derived"},
        Case{"SELECT to_jsonb(c) FROM crm.customers c", "masked_derived"},
        Case{"SELECT row_to_json(c.*) FROM crm.customers c", "masked_derived"},
        Case{"SELECT json_agg(c) FROM crm.customers c", "masked_derived"},
        Case{"SELECT array_agg(phone) FROM crm.customers", "masked_derived"},
        Case{"SELECT string_agg(ssn, ',') FROM crm.customers", "masked_derived"},
        Case{"SELECT format('%s', ssn) FROM crm.customers", "masked_derived"},
        Case{"SELECT ssn COLLATE \"C\" FROM crm.customers", "masked_derived"},
        Case{"SELECT CASE WHEN ssn LIKE '1%' THEN 1 END FROM crm.customers", "masked_derived"},
        Case{"SELECT (SELECT ssn FROM crm.customers LIMIT 1)", "masked_derived"},
        Case{"SELECT ARRAY(SELECT ssn FROM crm.customers)", "masked_derived"},
        Case{"SELECT unnest(array[ssn]) FROM crm.customers", "masked_derived"},
        Case{"SELECT u FROM crm.customers c, unnest(array[c.ssn]) u", "masked_derived"},
        Case{"SELECT ROW(id, email) FROM crm.customers", "masked_derived"},
        Case{"SELECT contact FROM crm.customers_view", "masked_derived"},
        Case{"SELECT * FROM crm.customers_view", "masked_derived"},
        Case{"SELECT x FROM (SELECT md5(ssn) AS x FROM crm.customers) s", "masked_derived"},
        // No origin in the RowDescription.
        Case{"SELECT ssn FROM crm.customers UNION SELECT 'x'", "masked_origin_lost"},
        Case{"SELECT email FROM crm.customers EXCEPT SELECT note FROM crm.orders",
             "masked_origin_lost"},
        Case{"SELECT l.s FROM crm.customers c, LATERAL (SELECT c.ssn AS s) l",
             "masked_origin_lost"},
        Case{"DELETE FROM crm.customers WHERE id = 1 RETURNING phone", "masked_origin_lost"},
        // Predicates.
        Case{"SELECT id FROM crm.customers WHERE ssn LIKE '123%'", "masked_predicate"},
        Case{"SELECT id FROM crm.customers WHERE email = 'x@y'", "masked_predicate"},
        Case{"SELECT id FROM crm.customers WHERE email IS NOT NULL", ""},
        Case{"SELECT id FROM crm.customers WHERE phone IS NULL", "masked_predicate"},
        Case{"SELECT a.id FROM crm.customers a JOIN crm.customers b ON a.email = b.email", ""},
        Case{"SELECT a.id FROM crm.customers a JOIN crm.customers b ON a.ssn = b.ssn",
             "masked_predicate"},
        Case{"SELECT a.id FROM crm.customers a JOIN crm.orders o ON a.email = o.note",
             "masked_predicate"},
        Case{"SELECT id FROM crm.customers ORDER BY phone", "masked_predicate"},
        Case{"SELECT ssn FROM crm.customers ORDER BY 1", "masked_predicate"},
        Case{"SELECT count(*) FROM crm.customers GROUP BY email", "masked_predicate"},
        Case{"SELECT DISTINCT ON (ssn) id FROM crm.customers", "masked_predicate"},
        Case{"SELECT rank() OVER (ORDER BY ssn) FROM crm.customers", "masked_predicate"},
        Case{"SELECT id FROM crm.customers HAVING max(ssn) > '5'", "masked_predicate"},
        Case{"SELECT x FROM (SELECT ssn AS x FROM crm.customers) s WHERE x > '5'",
             "masked_predicate"},
        Case{"SELECT ident FROM crm.customers_v2 WHERE ssn = '1'", "masked_predicate"},
        Case{"SELECT id FROM crm.vip", "masked_predicate"},
        Case{"SELECT id FROM crm.orders WHERE customer_id IN (SELECT id FROM crm.customers "
             "WHERE ssn > '5')",
             "masked_predicate"},
        Case{"SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM crm.customers", "masked_predicate"},
        Case{"DELETE FROM crm.customers WHERE ssn = '1'", "masked_predicate"},
        Case{"EXPLAIN ANALYZE SELECT id FROM crm.customers WHERE ssn = '1'", "masked_predicate"},
        // Copies out of the mask's reach.
        Case{"COPY (SELECT ssn FROM crm.customers) TO STDOUT", "masked_copy"},
        Case{"COPY (SELECT id, name FROM crm.customers) TO STDOUT", ""},
        Case{"CREATE TABLE t AS SELECT email FROM crm.customers", "masked_copied"},
        Case{"SELECT phone INTO t2 FROM crm.customers", "masked_copied"},
        Case{"INSERT INTO crm.orders (note) SELECT ssn FROM crm.customers", "masked_copied"},
        Case{"UPDATE crm.orders SET note = (SELECT email FROM crm.customers LIMIT 1)",
             "masked_copied"},
        Case{"INSERT INTO crm.orders (note) VALUES ('x')", ""},
        // Opaque code.
        Case{"SELECT leak(id) FROM crm.customers", "opaque_function"},
        Case{"SELECT hstore(c) FROM crm.customers c", "opaque_function"},
        Case{"SELECT allowed_fn(1)", ""}, Case{"CALL crm.proc()", "opaque_function"},
        Case{"DO $$ BEGIN END $$", "opaque_code"},
        // Side effects hidden in count(), positions shifted by USING, outer-level stars.
        Case{"SELECT count(set_config('x.y', ssn, false)) FROM crm.customers", "masked_derived"},
        Case{"SELECT * FROM crm.orders o JOIN crm.customers c USING (id) ORDER BY 7",
             "masked_predicate"},
        Case{"SELECT l.* FROM crm.customers c, LATERAL (SELECT c.*) l", "masked_origin_lost"},
        Case{"SELECT x.* FROM crm.customers c, LATERAL (SELECT c.*) l, LATERAL (SELECT l.id) x",
             ""},
        Case{"SELECT id FROM crm.customers WHERE email IS NULL OR email LIKE 'a%'",
             "masked_predicate"},
        Case{"SELECT a.id FROM crm.customers a JOIN (SELECT lower(email) AS email FROM "
             "crm.customers) b ON a.email = b.email",
             "masked_predicate"},
        Case{"SELECT id FROM crm.customers c WHERE c::text LIKE '%1%'", "masked_predicate"},
        Case{"SELECT id FROM crm.customers GROUP BY ROLLUP (ssn, id)", "masked_predicate"},
        Case{"SELECT EXISTS (SELECT 1 FROM crm.customers WHERE ssn LIKE '1%')", "masked_predicate"},
        Case{"WITH d AS (UPDATE crm.customers SET name = name WHERE id = 1 RETURNING ssn) "
             "SELECT * FROM d",
             "masked_origin_lost"},
        Case{"INSERT INTO crm.orders (note) VALUES ((SELECT ssn FROM crm.customers LIMIT 1))",
             "masked_copied"},
        Case{"INSERT INTO crm.customers (name, ssn) VALUES ('x', '1') ON CONFLICT (ssn) DO "
             "NOTHING",
             "masked_predicate"},
        Case{"INSERT INTO crm.customers (name) VALUES ('x') ON CONFLICT (id) DO NOTHING", ""},
        // Computed on without being returned: errors ("invalid input syntax for type
        // integer: ...") and side effects (pg_notify, set_config) would show the value.
        Case{"SELECT count(*) FROM (SELECT DISTINCT ssn::int FROM crm.customers) s",
             "masked_predicate"},
        Case{"SELECT count(*) FROM (SELECT ssn::int AS x, id FROM crm.customers) s",
             "masked_derived"},
        Case{"WITH x AS (SELECT to_date(ssn, 'YYYY') FROM crm.customers) SELECT count(*) FROM x",
             "masked_derived"},
        Case{"SELECT c.id FROM crm.customers c, LATERAL (SELECT pg_notify('c', c.ssn)) n",
             "masked_derived"},
        Case{"SELECT id FROM (SELECT id, pg_notify('c', email) FROM crm.customers OFFSET 0) s",
             "masked_derived"},
        Case{"EXPLAIN ANALYZE SELECT ssn::int FROM crm.customers", "masked_derived"},
        Case{"EXPLAIN SELECT id FROM crm.customers", ""},
        Case{"SELECT count(*) FROM (SELECT id, lower(name) FROM crm.customers) s", ""},
        // DISTINCT compares and sorts by the values.
        Case{"SELECT DISTINCT ssn FROM crm.customers", "masked_predicate"},
        Case{"SELECT DISTINCT id, name FROM crm.customers", ""},
        // Built-in functions that run SQL text or read a relation or cursor by name.
        Case{"SELECT query_to_xml('select ssn from crm.customers', true, false, '')",
             "opaque_function"},
        Case{"SELECT pg_catalog.table_to_xml('crm.customers', true, false, '')", "opaque_function"},
        Case{"SELECT cursor_to_xml('c', 10, false, false, '')", "opaque_function"},
        Case{"SELECT * FROM ts_stat('SELECT to_tsvector(ssn) FROM crm.customers')",
             "opaque_function"},
        // DDL that would move masked values out of the mask's reach, or run unseen code.
        Case{"ALTER TABLE crm.customers RENAME COLUMN ssn TO x", "masked_ddl"},
        Case{"ALTER TABLE crm.customers RENAME TO c2", "masked_ddl"},
        Case{"ALTER TABLE crm.customers SET SCHEMA public", "masked_ddl"},
        Case{"ALTER TABLE crm.customers ADD COLUMN x text GENERATED ALWAYS AS (ssn) STORED",
             "masked_ddl"},
        Case{"ALTER TABLE crm.orders ADD COLUMN x text", ""},
        Case{"ALTER SCHEMA crm RENAME TO crm2", "masked_ddl"},
        Case{"ALTER SCHEMA other RENAME TO x", ""},
        Case{"CREATE INDEX ON crm.customers ((ssn::int))", "masked_ddl"},
        Case{"CREATE POLICY p ON crm.customers USING (ssn LIKE '1%')", "masked_ddl"},
        Case{"CREATE TRIGGER t BEFORE UPDATE ON crm.orders FOR EACH ROW EXECUTE FUNCTION leak()",
             "opaque_function"},
        Case{"CREATE RULE r AS ON INSERT TO crm.orders DO ALSO NOTIFY c", "opaque_code"},
        Case{"CREATE OPERATOR === (function = leak, leftarg = int, rightarg = int)",
             "opaque_function"},
        Case{"CREATE TABLE t (x text DEFAULT leak(1))", "opaque_function"},
        Case{"CREATE TABLE t (x text DEFAULT lower('A'))", ""},
        Case{"CREATE VIEW v AS SELECT ssn::int FROM crm.customers", "masked_derived"},
        Case{"CREATE VIEW v AS SELECT id, ssn FROM crm.customers", "masked_copied"},
        Case{"CREATE VIEW v AS SELECT id, name FROM crm.customers", ""},
        Case{"ALTER VIEW crm.customers_v2 RENAME TO harmless", "masked_ddl"},
        Case{"ALTER VIEW crm.vip RENAME TO harmless", "masked_predicate"},
        Case{"ALTER TABLE crm.orders RENAME TO harmless", ""},
        // Lineage holes closed: VALUES carries no origin; set operations, aggregate DISTINCT,
        // grouping sets and recursive SEARCH/CYCLE compare values.
        Case{"SELECT * FROM (VALUES ((SELECT ssn FROM crm.customers LIMIT 1))) v(x)",
             "masked_derived"},
        Case{"SELECT v.x FROM crm.customers c, LATERAL (VALUES (c.ssn)) v(x)",
             "masked_origin_lost"},
        Case{"SELECT v.* FROM crm.customers c CROSS JOIN LATERAL (VALUES (c.ssn, 1)) v",
             "masked_origin_lost"},
        Case{"SELECT x FROM crm.customers c, LATERAL (VALUES (c.name)) v(x)", ""},
        Case{"SELECT count(DISTINCT ssn) FROM crm.customers WHERE id IN (1, 2)",
             "masked_predicate"},
        Case{"SELECT count(ALL ssn) FROM crm.customers", "masked_predicate"},
        Case{"SELECT array_agg(DISTINCT ssn) FROM crm.customers", "masked_derived"},
        Case{"SELECT string_agg(name, ',' ORDER BY ssn) FROM crm.customers", "masked_predicate"},
        Case{"SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY ssn) FROM crm.customers",
             "masked_predicate"},
        Case{"SELECT max(ssn) FROM crm.customers", "masked_derived"},
        Case{"SELECT count(*) FROM (SELECT ssn FROM crm.customers INTERSECT "
             "SELECT '123-45-6789') s",
             "masked_predicate"},
        Case{"SELECT count(*) FROM (SELECT ssn FROM crm.customers EXCEPT ALL SELECT 'x') s",
             "masked_predicate"},
        Case{"SELECT count(*) FROM (SELECT ssn FROM crm.customers UNION SELECT ssn "
             "FROM crm.customers) s",
             "masked_predicate"},
        Case{"SELECT count(*) FROM (SELECT ssn FROM crm.customers UNION ALL SELECT 'x') s", ""},
        Case{"SELECT id FROM crm.customers UNION SELECT id FROM crm.orders", ""},
        Case{"SELECT count(*) FROM crm.customers GROUP BY ROLLUP (ssn)", "masked_predicate"},
        Case{"SELECT ssn, count(*) FROM crm.customers GROUP BY GROUPING SETS ((1), ())",
             "masked_predicate"},
        Case{"SELECT ssn, count(*) FROM crm.customers GROUP BY CUBE (1)", "masked_predicate"},
        Case{"SELECT id, count(*) FROM crm.customers GROUP BY ROLLUP (1)", ""},
        Case{"WITH RECURSIVE t(id, s) AS (SELECT id, ssn FROM crm.customers UNION ALL "
             "SELECT id + 1, s FROM t WHERE id < 3) SEARCH DEPTH FIRST BY s SET o "
             "SELECT id FROM t",
             "masked_derived"},
        Case{"WITH RECURSIVE t(id, s) AS (SELECT id, ssn FROM crm.customers UNION ALL "
             "SELECT id + 1, s FROM t WHERE id < 3) CYCLE id SET m USING p SELECT * FROM t",
             "masked_derived"},
        Case{"WITH RECURSIVE t(id, n) AS (SELECT id, name FROM crm.customers UNION ALL "
             "SELECT id + 1, n FROM t WHERE id < 3) CYCLE id SET m USING p SELECT * FROM t",
             ""},
        Case{"SELECT ssn FROM crm.customers ORDER BY 1", "masked_predicate"},
        Case{"SELECT c.*::text FROM crm.customers c", "masked_derived"},
        Case{"SELECT jsonb_path_query(to_jsonb(c), '$.ssn') FROM crm.customers c",
             "masked_derived"},
        Case{"SELECT regexp_replace(ssn, '-', '') FROM crm.customers", "masked_derived"},
        Case{"SELECT id FROM crm.customers WHERE regexp_like(ssn, '^1')", "masked_predicate"},
        Case{"SELECT id FROM crm.customers c WHERE (c.ssn)::int > 0", "masked_predicate"},
        Case{"SELECT lag(ssn) OVER (ORDER BY id) FROM crm.customers", "masked_derived"},
        Case{"SELECT id, sum(id) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) "
             "FROM crm.customers",
             ""},
        // Channels out of the result set: a sub-select's value handed to a function whose
        // result nobody returns (session settings, notifications, advisory locks), COPY to a
        // server file, a partition attached under another name, foreign keys as oracles.
        Case{"SELECT 1 FROM set_config('a.b', (SELECT ssn FROM crm.customers LIMIT 1), false) f",
             "masked_derived"},
        Case{"SELECT id FROM (SELECT id, set_config('a.b', (SELECT c2.ssn FROM crm.customers c2 "
             "WHERE c2.id = c.id), false) FROM crm.customers c OFFSET 0) s",
             "masked_derived"},
        Case{"WITH x AS (SELECT pg_notify('c', (SELECT email FROM crm.customers LIMIT 1))) "
             "SELECT 1 FROM x",
             "masked_derived"},
        Case{"SELECT 1 FROM pg_try_advisory_lock(hashtext((SELECT ssn FROM crm.customers "
             "LIMIT 1))) l",
             "masked_derived"},
        Case{"SELECT 1 FROM (SELECT ARRAY(SELECT phone FROM crm.customers) a) s", "masked_derived"},
        Case{"SELECT 1 FROM setval('crm.s', (SELECT max(id) FROM crm.customers)) x", ""},
        Case{"SELECT 1 FROM set_config('a.b', (SELECT name FROM crm.customers LIMIT 1), false) f",
             ""},
        // EXISTS tells whether a row exists, whatever its sub-select returns.
        Case{"SELECT id FROM crm.orders o WHERE EXISTS (SELECT * FROM crm.customers c WHERE "
             "c.id = o.customer_id)",
             ""},
        Case{"SELECT EXISTS (SELECT ssn FROM crm.customers WHERE id = 1)", ""},
        Case{"COPY crm.customers TO '/tmp/c.csv'", "masked_copied"},
        Case{"COPY crm.customers (id, email) TO PROGRAM 'cat'", "masked_copied"},
        Case{"COPY crm.customers (id, name) TO '/tmp/c.csv'", ""},
        Case{"COPY crm.customers TO STDOUT", ""}, Case{"COPY crm.orders FROM '/tmp/o.csv'", ""},
        Case{"ALTER TABLE public.customers ATTACH PARTITION crm.customers FOR VALUES IN (1)",
             "masked_ddl"},
        Case{"ALTER TABLE public.customers ATTACH PARTITION crm.orders FOR VALUES IN (1)", ""},
        Case{"CREATE TABLE p (s text REFERENCES crm.customers (ssn))", "masked_predicate"},
        Case{"CREATE TABLE p (e text, FOREIGN KEY (e) REFERENCES crm.customers (email))",
             "masked_predicate"},
        Case{"ALTER TABLE crm.orders ADD FOREIGN KEY (note) REFERENCES crm.customers (phone)",
             "masked_predicate"},
        Case{"CREATE TABLE p (c int REFERENCES crm.customers)", "masked_predicate"},
        Case{"CREATE TABLE p (c int REFERENCES crm.customers (id))", ""},
        Case{"CREATE TABLE p (c int REFERENCES crm.orders)", ""},
        Case{"CREATE TABLE tree (id int PRIMARY KEY, up int REFERENCES tree)", ""},
        Case{"CREATE TABLE tree (id int PRIMARY KEY, up int REFERENCES tree (id))", ""},
        // Row-security policies filter every later read of their table: a sub-select over a
        // masked column there is a predicate. CLUSTER orders a table by an index's columns.
        // Built-ins that run SQL text, installed in a default or CHECK constraint.
        Case{"CREATE POLICY p ON crm.orders USING (note IN (SELECT ssn FROM crm.customers))",
             "masked_predicate"},
        Case{"ALTER POLICY p ON crm.orders WITH CHECK (EXISTS (SELECT 1 FROM crm.customers c "
             "WHERE c.phone = note))",
             "masked_predicate"},
        Case{"CREATE POLICY p ON crm.orders USING (customer_id IN (SELECT id FROM "
             "crm.customers))",
             ""},
        Case{"CREATE POLICY p ON fresh USING (owner = current_user)", ""},
        Case{"CREATE POLICY p ON fresh USING (k IN (SELECT ssn FROM crm.customers))",
             "masked_predicate"},
        // USING / NATURAL against a column with no source: an equality test with the
        // client's value. Against another plain column: an equality join.
        Case{"SELECT id FROM crm.customers NATURAL JOIN (SELECT '123-45-6789'::text AS ssn) g",
             "masked_predicate"},
        Case{"SELECT id FROM crm.customers JOIN (VALUES ('123-45-6789')) g(ssn) USING (ssn)",
             "masked_predicate"},
        Case{"SELECT a.id FROM crm.customers a JOIN (SELECT 'x@y'::text AS email) b USING (email)",
             "masked_predicate"},
        Case{"SELECT a.id FROM crm.customers a JOIN crm.customers b USING (email)", ""},
        Case{"SELECT c.id FROM crm.customers c JOIN (SELECT 1::bigint AS id) g USING (id)", ""},
        // A sample's seed decides which rows come back.
        Case{"SELECT id FROM crm.customers TABLESAMPLE BERNOULLI (50) REPEATABLE ((SELECT "
             "ascii(ssn) FROM crm.customers LIMIT 1))",
             "masked_predicate"},
        Case{"SELECT id FROM crm.customers TABLESAMPLE BERNOULLI (50) REPEATABLE (7)", ""},
        Case{"CLUSTER crm.customers USING customers_pkey", "masked_ddl"},
        Case{"CLUSTER crm.orders USING orders_pkey", ""}, Case{"CLUSTER", ""},
        Case{"CREATE TABLE t (x text DEFAULT query_to_xml('select ssn from crm.customers', true, "
             "false, '')::text)",
             "opaque_function"},
        Case{"CREATE TABLE t (x text CHECK (position(x in query_to_xml('select ssn from "
             "crm.customers', true, false, '')::text) = 0))",
             "opaque_function"},
        // EXECUTE's arguments: the prepared statement may return or compute on them.
        Case{"EXECUTE p((SELECT ssn FROM crm.customers LIMIT 1))", "masked_derived"},
        Case{"EXPLAIN ANALYZE EXECUTE p((SELECT email FROM crm.customers LIMIT 1))",
             "masked_derived"},
        Case{"EXECUTE p((SELECT name FROM crm.customers LIMIT 1), 2)", ""},
        // Foreign tables read relations named in their options.
        Case{"CREATE FOREIGN TABLE f (ssn text) SERVER loop OPTIONS (schema_name 'crm', "
             "table_name 'customers')",
             "opaque_code"},
        Case{"IMPORT FOREIGN SCHEMA crm FROM SERVER loop INTO public", "opaque_code"},
        // Error and timing oracles, returned or not.
        Case{"SELECT id FROM (SELECT id, 1 / (ascii(ssn) - 49) FROM crm.customers) s",
             "masked_derived"},
        Case{"SELECT count(*) FROM (SELECT (ARRAY[1])[length(ssn)] FROM crm.customers) s",
             "masked_derived"},
        Case{"SELECT 1 FROM generate_series(1, (SELECT ascii(ssn) FROM crm.customers LIMIT 1)) g",
             "masked_derived"},
        Case{"SELECT id FROM crm.customers OFFSET (SELECT ascii(ssn) FROM crm.customers LIMIT 1)",
             "masked_predicate"},
        Case{"SELECT id FROM crm.customers LIMIT (SELECT count(*) FROM crm.customers WHERE "
             "ssn > '5')",
             "masked_predicate"},
        // Column statistics hold sample values of masked columns.
        Case{"SELECT most_common_vals FROM pg_stats WHERE attname = 'ssn'", "lineage_unknown"},
        Case{"SELECT * FROM pg_catalog.pg_statistic", "lineage_unknown"},
        // Unknown to the catalog: fail closed.
        Case{"SELECT \"SSN\" FROM crm.customers", "lineage_unknown"},
        Case{"SELECT * FROM crm.loop", "lineage_unknown"}));

TEST(MaskLineage, NothingIsRefusedWithoutColumnMasks) {
  FakeCatalog catalog;
  Policy p;
  MaskRule inet;
  inet.type_name = "inet";
  inet.function = "null";
  p.masks = {inet};
  EXPECT_FALSE(check_lineage(p, lineage_of_sql("SELECT md5(ssn) FROM crm.customers", catalog)));
  EXPECT_FALSE(check_lineage(p, lineage_of_sql("DO $$ BEGIN END $$", catalog)));
}

TEST(MaskLineage, QueryTextFunctionsAreNamedAndCanBeAllowed) {
  FakeCatalog catalog;
  StatementLineage l = lineage_of_sql(
      "SELECT query_to_xml('select ssn from crm.customers', true, false, '')", catalog);
  EXPECT_TRUE(l.opaque_functions.empty());
  Policy p = masking_policy();
  auto r = check_lineage(p, l);
  ASSERT_TRUE(r);
  EXPECT_NE(r->message.find("query_to_xml runs SQL given as text"), std::string::npos)
      << r->message;
  p.allowed_functions.push_back("query_to_xml");
  EXPECT_FALSE(check_lineage(p, l));
}

TEST(MaskLineage, ComputedSourcesAreTheOnesExpressionsEvaluate) {
  FakeCatalog catalog;
  StatementLineage l = lineage_of_sql(
      "SELECT count(ssn), count(*) FROM (SELECT ssn, id, md5(name) FROM crm.customers) s "
      "WHERE ssn IS NULL",
      catalog);
  ASSERT_TRUE(l.error.empty()) << l.error;
  EXPECT_EQ(l.computed, (std::set<SourceColumn>{{"crm", "customers", "name"}}));
  // A view's own expressions count only when the statement uses the view column.
  l = lineage_of_sql("SELECT id, ssn FROM crm.customers_view", catalog);
  EXPECT_TRUE(l.computed.empty());
}

// `ORDER BY 1` and `ORDER BY 2` share a verdict-cache shape: a decision a position number
// makes about a masked output must not be cached by shape.
TEST(MaskLineage, OutputPositionsThatMayNameMaskedColumnsAreDecidedByLiterals) {
  FakeCatalog catalog;
  Policy p = masking_policy();
  StatementLineage first = lineage_of_sql("SELECT id, ssn FROM crm.customers ORDER BY 1", catalog);
  EXPECT_FALSE(check_lineage(p, first));
  EXPECT_TRUE(decided_by_literals(p, first));
  StatementLineage second = lineage_of_sql("SELECT id, ssn FROM crm.customers ORDER BY 2", catalog);
  EXPECT_TRUE(check_lineage(p, second));
  EXPECT_TRUE(decided_by_literals(p, second));
  for (const char* sql : {"SELECT id, ssn FROM crm.customers GROUP BY 1",
                          "SELECT DISTINCT ON (1) id, ssn FROM crm.customers",
                          "SELECT id FROM (SELECT id, ssn FROM crm.customers ORDER BY 1) s",
                          "SELECT id, ssn FROM crm.customers GROUP BY GROUPING SETS ((1))"}) {
    EXPECT_TRUE(decided_by_literals(p, lineage_of_sql(sql, catalog))) << sql;
  }
  for (const char* sql : {"SELECT id, name FROM crm.customers ORDER BY 2",
                          "SELECT id, ssn FROM crm.customers ORDER BY id",
                          "SELECT id, ssn FROM crm.customers LIMIT 1"}) {
    EXPECT_FALSE(decided_by_literals(p, lineage_of_sql(sql, catalog))) << sql;
  }
}

TEST(MaskLineage, MessageNamesOutputColumnAndSource) {
  FakeCatalog catalog;
  auto r = check_lineage(masking_policy(),
                         lineage_of_sql("SELECT md5(ssn) AS h FROM crm.customers", catalog));
  ASSERT_TRUE(r);
  EXPECT_NE(r->message.find("\"h\""), std::string::npos) << r->message;
  EXPECT_NE(r->message.find("crm.customers.ssn"), std::string::npos) << r->message;
  r = check_lineage(masking_policy(),
                    lineage_of_sql("SELECT id FROM crm.customers WHERE ssn = '1'", catalog));
  ASSERT_TRUE(r);
  EXPECT_NE(r->message.find("crm.customers.ssn"), std::string::npos) << r->message;
  EXPECT_NE(r->message.find("WHERE"), std::string::npos) << r->message;
}

}  // namespace
}  // namespace pgwarden::policy
