#include "tests/integration/gateway_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace pgwarden::testing {

namespace {

using nlohmann::json;

std::string env_or_empty(const char* name) {
  const char* v = getenv(name);
  return v == nullptr ? "" : v;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool wait_for(const std::function<bool()>& ready, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ready();
}

}  // namespace

int free_tcp_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

int connect_tcp(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

Result<pid_t> GatewayHarness::spawn(const std::string& bin, const std::string& log) {
  std::string config = dir_ + "/pgwarden.json";
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return internal_error("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execl(bin.c_str(), bin.c_str(), "--config", config.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

Status GatewayHarness::write_config() {
  json policy = json::parse(policy_json_);
  if (!policy.contains("groups")) policy["groups"] = {"agents"};
  if (!policy.contains("targets")) policy["targets"] = {"*"};
  json listener = {{"address", "127.0.0.1"},
                   {"port", dp_port_},
                   {"tls", {{"cert_file", dir_ + "/dp.crt"}, {"key_file", dir_ + "/dp.key"}}},
                   {"loopback_only", options_.loopback_only},
                   {"max_connections", options_.max_connections},
                   {"auth_timeout_s", options_.auth_timeout_s},
                   {"idle_timeout_s", options_.idle_timeout_s},
                   {"max_message_bytes", options_.max_message_bytes},
                   {"worker_threads", options_.workers}};
  json upstream_tls = {{"mode", options_.upstream_tls_mode}};
  if (options_.upstream_tls_mode == "verify-full") {
    upstream_tls["ca_file"] =
        options_.upstream_ca_file.empty() ? pg_.get("PGW_CA_FILE") : options_.upstream_ca_file;
  }
  json config = {{"listeners", {{"dataplane", listener}}},
                 {"control_plane", {{"socket", dir_ + "/cp.sock"}, {"state_dir", dir_ + "/state"}}},
                 {"identity",
                  {{"service_keys",
                    {{{"id", "agent1"},
                      {"salt", service_key_salt_},
                      {"hash", service_key_hash_},
                      {"identity", "svc:agent1"},
                      {"groups", {"agents"}}}}}}},
                 {"targets",
                  {{{"name", "demo"},
                    {"host", "127.0.0.1"},
                    {"port", options_.target_port != 0 ? options_.target_port : pg_.port()},
                    {"database", "demo"},
                    {"role", "app_scram"},
                    {"credential", {{"file", pg_.get("PGW_SECRETS_DIR") + "/app_scram"}}},
                    {"tls", upstream_tls}}}},
                 {"policies", {policy}},
                 {"audit", {{"sinks", {{{"type", "file"}, {"path", dir_ + "/audit.log"}}}}}}};
  json recording = json::object();
  if (options_.recording_queue_capacity > 0) {
    recording["queue_capacity"] = options_.recording_queue_capacity;
  }
  if (options_.recording_hold_timeout_ms >= 0) {
    recording["hold_timeout_ms"] = options_.recording_hold_timeout_ms;
  }
  if (!recording.empty()) config["recording"] = recording;
  if (!options_.masking_key_file.empty()) {
    config["masking"] = {{"key_file", options_.masking_key_file}};
  }
  std::string tmp = dir_ + "/pgwarden.json.tmp";
  std::ofstream(tmp) << config.dump(2);
  if (rename(tmp.c_str(), (dir_ + "/pgwarden.json").c_str()) != 0) {
    return internal_error("cannot write config");
  }
  return Status::ok();
}

Status GatewayHarness::start(const GatewayOptions& options) {
  options_ = options;
  policy_json_ = options.policy_json;
  std::string dp_bin = env_or_empty("PGW_DP_BIN");
  std::string cp_bin = env_or_empty("PGW_CP_BIN");
  if (dp_bin.empty() || cp_bin.empty()) {
    return failed_precondition("PGW_DP_BIN and PGW_CP_BIN must name the built binaries");
  }
  PgSandboxOptions pg_options;
  pg_options.tls = options.upstream_tls_mode != "disable";
  PGW_RETURN_IF_ERROR(pg_.start(pg_options));
  char tmpl[] = "/tmp/pgw-gateway.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return internal_error("mkdtemp failed");
  dir_ = tmpl;
  mkdir((dir_ + "/state").c_str(), 0700);
  auto cert = run_command(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
      "-keyout " +
      dir_ + "/dp.key -out " + dir_ + "/dp.crt 2>&1");
  if (!cert.is_ok()) return cert.status();
  auto key = run_command(cp_bin + " --new-service-key agent1");
  if (!key.is_ok()) return key.status();
  std::istringstream lines(*key);
  std::getline(lines, token_);
  std::getline(lines, service_key_salt_);
  std::getline(lines, service_key_hash_);
  if (token_.rfind("pgw_sk_agent1_", 0) != 0 || service_key_hash_.empty()) {
    return internal_error("pgwarden-cp --new-service-key printed no key");
  }
  dp_port_ = free_tcp_port();
  PGW_RETURN_IF_ERROR(write_config());
  PGW_RETURN_IF_ERROR(start_cp());
  auto dp = spawn(dp_bin, dir_ + "/dp.log");
  if (!dp.is_ok()) return dp.status();
  dp_pid_ = *dp;
  bool up = wait_for(
      [&] {
        int fd = connect_tcp(dp_port_);
        if (fd < 0) return false;
        close(fd);
        return true;
      },
      15000);
  if (!up) return unavailable("pgwarden-dp did not start listening:\n" + dp_log());
  // Logins need the dp's cp connection: wait until a login gets past the cp check.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  return Status::ok();
}

Status GatewayHarness::start_cp() {
  auto cp = spawn(env_or_empty("PGW_CP_BIN"), dir_ + "/cp.log");
  if (!cp.is_ok()) return cp.status();
  cp_pid_ = *cp;
  std::string sock = dir_ + "/cp.sock";
  bool up = wait_for(
      [&] {
        struct stat st;
        return stat(sock.c_str(), &st) == 0;
      },
      15000);
  if (!up) return unavailable("pgwarden-cp did not create its socket:\n" + cp_log());
  return Status::ok();
}

Status GatewayHarness::stop_cp() {
  if (cp_pid_ <= 0) return Status::ok();
  kill(cp_pid_, SIGKILL);
  waitpid(cp_pid_, nullptr, 0);
  cp_pid_ = -1;
  unlink((dir_ + "/cp.sock").c_str());
  return Status::ok();
}

void GatewayHarness::signal_cp(int sig) {
  if (cp_pid_ > 0) kill(cp_pid_, sig);
}

void GatewayHarness::signal_dp(int sig) {
  if (dp_pid_ > 0) kill(dp_pid_, sig);
}

bool GatewayHarness::wait_dp_exit(int timeout_ms, int* status) {
  if (dp_pid_ <= 0) return true;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    int st = 0;
    if (waitpid(dp_pid_, &st, WNOHANG) == dp_pid_) {
      if (status != nullptr) *status = st;
      dp_pid_ = -1;
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

Status GatewayHarness::rewrite_policy(const std::string& policy_json) {
  policy_json_ = policy_json;
  return write_config();
}

void GatewayHarness::stop() {
  for (pid_t* p : {&dp_pid_, &cp_pid_}) {
    if (*p <= 0) continue;
    kill(*p, SIGTERM);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {
      gone = waitpid(*p, nullptr, WNOHANG) == *p;
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!gone) {
      kill(*p, SIGKILL);
      waitpid(*p, nullptr, 0);
    }
    *p = -1;
  }
  pg_.stop();
  if (!dir_.empty() && getenv("PGW_KEEP_TEST_DIRS") == nullptr) {
    (void)run_command("rm -rf " + dir_);
  }
  dir_.clear();
}

std::string GatewayHarness::conninfo(const std::string& extra) const {
  return "host=127.0.0.1 port=" + std::to_string(dp_port_) +
         " dbname=demo user=agent sslmode=require connect_timeout=10 password=" + token_ + " " +
         extra;
}

std::string GatewayHarness::dp_log() const { return read_file(dir_ + "/dp.log"); }
std::string GatewayHarness::cp_log() const { return read_file(dir_ + "/cp.log"); }

long GatewayHarness::dp_rss_kib() const {
  std::string status = read_file("/proc/" + std::to_string(dp_pid_) + "/status");
  auto pos = status.find("VmRSS:");
  if (pos == std::string::npos) return -1;
  return std::atol(status.c_str() + pos + 6);
}

}  // namespace pgwarden::testing
