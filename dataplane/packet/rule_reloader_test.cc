#include "dataplane/packet/rule_reloader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <vector>

#include "dataplane/packet/wire_prescreen.h"

namespace pgwarden::packet {
namespace {

using nlohmann::json;

constexpr char kDenyDrop[] =
    "[deny.drop_table]\naction = deny\nview = code\npattern = \\bdrop\\s+table\\b\n"
    "message = no drops\nseverity = high\n";
constexpr char kDenyTruncate[] =
    "[deny.truncate]\naction = deny\nview = code\npattern = \\btruncate\\b\n"
    "message = no truncate\nseverity = high\n";

class RuleReloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("pgw_reloader_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    file_ = (dir_ / "wire.rules").string();
    std::ofstream(file_) << kDenyDrop;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<RuleReloader> start() {
    auto r = RuleReloader::start(
        {file_}, "v0",
        [this](std::shared_ptr<const rules::CompiledRuleSet> set) {
          std::lock_guard<std::mutex> lock(mu_);
          published_.push_back(std::move(set));
          return static_cast<uint64_t>(published_.size() + 1);
        },
        [this](json ev) {
          std::lock_guard<std::mutex> lock(mu_);
          events_.push_back(std::move(ev));
        });
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return std::move(*r);
  }
  static void wait_reloads(const RuleReloader& r, uint64_t n) {
    for (int i = 0; i < 1000 && r.reload_count() < n; ++i) usleep(5000);
    ASSERT_GE(r.reload_count(), n);
  }

  std::filesystem::path dir_;
  std::string file_;
  std::mutex mu_;
  std::vector<std::shared_ptr<const rules::CompiledRuleSet>> published_;
  std::vector<json> events_;
};

TEST_F(RuleReloaderTest, GoodFilesArePublishedAsANewGenerationAndReported) {
  auto r = start();
  std::ofstream(file_, std::ios::app) << "\n" << kDenyTruncate;
  r->request();
  wait_reloads(*r, 1);
  RuleReloadStats s = r->stats();
  EXPECT_EQ(s.reloads_ok, 1u);
  EXPECT_EQ(s.reloads_failed, 0u);
  EXPECT_EQ(s.generation, 2u);
  EXPECT_NE(s.version, "v0");
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(published_.size(), 1u);
  EXPECT_EQ(published_[0]->rule_set().size(), 2u);
  EXPECT_EQ(wire_rules_version(*published_[0]), s.version);
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0]["kind"], "wire_rules_reload");
  EXPECT_EQ(events_[0]["verdict"], "ok");
  EXPECT_EQ(events_[0]["generation"], 2);
  EXPECT_EQ(events_[0]["rules"], 2);
}

TEST_F(RuleReloaderTest, BrokenFileKeepsTheRunningSetAndReportsFileAndLine) {
  auto r = start();
  std::ofstream(file_, std::ios::app) << "\n[deny.broken]\naction = deny\nview = code\n"
                                         "pattern = (unclosed\nmessage = x\nseverity = high\n";
  r->request();
  wait_reloads(*r, 1);
  RuleReloadStats s = r->stats();
  EXPECT_EQ(s.reloads_ok, 0u);
  EXPECT_EQ(s.reloads_failed, 1u);
  EXPECT_EQ(s.version, "v0");
  EXPECT_NE(s.last_error.find("wire.rules"), std::string::npos) << s.last_error;
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_TRUE(published_.empty());
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0]["verdict"], "rejected");
  EXPECT_EQ(events_[0]["version"], "v0");
  EXPECT_NE(events_[0]["message"].get<std::string>().find("running rules stay"), std::string::npos);
}

TEST_F(RuleReloaderTest, MissingFileIsARejectedReload) {
  auto r = start();
  std::filesystem::remove(file_);
  r->request();
  wait_reloads(*r, 1);
  EXPECT_EQ(r->stats().reloads_failed, 1u);
}

TEST_F(RuleReloaderTest, SighupTriggersAReloadAndOnlyOneReloaderMayOwnIt) {
  auto r = start();
  ASSERT_TRUE(r->install_sighup().is_ok());
  auto other = start();
  EXPECT_FALSE(other->install_sighup().is_ok());
  ASSERT_EQ(::kill(::getpid(), SIGHUP), 0);
  wait_reloads(*r, 1);
  EXPECT_EQ(r->stats().reloads_ok, 1u);
  EXPECT_EQ(other->reload_count(), 0u);
  // A process whose signal loop consumes SIGHUP passes it on the same way.
  EXPECT_TRUE(request_sighup_reload());
  wait_reloads(*r, 2);
  EXPECT_EQ(r->stats().reloads_ok, 2u);
  r.reset();  // gives SIGHUP back: the next reloader may take it
  EXPECT_FALSE(request_sighup_reload());
  EXPECT_TRUE(other->install_sighup().is_ok());
}

TEST_F(RuleReloaderTest, RequestsDuringAReloadAreCoalesced) {
  auto r = start();
  for (int i = 0; i < 50; ++i) r->request();
  wait_reloads(*r, 1);
  usleep(200000);
  EXPECT_GE(r->reload_count(), 1u);
  EXPECT_LE(r->reload_count(), 3u);  // far fewer than 50 compiles
}

}  // namespace
}  // namespace pgwarden::packet
