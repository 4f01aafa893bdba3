#include "tests/integration/cp_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "controlplane/identity/service_key.h"

namespace pgwarden::testing {

nlohmann::json base_cp_config(const std::string& dir, const std::string& service_key_secret) {
  const identity::ServiceKeyHash key = identity::make_service_key_hash(service_key_secret).value();
  ::setenv("PGW_TEST_DB_PASSWORD", "unused-by-these-tests", 1);
  return nlohmann::json{
      {"listeners",
       {{"dataplane", {{"address", "127.0.0.1"}, {"port", 6432}, {"loopback_only", true}}}}},
      {"control_plane", {{"socket", dir + "/cp.sock"}, {"state_dir", dir + "/state"}}},
      {"identity",
       {{"service_keys",
         {{{"id", "agent"},
           {"salt", key.salt},
           {"hash", key.hash},
           {"identity", "svc:agent"},
           {"groups", {"agents"}}}}}}},
      {"targets",
       {{{"name", "demo"},
         {"host", "127.0.0.1"},
         {"port", 5432},
         {"database", "demo"},
         {"role", "app"},
         {"credential", {{"env", "PGW_TEST_DB_PASSWORD"}}},
         {"tls", {{"mode", "disable"}}}}}}};
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

namespace {

// In the child after fork: die with the parent, clear the signal mask, exec argv.
[[noreturn]] void exec_child(pid_t parent, const std::vector<std::string>& argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

int exit_code(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

Result<pid_t> spawn_logged(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty() || argv[0].empty()) return invalid_argument("spawn_logged: no binary");
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return internal_error("fork failed");
  if (pid == 0) {
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    int null = ::open("/dev/null", O_RDONLY);
    dup2(null, 0);
    dup2(log, 1);
    dup2(log, 2);
    exec_child(parent, argv);
  }
  return pid;
}

bool unix_socket_accepts(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) {
    close(fd);
    return false;
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  close(fd);
  return ok;
}

Status CpProcess::start(const std::string& config_path, const std::string& log_path,
                        const std::vector<std::string>& extra_args,
                        const std::vector<std::string>& command_prefix) {
  if (pid_ > 0) return failed_precondition("pgwarden-cp already running");
  std::string bin = env_or_empty("PGW_CP_BIN");
  if (bin.empty()) return failed_precondition("PGW_CP_BIN not set (run through meson test)");
  std::vector<std::string> argv = command_prefix;
  argv.insert(argv.end(), {bin, "--config", config_path});
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto pid = spawn_logged(argv, log_path);
  if (!pid.is_ok()) return pid.status();
  pid_ = *pid;
  log_path_ = log_path;
  return Status::ok();
}

Status CpProcess::wait_ready(const std::string& socket, const std::string& admin_socket,
                             int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (unix_socket_accepts(socket) &&
        (admin_socket.empty() || unix_socket_accepts(admin_socket))) {
      return Status::ok();
    }
    int status = 0;
    if (pid_ > 0 && waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return unavailable("pgwarden-cp exited with " + std::to_string(exit_code(status)) + ":\n" +
                         slurp(log_path_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return unavailable("pgwarden-cp did not open its sockets:\n" + slurp(log_path_));
}

int CpProcess::wait_exit(int ms) {
  if (pid_ <= 0) return -1;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  do {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return exit_code(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (std::chrono::steady_clock::now() < end);
  return -1;
}

int CpProcess::stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int rc = wait_exit(10000);
  if (rc == -1) kill_now();
  return rc;
}

void CpProcess::kill_now() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

namespace {

// True when every thread of `pid` is in state T (stopped) or t (traced).
bool all_threads_stopped(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  bool any = false;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t close = stat.rfind(')');  // the state follows the command name "(...)"
    if (close == std::string::npos || close + 2 >= stat.size()) return false;
    char state = stat[close + 2];
    if (state != 'T' && state != 't') return false;
    any = true;
  }
  return any;
}

}  // namespace

void send_signal(pid_t pid, int sig) {
  if (pid <= 0) return;
  kill(pid, sig);
  if (sig != SIGSTOP) return;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!all_threads_stopped(pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void CpProcess::signal(int sig) { send_signal(pid_, sig); }

CtlResult run_ctl(const CtlIdentity& who, const std::vector<std::string>& args,
                  const std::string& scratch_dir, const std::string& input) {
  CtlResult r;
  std::string bin = env_or_empty("PGW_CTL_BIN");
  if (bin.empty()) {
    r.err = "PGW_CTL_BIN not set (run through meson test)";
    return r;
  }
  std::string in_path = scratch_dir + "/ctl.in", out_path = scratch_dir + "/ctl.out",
              err_path = scratch_dir + "/ctl.err";
  std::ofstream(in_path, std::ios::trunc) << input;
  std::vector<std::string> argv{bin};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    r.err = "fork failed";
    return r;
  }
  if (pid == 0) {
    int in = ::open(in_path.c_str(), O_RDONLY);
    int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    setenv("PGWARDEN_ADMIN_SOCKET", who.socket.c_str(), 1);
    setenv("PGWARDEN_ADMIN_PRINCIPAL", who.principal.c_str(), 1);
    setenv("PGWARDEN_ADMIN_CREDENTIAL_FILE", who.credential_file.c_str(), 1);
    unsetenv("PGWARDEN_ADMIN_CREDENTIAL");
    exec_child(parent, argv);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.code = exit_code(status);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

}  // namespace pgwarden::testing
