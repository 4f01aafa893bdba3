#include "rules/rule_bundle.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "rules/lexer.h"

namespace pgwarden::rules {
namespace {

class RuleBundleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-bundle.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    write("deny",
          "[deny.drop]\naction = deny\nview = code\npattern = \\bdrop\\b\nmessage = no\nseverity = "
          "high\n");
    write("approve",
          "[approve.truncate]\naction = approve\nview = code\npattern = \\btruncate\\b\n"
          "message = review\nseverity = low\n");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name + ".rules", std::ios::trunc) << text;
  }
  std::string dir_;
};

TEST_F(RuleBundleTest, ReadsEveryNamedFileOnceAndCompilesEveryList) {
  auto b = RuleBundle::read(dir_, {{"deny", "approve"}, {"deny"}, {}, {"deny"}});
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(b->lists.size(), 2u);
  EXPECT_EQ(b->files.size(), 2u);
  EXPECT_EQ(b->hash.size(), 64u);
  auto compiled = b->compile();
  ASSERT_TRUE(compiled.is_ok()) << compiled.status().to_string();
  EXPECT_EQ(compiled->size(), 2u);
  EXPECT_TRUE(compiled->count("deny,approve"));
  EXPECT_TRUE(compiled->count("deny"));
}

TEST_F(RuleBundleTest, DefaultPrefixResolvesToTheShortFileName) {
  auto path = rule_set_file(dir_, "default-deny");
  ASSERT_TRUE(path.is_ok());
  EXPECT_EQ(*path, dir_ + "/deny.rules");
  EXPECT_FALSE(rule_set_file(dir_, "nope").is_ok());
}

TEST_F(RuleBundleTest, BrokenRuleIsReportedWithFileAndLine) {
  write("deny",
        "[deny.drop]\naction = deny\nview = code\npattern = \\bdrop\\b\n"
        "message = no\nseverity = high\n[deny.bad]\naction = explode\nview = code\npattern = x\n");
  auto b = RuleBundle::read(dir_, {{"deny", "approve"}, {"deny"}});
  ASSERT_TRUE(b.is_ok());
  auto compiled = b->compile();
  ASSERT_FALSE(compiled.is_ok());
  EXPECT_NE(compiled.status().message().find(dir_ + "/deny.rules:7:"), std::string::npos)
      << compiled.status().message();
  // One report per broken file, not one per list that uses it.
  const std::string& m = compiled.status().message();
  size_t first_line = m.find('\n');
  std::string head = m.substr(0, first_line);
  EXPECT_EQ(m.find(head), m.rfind(head)) << m;
}

TEST_F(RuleBundleTest, JsonRoundTripKeepsTheHashAndTheBytes) {
  write("deny", std::string("[deny.nul]\naction = deny\nview = code\nliteral = caf\xc3\xa9\n"));
  auto b = RuleBundle::read(dir_, {{"deny", "approve"}});
  ASSERT_TRUE(b.is_ok());
  RuleBundle copy = *b;
  copy.generation = 7;
  auto back = RuleBundle::from_json(nlohmann::json::parse(copy.to_json().dump()));
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->hash, b->hash);
  EXPECT_EQ(back->generation, 7u);
  EXPECT_EQ(back->files.at("deny").content, b->files.at("deny").content);
  EXPECT_EQ(back->lists, b->lists);
}

TEST_F(RuleBundleTest, TamperedContentIsRefused) {
  auto b = RuleBundle::read(dir_, {{"deny"}});
  ASSERT_TRUE(b.is_ok());
  nlohmann::json j = b->to_json();
  RuleBundle other = *b;
  other.files["deny"].content += "\n# changed\n";
  j["files"] = other.to_json()["files"];
  auto back = RuleBundle::from_json(j);
  ASSERT_FALSE(back.is_ok());
  EXPECT_NE(back.status().message().find("does not match"), std::string::npos);
  j = b->to_json();
  j["files"] = nlohmann::json::array();
  EXPECT_FALSE(RuleBundle::from_json(j).is_ok());
}

TEST_F(RuleBundleTest, ShippedDatabasesAreLoadedInsteadOfCompiledAndChecked) {
  auto b = RuleBundle::read(dir_, {{"deny", "approve"}, {"deny"}});
  ASSERT_TRUE(b.is_ok());
  auto compiled = b->compile();
  ASSERT_TRUE(compiled.is_ok());
  b->attach_databases(*compiled);
  ASSERT_EQ(b->databases.size(), 2u);
  auto back = RuleBundle::from_json(nlohmann::json::parse(b->to_json().dump()));
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  auto loaded = back->compile();
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  for (const auto& [key, set] : *loaded) EXPECT_TRUE(set->loaded_from_cache()) << key;
  // Same verdicts as the compiled ones.
  struct Sink : MatchSink {
    void on_match(const Rule&) override {}
    void on_scan_error(std::string_view) override {}
  } sink;
  EXPECT_EQ(loaded->at("deny,approve")->scan(lex_sql("DROP x"), sink), Verdict::kDeny);
  EXPECT_EQ(loaded->at("deny,approve")->scan(lex_sql("truncate x"), sink), Verdict::kApprove);
  EXPECT_EQ(loaded->at("deny")->scan(lex_sql("select 1"), sink), Verdict::kAllow);
  // A database that does not match its sha256 is refused.
  nlohmann::json j = b->to_json();
  std::string text = j["databases"][0]["base64"].get<std::string>();
  text[10] = text[10] == 'A' ? 'B' : 'A';
  j["databases"][0]["base64"] = text;
  EXPECT_FALSE(RuleBundle::from_json(j).is_ok());
  // Bytes that are no database never replace a compile: they do not load, the sources are
  // compiled.
  RuleBundle junk = *back;
  junk.databases["deny"] = "not a database";
  auto recompiled = junk.compile();
  ASSERT_TRUE(recompiled.is_ok());
  EXPECT_FALSE(recompiled->at("deny")->loaded_from_cache());
}

TEST_F(RuleBundleTest, HashChangesWithContentAndLists) {
  auto a = RuleBundle::read(dir_, {{"deny"}});
  auto b = RuleBundle::read(dir_, {{"deny", "approve"}});
  write("deny", "[deny.x]\naction = deny\nview = code\npattern = x\n");
  auto c = RuleBundle::read(dir_, {{"deny"}});
  ASSERT_TRUE(a.is_ok() && b.is_ok() && c.is_ok());
  EXPECT_NE(a->hash, b->hash);
  EXPECT_NE(a->hash, c->hash);
  EXPECT_EQ(a->hash, RuleBundle::read(dir_, {{"deny"}}).is_ok() ? a->hash : "");
}

// Two nodes that loaded one config at different times give its masks different versions: the
// hash (the generation's identity across a fleet) follows the masks' content only.
TEST_F(RuleBundleTest, HashFollowsTheMasksContentNotTheirVersion) {
  auto b = RuleBundle::read(dir_, {{"deny"}});
  ASSERT_TRUE(b.is_ok());
  RuleBundle node_a = *b, node_b = *b;
  node_a.policy_masks["p"] = {100, sha256_hex("ssn"), true};
  node_b.policy_masks["p"] = {200, sha256_hex("ssn"), true};
  EXPECT_EQ(node_a.compute_hash(), node_b.compute_hash());
  RuleBundle changed = node_a;
  changed.policy_masks["p"].digest = sha256_hex("ssn,email");
  EXPECT_NE(changed.compute_hash(), node_a.compute_hash());
  RuleBundle unmasked = node_a;
  unmasked.policy_masks["p"].masks_values = false;
  EXPECT_NE(unmasked.compute_hash(), node_a.compute_hash());
  // The version still travels.
  node_b.hash = node_b.compute_hash();
  auto back = RuleBundle::from_json(nlohmann::json::parse(node_b.to_json().dump()));
  ASSERT_TRUE(back.is_ok()) << back.status().to_string();
  EXPECT_EQ(back->policy_masks, node_b.policy_masks);
}

}  // namespace
}  // namespace pgwarden::rules
