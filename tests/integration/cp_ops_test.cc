// Control-plane operations settings end to end.
//
// The approval webhook over real HTTPS, wired as pgwarden-cp wires it: a config with
// $.approvals.webhook_url = https://127.0.0.1:PORT/..., a throwaway CA
// (tests/integration/test_pki.h), python3's TLS server (tests/integration/
// https_hook_server.py) as the receiver, and an in-process ControlPlane whose ApprovalStore
// creates and decides requests. A receiver whose certificate the configured CA did not sign,
// or that is reached by a name its certificate does not carry, gets nothing: the failure is
// counted, logged and audited while the approval is still created and decided at once.
//
// The admin socket's mode and group, applied by the real pgwarden-cp binary, and a bad
// admin_socket_mode refused at config load with its JSON path and exit code 2.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "common/source_root.h"
#include "controlplane/server/control_plane.h"
#include "tests/integration/cp_process.h"
#include "tests/integration/test_pki.h"

namespace pgwarden {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <typename F>
bool eventually(F f, std::chrono::milliseconds limit = 10000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

// The smallest config pgwarden-cp starts with, everything under `dir`: one service key, one
// target (never contacted here), one policy whose deletes need approval, a file audit sink.
json minimal_config(const fs::path& dir) {
  json c = pgwarden::testing::base_cp_config(dir.string(), "cp-ops-test-service-key-0123456789");
  c["policies"] = {{{"name", "agents"},
                    {"groups", {"agents"}},
                    {"targets", {"demo"}},
                    {"allowed_kinds", {"select"}},
                    {"approve_kinds", {"delete"}},
                    {"approvals", {{"approver_groups", {"reviewers"}}, {"timeout_s", 60}}}}};
  c["audit"] = {{"sinks", {{{"type", "file"}, {"path", (dir / "audit.log").string()}}}}};
  return c;
}

class WebhookHttpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgw-webhook-https.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "received");
    std::string d = dir_.string();
    ASSERT_TRUE(pgwarden::testing::make_test_pki(d))
        << "openssl CLI failed; see " << d << "/openssl.log";
    std::string script = std::string(PGW_SOURCE_ROOT) + "/tests/integration/https_hook_server.py";
    std::string port_file = d + "/port", cert = d + "/server.crt", key = d + "/server.key",
                out = d + "/received";
    server_pid_ = fork();
    if (server_pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive a crashed test
      execlp("python3", "python3", script.c_str(), port_file.c_str(), cert.c_str(), key.c_str(),
             out.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_GT(server_pid_, 0);
    ASSERT_TRUE(eventually([&] { return fs::exists(port_file); })) << "HTTPS server did not start";
    port_ = std::stoi(read_file(port_file));
    {
      std::ofstream token(dir_ / "webhook.token");
      token << "Bearer hook-token-0123456789\n";
    }
    ::chmod((dir_ / "webhook.token").c_str(), 0600);
  }

  void TearDown() override {
    if (cp_) cp_->stop();
    cp_.reset();
    if (server_pid_ > 0) {
      kill(server_pid_, SIGTERM);
      waitpid(server_pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Opens a ControlPlane from a real config file whose webhook goes to `url`, trusting
  // `ca_file`.
  void open_control_plane(const std::string& url, const std::string& ca_file) {
    json cfg = minimal_config(dir_);
    cfg["approvals"] = {{"webhook_url", url},
                        {"webhook_ca_file", ca_file},
                        {"webhook_timeout_ms", 3000},
                        {"webhook_connect_timeout_ms", 1000},
                        {"webhook_authorization_file", (dir_ / "webhook.token").string()}};
    std::ofstream(dir_ / "pgwarden.json") << cfg.dump(2);
    auto store = std::make_unique<config::ConfigStore>((dir_ / "pgwarden.json").string());
    auto loaded = store->reload();
    ASSERT_TRUE(loaded.ok()) << loaded.error_text();
    auto cp = server::ControlPlane::open(std::move(store));
    ASSERT_TRUE(cp.is_ok()) << cp.status().to_string();
    cp_ = std::move(cp).value();
  }

  std::string hook_url(const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(port_) + "/hooks/pgwarden";
  }

  approvals::ApprovalRequest create_request() {
    approvals::NewApprovalRequest r;
    r.session_id = "s1";
    r.identity = "agent-7";
    r.groups = {"agents"};
    r.target = "demo";
    r.sql = "DELETE FROM crm.orders WHERE id = 42";
    r.rule = "approve_kinds";
    r.settings.approver_groups = {"reviewers"};
    r.settings.timeout_seconds = 60;
    auto created = cp_->approvals().create(r);
    EXPECT_TRUE(created.is_ok()) << created.status().to_string();
    return created.is_ok() ? *created : approvals::ApprovalRequest{};
  }

  // Creating and deciding a request takes well under the webhook's 3 s timeout even when
  // every delivery fails: the webhook is not on the decision path.
  void expect_decision_not_blocked() {
    auto start = std::chrono::steady_clock::now();
    approvals::ApprovalRequest req = create_request();
    ASSERT_FALSE(req.id.empty());
    auto decided = cp_->approvals().decide(
        req.id, {.approve = true, .decider = "alice", .decider_groups = {"reviewers"}});
    ASSERT_TRUE(decided.is_ok()) << decided.status().to_string();
    EXPECT_EQ(decided->state, approvals::ApprovalState::kApproved);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);
    last_id_ = req.id;
  }

  std::vector<json> audit_events(const std::string& event) {
    cp_->audit().flush();
    std::vector<json> out;
    std::istringstream lines(read_file(dir_ / "audit.log"));
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("event", "") == event) out.push_back(j);
    }
    return out;
  }

  fs::path dir_;
  pid_t server_pid_ = -1;
  int port_ = 0;
  std::unique_ptr<server::ControlPlane> cp_;
  std::string last_id_;
};

TEST_F(WebhookHttpsTest, NewRequestArrivesAsJsonOverVerifiedTlsWithAuthorization) {
  ASSERT_NO_FATAL_FAILURE(open_control_plane(hook_url(), (dir_ / "ca.crt").string()));
  approvals::ApprovalRequest req = create_request();
  ASSERT_TRUE(eventually([&] { return fs::exists(dir_ / "received" / "1.json"); }));
  json got = json::parse(read_file(dir_ / "received" / "1.json"));
  EXPECT_EQ(got["path"], "/hooks/pgwarden");
  EXPECT_EQ(got["headers"]["Content-Type"], "application/json");
  EXPECT_EQ(got["headers"]["Authorization"], "Bearer hook-token-0123456789");
  json body = json::parse(got["body"].get<std::string>());
  EXPECT_EQ(body["event"], "approval_requested");
  EXPECT_EQ(body["id"], req.id);
  EXPECT_EQ(body["sql"], "DELETE FROM crm.orders WHERE id = 42");
  EXPECT_EQ(body["identity"], "agent-7");
  EXPECT_EQ(body["approve_command"], "pgwardenctl approvals approve " + req.id);
  ASSERT_NE(cp_->webhook(), nullptr);
  EXPECT_TRUE(eventually([&] { return cp_->webhook()->webhook_sent() == 1; }));
  EXPECT_EQ(cp_->webhook()->webhook_failed(), 0u);
  EXPECT_TRUE(audit_events("approval_webhook_failed").empty());
  // The delivery is a step of the request's audit trail.
  ASSERT_TRUE(eventually([&] { return !audit_events("approval_webhook_sent").empty(); }));
  EXPECT_EQ(audit_events("approval_webhook_sent")[0]["approval_id"], req.id);
  // The token never reaches the audit log.
  EXPECT_EQ(read_file(dir_ / "audit.log").find("hook-token"), std::string::npos);
}

TEST_F(WebhookHttpsTest, UntrustedCertificateFailsIsAuditedAndDoesNotBlockTheDecision) {
  ASSERT_NO_FATAL_FAILURE(open_control_plane(hook_url(), (dir_ / "rogue.crt").string()));
  expect_decision_not_blocked();
  ASSERT_TRUE(eventually([&] { return !audit_events("approval_webhook_failed").empty(); }));
  json failed = audit_events("approval_webhook_failed")[0];
  EXPECT_EQ(failed["approval_id"], last_id_);
  EXPECT_EQ(failed["decision"], "failed");
  EXPECT_NE(failed["reason"].get<std::string>().find("certificate verification failed"),
            std::string::npos)
      << failed.dump();
  EXPECT_FALSE(fs::exists(dir_ / "received" / "1.json"));
  EXPECT_EQ(read_file(dir_ / "audit.log").find("hook-token"), std::string::npos);
  EXPECT_EQ(cp_->webhook()->webhook_failed(), 1u);
  EXPECT_EQ(cp_->webhook()->webhook_sent(), 0u);
  EXPECT_TRUE(audit_events("approval_webhook_sent").empty());
}

TEST_F(WebhookHttpsTest, WrongHostNameFailsIsAuditedAndDoesNotBlockTheDecision) {
  // The right CA, but "localhost" is not in the certificate (it names IP 127.0.0.1 only).
  ASSERT_NO_FATAL_FAILURE(open_control_plane(hook_url("localhost"), (dir_ / "ca.crt").string()));
  expect_decision_not_blocked();
  ASSERT_TRUE(eventually([&] { return !audit_events("approval_webhook_failed").empty(); }));
  json failed = audit_events("approval_webhook_failed")[0];
  EXPECT_EQ(failed["approval_id"], last_id_);
  EXPECT_NE(failed["reason"].get<std::string>().find("TLS handshake with localhost failed"),
            std::string::npos)
      << failed.dump();
  EXPECT_FALSE(fs::exists(dir_ / "received" / "1.json"));
  EXPECT_EQ(cp_->webhook()->webhook_failed(), 1u);
}

// Runs `argv` (argv[0] is the binary path), capturing stderr; returns the exit status.
int run_capture(const std::vector<std::string>& args, std::string* err) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], 2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  char buf[4096];
  for (ssize_t n; (n = read(pipe_fds[0], buf, sizeof(buf))) > 0;) err->append(buf, n);
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class CpAdminSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bin = std::getenv("PGW_CP_BIN");
    ASSERT_NE(bin, nullptr) << "PGW_CP_BIN not set (run through meson test)";
    bin_ = bin;
    char tmpl[] = "/tmp/pgw-cp-ops.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (cp_pid_ > 0) {
      kill(cp_pid_, SIGTERM);
      waitpid(cp_pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string write_config(const std::string& mode, const std::string& group) {
    json cfg = minimal_config(dir_);
    cfg["control_plane"]["admin_socket"] = (dir_ / "admin.sock").string();
    cfg["control_plane"]["admin_socket_mode"] = mode;
    cfg["control_plane"]["admin_socket_group"] = group;
    std::string path = (dir_ / "pgwarden.json").string();
    std::ofstream(path) << cfg.dump(2);
    return path;
  }

  std::string bin_;
  fs::path dir_;
  pid_t cp_pid_ = -1;
};

TEST_F(CpAdminSocketTest, RunningCpCreatesTheSocketWithTheConfiguredModeAndGroup) {
  std::string config = write_config("0640", "daemon");
  cp_pid_ = fork();
  if (cp_pid_ == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    execl(bin_.c_str(), "pgwarden-cp", "--config", config.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(cp_pid_, 0);
  std::string sock = (dir_ / "admin.sock").string();
  ASSERT_TRUE(eventually([&] { return ::access(sock.c_str(), F_OK) == 0; }))
      << "pgwarden-cp did not create its admin socket";
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_gid, config::lookup_group("daemon").value());
}

TEST_F(CpAdminSocketTest, ModeOpenToOthersFailsConfigLoadWithPathAndExitCode2) {
  std::string config = write_config("0666", "daemon");
  std::string err;
  EXPECT_EQ(run_capture({bin_, "--config", config, "--check"}, &err), 2);
  EXPECT_NE(err.find("$.control_plane.admin_socket_mode: must not grant any permission to "
                     "others (last digit must be 0), got \"0666\""),
            std::string::npos)
      << err;
  err.clear();
  config = write_config("0660", "pgw-no-such-group-xyz");
  EXPECT_EQ(run_capture({bin_, "--config", config}, &err), 2);
  EXPECT_NE(err.find("$.control_plane.admin_socket_group: unknown group "
                     "\"pgw-no-such-group-xyz\""),
            std::string::npos)
      << err;
  EXPECT_FALSE(fs::exists(dir_ / "admin.sock"));
}

}  // namespace
}  // namespace pgwarden
