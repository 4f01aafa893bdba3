#include "controlplane/server/approval_broker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

namespace pgwarden::server {
namespace {

using Clock = ApprovalBroker::Clock;
using std::chrono::milliseconds;

ApprovalTicket ticket() {
  ApprovalTicket t;
  t.session_id = "s";
  t.requester = "agent";
  t.approver_groups = {"reviewers"};
  t.sql = "DELETE FROM crm.orders";
  return t;
}

TEST(ApprovalBrokerTest, ReviewerDecisionCompletesTheWait) {
  ApprovalBroker b;
  std::promise<Result<ApprovalDecision>> p;
  std::string id =
      b.submit(ticket(), Clock::now() + std::chrono::hours(1), Clock::now() + std::chrono::hours(1),
               [&](Result<ApprovalDecision> d) { p.set_value(std::move(d)); });
  EXPECT_EQ(b.pending_count(), 1u);
  EXPECT_EQ(b.decide(id, true, "agent", {"reviewers"}, "self").code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(b.decide(id, true, "bob", {"dba"}, "not a reviewer").code(),
            StatusCode::kPermissionDenied);
  ASSERT_TRUE(b.decide(id, true, "alice", {"reviewers"}, "looks fine").is_ok());
  auto d = p.get_future().get();
  ASSERT_TRUE(d.is_ok());
  EXPECT_TRUE(d->allow);
  EXPECT_EQ(d->reviewer, "alice");
  EXPECT_EQ(b.decide(id, false, "alice", {"reviewers"}, "again").code(), StatusCode::kNotFound);
}

TEST(ApprovalBrokerTest, TimeoutDeniesAndDeadlineExpiresWithError) {
  ApprovalBroker b;
  std::promise<Result<ApprovalDecision>> timed_out, expired;
  auto start = Clock::now();
  b.submit(ticket(), start + milliseconds(100), start + milliseconds(5000),
           [&](Result<ApprovalDecision> d) { timed_out.set_value(std::move(d)); });
  b.submit(ticket(), start + milliseconds(5000), start + milliseconds(150),
           [&](Result<ApprovalDecision> d) { expired.set_value(std::move(d)); });
  auto t = timed_out.get_future().get();
  ASSERT_TRUE(t.is_ok());
  EXPECT_FALSE(t->allow);
  EXPECT_EQ(t->reason, "approval timed out");
  auto e = expired.get_future().get();
  ASSERT_FALSE(e.is_ok());
  EXPECT_EQ(e.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
}

TEST(ApprovalBrokerTest, ManyWaitsShareOneTimerAndStopDeniesThem) {
  std::atomic<int> denied{0};
  {
    ApprovalBroker b;
    for (int i = 0; i < 1000; ++i) {
      b.submit(ticket(), Clock::now() + std::chrono::hours(1), Clock::now() + std::chrono::hours(1),
               [&](Result<ApprovalDecision> d) {
                 if (d.is_ok() && !d->allow) denied++;
               });
    }
    EXPECT_EQ(b.pending_count(), 1000u);
  }
  EXPECT_EQ(denied.load(), 1000);
}

}  // namespace
}  // namespace pgwarden::server
