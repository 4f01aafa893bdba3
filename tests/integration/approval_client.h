// Client-side helpers for approval tests through a GatewayHarness: a real psql process whose
// statements may be held, and async libpq result polling. Shared by gateway_approvals_test and
// gateway_effect_approvals_test.
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {

// The next result of an async query, waiting at most `timeout_ms` (nullptr on timeout or at
// the end of the query's results).
inline Res next_result(PGconn* c, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (PQconsumeInput(c) == 0) break;
    if (PQisBusy(c) == 0) return Res(PQgetResult(c));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return nullptr;
}

// The target database's answer to `sql` (psql -At), trailing newlines and blanks cut.
inline std::string db_answer(GatewayHarness& gw, const std::string& sql) {
  auto r = gw.pg().psql(sql);
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  std::string s = r.is_ok() ? *r : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// pgwardenctl `args` --json as admin principal `principal`, parsed (discarded on bad JSON).
inline nlohmann::json ctl_json_as(const GatewayHarness& gw, const std::string& principal,
                                  std::vector<std::string> args) {
  args.push_back("--json");
  CtlResult r = gw.ctl(principal, args);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  return nlohmann::json::parse(r.out, nullptr, false);
}

// The pending approval request whose statement is `sql` ({} if none), listed as `principal`.
inline nlohmann::json pending_request(const GatewayHarness& gw, const std::string& principal,
                                      const std::string& sql) {
  nlohmann::json list = ctl_json_as(gw, principal, {"approvals", "list", "--state", "pending"});
  if (list.is_object() && list["approvals"].is_array()) {
    for (const nlohmann::json& a : list["approvals"]) {
      if (a.value("sql", "") == sql) return a;
    }
  }
  return nlohmann::json::object();
}

// Drains the remaining results of the current query.
inline void drain(PGconn* c) {
  while (Res r = next_result(c, 10000)) {
  }
}

// A real psql process through the gateway running one or more commands (each its own `-c`,
// so its own Query message); its stdout and stderr go to one file. Killed (if still running)
// by the destructor.
class PsqlProcess {
 public:
  PsqlProcess(const std::string& conninfo, const std::string& sql, const std::string& log)
      : PsqlProcess(conninfo, std::vector<std::string>{sql}, log) {}
  PsqlProcess(const std::string& conninfo, const std::vector<std::string>& commands,
              const std::string& log)
      : log_(log) {
    std::vector<std::string> argv = {
        "/usr/bin/psql",     "-X", "-At",   "-v", "ON_ERROR_STOP=1", "-v",
        "VERBOSITY=verbose", "-d", conninfo};
    for (const std::string& c : commands) {
      argv.push_back("-c");
      argv.push_back(c);
    }
    auto pid = spawn_logged(argv, log);
    EXPECT_TRUE(pid.is_ok()) << pid.status().to_string();
    if (pid.is_ok()) pid_ = *pid;
  }
  ~PsqlProcess() { kill_now(); }
  bool running() { return wait(0) == -1 && pid_ > 0; }
  // Exit code, or -1 when still running after `timeout_ms`.
  int wait(int timeout_ms) {
    if (pid_ <= 0) return code_;
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    do {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return code_;
      }
      if (timeout_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (std::chrono::steady_clock::now() < end);
    return -1;
  }
  void kill_now() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    wait(5000);
  }
  std::string output() const { return slurp(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int code_ = -1;
};

}  // namespace pgwarden::testing
