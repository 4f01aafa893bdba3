// Just-in-time approvals, live: a real psql (and libpq for the extended protocol) through
// pgwarden-dp sends a statement that matches an approve rule (rules/sets/approve.rules); dp
// holds it, pgwarden-cp creates the request, and the real pgwardenctl decides it on cp's
// admin socket. Checked: what the client sees, what reaches the sandbox database, who may
// decide, shape grants, abandonment (client gone, cp restart) and the audit log.
// One gateway for the suite; every test uses its own table so that the order does not matter
// (the cp-restart test runs last: it kills cp).
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string id_of(const json& request) { return request.value("id", ""); }

class GatewayApprovalsTest : public SharedGatewayTest<GatewayApprovalsTest> {
 public:
  // The harness's default policy (rule sets deny + approve, writes allowed on public.*), a
  // second identity, reviewers, and three admin principals: an approver, a non-approver and
  // the requester's own identity holding an approver's credential.
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.extra_service_keys = {"agent2"};
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;  // the timeout path is gateway_failclosed's
    o.admin_principals = {
        {"reviewer", {"reviewers"}}, {"outsider", {"ops"}}, {"svc:agent1", {"reviewers"}}};
    return o;
  }

 protected:
  // A table of `rows` rows (k = 1..rows, v = 'orig') owned by the gateway's database role.
  static void make_table(const std::string& name, int rows) {
    std::string sql = "create table public." + name + " (k int primary key, v text); " +
                      "insert into public." + name + " select g, 'orig' from generate_series(1, " +
                      std::to_string(rows) + ") g; alter table public." + name +
                      " owner to app_scram";
    auto r = gw_->pg().psql(sql);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  }
  // Query result straight from the sandbox (not through the gateway), trimmed.
  static std::string db(const std::string& sql) {
    auto r = gw_->pg().psql(sql);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    std::string s = r.is_ok() ? *r : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  static CtlResult ctl(const std::string& who, const std::vector<std::string>& args) {
    return gw_->ctl(who, args);
  }
  static json ctl_json(std::vector<std::string> args, const std::string& who = "reviewer") {
    args.push_back("--json");
    CtlResult r = ctl(who, args);
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    return json::parse(r.out, nullptr, false);
  }
  // The request whose statement is `sql` in state `state`, polled for up to 10 s ({} if none).
  static json wait_request(const std::string& sql, const std::string& state = "pending") {
    auto end = Clock::now() + std::chrono::seconds(10);
    do {
      json list = ctl_json({"approvals", "list", "--state", state});
      if (list.is_object() && list["approvals"].is_array()) {
        for (const json& a : list["approvals"]) {
          if (a.value("sql", "") == sql) return a;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < end);
    return json::object();
  }
  // Request `id` once it has left `pending` (polled for up to 10 s).
  static json wait_decided(const std::string& id) {
    auto end = Clock::now() + std::chrono::seconds(10);
    json a;
    do {
      a = ctl_json({"approvals", "show", id});
      if (a.value("state", "pending") != "pending") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < end);
    return a;
  }
  // The audit records of approval `id` (approval_* transitions, grant uses, admin commands).
  static std::vector<json> audit_for(const std::string& id) {
    std::vector<json> out;
    std::istringstream lines(gw_->audit_log());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      bool mine = j.value("approval_id", "") == id ||
                  (j.contains("args") && j["args"].is_object() && j["args"].value("id", "") == id);
      if (mine) out.push_back(std::move(j));
    }
    return out;
  }
  // The first record of `event` (for event "admin": of admin command `command`).
  static const json* find_event(const std::vector<json>& records, const std::string& event,
                                const std::string& command = "") {
    for (const json& j : records) {
      if (j.value("event", "") == event && j.value("command", "") == command) return &j;
    }
    return nullptr;
  }
  static const json* find_event(std::vector<json>&&, const std::string&,
                                const std::string& = "") = delete;  // would dangle
  std::string psql_log(const std::string& name) const { return gw_->dir() + "/" + name + ".log"; }

  static Conn connect_as(const std::string& key_id) {
    Conn c(PQconnectdb(gw_->conninfo_as(key_id).c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
};

TEST_F(GatewayApprovalsTest, ApproveRunsTheHeldPsqlStatementAndTheChangeReachesTheDatabase) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_once", 2));
  const std::string sql = "update public.t_once set v = 'approved'";
  auto t0 = Clock::now();
  PsqlProcess psql(gw_->conninfo(), sql, psql_log("once"));
  json req = wait_request(sql);
  ASSERT_TRUE(req.contains("id")) << "no pending request:\n" << psql.output();
  const std::string id = req["id"];
  // Everything the reviewer needs is in the request.
  EXPECT_EQ(req["identity"], "svc:agent1");
  EXPECT_EQ(req["groups"], json::array({"agents"}));
  EXPECT_EQ(req["target"], "demo");
  EXPECT_EQ(req["rule"], "approve.update_without_where");
  EXPECT_EQ(req["request_reason"], "UPDATE without a WHERE clause needs a reviewer's approval");
  EXPECT_FALSE(req.value("session_id", "").empty());
  EXPECT_EQ(req.value("shape_key", "").size(), 16u) << req.dump();
  EXPECT_GT(req.value("created_ms", int64_t{0}), 0);
  EXPECT_GT(req.value("deadline_ms", int64_t{0}), req.value("created_ms", int64_t{0}));
  EXPECT_EQ(req["approver_groups"], json::array({"reviewers"}));

  // The client simply waits: still running after half a second, nothing changed.
  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(500));
  EXPECT_TRUE(psql.running()) << psql.output();
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.t_once"), "orig,orig");

  CtlResult list = ctl("reviewer", {"approvals", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  for (const std::string& s :
       {id, req["session_id"].get<std::string>(), std::string("svc:agent1"), std::string("agents"),
        std::string("demo"), std::string("approve.update_without_where"),
        req["shape_key"].get<std::string>(), sql}) {
    EXPECT_NE(list.out.find(s), std::string::npos) << s << " not in:\n" << list.out;
  }
  CtlResult show = ctl("reviewer", {"approvals", "show", id});
  ASSERT_EQ(show.code, 0) << show.err;
  for (const std::string& s :
       {req["session_id"].get<std::string>(), req["shape_key"].get<std::string>(),
        std::string("agents"), std::string("pending"), sql}) {
    EXPECT_NE(show.out.find(s), std::string::npos) << s << " not in:\n" << show.out;
  }

  CtlResult approve = ctl("reviewer", {"approvals", "approve", id, "--reason", "ticket OPS-1"});
  ASSERT_EQ(approve.code, 0) << approve.out << approve.err;
  EXPECT_NE(approve.out.find(id + ": approved"), std::string::npos) << approve.out;
  ASSERT_EQ(psql.wait(10000), 0) << psql.output();
  EXPECT_NE(psql.output().find("UPDATE 2"), std::string::npos) << psql.output();
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.t_once"), "approved,approved");

  json decided = ctl_json({"approvals", "show", id});
  EXPECT_EQ(decided["state"], "approved");
  EXPECT_EQ(decided["decider"], "reviewer");
  EXPECT_EQ(decided["scope"], "once");
  // Audit: requested and approved, with the reviewer as decider, and the admin command.
  auto audit = audit_for(id);
  const json* requested = find_event(audit, "approval_requested");
  const json* approved = find_event(audit, "approval_approved");
  const json* admin = find_event(audit, "admin", "approvals.approve");
  ASSERT_NE(requested, nullptr) << gw_->audit_log();
  ASSERT_NE(approved, nullptr) << gw_->audit_log();
  ASSERT_NE(admin, nullptr) << gw_->audit_log();
  EXPECT_EQ(requested->value("identity", json()), "svc:agent1");
  EXPECT_EQ(requested->value("sql", json()), sql);
  EXPECT_EQ(approved->value("decider", json()), "reviewer");
  EXPECT_EQ(approved->value("reason", json()), "ticket OPS-1");
  EXPECT_EQ(admin->value("identity", json()), "reviewer");
  EXPECT_EQ(admin->value("command", json()), "approvals.approve");
  EXPECT_EQ(admin->value("decision", json()), "ok");
  // Deciding again is refused: the first decision won.
  EXPECT_EQ(ctl("reviewer", {"approvals", "deny", id, "--reason", "late"}).code, 1);
}

TEST_F(GatewayApprovalsTest, DenyGivesThePsqlClient42501WithTheReviewersReason) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_deny", 3));
  const std::string sql = "delete from public.t_deny";
  PsqlProcess psql(gw_->conninfo(), sql, psql_log("deny"));
  json req = wait_request(sql);
  ASSERT_TRUE(req.contains("id")) << psql.output();
  const std::string id = req["id"];
  EXPECT_EQ(req["rule"], "approve.delete_without_where");
  CtlResult deny =
      ctl("reviewer", {"approvals", "deny", id, "--reason", "change freeze until Monday"});
  ASSERT_EQ(deny.code, 0) << deny.out << deny.err;
  EXPECT_NE(deny.out.find(id + ": denied"), std::string::npos) << deny.out;
  EXPECT_EQ(psql.wait(10000), 1) << psql.output();
  EXPECT_NE(psql.output().find("ERROR:  42501:"), std::string::npos) << psql.output();
  EXPECT_NE(psql.output().find("change freeze until Monday"), std::string::npos) << psql.output();
  EXPECT_EQ(db("select count(*) from public.t_deny"), "3");
  auto denied_audit = audit_for(id);
  const json* denied = find_event(denied_audit, "approval_denied");
  ASSERT_NE(denied, nullptr) << gw_->audit_log();
  EXPECT_EQ(denied->value("decider", json()), "reviewer");
  EXPECT_EQ(denied->value("reason", json()), "change freeze until Monday");
}

TEST_F(GatewayApprovalsTest, ShapeApprovalRunsTheSameShapeForThatIdentityOnly) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_shape", 2));
  Conn agent1 = connect_as("agent1");
  Conn agent2 = connect_as("agent2");
  ASSERT_EQ(PQstatus(agent1.get()), CONNECTION_OK);
  ASSERT_EQ(PQstatus(agent2.get()), CONNECTION_OK);
  const std::string first = "update public.t_shape set v = 'shape-1'";
  ASSERT_EQ(PQsendQuery(agent1.get(), first.c_str()), 1);
  json req = wait_request(first);
  ASSERT_TRUE(req.contains("id"));
  const std::string id = req["id"];
  CtlResult approve =
      ctl("reviewer", {"approvals", "approve", id, "--scope", "shape", "--for", "10m"});
  ASSERT_EQ(approve.code, 0) << approve.out << approve.err;
  Res r = next_result(agent1.get(), 10000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  drain(agent1.get());
  json granted = ctl_json({"approvals", "show", id});
  EXPECT_EQ(granted["scope"], "shape");
  EXPECT_GT(granted.value("grant_expires_ms", int64_t{0}), granted.value("decided_ms", int64_t{0}));

  // Same shape, other literal, same identity: runs at once, no new request.
  auto t0 = Clock::now();
  r.reset(PQexec(agent1.get(), "update public.t_shape set v = 'shape-2'"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.t_shape"), "shape-2,shape-2");
  const json* use = nullptr;
  auto audit = audit_for(id);
  for (const json& j : audit) {
    if (j.value("event", "") == "approval" && j.value("decision", "") == "allow") use = &j;
  }
  ASSERT_NE(use, nullptr) << "standing grant use not audited:\n" << gw_->audit_log();
  EXPECT_EQ(use->value("sql", json()), "update public.t_shape set v = 'shape-2'");

  // Another identity with the same shape, and the same identity with another shape: held.
  const std::string other_identity = "update public.t_shape set v = 'shape-3'";
  const std::string other_shape = "update public.t_shape set v = 'shape-4', k = k";
  ASSERT_EQ(PQsendQuery(agent2.get(), other_identity.c_str()), 1);
  ASSERT_EQ(PQsendQuery(agent1.get(), other_shape.c_str()), 1);
  json held2 = wait_request(other_identity);
  json held1 = wait_request(other_shape);
  ASSERT_TRUE(held2.contains("id"));
  ASSERT_TRUE(held1.contains("id"));
  EXPECT_EQ(held2["identity"], "svc:agent2");
  EXPECT_EQ(held2["shape_key"], req["shape_key"]);
  EXPECT_NE(held1["shape_key"], req["shape_key"]);
  for (const json* h : {&held1, &held2}) {
    ASSERT_EQ(ctl("reviewer", {"approvals", "deny", id_of(*h), "--reason", "not covered"}).code, 0);
  }
  for (PGconn* c : {agent1.get(), agent2.get()}) {
    Res denied = next_result(c, 10000);
    ASSERT_NE(denied, nullptr);
    EXPECT_EQ(sqlstate(denied.get()), "42501") << PQresultErrorMessage(denied.get());
    drain(c);
  }
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.t_shape"), "shape-2,shape-2");
}

TEST_F(GatewayApprovalsTest, NonApproversAndTheRequesterCannotDecide) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_who", 1));
  const std::string sql = "update public.t_who set v = 'who'";
  PsqlProcess psql(gw_->conninfo(), sql, psql_log("who"));
  json req = wait_request(sql);
  ASSERT_TRUE(req.contains("id")) << psql.output();
  const std::string id = req["id"];
  // Not in an approver group; the requester's own identity (even holding an approver's
  // credential): exit 3, and the request stays pending.
  CtlResult outsider = ctl("outsider", {"approvals", "approve", id});
  EXPECT_EQ(outsider.code, 3) << outsider.out << outsider.err;
  CtlResult self = ctl("svc:agent1", {"approvals", "approve", id});
  EXPECT_EQ(self.code, 3) << self.out << self.err;
  CtlResult self_deny = ctl("svc:agent1", {"approvals", "deny", id, "--reason", "mine"});
  EXPECT_EQ(self_deny.code, 3) << self_deny.out << self_deny.err;
  EXPECT_EQ(ctl_json({"approvals", "show", id})["state"], "pending");
  EXPECT_TRUE(psql.running()) << psql.output();
  EXPECT_EQ(db("select v from public.t_who"), "orig");
  // The refusals are audited with the principal that tried.
  int refused = 0;
  for (const json& j : audit_for(id)) {
    if (j.value("event", "") == "admin" && j.value("decision", "") != "ok") {
      std::string who = j.value("identity", "");
      EXPECT_TRUE(who == "outsider" || who == "svc:agent1") << j.dump();
      ++refused;
    }
  }
  EXPECT_EQ(refused, 3) << gw_->audit_log();
  ASSERT_EQ(ctl("reviewer", {"approvals", "deny", id, "--reason", "cleanup"}).code, 0);
  EXPECT_EQ(psql.wait(10000), 1) << psql.output();
  EXPECT_EQ(ctl("reviewer", {"approvals", "show", "NoSuchRequest01"}).code, 4);
}

TEST_F(GatewayApprovalsTest, ExtendedProtocolStatementsAreHeldAndRunAfterApproval) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_ext", 2));
  Conn c = connect_as("agent1");
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK);
  // PQexecParams: Parse/Bind/Describe/Execute/Sync, held at the Parse.
  const std::string params_sql = "update public.t_ext set v = $1";
  const char* values[] = {"ext-1"};
  ASSERT_EQ(PQsendQueryParams(c.get(), params_sql.c_str(), 1, nullptr, values, nullptr, nullptr, 0),
            1);
  json req = wait_request(params_sql);
  ASSERT_TRUE(req.contains("id"));
  EXPECT_EQ(req["rule"], "approve.update_without_where");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(PQconsumeInput(c.get()), 1);
  EXPECT_EQ(PQisBusy(c.get()), 1) << "the held statement answered before a decision";
  ASSERT_EQ(ctl("reviewer", {"approvals", "approve", id_of(req)}).code, 0);
  Res r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQcmdTuples(r.get()), "2");
  drain(c.get());
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.t_ext"), "ext-1,ext-1");

  // PQprepare + PQexecPrepared: the Parse of the named statement is held; once approved,
  // executions of that prepared statement inherit the verdict.
  const std::string prepared_sql = "delete from public.t_ext";
  ASSERT_EQ(PQsendPrepare(c.get(), "wipe", prepared_sql.c_str(), 0, nullptr), 1);
  json prep = wait_request(prepared_sql);
  ASSERT_TRUE(prep.contains("id"));
  EXPECT_EQ(prep["rule"], "approve.delete_without_where");
  EXPECT_EQ(db("select count(*) from public.t_ext"), "2");
  ASSERT_EQ(ctl("reviewer", {"approvals", "approve", id_of(prep)}).code, 0);
  r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  drain(c.get());
  r.reset(PQexecPrepared(c.get(), "wipe", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_EQ(db("select count(*) from public.t_ext"), "0");
}

TEST_F(GatewayApprovalsTest, ApproveRuleMatchOfAStatementThePolicyDeniesIsDeniedNotHeld) {
  // TRUNCATE matches approve.truncate, but the policy does not allow the kind at all: a
  // reviewer must not be able to approve it into running.
  ASSERT_NO_FATAL_FAILURE(make_table("t_policy", 2));
  const std::string sql = "truncate public.t_policy";
  PsqlProcess psql(gw_->conninfo(), sql, psql_log("policy"));
  int code = psql.wait(5000);
  EXPECT_EQ(code, 1) << "still waiting (held for a reviewer?):\n" << psql.output();
  EXPECT_NE(psql.output().find("ERROR:  42501:"), std::string::npos) << psql.output();
  json list = ctl_json({"approvals", "list", "--state", "all"});
  for (const json& a : list["approvals"]) EXPECT_NE(a.value("sql", ""), sql) << a.dump();
  EXPECT_EQ(db("select count(*) from public.t_policy"), "2");
}

TEST_F(GatewayApprovalsTest, ClientDisconnectWhileHeldAbandonsTheRequest) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_gone", 1));
  const std::string sql = "update public.t_gone set v = 'gone'";
  PsqlProcess psql(gw_->conninfo(), sql, psql_log("gone"));
  json req = wait_request(sql);
  ASSERT_TRUE(req.contains("id")) << psql.output();
  const std::string id = req["id"];
  psql.kill_now();  // the client goes away while its statement waits
  json a = wait_decided(id);
  EXPECT_EQ(a["state"], "abandoned") << a.dump();
  EXPECT_EQ(a["decider"], "pgwarden");
  EXPECT_EQ(ctl("reviewer", {"approvals", "approve", id}).code, 1) << "decided after abandon";
  EXPECT_EQ(db("select v from public.t_gone"), "orig");
  auto abandoned_audit = audit_for(id);
  const json* abandoned = find_event(abandoned_audit, "approval_abandoned");
  ASSERT_NE(abandoned, nullptr) << gw_->audit_log();
  EXPECT_EQ(abandoned->value("decider", json()), "pgwarden");
}

// Last: kills and restarts cp.
TEST_F(GatewayApprovalsTest, CpRestartKeepsTheHistoryAndAbandonsRequestsOfGoneSessions) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_restart", 1));
  Conn c = connect_as("agent1");
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK);
  const std::string decided_sql = "update public.t_restart set v = 'before'";
  ASSERT_EQ(PQsendQuery(c.get(), decided_sql.c_str()), 1);
  json decided = wait_request(decided_sql);
  ASSERT_TRUE(decided.contains("id"));
  ASSERT_EQ(ctl("reviewer", {"approvals", "approve", id_of(decided)}).code, 0);
  Res r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK);
  drain(c.get());

  const std::string pending_sql = "update public.t_restart set v = 'during'";
  ASSERT_EQ(PQsendQuery(c.get(), pending_sql.c_str()), 1);
  json pending = wait_request(pending_sql);
  ASSERT_TRUE(pending.contains("id"));
  ASSERT_TRUE(gw_->stop_cp().is_ok());  // SIGKILL: nothing is cleaned up by cp
  // Nobody can decide any more: the held statement fails closed.
  r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(db("select v from public.t_restart"), "before");
  ASSERT_TRUE(gw_->start_cp().is_ok());

  json after = ctl_json({"approvals", "show", id_of(pending)});
  EXPECT_EQ(after["state"], "abandoned") << after.dump();
  EXPECT_EQ(after["decider"], "pgwarden");
  EXPECT_EQ(after["sql"], pending_sql);
  json kept = ctl_json({"approvals", "show", id_of(decided)});
  EXPECT_EQ(kept["state"], "approved");
  EXPECT_EQ(kept["decider"], "reviewer");
  EXPECT_EQ(ctl("reviewer", {"approvals", "approve", id_of(pending)}).code, 1);
  auto abandoned_audit = audit_for(id_of(pending));
  const json* abandoned = find_event(abandoned_audit, "approval_abandoned");
  ASSERT_NE(abandoned, nullptr) << gw_->audit_log();
  EXPECT_EQ(db("select v from public.t_restart"), "before");
}

}  // namespace
}  // namespace pgwarden::testing
