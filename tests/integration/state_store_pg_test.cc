// PgStateStore against a real PostgreSQL (the sandbox): schema creation and versioning, the
// compare-and-set of approval decisions between two nodes, LISTEN/NOTIFY between them, the
// session registry and recordings index, and what a store outage looks like to callers
// (unavailable, no secret in the message, back after the server restarts).
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "controlplane/state/pg_state_store.h"
#include "tests/integration/gateway_harness.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden::state {
namespace {

using nlohmann::json;
using testing::eventually;
using testing::PgSandbox;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json pending(const std::string& id) {
  return json{{"id", id},
              {"state", "pending"},
              {"session_id", "s-" + id},
              {"identity", "svc:a"},
              {"created_ms", now_ms()},
              {"decider", ""},
              {"decided_ms", 0},
              {"scope", "once"},
              {"shape_key", "00ff"}};
}

json decided(json j, const std::string& state, const std::string& decider) {
  j["state"] = state;
  j["decider"] = decider;
  j["decided_ms"] = now_ms();
  return j;
}

// Changes a node receives, in order.
struct Feed {
  std::mutex mu;
  std::vector<StateChange> changes;
  ChangeHandler handler() {
    return [this](const StateChange& c) {
      std::lock_guard lock(mu);
      changes.push_back(c);
    };
  }
  bool has(StateChange::Kind kind, const std::string& key = "") {
    std::lock_guard lock(mu);
    for (const auto& c : changes) {
      if (c.kind == kind && (key.empty() || c.key == key)) return true;
    }
    return false;
  }
};

class StateStorePgTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pg_ = new PgSandbox();
    Status st = pg_->start();
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  static Result<std::unique_ptr<PgStateStore>> open(const std::string& node) {
    return PgStateStore::open({.conninfo = pg_->conninfo(),
                               .node_id = node,
                               .admin_socket = "/run/" + node + ".sock",
                               .admin_url = "https://" + node + ".internal:8443",
                               .connect_timeout_ms = 2000});
  }
  static std::string db(const std::string& sql) {
    auto r = pg_->psql(sql);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    std::string s = r.is_ok() ? *r : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  static inline PgSandbox* pg_ = nullptr;
};

TEST_F(StateStorePgTest, SchemaIsCreatedOnceAndVersioned) {
  auto a = open("node-a");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  auto b = open("node-b");  // the second node finds the schema and migrates nothing
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  // One row per migration applied, each once.
  std::string versions;
  for (int v = 1; v <= kStateSchemaVersion; ++v) versions += (v > 1 ? "," : "") + std::to_string(v);
  EXPECT_EQ(db("select string_agg(version::text, ',' order by version) from "
               "pgwarden_schema_version"),
            versions);
  EXPECT_EQ(db("select count(*) from pgwarden_nodes where node_id in ('node-a', 'node-b')"), "2");
  for (const char* table :
       {"pgwarden_approvals", "pgwarden_standing_grants", "pgwarden_revocations",
        "pgwarden_killed_sessions", "pgwarden_sessions", "pgwarden_recordings",
        "pgwarden_rule_generations", "pgwarden_audit", "pgwarden_budget_usage"}) {
    EXPECT_EQ(db(std::string("select to_regclass('") + table + "') is not null"), "t") << table;
  }
}

TEST_F(StateStorePgTest, ANewerSchemaIsRefused) {
  ASSERT_TRUE(open("node-a").is_ok());
  db("insert into pgwarden_schema_version values (99, 0, 'future')");
  auto refused = open("node-c");
  db("delete from pgwarden_schema_version where version = 99");
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("version 99"), std::string::npos)
      << refused.status().message();
  EXPECT_TRUE(open("node-c").is_ok());
}

TEST_F(StateStorePgTest, OnlyOneOfTwoNodesDecidesARequestAndTheOtherHearsOfIt) {
  Feed feed_a, feed_b;  // declared first: the stores' listeners call it until they close
  auto a = open("node-a");
  auto b = open("node-b");
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_TRUE((*a)->start(feed_a.handler()).is_ok());
  ASSERT_TRUE((*b)->start(feed_b.handler()).is_ok());

  json req = pending("cas1");
  ASSERT_TRUE((*a)->put_approval(req, true).is_ok());
  EXPECT_EQ((*a)->put_approval(req, true).code(), StatusCode::kFailedPrecondition);
  // b hears of the request (a does not hear its own write).
  ASSERT_TRUE(eventually([&] { return feed_b.has(StateChange::Kind::kApproval, "cas1"); }));

  json approve = decided(req, "approved", "alice");
  json deny = decided(req, "denied", "bob");
  ASSERT_TRUE((*b)->put_approval(approve, false).is_ok());
  Status second = (*a)->put_approval(deny, false);
  EXPECT_EQ(second.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.message().find("already approved"), std::string::npos) << second.message();
  // The same write again (an answer lost in a store restart) is not a conflict.
  EXPECT_TRUE((*b)->put_approval(approve, false).is_ok());
  auto stored = (*a)->get_approval("cas1");
  ASSERT_TRUE(stored.is_ok() && stored->has_value());
  EXPECT_EQ((**stored)["state"], "approved");
  EXPECT_EQ((**stored)["decider"], "alice");
  ASSERT_TRUE(eventually([&] { return feed_a.has(StateChange::Kind::kApproval, "cas1"); }));

  // A shape-scoped approval is also a standing grant.
  json shape = pending("grant1");
  ASSERT_TRUE((*a)->put_approval(shape, true).is_ok());
  json granted = decided(shape, "approved", "alice");
  granted["scope"] = "shape";
  granted["grant_expires_ms"] = now_ms() + 60000;
  ASSERT_TRUE((*a)->put_approval(granted, false).is_ok());
  EXPECT_EQ(db("select identity || '/' || shape_key from pgwarden_standing_grants "
               "where approval_id = 'grant1'"),
            "svc:a/00ff");
  auto listed = (*b)->list_approvals(now_ms() - 60000);
  ASSERT_TRUE(listed.is_ok());
  EXPECT_GE(listed->size(), 2u);
}

TEST_F(StateStorePgTest, RevocationsKillsAndTheRegistryReachTheOtherNode) {
  Feed feed_b;  // declared first: the stores' listeners call it until they close
  auto a = open("node-a");
  auto b = open("node-b");
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_TRUE((*b)->start(feed_b.handler()).is_ok());
  ASSERT_TRUE((*a)->start(nullptr).is_ok());

  json rev{{"name", "svc:bad"}, {"kind", "identity"}, {"reason", "leaked"}, {"by", "ops"}};
  ASSERT_TRUE((*a)->put_revocation(rev).is_ok());
  ASSERT_TRUE(eventually([&] { return feed_b.has(StateChange::Kind::kRevocations); }));
  auto revs = (*b)->list_revocations();
  ASSERT_TRUE(revs.is_ok());
  ASSERT_EQ(revs->size(), 1u);
  EXPECT_EQ((*revs)[0]["reason"], "leaked");
  ASSERT_TRUE((*a)->remove_revocation("svc:bad", "any").is_ok());
  EXPECT_TRUE((*b)->list_revocations()->empty());

  ASSERT_TRUE(
      (*a)->publish_kill(json{{"session_id", "s-42"}}, "ended", "ops", "admin_kill").is_ok());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(feed_b.mu);
    for (const auto& c : feed_b.changes) {
      if (c.kind == StateChange::Kind::kKill && c.kill["selector"]["session_id"] == "s-42") {
        return true;
      }
    }
    return false;
  }));

  (*a)->session_started({"s-42", "", "svc:a", "demo", now_ms()});
  (*a)->recording_indexed({"s-42", "", "/var/lib/pgwarden/recordings/s-42.jsonl", "open"});
  (*a)->rules_loaded(3, "abc");
  ASSERT_TRUE((*a)->flush_background(10000));
  auto where = (*b)->find_session("s-42");
  ASSERT_TRUE(where.is_ok() && where->has_value());
  EXPECT_EQ((**where).node_id, "node-a");
  auto rec = (*b)->find_recording("s-42");
  ASSERT_TRUE(rec.is_ok() && rec->has_value());
  EXPECT_EQ((**rec).file, "/var/lib/pgwarden/recordings/s-42.jsonl");
  auto node = (*b)->find_node("node-a");
  ASSERT_TRUE(node.is_ok() && node->has_value());
  EXPECT_EQ((**node).admin_socket, "/run/node-a.sock");
  EXPECT_EQ((**node).admin_url, "https://node-a.internal:8443");
  EXPECT_EQ(db("select digest from pgwarden_rule_generations where node_id = 'node-a'"), "abc");
  // The latest generation per node (a later load of the same number replaces it).
  (*a)->rules_loaded(4, "def");
  (*a)->rules_loaded(4, "ghi");
  ASSERT_TRUE((*a)->flush_background(10000));
  auto gens = (*b)->list_rule_generations();
  ASSERT_TRUE(gens.is_ok());
  bool found = false;
  for (const RuleGenerationEntry& g : *gens) {
    if (g.node_id != "node-a") continue;
    found = true;
    EXPECT_EQ(g.generation, 4u);
    EXPECT_EQ(g.digest, "ghi");
  }
  EXPECT_TRUE(found);
  auto nodes = (*b)->list_nodes();
  ASSERT_TRUE(nodes.is_ok());
  EXPECT_GE(nodes->size(), 2u);
  (*a)->session_ended("s-42");
  ASSERT_TRUE((*a)->flush_background(10000));
  EXPECT_FALSE((*b)->find_session("s-42")->has_value());
}

TEST_F(StateStorePgTest, VotesOfTwoNodesAddUpAndAConcurrentVoteIsRefused) {
  Feed feed_b;  // declared first: the stores' listeners call it until they close
  auto a = open("node-a");
  auto b = open("node-b");
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_TRUE((*b)->start(feed_b.handler()).is_ok());
  json req = pending("votes1");
  req["required_approvals"] = 2;
  req["votes"] = json::array();
  ASSERT_TRUE((*a)->put_approval(req, true).is_ok());
  json vote_a = req;
  vote_a["votes"].push_back(json{{"decider", "alice"}, {"ms", now_ms()}});
  json vote_b = req;  // cast on node B before it heard of alice's vote
  vote_b["votes"].push_back(json{{"decider", "bob"}, {"ms", now_ms()}});
  ASSERT_TRUE((*a)->put_approval(vote_a, false).is_ok());
  ASSERT_TRUE(eventually([&] { return feed_b.has(StateChange::Kind::kApproval, "votes1"); }));
  Status lost = (*b)->put_approval(vote_b, false);
  EXPECT_EQ(lost.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(lost.message().find("another vote"), std::string::npos) << lost.message();
  // Node B re-read the request (alice's vote) and adds bob's: two of two.
  json approved = decided(vote_a, "approved", "bob");
  approved["votes"].push_back(json{{"decider", "bob"}, {"ms", now_ms()}});
  ASSERT_TRUE((*b)->put_approval(approved, false).is_ok());
  EXPECT_EQ(db("select state || ' ' || jsonb_array_length(snapshot->'votes') from "
               "pgwarden_approvals where id = 'votes1'"),
            "approved 2");
}

TEST_F(StateStorePgTest, BudgetUsageOfTwoNodesAddsUpPerWindow) {
  Feed feed_b;  // declared first: the stores' listeners call it until they close
  auto a = open("node-a");
  auto b = open("node-b");
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_TRUE((*b)->start(feed_b.handler()).is_ok());
  const int64_t w = 7200000;
  auto usage = [](const std::string& id, int64_t window, uint64_t statements) {
    return BudgetCounter{"hourly", id, window, {statements, 10 * statements, 0, 0}};
  };
  // A quote and a backslash in an identity survive the array encoding.
  const std::string odd = "svc:\"odd\\one\"";
  auto r1 = (*a)->add_budget_usage({usage("svc:x", w, 2), usage(odd, w, 1)});
  ASSERT_TRUE(r1.is_ok()) << r1.status().to_string();
  ASSERT_EQ(r1->size(), 2u);
  auto r2 = (*b)->add_budget_usage({usage("svc:x", w, 3)});
  ASSERT_TRUE(r2.is_ok());
  ASSERT_EQ(r2->size(), 1u);
  EXPECT_EQ((*r2)[0].used[0], 5u);  // both nodes' statements
  EXPECT_EQ((*r2)[0].used[1], 50u);
  // A late delta of a window that is over changes nothing; a later window starts over.
  auto late = (*a)->add_budget_usage({usage("svc:x", w - 3600000, 7)});
  ASSERT_TRUE(late.is_ok());
  EXPECT_EQ((*late)[0].used[0], 5u);
  EXPECT_EQ((*late)[0].window_start_ms, w);
  auto next = (*a)->add_budget_usage({usage("svc:x", w + 3600000, 1)});
  ASSERT_TRUE(next.is_ok());
  EXPECT_EQ((*next)[0].used[0], 1u);
  // Node B is told whose counters changed.
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(feed_b.mu);
    for (const auto& c : feed_b.changes) {
      if (c.kind == StateChange::Kind::kBudgets && c.identities.size() == 2 &&
          c.identities[1] == odd) {
        return true;
      }
    }
    return false;
  }));
  auto listed = (*b)->list_budget_counters(odd);
  ASSERT_TRUE(listed.is_ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].identity, odd);
  auto reset = (*b)->reset_budget_counters("svc:x", "");
  ASSERT_TRUE(reset.is_ok());
  EXPECT_EQ(*reset, 1u);
  EXPECT_TRUE((*a)->list_budget_counters("svc:x")->empty());
}

// Runs last in this file (it restarts the sandbox).
TEST_F(StateStorePgTest, ZOutageFailsClosedWithoutTheSecretAndRecovers) {
  Feed feed;  // declared first: the stores' listeners call it until they close
  auto a = open("node-a");
  ASSERT_TRUE(a.is_ok());
  ASSERT_TRUE((*a)->start(feed.handler()).is_ok());
  ASSERT_TRUE(pg_->stop_immediate().is_ok());
  Status st = (*a)->put_approval(pending("down1"), true);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.to_string();
  EXPECT_EQ(st.sqlstate(), "57P03");
  EXPECT_NE(st.message().find("state store unavailable"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find(pg_->get("PGW_SCRAM_PASSWORD")), std::string::npos)
      << "the store's password leaked into an error";
  EXPECT_FALSE((*a)->available());
  // Registry writes wait in the queue meanwhile.
  (*a)->session_started({"s-outage", "", "svc:a", "demo", now_ms()});

  ASSERT_TRUE(pg_->restart().is_ok());
  // The listener reconnects and tells its owner to re-read (changes may have been missed).
  ASSERT_TRUE(eventually([&] { return feed.has(StateChange::Kind::kResync); }));
  EXPECT_TRUE((*a)->put_approval(pending("down1"), true).is_ok());
  EXPECT_TRUE((*a)->available());
  ASSERT_TRUE((*a)->flush_background(20000));
  EXPECT_TRUE((*a)->find_session("s-outage")->has_value());
}

}  // namespace
}  // namespace pgwarden::state
