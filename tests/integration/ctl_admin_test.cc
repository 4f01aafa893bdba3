// pgwardenctl against the real pgwarden-cp: the cp binary is started with a config that has an
// admin socket and admin principals; this test runs the real pgwardenctl binary and checks
// its output, exit codes and the audit log. Approvals are created the way the dataplane does
// it: an `approval` request on the dp <-> cp socket, whose answer must reflect the decision
// taken with pgwardenctl.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/protocol/client.h"
#include "common/protocol/messages.h"
#include "controlplane/identity/test_signer.h"
#include "controlplane/recording/recorder.h"
#include "controlplane/vault/credential_hash.h"
#include "tests/integration/cp_process.h"

namespace pgwarden {
namespace {

using protocol::BlockingClient;
using protocol::json;

constexpr char kKeySecret[] = "k9-Zq2mP4vX7-service-secret";
constexpr char kToken[] = "pgw_sk_agent_k9-Zq2mP4vX7-service-secret";

using testing::CtlResult;
using testing::slurp;

class CtlAdminTest : public ::testing::Test {
 protected:
  // Writes a sealed recording of session `id` (svc:agent -> demo) into cp's state directory:
  // its session_start, `records` (kind, fields) in order, and session_end.
  static void write_recording(const std::string& id,
                              const std::vector<std::pair<std::string, json>>& records) {
    recording::RecorderOptions o;
    o.dir = dir_ + "/state/recordings";
    auto rec = recording::Recorder::open(o);
    ASSERT_TRUE(rec.is_ok()) << rec.status().to_string();
    recording::SessionStart s;
    s.session_id = id;
    s.identity = "svc:agent";
    s.target = "demo";
    ASSERT_TRUE((*rec)->start_session(s).is_ok());
    for (const auto& [kind, fields] : records) {
      ASSERT_TRUE((*rec)->try_append(id, kind, fields).is_ok()) << kind;
    }
    ASSERT_TRUE((*rec)->try_append(id, "session_end", json::object()).is_ok());
    ASSERT_TRUE((*rec)->flush().is_ok());
  }
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pgw-ctl-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::filesystem::create_directories(dir_ + "/rules");
    std::ofstream(dir_ + "/rules/deny.rules")
        << "[deny.drop_table]\naction = deny\nview = code\npattern = \\bdrop\\s+table\\b\n"
           "message = no drops\nseverity = high\n";
    std::ofstream(dir_ + "/alice.cred") << "alice-secret-123\n";
    std::ofstream(dir_ + "/bob.cred") << "bob-secret-456\n";
    std::ofstream(dir_ + "/agent.cred") << "agent-admin-789\n";
    std::ofstream(dir_ + "/wrong.cred") << "not-the-secret\n";
    signer_ = new identity::testing::TestSigner("ES256");
    std::ofstream(dir_ + "/jwks.json") << signer_->jwks();
    chmod((dir_ + "/alice.cred").c_str(), 0600);
    config_path_ = dir_ + "/pgwarden.json";
    write_config(base_config());
    start_cp();
  }
  static void TearDownTestSuite() {
    stop_cp();
    delete signer_;
    std::filesystem::remove_all(dir_);
  }

  static void start_cp() {
    setenv("PGW_TEST_DB_PASSWORD", "unused-by-these-tests", 1);
    cp_ = new testing::CpProcess();
    Status st = cp_->start(config_path_, dir_ + "/cp.log", {"--rules-dir", dir_ + "/rules"});
    if (st.is_ok()) st = cp_->wait_ready(dir_ + "/cp.sock", dir_ + "/admin.sock");
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void stop_cp() {
    if (cp_ == nullptr) return;
    EXPECT_EQ(cp_->stop(), 0) << slurp(dir_ + "/cp.log");
    delete cp_;
    cp_ = nullptr;
  }

  static json principal(const std::string& name, const std::string& secret, json groups) {
    return json{{"name", name},
                {"credential_hash", vault::hash_credential(secret, 1000)},
                {"groups", std::move(groups)}};
  }
  static json base_config() {
    json c = testing::base_cp_config(dir_, kKeySecret);
    c["control_plane"]["admin_socket"] = dir_ + "/admin.sock";
    c["control_plane"]["admin_principals"] = {
        principal("alice", "alice-secret-123", {"reviewers"}),
        principal("bob", "bob-secret-456", {"ops"}),
        // The requester itself holding an admin credential in the approver group.
        principal("svc:agent", "agent-admin-789", {"reviewers"})};
    c["identity"]["providers"] = {{{"issuer", "https://idp.example"},
                                   {"audiences", {"pgwarden"}},
                                   {"jwks_file", dir_ + "/jwks.json"},
                                   {"algorithms", {"ES256"}}}};
    c["policies"] = {{{"name", "agents-read"},
                      {"groups", {"agents"}},
                      {"targets", {"demo"}},
                      {"allowed_kinds", {"select", "delete"}},
                      {"allowed_relations", {"crm.*"}},
                      {"read_only", false},
                      {"approve_kinds", {"delete"}},
                      {"rule_sets", {"deny"}},
                      {"approvals", {{"approver_groups", {"reviewers"}}, {"timeout_s", 30}}}}};
    return c;
  }
  static void write_config(const json& j) {
    std::string tmp = config_path_ + ".tmp";
    std::ofstream(tmp) << j.dump(2);
    rename(tmp.c_str(), config_path_.c_str());
  }

  // Runs pgwardenctl with `args` as `who` (a credential file under dir_; "wrong" is alice with
  // a wrong secret), stdin `input`.
  static CtlResult ctl(const std::vector<std::string>& args, const std::string& who = "alice",
                       const std::string& input = "") {
    testing::CtlIdentity id{
        .socket = dir_ + "/admin.sock",
        .principal = who == "wrong" ? "alice" : who,
        .credential_file = dir_ + "/" + (who == "svc:agent" ? "agent" : who) + ".cred"};
    return testing::run_ctl(id, args, dir_, input);
  }
  static json ctl_json(std::vector<std::string> args, const std::string& who = "alice") {
    args.push_back("--json");
    CtlResult r = ctl(std::move(args), who);
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    return json::parse(r.out, nullptr, false);
  }

  static std::string audit_log() { return slurp(dir_ + "/state/audit.log"); }

  // A dp connection with an authenticated session, then an approval request in flight.
  struct PendingApproval {
    BlockingClient dp;
    uint64_t request_id = 0;
    std::string approval_id;
  };
  static std::unique_ptr<PendingApproval> request_approval(const std::string& sql) {
    auto p = std::make_unique<PendingApproval>();
    EXPECT_TRUE(p->dp.connect(dir_ + "/cp.sock").is_ok());
    EXPECT_TRUE(p->dp.hello().is_ok());
    static int n = 0;
    std::string sid = "ctl-" + std::to_string(getpid()) + "-" + std::to_string(++n);
    protocol::AuthenticateRequest a{sid, kToken, "agent", "demo", "127.0.0.1:40000", false};
    auto auth = p->dp.call(a.to_json(p->dp.next_id(), protocol::now_unix_ms() + 10000));
    EXPECT_TRUE(auth.is_ok() && (*auth)["ok"] == true) << (auth.is_ok() ? auth->dump() : "");
    protocol::ApprovalRequest req{sid, sql, "00aa11bb22cc33dd", "approve_kinds", "delete rows"};
    auto id = p->dp.send(req.to_json(p->dp.next_id(), protocol::now_unix_ms() + 30000));
    EXPECT_TRUE(id.is_ok());
    p->request_id = id.is_ok() ? *id : 0;
    // Wait until pgwardenctl sees it.
    for (int i = 0; i < 200 && p->approval_id.empty(); ++i) {
      json list = ctl_json({"approvals", "list"});
      for (const json& a : list["approvals"]) {
        if (a["sql"] == sql) p->approval_id = a["id"];
      }
      if (p->approval_id.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    EXPECT_FALSE(p->approval_id.empty()) << "approval never appeared in approvals list";
    return p;
  }

  static std::string dir_;
  static std::string config_path_;
  static testing::CpProcess* cp_;
  static identity::testing::TestSigner* signer_;
};
identity::testing::TestSigner* CtlAdminTest::signer_ = nullptr;
std::string CtlAdminTest::dir_;
std::string CtlAdminTest::config_path_;
testing::CpProcess* CtlAdminTest::cp_ = nullptr;

TEST_F(CtlAdminTest, StatusPrintsVersionUptimeAndPolicyVersion) {
  CtlResult r = ctl({"status"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("version:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("uptime_s:"), std::string::npos);
  EXPECT_NE(r.out.find("policy_version:"), std::string::npos);
  json j = ctl_json({"status"});
  EXPECT_GT(j["policy_version"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["principal"], "alice");
  EXPECT_TRUE(j.contains("counters"));
}

TEST_F(CtlAdminTest, BadCredentialExitsThreeAndIsAudited) {
  CtlResult r = ctl({"status"}, "wrong");
  EXPECT_EQ(r.code, 3) << r.out << r.err;
  EXPECT_NE(r.err.find("admin authentication failed"), std::string::npos) << r.err;
  std::string log = audit_log();
  EXPECT_NE(log.find("\"event\":\"admin_auth\""), std::string::npos) << log;
  EXPECT_NE(log.find("\"decision\":\"rejected\""), std::string::npos);
  EXPECT_EQ(log.find("not-the-secret"), std::string::npos) << "credential in the audit log";
  EXPECT_EQ(log.find("alice-secret-123"), std::string::npos) << "credential in the audit log";
}

TEST_F(CtlAdminTest, UnreachableSocketExitsFiveAndUsageErrorsExitTwo) {
  CtlResult r = ctl({"status", "--socket", dir_ + "/nope.sock"});
  EXPECT_EQ(r.code, 5) << r.err;
  EXPECT_EQ(ctl({"approvals", "frobnicate"}).code, 2);
  EXPECT_EQ(ctl({"approvals", "deny", "someid"}).code, 2) << "deny without --reason";
}

TEST_F(CtlAdminTest, ApproveLetsTheWaitingStatementRunAndIsAuditedWithThePrincipal) {
  auto p = request_approval("delete from crm.orders where id = 1");
  ASSERT_FALSE(p->approval_id.empty());
  CtlResult shown = ctl({"approvals", "show", p->approval_id});
  ASSERT_EQ(shown.code, 0) << shown.err;
  EXPECT_NE(shown.out.find("svc:agent"), std::string::npos) << shown.out;
  CtlResult r = ctl({"approvals", "approve", p->approval_id, "--reason", "checked"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("approved"), std::string::npos) << r.out;
  auto answer = p->dp.receive_for(p->request_id, 10000);
  ASSERT_TRUE(answer.is_ok()) << answer.status().to_string();
  EXPECT_EQ((*answer)["verdict"], "allow") << answer->dump();
  std::string log = audit_log();
  EXPECT_NE(log.find("\"command\":\"approvals.approve\""), std::string::npos) << log;
  // Deciding twice fails (no longer pending).
  EXPECT_EQ(ctl({"approvals", "deny", p->approval_id, "--reason", "late"}).code, 1);
}

TEST_F(CtlAdminTest, DenyAnswersTheDataplaneWithTheReviewersReason) {
  auto p = request_approval("delete from crm.orders where id = 2");
  ASSERT_FALSE(p->approval_id.empty());
  CtlResult r = ctl({"approvals", "deny", p->approval_id, "--reason", "not during business"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto answer = p->dp.receive_for(p->request_id, 10000);
  ASSERT_TRUE(answer.is_ok());
  EXPECT_EQ((*answer)["verdict"], "deny");
  EXPECT_EQ((*answer)["reason"], "not during business") << answer->dump();
}

TEST_F(CtlAdminTest, SelfApprovalAndNonApproverAreRefusedWithExitThree) {
  auto p = request_approval("delete from crm.orders where id = 3");
  ASSERT_FALSE(p->approval_id.empty());
  CtlResult self = ctl({"approvals", "approve", p->approval_id}, "svc:agent");
  EXPECT_EQ(self.code, 3) << self.out << self.err;
  CtlResult bob = ctl({"approvals", "approve", p->approval_id}, "bob");
  EXPECT_EQ(bob.code, 3) << bob.out << bob.err;
  json still = ctl_json({"approvals", "show", p->approval_id});
  EXPECT_EQ(still["state"], "pending");
  ASSERT_EQ(ctl({"approvals", "deny", p->approval_id, "--reason", "cleanup"}).code, 0);
  EXPECT_EQ(ctl({"approvals", "show", "doesnotexist"}).code, 4);
}

TEST_F(CtlAdminTest, SessionsListVerifyReplayAndReportFirstTamperedRecord) {
  ASSERT_NO_FATAL_FAILURE(write_recording(
      "rec-1",
      {{"rows",
        {{"columns", json::array({"id", "full_name"})},
         {"rows", json::array({json::array({"1", "Ada Lovelace"}),
                               json::array({"2", "Alan Turing"})})}}},
       {"statement",
        {{"sql", "select id, full_name from crm.customers"}, {"rows", 2}, {"duration_ms", 3}}}}));
  CtlResult list = ctl({"sessions", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("rec-1"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("svc:agent"), std::string::npos);

  CtlResult verify = ctl({"sessions", "verify", "rec-1"});
  EXPECT_EQ(verify.code, 0) << verify.out << verify.err;
  EXPECT_NE(verify.out.find("ok, sealed, 5 records verified"), std::string::npos) << verify.out;

  CtlResult replay = ctl({"sessions", "replay", "rec-1"});
  ASSERT_EQ(replay.code, 0) << replay.err;
  EXPECT_NE(replay.out.find("select id, full_name from crm.customers"), std::string::npos)
      << replay.out;
  EXPECT_NE(replay.out.find("Ada Lovelace"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("(2 rows)"), std::string::npos) << replay.out;

  // A recording larger than one dp <-> cp frame (1 MiB) replays through the admin socket too.
  json rows = json::array();
  for (int i = 0; i < 1000; ++i) rows.push_back({std::to_string(i), std::string(3000, 'x')});
  ASSERT_NO_FATAL_FAILURE(write_recording(
      "rec-big", {{"rows", {{"columns", {"id", "note"}}, {"rows", rows}}},
                  {"statement", {{"sql", "select id, note from big"}, {"rows", 1000}}}}));
  CtlResult big = ctl({"sessions", "replay", "rec-big"});
  ASSERT_EQ(big.code, 0) << big.err.substr(0, 2000);
  EXPECT_GT(big.out.size(), size_t{2} << 20);
  EXPECT_NE(big.out.find("(1000 rows)"), std::string::npos) << big.out.substr(0, 2000);

  // Tamper with the rows record: verify names its seq, through the API and offline.
  std::string path = dir_ + "/state/recordings/rec-1.jsonl";
  std::string text = slurp(path);
  size_t at = text.find("Alan Turing");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 11, "Alan Tuning");
  std::ofstream(path, std::ios::trunc) << text;
  CtlResult tampered = ctl({"sessions", "verify", "rec-1"});
  EXPECT_EQ(tampered.code, 1);
  EXPECT_NE(tampered.out.find("TAMPERED at record seq 2"), std::string::npos) << tampered.out;
  CtlResult offline = ctl({"sessions", "verify", "rec-1", "--state-dir", dir_ + "/state"});
  EXPECT_EQ(offline.code, 1);
  EXPECT_NE(offline.out.find("TAMPERED at record seq 2"), std::string::npos) << offline.out;
  EXPECT_EQ(ctl({"sessions", "verify", "no-such-session"}).code, 4);
}

TEST_F(CtlAdminTest, RulesAddOfABadRuleIsRejectedAndTheOldSetKept) {
  std::string before = slurp(dir_ + "/rules/deny.rules");
  CtlResult bad = ctl({"rules", "add", "deny"}, "alice",
                      "[deny.broken]\naction = deny\nview = code\npattern = (unclosed\n"
                      "message = x\nseverity = low\n");
  EXPECT_EQ(bad.code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.err.find("unchanged"), std::string::npos) << bad.err;
  EXPECT_EQ(slurp(dir_ + "/rules/deny.rules"), before);

  CtlResult good = ctl({"rules", "add", "deny"}, "alice",
                       "[deny.truncate]\naction = deny\nview = code\npattern = \\btruncate\\b\n"
                       "message = no truncate\nseverity = high\n");
  ASSERT_EQ(good.code, 0) << good.out << good.err;
  CtlResult show = ctl({"rules", "show", "deny"});
  ASSERT_EQ(show.code, 0);
  EXPECT_NE(show.out.find("deny.truncate"), std::string::npos) << show.out;
  CtlResult list = ctl({"rules", "list"});
  EXPECT_NE(list.out.find("agents-read"), std::string::npos) << list.out;
  ASSERT_EQ(ctl({"rules", "remove", "deny", "deny.truncate"}).code, 0);
  EXPECT_EQ(slurp(dir_ + "/rules/deny.rules").find("deny.truncate"), std::string::npos);
  EXPECT_EQ(ctl({"rules", "remove", "deny", "deny.truncate"}).code, 4);
  // The offline group still works beside the online commands.
  EXPECT_EQ(ctl({"rules", "check", dir_ + "/rules/deny.rules"}).code, 0);
}

TEST_F(CtlAdminTest, ConfigReloadWithAnInvalidFileKeepsTheRunningVersion) {
  uint64_t v1 = ctl_json({"status"})["policy_version"];
  std::ofstream(config_path_, std::ios::trunc) << R"({"policies": "oops"})";
  CtlResult r = ctl({"config", "reload"});
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("running version stays"), std::string::npos) << r.err;
  EXPECT_EQ(ctl_json({"status"})["policy_version"].get<uint64_t>(), v1);
  write_config(base_config());
  CtlResult ok = ctl({"config", "reload"});
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_GT(ctl_json({"status"})["policy_version"].get<uint64_t>(), v1);
  EXPECT_NE(audit_log().find("\"command\":\"config.reload\""), std::string::npos);
}

TEST_F(CtlAdminTest, PoliciesListAndShow) {
  CtlResult list = ctl({"policies", "list"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("agents-read"), std::string::npos) << list.out;
  CtlResult show = ctl({"policies", "show", "agents-read"});
  ASSERT_EQ(show.code, 0);
  EXPECT_NE(show.out.find("approver_groups:"), std::string::npos) << show.out;
  EXPECT_EQ(ctl({"policies", "show", "nope"}).code, 4);
}

TEST_F(CtlAdminTest, TokensInspectExplainsAnExpiredToken) {
  int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  std::string token = signer_->sign(json{{"iss", "https://idp.example"},
                                         {"sub", "agent-7"},
                                         {"aud", "pgwarden"},
                                         {"iat", now - 7200},
                                         {"exp", now - 3600}});
  CtlResult r = ctl({"tokens", "inspect", token});
  EXPECT_EQ(r.code, 3) << r.out << r.err;
  EXPECT_NE(r.out.find("sub: agent-7"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("expired"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("validation: REJECTED: expired"), std::string::npos) << r.out;
  // A valid token from the same provider passes (exit 0).
  std::string fresh = signer_->sign(json{{"iss", "https://idp.example"},
                                         {"sub", "agent-7"},
                                         {"aud", "pgwarden"},
                                         {"iat", now - 10},
                                         {"exp", now + 600}});
  CtlResult valid = ctl({"tokens", "inspect", fresh});
  EXPECT_EQ(valid.code, 0) << valid.out << valid.err;
  EXPECT_NE(valid.out.find("validation: VALID for subject agent-7"), std::string::npos)
      << valid.out;
  CtlResult offline = ctl({"tokens", "inspect", "--offline", token});
  EXPECT_EQ(offline.code, 3);
  EXPECT_NE(offline.out.find("expired 36"), std::string::npos) << offline.out;
  CtlResult junk = ctl({"tokens", "inspect", "--offline", "junk"});
  EXPECT_EQ(junk.code, 3);
  EXPECT_NE(junk.out.find("not a JWT"), std::string::npos) << junk.out;
  EXPECT_EQ(audit_log().find(token), std::string::npos) << "token in the audit log";
}

}  // namespace
}  // namespace pgwarden
