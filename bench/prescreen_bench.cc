// Prescreen throughput: lexer + Hyperscan scan per statement, against a baseline measured in
// the same run: one PCRE2 (JIT) match per rule over the same lexed text.
//
// Corpus: 10,000 ORM-style SELECT/INSERT/UPDATE statements of 50..2,000 bytes, generated
// deterministically (fixed-seed xorshift). Rule sets of 10, 100, 1,000 and 10,000 generated
// rules (90% code view, 10% text view), parsed from rule-file text like real sets.
//
//   ninja -C build bench/prescreen_bench && build/bench/prescreen_bench
//
// items_per_second = statements/s on one core; bytes_per_second = raw SQL bytes/s.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <benchmark/benchmark.h>
#include <pcre2.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/generated_rules.h"
#include "common/source_root.h"
#include "rules/lexer.h"
#include "rules/matcher.h"
#include "rules/rule_set.h"

namespace {

using pgwarden::rules::CompiledRuleSet;
using pgwarden::rules::LexedSql;

constexpr size_t kCorpusSize = 10000;

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return s_;
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }

 private:
  uint64_t s_;
};

const char* const kTables[] = {"customers", "orders",    "order_items", "products",  "invoices",
                               "payments",  "addresses", "sessions",    "audit_log", "accounts"};
const char* const kColumns[] = {"id",         "customer_id", "email",     "full_name", "status",
                                "created_at", "updated_at",  "total",     "currency",  "notes",
                                "phone",      "sku",         "quantity",  "price",     "country",
                                "deleted_at", "version",     "tenant_id", "tags",      "metadata"};

std::string word(Rng& rng) {
  static const char* const kWords[] = {"alpha",   "order", "shipped",  "pending",  "refund", "gift",
                                       "express", "note",  "customer", "priority", "eu",     "us"};
  return kWords[rng.below(std::size(kWords))];
}

std::string literal(Rng& rng) {
  switch (rng.below(4)) {
    case 0:
      return std::to_string(rng.below(1000000));
    case 1:
      return "'" + word(rng) + "-" + std::to_string(rng.below(99999)) + "'";
    case 2:
      return "$" + std::to_string(1 + rng.below(20));
    default:
      return "'" + word(rng) + " " + word(rng) + " " + word(rng) + "'";
  }
}

std::string column_list(Rng& rng, const std::string& t, size_t n) {
  std::string out;
  for (size_t k = 0; k < n; ++k) {
    if (k > 0) out += ", ";
    out += "\"" + t + "\".\"" + kColumns[rng.below(std::size(kColumns))] + "\"";
  }
  return out;
}

std::string statement(Rng& rng) {
  std::string t = kTables[rng.below(std::size(kTables))];
  // Mostly short statements, a tail up to ~2 KB, as ORMs produce.
  size_t width = rng.below(10) < 8 ? 2 + rng.below(8) : 10 + rng.below(60);
  std::string sql;
  switch (rng.below(10)) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4: {  // SELECT
      sql = "SELECT " + column_list(rng, t, width) + " FROM \"public\".\"" + t + "\" AS \"" + t +
            "\"";
      if (rng.below(3) == 0) {
        std::string u = kTables[rng.below(std::size(kTables))];
        sql += " LEFT OUTER JOIN \"public\".\"" + u + "\" ON \"" + u + "\".\"id\" = \"" + t +
               "\".\"" + kColumns[1] + "\"";
      }
      sql += " WHERE \"" + t + "\".\"id\" = " + literal(rng);
      for (size_t k = 0; k < width / 4; ++k) {
        sql += " AND \"" + t + "\".\"" + kColumns[rng.below(std::size(kColumns))] +
               "\" = " + literal(rng);
      }
      sql +=
          " ORDER BY \"" + t + "\".\"created_at\" DESC LIMIT " + std::to_string(1 + rng.below(100));
      break;
    }
    case 5:
    case 6:
    case 7: {  // INSERT
      sql = "INSERT INTO \"public\".\"" + t + "\" (";
      std::string values;
      for (size_t k = 0; k < width; ++k) {
        if (k > 0) {
          sql += ", ";
          values += ", ";
        }
        sql += std::string("\"") + kColumns[rng.below(std::size(kColumns))] + "\"";
        values += literal(rng);
      }
      sql += ") VALUES (" + values + ") RETURNING \"id\"";
      break;
    }
    default: {  // UPDATE
      sql = "UPDATE \"public\".\"" + t + "\" SET ";
      for (size_t k = 0; k < width; ++k) {
        if (k > 0) sql += ", ";
        sql +=
            std::string("\"") + kColumns[rng.below(std::size(kColumns))] + "\" = " + literal(rng);
      }
      sql += " WHERE \"" + t + "\".\"id\" = " + literal(rng);
    }
  }
  if (sql.size() > 2000) sql.resize(2000);
  while (sql.size() < 50) sql += " ";
  return sql;
}

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> c = [] {
    Rng rng(0x5eed5eed5eedULL);
    std::vector<std::string> out;
    out.reserve(kCorpusSize);
    for (size_t k = 0; k < kCorpusSize; ++k) out.push_back(statement(rng));
    return out;
  }();
  return c;
}

const std::vector<LexedSql>& lexed_corpus() {
  static const std::vector<LexedSql> c = [] {
    std::vector<LexedSql> out;
    for (const std::string& sql : corpus()) out.push_back(pgwarden::rules::lex_sql(sql));
    return out;
  }();
  return c;
}

size_t corpus_bytes() {
  size_t total = 0;
  for (const std::string& s : corpus()) total += s.size();
  return total;
}

struct Fixture {
  pgwarden::rules::RuleSet rules;
  std::shared_ptr<const CompiledRuleSet> compiled;
  double compile_ms = 0;
  std::vector<pcre2_code*> pcre_code;
  std::vector<pgwarden::rules::View> pcre_view;
  pcre2_match_data* match_data = nullptr;
};

Fixture& fixture(size_t n) {
  static std::map<size_t, std::unique_ptr<Fixture>> fixtures;
  std::unique_ptr<Fixture>& f = fixtures[n];
  if (f) return *f;
  f = std::make_unique<Fixture>();
  std::vector<pgwarden::rules::RuleSource> sources = {
      {"generated.rules", pgwarden::bench::generated_rules(n)}};
  auto parsed = pgwarden::rules::RuleSet::parse(sources);
  if (!parsed.is_ok()) {
    std::fprintf(stderr, "generated rules invalid: %s\n", parsed.status().message().c_str());
    std::abort();
  }
  f->rules = *parsed;
  auto compiled = CompiledRuleSet::compile(std::move(parsed).value());
  if (!compiled.is_ok()) {
    std::fprintf(stderr, "compile failed: %s\n", compiled.status().message().c_str());
    std::abort();
  }
  f->compiled = std::move(compiled).value();
  f->compile_ms = f->compiled->build_milliseconds();
  for (const pgwarden::rules::Rule& r : f->rules.rules()) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    uint32_t options = (r.hs_flags & HS_FLAG_CASELESS) ? PCRE2_CASELESS : 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(r.pattern.c_str()),
                                     PCRE2_ZERO_TERMINATED, options, &err, &offset, nullptr);
    if (code == nullptr || pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) != 0) std::abort();
    f->pcre_code.push_back(code);
    f->pcre_view.push_back(r.view);
  }
  f->match_data = pcre2_match_data_create(1, nullptr);
  return *f;
}

struct CountingSink : pgwarden::rules::MatchSink {
  size_t matches = 0;
  void on_match(const pgwarden::rules::Rule&) override { ++matches; }
};

// Lexer + Hyperscan scan, one statement per iteration, cycling through the corpus.
void BM_Prescreen(benchmark::State& state) {
  Fixture& f = fixture(static_cast<size_t>(state.range(0)));
  const std::vector<std::string>& sqls = corpus();
  LexedSql lexed;
  CountingSink sink;
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    const std::string& sql = sqls[i];
    pgwarden::rules::lex_sql(sql, lexed);
    benchmark::DoNotOptimize(f.compiled->scan(lexed, sink));
    bytes += sql.size();
    if (++i == sqls.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["compile_ms"] = f.compile_ms;
  state.counters["db_bytes"] = static_cast<double>(f.compiled->database_bytes());
  state.counters["matches"] = static_cast<double>(sink.matches);
}

// Baseline: one PCRE2 JIT match per rule over the same views (lexing not timed).
void BM_Pcre2Loop(benchmark::State& state) {
  Fixture& f = fixture(static_cast<size_t>(state.range(0)));
  const std::vector<LexedSql>& lexed = lexed_corpus();
  const std::vector<std::string>& sqls = corpus();
  size_t i = 0, bytes = 0, matches = 0;
  for (auto _ : state) {
    const LexedSql& l = lexed[i];
    for (size_t r = 0; r < f.pcre_code.size(); ++r) {
      std::string_view view = f.pcre_view[r] == pgwarden::rules::View::kCode ? l.code() : l.text();
      int rc = pcre2_jit_match(f.pcre_code[r], reinterpret_cast<PCRE2_SPTR>(view.data()),
                               view.size(), 0, 0, f.match_data, nullptr);
      if (rc >= 0) ++matches;
    }
    bytes += sqls[i].size();
    if (++i == lexed.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["matches"] = static_cast<double>(matches);
}

void BM_LexOnly(benchmark::State& state) {
  const std::vector<std::string>& sqls = corpus();
  LexedSql lexed;
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    pgwarden::rules::lex_sql(sqls[i], lexed);
    benchmark::DoNotOptimize(lexed.shape_key());
    bytes += sqls[i].size();
    if (++i == sqls.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["corpus_statements"] = static_cast<double>(sqls.size());
  state.counters["corpus_avg_bytes"] = static_cast<double>(corpus_bytes()) / sqls.size();
}

// The shipped rule sets: deny + approve (arg 0) or deny + approve + pii (arg 1). Detect rules
// compile into their own database, so the pii set must not slow the prescreen scan.
std::shared_ptr<const CompiledRuleSet> compile_files(const std::vector<std::string>& files) {
  auto parsed = pgwarden::rules::RuleSet::load_files(files);
  if (!parsed.is_ok()) {
    std::fprintf(stderr, "rule files invalid: %s\n", parsed.status().message().c_str());
    std::abort();
  }
  auto compiled = CompiledRuleSet::compile(std::move(parsed).value());
  if (!compiled.is_ok()) std::abort();
  return std::move(compiled).value();
}

const std::string kSets = PGW_SOURCE_ROOT "/rules/sets/";

void BM_PrescreenDefaultSets(benchmark::State& state) {
  static std::map<int64_t, std::shared_ptr<const CompiledRuleSet>> sets;
  std::shared_ptr<const CompiledRuleSet>& set = sets[state.range(0)];
  if (set == nullptr) {
    std::vector<std::string> files = {kSets + "deny.rules", kSets + "approve.rules"};
    if (state.range(0) == 1) files.push_back(kSets + "pii.rules");
    set = compile_files(files);
  }
  const std::vector<std::string>& sqls = corpus();
  LexedSql lexed;
  CountingSink sink;
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    pgwarden::rules::lex_sql(sqls[i], lexed);
    benchmark::DoNotOptimize(set->scan(lexed, sink));
    bytes += sqls[i].size();
    if (++i == sqls.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["matches"] = static_cast<double>(sink.matches);
}

// Result values as an application stores them: JSON contact documents, notes, and values that
// look like numbers but are not personal data; about one in four holds PII.
const std::vector<std::string>& value_corpus() {
  static const std::vector<std::string> c = [] {
    Rng rng(0x5eed5eedULL);
    std::vector<std::string> out;
    const char* const kPii[] = {"+31-20-555-0104",     "NL91 ABNA 0417 1643 00",
                                "4111 1111 1111 1111", "ada.l+crm@mail.example.org",
                                "(020) 7946 0958",     "123-45-6789"};
    const char* const kPlain[] = {
        "2026-12-06 02:10:30+00", "ORD-2026-000123", "550e8400-e29b-41d4-a716-446655440000",
        "192.168.100.200",        "v10.0.19045",     "EUR 1,234.56",
        "978-3-16-148410-0"};
    for (size_t k = 0; k < kCorpusSize; ++k) {
      std::string v;
      switch (rng.below(3)) {
        case 0:
          v = "{\"id\": " + std::to_string(rng.below(1000000)) + ", \"status\": \"" + word(rng) +
              "\", \"at\": \"" + kPlain[rng.below(std::size(kPlain))] + "\", \"ref\": \"" +
              kPlain[rng.below(std::size(kPlain))] + "\"";
          if (rng.below(4) == 0) v += ", \"contact\": \"" + std::string(kPii[rng.below(6)]) + "\"";
          v += "}";
          break;
        case 1:
          for (size_t w = 3 + rng.below(30); w > 0; --w) v += word(rng) + " ";
          if (rng.below(4) == 0) v += kPii[rng.below(6)];
          v += kPlain[rng.below(std::size(kPlain))];
          break;
        default:
          v = std::to_string(rng.next() % 100000000000000ULL);
      }
      out.push_back(std::move(v));
    }
    return out;
  }();
  return c;
}

// Content detectors over result values: arg 0 = the detect rules in the file named by
// $PGW_BENCH_PII_BASELINE (e.g. an older rules/sets/pii.rules), arg 1 = the shipped pii.rules.
void BM_DetectValues(benchmark::State& state) {
  static std::map<int64_t, std::shared_ptr<const CompiledRuleSet>> sets;
  std::shared_ptr<const CompiledRuleSet>& set = sets[state.range(0)];
  if (set == nullptr) {
    const char* baseline = std::getenv("PGW_BENCH_PII_BASELINE");
    if (state.range(0) == 0 && (baseline == nullptr || *baseline == '\0')) {
      state.SkipWithError("set PGW_BENCH_PII_BASELINE to a baseline pii.rules to compare");
      return;
    }
    set = compile_files({state.range(0) == 0 ? std::string(baseline) : kSets + "pii.rules"});
  }
  const std::vector<std::string>& values = value_corpus();
  std::vector<pgwarden::rules::DetectSpan> spans;
  size_t i = 0, bytes = 0, found = 0;
  for (auto _ : state) {
    spans.clear();
    benchmark::DoNotOptimize(set->detect(values[i], spans));
    found += spans.size();
    bytes += values[i].size();
    if (++i == values.size()) i = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["spans"] = static_cast<double>(found);
  state.counters["db_bytes"] = static_cast<double>(set->database_bytes());
}

BENCHMARK(BM_LexOnly);
BENCHMARK(BM_PrescreenDefaultSets)->Arg(0)->Arg(1);
BENCHMARK(BM_DetectValues)->Arg(0)->Arg(1);
BENCHMARK(BM_Prescreen)->Arg(10)->Arg(100)->Arg(1000)->Arg(10000);
BENCHMARK(BM_Pcre2Loop)->Arg(10)->Arg(100)->Arg(1000)->Arg(10000);

}  // namespace

BENCHMARK_MAIN();
