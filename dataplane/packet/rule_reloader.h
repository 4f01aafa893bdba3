// RuleReloader: re-reads the wire rule files on request (SIGHUP in `pgwarden-dp --dpdk`) and
// compiles them on its own thread, off the packet path.
//
//   * the files parse and compile: the new set is handed to `publish` (PacketLayer::
//     publish_rules, which returns the new generation number), reloads_ok counts it;
//   * they do not: the running set stays, the error (file:line) is logged to stderr and kept
//     in last_error, reloads_failed counts it.
// Either way `notify` receives a dp -> cp event (docs/protocol.md) for the audit path:
//   {"type":"event","kind":"wire_rules_reload","verdict":"ok"|"rejected","message",
//    "rule_files":[...],"generation","version","rules","unix_ms"}
// Requests arriving while a reload runs are coalesced into one more reload.
//
// SIGHUP: install_sighup() routes the signal to this reloader (one per process) through a
// self-pipe (the handler only write()s, which is async-signal-safe); the destructor restores
// the default disposition.
//
// Thread-safety: request(), reload_count() and stats() from any thread; publish and notify
// run on the reloader's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "rules/matcher.h"

namespace pgwarden::packet {

struct RuleReloadStats {
  uint64_t reloads_ok = 0;
  uint64_t reloads_failed = 0;
  uint64_t generation = 0;  // of the last successful publish (0: none since start)
  std::string version;      // wire_rules_version() of the running set
  std::string last_error;   // of the last failed reload; cleared by a successful one
  int64_t last_reload_unix_ms = 0;
  nlohmann::json to_json() const;
};

// Asks the reloader that installed SIGHUP (install_sighup()) for a reload, as the signal
// would. For a process whose own signal loop consumes SIGHUP (blocked, sigwait) and must pass
// it on. Async-signal-safe; false when no reloader has installed SIGHUP.
bool request_sighup_reload();

class RuleReloader {
 public:
  using Publish = std::function<uint64_t(std::shared_ptr<const rules::CompiledRuleSet>)>;
  using Notify = std::function<void(nlohmann::json event)>;

  // Starts the reloader's thread. `running_version` is the version of the set in use now.
  static Result<std::unique_ptr<RuleReloader>> start(std::vector<std::string> rule_files,
                                                     std::string running_version, Publish publish,
                                                     Notify notify);
  ~RuleReloader();  // finishes a reload in progress, stops the thread, restores SIGHUP
  RuleReloader(const RuleReloader&) = delete;
  RuleReloader& operator=(const RuleReloader&) = delete;

  // Routes SIGHUP to request(). Fails if another reloader already has it.
  Status install_sighup();
  // Asks for one reload. Async-signal-safe.
  void request();
  // Reloads finished (ok or failed) so far.
  uint64_t reload_count() const;
  RuleReloadStats stats() const;

 private:
  RuleReloader() = default;
  void run();
  void reload();

  std::vector<std::string> rule_files_;
  Publish publish_;
  Notify notify_;
  int pipe_[2] = {-1, -1};
  bool owns_sighup_ = false;
  std::thread thread_;
  mutable std::mutex mu_;
  RuleReloadStats stats_;
};

}  // namespace pgwarden::packet
