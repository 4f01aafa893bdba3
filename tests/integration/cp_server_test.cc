// pgwarden-cp end to end: the real binary, a real PostgreSQL (sandbox), and this test playing
// the dataplane: protocol frames to cp on its Unix socket, PostgreSQL messages by hand on a
// raw TCP socket, relaying the SCRAM exchange between them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include "common/protocol/client.h"
#include "common/protocol/frame.h"
#include "common/protocol/messages.h"
#include "controlplane/identity/service_key.h"
#include "tests/integration/cp_process.h"
#include "tests/integration/pg_raw.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden {
namespace {

using protocol::BlockingClient;
using protocol::json;
using testing::CpProcess;
using testing::PgSandbox;
using testing::RawPgConnection;
using testing::slurp;

constexpr char kKeySecret[] = "k9-Zq2mP4vX7-service-secret";
constexpr char kToken[] = "pgw_sk_agent_k9-Zq2mP4vX7-service-secret";

class CpServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    sandbox_ = new PgSandbox();
    Status s = sandbox_->start();
    ASSERT_TRUE(s.is_ok()) << s.to_string();
    char tmpl[] = "/tmp/pgw-cp-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    config_path_ = dir_ + "/pgwarden.json";
    write_config(base_config());
    cp_ = new CpProcess();
    Status st = cp_->start(config_path_, dir_ + "/cp.log");
    if (st.is_ok()) st = cp_->wait_ready(dir_ + "/cp.sock");
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void TearDownTestSuite() {
    // A clean exit also proves no sanitizer report in instrumented builds.
    EXPECT_EQ(cp_->stop(), 0) << slurp(dir_ + "/cp.log");
    delete cp_;
    delete sandbox_;
    std::string cmd = "rm -rf '" + dir_ + "'";
    (void)!system(cmd.c_str());
  }

  static json base_config() {
    static const identity::ServiceKeyHash key = identity::make_service_key_hash(kKeySecret).value();
    return json{
        {"listeners",
         {{"dataplane", {{"address", "127.0.0.1"}, {"port", 6432}, {"loopback_only", true}}}}},
        {"control_plane",
         {{"socket", dir_ + "/cp.sock"}, {"state_dir", dir_ + "/state"}, {"worker_threads", 4}}},
        {"identity",
         {{"service_keys",
           {{{"id", "agent"},
             {"salt", key.salt},
             {"hash", key.hash},
             {"identity", "svc:agent"},
             {"groups", {"agents"}}}}}}},
        {"targets",
         {{{"name", "demo"},
           {"host", sandbox_->host()},
           {"port", sandbox_->port()},
           {"database", "demo"},
           {"role", "app_scram"},
           {"credential", {{"file", sandbox_->get("PGW_SECRETS_DIR") + "/app_scram"}}},
           {"tls", {{"mode", "disable"}}}}}},
        {"policies",
         {{{"name", "agents-read"},
           {"groups", {"agents"}},
           {"targets", {"demo"}},
           {"allowed_kinds", {"select"}},
           {"allowed_relations", {"crm.*"}},
           {"read_only", true},
           {"approve_kinds", {"select"}},
           {"approvals", {{"approver_groups", {"reviewers"}}, {"timeout_s", 60}}}}}}};
  }
  static void write_config(const json& j) {
    std::string tmp = config_path_ + ".tmp";
    std::ofstream(tmp) << j.dump(2);
    rename(tmp.c_str(), config_path_.c_str());
  }
  void SetUp() override {
    ASSERT_TRUE(client_.connect(dir_ + "/cp.sock").is_ok());
    auto v = client_.hello();
    ASSERT_TRUE(v.is_ok()) << v.status().to_string();
    policy_version_ = *v;
  }

  json authenticate(BlockingClient& c, const std::string& session, const std::string& token) {
    protocol::AuthenticateRequest a{session, token, "agent", "demo", "127.0.0.1:40000", false};
    auto r = c.call(a.to_json(c.next_id(), protocol::now_unix_ms() + 10000));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : json();
  }

  static std::string session_id() {
    static int n = 0;
    return "sess-" + std::to_string(getpid()) + "-" + std::to_string(++n);
  }

  static PgSandbox* sandbox_;
  static CpProcess* cp_;
  static std::string dir_;
  static std::string config_path_;
  BlockingClient client_;
  uint64_t policy_version_ = 0;
};
PgSandbox* CpServerTest::sandbox_ = nullptr;
CpProcess* CpServerTest::cp_ = nullptr;
std::string CpServerTest::dir_;
std::string CpServerTest::config_path_;

json request(BlockingClient& c, const std::string& type, json fields, int64_t deadline_in = 10000) {
  fields["id"] = c.next_id();
  fields["type"] = type;
  fields["deadline_ms"] = protocol::now_unix_ms() + deadline_in;
  return fields;
}

TEST_F(CpServerTest, HelloReportsProtocolAndPolicyVersion) {
  EXPECT_GT(policy_version_, 0u);
  BlockingClient c;
  ASSERT_TRUE(c.connect(dir_ + "/cp.sock").is_ok());
  auto r = c.call(json{{"id", 1}, {"type", "hello"}, {"protocol", 1}, {"dp", "test"}});
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ((*r)["ok"], true);
  EXPECT_EQ((*r)["protocol"], 1);
}

TEST_F(CpServerTest, ServiceKeyLoginRelaysRealScramThroughCpToReadyForQuery) {
  std::string sid = session_id();
  json auth = authenticate(client_, sid, kToken);
  ASSERT_EQ(auth["ok"], true) << auth.dump();
  auto grant = protocol::AuthenticateResponse::from_json(auth);
  ASSERT_TRUE(grant.is_ok()) << grant.status().to_string();
  EXPECT_EQ(grant->identity.subject, "svc:agent");
  EXPECT_EQ(grant->policy.name, "agents-read");
  EXPECT_EQ(grant->policy.version, policy_version_);
  EXPECT_EQ(grant->upstream.role, "app_scram");
  EXPECT_EQ(grant->upstream.tls_mode, protocol::UpstreamTlsMode::kDisable);
  EXPECT_EQ(grant->startup_parameters.at("default_transaction_read_only"), "on");

  RawPgConnection pg;
  ASSERT_TRUE(pg.connect_tcp(grant->upstream.host, grant->upstream.port).is_ok());
  ASSERT_TRUE(pg.send_startup(grant->upstream.role, grant->upstream.database).is_ok());
  auto sasl = pg.read_message();
  ASSERT_TRUE(sasl.is_ok());
  ASSERT_EQ(sasl->auth_code(), 10);

  auto start = client_.call(request(
      client_, "scram_start", {{"session_id", sid}, {"mechanisms", sasl->sasl_mechanisms()}}));
  ASSERT_TRUE(start.is_ok());
  ASSERT_EQ((*start)["ok"], true) << start->dump();
  EXPECT_EQ((*start)["mechanism"], "SCRAM-SHA-256");
  ASSERT_TRUE(pg.send_sasl_initial_response("SCRAM-SHA-256", (*start)["client_first"]).is_ok());

  auto server_first = pg.read_message();
  ASSERT_TRUE(server_first.is_ok());
  ASSERT_EQ(server_first->auth_code(), 11);
  auto cont =
      client_.call(request(client_, "scram_continue",
                           {{"session_id", sid}, {"server_first", server_first->sasl_data()}}));
  ASSERT_TRUE(cont.is_ok());
  ASSERT_EQ((*cont)["ok"], true) << cont->dump();
  ASSERT_TRUE(pg.send_sasl_response((*cont)["client_final"]).is_ok());

  auto server_final = pg.read_message();
  ASSERT_TRUE(server_final.is_ok());
  ASSERT_EQ(server_final->auth_code(), 12) << server_final->fields()['M'];
  auto fin = client_.call(request(
      client_, "scram_finish", {{"session_id", sid}, {"server_final", server_final->sasl_data()}}));
  ASSERT_TRUE(fin.is_ok());
  EXPECT_EQ((*fin)["ok"], true) << fin->dump();

  auto ok = pg.read_message();
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ(ok->auth_code(), 0);
  while (true) {
    auto m = pg.read_message();
    ASSERT_TRUE(m.is_ok());
    ASSERT_NE(m->type, 'E') << m->fields()['M'];
    if (m->type == 'Z') break;
  }

  // The audit log has the login and the verified upstream authentication, and no secrets.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string audit = slurp(dir_ + "/state/audit.log");
  EXPECT_NE(audit.find("\"event\":\"authenticate\""), std::string::npos);
  EXPECT_NE(audit.find("\"event\":\"upstream_auth\""), std::string::npos);
  EXPECT_EQ(audit.find(kKeySecret), std::string::npos);
  EXPECT_EQ(audit.find(sandbox_->get("PGW_SCRAM_PASSWORD")), std::string::npos);
  EXPECT_EQ(slurp(dir_ + "/cp.log").find(kKeySecret), std::string::npos);
}

TEST_F(CpServerTest, TamperedServerSignatureFailsScramFinish) {
  std::string sid = session_id();
  ASSERT_EQ(authenticate(client_, sid, kToken)["ok"], true);
  RawPgConnection pg;
  ASSERT_TRUE(pg.connect_tcp(sandbox_->host(), sandbox_->port()).is_ok());
  ASSERT_TRUE(pg.send_startup("app_scram", "demo").is_ok());
  auto sasl = pg.read_message();
  ASSERT_TRUE(sasl.is_ok());
  auto start = client_.call(
      request(client_, "scram_start", {{"session_id", sid}, {"mechanisms", {"SCRAM-SHA-256"}}}));
  ASSERT_TRUE(pg.send_sasl_initial_response("SCRAM-SHA-256", (*start)["client_first"]).is_ok());
  auto sf = pg.read_message();
  auto cont = client_.call(
      request(client_, "scram_continue", {{"session_id", sid}, {"server_first", sf->sasl_data()}}));
  ASSERT_TRUE(pg.send_sasl_response((*cont)["client_final"]).is_ok());
  auto final_msg = pg.read_message();
  ASSERT_EQ(final_msg->auth_code(), 12);
  std::string forged = final_msg->sasl_data();
  forged[2] = forged[2] == 'A' ? 'B' : 'A';
  auto fin = client_.call(
      request(client_, "scram_finish", {{"session_id", sid}, {"server_final", forged}}));
  ASSERT_TRUE(fin.is_ok());
  EXPECT_EQ((*fin)["ok"], false);
  EXPECT_EQ((*fin)["error"]["code"], "scram_failed");
  EXPECT_EQ((*fin)["error"]["sqlstate"], "28000");
}

TEST_F(CpServerTest, BadServiceKeyIsRejectedWith28P01) {
  json r = authenticate(client_, session_id(), "pgw_sk_agent_wrong-secret");
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["sqlstate"], "28P01");
  EXPECT_EQ(r["error"]["code"], "bad_service_key");
  json unknown = authenticate(client_, session_id(), "pgw_sk_nobody_k9-Zq2mP4vX7-service-secret");
  EXPECT_EQ(unknown["error"]["code"], "unknown_service_key");
  json jwt = authenticate(client_, session_id(), "eyJhbGciOiJSUzI1NiJ9.e30.sig");
  EXPECT_EQ(jwt["error"]["sqlstate"], "28P01");
  json target =
      client_
          .call(request(client_, "authenticate",
                        {{"session_id", session_id()}, {"token", kToken}, {"target", "nope"}}))
          .value();
  EXPECT_EQ(target["error"]["sqlstate"], "3D000");
}

TEST_F(CpServerTest, ScramStepsNeedAnAuthenticatedSessionOfThisConnection) {
  std::string sid = session_id();
  ASSERT_EQ(authenticate(client_, sid, kToken)["ok"], true);
  BlockingClient other;
  ASSERT_TRUE(other.connect(dir_ + "/cp.sock").is_ok());
  ASSERT_TRUE(other.hello().is_ok());
  auto r = other.call(
      request(other, "scram_start", {{"session_id", sid}, {"mechanisms", {"SCRAM-SHA-256"}}}));
  EXPECT_EQ((*r)["error"]["code"], "unknown_session");
  auto none = client_.call(request(client_, "scram_start",
                                   {{"session_id", sid}, {"mechanisms", {"SCRAM-SHA-256-PLUS"}}}));
  EXPECT_EQ((*none)["error"]["code"], "no_supported_mechanism");
}

TEST_F(CpServerTest, AnalyseDeniesWritesUnderAReadOnlyPolicyAndPlansEmptyResults) {
  std::string sid = session_id();
  ASSERT_EQ(authenticate(client_, sid, kToken)["ok"], true);
  auto r = client_.call(
      request(client_, "analyse",
              {{"session_id", sid}, {"sql", "delete from crm.customers"}, {"shape_key", "00ff"}}));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ((*r)["ok"], true);
  EXPECT_EQ((*r)["verdict"], "deny");
  auto m =
      client_.call(request(client_, "mask_plan", {{"session_id", sid}, {"fields", json::array()}}));
  EXPECT_EQ((*m)["ok"], true) << m->dump();
  EXPECT_EQ((*m)["plan"]["columns"], json::array());
}

TEST_F(CpServerTest, RecordRequestIsAnsweredOnlyOnceTheStatementRecordIsQueued) {
  std::string sid = session_id();
  json auth = authenticate(client_, sid, kToken);
  ASSERT_EQ(auth["ok"], true);
  EXPECT_EQ(auth["policy"]["recording_required"], true) << auth.dump();
  json stmt = {{"session_id", sid},  {"kind", "statement"}, {"sql", "select 'rec-req-1'"},
               {"verdict", "allow"}, {"rule", ""},          {"source", "cache"}};
  // No session_start yet: no recording is open, so nothing can be recorded and the statement
  // must not run.
  auto early = client_.call(request(client_, "record", stmt));
  ASSERT_TRUE(early.is_ok());
  EXPECT_EQ((*early)["ok"], false);
  EXPECT_EQ((*early)["error"]["code"], "recording_backpressure") << early->dump();
  EXPECT_EQ((*early)["error"]["sqlstate"], "53000");

  auto event = [&](json ev) {
    ev["type"] = "event";
    ev["session_id"] = sid;
    std::string frame;
    ASSERT_TRUE(protocol::append_message(frame, ev).is_ok());
    ASSERT_TRUE(client_.send_raw(frame).is_ok());
  };
  event({{"kind", "session_start"}, {"tls", false}});
  auto ok = client_.call(request(client_, "record", stmt));
  ASSERT_TRUE(ok.is_ok());
  EXPECT_EQ((*ok)["ok"], true) << ok->dump();
  json rows = stmt;
  rows["kind"] = "rows";
  auto bad = client_.call(request(client_, "record", rows));
  EXPECT_EQ((*bad)["error"]["code"], "bad_request") << bad->dump();
  auto stranger = stmt;
  stranger["session_id"] = "sess-nobody";
  auto unknown = client_.call(request(client_, "record", stranger));
  EXPECT_EQ((*unknown)["error"]["code"], "unknown_session") << unknown->dump();
  event({{"kind", "session_end"}, {"reason", "test"}});

  // The recording holds session_start, the recorded statement, session_end — in that order.
  std::string path = dir_ + "/state/recordings/" + sid + ".jsonl";
  std::string text;
  for (int i = 0; i < 100 && text.find("session_end") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    text = slurp(path);
  }
  size_t start = text.find("\"kind\":\"session_start\"");
  size_t rec = text.find("rec-req-1");
  size_t end = text.find("\"kind\":\"session_end\"");
  ASSERT_NE(start, std::string::npos) << text;
  ASSERT_NE(rec, std::string::npos) << text;
  ASSERT_NE(end, std::string::npos) << text;
  EXPECT_LT(start, rec);
  EXPECT_LT(rec, end);
  EXPECT_EQ(text.find("rec-req-1", rec + 1), std::string::npos) << "recorded twice:\n" << text;
}

TEST_F(CpServerTest, PendingApprovalNeverBlocksAuthenticateAnswersOutOfOrder) {
  std::string sid = session_id();
  ASSERT_EQ(authenticate(client_, sid, kToken)["ok"], true);
  // Several approvals (policy timeout 60 s: nobody decides them while the test runs) ahead of
  // several authenticates on one connection.
  std::vector<uint64_t> approval_ids, auth_ids;
  for (int i = 0; i < 6; ++i) {
    auto id = client_.send(request(
        client_, "approval", {{"session_id", sid}, {"sql", "select 1"}, {"rule", "approve-all"}}));
    approval_ids.push_back(*id);
  }
  for (int i = 0; i < 6; ++i) {
    protocol::AuthenticateRequest a{session_id(), kToken, "agent", "demo", "", false};
    auth_ids.push_back(
        *client_.send(a.to_json(client_.next_id(), protocol::now_unix_ms() + 60000)));
  }
  std::vector<uint64_t> order;
  std::map<uint64_t, json> answers;
  // Receives the next answer; cp's events to the dp (approval_waiting: which request each
  // held statement waits for) are not answers.
  auto receive = [&] {
    for (;;) {
      auto r = client_.receive(60000);
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      if (r->value("type", "") == "event") {
        EXPECT_EQ(r->value("kind", ""), "approval_waiting") << *r;
        continue;
      }
      order.push_back((*r)["id"]);
      answers[(*r)["id"]] = *r;
      return;
    }
  };
  // All authenticates come back while every approval is still pending.
  for (int i = 0; i < 6; ++i) receive();
  EXPECT_EQ(std::set<uint64_t>(order.begin(), order.end()),
            std::set<uint64_t>(auth_ids.begin(), auth_ids.end()));
  for (uint64_t id : auth_ids) EXPECT_EQ(answers[id]["ok"], true);
  // The session ends: its pending approvals are abandoned and answered (deny), in any order.
  json end = {{"type", "event"}, {"session_id", sid}, {"kind", "session_end"}, {"reason", "test"}};
  std::string frame;
  ASSERT_TRUE(protocol::append_message(frame, end).is_ok());
  ASSERT_TRUE(client_.send_raw(frame).is_ok());
  for (int i = 0; i < 6; ++i) receive();
  for (uint64_t id : approval_ids) {
    EXPECT_EQ(answers[id]["ok"], true) << answers[id].dump();
    EXPECT_EQ(answers[id]["verdict"], "deny") << answers[id].dump();
  }
}

TEST_F(CpServerTest, PastDeadlineAnsweredWithDeadlineExceeded) {
  auto r = client_.call(
      request(client_, "authenticate",
              {{"session_id", session_id()}, {"token", kToken}, {"target", "demo"}}, -1));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ((*r)["ok"], false);
  EXPECT_EQ((*r)["error"]["code"], "deadline_exceeded");
  EXPECT_EQ((*r)["error"]["sqlstate"], "57014");
  // An approval whose deadline comes before the policy's timeout expires at the deadline.
  std::string sid = session_id();
  ASSERT_EQ(authenticate(client_, sid, kToken)["ok"], true);
  auto t0 = std::chrono::steady_clock::now();
  auto a =
      client_.call(request(client_, "approval", {{"session_id", sid}, {"sql", "select 1"}}, 300));
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ((*a)["verdict"], "deny");
  EXPECT_EQ((*a)["reason"], "timed out");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900));
}

TEST_F(CpServerTest, UnknownTypeGetsAnErrorAndTheConnectionStays) {
  auto r = client_.call(request(client_, "teleport", {{"session_id", "x"}}));
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ((*r)["error"]["code"], "unknown_type");
  auto bad = client_.call(request(client_, "authenticate", {{"session_id", 5}}));
  EXPECT_EQ((*bad)["error"]["code"], "bad_request");
  EXPECT_EQ(authenticate(client_, session_id(), kToken)["ok"], true);
}

TEST_F(CpServerTest, MalformedFramesAreAnsweredAndClosedWhileOthersKeepWorking) {
  struct Case {
    const char* name;
    std::string bytes;
  };
  std::string not_json;
  ASSERT_TRUE(protocol::append_frame(not_json, "{not json").is_ok());
  std::string no_id;
  ASSERT_TRUE(protocol::append_frame(no_id, R"({"type":"analyse"})").is_ok());
  for (const Case& c : {Case{"oversized length", std::string("\x7f\xff\xff\xff{}", 6)},
                        Case{"zero length", std::string("\0\0\0\0", 4)},
                        Case{"invalid json", not_json}, Case{"missing id", no_id}}) {
    BlockingClient bad;
    ASSERT_TRUE(bad.connect(dir_ + "/cp.sock").is_ok());
    ASSERT_TRUE(bad.hello().is_ok());
    ASSERT_TRUE(bad.send_raw(c.bytes).is_ok());
    auto err = bad.receive(5000);
    ASSERT_TRUE(err.is_ok()) << c.name << ": " << err.status().to_string();
    EXPECT_EQ((*err)["ok"], false) << c.name;
    EXPECT_EQ((*err)["error"]["code"], "bad_frame") << c.name;
    auto closed = bad.receive(5000);
    EXPECT_FALSE(closed.is_ok()) << c.name;
    EXPECT_EQ(closed.status().code(), StatusCode::kUnavailable) << c.name;
    // The connection opened before keeps being served.
    EXPECT_EQ(authenticate(client_, session_id(), kToken)["ok"], true) << c.name;
  }
  BlockingClient early;
  ASSERT_TRUE(early.connect(dir_ + "/cp.sock").is_ok());
  auto r = early.call(request(early, "authenticate", {{"session_id", "x"}}));
  EXPECT_EQ((*r)["error"]["code"], "hello_required");
  BlockingClient future;
  ASSERT_TRUE(future.connect(dir_ + "/cp.sock").is_ok());
  auto v2 = future.call(json{{"id", 1}, {"type", "hello"}, {"protocol", 2}});
  EXPECT_EQ((*v2)["error"]["code"], "unsupported_protocol");
}

TEST_F(CpServerTest, SighupReloadRejectsInvalidConfigAndAppliesValidOne) {
  json broken = base_config();
  broken["policies"][0]["masks"] = json::array({{{"name", "*ssn*"}, {"function", "blur"}}});
  write_config(broken);
  cp_->signal(SIGHUP);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  BlockingClient c1;
  ASSERT_TRUE(c1.connect(dir_ + "/cp.sock").is_ok());
  EXPECT_EQ(*c1.hello(), policy_version_);
  std::string log = slurp(dir_ + "/cp.log");
  EXPECT_NE(log.find("$.policies[0].masks[0].function: unknown mask function \"blur\""),
            std::string::npos)
      << log;
  EXPECT_NE(slurp(dir_ + "/state/audit.log").find("\"decision\":\"rejected\""), std::string::npos);
  EXPECT_EQ(authenticate(c1, session_id(), kToken)["ok"], true);

  write_config(base_config());
  cp_->signal(SIGHUP);
  auto ev = client_.receive(5000);
  ASSERT_TRUE(ev.is_ok()) << ev.status().to_string();
  EXPECT_EQ((*ev)["type"], "event");
  EXPECT_EQ((*ev)["kind"], "policy_version");
  uint64_t new_version = (*ev)["policy_version"];
  EXPECT_GT(new_version, policy_version_);
  BlockingClient c2;
  ASSERT_TRUE(c2.connect(dir_ + "/cp.sock").is_ok());
  EXPECT_EQ(*c2.hello(), new_version);
  json grant = authenticate(c2, session_id(), kToken);
  EXPECT_EQ(grant["policy"]["version"], new_version);
}

TEST(CpProcessTest, InvalidConfigRefusesToStartWithExitCode2) {
  char tmpl[] = "/tmp/pgw-cp-bad-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/bad.json") << R"({"listeners":{"dataplane":{"port":0}},"extra":1})";
  CpProcess cp;
  ASSERT_TRUE(cp.start(dir + "/bad.json", dir + "/log").is_ok());
  EXPECT_EQ(cp.wait_exit(10000), 2);
  std::string log = slurp(dir + "/log");
  EXPECT_NE(log.find("$.listeners.dataplane.port: must be between 1 and 65535"), std::string::npos)
      << log;
  EXPECT_NE(log.find("$.extra: unknown key \"extra\""), std::string::npos) << log;
  EXPECT_NE(log.find("$.control_plane: is required"), std::string::npos) << log;
  std::string cmd = "rm -rf '" + dir + "'";
  (void)!system(cmd.c_str());
}

TEST(CpProcessTest, SigtermStopsCleanlyAndRemovesTheSocket) {
  char tmpl[] = "/tmp/pgw-cp-term-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  json cfg = {
      {"listeners", {{"dataplane", {{"address", "127.0.0.1"}, {"loopback_only", true}}}}},
      {"control_plane", {{"socket", dir + "/cp.sock"}, {"state_dir", dir + "/state"}}},
      {"identity", {{"service_keys", json::array()}}},
      {"targets", json::array()},
      {"policies",
       {{{"name", "p"}, {"groups", {"g"}}, {"targets", {"*"}}, {"allowed_kinds", {"select"}}}}}};
  std::ofstream(dir + "/c.json") << cfg.dump();
  CpProcess cp;
  ASSERT_TRUE(cp.start(dir + "/c.json", dir + "/log").is_ok());
  bool up = false;
  for (int i = 0; i < 500 && !up; ++i) {
    BlockingClient c;
    up = c.connect(dir + "/cp.sock").is_ok() && c.hello().is_ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(up) << slurp(dir + "/log");
  BlockingClient held;  // a connected dp must not keep cp from stopping
  ASSERT_TRUE(held.connect(dir + "/cp.sock").is_ok());
  EXPECT_EQ(cp.stop(), 0);
  struct stat st;
  EXPECT_NE(stat((dir + "/cp.sock").c_str(), &st), 0);
  EXPECT_NE(slurp(dir + "/state/audit.log").find("\"event\":\"shutdown\""), std::string::npos);
  std::string cmd = "rm -rf '" + dir + "'";
  (void)!system(cmd.c_str());
}

}  // namespace
}  // namespace pgwarden

namespace pgwarden {
namespace {

// reregister (docs/protocol.md): only an untampered ticket of that very session, and never
// for a session still live on another connection. (A successful re-registration after a real
// cp restart is in gateway_revoke_test.)
TEST_F(CpServerTest, ReregisterRefusesForgedForeignAndStillLiveTickets) {
  std::string sid = session_id();
  json auth = authenticate(client_, sid, kToken);
  ASSERT_EQ(auth["ok"], true) << auth.dump();
  ASSERT_TRUE(auth.contains("ticket") && auth["ticket"].is_string()) << auth.dump();
  std::string ticket = auth["ticket"];
  std::string other_sid = session_id();
  json other = authenticate(client_, other_sid, kToken);
  ASSERT_EQ(other["ok"], true);

  BlockingClient dp2;
  ASSERT_TRUE(dp2.connect(dir_ + "/cp.sock").is_ok());
  ASSERT_TRUE(dp2.hello().is_ok());
  auto call = [&](const std::string& session, const std::string& t) {
    auto r = dp2.call(request(dp2, "reregister", {{"session_id", session}, {"ticket", t}}));
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : json();
  };
  // One changed character anywhere in the payload breaks the MAC.
  std::string forged = ticket;
  forged[10] = forged[10] == 'x' ? 'y' : 'x';
  json r = call(sid, forged);
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["code"], "bad_ticket");
  EXPECT_EQ(r["error"]["sqlstate"], "57P01");
  // Another session's ticket.
  r = call(sid, other["ticket"]);
  EXPECT_EQ(r["error"]["code"], "bad_ticket") << r.dump();
  r = call(sid, "");
  EXPECT_EQ(r["error"]["code"], "bad_ticket") << r.dump();
  // The right ticket, but the session is live on the first connection.
  r = call(sid, ticket);
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"]["code"], "bad_request") << r.dump();
  // None of this gave dp2 the session.
  auto a = dp2.call(
      request(dp2, "analyse", {{"session_id", sid}, {"sql", "select 1"}, {"shape_key", "00"}}));
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ((*a)["error"]["code"], "unknown_session") << a->dump();
}

}  // namespace
}  // namespace pgwarden
