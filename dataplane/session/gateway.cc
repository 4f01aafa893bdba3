#include "dataplane/session/gateway.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>
#include <thread>

#include "common/default_paths.h"
#include "common/fd_limit.h"
#include "common/metrics/listen_address.h"
#include "dataplane/session/event_loop.h"
#include "rules/rule_bundle.h"

namespace pgwarden::session {

namespace {

// Sessions past max_connections are refused with 53300 anyway; what must not happen is a
// session under the limits failing at accept() or at its upstream connect() with EMFILE.
void warn_if_fd_limit_low(uint64_t fd_limit, const Limits& limits) {
  // A client socket per session and per pending login, an upstream one per session in
  // pool_mode session (the worst case), and some for cp, listeners, epoll, logs.
  const uint64_t needed = 2 * static_cast<uint64_t>(limits.max_connections) +
                          static_cast<uint64_t>(limits.max_pending_logins) + 64;
  if (fd_limit != 0 && fd_limit < needed) {
    spdlog::warn(
        "open-file limit {} is below the {} descriptors max_connections {} and "
        "max_pending_logins {} may need; raise the hard limit (systemd LimitNOFILE=)",
        fd_limit, needed, limits.max_connections, limits.max_pending_logins);
  }
}

}  // namespace

Result<std::shared_ptr<const Runtime>> build_runtime(const std::string& config_path,
                                                     const std::string& rules_dir,
                                                     int workers_override) {
  auto config = load_dataplane_config(config_path);
  if (!config.is_ok()) return config.status();
  auto rt = std::make_shared<Runtime>();
  rt->config = std::move(*config);
  rt->config.rules_dir = rules_dir.empty() ? default_rules_dir() : rules_dir;
  if (workers_override > 0) rt->config.workers = workers_override;
  if (rt->config.workers <= 0) rt->config.workers = default_worker_threads();
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
  metrics_.reset();
  {
    std::lock_guard<std::mutex> lock(push_mu_);
    installer_stop_ = true;
  }
  push_cv_.notify_all();
  if (installer_.joinable()) installer_.join();
  for (auto& w : workers_) w->stop();
  for (auto& w : workers_) w->join();
}

void Gateway::on_rules_pushed(nlohmann::json event) {
  if (!event.contains("bundle") || !event["bundle"].is_object()) return;
  {
    std::lock_guard<std::mutex> lock(push_mu_);
    // Every worker's connection carries the same push: keep only the newest generation.
    uint64_t gen = event["bundle"].value("generation", uint64_t{0});
    if (pushed_ && (*pushed_)["bundle"].value("generation", uint64_t{0}) > gen) return;
    pushed_ = std::move(event);
  }
  push_cv_.notify_all();
}

void Gateway::installer_loop() {
  for (;;) {
    nlohmann::json ev;
    {
      std::unique_lock<std::mutex> lock(push_mu_);
      push_cv_.wait(lock, [&] { return installer_stop_ || pushed_.has_value(); });
      if (installer_stop_) return;
      ev = std::move(*pushed_);
      pushed_.reset();
    }
    install_pushed(ev["bundle"]);
  }
}

void Gateway::install_pushed(const nlohmann::json& bundle_json) {
  uint64_t generation = bundle_json.value("generation", uint64_t{0});
  std::string hash = bundle_json.value("hash", "");
  {
    std::lock_guard<std::mutex> lock(runtime_mu_);
    const CompiledRules& running = *runtime_->rules;
    // Already running it, or an older push that arrived late on another worker's connection.
    if (running.source == "controlplane" &&
        (running.hash == hash || running.generation > generation)) {
      // cp is told what every worker enforces (a reconnected cp waits for it in a reload).
      if (running.hash == hash && !workers_.empty()) {
        workers_[0]->post_event({{"type", "event"},
                                 {"kind", "rules_applied"},
                                 {"dp", dp_name_},
                                 {"generation", running.generation},
                                 {"hash", running.hash},
                                 {"ok", true},
                                 {"unchanged", true},
                                 {"rules", running.rules}});
      }
      return;
    }
  }
  int64_t t0 = monotonic_ms();
  auto bundle = rules::RuleBundle::from_json(bundle_json);
  Result<std::shared_ptr<const CompiledRules>> compiled =
      bundle.is_ok() ? compile_pushed_rules(*bundle)
                     : Result<std::shared_ptr<const CompiledRules>>(bundle.status());
  nlohmann::json applied = {{"type", "event"},
                            {"kind", "rules_applied"},
                            {"dp", dp_name_},
                            {"generation", generation},
                            {"hash", hash}};
  const CompiledRules* installed = nullptr;
  {
    std::lock_guard<std::mutex> lock(runtime_mu_);
    rules_status_.last_reload_unix_ms = unix_ms();
    if (!compiled.is_ok()) {
      ++rules_status_.reloads_failed;
      rules_status_.last_error = compiled.status().message();
      spdlog::error("rules generation {} from the control plane refused, keeping generation {}: {}",
                    generation, runtime_->rules->generation, compiled.status().message());
      applied["ok"] = false;
      applied["message"] = compiled.status().message();
    } else {
      ++rules_status_.reloads_ok;
      rules_status_.last_error.clear();
      auto next = std::make_shared<Runtime>(*runtime_);
      next->rules = std::move(*compiled);
      runtime_ = next;
      installed = runtime_->rules.get();
      for (auto& w : workers_) w->set_runtime(runtime_);
      spdlog::info(
          "rules generation {} (sha256 {}, {} rules) from the control plane runs now "
          "({} of {} lists loaded from cp's compiled databases, ready in {} ms)",
          generation, hash.substr(0, 12), runtime_->rules->rules, runtime_->rules->loaded_lists,
          runtime_->rules->by_list.size(), monotonic_ms() - t0);
      applied["ok"] = true;
      applied["rules"] = runtime_->rules->rules;
    }
  }
  if (installed != nullptr) {
    // rules_applied means enforced: every worker screens its next statement with it (cp's
    // reload returns on it, docs/operations.md). Workers swap at their next loop iteration.
    std::unique_lock<std::mutex> lock(shared_.screening_mu);
    const bool all = shared_.screening_cv.wait_for(lock, std::chrono::seconds(10), [&] {
      return std::all_of(workers_.begin(), workers_.end(),
                         [&](const auto& w) { return w->screening() == installed; });
    });
    lock.unlock();
    if (!all) {
      applied["ok"] = false;
      applied["message"] = "not every worker took the new rules within 10 s";
      spdlog::error("rules generation {}: not every worker took it within 10 s", generation);
    } else {
      std::lock_guard<std::mutex> rl(runtime_mu_);
      rules_status_.enforced_hash = hash;
    }
  }
  if (!workers_.empty()) {
    workers_[0]->post_event(std::move(applied));
    workers_[0]->request_stats();
  }
}

nlohmann::json Gateway::stats_snapshot() const {
  nlohmann::json counters = nlohmann::json::object();
  uint64_t sum = 0;
#define PGW_SUM_COUNTER(name)                                      \
  sum = 0;                                                         \
  for (const auto& w : workers_) sum += w->counters().name.load(); \
  counters[#name] = sum;
  PGW_SESSION_COUNTERS(PGW_SUM_COUNTER)
#undef PGW_SUM_COUNTER
  size_t pending = 0;
  for (const auto& w : workers_) pending += w->pending_logins();
  std::lock_guard<std::mutex> lock(runtime_mu_);
  const Limits& limits = runtime_->config.limits;
  const CompiledRules& rules = *runtime_->rules;
  nlohmann::json j = {
      {"type", "event"},
      {"kind", "dataplane_stats"},
      {"dp",
       {{"name", dp_name_},
        {"mode", "session"},
        {"pid", static_cast<int64_t>(::getpid())},
        {"started_unix_ms", started_unix_ms_}}},
      {"interval_ms", kStatsIntervalMs},
      {"unix_ms", unix_ms()},
      {"rules",
       {{"generation", rules.generation},
        {"version", rules.hash.substr(0, 16)},
        {"hash", rules.hash},
        {"source", rules.source},
        {"rules", rules.rules},
        {"reloads_ok", rules_status_.reloads_ok},
        {"reloads_failed", rules_status_.reloads_failed},
        {"last_error", rules_status_.last_error},
        {"last_reload_unix_ms", rules_status_.last_reload_unix_ms},
        {"enforced_hash", rules_status_.enforced_hash}}},
      {"sessions",
       {{"connections", shared_.connections.load()}, {"max_connections", limits.max_connections}}},
      {"logins",
       {{"pending", pending},
        {"max_pending_logins", limits.max_pending_logins},
        {"max_pending_logins_per_source", limits.max_pending_logins_per_source},
        {"startup_timeout_ms", limits.startup_timeout_ms},
        {"refused_total_cap", counters["logins_refused_total_cap"]},
        {"refused_source_cap", counters["logins_refused_source_cap"]},
        {"evicted_total_cap", counters["logins_evicted_total_cap"]},
        {"evicted_source_cap", counters["logins_evicted_source_cap"]},
        {"startup_timeouts", counters["logins_startup_timeout"]},
        {"refused_max_connections", counters["sessions_refused_limit"]},
        {"ok", counters["sessions_login_ok"]},
        {"failed", counters["sessions_login_failed"]}}},
      {"counters", std::move(counters)}};
  return j;
}

Status Gateway::start() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Every agent connection (and every pending login of a flood) holds a descriptor: allow as
  // many as the hard limit, and say so when that is less than max_connections needs.
  const uint64_t fd_limit = raise_fd_limit();
  auto rt = build_runtime(config_path_, rules_dir_, workers_override_);
  if (!rt.is_ok()) return rt.status();
  runtime_ = std::move(*rt);
  warn_if_fd_limit_low(fd_limit, runtime_->config.limits);
  started_unix_ms_ = unix_ms();
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  dp_name_ =
      std::string(host[0] ? host : "localhost") + "/session:" +
      (runtime_->config.listeners.empty() ? std::string("-")
                                          : std::to_string(runtime_->config.listeners[0].port));
  shared_.on_rules_pushed = [this](nlohmann::json ev) { on_rules_pushed(std::move(ev)); };
  shared_.stats_snapshot = [this] { return stats_snapshot(); };
  for (int i = 0; i < runtime_->config.workers; ++i) {
    auto w = std::make_unique<Worker>(i, &shared_, runtime_);
    PGW_RETURN_IF_ERROR(w->init());
    workers_.push_back(std::move(w));
  }
  std::string metrics_listen =
      metrics_listen_override_.empty() ? runtime_->config.metrics_listen : metrics_listen_override_;
  if (!metrics_listen.empty()) {
    if (std::string bad = metrics::check_listen_address(metrics_listen); !bad.empty()) {
      return invalid_argument("metrics listen address \"" + metrics_listen + "\": " + bad);
    }
    auto server = metrics::MetricsServer::start(
        metrics_listen, [this](metrics::Families& f) { collect_metrics(f); });
    if (!server.is_ok()) return server.status();
    metrics_ = std::move(*server);
    spdlog::info("pgwarden-dp serving Prometheus metrics on http://{}/metrics", metrics_listen);
  }
  for (auto& w : workers_) w->start_thread();
  installer_ = std::thread([this] { installer_loop(); });
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
  std::lock_guard<std::mutex> lock(runtime_mu_);
  if ((*rt)->config.listeners.size() != runtime_->config.listeners.size()) {
    spdlog::warn("reload: listener changes take effect on restart only");
    return;
  }
  auto next = std::make_shared<Runtime>(**rt);
  // Worker count and listener addresses are fixed for the life of the process.
  next->config.workers = runtime_->config.workers;
  next->config.listeners = runtime_->config.listeners;
  next->config.controlplane_socket = runtime_->config.controlplane_socket;
  // Once cp pushed a generation, rules are cp's: the dp's files never replace them.
  bool cp_rules = runtime_->rules->source == "controlplane";
  if (cp_rules) next->rules = runtime_->rules;
  runtime_ = next;
  for (auto& w : workers_) w->set_runtime(runtime_);
  spdlog::info("reloaded config{} from {}",
               cp_rules ? " (rules stay cp's generation)" : " and rules", config_path_);
}

void Gateway::collect_metrics(metrics::Families& f) const {
  for (const auto& source : metrics_sources_) source(f);
  // Every worker counter, summed: pgwarden_dp_<family_variant>_total.
  auto sum = [this](std::atomic<uint64_t> Counters::*member) {
    uint64_t total = 0;
    for (const auto& w : workers_) total += (w->counters().*member).load();
    return static_cast<double>(total);
  };
#define PGW_EXPORT_COUNTER(name)                                                               \
  f.counter("pgwarden_dp_" #name,                                                              \
            "Session engine counter " #name ", summed over the workers (docs/monitoring.md).", \
            sum(&Counters::name));
  PGW_SESSION_COUNTERS(PGW_EXPORT_COUNTER)
#undef PGW_EXPORT_COUNTER
  // Logins by outcome (the same counters, one family for dashboards).
  const char* logins_help =
      "Connections by login outcome: ok, failed, or refused/evicted by a limit.";
  for (auto [outcome, member] :
       {std::pair{"ok", &Counters::sessions_login_ok},
        std::pair{"failed", &Counters::sessions_login_failed},
        std::pair{"refused_max_connections", &Counters::sessions_refused_limit},
        std::pair{"refused_total_cap", &Counters::logins_refused_total_cap},
        std::pair{"refused_source_cap", &Counters::logins_refused_source_cap},
        std::pair{"evicted_total_cap", &Counters::logins_evicted_total_cap},
        std::pair{"evicted_source_cap", &Counters::logins_evicted_source_cap},
        std::pair{"startup_timeout", &Counters::logins_startup_timeout}}) {
    f.counter("pgwarden_dp_logins_total", logins_help, sum(member), {{"outcome", outcome}});
  }
  f.counter("pgwarden_dp_verdict_cache_lookups_total", "Verdict cache lookups by result.",
            sum(&Counters::verdict_cache_hits), {{"result", "hit"}});
  f.counter("pgwarden_dp_verdict_cache_lookups_total", "Verdict cache lookups by result.",
            sum(&Counters::verdict_cache_misses), {{"result", "miss"}});
  size_t pending = 0, sessions = 0;
  metrics::HistogramSnapshot prescreen, analysis;
  std::map<std::vector<std::string>, uint64_t> statements, login_failures;
  uint64_t statements_overflow = 0, login_failures_overflow = 0;
  for (const auto& w : workers_) {
    pending += w->pending_logins();
    sessions += w->session_count();
    prescreen.add(w->metrics().prescreen.snapshot());
    analysis.add(w->metrics().analysis.snapshot());
    w->metrics().statements.for_each(
        [&](const std::vector<std::string>& v, uint64_t n) { statements[v] += n; });
    w->metrics().login_failures.for_each(
        [&](const std::vector<std::string>& v, uint64_t n) { login_failures[v] += n; });
    statements_overflow += w->metrics().statements.overflowed();
    login_failures_overflow += w->metrics().login_failures.overflowed();
  }
  for (const auto& [v, n] : statements) {
    f.counter("pgwarden_dp_statements_total",
              "Statements decided, by verdict (allow, deny), rule and source (prescreen, cache, "
              "cp, cp_error, approval, recording).",
              static_cast<double>(n), {{"verdict", v[0]}, {"rule", v[1]}, {"source", v[2]}});
  }
  f.counter("pgwarden_dp_statements_label_overflow_total",
            "Decided statements not counted by rule: too many distinct label sets.",
            static_cast<double>(statements_overflow));
  for (const auto& [v, n] : login_failures) {
    f.counter("pgwarden_dp_login_failures_total",
              "Failed logins by cause (auth_failed, upstream_unreachable, upstream_scram_failed, "
              "upstream_tls_failed, ...).",
              static_cast<double>(n), {{"code", v[0]}});
  }
  f.counter("pgwarden_dp_login_failures_label_overflow_total",
            "Failed logins not counted by code: too many distinct codes.",
            static_cast<double>(login_failures_overflow));
  f.histogram("pgwarden_dp_prescreen_seconds",
              "Time to prescreen one statement (lexer + rule matcher) on a worker.", prescreen);
  f.histogram("pgwarden_dp_analysis_seconds",
              "Time from an analyse request to the control plane's answer, as the dp waits it.",
              analysis);
  f.gauge("pgwarden_dp_connections",
          "Sessions past their password message (authenticating or logged in).",
          shared_.connections.load());
  f.gauge("pgwarden_dp_sessions", "Sessions the workers hold (any phase).",
          static_cast<double>(sessions));
  f.gauge("pgwarden_dp_pending_logins", "Connections that have not sent their password yet.",
          static_cast<double>(pending));
  f.gauge("pgwarden_dp_workers", "Session engine worker threads.",
          static_cast<double>(workers_.size()));
  std::lock_guard<std::mutex> lock(runtime_mu_);
  const Limits& limits = runtime_->config.limits;
  f.gauge("pgwarden_dp_max_connections", "limits: max_connections.", limits.max_connections);
  f.gauge("pgwarden_dp_max_pending_logins", "limits: max_pending_logins.",
          limits.max_pending_logins);
  f.gauge("pgwarden_dp_rules_generation", "The rules generation the workers screen with.",
          static_cast<double>(runtime_->rules->generation));
  f.gauge("pgwarden_dp_rules", "Rules in the running generation.",
          static_cast<double>(runtime_->rules->rules));
  f.counter("pgwarden_dp_rules_reloads_total", "Rules generations installed, by outcome.",
            static_cast<double>(rules_status_.reloads_ok), {{"outcome", "ok"}});
  f.counter("pgwarden_dp_rules_reloads_total", "Rules generations installed, by outcome.",
            static_cast<double>(rules_status_.reloads_failed), {{"outcome", "failed"}});
  f.gauge("pgwarden_dp_start_time_seconds", "Unix time the process started.",
          static_cast<double>(started_unix_ms_) / 1000.0);
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
        int64_t drain_ms = 0;
        {
          std::lock_guard<std::mutex> lock(runtime_mu_);
          drain_ms = runtime_->config.limits.drain_timeout_ms;
        }
        int64_t deadline = monotonic_ms() + drain_ms;
        spdlog::info("draining: no new logins, in-flight statements get {} ms", drain_ms);
        for (auto& w : workers_) w->drain(deadline);
      }
    }
  }
  for (auto& w : workers_) w->join();
  for (auto& w : workers_) w->close_connections();
  spdlog::info("pgwarden-dp stopped: {}", counters_text());
  return 0;
}

}  // namespace pgwarden::session
