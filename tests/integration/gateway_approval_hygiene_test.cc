// Approval hygiene, live (docs/approvals.md, "Who may decide" and "What the agent sees"): a
// real libpq client (PQsetNoticeReceiver) and a real psql through pgwarden-dp hold a statement
// that matches an approve rule; the real pgwardenctl decides on cp's admin socket. Checked:
// the NOTICE naming the request at once and the periodic reminders while it waits, two of two
// distinct approvals, no self-approval through a linked identity, one deny denies, break-glass
// (needs its group and a reason, bypasses two-of-two, pages the audit log), and the audit
// records of every step.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;

class GatewayApprovalHygieneTest : public SharedGatewayTest<GatewayApprovalHygieneTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    // The harness's default policy with two-of-two approvals and a break-glass group.
    o.policy_json = R"({"name": "agents", "allowed_kinds": ["select", "update", "delete"],
        "allowed_relations": ["public.*"], "read_only": false, "rule_sets": ["deny", "approve"],
        "approvals": {"approver_groups": ["reviewers"], "timeout_s": 120,
                      "required_approvals": 2, "break_glass_groups": ["incident"]}})";
    o.admin_principals = {{"rev1", {"reviewers"}},
                          {"rev2", {"reviewers"}},
                          {"alice", {"reviewers"}},
                          {"ic", {"incident"}}};
    // alice runs the agent svc:agent1: she may not decide its requests.
    o.config_merge_patch = R"({"approvals": {"reminder_interval_s": 1,
        "identity_links": [{"person": "alice", "identities": ["svc:agent1"]}]}})";
    return o;
  }

 protected:
  static void make_table(const std::string& name) {
    auto r = gw_->pg().psql(
        "create table public." + name + " (k int primary key, v text); insert into public." + name +
        " values (1, 'orig'), (2, 'orig'); alter table public." + name + " owner to app_scram");
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  }
  static std::string db(const std::string& sql) {
    auto r = gw_->pg().psql(sql);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    std::string s = r.is_ok() ? *r : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }
  static json show(const std::string& id) {
    CtlResult r = gw_->ctl("rev1", {"approvals", "show", id, "--json"});
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    return json::parse(r.out, nullptr, false);
  }
  static std::vector<json> audit_for(const std::string& id) {
    std::vector<json> out;
    std::istringstream lines(gw_->audit_log());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      if (j.value("approval_id", "") == id ||
          (j.contains("args") && j["args"].is_object() && j["args"].value("id", "") == id)) {
        out.push_back(std::move(j));
      }
    }
    return out;
  }
  static const json* find(const std::vector<json>& records, const std::string& event,
                          const std::string& key = "", const std::string& value = "") {
    for (const json& j : records) {
      if (j.value("event", "") != event) continue;
      if (key.empty() || (j.contains(key) && j[key] == value)) return &j;
    }
    return nullptr;
  }
};

// Collects the NoticeResponses libpq receives (on the thread that consumes input).
struct Notices {
  std::mutex mu;
  std::vector<std::string> messages;
  static void receive(void* arg, const PGresult* r) {
    auto* self = static_cast<Notices*>(arg);
    std::lock_guard lock(self->mu);
    self->messages.push_back(PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
  }
  // The first message starting with `prefix` ("" when none yet).
  std::string first(const std::string& prefix) {
    std::lock_guard lock(mu);
    for (const auto& m : messages) {
      if (m.rfind(prefix, 0) == 0) return m;
    }
    return "";
  }
};

// Reads what arrived and lets libpq parse it (PQisBusy runs the notice receiver).
void pump(PGconn* c) {
  PQconsumeInput(c);
  (void)PQisBusy(c);
}

// Starts `sql` on `c` and waits for the "waiting for approval <id>" notice; returns the id.
std::string hold(PGconn* c, Notices& notices, const std::string& sql) {
  PQsetNoticeReceiver(c, &Notices::receive, &notices);
  EXPECT_EQ(PQsendQuery(c, sql.c_str()), 1) << PQerrorMessage(c);
  std::string notice;
  EXPECT_TRUE(eventually([&] {
    pump(c);
    notice = notices.first("waiting for approval ");
    return !notice.empty();
  })) << "no approval notice";
  std::string id = notice.substr(std::string("waiting for approval ").size());
  return id.substr(0, id.find(':'));
}

TEST_F(GatewayApprovalHygieneTest, HeldClientIsToldAtOnceAndRemindedAndNeedsTwoApprovers) {
  ASSERT_NO_FATAL_FAILURE(make_table("h_two"));
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Notices notices;
  const std::string id = hold(c.get(), notices, "update public.h_two set v = 'two'");
  ASSERT_EQ(id.size(), 16u) << id;
  json req = show(id);
  EXPECT_EQ(req["state"], "pending");
  EXPECT_EQ(req["required_approvals"], 2);
  EXPECT_EQ(req["requester_links"], json::array({"alice"}));
  // The reminder names the same request while it waits.
  ASSERT_TRUE(eventually([&] {
    pump(c.get());
    return !notices.first("still waiting for approval " + id).empty();
  })) << "no reminder";
  EXPECT_NE(notices.first("still waiting for approval " + id).find("expires in"),
            std::string::npos);

  // First approval: still held, the client keeps waiting; the same reviewer cannot count twice.
  CtlResult a1 = gw_->ctl("rev1", {"approvals", "approve", id, "--reason", "first look"});
  ASSERT_EQ(a1.code, 0) << a1.out << a1.err;
  EXPECT_NE(a1.out.find("pending"), std::string::npos) << a1.out;
  EXPECT_NE(a1.out.find("1 of 2"), std::string::npos) << a1.out;
  CtlResult again = gw_->ctl("rev1", {"approvals", "approve", id});
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.err.find("already approved by rev1"), std::string::npos) << again.err;
  PQconsumeInput(c.get());
  EXPECT_EQ(PQisBusy(c.get()), 1);
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.h_two"), "orig,orig");
  CtlResult list = gw_->ctl("rev1", {"approvals", "list"});
  EXPECT_NE(list.out.find("APPROVALS"), std::string::npos);
  EXPECT_NE(list.out.find("1 of 2"), std::string::npos) << list.out;

  CtlResult a2 = gw_->ctl("rev2", {"approvals", "approve", id, "--reason", "second look"});
  ASSERT_EQ(a2.code, 0) << a2.out << a2.err;
  Res r = next_result(c.get(), 20000);
  ASSERT_NE(r.get(), nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  drain(c.get());
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.h_two"), "two,two");

  auto audit = audit_for(id);
  const json* vote = find(audit, "approval_vote");
  ASSERT_NE(vote, nullptr) << gw_->audit_log();
  EXPECT_EQ((*vote)["decider"], "rev1");
  EXPECT_EQ((*vote)["reason"], "first look");
  const json* approved = find(audit, "approval_approved");
  ASSERT_NE(approved, nullptr);
  EXPECT_EQ((*approved)["decider"], "rev2");
  EXPECT_EQ((*approved)["votes"].size(), 2u);
}

TEST_F(GatewayApprovalHygieneTest, LinkedIdentityCannotApproveAndOneDenyDenies) {
  ASSERT_NO_FATAL_FAILURE(make_table("h_linked"));
  const std::string sql = "update public.h_linked set v = 'linked'";
  // A real psql prints the notice while the statement is held.
  PsqlProcess psql(gw_->conninfo(), sql, gw_->dir() + "/h_linked.log");
  std::string id;
  ASSERT_TRUE(eventually([&] {
    std::string out = psql.output();
    size_t at = out.find("NOTICE:  00000: waiting for approval ");
    if (at == std::string::npos) at = out.find("NOTICE:  waiting for approval ");
    if (at == std::string::npos) return false;
    size_t start = out.find("approval ", at) + 9;
    id = out.substr(start, 16);
    return id.size() == 16;
  })) << psql.output();
  CtlResult self = gw_->ctl("alice", {"approvals", "approve", id});
  EXPECT_EQ(self.code, 3) << self.out << self.err;
  EXPECT_NE(self.err.find("linked to the requester"), std::string::npos) << self.err;
  EXPECT_EQ(show(id)["votes"].size(), 0u);
  // One approval, then one deny: denied, with the reviewer's reason at the client.
  ASSERT_EQ(gw_->ctl("rev1", {"approvals", "approve", id}).code, 0);
  CtlResult deny = gw_->ctl("rev2", {"approvals", "deny", id, "--reason", "wrong table"});
  ASSERT_EQ(deny.code, 0) << deny.out << deny.err;
  EXPECT_NE(psql.wait(20000), 0);
  EXPECT_NE(psql.output().find("42501"), std::string::npos) << psql.output();
  EXPECT_NE(psql.output().find("wrong table"), std::string::npos) << psql.output();
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.h_linked"), "orig,orig");
  auto audit = audit_for(id);
  const json* refused = find(audit, "admin", "identity", "alice");
  ASSERT_NE(refused, nullptr) << gw_->audit_log();
  EXPECT_EQ((*refused)["decision"], "permission_denied");
  EXPECT_NE(find(audit, "approval_denied"), nullptr);
}

TEST_F(GatewayApprovalHygieneTest, BreakGlassNeedsItsGroupAndAReasonAndPagesTheAuditLog) {
  ASSERT_NO_FATAL_FAILURE(make_table("h_glass"));
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Notices notices;
  const std::string id = hold(c.get(), notices, "update public.h_glass set v = 'glass'");
  CtlResult no_reason = gw_->ctl("ic", {"approvals", "break-glass", id});
  EXPECT_NE(no_reason.code, 0);
  EXPECT_NE(no_reason.err.find("--reason"), std::string::npos) << no_reason.err;
  CtlResult not_member = gw_->ctl("rev1", {"approvals", "break-glass", id, "--reason", "x"});
  EXPECT_EQ(not_member.code, 3) << not_member.out << not_member.err;
  PQconsumeInput(c.get());
  EXPECT_EQ(PQisBusy(c.get()), 1);

  CtlResult bg = gw_->ctl("ic", {"approvals", "break-glass", id, "--reason", "INC-7 prod down"});
  ASSERT_EQ(bg.code, 0) << bg.out << bg.err;
  Res r = next_result(c.get(), 20000);
  ASSERT_NE(r.get(), nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  drain(c.get());
  EXPECT_EQ(db("select string_agg(v, ',' order by k) from public.h_glass"), "glass,glass");
  auto audit = audit_for(id);
  const json* page = find(audit, "approval_break_glass");
  ASSERT_NE(page, nullptr) << gw_->audit_log();
  EXPECT_EQ((*page)["severity"], "critical");
  EXPECT_EQ((*page)["page"], true);
  EXPECT_EQ((*page)["decider"], "ic");
  EXPECT_EQ((*page)["reason"], "INC-7 prod down");
  EXPECT_EQ((*page)["identity"], "svc:agent1");
  EXPECT_NE(find(audit, "approval_approved"), nullptr);
}

}  // namespace
}  // namespace pgwarden::testing
