#include "controlplane/budgets/budget_book.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace pgwarden::budgets {
namespace {

using protocol::BudgetMeasure;
using protocol::BudgetUsage;

class BudgetBookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("pgw-budget-book-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    BudgetRule r;
    r.name = "hourly";
    r.identities = {"svc:*"};
    r.window = "1h";
    r.window_ms = 3600000;
    r.limit[static_cast<size_t>(BudgetMeasure::kStatements)] = 3;
    r.limit[static_cast<size_t>(BudgetMeasure::kRows)] = 100;
    rules_.push_back(r);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<BudgetBook> open() {
    auto ledger = FileBudgetLedger::open(dir_.string());
    EXPECT_TRUE(ledger.is_ok()) << ledger.status().message();
    return std::make_unique<BudgetBook>(std::move(*ledger));
  }
  static BudgetUsage statement(uint64_t rows) {
    BudgetUsage u;
    u[BudgetMeasure::kStatements] = 1;
    u[BudgetMeasure::kRows] = rows;
    return u;
  }

  std::filesystem::path dir_;
  std::vector<BudgetRule> rules_;
  const int64_t now_ = 1796000400000 + 1234;
};

TEST_F(BudgetBookTest, TheStatementThatCrossesALimitIsReportedOnce) {
  auto book = open();
  EXPECT_TRUE(book->account(rules_, "svc:a", {}, statement(10), now_).crossed.empty());
  EXPECT_TRUE(book->account(rules_, "svc:a", {}, statement(10), now_).crossed.empty());
  auto third = book->account(rules_, "svc:a", {}, statement(10), now_);
  ASSERT_EQ(third.crossed.size(), 1u);
  EXPECT_EQ(third.states[0].exhausted_measure(), 0);
  // Past the limit: still exhausted, not crossed again.
  EXPECT_TRUE(book->account(rules_, "svc:a", {}, statement(10), now_).crossed.empty());
  // Other identities and identities the rule does not name are separate.
  EXPECT_EQ(book->states(rules_, "svc:b", {}, now_)[0].exhausted_measure(), -1);
  EXPECT_TRUE(book->states(rules_, "alice", {}, now_).empty());
  EXPECT_TRUE(book->account(rules_, "alice", {}, statement(1000), now_).states.empty());
}

TEST_F(BudgetBookTest, ALargeResultCrossesTheRowsLimit) {
  auto book = open();
  auto a = book->account(rules_, "svc:a", {}, statement(5000), now_);
  ASSERT_EQ(a.crossed, std::vector<std::string>{"hourly"});
  EXPECT_EQ(a.states[0].exhausted_measure(), static_cast<int>(BudgetMeasure::kRows));
}

TEST_F(BudgetBookTest, TheNextWindowStartsFromZero) {
  auto book = open();
  for (int i = 0; i < 3; ++i) book->account(rules_, "svc:a", {}, statement(1), now_);
  EXPECT_GE(book->states(rules_, "svc:a", {}, now_)[0].exhausted_measure(), 0);
  auto next = book->states(rules_, "svc:a", {}, now_ + 3600000);
  EXPECT_EQ(next[0].exhausted_measure(), -1);
  EXPECT_TRUE(next[0].used.empty());
  EXPECT_TRUE(book->account(rules_, "svc:a", {}, statement(1), now_ + 3600000).crossed.empty());
}

TEST_F(BudgetBookTest, CountsSurviveAReopenAndResetForgetsThem) {
  {
    auto book = open();
    for (int i = 0; i < 2; ++i) book->account(rules_, "svc:a", {}, statement(7), now_);
    ASSERT_TRUE(book->flush().is_ok());
  }
  auto book = open();
  auto s = book->states(rules_, "svc:a", {}, now_);
  EXPECT_EQ(s[0].used[BudgetMeasure::kStatements], 2u);
  EXPECT_EQ(s[0].used[BudgetMeasure::kRows], 14u);
  EXPECT_EQ(book->list(rules_, now_).size(), 1u);
  EXPECT_EQ(book->show(rules_, "svc:a", now_)[0]["used"]["rows_returned"], 14);
  ASSERT_TRUE(book->reset("svc:a", "").is_ok());
  EXPECT_TRUE(book->states(rules_, "svc:a", {}, now_)[0].used.empty());
  auto again = open();  // the reset is durable at once
  EXPECT_TRUE(again->states(rules_, "svc:a", {}, now_)[0].used.empty());
}

TEST_F(BudgetBookTest, ACorruptLedgerFileIsRefused) {
  std::ofstream(dir_ / "budgets.json") << "{\"version\": 1, \"counters\": [{\"budget\": 3}]}";
  auto ledger = FileBudgetLedger::open(dir_.string());
  ASSERT_FALSE(ledger.is_ok());
  EXPECT_NE(ledger.status().message().find("budgets.json"), std::string::npos);
}

}  // namespace
}  // namespace pgwarden::budgets
