// pgwarden-cp: the control plane process.
//
//   pgwarden-cp --config FILE           serve (SIGHUP reloads FILE, SIGTERM/SIGINT stop)
//               [--rules-dir DIR]       rule set files for `pgwardenctl rules` (default: the
//                                       source tree's rules/sets, like pgwarden-dp)
//   pgwarden-cp --config FILE --check   validate FILE and exit (0 valid, 2 invalid)
//   pgwarden-cp --hash-credential       read a secret from stdin, print its credential_hash
//
// Exit codes: 0 clean stop, 1 runtime failure (socket, audit log), 2 invalid configuration
// or usage.
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "controlplane/audit/audit_log.h"
#include "controlplane/config/config.h"
#include "controlplane/server/admin_server.h"
#include "controlplane/server/escalation_server.h"
#include "controlplane/server/policy_analyser.h"
#include "controlplane/vault/credential_hash.h"
#include "controlplane/vault/secret.h"

namespace {

using namespace pgwarden;

// The one place identity, policy and masking are plugged into the control plane.
// TODO(lead): when controlplane/identity and controlplane/policy are merged, pass the JWT
// authenticator as the second CompositeAuthenticator argument and a policy-backed
// StatementAnalyser / MaskPlanner here.
server::ServerHandlers make_handlers() {
  server::ServerHandlers h;
  h.authenticator = std::make_shared<server::CompositeAuthenticator>(
      std::make_shared<server::ServiceKeyAuthenticator>(), /*jwt=*/nullptr);
  h.analyser = std::make_shared<server::PolicyAnalyser>();
  h.mask_planner = std::make_shared<server::FailClosedMaskPlanner>();
  return h;
}

int usage() {
  std::fprintf(stderr,
               "usage: pgwarden-cp --config FILE [--check]\n"
               "       pgwarden-cp --hash-credential   (secret on stdin)\n");
  return 2;
}

int hash_credential() {
  std::string line;
  std::getline(std::cin, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) {
    std::fprintf(stderr, "pgwarden-cp: empty secret on stdin\n");
    return 2;
  }
  vault::Secret secret(std::move(line));
  std::printf("%s\n", vault::hash_credential(secret.view()).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::string rules_dir = std::string(PGW_SOURCE_ROOT) + "/rules/sets";
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--rules-dir" && i + 1 < argc) {
      rules_dir = argv[++i];
    } else if (a == "--check") {
      check_only = true;
    } else if (a == "--hash-credential") {
      return hash_credential();
    } else {
      return usage();
    }
  }
  if (config_path.empty()) return usage();

  auto logger = spdlog::stderr_logger_mt("pgwarden-cp");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  // Signals are taken synchronously by the main thread; every thread started later inherits
  // this mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  config::ConfigStore store(config_path);
  config::LoadOutcome first = store.reload();
  if (!first.ok()) {
    std::fprintf(stderr, "pgwarden-cp: invalid configuration %s:\n%s", config_path.c_str(),
                 first.error_text().c_str());
    return 2;
  }
  if (check_only) {
    std::printf("%s: valid (%zu targets, %zu policies)\n", config_path.c_str(),
                first.config->targets.size(), first.config->policies.size());
    return 0;
  }
  const std::string& state_dir = first.config->control_plane.state_dir;
  if (::mkdir(state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    spdlog::error("cannot create state_dir {}: {}", state_dir, std::strerror(errno));
    return 1;
  }
  auto audit = audit::AuditLog::open(first.config->audit_sinks);
  if (!audit.is_ok()) {
    spdlog::error("{}", audit.status().message());
    return 1;
  }
  (*audit)->record(audit::AuditRecord{
      .event = "config_load", .policy_version = first.config->version, .decision = "applied"});

  server::EscalationServer server(store, **audit, make_handlers());
  Status started = server.start();
  if (!started.is_ok()) {
    spdlog::error("{}", started.message());
    return 1;
  }
  server::AdminBackend admin_backend{
      .config = &store, .audit = audit->get(), .rules_dir = rules_dir};
  admin_backend.reload = [&server] { return server.reload(); };
  admin_backend.runtime_status = [&server] {
    nlohmann::json counters = nlohmann::json::object();
#define PGW_X(name) counters[#name] = server.counter(server::Counter::k_##name);
    PGW_CP_COUNTERS(PGW_X)
#undef PGW_X
    return nlohmann::json{{"sessions", server.session_count()}, {"counters", std::move(counters)}};
  };
  server::AdminServer admin(std::move(admin_backend));
  if (!first.config->control_plane.admin_socket.empty()) {
    Status admin_started = admin.start();
    if (!admin_started.is_ok()) {
      spdlog::error("{}", admin_started.message());
      server.stop();
      return 1;
    }
  }
  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading {}", config_path);
      (void)server.reload();
      continue;
    }
    spdlog::info("signal {}: shutting down", sig);
    break;
  }
  admin.stop();
  server.stop();
  (*audit)->record(audit::AuditRecord{.event = "shutdown"});
  (*audit)->flush();
  return 0;
}
