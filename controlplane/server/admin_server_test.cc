#include "controlplane/server/admin_server.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/protocol/client.h"
#include "common/protocol/messages.h"
#include "controlplane/identity/service_key.h"
#include "controlplane/recording/recorder.h"
#include "controlplane/vault/credential_hash.h"

namespace pgwarden::server {
namespace {

using json = nlohmann::json;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-admin-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::filesystem::create_directories(dir_ + "/state/recordings");
    std::filesystem::create_directories(dir_ + "/rules");
    std::ofstream(dir_ + "/rules/deny.rules") << "[deny.drop_table]\naction = deny\n"
                                                 "view = code\npattern = \\bdrop\\s+table\\b\n"
                                                 "message = no drops\nseverity = high\n";
    write_config(base_config());
    config::ValidationOptions vo;
    vo.check_environment = false;
    store_ = std::make_unique<config::ConfigStore>(dir_ + "/cp.json", vo);
    ASSERT_TRUE(store_->reload().ok()) << store_->reload().error_text();
    auto audit = audit::AuditLog::open({{config::AuditSink::Kind::kFile, dir_ + "/audit.log"}});
    ASSERT_TRUE(audit.is_ok());
    audit_ = std::move(*audit);
    approvals::ApprovalStoreOptions ao;
    ao.state_dir = dir_ + "/state";
    ao.start_timer_thread = false;
    auto approvals = approvals::ApprovalStore::open(ao);
    ASSERT_TRUE(approvals.is_ok()) << approvals.status().to_string();
    approvals_ = std::move(*approvals);
    AdminBackend b;
    b.config = store_.get();
    b.audit = audit_.get();
    b.approvals = approvals_.get();
    b.rules_dir = dir_ + "/rules";
    b.runtime_status = [] { return json{{"dp_connections", 2}, {"sessions", 5}}; };
    server_ = std::make_unique<AdminServer>(std::move(b));
  }
  void TearDown() override {
    server_.reset();
    approvals_.reset();
    std::filesystem::remove_all(dir_);
  }

  json base_config() {
    static const identity::ServiceKeyHash key =
        identity::make_service_key_hash("agent-secret").value();
    auto principal = [](const char* name, const char* secret, json groups) {
      return json{{"name", name},
                  {"credential_hash", vault::hash_credential(secret, 1000)},
                  {"groups", groups}};
    };
    return json{
        {"listeners",
         {{"dataplane", {{"address", "127.0.0.1"}, {"port", 6432}, {"loopback_only", true}}}}},
        {"identity",
         {{"service_keys",
           {{{"id", "agent"},
             {"salt", key.salt},
             {"hash", key.hash},
             {"identity", "svc:agent"},
             {"groups", {"agents"}}}}}}},
        {"control_plane",
         {{"socket", dir_ + "/cp.sock"},
          {"state_dir", dir_ + "/state"},
          {"admin_socket", dir_ + "/admin.sock"},
          {"admin_principals",
           {principal("alice", "alice-secret", {"reviewers"}),
            principal("bob", "bob-secret", {"ops"})}}}},
        {"targets",
         {{{"name", "demo"},
           {"host", "127.0.0.1"},
           {"database", "demo"},
           {"role", "app"},
           {"credential", {{"env", "PGW_TEST_UNUSED"}}},
           {"tls", {{"mode", "disable"}}}}}},
        {"policies",
         {{{"name", "agents"},
           {"groups", {"agents"}},
           {"targets", {"demo"}},
           {"allowed_kinds", {"select"}},
           {"rule_sets", {"deny"}},
           {"approvals", {{"approver_groups", {"reviewers"}}, {"timeout_s", 60}}}}}}};
  }
  void write_config(const json& j) { std::ofstream(dir_ + "/cp.json") << j.dump(2); }

  json call(const std::string& who, const std::string& secret, const std::string& command,
            json args = json::object()) {
    return server_->handle(json{{"id", 7},
                                {"type", "admin"},
                                {"command", command},
                                {"args", args},
                                {"principal", who},
                                {"credential", secret}},
                           "uid=0,pid=1");
  }
  json alice(const std::string& command, json args = json::object()) {
    return call("alice", "alice-secret", command, std::move(args));
  }

  std::string create_approval(const std::string& requester) {
    approvals::NewApprovalRequest r;
    r.session_id = "s1";
    r.identity = requester;
    r.groups = {"agents"};
    r.target = "demo";
    r.sql = "delete from crm.orders";
    r.shape_key = "00ff";
    r.rule = "approve_kinds";
    r.settings.approver_groups = {"reviewers"};
    r.settings.timeout_seconds = 60;
    auto created = approvals_->create(r);
    EXPECT_TRUE(created.is_ok()) << created.status().to_string();
    return created.is_ok() ? created->id : "";
  }

  std::string dir_;
  std::unique_ptr<config::ConfigStore> store_;
  std::unique_ptr<audit::AuditLog> audit_;
  std::unique_ptr<approvals::ApprovalStore> approvals_;
  std::unique_ptr<AdminServer> server_;
};

TEST_F(AdminServerTest, StatusReportsVersionPolicyAndRuntimeFigures) {
  json r = alice("status");
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["id"], 7);
  EXPECT_EQ(r["result"]["policy_version"], store_->current()->version);
  EXPECT_EQ(r["result"]["dp_connections"], 2);
  EXPECT_EQ(r["result"]["pending_approvals"], 0);
  EXPECT_EQ(r["result"]["principal"], "alice");
}

TEST_F(AdminServerTest, DataplaneAnswersTheRegistrySnapshotOrUnavailableWithoutOne) {
  json r = alice("dataplane");
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["code"], "unavailable");
  AdminBackend b;
  b.config = store_.get();
  b.audit = audit_.get();
  b.dataplanes = [] {
    return json{{"dataplanes", json::array({{{"name", "gw1"}, {"stale", false}}})}};
  };
  server_ = std::make_unique<AdminServer>(std::move(b));
  r = alice("dataplane");
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["dataplanes"][0]["name"], "gw1");
}

TEST_F(AdminServerTest, WrongCredentialAndUnknownPrincipalAreRejectedAndAudited) {
  json r = call("alice", "wrong", "status");
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["code"], "unauthenticated");
  EXPECT_EQ(call("mallory", "alice-secret", "status")["error"]["code"], "unauthenticated");
  EXPECT_EQ(call("alice", "", "status")["error"]["code"], "unauthenticated");
  audit_->flush();
  std::string log = slurp(dir_ + "/audit.log");
  EXPECT_NE(log.find("\"event\":\"admin_auth\""), std::string::npos) << log;
  EXPECT_NE(log.find("bad credential"), std::string::npos);
  EXPECT_NE(log.find("unknown principal"), std::string::npos);
  EXPECT_EQ(log.find("alice-secret"), std::string::npos) << "credential leaked into audit";
  EXPECT_EQ(log.find("\"wrong\""), std::string::npos);
}

TEST_F(AdminServerTest, EveryAcceptedCommandIsAuditedWithItsPrincipal) {
  ASSERT_EQ(alice("policies.list")["ok"], true);
  audit_->flush();
  std::string log = slurp(dir_ + "/audit.log");
  EXPECT_NE(log.find("\"command\":\"policies.list\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"identity\":\"alice\""), std::string::npos) << log;
}

TEST_F(AdminServerTest, ApproverInGroupApprovesWithShapeScope) {
  std::string id = create_approval("svc:agent");
  json list = alice("approvals.list", {{"state", "pending"}});
  ASSERT_EQ(list["ok"], true);
  ASSERT_EQ(list["result"]["approvals"].size(), 1u);
  json r = alice("approvals.approve",
                 {{"id", id}, {"scope", "shape"}, {"for_s", 3600}, {"reason", "ok by me"}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["state"], "approved");
  EXPECT_EQ(r["result"]["decider"], "alice");
  EXPECT_TRUE(approvals_->lookup_standing_grant("svc:agent", "00ff", 0).has_value() ||
              approvals_->get(id)->scope == approvals::ApprovalScope::kShape);
  // Deciding again: no longer pending.
  EXPECT_EQ(alice("approvals.deny", {{"id", id}, {"reason", "late"}})["error"]["code"],
            "failed_precondition");
}

TEST_F(AdminServerTest, PrincipalOutsideApproverGroupsIsRefused) {
  std::string id = create_approval("svc:agent");
  json r = call("bob", "bob-secret", "approvals.approve", {{"id", id}});
  EXPECT_EQ(r["error"]["code"], "permission_denied") << r.dump();
  EXPECT_EQ(approvals_->get(id)->state, approvals::ApprovalState::kPending);
}

TEST_F(AdminServerTest, ReviewerCannotApproveOwnRequest) {
  std::string id = create_approval("alice");
  json r = alice("approvals.approve", {{"id", id}});
  EXPECT_EQ(r["error"]["code"], "permission_denied") << r.dump();
}

TEST_F(AdminServerTest, DenyNeedsAReasonAndUnknownIdIsNotFound) {
  std::string id = create_approval("svc:agent");
  EXPECT_EQ(alice("approvals.deny", {{"id", id}})["error"]["code"], "invalid_argument");
  EXPECT_EQ(alice("approvals.show", {{"id", "nope"}})["error"]["code"], "not_found");
  json r = alice("approvals.deny", {{"id", id}, {"reason", "too broad"}});
  ASSERT_EQ(r["ok"], true);
  EXPECT_EQ(r["result"]["state"], "denied");
  EXPECT_EQ(r["result"]["decision_reason"], "too broad");
}

TEST_F(AdminServerTest, SessionsListVerifyAndDetectTampering) {
  {
    recording::RecorderOptions o;
    o.dir = dir_ + "/state/recordings";
    auto rec = recording::Recorder::open(o);
    ASSERT_TRUE(rec.is_ok());
    recording::SessionStart s;
    s.session_id = "sess-1";
    s.identity = "svc:agent";
    s.target = "demo";
    ASSERT_TRUE((*rec)->start_session(s).is_ok());
    ASSERT_TRUE((*rec)->try_append("sess-1", "statement", {{"sql", "select 1"}}).is_ok());
    ASSERT_TRUE((*rec)->try_append("sess-1", "session_end", json::object()).is_ok());
    ASSERT_TRUE((*rec)->flush().is_ok());
  }
  json list = alice("sessions.list");
  ASSERT_EQ(list["ok"], true) << list.dump();
  ASSERT_EQ(list["result"]["sessions"].size(), 1u);
  EXPECT_EQ(list["result"]["sessions"][0]["identity"], "svc:agent");
  json v = alice("sessions.verify", {{"id", "sess-1"}});
  ASSERT_EQ(v["ok"], true);
  EXPECT_EQ(v["result"]["ok"], true);
  EXPECT_EQ(v["result"]["records"], 4);  // with the seal
  EXPECT_EQ(v["result"]["state"], "sealed");
  json replay = alice("sessions.replay", {{"id", "sess-1"}});
  ASSERT_EQ(replay["ok"], true);
  EXPECT_EQ(replay["result"]["records"].size(), 4u);

  std::string path = dir_ + "/state/recordings/sess-1.jsonl";
  std::string text = slurp(path);
  size_t at = text.find("select 1");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 8, "select 2");
  std::ofstream(path, std::ios::trunc) << text;
  v = alice("sessions.verify", {{"id", "sess-1"}});
  EXPECT_EQ(v["result"]["ok"], false);
  EXPECT_EQ(v["result"]["bad_seq"], 2);
  EXPECT_EQ(alice("sessions.verify", {{"id", "../etc"}})["error"]["code"], "invalid_argument");
  EXPECT_EQ(alice("sessions.show", {{"id", "nope"}})["error"]["code"], "not_found");
}

TEST_F(AdminServerTest, RulesAddRejectsBadRuleAndKeepsTheFile) {
  std::string before = slurp(dir_ + "/rules/deny.rules");
  json r = alice("rules.add", {{"set", "deny"},
                               {"text",
                                "[deny.bad]\naction = deny\nview = code\n"
                                "pattern = (unclosed\nmessage = x\nseverity = low\n"}});
  EXPECT_EQ(r["error"]["code"], "invalid_argument") << r.dump();
  EXPECT_EQ(slurp(dir_ + "/rules/deny.rules"), before);

  r = alice("rules.add", {{"set", "deny"},
                          {"text",
                           "[deny.truncate]\naction = deny\nview = code\n"
                           "pattern = \\btruncate\\b\nmessage = no truncate\n"
                           "severity = high\n"}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["rules"], 2);
  json show = alice("rules.show", {{"set", "deny"}});
  ASSERT_EQ(show["result"]["rules"].size(), 2u);
  EXPECT_EQ(show["result"]["rules"][1]["id"], "deny.truncate");

  r = alice("rules.remove", {{"set", "deny"}, {"rule", "deny.drop_table"}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["result"]["rules"], 1);
  EXPECT_EQ(alice("rules.remove", {{"set", "deny"}, {"rule", "deny.nope"}})["error"]["code"],
            "not_found");
  EXPECT_EQ(alice("rules.show", {{"set", "../etc/passwd"}})["error"]["code"], "invalid_argument");
  json list = alice("rules.list");
  ASSERT_EQ(list["result"]["rule_sets"].size(), 1u);
  EXPECT_EQ(list["result"]["rule_sets"][0]["used_by"][0], "agents");
}

TEST_F(AdminServerTest, ConfigReloadWithInvalidFileKeepsTheRunningVersion) {
  uint64_t v1 = store_->current()->version;
  std::ofstream(dir_ + "/cp.json") << "{\"policies\": 3}";
  json r = alice("config.reload");
  EXPECT_EQ(r["error"]["code"], "invalid_argument");
  EXPECT_EQ(store_->current()->version, v1);
  write_config(base_config());
  r = alice("config.reload");
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_GT(r["result"]["policy_version"].get<uint64_t>(), v1);
}

TEST_F(AdminServerTest, PoliciesShowAndTokensInspectOffline) {
  json p = alice("policies.show", {{"name", "agents"}});
  ASSERT_EQ(p["ok"], true);
  EXPECT_EQ(p["result"]["approver_groups"][0], "reviewers");
  EXPECT_EQ(alice("policies.show", {{"name", "x"}})["error"]["code"], "not_found");
  json t = alice("tokens.inspect", {{"token", "not-a-token"}});
  ASSERT_EQ(t["ok"], true);
  EXPECT_EQ(t["result"]["decoded"], false);
  EXPECT_EQ(t["result"]["decode_error"]["reason"], "malformed");
}

TEST_F(AdminServerTest, ServesFramesOnAnOwnerOnlySocket) {
  ASSERT_TRUE(server_->start().is_ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/admin.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  protocol::BlockingClient c;
  ASSERT_TRUE(c.connect(dir_ + "/admin.sock").is_ok());
  auto r = c.call(json{{"id", 1},
                       {"type", "admin"},
                       {"command", "status"},
                       {"principal", "alice"},
                       {"credential", "alice-secret"}});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ((*r)["ok"], true);
  auto bad = c.call(json{{"id", 2}, {"type", "admin"}, {"command", "status"}});
  ASSERT_TRUE(bad.is_ok());
  EXPECT_EQ((*bad)["error"]["code"], "unauthenticated");
  server_->stop();
  EXPECT_NE(::access((dir_ + "/admin.sock").c_str(), F_OK), 0);
}

TEST_F(AdminServerTest, SocketGetsTheConfiguredModeAndGroup) {
  json cfg = base_config();
  cfg["control_plane"]["admin_socket_mode"] = "0660";
  cfg["control_plane"]["admin_socket_group"] = "daemon";
  write_config(cfg);
  ASSERT_TRUE(store_->reload().ok()) << store_->reload().error_text();
  ASSERT_TRUE(server_->start().is_ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/admin.sock").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, config::lookup_group("daemon").value());
  EXPECT_EQ(st.st_uid, ::geteuid());
}

TEST_F(AdminServerTest, UnknownGroupAtStartFailsAndLeavesNoSocket) {
  // Loaded without environment checks (as in this fixture), the group is only resolved at
  // bind time: start() must fail closed rather than serve an owner-only socket silently.
  json cfg = base_config();
  cfg["control_plane"]["admin_socket_mode"] = "0660";
  cfg["control_plane"]["admin_socket_group"] = "pgw-no-such-group-xyz";
  write_config(cfg);
  ASSERT_TRUE(store_->reload().ok()) << store_->reload().error_text();
  Status st = server_->start();
  ASSERT_FALSE(st.is_ok());
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("unknown group \"pgw-no-such-group-xyz\""), std::string::npos)
      << st.message();
  EXPECT_NE(::access((dir_ + "/admin.sock").c_str(), F_OK), 0);
}

TEST_F(AdminServerTest, BudgetCommandsListShowAndResetAndCheckTheirArguments) {
  EXPECT_EQ(alice("budgets.list")["ok"], false);  // no budget book in this backend
  json cfg = base_config();
  cfg["budgets"] = json::array(
      {{{"name", "b1"}, {"identities", {"svc:*"}}, {"window", "1h"}, {"statements", 2}}});
  write_config(cfg);
  ASSERT_TRUE(store_->reload().ok());
  auto ledger = budgets::FileBudgetLedger::open(dir_ + "/state");
  ASSERT_TRUE(ledger.is_ok()) << ledger.status().message();
  budgets::BudgetBook book(std::move(*ledger));
  protocol::BudgetUsage two;
  two[protocol::BudgetMeasure::kStatements] = 2;
  book.account(store_->current()->budgets, "svc:agent", {"agents"}, two, protocol::now_unix_ms());
  AdminBackend b;
  b.config = store_.get();
  b.audit = audit_.get();
  b.budgets = &book;
  std::vector<std::string> told;
  b.push_budgets = [&](const std::string& subject) {
    told.push_back(subject);
    return size_t{3};
  };
  server_ = std::make_unique<AdminServer>(std::move(b));

  json list = alice("budgets.list");
  ASSERT_EQ(list["ok"], true) << list.dump();
  ASSERT_EQ(list["result"]["usage"].size(), 1u);
  EXPECT_EQ(list["result"]["usage"][0]["identity"], "svc:agent");
  EXPECT_EQ(list["result"]["usage"][0]["budget"]["exhausted"], "statements");
  json shown = alice("budgets.show", {{"identity", "svc:agent"}});
  ASSERT_EQ(shown["ok"], true) << shown.dump();
  EXPECT_EQ(shown["result"]["budgets"][0]["used"]["statements"], 2);
  EXPECT_EQ(alice("budgets.show")["ok"], false);  // no identity
  EXPECT_EQ(alice("budgets.reset", {{"identity", "svc:agent"}, {"budget", "nope"}})["ok"], false);
  json reset = alice("budgets.reset", {{"identity", "svc:agent"}});
  ASSERT_EQ(reset["ok"], true) << reset.dump();
  EXPECT_EQ(reset["result"]["counters_reset"], 1);
  EXPECT_EQ(reset["result"]["sessions_told"], 3);
  EXPECT_EQ(told, std::vector<std::string>{"svc:agent"});
  EXPECT_TRUE(alice("budgets.list")["result"]["usage"].empty());
  json status = alice("status");
  EXPECT_EQ(status["result"]["budgets"]["configured"], 1);
  EXPECT_EQ(status["result"]["budgets"]["exhausted"], 0);
  server_.reset();
}

}  // namespace
}  // namespace pgwarden::server
