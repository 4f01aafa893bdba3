// Gateway: the pgwarden-dp process. Builds the runtime (config, TLS contexts, compiled rules),
// starts the workers, and turns signals into actions: SIGTERM/SIGINT drain (no new logins,
// in-flight statements finish within limits.drain_timeout_ms, then exit), a second one stops
// at once; SIGHUP reloads config and rules atomically (a failed reload keeps the old ones).
//
// Rules from cp: the rule sets compiled at start (the dp's own rules_dir) only bridge the time
// until cp pushes the generation it validated (event kind `rules`, right after each worker's
// hello and on every reload that changes them). A push is verified (content hash), compiled
// once on the installer thread and swapped into every worker at once; sessions pick it up at
// their next statement. From then on SIGHUP reloads limits and TLS but keeps cp's rules.
// Worker 0 reports the running generation and the login counters to cp every second
// (event dataplane_stats), so `pgwardenctl status` shows them.
// With $.metrics.dataplane_listen (or --metrics-listen) the process also serves Prometheus
// /metrics: the workers' counters, histograms and labeled counters, summed at each scrape
// (docs/monitoring.md).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics/metrics_server.h"
#include "common/status.h"
#include "dataplane/session/worker.h"

namespace pgwarden::session {

// Loads the config file and everything derived from it. Never partially applied.
// `rules_dir` holds <name>.rules files ("" = the source tree's rules/sets).
Result<std::shared_ptr<const Runtime>> build_runtime(const std::string& config_path,
                                                     const std::string& rules_dir,
                                                     int workers_override);

class Gateway {
 public:
  Gateway(std::string config_path, std::string rules_dir, int workers_override)
      : config_path_(std::move(config_path)),
        rules_dir_(std::move(rules_dir)),
        workers_override_(workers_override) {}
  ~Gateway();

  // Overrides $.metrics.dataplane_listen ("ADDRESS:PORT"); call before start().
  void set_metrics_listen(std::string listen) { metrics_listen_override_ = std::move(listen); }
  // The port the metrics endpoint listens on; 0 when it is off.
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }
  // Adds series from another part of the process (e.g. the packet layer in the same process)
  // to every scrape; `source` must be thread-safe and outlive the gateway. Before start().
  void add_metrics_source(std::function<void(metrics::Families&)> source) {
    metrics_sources_.push_back(std::move(source));
  }
  // One scrape's worth of metric families (any thread).
  void collect_metrics(metrics::Families& out) const;

  // Blocks SIGTERM/SIGINT/SIGHUP in the calling thread (workers inherit the mask), builds the
  // runtime, binds the listeners and starts the workers.
  Status start();
  // Waits for signals until drained; returns the process exit code.
  int run();
  // Makes run() stop the workers at once and return (any thread; e.g. the packet layer of the
  // same process failed to start).
  void request_stop() { stop_requested_.store(true); }
  void reload();
  // Also called on every SIGHUP run() receives, after reload() (set before run(); e.g. the
  // packet layer of the same process reloads its wire rules).
  void set_sighup_hook(std::function<void()> hook) { sighup_hook_ = std::move(hook); }
  std::string counters_text() const;
  // Thread-safe (workers' loop threads): queues a `rules` event cp pushed for the installer.
  void on_rules_pushed(nlohmann::json event);
  // The dataplane_stats event (any thread).
  nlohmann::json stats_snapshot() const;

 private:
  void installer_loop();
  void install_pushed(const nlohmann::json& bundle);

  // Guards runtime_ and rules_status_ (SIGHUP reloads on the run() thread, pushes on the
  // installer thread, stats snapshots on worker 0).
  mutable std::mutex runtime_mu_;
  struct RulesStatus {
    uint64_t reloads_ok = 0;
    uint64_t reloads_failed = 0;
    std::string last_error;
    int64_t last_reload_unix_ms = 0;
    // The content hash of cp's generation every worker screens with (stats: enforced_hash;
    // cp waits for it in a reload). "" until the first push is enforced.
    std::string enforced_hash;
  } rules_status_;
  std::string dp_name_;
  int64_t started_unix_ms_ = 0;
  std::mutex push_mu_;
  std::condition_variable push_cv_;
  std::optional<nlohmann::json> pushed_;  // the latest bundle not yet installed
  bool installer_stop_ = false;
  std::thread installer_;
  std::string config_path_;
  std::string rules_dir_;
  int workers_override_;
  std::shared_ptr<const Runtime> runtime_;
  Shared shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stop_requested_{false};
  std::function<void()> sighup_hook_;
  std::string metrics_listen_override_;
  std::vector<std::function<void(metrics::Families&)>> metrics_sources_;
  // Declared last: destroyed first, so no scrape reads a worker being destroyed.
  std::unique_ptr<metrics::MetricsServer> metrics_;
};

}  // namespace pgwarden::session
