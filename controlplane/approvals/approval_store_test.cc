#include "controlplane/approvals/approval_store.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace pgwarden::approvals {
namespace {

namespace fs = std::filesystem;

class ApprovalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-approvals-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  ApprovalStoreOptions options(bool timer = false) {
    ApprovalStoreOptions o;
    o.state_dir = dir_;
    o.clock_ms = [this] { return now_.load(); };
    o.start_timer_thread = timer;
    o.audit = [this](const nlohmann::json& j) {
      std::lock_guard lock(audit_mu_);
      audit_.push_back(j);
    };
    return o;
  }

  std::unique_ptr<ApprovalStore> open_store(ApprovalStoreOptions o) {
    auto s = ApprovalStore::open(std::move(o));
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? std::move(*s) : nullptr;
  }

  static NewApprovalRequest request(const std::string& session = "s1",
                                    const std::string& identity = "agent-7") {
    NewApprovalRequest r;
    r.session_id = session;
    r.identity = identity;
    r.groups = {"agents"};
    r.target = "crm";
    r.sql = "DELETE FROM crm.orders WHERE id = 42";
    r.shape_key = "9f1c2b3a4d5e6f70";
    r.rule = "approve.delete";
    r.reason = "delete needs approval";
    r.settings.approver_groups = {"dba", "oncall"};
    r.settings.timeout_seconds = 60;
    return r;
  }

  static ApprovalDecision approve_by(const std::string& who, std::vector<std::string> groups,
                                     ApprovalScope scope = ApprovalScope::kOnce,
                                     int64_t seconds = 0) {
    ApprovalDecision d;
    d.approve = true;
    d.decider = who;
    d.decider_groups = std::move(groups);
    d.reason = "looks fine";
    d.scope = scope;
    d.grant_seconds = seconds;
    return d;
  }

  std::vector<std::string> audit_events() {
    std::lock_guard lock(audit_mu_);
    std::vector<std::string> out;
    for (const auto& j : audit_) out.push_back(j.at("event").get<std::string>());
    return out;
  }

  std::string dir_;
  std::atomic<int64_t> now_{1'700'000'000'000};
  std::mutex audit_mu_;
  std::vector<nlohmann::json> audit_;
};

TEST_F(ApprovalStoreTest, CreatedRequestIsPendingPersistedAndAudited) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->state, ApprovalState::kPending);
  EXPECT_EQ(r->deadline_ms, now_.load() + 60'000);
  EXPECT_EQ(r->approver_groups, (std::vector<std::string>{"dba", "oncall"}));
  EXPECT_EQ(audit_events(), std::vector<std::string>{"approval_requested"});
  std::ifstream in(store->journal_path());
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["id"], r->id);
  EXPECT_EQ(j["sql"], "DELETE FROM crm.orders WHERE id = 42");
  EXPECT_EQ(j["state"], "pending");
}

TEST_F(ApprovalStoreTest, IdsAreUniqueAndUrlSafe) {
  auto store = open_store(options());
  std::set<std::string> ids;
  for (int i = 0; i < 200; ++i) {
    auto r = store->create(request());
    ASSERT_TRUE(r.is_ok());
    EXPECT_EQ(r->id.size(), 16u);
    EXPECT_TRUE(std::isalpha(static_cast<unsigned char>(r->id[0]))) << r->id;
    EXPECT_EQ(
        r->id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
        std::string::npos);
    ids.insert(r->id);
  }
  EXPECT_EQ(ids.size(), 200u);
}

TEST_F(ApprovalStoreTest, ApproverApprovesAndWaiterIsCalledExactlyOnce) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  std::atomic<int> calls{0};
  ApprovalRequest seen;
  ASSERT_TRUE(store
                  ->wait(r->id,
                         [&](const ApprovalRequest& done) {
                           ++calls;
                           seen = done;
                         })
                  .is_ok());
  EXPECT_EQ(calls.load(), 0);
  auto d = store->decide(r->id, approve_by("alice", {"dba"}));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(seen.state, ApprovalState::kApproved);
  EXPECT_EQ(seen.decider, "alice");
  EXPECT_EQ(seen.scope, ApprovalScope::kOnce);
  // A second decision is refused and does not call the waiter again.
  ApprovalDecision deny = approve_by("bob", {"oncall"});
  deny.approve = false;
  auto again = store->decide(r->id, deny);
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  store->expire_due();
  store->abandon_session("s1");
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(audit_events(), (std::vector<std::string>{"approval_requested", "approval_approved"}));
}

TEST_F(ApprovalStoreTest, RequesterCannotDecideOwnRequestEvenWhenApprover) {
  auto store = open_store(options());
  auto r = store->create(request("s1", "alice"));
  ASSERT_TRUE(r.is_ok());
  auto d = store->decide(r->id, approve_by("alice", {"dba"}));
  EXPECT_EQ(d.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(store->get(r->id)->state, ApprovalState::kPending);
}

TEST_F(ApprovalStoreTest, PrincipalOutsideApproverGroupsIsRefused) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(store->decide(r->id, approve_by("mallory", {"agents", "dev"})).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(store->decide(r->id, approve_by("mallory", {})).status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(store->get(r->id)->state, ApprovalState::kPending);
}

TEST_F(ApprovalStoreTest, PolicyWithoutApproverGroupsIsRefusedAtCreation) {
  auto store = open_store(options());
  auto req = request();
  req.settings.approver_groups.clear();
  EXPECT_EQ(store->create(req).status().code(), StatusCode::kPermissionDenied);
}

TEST_F(ApprovalStoreTest, UnknownIdIsNotFound) {
  auto store = open_store(options());
  EXPECT_EQ(store->decide("nope", approve_by("alice", {"dba"})).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store->wait("nope", [](const ApprovalRequest&) {}).code(), StatusCode::kNotFound);
}

TEST_F(ApprovalStoreTest, DeadlineDeniesWithReasonTimedOut) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  std::promise<ApprovalRequest> done;
  ASSERT_TRUE(store->wait(r->id, [&](const ApprovalRequest& x) { done.set_value(x); }).is_ok());
  now_ += 59'999;
  EXPECT_EQ(store->expire_due(), 0u);
  now_ += 1;
  EXPECT_EQ(store->expire_due(), 1u);
  auto x = done.get_future().get();
  EXPECT_EQ(x.state, ApprovalState::kDenied);
  EXPECT_EQ(x.decision_reason, "timed out");
  EXPECT_EQ(audit_events().back(), "approval_denied");
}

TEST_F(ApprovalStoreTest, EarlierEscalationDeadlineWinsOverPolicyTimeout) {
  auto store = open_store(options());
  auto req = request();
  req.deadline_ms = now_.load() + 5'000;
  auto r = store->create(req);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->deadline_ms, now_.load() + 5'000);
  now_ += 5'000;
  EXPECT_EQ(store->expire_due(), 1u);
  req.deadline_ms = now_.load() + 3'600'000;  // later than the policy timeout: ignored
  EXPECT_EQ(store->create(req)->deadline_ms, now_.load() + 60'000);
}

TEST_F(ApprovalStoreTest, DecisionAfterDeadlineIsRefusedAndRecordedAsTimeout) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  now_ += 61'000;
  auto d = store->decide(r->id, approve_by("alice", {"dba"}));
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->get(r->id)->state, ApprovalState::kDenied);
  EXPECT_EQ(store->get(r->id)->decision_reason, "timed out");
}

TEST_F(ApprovalStoreTest, TimerThreadExpiresRequestsOnRealClock) {
  ApprovalStoreOptions o = options(true);
  o.clock_ms = nullptr;
  auto store = open_store(o);
  auto req = request();
  req.settings.timeout_seconds = 1;
  auto r = store->create(req);
  ASSERT_TRUE(r.is_ok());
  std::promise<ApprovalRequest> done;
  ASSERT_TRUE(store->wait(r->id, [&](const ApprovalRequest& x) { done.set_value(x); }).is_ok());
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get().decision_reason, "timed out");
}

TEST_F(ApprovalStoreTest, ManyWaitingRequestsUseNoExtraThreads) {
  auto count_threads = [] {
    int n = 0;
    for (const auto& e : fs::directory_iterator("/proc/self/task")) {
      (void)e;
      ++n;
    }
    return n;
  };
  ApprovalStoreOptions o = options(true);
  auto store = open_store(o);
  int before = count_threads();
  std::atomic<int> calls{0};
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    auto r = store->create(request("s" + std::to_string(i)));
    ASSERT_TRUE(r.is_ok());
    ASSERT_TRUE(store->wait(r->id, [&](const ApprovalRequest&) { ++calls; }).is_ok());
    ids.push_back(r->id);
  }
  EXPECT_EQ(count_threads(), before);
  for (int i = 0; i < 300; ++i) store->abandon_session("s" + std::to_string(i));
  EXPECT_EQ(calls.load(), 300);
}

TEST_F(ApprovalStoreTest, ShapeGrantCoversSameIdentityAndShapeUntilItExpires) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  EXPECT_FALSE(store->lookup_standing_grant("agent-7", r->shape_key, now_.load()));
  auto d = store->decide(r->id, approve_by("alice", {"dba"}, ApprovalScope::kShape, 600));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  auto g = store->lookup_standing_grant("agent-7", r->shape_key, now_.load() + 1000);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->approval_id, r->id);
  EXPECT_EQ(g->expires_ms, now_.load() + 600'000);
  EXPECT_FALSE(store->lookup_standing_grant("agent-8", r->shape_key, now_.load()));
  EXPECT_FALSE(store->lookup_standing_grant("agent-7", "0000000000000000", now_.load()));
  EXPECT_FALSE(store->lookup_standing_grant("agent-7", r->shape_key, now_.load() + 600'000));
}

TEST_F(ApprovalStoreTest, OnceApprovalAndDenialGrantNothing) {
  auto store = open_store(options());
  auto a = store->create(request());
  auto b = store->create(request());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_TRUE(store->decide(a->id, approve_by("alice", {"dba"})).is_ok());
  ApprovalDecision deny = approve_by("alice", {"dba"}, ApprovalScope::kShape, 600);
  deny.approve = false;
  auto d = store->decide(b->id, deny);
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->scope, ApprovalScope::kOnce);
  EXPECT_FALSE(store->lookup_standing_grant("agent-7", a->shape_key, now_.load()));
}

TEST_F(ApprovalStoreTest, ShapeGrantDurationMustBeBounded) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(
      store->decide(r->id, approve_by("alice", {"dba"}, ApprovalScope::kShape, 0)).status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(store->decide(r->id, approve_by("alice", {"dba"}, ApprovalScope::kShape, 86400 * 30))
                .status()
                .code(),
            StatusCode::kInvalidArgument);
}

TEST_F(ApprovalStoreTest, WaitOnDecidedRequestRunsAtOnce) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(store->decide(r->id, approve_by("alice", {"dba"})).is_ok());
  int calls = 0;
  ASSERT_TRUE(store
                  ->wait(r->id,
                         [&](const ApprovalRequest& x) {
                           ++calls;
                           EXPECT_EQ(x.state, ApprovalState::kApproved);
                         })
                  .is_ok());
  EXPECT_EQ(calls, 1);
}

TEST_F(ApprovalStoreTest, EndedSessionAbandonsOnlyItsPendingRequests) {
  auto store = open_store(options());
  auto a = store->create(request("s1"));
  auto b = store->create(request("s2"));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ApprovalState seen = ApprovalState::kPending;
  ASSERT_TRUE(store->wait(a->id, [&](const ApprovalRequest& x) { seen = x.state; }).is_ok());
  EXPECT_EQ(store->abandon_session("s1"), 1u);
  EXPECT_EQ(seen, ApprovalState::kAbandoned);
  EXPECT_EQ(store->get(b->id)->state, ApprovalState::kPending);
  EXPECT_EQ(store->list(ApprovalState::kPending).size(), 1u);
}

TEST_F(ApprovalStoreTest, RestartAbandonsPendingOfGoneSessionsAndKeepsDecisionsAndGrants) {
  std::string pending_id, granted_id, denied_id;
  {
    auto store = open_store(options());
    pending_id = store->create(request("gone"))->id;
    granted_id = store->create(request("s2"))->id;
    denied_id = store->create(request("s3"))->id;
    ASSERT_TRUE(store->decide(granted_id, approve_by("alice", {"dba"}, ApprovalScope::kShape, 600))
                    .is_ok());
    ApprovalDecision deny = approve_by("bob", {"oncall"});
    deny.approve = false;
    ASSERT_TRUE(store->decide(denied_id, deny).is_ok());
  }
  audit_.clear();
  auto store = open_store(options());
  EXPECT_EQ(store->get(pending_id)->state, ApprovalState::kAbandoned);
  EXPECT_EQ(store->get(granted_id)->state, ApprovalState::kApproved);
  EXPECT_EQ(store->get(denied_id)->state, ApprovalState::kDenied);
  EXPECT_EQ(store->get(denied_id)->decider, "bob");
  EXPECT_TRUE(store->lookup_standing_grant("agent-7", "9f1c2b3a4d5e6f70", now_.load()));
  EXPECT_EQ(audit_events(), std::vector<std::string>{"approval_abandoned"});
  // The compacted journal holds one line per request.
  std::ifstream in(store->journal_path());
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 4);  // 3 compacted + the abandon transition
}

// The journal file is moved away and a directory takes its path: a transition is refused
// (nothing changes) until the path can take a journal again; then a new journal is written with
// every request, so a restart finds them all.
TEST_F(ApprovalStoreTest, AJournalReplacedByADirectoryRefusesTransitionsThenIsRewritten) {
  auto store = open_store(options());
  const std::string first = store->create(request("s1"))->id;
  const std::string path = store->journal_path();
  ASSERT_EQ(std::rename(path.c_str(), (path + ".moved").c_str()), 0);
  ASSERT_TRUE(fs::create_directory(path));
  auto refused = store->create(request("s2"));
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().sqlstate(), "58030") << refused.status().to_string();
  EXPECT_NE(refused.status().message().find("EISDIR"), std::string::npos)
      << refused.status().message();
  EXPECT_FALSE(store->decide(first, approve_by("alice", {"dba"})).is_ok());
  EXPECT_EQ(store->get(first)->state, ApprovalState::kPending);  // nothing changed
  fs::remove(path);
  ASSERT_TRUE(store->decide(first, approve_by("alice", {"dba"})).is_ok());
  const std::string second = store->create(request("s2"))->id;
  store.reset();
  auto again = open_store(options());
  EXPECT_EQ(again->get(first)->state, ApprovalState::kApproved);
  EXPECT_TRUE(again->get(second).has_value()) << "a request made after the rewrite was lost";
}

TEST_F(ApprovalStoreTest, ARemovedJournalIsRewrittenBeforeTheNextTransition) {
  auto store = open_store(options());
  const std::string first = store->create(request("s1"))->id;
  ASSERT_EQ(::unlink(store->journal_path().c_str()), 0);
  ASSERT_TRUE(
      store->decide(first, approve_by("alice", {"dba"}, ApprovalScope::kShape, 600)).is_ok());
  store.reset();
  auto again = open_store(options());
  ASSERT_TRUE(again->get(first).has_value());
  EXPECT_EQ(again->get(first)->state, ApprovalState::kApproved);
  EXPECT_TRUE(again->lookup_standing_grant("agent-7", "9f1c2b3a4d5e6f70", now_.load()));
}

TEST_F(ApprovalStoreTest, RestartKeepsPendingRequestWhoseSessionIsAlive) {
  std::string id;
  {
    auto store = open_store(options());
    id = store->create(request("alive"))->id;
  }
  auto o = options();
  o.session_alive = [](const std::string& s) { return s == "alive"; };
  auto store = open_store(o);
  EXPECT_EQ(store->get(id)->state, ApprovalState::kPending);
  now_ += 120'000;
  EXPECT_EQ(store->expire_due(), 1u);
  EXPECT_EQ(store->get(id)->decision_reason, "timed out");
}

TEST_F(ApprovalStoreTest, TornLastJournalLineIsIgnoredOnRestart) {
  std::string id;
  {
    auto store = open_store(options());
    id = store->create(request())->id;
    ASSERT_TRUE(store->decide(id, approve_by("alice", {"dba"})).is_ok());
  }
  {
    std::ofstream out(dir_ + "/approvals.jsonl", std::ios::app);
    out << R"({"id":"half-written","session_id":"s)";
  }
  auto store = open_store(options());
  EXPECT_EQ(store->list().size(), 1u);
  EXPECT_EQ(store->get(id)->state, ApprovalState::kApproved);
  EXPECT_TRUE(store->create(request()).is_ok());
  EXPECT_EQ(store->list().size(), 2u);
}

TEST_F(ApprovalStoreTest, ConcurrentDecisionsHaveExactlyOneWinner) {
  auto store = open_store(options());
  auto r = store->create(request());
  ASSERT_TRUE(r.is_ok());
  std::atomic<int> calls{0};
  ASSERT_TRUE(store->wait(r->id, [&](const ApprovalRequest&) { ++calls; }).is_ok());
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      ApprovalDecision d = approve_by("reviewer" + std::to_string(i), {"dba"});
      d.approve = i % 2 == 0;
      if (store->decide(r->id, d).is_ok()) ++wins;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(ApprovalStoreTest, UnwritableStateDirFailsToOpen) {
  ApprovalStoreOptions o = options();
  o.state_dir = dir_ + "/does/not/exist";
  EXPECT_FALSE(ApprovalStore::open(o).is_ok());
}

TEST(ApprovalRequestJson, RoundTripsAndRejectsBadRecords) {
  ApprovalRequest r;
  r.id = "abc";
  r.session_id = "s";
  r.identity = "i";
  r.state = ApprovalState::kApproved;
  r.scope = ApprovalScope::kShape;
  r.grant_expires_ms = 5;
  auto back = ApprovalRequest::from_json(r.to_json());
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->state, ApprovalState::kApproved);
  EXPECT_EQ(back->scope, ApprovalScope::kShape);
  EXPECT_EQ(back->grant_expires_ms, 5);
  auto bad = r.to_json();
  bad["state"] = "maybe";
  EXPECT_FALSE(ApprovalRequest::from_json(bad).is_ok());
  EXPECT_FALSE(ApprovalRequest::from_json(nlohmann::json::array()).is_ok());
  bad = r.to_json();
  bad.erase("sql");
  EXPECT_FALSE(ApprovalRequest::from_json(bad).is_ok());
}

TEST(ApprovalRequestJson, EffectRoundTripsAndOldJournalsReadWithout) {
  ApprovalRequest r;
  r.id = "eff";
  r.effect.reasons = {"where_absent: DELETE on public.t has no WHERE clause"};
  r.effect.estimated_rows = 1200;
  r.effect.dry_run_rows = 1187;
  r.effect.estimate_note = "";
  r.effect.dry_run_note = "";
  nlohmann::json j = r.to_json();
  EXPECT_EQ(j["estimated_rows"], 1200);
  auto back = ApprovalRequest::from_json(j);
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(back->effect, r.effect);
  r.effect = ApprovalEffect{};
  r.effect.dry_run_note = "calls nextval";
  j = r.to_json();
  EXPECT_TRUE(j["estimated_rows"].is_null());
  EXPECT_EQ(ApprovalRequest::from_json(j)->effect, r.effect);
  for (const char* k :
       {"effect", "estimated_rows", "estimate_note", "dry_run_rows", "dry_run_note"}) {
    j.erase(k);
  }
  auto old = ApprovalRequest::from_json(j);
  ASSERT_TRUE(old.is_ok());
  EXPECT_EQ(old->effect, ApprovalEffect{});
}

// --- Approval hygiene: N of M, linked identities, break-glass -----------------------------

TEST_F(ApprovalStoreTest, TwoOfManyNeedsTwoDistinctApproversAndAuditsEachVote) {
  auto store = open_store(options());
  NewApprovalRequest n = request();
  n.settings.required_approvals = 2;
  auto r = store->create(n);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->required_approvals, 2);
  std::optional<ApprovalRequest> decided;
  ASSERT_TRUE(store->wait(r->id, [&](const ApprovalRequest& x) { decided = x; }).is_ok());

  auto first = store->decide(r->id, approve_by("alice", {"dba"}));
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_EQ(first->state, ApprovalState::kPending);
  EXPECT_EQ(first->votes.size(), 1u);
  EXPECT_FALSE(decided.has_value());
  // The same reviewer again does not count twice.
  auto again = store->decide(r->id, approve_by("alice", {"dba"}));
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(again.status().message().find("already approved by alice"), std::string::npos);

  auto second = store->decide(r->id, approve_by("bob", {"oncall"}));
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_EQ(second->state, ApprovalState::kApproved);
  EXPECT_EQ(second->decider, "bob");
  ASSERT_TRUE(decided.has_value());
  EXPECT_EQ(decided->votes.size(), 2u);
  EXPECT_EQ(audit_events(),
            (std::vector<std::string>{"approval_requested", "approval_vote", "approval_approved"}));
  // Votes survive a restart.
  store.reset();
  auto reopened = open_store(options());
  EXPECT_EQ(reopened->get(r->id)->votes.size(), 2u);
  EXPECT_EQ(reopened->get(r->id)->votes[0].decider, "alice");
}

// Two nodes' stores sharing one replica (what PgStateStore does: compare-and-set on the state
// and on the number of votes before the new one).
TEST_F(ApprovalStoreTest, VotesCastOnTwoNodesAddUpThroughTheSharedStore) {
  std::mutex mu;
  std::map<std::string, ApprovalRequest> shared;
  auto replicated = [&](ApprovalStoreOptions o) {
    o.replicate = [&](const ApprovalRequest& r, bool created) -> Status {
      std::lock_guard lock(mu);
      auto it = shared.find(r.id);
      if (created) {
        shared[r.id] = r;
        return Status::ok();
      }
      bool adds_vote = r.state == ApprovalState::kApproved || r.state == ApprovalState::kPending;
      if (it == shared.end() || it->second.terminal() ||
          (adds_vote && it->second.votes.size() + 1 != r.votes.size())) {
        return failed_precondition("changed on another node");
      }
      it->second = r;
      return Status::ok();
    };
    o.refresh = [&](const std::string& id) -> Result<std::optional<ApprovalRequest>> {
      std::lock_guard lock(mu);
      auto it = shared.find(id);
      if (it == shared.end()) return std::optional<ApprovalRequest>();
      return std::optional<ApprovalRequest>(it->second);
    };
    return o;
  };
  auto node_a = open_store(replicated(options()));
  fs::path dir_b = fs::path(dir_) / "node-b";
  fs::create_directories(dir_b);
  ApprovalStoreOptions ob = replicated(options());
  ob.state_dir = dir_b.string();
  auto node_b = open_store(std::move(ob));

  NewApprovalRequest n = request();
  n.settings.required_approvals = 2;
  auto r = node_a->create(n);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(node_b->apply_remote(shared.at(r->id)).is_ok());  // the store's notification
  std::optional<ApprovalRequest> released;
  ASSERT_TRUE(node_a->wait(r->id, [&](const ApprovalRequest& x) { released = x; }).is_ok());

  auto first = node_a->decide(r->id, approve_by("alice", {"dba"}));
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_EQ(first->state, ApprovalState::kPending);
  EXPECT_EQ(shared.at(r->id).votes.size(), 1u);  // the vote is in the store, not only here
  // Node B never heard of alice's vote: it reads the store before deciding. alice again does
  // not count twice; bob's is the second approval.
  auto again = node_b->decide(r->id, approve_by("alice", {"dba"}));
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  auto second = node_b->decide(r->id, approve_by("bob", {"oncall"}));
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  EXPECT_EQ(second->state, ApprovalState::kApproved);
  EXPECT_EQ(second->votes.size(), 2u);
  // Node A's held statement is released when the decision reaches it.
  ASSERT_TRUE(node_a->apply_remote(shared.at(r->id)).is_ok());
  ASSERT_TRUE(released.has_value());
  EXPECT_EQ(released->state, ApprovalState::kApproved);
}

TEST_F(ApprovalStoreTest, OneDenyDeniesAfterEarlierApprovals) {
  auto store = open_store(options());
  NewApprovalRequest n = request();
  n.settings.required_approvals = 3;
  auto r = store->create(n);
  ASSERT_TRUE(store->decide(r->id, approve_by("alice", {"dba"})).is_ok());
  ApprovalDecision deny = approve_by("bob", {"dba"});
  deny.approve = false;
  deny.reason = "not during the freeze";
  auto d = store->decide(r->id, deny);
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->state, ApprovalState::kDenied);
  EXPECT_EQ(d->decision_reason, "not during the freeze");
  EXPECT_EQ(store->decide(r->id, approve_by("carol", {"dba"})).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(ApprovalStoreTest, PendingVotesStillExpireAtTheDeadline) {
  auto store = open_store(options());
  NewApprovalRequest n = request();
  n.settings.required_approvals = 2;
  auto r = store->create(n);
  ASSERT_TRUE(store->decide(r->id, approve_by("alice", {"dba"})).is_ok());
  now_ += 61'000;
  EXPECT_EQ(store->expire_due(), 1u);
  EXPECT_EQ(store->get(r->id)->state, ApprovalState::kDenied);
  EXPECT_EQ(store->get(r->id)->decision_reason, "timed out");
}

TEST_F(ApprovalStoreTest, ScopeOfSeveralApprovalsIsTheNarrowest) {
  auto store = open_store(options());
  NewApprovalRequest n = request();
  n.settings.required_approvals = 2;
  auto r = store->create(n);
  ASSERT_TRUE(
      store->decide(r->id, approve_by("alice", {"dba"}, ApprovalScope::kShape, 600)).is_ok());
  auto d = store->decide(r->id, approve_by("bob", {"dba"}, ApprovalScope::kShape, 60));
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->scope, ApprovalScope::kShape);
  EXPECT_EQ(d->grant_expires_ms, now_.load() + 60'000);

  auto r2 = store->create(n);
  ASSERT_TRUE(store->decide(r2->id, approve_by("alice", {"dba"})).is_ok());
  auto d2 = store->decide(r2->id, approve_by("bob", {"dba"}, ApprovalScope::kShape, 600));
  ASSERT_TRUE(d2.is_ok());
  EXPECT_EQ(d2->scope, ApprovalScope::kOnce);
}

ApprovalStoreOptions with_links(ApprovalStoreOptions o) {
  // alice@example.com runs agent-7 and the service key key:ab12.
  o.linked_identities = [](const std::string& who) -> std::vector<std::string> {
    const std::vector<std::string> person{"alice@example.com", "agent-7", "key:ab12"};
    if (std::find(person.begin(), person.end(), who) == person.end()) return {};
    std::vector<std::string> out;
    for (const auto& p : person) {
      if (p != who) out.push_back(p);
    }
    return out;
  };
  return o;
}

TEST_F(ApprovalStoreTest, NoSelfApprovalAcrossLinkedIdentities) {
  auto store = open_store(with_links(options()));
  auto r = store->create(request("s1", "agent-7"));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->requester_links, (std::vector<std::string>{"alice@example.com", "key:ab12"}));
  for (const char* linked : {"alice@example.com", "key:ab12"}) {
    auto d = store->decide(r->id, approve_by(linked, {"dba"}));
    EXPECT_EQ(d.status().code(), StatusCode::kPermissionDenied) << linked;
    EXPECT_NE(d.status().message().find("linked to the requester"), std::string::npos);
  }
  // Denying one's own request is refused too (the requester never decides).
  ApprovalDecision deny = approve_by("alice@example.com", {"dba"});
  deny.approve = false;
  EXPECT_EQ(store->decide(r->id, deny).status().code(), StatusCode::kPermissionDenied);
  // Break-glass does not lift it either.
  ApprovalDecision bg = approve_by("alice@example.com", {"dba"});
  bg.break_glass = true;
  EXPECT_EQ(store->decide(r->id, bg).status().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(store->decide(r->id, approve_by("bob", {"dba"})).is_ok());
}

TEST_F(ApprovalStoreTest, LinkedIdentitiesCountAsOneApprover) {
  auto store = open_store(with_links(options()));
  NewApprovalRequest n = request("s1", "agent-9");
  n.settings.required_approvals = 2;
  auto r = store->create(n);
  ASSERT_TRUE(store->decide(r->id, approve_by("alice@example.com", {"dba"})).is_ok());
  auto d = store->decide(r->id, approve_by("key:ab12", {"dba"}));
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(d.status().message().find("linked"), std::string::npos);
}

TEST_F(ApprovalStoreTest, BreakGlassNeedsItsGroupAndAReasonAndPages) {
  auto store = open_store(options());
  NewApprovalRequest n = request();
  n.settings.required_approvals = 3;
  n.settings.break_glass_groups = {"incident-commanders"};
  auto r = store->create(n);
  ApprovalDecision bg = approve_by("carol", {"dba"});
  bg.break_glass = true;
  bg.reason = "prod down, INC-42";
  // Not in the break-glass group.
  EXPECT_EQ(store->decide(r->id, bg).status().code(), StatusCode::kPermissionDenied);
  bg.decider_groups = {"incident-commanders"};
  bg.reason = "  ";
  EXPECT_EQ(store->decide(r->id, bg).status().code(), StatusCode::kPermissionDenied);
  bg.reason = "prod down, INC-42";
  auto d = store->decide(r->id, bg);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_EQ(d->state, ApprovalState::kApproved);
  EXPECT_TRUE(d->break_glass);
  EXPECT_EQ(audit_events(), (std::vector<std::string>{"approval_requested", "approval_approved",
                                                      "approval_break_glass"}));
  std::lock_guard lock(audit_mu_);
  EXPECT_EQ(audit_.back()["severity"], "critical");
  EXPECT_EQ(audit_.back()["page"], true);
  EXPECT_EQ(audit_.back()["decider"], "carol");
  EXPECT_EQ(audit_.back()["reason"], "prod down, INC-42");
}

TEST_F(ApprovalStoreTest, BreakGlassIsRefusedWhenThePolicyHasNoBreakGlassGroup) {
  auto store = open_store(options());
  auto r = store->create(request());
  ApprovalDecision bg = approve_by("carol", {"dba"});
  bg.break_glass = true;
  auto d = store->decide(r->id, bg);
  EXPECT_EQ(d.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(store->get(r->id)->state, ApprovalState::kPending);
}

TEST(ApprovalConsoleUrl, JoinsBaseAndIdOrIsEmpty) {
  EXPECT_EQ(approval_console_url("https://gw.example.com/", "abc"),
            "https://gw.example.com/approvals/abc");
  EXPECT_EQ(approval_console_url("", "abc"), "");
}

// A shape grant covers the same shape with other literals only when they reach no further.
TEST(WiderThanGrant, OtherLiteralsThatWidenTheEffectAreNotCovered) {
  ApprovalRequest granted;
  granted.rule = "policy.approve_kinds";
  granted.effect.reasons = {"approve_kinds: DELETE statements need a human approval"};
  granted.effect.estimated_rows = 20;
  ApprovalEffect same;
  same.reasons = {"approve_kinds: DELETE statements need a human approval"};
  same.estimated_rows = 3;
  EXPECT_EQ(wider_than_grant(granted, "policy.approve_kinds", same), "");
  // `WHERE k = 1 OR 1 = 1` has the shape of the approved `WHERE k = 1 OR 1 = 2`.
  ApprovalEffect all_rows = same;
  all_rows.reasons.push_back(
      "where_constant_true: DELETE on public.t has a WHERE clause that "
      "is always true: it changes every row");
  EXPECT_NE(wider_than_grant(granted, "policy.approve_kinds", all_rows).find("where_constant_true"),
            std::string::npos);
  ApprovalEffect more = same;
  more.estimated_rows = 21;
  EXPECT_NE(wider_than_grant(granted, "policy.approve_kinds", more).find("21 rows"),
            std::string::npos);
  ApprovalEffect unknown = same;
  unknown.estimated_rows = -1;
  EXPECT_NE(wider_than_grant(granted, "policy.approve_kinds", unknown), "");
  EXPECT_NE(wider_than_grant(granted, "policy.where_absent", same), "");
  // Without an estimate in the approved request, estimates are not compared.
  granted.effect.estimated_rows = -1;
  EXPECT_EQ(wider_than_grant(granted, "policy.approve_kinds", more), "");
}

}  // namespace
}  // namespace pgwarden::approvals
