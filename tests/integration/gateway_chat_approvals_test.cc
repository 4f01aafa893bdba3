// Chat approvals, live (docs/approvals.md, "Chat approvals"): a real psql's statement is held
// by pgwarden-dp; pgwarden-cp POSTs the interactive message to a fake Slack
// (tests/integration/fake_chat.py, a separate process) which clicks "Approve" the way Slack
// does — a signed form POST over real TLS to cp's HTTPS listener (POST /api/v1/chat/slack) —
// after a bad signature, an old timestamp and an unmapped user, and replays the genuine click
// afterwards. Checked: each forgery is refused (401/401/403/409) and audited, the genuine
// click approves, psql finishes with the change in the database, the reviewer identity and
// channel are in the audit log, the time from the statement to psql's result is under the
// issue's goal of 10 s (printed and asserted), and every step of the request is in the audit
// log in order: requested, chat message sent, click verified, approved, statement run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/source_root.h"
#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/test_pki.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

class GatewayChatApprovalsTest : public SharedGatewayTest<GatewayChatApprovalsTest> {
 public:
  static GatewayOptions gateway_options() {
    char tmpl[] = "/tmp/pgw-chat-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    EXPECT_TRUE(make_test_pki(dir_)) << "openssl failed, see " << dir_ << "/openssl.log";
    {
      std::ofstream(dir_ + "/signing-secret") << "8f742231b10e8888abcd99yyyzzz85a5-test\n";
      ::chmod((dir_ + "/signing-secret").c_str(), 0600);
    }
    https_port_ = free_tcp_port();
    std::string port_file = dir_ + "/chat.port";
    auto pid = spawn_logged(
        {"/usr/bin/python3", std::string(PGW_SOURCE_ROOT) + "/tests/integration/fake_chat.py",
         port_file, results_file(), base() + "/api/v1/chat/slack", dir_ + "/ca.crt",
         dir_ + "/signing-secret", "UALICE", "approve"},
        dir_ + "/chat.log");
    EXPECT_TRUE(pid.is_ok());
    chat_pid_ = pid.is_ok() ? *pid : -1;
    EXPECT_TRUE(eventually([&] { return fs::exists(port_file); }, 30000)) << "fake chat";
    int chat_port = 0;
    std::ifstream(port_file) >> chat_port;
    json http = {{"listen", "127.0.0.1:" + std::to_string(https_port_)},
                 {"tls_cert_file", dir_ + "/server.crt"},
                 {"tls_key_file", dir_ + "/server.key"},
                 {"public_url", base()},
                 {"console_dir", std::string(PGW_SOURCE_ROOT) + "/controlplane/console"},
                 {"threads", 2},
                 {"role_groups", {{"reviewer", {"reviewers"}}}}};
    json patch = {
        {"approvals",
         {{"chat",
           {{"webhook_url", "http://127.0.0.1:" + std::to_string(chat_port) + "/hook"},
            {"signing_secret_file", dir_ + "/signing-secret"},
            {"users",
             {{"UALICE", {{"identity", "alice@example.com"}, {"groups", {"reviewers"}}}}}}}}}}};
    GatewayOptions o;
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.control_plane_http_json = http.dump();
    o.config_merge_patch = patch.dump();
    return o;
  }
  static void TearDownTestSuite() {
    SharedGatewayTest<GatewayChatApprovalsTest>::TearDownTestSuite();
    if (chat_pid_ > 0) {
      ::kill(chat_pid_, SIGTERM);
      ::waitpid(chat_pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

 protected:
  static std::string base() { return "https://127.0.0.1:" + std::to_string(https_port_); }
  static std::string results_file() { return dir_ + "/results.jsonl"; }
  // The fake chat's record of its clicks on request `id` ({} until it finished them).
  static json clicks_for(const std::string& id) {
    std::ifstream in(results_file());
    for (std::string line; std::getline(in, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("approval_id", "") == id && j.contains("replay")) return j;
    }
    return json::object();
  }
  static std::vector<json> chat_audit() {
    std::vector<json> out;
    std::istringstream lines(gw_->audit_log());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("event", "") == "chat_callback") out.push_back(std::move(j));
    }
    return out;
  }

  static inline std::string dir_;
  static inline int https_port_ = 0;
  static inline pid_t chat_pid_ = -1;
};

TEST_F(GatewayChatApprovalsTest, HeldPsqlStatementIsApprovedByASignedChatClick) {
  auto r = gw_->pg().psql(
      "create table public.c_chat (k int primary key, v text); insert into public.c_chat "
      "values (1, 'orig'), (2, 'orig'); alter table public.c_chat owner to app_scram");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto t0 = std::chrono::steady_clock::now();
  PsqlProcess psql(gw_->conninfo(), "update public.c_chat set v = 'chat'",
                   gw_->dir() + "/chat-psql.log");
  ASSERT_EQ(psql.wait(60000), 0) << psql.output() << "\n" << gw_->cp_log();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "chat approval: statement sent -> decided -> psql done in " << seconds
            << " s (goal < 10 s)\n";
  // The goal: approved from chat in under 10 seconds from the request (the fake
  // reviewer clicks as soon as the message arrives, after its three forged clicks).
  EXPECT_LT(seconds, 10);
  EXPECT_EQ(gw_->pg().psql("select string_agg(v, ',' order by k) from public.c_chat").value(),
            "chat,chat\n");

  // The notice named the request and its console page.
  std::string out = psql.output();
  size_t at = out.find("waiting for approval ");
  ASSERT_NE(at, std::string::npos) << out;
  std::string id = out.substr(at + 21, 16);
  EXPECT_NE(out.find(base() + "/approvals/" + id), std::string::npos) << out;

  json clicks;
  ASSERT_TRUE(eventually([&] { return !(clicks = clicks_for(id)).empty(); })) << gw_->cp_log();
  EXPECT_EQ(clicks["bad_signature"], 401);
  EXPECT_EQ(clicks["old_timestamp"], 401);
  EXPECT_EQ(clicks["unmapped_user"], 403);
  EXPECT_EQ(clicks["genuine"], 200);
  EXPECT_EQ(clicks["replay"], 409);
  EXPECT_NE(clicks["answer"].get<std::string>().find("Approved by alice@example.com"),
            std::string::npos)
      << clicks["answer"];
  std::cout << "chat approval: webhook received -> decision answered in "
            << (clicks["decided"].get<double>() - clicks["received"].get<double>()) << " s\n";

  // Who, what, why: every click audited; the decision names the reviewer and the channel.
  std::vector<std::string> reasons;
  for (const json& a : chat_audit()) {
    if (a.value("approval_id", "") == id || a.value("decision", "") == "refused") {
      reasons.push_back(a.value("decision", "") + ": " + a.value("reason", ""));
    }
  }
  auto has = [&](const std::string& s) {
    for (const auto& r : reasons) {
      if (r.find(s) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("refused: bad request signature")) << json(reasons);
  EXPECT_TRUE(has("refused: request timestamp outside")) << json(reasons);
  EXPECT_TRUE(has("refused: chat user UNKNOWN1 is not mapped")) << json(reasons);
  EXPECT_TRUE(has("refused: replayed callback")) << json(reasons);
  EXPECT_TRUE(has("ok: approved in chat by ualice (UALICE)")) << json(reasons);
  bool approved = false;
  std::istringstream lines(gw_->audit_log());
  for (std::string line; std::getline(lines, line);) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.value("event", "") == "approval_approved" &&
        j.value("approval_id", "") == id) {
      approved = j.value("decider", "") == "alice@example.com" && j.value("via", "") == "chat";
    }
  }
  EXPECT_TRUE(approved) << gw_->audit_log();

  // Every step of the request in the audit log, in order, with who, what and why: created
  // (the agent, its statement and why it needs approval), the chat message sent, the click
  // verified (the chat user and the reviewer it maps to), the decision, the statement run.
  std::vector<std::string> trail;
  std::istringstream all(gw_->audit_log());
  for (std::string line; std::getline(all, line);) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_object() || j.value("approval_id", "") != id) continue;
    std::string event = j.value("event", "");
    if (event == "approval_requested") {
      EXPECT_EQ(j.value("identity", ""), "svc:agent1") << j;
      EXPECT_EQ(j.value("sql", ""), "update public.c_chat set v = 'chat'") << j;
      EXPECT_FALSE(j.value("reason", "").empty()) << j;
    } else if (event == "chat_callback") {
      if (j.value("decision", "") != "ok") continue;  // the forgeries, checked above
      EXPECT_NE(j.dump().find("alice@example.com"), std::string::npos) << j;
    } else if (event == "approval_approved") {
      EXPECT_EQ(j.value("decider", ""), "alice@example.com") << j;
    } else if (event == "statement") {
      EXPECT_EQ(j.value("identity", ""), "svc:agent1") << j;
      // Its record before it ran (source approval), then its completion with the row count.
      if (j.value("phase", "") == "end") {
        EXPECT_EQ(j.value("rows", -1), 2) << j;
        EXPECT_TRUE(j.value("executed", false)) << j;
        event = "statement_end";
      } else {
        EXPECT_EQ(j.value("source", ""), "approval") << j;
      }
    } else if (event != "approval_chat_sent") {
      continue;
    }
    trail.push_back(event);
  }
  // The decision, the click's record (it carries the outcome) and the released statement's
  // record are written by different threads within the same millisecond: their order in the
  // file is not fixed. The request comes first, the statement's completion last.
  ASSERT_FALSE(trail.empty()) << gw_->audit_log();
  EXPECT_EQ(trail.front(), "approval_requested") << gw_->audit_log();
  EXPECT_EQ(trail.back(), "statement_end") << gw_->audit_log();
  std::sort(trail.begin(), trail.end());
  EXPECT_EQ(trail, (std::vector<std::string>{"approval_approved", "approval_chat_sent",
                                             "approval_requested", "chat_callback", "statement",
                                             "statement_end"}))
      << gw_->audit_log();
  EXPECT_EQ(gw_->audit_log().find("8f742231b10e8888abcd99yyyzzz85a5-test"), std::string::npos);
  EXPECT_EQ(gw_->cp_log().find("8f742231b10e8888abcd99yyyzzz85a5-test"), std::string::npos);
}

}  // namespace
}  // namespace pgwarden::testing
