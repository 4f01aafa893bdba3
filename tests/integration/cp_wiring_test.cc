// pgwarden-cp's wiring end to end, in process: a ControlPlane (the object pgwarden-cp's main
// builds) on a real PostgreSQL sandbox, driven over its Unix socket by this test playing the
// dataplane. JWTs are minted with a throwaway key published as a JWKS file; approvals are
// decided through the ControlPlane's ApprovalStore; the mask plan is built for the real
// RowDescription of crm.customers; recordings are verified with recording::verify_recording.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/protocol/client.h"
#include "common/protocol/messages.h"
#include "controlplane/identity/service_key.h"
#include "controlplane/identity/test_signer.h"
#include "controlplane/recording/recording_file.h"
#include "controlplane/server/control_plane.h"
#include "dataplane/masking/mask_apply.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden {
namespace {

using protocol::BlockingClient;
using protocol::json;

constexpr char kIssuer[] = "https://idp.pgwarden.test";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class CpWiringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(sandbox_.start().is_ok());
    char tmpl[] = "/tmp/pgw-cpwire-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/jwks.json") << signer_.jwks();
    {
      std::ofstream key(dir_ + "/mask.key");
      key << "0123456789abcdef0123456789abcdef";
    }
    ::chmod((dir_ + "/mask.key").c_str(), 0600);
    auto sk = identity::make_service_key_hash("svc-secret-for-the-wiring-test-0123456789");
    ASSERT_TRUE(sk.is_ok());
    json cfg = {
        {"listeners",
         {{"dataplane", {{"address", "127.0.0.1"}, {"port", 6432}, {"loopback_only", true}}}}},
        {"control_plane", {{"socket", dir_ + "/cp.sock"}, {"state_dir", dir_ + "/state"}}},
        {"identity",
         {{"providers",
           {{{"name", "test-idp"},
             {"issuer", kIssuer},
             {"audiences", {"pgwarden"}},
             {"jwks_file", dir_ + "/jwks.json"},
             {"algorithms", {"ES256"}}}}},
          {"service_keys",
           {{{"id", "agent"},
             {"salt", sk->salt},
             {"hash", sk->hash},
             {"identity", "svc:agent"},
             {"groups", {"agents"}}}}}}},
        {"targets",
         {{{"name", "demo"},
           {"host", sandbox_.host()},
           {"port", sandbox_.port()},
           {"database", "demo"},
           {"role", "app_scram"},
           {"credential", {{"file", sandbox_.get("PGW_SECRETS_DIR") + "/app_scram"}}},
           {"tls", {{"mode", "disable"}}}}}},
        {"policies",
         {{{"name", "agents"},
           {"groups", {"agents"}},
           {"targets", {"demo"}},
           {"allowed_kinds", {"select"}},
           {"allowed_relations", {"crm.*"}},
           {"approve_kinds", {"delete"}},
           {"read_only", false},
           {"deny_masked_in_expressions", true},
           {"masks",
            {{{"column", "crm.customers.email"}, {"function", "email"}},
             {{"column", "crm.customers.ssn"}, {"function", "hash"}}}},
           {"approvals", {{"approver_groups", {"reviewers"}}, {"timeout_s", 30}}},
           {"recording", {{"level", "full"}, {"required", true}}}}}},
        {"masking", {{"key_file", dir_ + "/mask.key"}}}};
    std::ofstream(dir_ + "/pgwarden.json") << cfg.dump(2);
    auto store = std::make_unique<config::ConfigStore>(dir_ + "/pgwarden.json");
    auto loaded = store->reload();
    ASSERT_TRUE(loaded.ok()) << loaded.error_text();
    auto cp = server::ControlPlane::open(std::move(store));
    ASSERT_TRUE(cp.is_ok()) << cp.status().to_string();
    cp_ = std::move(cp).value();
    ASSERT_TRUE(cp_->start().is_ok());
    ASSERT_TRUE(client_.connect(dir_ + "/cp.sock").is_ok());
    ASSERT_TRUE(client_.hello().is_ok());
  }
  void TearDown() override {
    if (cp_) cp_->stop();
    cp_.reset();
    std::string cmd = "rm -rf '" + dir_ + "'";
    (void)!system(cmd.c_str());
  }

  std::string jwt(const std::string& sub, std::vector<std::string> groups, int64_t exp_in_s) {
    int64_t now = protocol::now_unix_ms() / 1000;
    return signer_.sign({{"iss", kIssuer},
                         {"aud", "pgwarden"},
                         {"sub", sub},
                         {"groups", groups},
                         {"iat", now - 5},
                         {"exp", now + exp_in_s}});
  }
  json call(const std::string& type, json fields, int64_t deadline_in = 10000) {
    fields["id"] = client_.next_id();
    fields["type"] = type;
    fields["deadline_ms"] = protocol::now_unix_ms() + deadline_in;
    auto r = client_.call(fields);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : json();
  }
  void send_event(const json& event) {
    std::string frame;
    ASSERT_TRUE(protocol::append_message(frame, event).is_ok());
    ASSERT_TRUE(client_.send_raw(frame).is_ok());
  }
  json authenticate(const std::string& sid, const std::string& token) {
    protocol::AuthenticateRequest a{sid, token, "agent", "demo", "127.0.0.1:40000", false};
    auto r = client_.call(a.to_json(client_.next_id(), protocol::now_unix_ms() + 10000));
    EXPECT_TRUE(r.is_ok());
    return r.is_ok() ? *r : json();
  }

  testing::PgSandbox sandbox_;
  std::string dir_;
  identity::testing::TestSigner signer_{"ES256", "throwaway"};
  std::unique_ptr<server::ControlPlane> cp_;
  BlockingClient client_;
};

TEST_F(CpWiringTest, JwtLoginIsAcceptedAndExpiredOrForgedTokensGet28P01WithIdentityReason) {
  json ok = authenticate("s-jwt", jwt("alice@agents", {"agents"}, 300));
  ASSERT_EQ(ok["ok"], true) << ok.dump();
  EXPECT_EQ(ok["identity"]["subject"], "alice@agents");
  EXPECT_EQ(ok["identity"]["issuer"], kIssuer);
  EXPECT_EQ(ok["policy"]["name"], "agents");

  json expired = authenticate("s-exp", jwt("alice@agents", {"agents"}, -600));
  EXPECT_EQ(expired["ok"], false);
  EXPECT_EQ(expired["error"]["sqlstate"], "28P01");
  EXPECT_EQ(expired["error"]["code"], "expired");

  identity::testing::TestSigner stranger("ES256", "throwaway");
  int64_t now = protocol::now_unix_ms() / 1000;
  json forged = authenticate("s-forged", stranger.sign({{"iss", kIssuer},
                                                        {"aud", "pgwarden"},
                                                        {"sub", "mallory"},
                                                        {"groups", {"agents"}},
                                                        {"exp", now + 300}}));
  EXPECT_EQ(forged["error"]["code"], "bad_signature");
  EXPECT_EQ(forged["error"]["sqlstate"], "28P01");

  json svc = authenticate("s-svc", "pgw_sk_agent_svc-secret-for-the-wiring-test-0123456789");
  ASSERT_EQ(svc["ok"], true) << svc.dump();
  EXPECT_EQ(svc["identity"]["subject"], "svc:agent");
  json bad_svc = authenticate("s-svc2", "pgw_sk_agent_wrong-secret-wrong-secret-wrong-secret");
  EXPECT_EQ(bad_svc["error"]["code"], "bad_service_key");

  // Rejections are audited with the identity reason; the tokens never are.
  cp_->audit().flush();
  std::string audit = read_file(dir_ + "/state/audit.log");
  EXPECT_NE(audit.find("\"rule\":\"expired\""), std::string::npos);
  EXPECT_EQ(audit.find("svc-secret-for-the-wiring-test"), std::string::npos);
}

TEST_F(CpWiringTest, ApprovalDecidedThroughTheStoreAnswersTheWaitingDataplane) {
  ASSERT_EQ(authenticate("s-appr", jwt("alice@agents", {"agents"}, 300))["ok"], true);
  json req = {{"session_id", "s-appr"},
              {"sql", "delete from crm.orders where id = 7"},
              {"shape_key", "00000000deadbeef"},
              {"rule", "policy.approve_kind"},
              {"reason", "cleanup"},
              {"id", client_.next_id()},
              {"type", "approval"},
              {"deadline_ms", protocol::now_unix_ms() + 20000}};
  auto sent = client_.send(req);
  ASSERT_TRUE(sent.is_ok());
  std::vector<approvals::ApprovalRequest> pending;
  for (int i = 0; i < 200 && pending.empty(); ++i) {
    pending = cp_->approvals().list(approvals::ApprovalState::kPending);
    if (pending.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].identity, "alice@agents");
  // The requester may not approve; a reviewer may, for the shape, for an hour.
  approvals::ApprovalDecision self{true, "alice@agents", {"reviewers"}, "mine"};
  EXPECT_FALSE(cp_->approvals().decide(pending[0].id, self).is_ok());
  approvals::ApprovalDecision d{
      true, "bob", {"reviewers"}, "ok for today", approvals::ApprovalScope::kShape, 3600};
  // First cp tells the dp which request the statement waits for (the client's NOTICE).
  auto waiting = client_.receive(5000);
  ASSERT_TRUE(waiting.is_ok());
  EXPECT_EQ((*waiting)["kind"], "approval_waiting");
  EXPECT_EQ((*waiting)["session_id"], "s-appr");
  EXPECT_EQ((*waiting)["approval_id"], pending[0].id);
  EXPECT_EQ((*waiting)["notice"], "waiting for approval " + pending[0].id);
  ASSERT_TRUE(cp_->approvals().decide(pending[0].id, d).is_ok());
  auto answer = client_.receive(5000);
  ASSERT_TRUE(answer.is_ok());
  EXPECT_EQ((*answer)["id"], *sent);
  EXPECT_EQ((*answer)["verdict"], "allow");
  EXPECT_EQ((*answer)["approval_id"], pending[0].id);

  // Same identity, same shape: the standing grant answers without a new request.
  req["id"] = client_.next_id();
  auto again = client_.call(req);
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ((*again)["verdict"], "allow");
  EXPECT_EQ(cp_->approvals().list(approvals::ApprovalState::kPending).size(), 0u);

  // A pending request of an ending session is abandoned.
  req["id"] = client_.next_id();
  req["shape_key"] = "0000000000000001";
  auto third = client_.send(req);
  for (int i = 0; i < 200 && cp_->approvals().list(approvals::ApprovalState::kPending).empty();
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  send_event({{"type", "event"}, {"session_id", "s-appr"}, {"kind", "session_end"}});
  auto denied = client_.receive(5000);
  if (denied.is_ok() && denied->value("kind", "") == "approval_waiting") {
    denied = client_.receive(5000);
  }
  ASSERT_TRUE(denied.is_ok());
  EXPECT_EQ((*denied)["id"], *third);
  EXPECT_EQ((*denied)["verdict"], "deny");
  EXPECT_EQ(cp_->approvals().list(approvals::ApprovalState::kAbandoned).size(), 1u);
  cp_->audit().flush();
  std::string audit = read_file(dir_ + "/state/audit.log");
  EXPECT_NE(audit.find("\"event\":\"approval_approved\""), std::string::npos);
  EXPECT_NE(audit.find("\"event\":\"approval_abandoned\""), std::string::npos);
}

TEST_F(CpWiringTest, MaskPlanForRealCustomersRowDescriptionMasksEmailAndDpAcceptsIt) {
  ASSERT_EQ(authenticate("s-mask", jwt("alice@agents", {"agents"}, 300))["ok"], true);
  // The real RowDescription of crm.customers, as PostgreSQL sends it.
  PGconn* conn = PQconnectdb(sandbox_.conninfo("app_scram").c_str());
  ASSERT_EQ(PQstatus(conn), CONNECTION_OK) << PQerrorMessage(conn);
  PGresult* res = PQexec(conn, "select * from crm.customers limit 0");
  ASSERT_EQ(PQresultStatus(res), PGRES_TUPLES_OK);
  json fields = json::array();
  int email = -1, ssn = -1;
  for (int i = 0; i < PQnfields(res); ++i) {
    std::string name = PQfname(res, i);
    if (name == "email") email = i;
    if (name == "ssn") ssn = i;
    fields.push_back({{"name", name},
                      {"table_oid", PQftable(res, i)},
                      {"attnum", PQftablecol(res, i)},
                      {"type_oid", PQftype(res, i)},
                      {"format", PQfformat(res, i)}});
  }
  PQclear(res);
  PQfinish(conn);
  ASSERT_GE(email, 0);
  json r = call("mask_plan", {{"session_id", "s-mask"}, {"fields", fields}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  auto plan = masking::RowMaskPlan::from_json(r["plan"]);
  ASSERT_TRUE(plan.is_ok()) << plan.status().to_string();
  ASSERT_GT(plan->columns.size(), static_cast<size_t>(email));
  EXPECT_EQ(plan->columns[email].function, masking::MaskFunction::kEmail);
  EXPECT_EQ(plan->columns[ssn].function, masking::MaskFunction::kHash);
  EXPECT_EQ(plan->hash_key.size(), 32u);

  // deny_masked_in_expressions: filtering on a masked column is refused; plain output is not.
  json filter = call("analyse", {{"session_id", "s-mask"},
                                 {"sql", "select id from crm.customers where email like 'a%'"},
                                 {"shape_key", "01"}});
  EXPECT_EQ(filter["verdict"], "deny");
  EXPECT_EQ(filter["rule"], "policy.masked_column_in_expression");
  json plain = call(
      "analyse",
      {{"session_id", "s-mask"}, {"sql", "select email from crm.customers"}, {"shape_key", "02"}});
  EXPECT_EQ(plain["verdict"], "allow") << plain.dump();
}

TEST_F(CpWiringTest, SessionEventsBecomeAHashChainedRecording) {
  ASSERT_EQ(authenticate("s-rec", jwt("alice@agents", {"agents"}, 300))["ok"], true);
  auto ev = [&](json e) {
    e["type"] = "event";
    e["session_id"] = "s-rec";
    send_event(e);
  };
  ev({{"kind", "session_start"}, {"tls", false}});
  ev({{"kind", "statement"}, {"sql", "select email from crm.customers"}, {"verdict", "allow"}});
  ev({{"kind", "rows"}, {"columns", {"email"}}, {"rows", {{"a***@example.com"}}}});
  ev({{"kind", "session_end"}, {"reason", "client closed"}});
  std::string path = dir_ + "/state/recordings/s-rec.jsonl";
  bool closed = false;
  for (int i = 0; i < 300 && !closed; ++i) {
    closed = !cp_->recorder().session_open("s-rec") &&
             read_file(path).find("session_end") != std::string::npos;
    if (!closed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(cp_->recorder().flush().is_ok());
  auto report = recording::verify_recording(path);
  ASSERT_TRUE(report.is_ok()) << report.status().to_string();
  EXPECT_TRUE(report->ok) << report->reason;
  EXPECT_EQ(report->records, 5u);  // with the seal
  EXPECT_TRUE(report->sealed);
  auto records = recording::read_recording(path);
  ASSERT_TRUE(records.is_ok());
  EXPECT_EQ((*records)[0]["identity"], "alice@agents");
  EXPECT_EQ((*records)[2]["kind"], "rows");
  // Rows go to the recording, never to the audit log.
  cp_->audit().flush();
  EXPECT_EQ(read_file(dir_ + "/state/audit.log").find("a***@example.com"), std::string::npos);
}

}  // namespace
}  // namespace pgwarden
