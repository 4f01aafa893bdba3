#include "tests/support/pg_sandbox.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include "common/source_root.h"

namespace pgwarden::testing {

namespace {
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}
}  // namespace

namespace {
// stdout of `command` and pclose's status (-1 when it could not be started).
std::string run_pipe(const std::string& command, int* rc) {
  FILE* pipe = popen(command.c_str(), "r");
  *rc = -1;
  if (pipe == nullptr) return "popen failed: " + command;
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  *rc = pclose(pipe);
  return out;
}
}  // namespace

std::string command_output(const std::string& command) {
  int rc = 0;
  return run_pipe(command, &rc);
}

Result<std::string> run_command(const std::string& command) {
  int rc = 0;
  std::string out = run_pipe(command, &rc);
  if (rc == -1) return internal_error(out);
  if (rc != 0) {
    int code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    return internal_error("command exited " + std::to_string(code) + ": " + command + "\n" + out);
  }
  return out;
}

Status PgSandbox::start(const PgSandboxOptions& options) {
  stop();
  std::string cmd = std::string(PGW_SOURCE_ROOT) + "/scripts/pg-sandbox start --owner-pid " +
                    std::to_string(getpid());
  if (options.tls) cmd += " --tls";
  auto out = run_command(cmd);
  if (!out) return out.status();
  std::istringstream lines(*out);
  std::string line;
  while (std::getline(lines, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) env_[line.substr(0, eq)] = line.substr(eq + 1);
  }
  if (env_.count("PGPORT") == 0) {
    env_.clear();
    return internal_error("pg-sandbox printed no PGPORT:\n" + *out);
  }
  return Status::ok();
}

void PgSandbox::stop() {
  if (env_.empty()) return;
  std::string cmd = std::string(PGW_SOURCE_ROOT) + "/scripts/pg-sandbox stop --dir " +
                    shell_quote(get("PGW_SANDBOX_DIR")) + " >/dev/null 2>&1";
  (void)run_command(cmd);
  env_.clear();
}

const std::string& PgSandbox::get(const std::string& key) const {
  static const std::string kEmpty;
  auto it = env_.find(key);
  return it == env_.end() ? kEmpty : it->second;
}

std::string PgSandbox::conninfo(const std::string& role) const {
  std::string out = "host=" + host() + " port=" + get("PGPORT") + " dbname=demo user=" + role;
  std::string key;
  if (role == "app_scram") key = "PGW_SCRAM_PASSWORD";
  if (role == "app_readonly") key = "PGW_READONLY_PASSWORD";
  if (role == "app_clear") key = "PGW_CLEAR_PASSWORD";
  if (!key.empty()) out += " password=" + get(key);
  return out;
}

namespace {
const char* pg_bin() {
  const char* b = std::getenv("PGBIN");
  return b != nullptr ? b : "/usr/lib/postgresql/15/bin";
}
}  // namespace

Status PgSandbox::stop_immediate() {
  if (env_.empty()) return failed_precondition("sandbox not started");
  return run_command("runuser -u postgres -- " + std::string(pg_bin()) + "/pg_ctl -D " +
                     shell_quote(get("PGW_SANDBOX_DIR") + "/data") +
                     " -m immediate -w -t 20 stop 2>&1")
      .status();
}

Status PgSandbox::restart() {
  if (env_.empty()) return failed_precondition("sandbox not started");
  const std::string dir = get("PGW_SANDBOX_DIR");
  return run_command("runuser -u postgres -- " + std::string(pg_bin()) + "/pg_ctl -D " +
                     shell_quote(dir + "/data") + " -l " + shell_quote(dir + "/server.log") +
                     " -o " + shell_quote("-p " + get("PGPORT")) + " -w -t 30 start 2>&1")
      .status();
}

std::string PgSandbox::server_log() const {
  std::ifstream in(get("PGW_SERVER_LOG"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<std::string> PgSandbox::psql(const std::string& sql, const std::string& db) const {
  std::string cmd = "runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -h " +
                    shell_quote(get("PGW_SOCKET_DIR")) + " -p " + get("PGPORT") +
                    " -U postgres -d " + shell_quote(db) + " -c " + shell_quote(sql) + " 2>&1";
  return run_command(cmd);
}

}  // namespace pgwarden::testing
