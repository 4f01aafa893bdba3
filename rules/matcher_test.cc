#include "rules/matcher.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace pgwarden::rules {
namespace {

std::string rule(const char* id, const char* action, const char* view, const char* pattern) {
  return std::string("[") + id + "]\naction = " + action + "\nview = " + view +
         "\npattern = " + pattern + "\nmessage = " + id + " matched\nseverity = high\n";
}

std::shared_ptr<const CompiledRuleSet> compile(const std::string& content,
                                               const CompileOptions& options = {}) {
  std::vector<RuleSource> sources = {{"t.rules", content}};
  Result<RuleSet> parsed = RuleSet::parse(sources);
  EXPECT_TRUE(parsed.is_ok()) << parsed.status().message();
  if (!parsed.is_ok()) return nullptr;
  Result<std::shared_ptr<const CompiledRuleSet>> compiled =
      CompiledRuleSet::compile(std::move(parsed).value(), options);
  EXPECT_TRUE(compiled.is_ok()) << compiled.status().message();
  return compiled.is_ok() ? std::move(compiled).value() : nullptr;
}

struct Collect : MatchSink {
  std::vector<std::string> ids;
  std::string error;
  void on_match(const Rule& r) override { ids.push_back(r.id); }
  void on_scan_error(std::string_view reason) override { error = reason; }
};

const std::string kSet = rule("d.drop", "deny", "code", "\\bdrop\\b") +
                         rule("d.secret", "deny", "text", "/etc/passwd") +
                         rule("a.truncate", "approve", "code", "\\btruncate\\b") +
                         rule("a.select", "approve", "code", "\\bselect\\b");

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/pgw-matcher-test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(CompiledRuleSet, ReturnsEveryMatchingRuleAndDenyWins) {
  auto set = compile(kSet);
  ASSERT_NE(set, nullptr);
  Collect sink;
  Verdict v = set->scan(lex_sql("select 1; truncate t; drop x; copy t from '/etc/passwd'"), sink);
  EXPECT_EQ(v, Verdict::kDeny);
  std::sort(sink.ids.begin(), sink.ids.end());
  EXPECT_EQ(sink.ids, (std::vector<std::string>{"a.select", "a.truncate", "d.drop", "d.secret"}));
}

TEST(CompiledRuleSet, ApproveWithoutDenyAndAllowWithoutMatch) {
  auto set = compile(kSet);
  ASSERT_NE(set, nullptr);
  Collect a, b;
  EXPECT_EQ(set->scan(lex_sql("TRUNCATE t"), a), Verdict::kApprove);
  EXPECT_EQ(set->scan(lex_sql("insert into t values ('drop')"), b), Verdict::kAllow);
  EXPECT_TRUE(b.ids.empty());
}

TEST(CompiledRuleSet, CodeRulesIgnoreLiteralsTextRulesSeeThem) {
  auto set = compile(kSet);
  ASSERT_NE(set, nullptr);
  Collect sink;
  EXPECT_EQ(set->scan(lex_sql("insert into t values ('drop', '/etc/passwd')"), sink),
            Verdict::kDeny);
  EXPECT_EQ(sink.ids, std::vector<std::string>{"d.secret"});
}

TEST(CompiledRuleSet, DiskCacheIsWrittenThenLoadedWithSameResults) {
  TempDir dir;
  CompileOptions options{dir.path()};
  auto first = compile(kSet, options);
  ASSERT_NE(first, nullptr);
  EXPECT_FALSE(first->loaded_from_cache());
  EXPECT_TRUE(
      std::filesystem::exists(dir.path() + "/" + first->rule_set().content_hash() + ".hsdb"));
  auto second = compile(kSet, options);
  ASSERT_NE(second, nullptr);
  EXPECT_TRUE(second->loaded_from_cache());
  EXPECT_EQ(second->database_bytes(), first->database_bytes());
  Collect sink;
  EXPECT_EQ(second->scan(lex_sql("drop x"), sink), Verdict::kDeny);
  EXPECT_EQ(sink.ids, std::vector<std::string>{"d.drop"});
}

TEST(CompiledRuleSet, CorruptCacheFileIsIgnoredAndRecompiled) {
  TempDir dir;
  CompileOptions options{dir.path()};
  auto first = compile(kSet, options);
  ASSERT_NE(first, nullptr);
  std::string path = dir.path() + "/" + first->rule_set().content_hash() + ".hsdb";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  auto second = compile(kSet, options);
  ASSERT_NE(second, nullptr);
  EXPECT_FALSE(second->loaded_from_cache());
  Collect sink;
  EXPECT_EQ(second->scan(lex_sql("drop x"), sink), Verdict::kDeny);
  EXPECT_TRUE(compile(kSet, options)->loaded_from_cache());  // rewritten by the recompile
}

TEST(CompiledRuleSet, SinkMayScanAgainFromItsCallback) {
  auto set = compile(kSet);
  ASSERT_NE(set, nullptr);
  struct Nested : MatchSink {
    const CompiledRuleSet* set;
    Verdict inner = Verdict::kAllow;
    void on_match(const Rule&) override {
      Collect c;
      inner = set->scan(lex_sql("truncate t"), c);
    }
  } sink;
  sink.set = set.get();
  EXPECT_EQ(set->scan(lex_sql("drop x"), sink), Verdict::kDeny);
  EXPECT_EQ(sink.inner, Verdict::kApprove);
}

TEST(CompiledRuleSet, DetectReturnsValidatedMergedSpans) {
  std::string content =
      "[p.card]\naction = detect\npattern = \\b\\d(?:[ -]?\\d){12,18}\\b\nvalidator = luhn\n"
      "severity = high\n"
      "[p.word]\naction = detect\npattern = secret\\w*\nseverity = low\n";
  auto set = compile(content);
  ASSERT_NE(set, nullptr);
  std::string value = "a 4111111111111111 b 4111111111111112 c secretsecret";
  std::vector<DetectSpan> spans;
  ASSERT_TRUE(set->detect(value, spans).is_ok());
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(value.substr(spans[0].begin, spans[0].end - spans[0].begin), "4111111111111111");
  EXPECT_EQ(spans[0].rule->id, "p.card");
  EXPECT_EQ(value.substr(spans[1].begin, spans[1].end - spans[1].begin), "secretsecret");
}

TEST(CompiledRuleSet, OneThreadAlternatingBetweenManySetsScansEachCorrectly) {
  std::vector<std::shared_ptr<const CompiledRuleSet>> sets;
  for (int k = 0; k < 12; ++k) {
    std::string id = "r" + std::to_string(k);
    std::string pattern = "\\bword" + std::to_string(k) + "\\b";
    sets.push_back(compile(rule(id.c_str(), "deny", "code", pattern.c_str())));
    ASSERT_NE(sets.back(), nullptr);
  }
  for (int round = 0; round < 3; ++round) {
    for (int k = 0; k < 12; ++k) {
      Collect hit, miss;
      EXPECT_EQ(sets[k]->scan(lex_sql("select word" + std::to_string(k)), hit), Verdict::kDeny);
      EXPECT_EQ(sets[k]->scan(lex_sql("select word" + std::to_string((k + 1) % 12)), miss),
                Verdict::kAllow);
    }
  }
}

TEST(CompiledRuleSet, EmptyRuleSetCompilesAndMatchesNothing) {
  auto set = compile("# no rules yet\n");
  ASSERT_NE(set, nullptr);
  Collect sink;
  EXPECT_EQ(set->scan(lex_sql("drop database x"), sink), Verdict::kAllow);
  std::vector<DetectSpan> spans;
  EXPECT_TRUE(set->detect("bob@example.com", spans).is_ok());
  EXPECT_TRUE(spans.empty());
}

TEST(CompiledRuleSet, OnlyDetectRulesStillScanSqlAsAllow) {
  auto set = compile("[p.mail]\naction = detect\npattern = @\\w+\nseverity = low\n");
  ASSERT_NE(set, nullptr);
  Collect sink;
  EXPECT_EQ(set->scan(lex_sql("select 'a@b'"), sink), Verdict::kAllow);
  std::vector<DetectSpan> spans;
  ASSERT_TRUE(set->detect("x a@b", spans).is_ok());
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].begin, 3u);
}

TEST(Matcher, WithoutRuleSetEveryScanFailsClosed) {
  Matcher matcher;
  Collect sink;
  EXPECT_EQ(matcher.scan(lex_sql("select 1"), sink), Verdict::kDeny);
  EXPECT_EQ(sink.error, "no rule set loaded");
  PrescreenResult r = matcher.prescreen(lex_sql("select 1"));
  EXPECT_EQ(r.verdict, Verdict::kDeny);
  EXPECT_TRUE(r.scan_failed);
}

TEST(Matcher, BadRuleFileNeverReplacesTheGoodSet) {
  TempDir dir;
  std::string good = dir.path() + "/good.rules";
  std::string bad = dir.path() + "/bad.rules";
  std::ofstream(good) << kSet;
  std::ofstream(bad) << rule("x.bad", "deny", "code", "(unclosed");
  Matcher matcher;
  std::vector<std::string> good_paths = {good};
  ASSERT_TRUE(matcher.load(good_paths).is_ok());
  auto before = matcher.current();
  std::vector<std::string> bad_paths = {bad};
  Status st = matcher.load(bad_paths);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("bad.rules:1: rule x.bad: pattern rejected by Hyperscan"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(matcher.current(), before);
  EXPECT_EQ(matcher.prescreen(lex_sql("drop x")).verdict, Verdict::kDeny);
}

TEST(Matcher, PrescreenResultKeepsMatchedRulesAliveAcrossSwap) {
  Matcher matcher(compile(kSet));
  PrescreenResult r = matcher.prescreen(lex_sql("truncate t"));
  matcher.install(compile(rule("other", "deny", "code", "zzz")));
  ASSERT_EQ(r.matches.size(), 1u);
  EXPECT_EQ(r.matches[0]->id, "a.truncate");
  EXPECT_EQ(r.verdict, Verdict::kApprove);
}

TEST(Matcher, ConcurrentScansDuringSwapsSeeOneWholeSet) {
  // Set A denies `alpha`, set B denies `beta`; a scan of "alpha beta" must report exactly
  // one rule: never a mix and never nothing, however the swaps interleave.
  auto a = compile(rule("a", "deny", "code", "\\balpha\\b"));
  auto b = compile(rule("b", "deny", "code", "\\bbeta\\b"));
  ASSERT_TRUE(a && b);
  Matcher matcher(a);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<long> scans{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      LexedSql lexed = lex_sql("select alpha, beta");
      while (!stop.load()) {
        PrescreenResult r = matcher.prescreen(lexed);
        if (r.verdict != Verdict::kDeny || r.matches.size() != 1) ++bad;
        ++scans;
      }
    });
  }
  for (int i = 0; i < 2000; ++i) matcher.install(i % 2 == 0 ? b : a);
  while (scans.load() < 2000) std::this_thread::yield();
  stop = true;
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace pgwarden::rules
