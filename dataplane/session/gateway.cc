#include "dataplane/session/gateway.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <time.h>
#include <unistd.h>

#include <sstream>
#include <thread>

#include "common/default_paths.h"
#include "dataplane/session/event_loop.h"

namespace pgwarden::session {

Result<std::shared_ptr<const Runtime>> build_runtime(const std::string& config_path,
                                                     const std::string& rules_dir,
                                                     int workers_override) {
  auto config = load_dataplane_config(config_path);
  if (!config.is_ok()) return config.status();
  auto rt = std::make_shared<Runtime>();
  rt->config = std::move(*config);
  rt->config.rules_dir = rules_dir.empty() ? default_rules_dir() : rules_dir;
  if (workers_override > 0) rt->config.workers = workers_override;
  if (rt->config.workers <= 0) {
    rt->config.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  for (const auto& l : rt->config.listeners) {
    if (l.tls_cert_file.empty()) {
      rt->listener_tls.push_back(nullptr);
      continue;
    }
    auto ctx = make_server_tls_context(l.tls_cert_file, l.tls_key_file);
    if (!ctx.is_ok()) return ctx.status();
    rt->listener_tls.push_back(std::move(*ctx));
  }
  auto rules = load_rules(rt->config.rules_dir, rt->config.rule_set_lists);
  if (!rules.is_ok()) return rules.status();
  rt->rules = std::move(*rules);
  return std::shared_ptr<const Runtime>(std::move(rt));
}

Gateway::~Gateway() {
  for (auto& w : workers_) w->stop();
  for (auto& w : workers_) w->join();
}

Status Gateway::start() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto rt = build_runtime(config_path_, rules_dir_, workers_override_);
  if (!rt.is_ok()) return rt.status();
  runtime_ = std::move(*rt);
  for (int i = 0; i < runtime_->config.workers; ++i) {
    auto w = std::make_unique<Worker>(i, &shared_, runtime_);
    PGW_RETURN_IF_ERROR(w->init());
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) w->start_thread();
  for (const auto& l : runtime_->config.listeners) {
    spdlog::info("pgwarden-dp listening on {}:{} ({}{}), {} workers, control plane {}", l.address,
                 l.port, l.tls_cert_file.empty() ? "no TLS" : "TLS",
                 l.loopback_only ? ", loopback-only" : "", runtime_->config.workers,
                 runtime_->config.controlplane_socket);
  }
  return Status::ok();
}

void Gateway::reload() {
  auto rt = build_runtime(config_path_, rules_dir_, workers_override_);
  if (!rt.is_ok()) {
    spdlog::error("reload failed, keeping the running config: {}", rt.status().message());
    return;
  }
  if ((*rt)->config.listeners.size() != runtime_->config.listeners.size()) {
    spdlog::warn("reload: listener changes take effect on restart only");
    return;
  }
  auto next = std::make_shared<Runtime>(**rt);
  // Worker count and listener addresses are fixed for the life of the process.
  next->config.workers = runtime_->config.workers;
  next->config.listeners = runtime_->config.listeners;
  next->config.controlplane_socket = runtime_->config.controlplane_socket;
  runtime_ = next;
  for (auto& w : workers_) w->set_runtime(runtime_);
  spdlog::info("reloaded config and rules from {}", config_path_);
}

std::string Gateway::counters_text() const {
  std::ostringstream out;
#define PGW_SUM_COUNTER(name)                                        \
  {                                                                  \
    uint64_t sum = 0;                                                \
    for (const auto& w : workers_) sum += w->counters().name.load(); \
    out << #name << "=" << sum << " ";                               \
  }
  PGW_SESSION_COUNTERS(PGW_SUM_COUNTER)
#undef PGW_SUM_COUNTER
  return out.str();
}

int Gateway::run() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  bool draining = false;
  for (;;) {
    bool all_done = true;
    for (auto& w : workers_) all_done = all_done && w->finished();
    if (all_done) break;
    if (stop_requested_.exchange(false)) {
      for (auto& w : workers_) w->stop();
    }
    timespec ts{0, 200 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGHUP) {
      reload();
      if (sighup_hook_) sighup_hook_();
    } else if (sig == SIGTERM || sig == SIGINT) {
      if (draining) {
        spdlog::warn("second stop signal: stopping now");
        for (auto& w : workers_) w->stop();
      } else {
        draining = true;
        int64_t deadline = monotonic_ms() + runtime_->config.limits.drain_timeout_ms;
        spdlog::info("draining: no new logins, in-flight statements get {} ms",
                     runtime_->config.limits.drain_timeout_ms);
        for (auto& w : workers_) w->drain(deadline);
      }
    }
  }
  for (auto& w : workers_) w->join();
  spdlog::info("pgwarden-dp stopped: {}", counters_text());
  return 0;
}

}  // namespace pgwarden::session
