#include "dataplane/packet/rule_reloader.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "common/protocol/messages.h"
#include "dataplane/packet/wire_prescreen.h"

namespace pgwarden::packet {
namespace {

std::atomic<int> g_sighup_fd{-1};

bool write_request() {
  int fd = g_sighup_fd.load();
  return fd >= 0 && ::write(fd, "h", 1) == 1;
}

void on_sighup(int) {
  int saved = errno;
  (void)write_request();
  errno = saved;
}

}  // namespace

bool request_sighup_reload() { return write_request(); }

nlohmann::json RuleReloadStats::to_json() const {
  return {{"reloads_ok", reloads_ok},
          {"reloads_failed", reloads_failed},
          {"last_error", last_error},
          {"last_reload_unix_ms", last_reload_unix_ms}};
}

Result<std::unique_ptr<RuleReloader>> RuleReloader::start(std::vector<std::string> rule_files,
                                                          std::string running_version,
                                                          Publish publish, Notify notify) {
  std::unique_ptr<RuleReloader> r(new RuleReloader());
  r->rule_files_ = std::move(rule_files);
  r->publish_ = std::move(publish);
  r->notify_ = std::move(notify);
  r->stats_.version = std::move(running_version);
  // Nonblocking write end: a burst of signals never blocks the handler (one byte is enough).
  if (::pipe2(r->pipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return internal_error(std::string("pipe2: ") + std::strerror(errno));
  }
  r->thread_ = std::thread([p = r.get()] { p->run(); });
  return r;
}

RuleReloader::~RuleReloader() {
  if (owns_sighup_) {
    std::signal(SIGHUP, SIG_DFL);
    g_sighup_fd.store(-1);
  }
  if (pipe_[1] >= 0) {
    ::close(pipe_[1]);  // the thread sees EOF and stops
    pipe_[1] = -1;
  }
  if (thread_.joinable()) thread_.join();
  if (pipe_[0] >= 0) ::close(pipe_[0]);
}

Status RuleReloader::install_sighup() {
  int expected = -1;
  if (!g_sighup_fd.compare_exchange_strong(expected, pipe_[1])) {
    return failed_precondition("SIGHUP already routed to another rule reloader");
  }
  struct sigaction sa = {};
  sa.sa_handler = on_sighup;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (::sigaction(SIGHUP, &sa, nullptr) != 0) {
    g_sighup_fd.store(-1);
    return internal_error(std::string("sigaction(SIGHUP): ") + std::strerror(errno));
  }
  owns_sighup_ = true;
  return Status::ok();
}

void RuleReloader::request() { (void)!::write(pipe_[1], "r", 1); }

uint64_t RuleReloader::reload_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_.reloads_ok + stats_.reloads_failed;
}

RuleReloadStats RuleReloader::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void RuleReloader::run() {
  char buf[64];
  while (true) {
    pollfd p{pipe_[0], POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    // Drain every pending request: they are served by one reload.
    ssize_t n = ::read(pipe_[0], buf, sizeof(buf));
    if (n == 0) return;  // write end closed: shutting down
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return;
    }
    while (::read(pipe_[0], buf, sizeof(buf)) > 0) {
    }
    reload();
  }
}

void RuleReloader::reload() {
  int64_t now = protocol::now_unix_ms();
  nlohmann::json event{{"type", "event"},
                       {"kind", "wire_rules_reload"},
                       {"rule_files", rule_files_},
                       {"unix_ms", now}};
  Result<std::shared_ptr<const rules::CompiledRuleSet>> compiled = load_wire_rules(rule_files_);
  if (!compiled) {
    const std::string& why = compiled.status().message();
    std::fprintf(stderr, "pgwarden-dp: rule reload rejected, the running rules stay: %s\n",
                 why.c_str());
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.reloads_failed;
      stats_.last_error = why;
      stats_.last_reload_unix_ms = now;
      event["generation"] = stats_.generation;
      event["version"] = stats_.version;
    }
    event["verdict"] = "rejected";
    event["message"] = "rule reload rejected, the running rules stay: " + why;
    if (notify_) notify_(std::move(event));
    return;
  }
  std::string version = wire_rules_version(**compiled);
  size_t count = (*compiled)->rule_set().size();
  uint64_t generation = publish_(std::move(*compiled));
  std::fprintf(stderr, "pgwarden-dp: rules reloaded: generation %llu, version %s, %zu rules\n",
               static_cast<unsigned long long>(generation), version.c_str(), count);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.reloads_ok;
    stats_.generation = generation;
    stats_.version = version;
    stats_.last_error.clear();
    stats_.last_reload_unix_ms = now;
  }
  event["verdict"] = "ok";
  event["message"] = "rules reloaded: generation " + std::to_string(generation);
  event["generation"] = generation;
  event["version"] = version;
  event["rules"] = count;
  if (notify_) notify_(std::move(event));
}

}  // namespace pgwarden::packet
