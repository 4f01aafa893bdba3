// Test helpers shared by every integration test that starts the real pgwarden-cp or runs the
// real pgwardenctl: one way to launch a child process with its output in a log file, one
// pgwarden-cp process handle, one pgwardenctl runner.
//
// Binaries come from the environment (meson sets them): PGW_CP_BIN (pgwarden-cp) and
// PGW_CTL_BIN (pgwardenctl). Children die with the test process (PR_SET_PDEATHSIG).
// Not thread-safe: use from the test's main thread.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgwarden::testing {

// The whole file, or "" when it cannot be read.
std::string slurp(const std::string& path);

// The value of environment variable `name`, or "" when unset.
std::string env_or_empty(const char* name);

// Sends `sig` to `pid`. For SIGSTOP it returns only once every thread of the process is
// stopped (kill() returns before that: a thread running on another CPU may still answer a
// request), or after 10 s.
void send_signal(pid_t pid, int sig);

// Forks and execs argv[0] with argv, stdout and stderr appended to `log_path` (created 0600),
// stdin from /dev/null, an empty signal mask, and SIGKILL when the test process dies.
Result<pid_t> spawn_logged(const std::vector<std::string>& argv, const std::string& log_path);

// Unix socket `path` accepts a connection right now.
bool unix_socket_accepts(const std::string& path);

// The parts of a pgwarden-cp config most tests share, everything under `dir`: a loopback
// dataplane listener on 6432, the escalation socket and state directory, service key `agent`
// (identity svc:agent, group agents) hashed from `service_key_secret`, and a target `demo`
// that is never contacted (its credential from PGW_TEST_DB_PASSWORD, set here). Tests add
// policies, admin principals and anything else they need.
nlohmann::json base_cp_config(const std::string& dir, const std::string& service_key_secret);

// A pgwarden-cp child process; stopped (SIGTERM, then SIGKILL) by stop() or the destructor.
class CpProcess {
 public:
  CpProcess() = default;
  ~CpProcess() { stop(); }
  CpProcess(const CpProcess&) = delete;
  CpProcess& operator=(const CpProcess&) = delete;

  // Starts PGW_CP_BIN --config `config_path` plus `extra_args` (e.g. --rules-dir DIR), its
  // output appended to `log_path`, behind `command_prefix` when not empty (e.g. unshare
  // --pid --fork --kill-child --: signals then go to the prefix's process). Does not wait: see
  // wait_ready / wait_exit.
  Status start(const std::string& config_path, const std::string& log_path,
               const std::vector<std::string>& extra_args = {},
               const std::vector<std::string>& command_prefix = {});
  // Waits until the escalation socket accepts connections and, when `admin_socket` is not
  // empty, the admin socket does too. unavailable (with the log) on timeout or early exit.
  Status wait_ready(const std::string& socket, const std::string& admin_socket = "",
                    int timeout_ms = 15000);
  // Exit status (signal deaths as 128 + signal), or -1 if still running after `ms`.
  int wait_exit(int ms);
  // SIGTERM, up to 10 s for a clean exit, then SIGKILL. The exit status as wait_exit, -1
  // when it had to be killed or was not running.
  int stop();
  // SIGKILL and reap (a crash: nothing is cleaned up by the process).
  void kill_now();
  void signal(int sig);  // send_signal(pid(), sig)
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

// How pgwardenctl reaches the cp and who it is: the settings go in the environment
// (PGWARDEN_ADMIN_SOCKET, PGWARDEN_ADMIN_PRINCIPAL, PGWARDEN_ADMIN_CREDENTIAL_FILE), as an
// operator's shell would have them.
struct CtlIdentity {
  std::string socket;
  std::string principal;
  std::string credential_file;
};

struct CtlResult {
  int code = -1;  // exit code; 128 + signal when killed
  std::string out;
  std::string err;
};

// Runs PGW_CTL_BIN with `args` as `who`, `input` on stdin; waits for it to exit.
// `scratch_dir` holds the captured stdin/stdout/stderr files (overwritten each call).
CtlResult run_ctl(const CtlIdentity& who, const std::vector<std::string>& args,
                  const std::string& scratch_dir, const std::string& input = "");

}  // namespace pgwarden::testing
