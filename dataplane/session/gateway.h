// Gateway: the pgwarden-dp process. Builds the runtime (config, TLS contexts, compiled rules),
// starts the workers, and turns signals into actions: SIGTERM/SIGINT drain (no new logins,
// in-flight statements finish within limits.drain_timeout_ms, then exit), a second one stops
// at once; SIGHUP reloads config and rules atomically (a failed reload keeps the old ones).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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

 private:
  std::string config_path_;
  std::string rules_dir_;
  int workers_override_;
  std::shared_ptr<const Runtime> runtime_;
  Shared shared_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<bool> stop_requested_{false};
  std::function<void()> sighup_hook_;
};

}  // namespace pgwarden::session
