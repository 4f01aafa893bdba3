// Policy engine cost per statement: libpg_query parse + tree walk (analyse_sql) and policy
// evaluation, for statements of increasing complexity. Run: build/bench/policy_bench
#include <benchmark/benchmark.h>

#include <string>

#include "controlplane/policy/evaluator.h"
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
