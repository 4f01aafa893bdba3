// Policy engine cost per statement: libpg_query parse + tree walk (analyse_sql) and policy
// evaluation, for statements of increasing complexity. Run: build/bench/policy_bench
#include <benchmark/benchmark.h>

#include <string>

#include "controlplane/policy/evaluator.h"
#include "controlplane/policy/fake_lineage_catalog.h"
#include "controlplane/policy/mask_lineage.h"
#include "controlplane/policy/sql_analysis.h"

namespace {

using namespace pgwarden::policy;

constexpr const char* kSimple = "SELECT id, email FROM crm.customers WHERE id = 42";
constexpr const char* kJoin =
    "SELECT c.full_name, o.total FROM crm.customers c JOIN crm.orders o ON o.customer_id = c.id "
    "WHERE c.created_at > now() - interval '7 days' AND o.total > (SELECT avg(total) FROM "
    "crm.orders) ORDER BY o.total DESC LIMIT 50";
constexpr const char* kCte =
    "WITH recent AS (SELECT * FROM crm.orders WHERE created_at > now() - interval '1 day'), "
    "top AS (SELECT customer_id, sum(total) AS s FROM recent GROUP BY customer_id) "
    "SELECT c.email, upper(c.full_name), t.s FROM top t JOIN crm.customers c ON c.id = "
    "t.customer_id WHERE c.email LIKE '%@example.com' ORDER BY t.s DESC";
constexpr const char* kMulti = "BEGIN; UPDATE public.kv SET v = 'x' WHERE k = 'a'; COMMIT";

Policy read_only() {
  Policy p;
  p.name = "bench_ro";
  p.read_only = true;
  p.allowed_kinds = {"select", "transaction", "show"};
  p.allowed_relations = {"crm.*", "public.*"};
  return p;
}

void BM_Analyse(benchmark::State& state, const char* sql) {
  for (auto _ : state) benchmark::DoNotOptimize(analyse_sql(sql));
  state.SetItemsProcessed(state.iterations());
}

void BM_Evaluate(benchmark::State& state, const char* sql) {
  const Policy p = read_only();
  const SqlAnalysis a = analyse_sql(sql);
  for (auto _ : state) benchmark::DoNotOptimize(evaluate(p, a));
  state.SetItemsProcessed(state.iterations());
}

void BM_AnalyseAndEvaluate(benchmark::State& state, const char* sql) {
  const Policy p = read_only();
  for (auto _ : state) benchmark::DoNotOptimize(evaluate_sql(p, sql));
  state.SetItemsProcessed(state.iterations());
}

// Ten relations (six tables, two views over crm.customers, one a view over the other, and
// crm.orders / crm.customers), as cp analyses a statement under a policy with column masks.
constexpr const char* kTenJoin =
    "SELECT c.id, v.name, v2.ssn, o.total, t1.a, t2.b, t3.a, t4.b, t5.a, t6.b "
    "FROM crm.customers c JOIN crm.orders o ON o.customer_id = c.id "
    "JOIN crm.customers_view v ON v.id = c.id JOIN crm.customers_v2 v2 ON v2.ident = c.id "
    "JOIN bench.t1 t1 ON t1.id = c.id JOIN bench.t2 t2 ON t2.id = t1.id "
    "JOIN bench.t3 t3 ON t3.id = t2.id JOIN bench.t4 t4 ON t4.id = t3.id "
    "LEFT JOIN bench.t5 t5 ON t5.id = t4.id LEFT JOIN bench.t6 t6 ON t6.id = t5.id "
    "WHERE o.total > 10 AND t1.a LIKE 'x%' ORDER BY o.total DESC LIMIT 100";

FakeCatalog bench_catalog() {
  FakeCatalog c;
  for (int i = 1; i <= 6; ++i) {
    c.add({"bench", "t" + std::to_string(i), 'r', {"id", "a", "b", "c", "d"}, ""});
  }
  return c;
}

Policy masking() {
  Policy p = read_only();
  MaskRule ssn;
  ssn.name_pattern = "*ssn*";
  ssn.function = "hash";
  MaskRule email;
  email.column_glob = "crm.*.email";
  email.function = "email";
  p.masks = {ssn, email};
  return p;
}

// analyse_sql with lineage (views analysed from their definitions each time: cp's PgCatalog
// caches the catalog rows, not the analysis) and the masking decision.
void BM_AnalyseWithLineage(benchmark::State& state, const char* sql) {
  FakeCatalog catalog = bench_catalog();
  const Policy p = masking();
  for (auto _ : state) {
    SqlAnalysis a = analyse_sql(sql, &catalog);
    for (const auto& st : a.statements) {
      if (!st.lineage) {
        state.SkipWithError("no lineage");
        return;
      }
      if (auto refusal = check_lineage(p, *st.lineage)) {
        state.SkipWithError(refusal->message.c_str());
        return;
      }
    }
    benchmark::DoNotOptimize(a);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK_CAPTURE(BM_Analyse, ten_table_join_with_views, kTenJoin);
BENCHMARK_CAPTURE(BM_AnalyseWithLineage, simple_select, kSimple);
BENCHMARK_CAPTURE(BM_AnalyseWithLineage, ten_table_join_with_views, kTenJoin);
BENCHMARK_CAPTURE(BM_Analyse, simple_select, kSimple);
BENCHMARK_CAPTURE(BM_Analyse, join_subquery, kJoin);
BENCHMARK_CAPTURE(BM_Analyse, two_ctes, kCte);
BENCHMARK_CAPTURE(BM_Analyse, three_statements, kMulti);
BENCHMARK_CAPTURE(BM_Evaluate, simple_select, kSimple);
BENCHMARK_CAPTURE(BM_Evaluate, two_ctes, kCte);
BENCHMARK_CAPTURE(BM_AnalyseAndEvaluate, simple_select, kSimple);
BENCHMARK_CAPTURE(BM_AnalyseAndEvaluate, two_ctes, kCte);
BENCHMARK_CAPTURE(BM_AnalyseAndEvaluate, simple_select_threads, kSimple)->Threads(2);

}  // namespace

BENCHMARK_MAIN();
