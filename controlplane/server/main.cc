// pgwarden-cp: the control plane process.
//
//   pgwarden-cp --config FILE           serve (SIGHUP reloads FILE, SIGTERM/SIGINT stop)
//               [--rules-dir DIR]       rule set files the policies name: compiled on every
//                                       load and pushed to dataplanes (default: the source
//                                       tree's rules/sets, like pgwarden-dp)
//   pgwarden-cp --config FILE --check   validate FILE and exit (0 valid, 2 invalid)
//   pgwarden-cp --hash-credential       read a secret from stdin, print its credential_hash
//
// Exit codes: 0 clean stop, 1 runtime failure (socket, audit log), 2 invalid configuration
// (including rule sets that do not compile, reported with file:line) or usage.
#include <signal.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "common/default_paths.h"
#include "common/fd_limit.h"
#include "common/metrics/metrics_server.h"
#include "common/protocol/messages.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/config/config.h"
#include "controlplane/fleet/remote_recording.h"
#include "controlplane/identity/service_key.h"
#include "controlplane/server/admin_server.h"
#include "controlplane/server/control_plane.h"
#include "controlplane/server/cp_metrics.h"
#include "controlplane/sso/saml_routes.h"
#include "controlplane/vault/credential_hash.h"
#include "controlplane/vault/secret.h"
#include "controlplane/web/admin_routes.h"
#include "controlplane/web/https_server.h"
#include "controlplane/web/oidc_login.h"

namespace {

using namespace pgwarden;

int usage() {
  std::fprintf(stderr,
               "usage: pgwarden-cp --config FILE [--check]\n"
               "       pgwarden-cp --hash-credential   (secret on stdin)\n"
               "       pgwarden-cp --new-service-key ID\n");
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

// Prints a new service key for $.identity.service_keys: line 1 the key the agent presents
// (shown once), line 2 the salt, line 3 the hash.
int new_service_key(const std::string& id) {
  auto key = identity::generate_service_key(id);
  if (!key.is_ok()) {
    std::fprintf(stderr, "pgwarden-cp: %s\n", key.status().message().c_str());
    return 2;
  }
  std::printf("%s\n%s\n%s\n", key->key.c_str(), key->hash.salt.c_str(), key->hash.hash.c_str());
  return 0;
}

// Per dataplane, for `status`: its rules generation against cp's and its login-flood
// counters (from the latest dataplane_stats snapshot).
nlohmann::json dataplane_summary(server::EscalationServer& server) {
  nlohmann::json all = server.dataplanes().to_json(protocol::now_unix_ms());
  uint64_t cp_generation = server.rules_status().value("generation", uint64_t{0});
  nlohmann::json out = nlohmann::json::array();
  for (const auto& d : all.value("dataplanes", nlohmann::json::array())) {
    const nlohmann::json& snap = d.contains("snapshot") ? d["snapshot"] : nlohmann::json::object();
    nlohmann::json e = {{"name", d.value("name", "")},
                        {"connected", d.value("connected", false)},
                        {"stale", d.value("stale", true)},
                        {"mode", snap.contains("dp") ? snap["dp"].value("mode", "") : ""}};
    if (snap.contains("rules") && snap["rules"].is_object()) {
      const nlohmann::json& r = snap["rules"];
      e["rules_generation"] = r.value("generation", uint64_t{0});
      e["rules_hash"] = r.value("hash", "");
      e["rules_source"] = r.value("source", "");
      if (r.value("source", "") == "controlplane") {
        e["rules_in_sync"] = r.value("generation", uint64_t{0}) == cp_generation;
      }
    }
    if (snap.contains("logins")) e["logins"] = snap["logins"];
    out.push_back(std::move(e));
  }
  return out;
}

// The admin API (pgwardenctl) acts on the same objects as the escalation server.
server::AdminBackend make_admin_backend(server::ControlPlane& plane, const std::string& rules_dir) {
  server::AdminBackend b{.config = &plane.config_store(),
                         .audit = &plane.audit(),
                         .approvals = &plane.approvals(),
                         .rules_dir = rules_dir};
  b.reload = [&plane] { return plane.reload(); };
  b.validate_token = [&plane](std::string_view token) -> identity::IdentityResult {
    auto validator = plane.token_validator();
    if (!validator.is_ok()) {
      return identity::Rejection{identity::RejectReason::kJwksUnavailable,
                                 validator.status().message()};
    }
    return (*validator)->validate(token);
  };
  b.revocations = &plane.revocations();
  b.budgets = &plane.budgets();
  b.push_budgets = [&plane](const std::string& subject) {
    return plane.escalation_server().push_budgets(subject);
  };
  b.live_sessions = [&plane] { return plane.escalation_server().live_sessions(); };
  b.kill_sessions = [&plane](const nlohmann::json& selector, const std::string& reason,
                             const std::string& by,
                             const std::string& cause) -> Result<std::vector<std::string>> {
    server::SessionSelector sel;
    auto get = [&](const char* key) {
      return selector.contains(key) && selector[key].is_string() ? selector[key].get<std::string>()
                                                                 : std::string();
    };
    sel.session_id = get("session_id");
    sel.subject = get("identity");
    sel.key_id = get("key");
    std::vector<std::string> killed =
        plane.escalation_server().kill_sessions(sel, reason, by, cause);
    state::StateStore& shared = plane.state();
    if (!shared.shared() || (!sel.session_id.empty() && !killed.empty())) return killed;
    // Sessions of other nodes: asked through the store (their cp ends them within a second).
    if (!sel.session_id.empty()) {
      auto where = shared.find_session(sel.session_id);
      if (!where.is_ok()) return where.status();
      if (!where->has_value()) return killed;
    }
    PGW_RETURN_IF_ERROR(shared.publish_kill(selector, reason, by, cause));
    if (!sel.session_id.empty()) killed.push_back(sel.session_id);
    return killed;
  };
  b.dataplanes = [&plane] {
    return plane.escalation_server().dataplanes().to_json(protocol::now_unix_ms());
  };
  b.recording_open = [&plane](const std::string& id) { return plane.recorder().session_open(id); };
  if (plane.state().shared()) {
    // Recordings of other nodes, fetched over their HTTPS admin API (docs/scale-out.md).
    b.fetch_recording = [&plane](const std::string& id) {
      auto cfg = plane.config_store().current();
      return fleet::fetch_recording({.store = &plane.state(),
                                     .key = plane.node_key(),
                                     .ca_file = cfg->control_plane.state_store.node_ca_file,
                                     .temp_parent = cfg->control_plane.state_dir},
                                    id);
    };
  }
  b.wait_rules_enforced = [&plane](int64_t timeout_ms) {
    return plane.escalation_server().wait_rules_enforced(timeout_ms);
  };
  b.runtime_status = [&plane] {
    server::EscalationServer& server = plane.escalation_server();
    nlohmann::json counters = nlohmann::json::object();
#define PGW_X(name) counters[#name] = server.counter(server::Counter::k_##name);
    PGW_CP_COUNTERS(PGW_X)
#undef PGW_X
    if (const approvals::WebhookNotifier* webhook = plane.webhook()) {
#define PGW_X(name) counters[#name] = webhook->name();
      PGW_WEBHOOK_COUNTERS(PGW_X)
#undef PGW_X
    }
    return nlohmann::json{{"sessions", server.session_count()},
                          {"counters", std::move(counters)},
                          {"recorder", plane.recorder().health().to_json()},
                          {"audit", plane.audit().health().to_json()},
                          {"rules", server.rules_status()},
                          {"dataplanes", dataplane_summary(server)},
                          {"fleet", plane.fleet_status()}};
  };
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  std::string rules_dir = default_rules_dir();
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
    } else if (a == "--new-service-key" && i + 1 < argc) {
      return new_service_key(argv[i + 1]);
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
  // Every live recorded session keeps its recording file open (and each dp connection, store
  // and audit sink holds one more): thousands of agents need more than the usual 1024.
  if (const uint64_t fd_limit = raise_fd_limit(); fd_limit != 0 && fd_limit < 8192) {
    spdlog::warn(
        "open-file limit {}: each live recorded session holds its recording open, so about {} "
        "concurrent sessions at most; raise the hard limit (systemd LimitNOFILE=)",
        fd_limit, fd_limit > 256 ? fd_limit - 256 : 0);
  }

  auto store = std::make_unique<config::ConfigStore>(config_path);
  config::LoadOutcome first = store->reload();
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
  auto cp = server::ControlPlane::open(std::move(store), rules_dir);
  if (!cp.is_ok()) {
    spdlog::error("{}", cp.status().message());
    return 1;
  }
  server::ControlPlane& plane = **cp;
  plane.audit().record(audit::AuditRecord{
      .event = "config_load", .policy_version = first.config->version, .decision = "applied"});
  Status started = plane.start();
  if (!started.is_ok()) {
    spdlog::error("{}", started.message());
    return started.code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  server::AdminServer admin(make_admin_backend(plane, rules_dir));
  if (!first.config->control_plane.admin_socket.empty()) {
    Status admin_started = admin.start();
    if (!admin_started.is_ok()) {
      spdlog::error("{}", admin_started.message());
      plane.stop();
      return 1;
    }
  }
  // $.control_plane.http: the HTTPS admin API and people's logins, fixed for the process
  // (a reload does not move the listener; role_groups and the IdP are read at start).
  std::unique_ptr<web::OidcLogin> oidc;
  std::unique_ptr<web::HttpsServer> https;
  if (const config::HttpSettings& http = first.config->control_plane.http; !http.listen.empty()) {
    web::PersonTokenValidator bearer;
    if (http.oidc) {
      auto o = web::OidcLogin::create(*http.oidc, http.public_url);
      if (!o.is_ok()) {
        spdlog::error("$.control_plane.http.oidc: {}", o.status().message());
        admin.stop();
        plane.stop();
        return 1;
      }
      oidc = std::move(*o);
      bearer = [&oidc](std::string_view token) { return oidc->validate(token); };
    }
    https = std::make_unique<web::HttpsServer>(
        http, http.break_glass ? first.config->control_plane.admin_principals
                               : std::vector<config::AdminPrincipal>{},
        &plane.audit(), std::move(bearer));
    web::register_admin_routes(
        *https, [&admin](const std::string& command, const nlohmann::json& args,
                         const web::Person& who, const std::string& remote_ip) {
          return admin.execute(command, args,
                               server::AdminCaller{.name = who.name,
                                                   .groups = who.groups,
                                                   .via = "https:" + who.via,
                                                   .peer = "ip=" + remote_ip,
                                                   .role = std::string(web::role_name(who.role))});
        });
    if (oidc) oidc->register_routes(*https);
    if (auto key = plane.node_key(); key && plane.state().shared()) {
      // Other nodes of the fleet fetch this node's recordings (node-signed requests).
      fleet::register_node_routes(
          *https,
          {.node_id = plane.state().node_id(),
           .key = std::move(key),
           .recordings_dir =
               [&plane] {
                 return plane.config_store().current()->control_plane.state_dir + "/recordings";
               },
           .checkpoint_path =
               [&plane] {
                 return plane.config_store().current()->control_plane.state_dir +
                        "/recording_checkpoint.json";
               },
           .recording_open =
               [&plane](const std::string& id) { return plane.recorder().session_open(id); },
           .audit = &plane.audit()});
    }
    if (http.saml) {
      auto sp = sso::saml_sp_from_config(http);
      if (!sp.is_ok()) {
        spdlog::error("$.control_plane.http.saml: {}", sp.status().message());
        admin.stop();
        plane.stop();
        return 2;
      }
      sso::register_saml_routes(*https, std::move(*sp));
    }
    if (approvals::ChatCallback* chat = plane.chat_callback()) {
      // Public: the chat service's request signature authenticates it (ChatCallback checks
      // signature, timestamp window and replay before anything else).
      https->add_route(web::Route{
          .method = "POST",
          .prefix = "/api/v1/chat/slack",
          .access = web::Access::kPublic,
          .handler = [chat](const web::Request& req) {
            approvals::ChatReply r = chat->handle(req.header("x-slack-request-timestamp"),
                                                  req.header("x-slack-signature"), req.body);
            web::Response out;
            out.status = r.status;
            out.content_type = r.content_type;
            out.body = std::move(r.body);
            return out;
          }});
    }
    Status https_started = https->start();
    if (!https_started.is_ok()) {
      spdlog::error("{}", https_started.message());
      admin.stop();
      plane.stop();
      return https_started.code() == StatusCode::kInvalidArgument ? 2 : 1;
    }
    spdlog::info("serving the admin API on https://{} (port {})", http.listen, https->port());
  }
  // $.metrics.controlplane_listen: fixed for the process (a reload does not move it).
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (const std::string& listen = first.config->metrics.controlplane_listen; !listen.empty()) {
    auto m = metrics::MetricsServer::start(
        listen, [&plane](metrics::Families& f) { server::collect_cp_metrics(plane, f); });
    if (!m.is_ok()) {
      spdlog::error("{}", m.status().message());
      if (https) https->stop();
      admin.stop();
      plane.stop();
      return 1;
    }
    metrics_server = std::move(*m);
    spdlog::info("serving Prometheus metrics on http://{}/metrics", listen);
  }
  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading {}", config_path);
      (void)plane.reload();
      continue;
    }
    spdlog::info("signal {}: shutting down", sig);
    break;
  }
  metrics_server.reset();
  if (https) https->stop();
  admin.stop();
  plane.stop();
  plane.audit().record(audit::AuditRecord{.event = "shutdown"});
  plane.audit().flush();
  return 0;
}
