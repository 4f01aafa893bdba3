#include "tests/integration/gateway_harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/source_root.h"

namespace pgwarden::testing {

namespace {

using nlohmann::json;

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

Status GatewayHarness::write_config() {
  json policy = json::parse(policy_json_);
  if (!policy.contains("groups")) policy["groups"] = {"agents"};
  if (!policy.contains("targets")) policy["targets"] = {"*"};
  if (!options_.approver_groups.empty()) {
    policy["approvals"] = {{"approver_groups", options_.approver_groups},
                           {"timeout_s", options_.approval_timeout_s}};
  }
  json service_keys = json::array();
  for (const ServiceKey& k : service_keys_) {
    service_keys.push_back({{"id", k.id},
                            {"salt", k.salt},
                            {"hash", k.hash},
                            {"identity", "svc:" + k.id},
                            {"groups", options_.service_key_groups.count(k.id) > 0
                                           ? json(options_.service_key_groups.at(k.id))
                                           : json::array({"agents"})}});
  }
  json control_plane = {{"socket", dir_ + "/cp.sock"}, {"state_dir", dir_ + "/state"}};
  if (!options_.admin_principals.empty()) {
    control_plane["admin_socket"] = admin_socket();
    json principals = json::array();
    for (const auto& p : options_.admin_principals) {
      principals.push_back(
          {{"name", p.name}, {"credential_hash", admin_hashes_.at(p.name)}, {"groups", p.groups}});
    }
    control_plane["admin_principals"] = std::move(principals);
  }
  if (!options_.state_store_conninfo.empty()) {
    const std::string dsn_file = dir_ + "/state-store.dsn";
    { std::ofstream(dsn_file) << options_.state_store_conninfo << "\n"; }
    chmod(dsn_file.c_str(), 0600);
    control_plane["state_store"] = {
        {"kind", "postgres"}, {"dsn_file", dsn_file}, {"node_id", options_.node_id}};
  }
  if (!options_.control_plane_http_json.empty()) {
    control_plane["http"] = json::parse(options_.control_plane_http_json);
  }
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
        options_.upstream_ca_file.empty() ? target_->get("PGW_CA_FILE") : options_.upstream_ca_file;
  }
  json identity = {{"service_keys", service_keys}};
  if (!options_.identity_providers_json.empty()) {
    identity["providers"] = json::parse(options_.identity_providers_json);
  }
  json config = {{"listeners", {{"dataplane", listener}}},
                 {"control_plane", control_plane},
                 {"identity", identity},
                 {"targets",
                  {{{"name", "demo"},
                    {"host", "127.0.0.1"},
                    {"port", options_.target_port != 0 ? options_.target_port : target_->port()},
                    {"database", "demo"},
                    {"role", "app_scram"},
                    {"credential", {{"file", target_->get("PGW_SECRETS_DIR") + "/app_scram"}}},
                    {"tls", upstream_tls}}}},
                 {"policies", json::array({policy})},
                 {"audit", {{"sinks", {{{"type", "file"}, {"path", dir_ + "/audit.log"}}}}}}};
  if (!options_.extra_policies_json.empty()) {
    for (const json& p : json::parse(options_.extra_policies_json)) config["policies"].push_back(p);
  }
  if (!options_.target_extra_json.empty()) {
    const json extra = json::parse(options_.target_extra_json);
    for (const auto& [k, v] : extra.items()) config["targets"][0][k] = v;
  }
  if (!options_.extra_targets_json.empty()) {
    const json demo = config["targets"][0];
    const json targets = json::parse(options_.extra_targets_json);
    for (const auto& [name, keys] : targets.items()) {
      json t = demo;
      t["name"] = name;
      for (const auto& [k, v] : keys.items()) t[k] = v;
      config["targets"].push_back(t);
    }
  }
  json recording = json::object();
  if (options_.recording_queue_capacity > 0) {
    recording["queue_capacity"] = options_.recording_queue_capacity;
  }
  if (options_.recording_hold_timeout_ms >= 0) {
    recording["hold_timeout_ms"] = options_.recording_hold_timeout_ms;
  }
  if (options_.recording_sync == "always") {
    recording["sync"] = "always";
  } else if (!options_.recording_sync.empty()) {
    recording["sync"] = std::stoi(options_.recording_sync);
  }
  if (!recording.empty()) config["recording"] = recording;
  json limits = json::object();
  if (options_.max_pending_logins > 0) limits["max_pending_logins"] = options_.max_pending_logins;
  if (options_.max_pending_logins_per_source > 0) {
    limits["max_pending_logins_per_source"] = options_.max_pending_logins_per_source;
  }
  if (options_.startup_timeout_ms > 0) limits["startup_timeout_ms"] = options_.startup_timeout_ms;
  if (options_.cp_unavailable_wait_ms >= 0) {
    limits["cp_unavailable_wait_ms"] = options_.cp_unavailable_wait_ms;
  }
  if (!limits.empty()) config["limits"] = limits;
  if (!options_.masking_key_file.empty()) {
    config["masking"] = {{"key_file", options_.masking_key_file}};
  }
  if (!options_.budgets_json.empty()) config["budgets"] = json::parse(options_.budgets_json);
  if (options_.metrics) {
    if (cp_metrics_port_ == 0) cp_metrics_port_ = free_tcp_port();
    if (dp_metrics_port_ == 0) dp_metrics_port_ = free_tcp_port();
    config["metrics"] = {{"controlplane_listen", "127.0.0.1:" + std::to_string(cp_metrics_port_)},
                         {"dataplane_listen", "127.0.0.1:" + std::to_string(dp_metrics_port_)}};
  }
  if (!options_.config_merge_patch.empty()) {
    config.merge_patch(json::parse(options_.config_merge_patch));
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
  if (options.target != nullptr) {
    target_ = options.target;
  } else {
    target_ = &pg_;
    PGW_RETURN_IF_ERROR(pg_.start(pg_options));
  }
  char tmpl[] = "/tmp/pgw-gateway.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return internal_error("mkdtemp failed");
  dir_ = tmpl;
  mkdir((dir_ + "/state").c_str(), 0700);
  if (options.state_tmpfs_kib > 0) {
    auto mounted = run_command("mount -t tmpfs -o size=" + std::to_string(options.state_tmpfs_kib) +
                               "k,mode=0700 pgw-state " + dir_ + "/state 2>&1");
    if (!mounted.is_ok()) return mounted.status();
    state_mounted_ = true;
  }
  if (options.state_loop_device) PGW_RETURN_IF_ERROR(mount_state_device());
  auto cert = run_command(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
      "-keyout " +
      dir_ + "/dp.key -out " + dir_ + "/dp.crt 2>&1");
  if (!cert.is_ok()) return cert.status();
  PGW_RETURN_IF_ERROR(add_service_key("agent1"));
  for (const std::string& id : options.extra_service_keys) PGW_RETURN_IF_ERROR(add_service_key(id));
  token_ = service_keys_.front().token;
  for (const auto& p : options.admin_principals) PGW_RETURN_IF_ERROR(add_admin_principal(p.name));
  dp_port_ = free_tcp_port();
  std::vector<std::string> dp_argv = {dp_bin, "--config", dir_ + "/pgwarden.json"};
  if (options.own_rules_dir) {
    auto copied = run_command("cp -r " + std::string(PGW_SOURCE_ROOT) + "/rules/sets " +
                              rules_dir() + " 2>&1");
    if (!copied.is_ok()) return copied.status();
    dp_argv.insert(dp_argv.end(), {"--rules-dir", rules_dir()});
  }
  PGW_RETURN_IF_ERROR(write_config());
  PGW_RETURN_IF_ERROR(start_cp());
  dp_argv_ = dp_argv;
  return start_dp();
}

// The image (64 MiB, sparse) sits on a tmpfs of its own so that nothing outside the test
// directory is written; the loop device is detached by stop().
Status GatewayHarness::mount_state_device() {
  const std::string device_dir = dir_ + "/device";
  mkdir(device_dir.c_str(), 0700);
  PGW_RETURN_IF_ERROR(
      run_command("mount -t tmpfs -o size=80m,mode=0700 pgw-device " + device_dir + " 2>&1")
          .status());
  auto loop = run_command("truncate -s 64M " + device_dir + "/img && losetup -f --show " +
                          device_dir + "/img 2>&1");
  if (!loop.is_ok()) {
    (void)run_command("umount " + device_dir + " 2>&1");
    return loop.status();
  }
  state_loop_ = *loop;
  while (!state_loop_.empty() && std::isspace(static_cast<unsigned char>(state_loop_.back()))) {
    state_loop_.pop_back();
  }
  const bool journal = options_.state_loop_journal;
  PGW_RETURN_IF_ERROR(
      run_command(std::string("mkfs.ext4 -q ") + (journal ? "" : "-O ^has_journal ") +
                  "-E lazy_itable_init=0,lazy_journal_init=0 " + state_loop_ +
                  " 2>&1 && mount -o " +
                  (journal ? "errors=remount-ro,commit=1 " : "errors=continue ") + state_loop_ +
                  " " + dir_ + "/state 2>&1 && chmod 0700 " + dir_ + "/state")
          .status());
  state_mounted_ = true;
  return Status::ok();
}

Status GatewayHarness::break_state_device() {
  return run_command("truncate -s 4M " + dir_ + "/device/img && losetup -c " + state_loop_ +
                     " 2>&1")
      .status();
}

Status GatewayHarness::heal_state_device() {
  return run_command("truncate -s 64M " + dir_ + "/device/img && losetup -c " + state_loop_ +
                     " 2>&1")
      .status();
}

Status GatewayHarness::start_dp() {
  auto dp = spawn_logged(dp_argv_, dir_ + "/dp.log");
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

Status GatewayHarness::add_service_key(const std::string& id) {
  auto key = run_command(env_or_empty("PGW_CP_BIN") + " --new-service-key " + id);
  if (!key.is_ok()) return key.status();
  ServiceKey k{.id = id};
  std::istringstream lines(*key);
  std::getline(lines, k.token);
  std::getline(lines, k.salt);
  std::getline(lines, k.hash);
  if (k.token.rfind("pgw_sk_" + id + "_", 0) != 0 || k.hash.empty()) {
    return internal_error("pgwarden-cp --new-service-key printed no key");
  }
  service_keys_.push_back(std::move(k));
  return Status::ok();
}

Status GatewayHarness::add_admin_principal(const std::string& name) {
  std::string file = dir_ + "/admin-" + std::to_string(admin_hashes_.size()) + ".cred";
  auto secret = run_command("head -c 18 /dev/urandom | base64 | tr '+/' '-_'");
  if (!secret.is_ok()) return secret.status();
  { std::ofstream(file, std::ios::trunc) << *secret; }
  chmod(file.c_str(), 0600);
  auto hash = run_command(env_or_empty("PGW_CP_BIN") + " --hash-credential < " + file);
  if (!hash.is_ok()) return hash.status();
  std::string h = *hash;
  while (!h.empty() && (h.back() == '\n' || h.back() == '\r')) h.pop_back();
  if (h.empty()) return internal_error("pgwarden-cp --hash-credential printed nothing");
  admin_hashes_[name] = h;
  admin_files_[name] = file;
  return Status::ok();
}

std::string GatewayHarness::token(const std::string& key_id) const {
  for (const ServiceKey& k : service_keys_) {
    if (k.id == key_id) return k.token;
  }
  return "";
}

CtlResult GatewayHarness::ctl(const std::string& principal, const std::vector<std::string>& args,
                              const std::string& input) const {
  auto file = admin_files_.find(principal);
  CtlIdentity who{
      .socket = admin_socket(),
      .principal = principal,
      .credential_file = file == admin_files_.end() ? dir_ + "/no-such.cred" : file->second};
  return run_ctl(who, args, dir_, input);
}

std::string GatewayHarness::audit_log() const { return slurp(dir_ + "/audit.log"); }

Status GatewayHarness::start_cp() {
  std::vector<std::string> extra;
  if (options_.own_rules_dir) extra = {"--rules-dir", rules_dir()};
  PGW_RETURN_IF_ERROR(
      cp_.start(dir_ + "/pgwarden.json", dir_ + "/cp.log", extra, options_.cp_command_prefix));
  return cp_.wait_ready(dir_ + "/cp.sock", options_.admin_principals.empty() ? "" : admin_socket());
}

Status GatewayHarness::stop_cp() {
  if (!cp_.running()) return Status::ok();
  cp_.kill_now();
  unlink((dir_ + "/cp.sock").c_str());
  return Status::ok();
}

void GatewayHarness::signal_cp(int sig) { cp_.signal(sig); }

void GatewayHarness::crash_cp() { cp_.kill_now(); }

int GatewayHarness::stop_cp_gracefully() { return cp_.stop(); }

Status GatewayHarness::remove_service_key(const std::string& key_id) {
  std::erase_if(service_keys_, [&](const ServiceKey& k) { return k.id == key_id; });
  return write_config();
}

void GatewayHarness::signal_dp(int sig) { send_signal(dp_pid_, sig); }

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

Status GatewayHarness::rewrite_budgets(const std::string& budgets_json) {
  options_.budgets_json = budgets_json;
  return write_config();
}

Status GatewayHarness::rewrite_policy(const std::string& policy_json) {
  policy_json_ = policy_json;
  return write_config();
}

void GatewayHarness::stop() {
  if (dp_pid_ > 0) {
    kill(dp_pid_, SIGTERM);
    if (!wait_dp_exit(2000)) {
      kill(dp_pid_, SIGKILL);
      waitpid(dp_pid_, nullptr, 0);
      dp_pid_ = -1;
    }
  }
  cp_.stop();
  pg_.stop();
  if (state_mounted_) {
    (void)run_command("umount " + dir_ + "/state 2>&1");
    state_mounted_ = false;
  }
  if (!state_loop_.empty()) {
    (void)run_command("losetup -d " + state_loop_ + " 2>&1");
    (void)run_command("umount " + dir_ + "/device 2>&1");
    state_loop_.clear();
  }
  service_keys_.clear();
  admin_hashes_.clear();
  admin_files_.clear();
  if (!dir_.empty() && getenv("PGW_KEEP_TEST_DIRS") == nullptr) {
    (void)run_command("rm -rf " + dir_);
  }
  dir_.clear();
}

std::string GatewayHarness::conninfo(const std::string& extra) const {
  return conninfo_as("agent1", extra);
}

std::string GatewayHarness::conninfo_as(const std::string& key_id, const std::string& extra) const {
  return "host=127.0.0.1 port=" + std::to_string(dp_port_) +
         " dbname=demo user=agent sslmode=require connect_timeout=10 password=" + token(key_id) +
         " " + extra;
}

std::string GatewayHarness::dp_log() const { return slurp(dir_ + "/dp.log"); }
std::string GatewayHarness::cp_log() const { return slurp(dir_ + "/cp.log"); }

long GatewayHarness::dp_peak_rss_kib() const {
  std::string status = slurp("/proc/" + std::to_string(dp_pid_) + "/status");
  auto pos = status.find("VmHWM:");
  if (pos == std::string::npos) return -1;
  return std::atol(status.c_str() + pos + 6);
}

bool GatewayHarness::reset_dp_peak_rss() const {
  std::ofstream f("/proc/" + std::to_string(dp_pid_) + "/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

long GatewayHarness::dp_rss_kib() const {
  std::string status = slurp("/proc/" + std::to_string(dp_pid_) + "/status");
  auto pos = status.find("VmRSS:");
  if (pos == std::string::npos) return -1;
  return std::atol(status.c_str() + pos + 6);
}

bool eventually(const std::function<bool()>& done, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

std::string http_get(int port, const std::string& path) {
  int fd = connect_tcp(port);
  if (fd < 0) return "";
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return "";
  }
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? "" : out.substr(body + 4);
}

double prometheus_sample(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
        line[name.size()] == ' ') {
      return std::strtod(line.c_str() + name.size() + 1, nullptr);
    }
  }
  return -1;
}

void fill_file_system(const std::string& filler, size_t leave) {
  namespace fs = std::filesystem;
  {
    std::ofstream out(filler, std::ios::binary);
    std::string block(64 * 1024, 'x');
    while (out.write(block.data(), static_cast<std::streamsize>(block.size()))) {
    }
  }
  std::error_code ec;
  auto size = fs::file_size(filler, ec);
  ASSERT_FALSE(ec) << filler << ": " << ec.message();
  fs::resize_file(filler, size > leave ? size - leave : 0);
  if (leave == 0) {
    std::ofstream out(filler, std::ios::binary | std::ios::app);
    while (out.put('x') && out.flush()) {
    }
  }
}

std::set<std::string> query_lines(PgSandbox& pg, const std::string& sql) {
  auto out = pg.psql(sql);
  EXPECT_TRUE(out.is_ok()) << sql;
  std::set<std::string> lines;
  std::istringstream in(out.is_ok() ? *out : "");
  for (std::string l; std::getline(in, l);) {
    if (!l.empty()) lines.insert(l);
  }
  return lines;
}

}  // namespace pgwarden::testing
