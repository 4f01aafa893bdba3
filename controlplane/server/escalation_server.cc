#include "controlplane/server/escalation_server.h"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/protocol/messages.h"
#include "controlplane/recording/recording_file.h"
#include "controlplane/policy/mask_lineage.h"
#include "controlplane/server/identity_authenticator.h"
#include "controlplane/server/ring_fields.h"
#include "controlplane/vault/scram_client.h"
#include "controlplane/vault/secret.h"
#include "rules/rule_bundle.h"

namespace pgwarden::server {

namespace ec = protocol::error_code;
using protocol::json;

namespace {

constexpr size_t kMaxOutBytes = 64 << 20;
constexpr int kMaxOutstandingPerConnection = 4096;
constexpr size_t kMaxQueuedTasks = 16384;

// The audit record of a statement decision of session `s` (EscalationServer::Session):
// analyse verdicts and the recorder's holds and refusals share it.
template <class SessionT>
audit::AuditRecord decision_record(const SessionT& s, std::string decision, std::string rule,
                                   std::string reason, std::string sql) {
  return audit::AuditRecord{.event = "decision",
                            .session_id = s.id,
                            .identity = s.identity.subject,
                            .target = s.target->name,
                            .policy = s.policy->name,
                            .policy_version = s.policy->version,
                            .decision = std::move(decision),
                            .rule = std::move(rule),
                            .reason = std::move(reason),
                            .sql = std::move(sql)};
}

}  // namespace

struct EscalationServer::Connection {
  uint64_t id = 0;
  int fd = -1;
  // Loop thread only.
  protocol::FrameDecoder decoder;
  bool hello_done = false;
  bool reading_stopped = false;
  // The dp asked for rules pushes in its hello. Guarded by the server's rules_mu_.
  bool wants_rules = false;
  // Guarded by mu.
  std::mutex mu;
  std::string out;
  bool closed = false;
  bool close_after_flush = false;
  bool want_write = false;
  std::atomic<int> outstanding{0};
  // Descriptors received with the hello (SCM_RIGHTS), loop thread only; closed unless a
  // ring is attached from them.
  std::vector<int> received_fds;
  // The dp's event ring, if negotiated (set by the loop thread before any record is read).
  struct Ring {
    protocol::RingRegion region;
    int cp_wake_fd = -1;
    int dp_wake_fd = -1;
    bool draining = false;      // loop thread
    uint64_t expected_seq = 1;  // loop thread: the next write-ahead record's seq
    std::mutex mu;              // answers: backward ring, watermark
    uint64_t written = 0;
    std::set<uint64_t> answered_ahead;
    ~Ring() {
      if (cp_wake_fd >= 0) ::close(cp_wake_fd);
      if (dp_wake_fd >= 0) ::close(dp_wake_fd);
    }
  };
  std::unique_ptr<Ring> ring;
  // The dp process (SO_PEERCRED; 0 when cp cannot see it, e.g. another pid namespace) and a
  // pidfd on it (-1 when none; handed to the server's watches when its sessions are detached).
  pid_t peer_pid = 0;
  int pidfd = -1;
  // The read end of the dp process's life pipe (CpClient::process_life_fd(), received with
  // the hello; -1 when none): it hangs up when the process is gone. Watched instead of the
  // pidfd, which it makes unnecessary, also for a dp whose pid cp cannot see.
  int life_fd = -1;
  // Who the dp process is, to match the connections of one process: its pid, or minus the
  // inode of its life pipe when cp cannot see the pid; 0 when neither is known.
  int64_t peer = 0;
  ~Connection() {
    for (int fd : received_fds) ::close(fd);
    if (pidfd >= 0) ::close(pidfd);
    if (life_fd >= 0) ::close(life_fd);
  }
};

struct EscalationServer::Session {
  std::string id;
  uint64_t owner = 0;
  AuthenticatedIdentity identity;
  std::shared_ptr<const config::Config> config;  // keeps policy/target alive
  const policy::Policy* policy = nullptr;
  const config::Target* target = nullptr;
  std::string client_addr;
  bool tls = false;
  bool reregistered = false;  // admitted again from its ticket after a cp restart
  // Detached (owner 0): its dp connection closed while the dp process lived; guarded by
  // sessions_mu_ (as owner is when it changes). See the header comment.
  int64_t detached_until_ms = 0;
  int64_t detached_peer = 0;  // Connection::peer of the closed connection
  // Re-registered as ended (reregister "ended"): ended by the sweeper at this time unless its
  // session_end arrives first. Guarded by sessions_mu_.
  int64_t end_by_ms = 0;
  // The session's last write-ahead record from the event ring (its seq on the owner's ring)
  // and its answer, for a re-registration that asks about it (`ahead`, see
  // handle_reregister). Guarded by ahead_mu.
  enum class Ahead { kNone, kPending, kWritten, kRefused };
  std::mutex ahead_mu;
  uint64_t ahead_seq = 0;
  Ahead ahead_state = Ahead::kNone;
  json ahead_error;
  std::function<void()> on_ahead_answered;  // a reregister answer waiting for it
  std::mutex mu;              // serialises SCRAM steps
  std::unique_ptr<vault::ScramClient> scram;
  // Recording: events lost to a full recorder queue since the last recorded gap.
  std::atomic<uint64_t> recording_lost{0};
  std::atomic<bool> recording_behind{false};
  // A session_start the full recorder queue refused: `start` (written once, before the flag
  // is set) is retried by catch_up_recording() before the session's next statement.
  recording::SessionStart start;
  std::atomic<bool> start_pending{false};
  std::atomic<bool> ended{false};
  // SQL-level prepared statements and effects awaiting their approval request.
  SessionSqlState sql;
  // What analyses and mask plans decide masking with: `policy`, with the mask-relevant
  // settings of the policy of that name in the newest config (follow_masks(); null: `policy`
  // itself). Sessions keep every other setting of the policy they were admitted with. Every
  // policy ever published here stays alive with the session (a handler may still read one).
  std::atomic<const policy::Policy*> masks_policy{nullptr};
  std::mutex masks_mu;  // serialises follow_masks
  std::vector<std::shared_ptr<const policy::Policy>> masks_policies;
  const policy::Policy& masking() const {
    const policy::Policy* p = masks_policy.load(std::memory_order_acquire);
    return p != nullptr ? *p : *policy;
  }
};

bool EscalationServer::follow_masks(Session& s, const config::Config& cfg) {
  if (s.policy == nullptr) return false;
  const policy::Policy* next = nullptr;
  for (const policy::Policy& p : cfg.policies) {
    if (p.name == s.policy->name) next = &p;
  }
  if (next == nullptr) return false;  // the grant is gone: revalidate_sessions ends it
  std::lock_guard<std::mutex> lock(s.masks_mu);
  const policy::Policy& now = s.masking();
  if (next->masks_version <= now.masks_version) return false;
  auto merged = std::make_shared<policy::Policy>(*s.policy);
  merged->masks = next->masks;
  merged->deny_masked_in_expressions = next->deny_masked_in_expressions;
  merged->masks_version = next->masks_version;
  s.masks_policies.push_back(merged);
  s.masks_policy.store(merged.get(), std::memory_order_release);
  return true;
}

EscalationServer::EscalationServer(config::ConfigStore& store, audit::AuditLog& audit,
                                   ServerHandlers handlers)
    : store_(store),
      audit_(audit),
      handlers_(std::move(handlers)),
      roster_(handlers_.dataplanes_path) {
  if (!handlers_.authenticator) handlers_.authenticator = std::make_shared<IdentityAuthenticator>();
  if (!handlers_.analyser) handlers_.analyser = std::make_shared<FailClosedAnalyser>();
  if (!handlers_.mask_planner) handlers_.mask_planner = std::make_shared<FailClosedMaskPlanner>();
}

EscalationServer::~EscalationServer() { stop(); }

Status EscalationServer::start() {
  boot_config_ = store_.current();
  if (!boot_config_) return failed_precondition("no configuration loaded");
  if (!handlers_.rules_dir.empty()) {
    std::shared_ptr<RulesGeneration> first;
    std::vector<config::ConfigError> errors = prepare_rules(*boot_config_, &first);
    if (!errors.empty()) {
      std::string text;
      for (const auto& e : errors) text += "\n" + e.message;
      return invalid_argument("the rule sets of " + store_.path() + " do not compile:" + text);
    }
    (void)install_rules(std::move(first), boot_config_->version);
  }
  collect_orphans();
  const auto& cp = boot_config_->control_plane;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (cp.socket_path.size() >= sizeof(addr.sun_path)) {
    return invalid_argument("control_plane.socket path too long");
  }
  std::memcpy(addr.sun_path, cp.socket_path.c_str(), cp.socket_path.size() + 1);
  struct stat st;
  if (::lstat(cp.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return failed_precondition(cp.socket_path + " exists and is not a socket");
    }
    ::unlink(cp.socket_path.c_str());
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) return unavailable(std::string("socket: ") + std::strerror(errno));
  mode_t old_mask = ::umask(0117);
  int rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old_mask);
  if (rc != 0 || ::listen(listen_fd_, 128) != 0) {
    Status s = unavailable("bind/listen " + cp.socket_path + ": " + std::strerror(errno));
    ::close(listen_fd_);
    listen_fd_ = -1;
    return s;
  }
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  pool_ = std::make_unique<WorkerPool>(cp.worker_threads, kMaxQueuedTasks);
  loop_thread_ = std::thread([this] { loop(); });
  sweep_thread_ = std::thread([this] { sweep_loop(); });
  spdlog::info("pgwarden-cp serving dataplanes on {} (policy version {})", cp.socket_path,
               boot_config_->version);
  return Status::ok();
}

void EscalationServer::stop() {
  if (stopping_.exchange(true)) return;
  { std::lock_guard<std::mutex> lock(sweep_mu_); }
  sweep_cv_.notify_all();
  if (sweep_thread_.joinable()) sweep_thread_.join();
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  if (loop_thread_.joinable()) loop_thread_.join();
  if (pool_) pool_->stop();
  if (handlers_.budgets != nullptr) {
    if (Status st = handlers_.budgets->flush(); !st.is_ok()) {
      spdlog::error("budget ledger not saved: {}", st.message());
    }
  }
  std::map<int, std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns.swap(conns_);
  }
  for (auto& [fd, conn] : conns) {
    std::lock_guard<std::mutex> lock(conn->mu);
    conn->closed = true;
    ::close(conn->fd);
  }
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (const auto& [fd, pid] : peer_watches_) ::close(fd);
    peer_watches_.clear();
  }
  for (int* fd : {&listen_fd_, &epoll_fd_, &wake_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  if (boot_config_) ::unlink(boot_config_->control_plane.socket_path.c_str());
}

size_t EscalationServer::session_count() const {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  return sessions_.size();
}

config::LoadOutcome EscalationServer::reload() {
  std::shared_ptr<RulesGeneration> next_rules;
  config::LoadOutcome outcome =
      handlers_.rules_dir.empty()
          ? store_.reload()
          : store_.reload([&](const config::Config& c) { return prepare_rules(c, &next_rules); });
  audit::AuditRecord r;
  r.event = "config_reload";
  r.extra["path"] = store_.path();
  if (!outcome.ok()) {
    bump(Counter::k_reloads_rejected);
    r.decision = "rejected";
    r.reason = outcome.error_text();
    auto current = store_.current();
    r.policy_version = current ? current->version : 0;
    {
      std::lock_guard<std::mutex> lock(rules_mu_);
      if (rules_) r.extra["rules_generation"] = rules_->generation;
    }
    spdlog::error("config reload rejected, keeping policy version {}:\n{}", r.policy_version,
                  outcome.error_text());
    audit_.record(r);
    return outcome;
  }
  bump(Counter::k_reloads_applied);
  r.decision = "applied";
  r.policy_version = outcome.config->version;
  if (next_rules) {
    uint64_t before = 0;
    {
      std::lock_guard<std::mutex> lock(rules_mu_);
      if (rules_) before = rules_->generation;
    }
    auto installed = install_rules(std::move(next_rules), outcome.config->version);
    r.extra["rules_generation"] = installed->generation;
    r.extra["rules_hash"] = installed->hash;
    r.extra["rules_changed"] = installed->generation != before;
  }
  spdlog::info("config reloaded: policy version {}", outcome.config->version);
  audit_.record(r);
  json ev = {
      {"type", "event"}, {"kind", "policy_version"}, {"policy_version", outcome.config->version}};
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto& [fd, c] : conns_) conns.push_back(c);
  }
  for (auto& c : conns) send(c, ev);
  // Sessions keep the policy they were admitted with, but not a grant the new config took
  // away (a removed key, policy, group mapping, target or provider).
  (void)revalidate_sessions("config_reload");
  // ... and not masks the operator changed: from now on cp decides their statements with the
  // new masks (the dataplane re-checks what was decided before, by the pushed masks versions).
  follow_masks_all(*outcome.config);
  return outcome;
}

std::vector<config::ConfigError> EscalationServer::prepare_rules(
    const config::Config& cfg, std::shared_ptr<RulesGeneration>* out) const {
  std::vector<std::vector<std::string>> lists;
  for (const auto& p : cfg.policies) lists.push_back(p.rule_sets);
  auto fail = [](const std::string& text) {
    std::vector<config::ConfigError> errors;
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      if (end > start)
        errors.push_back({"$.policies[].rule_sets", text.substr(start, end - start)});
      start = end + 1;
    }
    return errors;
  };
  auto bundle = rules::RuleBundle::read(handlers_.rules_dir, lists);
  if (!bundle.is_ok()) return fail(bundle.status().message());
  for (const auto& p : cfg.policies) {
    bundle->policy_lists[p.name] = rules::rule_set_list_key(p.rule_sets);
    bundle->policy_masks[p.name] = {p.masks_version,
                                    rules::sha256_hex(policy::masks_fingerprint(p)),
                                    !p.masks.empty()};
  }
  bundle->hash = bundle->compute_hash();
  auto compiled = bundle->compile();
  if (!compiled.is_ok()) return fail(compiled.status().message());
  auto next = std::make_shared<RulesGeneration>();
  next->hash = bundle->hash;
  next->lists = bundle->lists.size();
  next->files = bundle->files.size();
  next->rule_file_bytes = bundle->rule_file_bytes();
  for (const auto& [key, set] : *compiled) next->rules += set->rule_set().size();
  // Compiled once, here: the dp loads these databases instead of compiling (it compiles the
  // sources only if they do not load on its host, or if they would not fit one frame).
  bundle->attach_databases(*compiled);
  // The frame must fit the dp <-> cp channel (the generation number added later is a few
  // bytes; leave room for it).
  json probe = {{"type", "event"}, {"kind", "rules"}, {"bundle", bundle->to_json()}};
  size_t bytes = probe.dump().size();
  if (bytes + 64 > protocol::kMaxFrameBytes && !bundle->databases.empty()) {
    bundle->databases.clear();
    probe = {{"type", "event"}, {"kind", "rules"}, {"bundle", bundle->to_json()}};
    bytes = probe.dump().size();
  }
  if (bytes + 64 > protocol::kMaxFrameBytes) {
    return fail("the rule set files (" + std::to_string(next->rule_file_bytes) +
                " bytes) do not fit one dp <-> cp frame (" + std::to_string(bytes) +
                " of at most " + std::to_string(protocol::kMaxFrameBytes) + " bytes encoded)");
  }
  next->databases_shipped = !bundle->databases.empty();
  next->event = std::move(probe);
  *out = std::move(next);
  return {};
}

std::shared_ptr<const EscalationServer::RulesGeneration> EscalationServer::install_rules(
    std::shared_ptr<RulesGeneration> next, uint64_t version) {
  std::lock_guard<std::mutex> lock(rules_mu_);
  if (rules_ && rules_->hash == next->hash) return rules_;  // same content: nothing to push
  next->generation = version;
  next->installed_unix_ms = protocol::now_unix_ms();
  next->event["bundle"]["generation"] = version;
  rules_ = std::move(next);
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> c(conns_mu_);
    for (auto& [fd, conn] : conns_) conns.push_back(conn);
  }
  size_t pushed = 0;
  for (auto& c : conns) {
    if (!c->wants_rules) continue;
    send(c, rules_->event);
    ++pushed;
  }
  if (pushed > 0) bump(Counter::k_rules_pushes);
  spdlog::info(
      "rules generation {} ({} lists, {} rules, sha256 {}) pushed to {} dataplane "
      "connection(s)",
      rules_->generation, rules_->lists, rules_->rules, rules_->hash.substr(0, 12), pushed);
  return rules_;
}

std::string EscalationServer::rules_ack_key(const Connection& conn) {
  // The connections of one dp process share its peer; one of them acknowledges for all.
  return conn.peer != 0 ? "p" + std::to_string(conn.peer) : "c" + std::to_string(conn.id);
}

std::vector<std::string> EscalationServer::wait_rules_enforced(int64_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  // The dataplanes that asked for rules and have not acknowledged the running generation's
  // content. rules_mu_ and acks_mu_ are taken one after the other, never nested this way round
  // (handle_event takes acks_mu_ under rules_mu_ when the hello drains the ring).
  auto lagging = [this] {
    std::string want;
    std::vector<std::pair<std::string, int64_t>> dps;  // ack key, peer
    {
      std::lock_guard<std::mutex> lock(rules_mu_);
      if (!rules_) return std::vector<std::string>{};
      want = rules_->hash;
      std::vector<std::shared_ptr<Connection>> conns;
      {
        std::lock_guard<std::mutex> c(conns_mu_);
        for (auto& [fd, conn] : conns_) conns.push_back(conn);
      }
      std::set<std::string> seen;
      for (auto& conn : conns) {
        if (!conn->wants_rules) continue;
        {
          std::lock_guard<std::mutex> cl(conn->mu);
          if (conn->closed) continue;
        }
        std::string key = rules_ack_key(*conn);
        if (seen.insert(key).second) dps.emplace_back(std::move(key), conn->peer);
      }
    }
    std::vector<std::string> out;
    std::lock_guard<std::mutex> lock(acks_mu_);
    for (const auto& [key, peer] : dps) {
      auto acked = rules_acked_.find(key);
      if (acked != rules_acked_.end() && acked->second == want) continue;
      auto name = rules_dp_names_.find(key);
      out.push_back(name != rules_dp_names_.end() ? name->second : dataplane_name(peer));
    }
    return out;
  };
  for (;;) {
    uint64_t seen = 0;
    {
      std::lock_guard<std::mutex> lock(acks_mu_);
      seen = ack_events_;
    }
    std::vector<std::string> behind = lagging();
    if (behind.empty() || stopping_) return behind;
    std::unique_lock<std::mutex> lock(acks_mu_);
    if (!rules_cv_.wait_until(lock, deadline, [&] { return ack_events_ != seen; })) {
      lock.unlock();
      return lagging();
    }
  }
}

json EscalationServer::rules_status() const {
  std::lock_guard<std::mutex> lock(rules_mu_);
  if (!rules_) return json{{"generation", 0}};
  return json{{"generation", rules_->generation},
              {"hash", rules_->hash},
              {"lists", rules_->lists},
              {"files", rules_->files},
              {"rules", rules_->rules},
              {"rule_file_bytes", rules_->rule_file_bytes},
              {"installed_unix_ms", rules_->installed_unix_ms},
              {"databases_shipped", rules_->databases_shipped},
              {"rules_dir", handlers_.rules_dir}};
}

void EscalationServer::loop() {
  epoll_event events[64];
  while (!stopping_) {
    int n = ::epoll_wait(epoll_fd_, events, 64, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("epoll_wait: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n && !stopping_; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) continue;
      if (fd == listen_fd_) {
        accept_all();
        continue;
      }
      std::shared_ptr<Connection> conn;
      bool ring_wake = false;
      bool peer_exit = false;
      {
        std::lock_guard<std::mutex> lock(conns_mu_);
        auto it = conns_.find(fd);
        if (it != conns_.end()) {
          conn = it->second;
        } else if (auto r = ring_fds_.find(fd); r != ring_fds_.end()) {
          conn = r->second;
          ring_wake = true;
        } else {
          peer_exit = peer_watches_.count(fd) != 0;
        }
      }
      if (peer_exit) on_peer_exit(fd);
      if (!conn) continue;
      if (ring_wake) {
        // The dp's eventfd is edge-triggered (attach_ring): nothing to read.
        drain_ring(conn);
        continue;
      }
      if (events[i].events & EPOLLOUT) on_writable(conn);
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) on_readable(conn);
    }
    // One write per batch for the event lines audited above (not one per line).
    if (audit_unflushed_) {
      audit_.flush();
      audit_unflushed_ = false;
    }
    push_audit_state();
  }
}

void EscalationServer::push_audit_state() {
  const bool failing = audit_.failing();
  if (audit_pushed_.exchange(failing) == failing) return;
  // Every dp connection: while failing, the dps send cached allows as write-ahead records too.
  json ev = {{"type", "event"}, {"kind", "audit"}, {"failing", failing}};
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto& [fd, c] : conns_) conns.push_back(c);
  }
  for (auto& c : conns) {
    if (c->hello_done) send(c, ev);
  }
}

void EscalationServer::accept_all() {
  while (true) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    auto conn = std::make_shared<Connection>();
    conn->fd = fd;
    ucred cred{};
    socklen_t cred_len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) == 0 && cred.pid > 0) {
      conn->peer_pid = cred.pid;
      conn->peer = cred.pid;
      conn->pidfd = static_cast<int>(::syscall(SYS_pidfd_open, cred.pid, 0));
    }
    size_t count;
    {
      std::lock_guard<std::mutex> lock(conns_mu_);
      conn->id = next_conn_id_++;
      count = conns_.size();
      if (count < static_cast<size_t>(boot_config_->control_plane.max_dp_connections)) {
        conns_[fd] = conn;
      }
    }
    if (count >= static_cast<size_t>(boot_config_->control_plane.max_dp_connections)) {
      bump(Counter::k_connections_refused);
      std::string frame;
      (void)protocol::append_message(
          frame,
          protocol::make_error(0, ec::kOverloaded,
                               resource_exhausted("too many dataplane connections", "53300")));
      (void)!::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    bump(Counter::k_connections_accepted);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
}

void EscalationServer::on_readable(const std::shared_ptr<Connection>& conn) {
  char buf[65536];
  while (true) {
    iovec iov{buf, sizeof buf};
    alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(conn->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    for (cmsghdr* c = n >= 0 ? CMSG_FIRSTHDR(&msg) : nullptr; c != nullptr;
         c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t k = 0; k < count; ++k) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
        // Only the hello may carry descriptors (the event ring's and the dp's life pipe);
        // anything else is closed.
        if (!conn->hello_done && conn->received_fds.size() < 4) {
          conn->received_fds.push_back(fd);
        } else {
          ::close(fd);
        }
      }
    }
    if (n == 0) return close_connection(conn);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      return close_connection(conn);
    }
    if (conn->reading_stopped) continue;  // draining until the peer closes
    conn->decoder.feed(std::string_view(buf, static_cast<size_t>(n)));
    while (!conn->reading_stopped) {
      auto frame = conn->decoder.next();
      if (!frame.is_ok()) {
        bump(Counter::k_frames_bad);
        fail_connection(conn, 0, ec::kBadFrame, frame.status());
        break;
      }
      if (!frame->has_value()) break;
      // Records the dp put on its ring before it sent this frame are handled first.
      if (conn->ring) drain_ring(conn);
      on_frame(conn, **frame);
    }
  }
}

void EscalationServer::on_writable(const std::shared_ptr<Connection>& conn) {
  std::lock_guard<std::mutex> lock(conn->mu);
  if (conn->closed) return;
  while (!conn->out.empty()) {
    ssize_t n = ::send(conn->fd, conn->out.data(), conn->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      conn->out.clear();
      ::shutdown(conn->fd, SHUT_RDWR);
      return;
    }
    conn->out.erase(0, static_cast<size_t>(n));
  }
  if (conn->want_write) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = conn->fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn->fd, &ev);
    conn->want_write = false;
  }
  if (conn->close_after_flush) ::shutdown(conn->fd, SHUT_RDWR);
}

void EscalationServer::send(const std::shared_ptr<Connection>& conn, const json& message) {
  std::string frame;
  Status s = protocol::append_message(frame, message);
  if (!s.is_ok()) {
    uint64_t id = message.contains("id") && message["id"].is_number_unsigned()
                      ? message["id"].get<uint64_t>()
                      : 0;
    (void)protocol::append_message(frame, protocol::make_error(id, ec::kInternal, s));
  }
  std::lock_guard<std::mutex> lock(conn->mu);
  if (conn->closed) return;
  bool was_empty = conn->out.empty();
  conn->out += frame;
  if (conn->out.size() > kMaxOutBytes) {
    // The dp stopped reading: give up on it rather than buffer without bound.
    spdlog::warn("dp connection {} not reading its responses; closing", conn->id);
    conn->out.clear();
    ::shutdown(conn->fd, SHUT_RDWR);
    return;
  }
  if (!was_empty) return;  // the loop is already flushing
  while (!conn->out.empty()) {
    ssize_t n = ::send(conn->fd, conn->out.data(), conn->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        conn->out.clear();
        ::shutdown(conn->fd, SHUT_RDWR);
      }
      break;
    }
    conn->out.erase(0, static_cast<size_t>(n));
  }
  if (!conn->out.empty() && !conn->want_write) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.fd = conn->fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, conn->fd, &ev);
    conn->want_write = true;
  } else if (conn->out.empty() && conn->close_after_flush) {
    ::shutdown(conn->fd, SHUT_RDWR);
  }
}

void EscalationServer::fail_connection(const std::shared_ptr<Connection>& conn, uint64_t id,
                                       std::string_view code, const Status& status) {
  spdlog::warn("dp connection {}: {} ({}); closing", conn->id, status.message(), code);
  conn->reading_stopped = true;
  {
    std::lock_guard<std::mutex> lock(conn->mu);
    conn->close_after_flush = true;
  }
  send(conn, protocol::make_error(id, code, status));
}

void EscalationServer::close_connection(const std::shared_ptr<Connection>& conn) {
  // What the dp published before it closed (its sessions' last events) is recorded first, as
  // frames before the end of the socket are.
  if (conn->ring && !conn->closed) drain_ring(conn);
  {
    std::lock_guard<std::mutex> lock(conn->mu);
    if (conn->closed) return;
    conn->closed = true;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn->fd, nullptr);
    ::close(conn->fd);
  }
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    conns_.erase(conn->fd);
    if (conn->ring) {
      ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, conn->ring->cp_wake_fd, nullptr);
      ring_fds_.erase(conn->ring->cp_wake_fd);
    }
  }
  dataplanes_.disconnected(conn->id);
  {
    // A reload waiting for this dp's rules acknowledgement stops waiting for a gone connection.
    std::lock_guard<std::mutex> lock(acks_mu_);
    ++ack_events_;
  }
  rules_cv_.notify_all();
  // A dp that lives on reconnects and re-registers its sessions: they wait for it, detached
  // (their recordings stay open). A dp that exited took its sessions with it.
  const bool exited = peer_exited(*conn);
  const int64_t until = protocol::now_unix_ms() + kReattachWindowMs;
  std::vector<std::shared_ptr<Session>> dropped;
  std::vector<std::string> detached;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      Session& s = *it->second;
      if (s.owner != conn->id) {
        ++it;
      } else if (exited) {
        dropped.push_back(it->second);
        it = sessions_.erase(it);
      } else {
        s.owner = 0;
        s.detached_until_ms = until;
        s.detached_peer = conn->peer;
        detached.push_back(s.id);
        ++it;
      }
    }
  }
  if (!detached.empty()) {
    counters_[static_cast<int>(Counter::k_sessions_detached)].fetch_add(detached.size());
    watch_peer(*conn);
    // Their statements waiting for an approval failed at the dp with the connection.
    if (handlers_.approvals != nullptr) {
      for (const std::string& id : detached) (void)handlers_.approvals->abandon_session(id);
    }
  }
  if (exited) roster_.exited(conn->peer_pid);
  const std::string reason =
      dataplane_name(conn->peer) + " exited with the session open: the session ended abnormally";
  for (const auto& s : dropped) {
    bump(Counter::k_sessions_abandoned);
    end_session(s, reason);
  }
  spdlog::info(
      "dp connection {} closed ({} sessions ended, {} detached waiting for the dp to "
      "re-register them)",
      conn->id, dropped.size(), detached.size());
}

std::string EscalationServer::dataplane_name(int64_t peer) {
  return peer > 0 ? "the dataplane process (pid " + std::to_string(peer) + ")"
                  : "the dataplane process (in a pid namespace the control plane cannot see)";
}

int& EscalationServer::exit_watch_fd(Connection& conn) {
  // A pipe read end with no writer left is readable (EOF) and hangs up; a pidfd is readable
  // once the process exited.
  return conn.life_fd >= 0 ? conn.life_fd : conn.pidfd;
}

bool EscalationServer::peer_exited(Connection& conn) {
  const int fd = exit_watch_fd(conn);
  if (fd < 0) return false;
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP)) != 0;
}

void EscalationServer::watch_peer(Connection& conn) {
  int& fd = exit_watch_fd(conn);
  if (fd < 0 || conn.peer == 0) return;
  std::lock_guard<std::mutex> lock(conns_mu_);
  for (const auto& [watched, peer] : peer_watches_) {
    if (peer == conn.peer) return;  // watched already (another worker's connection)
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return;
  peer_watches_[fd] = conn.peer;
  fd = -1;  // the watch owns it now
}

void EscalationServer::on_peer_exit(int fd) {
  int64_t peer = 0;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    auto it = peer_watches_.find(fd);
    if (it == peer_watches_.end()) return;
    peer = it->second;
    peer_watches_.erase(it);
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
  }
  if (peer > 0) roster_.exited(static_cast<pid_t>(peer));
  end_detached(
      [peer](const Session& s) { return s.detached_peer == peer; },
      dataplane_name(peer) + " exited with the session open: the session ended abnormally");
}

void EscalationServer::end_detached(const std::function<bool(const Session&)>& pred,
                                    const std::string& reason) {
  std::vector<std::shared_ptr<Session>> gone;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second->owner == 0 && pred(*it->second)) {
        gone.push_back(it->second);
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& s : gone) {
    bump(Counter::k_sessions_abandoned);
    audit::AuditRecord r = audit_base(s, "session_end", s->id);
    r.decision = "abnormal";
    r.reason = reason;
    audit_.record(r);
    spdlog::warn("session {} of {}: {}", s->id, s->identity.subject, reason);
    end_session(s, reason);
  }
}

void EscalationServer::on_frame(const std::shared_ptr<Connection>& conn,
                                const std::string& payload) {
  auto parsed = protocol::parse_payload(payload);
  if (!parsed.is_ok()) {
    bump(Counter::k_frames_bad);
    return fail_connection(conn, 0, ec::kBadFrame, parsed.status());
  }
  json& j = *parsed;
  std::string type =
      j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>() : std::string();
  if (type == "event") {
    if (conn->hello_done) return handle_event(conn, std::move(j));
    return fail_connection(conn, 0, ec::kHelloRequired,
                           invalid_argument("the first frame must be hello", "08P01"));
  }
  bool has_id = j.contains("id") && j["id"].is_number_unsigned();
  uint64_t id = has_id ? j["id"].get<uint64_t>() : 0;
  if (!has_id) {
    bump(Counter::k_frames_bad);
    return fail_connection(conn, 0, ec::kBadFrame,
                           invalid_argument("request without a numeric \"id\"", "08P01"));
  }
  if (!conn->hello_done) {
    if (type != "hello") {
      return fail_connection(conn, id, ec::kHelloRequired,
                             invalid_argument("the first frame must be hello", "08P01"));
    }
    auto hello = protocol::Hello::from_json(j);
    if (!hello.is_ok()) return fail_connection(conn, id, ec::kBadRequest, hello.status());
    if (hello->protocol != protocol::kProtocolVersion) {
      return fail_connection(
          conn, id, ec::kUnsupportedProtocol,
          invalid_argument("protocol " + std::to_string(hello->protocol) +
                               " is not supported; this control plane speaks protocol 1",
                           "08P01"));
    }
    conn->hello_done = true;
    auto cfg = store_.current();
    spdlog::info("dp connection {}: hello from {}", conn->id, hello->dp);
    roster_.connected(conn->peer_pid);  // a dataplane (not a probe of the socket)
    // The dp's life pipe rides after the ring's three descriptors ("fds": [..., "life"]).
    if (conn->received_fds.size() == 4) {
      conn->life_fd = conn->received_fds.back();
      conn->received_fds.pop_back();
      struct stat life {};
      if (conn->peer == 0 && ::fstat(conn->life_fd, &life) == 0) {
        conn->peer = -static_cast<int64_t>(life.st_ino);
      }
    }
    std::lock_guard<std::mutex> lock(rules_mu_);
    json ok = {{"protocol", protocol::kProtocolVersion}, {"policy_version", cfg->version}};
    if (rules_) ok["rules_generation"] = rules_->generation;
    // PGWARDEN_CP_EVENT_RING=off answers like a control plane without the ring (diagnostics,
    // and the tests of the dp's JSON fallback).
    static const bool ring_enabled = [] {
      const char* e = std::getenv("PGWARDEN_CP_EVENT_RING");
      return e == nullptr || std::string_view(e) != "off";
    }();
    if (ring_enabled && j.contains("ring") && j["ring"].is_object() &&
        j["ring"].value("version", 0) == static_cast<int>(protocol::RingRegion::kVersion) &&
        attach_ring(conn, conn->received_fds)) {
      ok["ring"] = true;
    }
    for (int fd : conn->received_fds) ::close(fd);
    conn->received_fds.clear();
    send(conn, protocol::make_ok(id, std::move(ok)));
    // Park on the new ring now: until cp has parked once, the dp's publishes wake nobody, and
    // records of an otherwise idle connection (the dp's periodic stats) would wait for the
    // next socket frame.
    if (conn->ring) drain_ring(conn);
    // Right behind the hello answer, under rules_mu_: a concurrent reload either pushes to
    // this connection after us or installed before we read rules_.
    if (j.contains("rules") && j["rules"].is_boolean() && j["rules"].get<bool>()) {
      conn->wants_rules = true;
      if (rules_) send(conn, rules_->event);
    }
    if (audit_pushed_.load()) send(conn, {{"type", "event"}, {"kind", "audit"}, {"failing", true}});
    return;
  }
  bump(Counter::k_requests_total);
  auto header = protocol::parse_request_header(j);
  if (!header.is_ok())
    return send(conn, protocol::make_error(id, ec::kBadRequest, header.status()));
  if (header->deadline_ms <= protocol::now_unix_ms()) {
    bump(Counter::k_requests_deadline);
    return send(conn, protocol::make_error(id, ec::kDeadlineExceeded,
                                           deadline_exceeded("request arrived past its deadline")));
  }
  dispatch(conn, std::move(j), id, header->type, header->deadline_ms);
}

void EscalationServer::dispatch(const std::shared_ptr<Connection>& conn, json request, uint64_t id,
                                std::string type, int64_t deadline_ms) {
  if (type == "approval") return handle_approval(conn, request, id, deadline_ms);
  // Liveness probe of the dp (a hung cp keeps its socket open): answered here, on the
  // connection's loop thread, which is what a stopped process cannot do.
  if (type == "ping") return send(conn, protocol::make_ok(id, json::object()));
  // Appended inline on the loop thread, like events: the record keeps its place among the
  // session's events, and append never blocks. The answer is sent when it is written.
  if (type == "record") {
    json answer = handle_record(conn, std::move(request), id);
    if (!answer.is_null()) send(conn, answer);  // null: answered once the record is written
    return;
  }
  // Inline too: a re-registered session must exist before its next request on this
  // connection is looked at.
  if (type == "reregister") {
    json answer = handle_reregister(conn, request, id);
    if (!answer.is_null()) send(conn, answer);  // null: answered once its `ahead` is
    return;
  }
  static const char* kPooled[] = {"authenticate", "scram_start", "scram_continue",
                                  "scram_finish", "analyse",     "mask_plan"};
  if (std::find_if(std::begin(kPooled), std::end(kPooled),
                   [&](const char* t) { return type == t; }) == std::end(kPooled)) {
    bump(Counter::k_requests_unknown_type);
    std::string shown = type.substr(0, 64);
    return send(conn, protocol::make_error(
                          id, ec::kUnknownType,
                          invalid_argument("unknown request type \"" + shown + "\"", "08P01")));
  }
  if (conn->outstanding.load() >= kMaxOutstandingPerConnection) {
    bump(Counter::k_requests_overloaded);
    return send(conn, protocol::make_error(id, ec::kOverloaded,
                                           resource_exhausted("too many outstanding requests on "
                                                              "this connection",
                                                              "53300")));
  }
  conn->outstanding.fetch_add(1);
  bool queued = pool_->submit([this, conn, request = std::move(request), id, type, deadline_ms] {
    json response;
    if (protocol::now_unix_ms() >= deadline_ms) {
      bump(Counter::k_requests_deadline);
      response = protocol::make_error(id, ec::kDeadlineExceeded,
                                      deadline_exceeded("request waited past its deadline"));
    } else {
      response = handle(conn, type, request, id);
      if (protocol::now_unix_ms() > deadline_ms) {
        bump(Counter::k_requests_deadline);
        response = protocol::make_error(id, ec::kDeadlineExceeded,
                                        deadline_exceeded("request finished past its deadline"));
      }
    }
    conn->outstanding.fetch_sub(1);
    send(conn, response);
  });
  if (!queued) {
    conn->outstanding.fetch_sub(1);
    bump(Counter::k_requests_overloaded);
    send(conn, protocol::make_error(id, ec::kOverloaded,
                                    resource_exhausted("control plane overloaded", "53300")));
  }
}

json EscalationServer::handle(const std::shared_ptr<Connection>& conn, const std::string& type,
                              const json& request, uint64_t id) {
  try {
    if (type == "authenticate") return handle_authenticate(conn, request, id);
    if (type == "analyse") return handle_analyse(conn, request, id);
    if (type == "mask_plan") return handle_mask_plan(conn, request, id);
    return handle_scram(conn, type, request, id);
  } catch (const std::exception& e) {
    // Handlers do not throw by design; this keeps a bug from killing the worker thread.
    spdlog::error("handler {} threw: {}", type, e.what());
    return protocol::make_error(id, ec::kInternal, internal_error("internal error"));
  }
}

std::shared_ptr<EscalationServer::Session> EscalationServer::find_session(
    const std::shared_ptr<Connection>& conn, const std::string& session_id) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return nullptr;
  const Session& s = *it->second;
  if (s.owner == conn->id) return it->second;
  // Detached from a closed connection of the same dp process: the events that connection did
  // not deliver come on this one (a session that ended meanwhile is never re-registered).
  if (s.owner == 0 && s.detached_peer != 0 && s.detached_peer == conn->peer) return it->second;
  return nullptr;
}

json EscalationServer::handle_authenticate(const std::shared_ptr<Connection>& conn,
                                           const json& request, uint64_t id) {
  auto req = protocol::AuthenticateRequest::from_json(request);
  if (!req.is_ok()) return protocol::make_error(id, ec::kBadRequest, req.status());
  auto cfg = store_.current();
  audit::AuditRecord r;
  r.event = "authenticate";
  r.session_id = req->session_id;
  r.target = req->target;
  r.client_addr = req->client_addr;
  r.policy_version = cfg->version;
  r.extra["user"] = req->user;
  r.extra["client_tls"] = req->tls;
  auto reject = [&](std::string_view code, const Status& s) {
    bump(Counter::k_auth_rejected);
    r.decision = "rejected";
    r.rule = std::string(code);
    r.reason = s.message();
    audit_.record(r);
    return protocol::make_error(id, code, s);
  };

  const config::Target* target = cfg->find_target(req->target);
  if (target == nullptr) {
    return reject(ec::kUnknownTarget,
                  Status(StatusCode::kNotFound,
                         "database \"" + req->target.substr(0, 64) + "\" does not exist", "3D000"));
  }
  AuthOutcome auth = handlers_.authenticator->authenticate(*cfg, *req);
  if (!auth.ok) return reject(auth.code.empty() ? ec::kInvalidToken : auth.code, auth.error);
  r.identity = auth.identity.subject;
  r.issuer = auth.identity.issuer;
  r.groups = auth.identity.groups;
  if (!auth.identity.key_id.empty()) r.extra["key_id"] = auth.identity.key_id;
  if (handlers_.revocations != nullptr) {
    if (auto rev = handlers_.revocations->find(auth.identity.subject, auth.identity.key_id,
                                               protocol::now_unix_ms())) {
      bump(Counter::k_auth_revoked);
      std::string what =
          rev->name == auth.identity.subject ? "identity " + rev->name : "key " + rev->name;
      std::string msg = what + " is revoked";
      if (!rev->reason.empty()) msg += " (" + rev->reason + ")";
      msg += rev->until_ms > 0 ? " until " + std::to_string(rev->until_ms) + " (unix ms)"
                               : "; ask an operator to lift it (pgwardenctl identities unrevoke)";
      return reject(ec::kRevoked, unauthenticated(msg));
    }
  }
  const policy::Policy* pol = cfg->select_policy(auth.identity.groups, target->name);
  if (pol == nullptr) {
    return reject(ec::kNoPolicy, unauthenticated("no policy grants " + auth.identity.subject +
                                                 " access to " + target->name));
  }
  r.policy = pol->name;

  auto session = std::make_shared<Session>();
  session->id = req->session_id;
  session->owner = conn->id;
  session->identity = auth.identity;
  session->config = cfg;
  session->policy = pol;
  session->target = target;
  session->client_addr = req->client_addr;
  session->tls = req->tls;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    if (sessions_.count(req->session_id)) {
      return reject(
          ec::kBadRequest,
          invalid_argument("session_id " + req->session_id + " is already in use", "08P01"));
    }
    if (sessions_.size() >= static_cast<size_t>(cfg->control_plane.max_sessions)) {
      return reject(ec::kOverloaded, resource_exhausted("too many sessions", "53300"));
    }
    sessions_[req->session_id] = session;
  }
  // A reload that landed since `cfg` was read may have missed this session (follow_masks_all
  // runs after the new config is current, so one of the two sees it).
  if (auto now = store_.current(); now != nullptr && now != cfg) follow_masks(*session, *now);
  const policy::Policy& masking = session->masking();

  protocol::AuthenticateResponse resp;
  resp.identity = {auth.identity.subject, auth.identity.issuer, auth.identity.groups};
  resp.policy = {.name = pol->name,
                 .version = pol->version,
                 .read_only = pol->read_only,
                 .rule_sets = pol->rule_sets,
                 .recording = pol->recording,
                 .allow_function_call = pol->allow_function_call,
                 .recording_required =
                     pol->recording_required && pol->recording != policy::RecordingLevel::kOff,
                 .masks_values = !masking.masks.empty(),
                 .masks_version = masking.masks_version};
  resp.upstream = {.host = target->host,
                   .port = target->port,
                   .unix_socket = target->unix_socket,
                   .database = target->database,
                   .role = target->role,
                   .tls_mode = target->tls_mode,
                   .ca_file = target->ca_file,
                   .pool_mode = target->pool_mode,
                   .pool_size = target->pool_size,
                   .pool_wait_timeout_ms = target->pool_wait_timeout_ms};
  if (pol->read_only) resp.startup_parameters["default_transaction_read_only"] = "on";
  bump(Counter::k_auth_accepted);
  r.decision = "ok";
  audit_.record(r);
  if (handlers_.on_session)
    handlers_.on_session(session->id, auth.identity.subject, target->name, true);
  json answer = resp.to_json();
  if (handlers_.tickets != nullptr) {
    answer["ticket"] =
        handlers_.tickets->issue(TicketClaims{.session_id = session->id,
                                              .subject = auth.identity.subject,
                                              .issuer = auth.identity.issuer,
                                              .groups = auth.identity.groups,
                                              .provider = auth.identity.provider,
                                              .key_id = auth.identity.key_id,
                                              .policy = pol->name,
                                              .target = target->name,
                                              .client_addr = req->client_addr,
                                              .tls = req->tls,
                                              .token_exp_ms = auth.identity.expires_at_ms,
                                              .issued_ms = protocol::now_unix_ms()});
  }
  if (pol->allowed_startup_settings) {
    answer["policy"]["allowed_startup_settings"] = *pol->allowed_startup_settings;
  }
  if (json b = budget_states(auth.identity); !b.empty()) answer["budgets"] = std::move(b);
  return protocol::make_ok(id, answer);
}

json EscalationServer::handle_scram(const std::shared_ptr<Connection>& conn,
                                    const std::string& type, const json& request, uint64_t id) {
  std::string session_id;
  Result<json> out = json::object();
  auto session_of = [&](const std::string& sid) {
    session_id = sid;
    return find_session(conn, sid);
  };
  auto unknown = [&] {
    return protocol::make_error(
        id, ec::kUnknownSession,
        invalid_argument("no authenticated session \"" + session_id.substr(0, 128) + "\"",
                         "08P01"));
  };
  auto scram_error = [&](const std::shared_ptr<Session>& s, const Status& st) {
    bump(Counter::k_scram_failed);
    audit::AuditRecord r{.event = "upstream_auth",
                         .session_id = s->id,
                         .identity = s->identity.subject,
                         .target = s->target->name,
                         .decision = "failed",
                         .reason = st.message()};
    r.extra["step"] = type;
    audit_.record(r);
    s->scram.reset();
    return protocol::make_error(id, ec::kScramFailed, st);
  };

  if (type == "scram_start") {
    auto req = protocol::ScramStartRequest::from_json(request);
    if (!req.is_ok()) return protocol::make_error(id, ec::kBadRequest, req.status());
    auto s = session_of(req->session_id);
    if (!s) return unknown();
    std::lock_guard<std::mutex> lock(s->mu);
    if (std::find(req->mechanisms.begin(), req->mechanisms.end(), vault::kScramSha256) ==
        req->mechanisms.end()) {
      bump(Counter::k_scram_failed);
      return protocol::make_error(
          id, ec::kNoMechanism,
          unauthenticated("upstream offers no SASL mechanism pgwarden supports (needs "
                          "SCRAM-SHA-256)"));
    }
    auto secret = vault::read_secret(s->target->credential);
    if (!secret.is_ok()) {
      spdlog::error("target {}: {}", s->target->name, secret.status().message());
      bump(Counter::k_scram_failed);
      return protocol::make_error(
          id, ec::kCredentialUnavailable,
          unavailable("the gateway cannot read the credential for target " + s->target->name));
    }
    s->scram = std::make_unique<vault::ScramClient>(std::move(secret).value());
    auto first = s->scram->client_first_message();
    if (!first.is_ok()) return scram_error(s, first.status());
    return protocol::make_ok(
        id, {{"mechanism", std::string(vault::kScramSha256)}, {"client_first", *first}});
  }
  if (type == "scram_continue") {
    auto req = protocol::ScramContinueRequest::from_json(request);
    if (!req.is_ok()) return protocol::make_error(id, ec::kBadRequest, req.status());
    auto s = session_of(req->session_id);
    if (!s) return unknown();
    std::lock_guard<std::mutex> lock(s->mu);
    if (!s->scram) return scram_error(s, failed_precondition("scram_continue before scram_start"));
    auto fin = s->scram->handle_server_first(req->server_first);
    if (!fin.is_ok()) return scram_error(s, fin.status());
    return protocol::make_ok(id, {{"client_final", *fin}});
  }
  auto req = protocol::ScramFinishRequest::from_json(request);
  if (!req.is_ok()) return protocol::make_error(id, ec::kBadRequest, req.status());
  auto s = session_of(req->session_id);
  if (!s) return unknown();
  std::lock_guard<std::mutex> lock(s->mu);
  if (!s->scram) return scram_error(s, failed_precondition("scram_finish before scram_start"));
  Status v = s->scram->verify_server_final(req->server_final);
  if (!v.is_ok()) return scram_error(s, v);
  s->scram.reset();
  bump(Counter::k_scram_verified);
  audit_.record(audit::AuditRecord{.event = "upstream_auth",
                                   .session_id = s->id,
                                   .identity = s->identity.subject,
                                   .target = s->target->name,
                                   .decision = "ok",
                                   .reason = "server signature verified"});
  return protocol::make_ok(id);
}

json EscalationServer::handle_analyse(const std::shared_ptr<Connection>& conn, const json& request,
                                      uint64_t id) {
  auto req = protocol::AnalyseRequest::from_json(request);
  if (!req.is_ok()) return protocol::make_error(id, ec::kBadRequest, req.status());
  auto s = find_session(conn, req->session_id);
  if (!s) {
    return protocol::make_error(id, ec::kUnknownSession,
                                invalid_argument("no authenticated session", "08P01"));
  }
  if (Status st = catch_up_recording(s); !st.is_ok()) {
    return recording_hold(s, id, st, req->sql);
  }
  if (json refused = audit_refusal(s, id, req->sql); !refused.is_null()) return refused;
  SessionView view{s->id, s->identity, s->masking(), *s->target, *s->config, &s->sql};
  uint64_t t0 = metrics::monotonic_ns();
  protocol::AnalyseResponse resp = handlers_.analyser->analyse(view, *req);
  analysis_latency_.observe_ns(metrics::monotonic_ns() - t0);
  audit::AuditRecord r = decision_record(*s, resp.verdict, resp.rule, resp.message, req->sql);
  r.extra["shape_key"] = req->shape_key;
  // The decision is in the audit log before the dp acts on it, or the statement is refused.
  if (Status st = audit_.write(r); !st.is_ok()) return refuse_unaudited(s, id, req->sql, st);
  return protocol::make_ok(id, resp.to_json());
}

Status EscalationServer::catch_up_recording(const std::shared_ptr<Session>& s) {
  if (handlers_.recorder == nullptr) return Status::ok();
  if (s->start_pending.exchange(false)) {
    if (Status st = handlers_.recorder->start_session(s->start); !st.is_ok()) {
      s->start_pending = true;
      return st;
    }
  }
  if (!s->recording_behind.load()) return Status::ok();
  // Record the gap first; only then may statements run again (recording.required).
  json gap = {{"lost_events", s->recording_lost.load()}};
  PGW_RETURN_IF_ERROR(handlers_.recorder->session_open(s->id)
                          ? handlers_.recorder->try_append(s->id, "recording_gap", gap)
                          : failed_precondition("recording not open"));
  s->recording_lost = 0;
  s->recording_behind = false;
  return Status::ok();
}

json EscalationServer::recording_hold(const std::shared_ptr<Session>& s, uint64_t id,
                                      const Status& why, const std::string& sql) {
  bump(Counter::k_recording_backpressure);
  audit_.record(decision_record(*s, "hold", "cp.recording_backpressure", why.message(), sql));
  return protocol::make_error(
      id, ec::kRecordingBackpressure,
      resource_exhausted("the session recording is behind; statement not run (retry)", "53000"));
}

json EscalationServer::handle_record(const std::shared_ptr<Connection>& conn, json request,
                                     uint64_t id, uint64_t ring_seq) {
  request.erase("id");
  request.erase("deadline_ms");
  auto ev = protocol::Event::from_json(request);
  if (!ev.is_ok()) return protocol::make_error(id, ec::kBadRequest, ev.status());
  if (ev->kind != "statement") {
    return protocol::make_error(id, ec::kBadRequest,
                                invalid_argument("record takes kind \"statement\" only", "08P01"));
  }
  auto s = find_session(conn, ev->session_id);
  if (!s) {
    return protocol::make_error(id, ec::kUnknownSession,
                                invalid_argument("no authenticated session", "08P01"));
  }
  std::string sql;
  if (const json& f = ev->fields; f.contains("sql") && f["sql"].is_string()) {
    sql = f["sql"].get<std::string>();
  }
  std::optional<audit::AuditRecord> audited = audit_record_of(s, *ev);
  // JSON fallback (no ring): a reregister asks about the record by its request id.
  note_ahead(*s, id, nullptr);
  json answer = record_ahead(conn, s, recording::RecordFields::from_json(ev->fields),
                             std::move(sql), std::move(audited), id, ring_seq);
  if (!answer.is_null()) note_ahead(*s, id, answer);
  return answer;
}

json EscalationServer::record_ahead(const std::shared_ptr<Connection>& conn,
                                    const std::shared_ptr<Session>& s,
                                    recording::RecordFields fields, std::string sql,
                                    std::optional<audit::AuditRecord> audited, uint64_t id,
                                    uint64_t ring_seq) {
  // Audit before recording: a statement whose audit line cannot be written does not run.
  if (json refused = audit_refusal(s, id, sql); !refused.is_null()) return refused;
  if (Status st = catch_up_recording(s); !st.is_ok()) return recording_hold(s, id, st, sql);
  if (handlers_.recorder != nullptr && s->policy->recording != policy::RecordingLevel::kOff &&
      !handlers_.recorder->session_open(s->id)) {
    // No session_start yet: nothing could be recorded.
    return recording_hold(s, id, failed_precondition("the session recording is not open"), sql);
  }
  if (handlers_.recorder == nullptr || s->policy->recording == policy::RecordingLevel::kOff) {
    // Nothing to record: the audit line is the statement's record, written before it runs.
    if (audited) {
      if (Status st = audit_.write(*audited); !st.is_ok()) return refuse_unaudited(s, id, sql, st);
    }
    return protocol::make_ok(id);
  }
  // Write-ahead: the answer (and with it the statement) waits until the record is written.
  std::weak_ptr<Connection> weak = conn;
  recording::AppendOptions opts;
  opts.keep = true;  // never refused for a full queue: the dp waits for this answer
  // A ring record is written by the loop thread itself at the end of its ring batch
  // (drain_ring): no hand-off to the writer thread per statement.
  opts.defer = ring_seq != 0;
  // `sql` is for a refusal's audit record (decision_record takes the plain text).
  opts.on_done = [this, weak, id, ring_seq, s, sql,
                  audited = std::move(audited)](const Status& st) {
    // A ring record is asked about by its ring seq, a JSON request by its id.
    const uint64_t ahead_seq = ring_seq != 0 ? ring_seq : id;
    if (st.is_ok() && audited && ring_seq != 0 &&
        std::this_thread::get_id() == loop_thread_.get_id() && grouping_audit_) {
      audit_.record_batched(*audited);
      audit_group_.push_back({weak, s, ring_seq, sql});
      return;  // answered by answer_audit_group()
    }
    Status audit_st = st.is_ok() && audited ? audit_.write(*audited) : Status::ok();
    if (!audit_st.is_ok()) {
      // Recorded but not audited: the statement does not run (its refusal follows in the
      // recording, as for any refused statement).
      json refusal = refuse_unaudited(s, id, sql, audit_st);
      note_ahead(*s, ahead_seq, refusal);
      if (auto c = weak.lock()) reply(c, ring_seq, refusal);
      return;
    }
    if (st.is_ok()) {
      // A ring record's answer (id 0) is always the same object: built once.
      static const json kRingOk = protocol::make_ok(0);
      const json built = id == 0 ? json() : protocol::make_ok(id);
      const json& ok = id == 0 ? kRingOk : built;
      note_ahead(*s, ahead_seq, ok);
      if (auto c = weak.lock()) reply(c, ring_seq, ok);
      return;
    }
    recording_refused(s, st, sql);
    json refusal = protocol::make_error(id, ec::kRecordingFailed, st);
    note_ahead(*s, ahead_seq, refusal);
    if (auto c = weak.lock()) reply(c, ring_seq, refusal);
  };
  Status st = handlers_.recorder->append(s->id, "statement", std::move(fields), std::move(opts));
  if (!st.is_ok()) return recording_hold(s, id, st, sql);
  return json();  // answered by on_done
}

json EscalationServer::audit_refusal(const std::shared_ptr<Session>& s, uint64_t id,
                                     const std::string& sql) {
  if (!audit_.failing()) return json();
  Status why = audit_.retry();
  if (why.is_ok()) {
    spdlog::info("cp.audit_resumed: the audit log can be written again");
    push_audit_state();
    return json();
  }
  return refuse_unaudited(s, id, sql, why);
}

json EscalationServer::refuse_unaudited(const std::shared_ptr<Session>& s, uint64_t id,
                                        const std::string& sql, const Status& why) {
  bump(Counter::k_audit_refused);
  audit_.note_refused();
  audit_.record(decision_record(*s, "refused", "cp.audit_failed", why.message(), sql));
  push_audit_state();
  return protocol::make_error(id, ec::kAuditFailed, why);
}

void EscalationServer::recording_refused(const std::shared_ptr<Session>& s, const Status& why,
                                         const std::string& sql) {
  bump(Counter::k_recording_refused);
  audit_.record(decision_record(*s, "refused", "cp.recording_failed", why.message(), sql));
}

json EscalationServer::handle_mask_plan(const std::shared_ptr<Connection>& conn,
                                        const json& request, uint64_t id) {
  auto req = protocol::MaskPlanRequest::from_json(request);
  if (!req.is_ok()) return protocol::make_error(id, ec::kBadRequest, req.status());
  auto s = find_session(conn, req->session_id);
  if (!s) {
    return protocol::make_error(id, ec::kUnknownSession,
                                invalid_argument("no authenticated session", "08P01"));
  }
  SessionView view{s->id, s->identity, s->masking(), *s->target, *s->config};
  auto plan = handlers_.mask_planner->plan(view, *req);
  audit::AuditRecord r{.event = "mask_plan",
                       .session_id = s->id,
                       .identity = s->identity.subject,
                       .target = s->target->name,
                       .policy = s->policy->name,
                       .policy_version = s->policy->version};
  if (!plan.is_ok()) {
    r.decision = "refused";
    r.reason = plan.status().message();
    audit_.record(r);
    std::string_view code = plan.status().code() == StatusCode::kUnavailable ? ec::kUnavailable
                            : plan.status().code() == StatusCode::kInvalidArgument ? ec::kBadRequest
                            : plan.status().code() == StatusCode::kPermissionDenied
                                ? ec::kCopyNotMaskable
                                : ec::kNotAvailable;
    return protocol::make_error(id, code, plan.status());
  }
  json masked = json::array();
  if (plan->plan.contains("columns") && plan->plan["columns"].is_array()) {
    for (const json& c : plan->plan["columns"]) {
      size_t index = c.value("index", size_t{0});
      json entry = {{"index", index}, {"function", c.value("function", std::string())}};
      if (index < req->fields.size()) entry["name"] = req->fields[index].name;
      masked.push_back(std::move(entry));
    }
  }
  r.decision = "planned";
  r.extra["masked"] = std::move(masked);
  r.extra["fields"] = req->fields.size();
  audit_.record(r);
  return protocol::make_ok(id, plan->to_json());
}

void EscalationServer::handle_approval(const std::shared_ptr<Connection>& conn, const json& request,
                                       uint64_t id, int64_t deadline_ms) {
  auto req = protocol::ApprovalRequest::from_json(request);
  if (!req.is_ok()) return send(conn, protocol::make_error(id, ec::kBadRequest, req.status()));
  auto s = find_session(conn, req->session_id);
  if (!s) {
    return send(conn, protocol::make_error(id, ec::kUnknownSession,
                                           invalid_argument("no authenticated session", "08P01")));
  }
  if (json refused = audit_refusal(s, id, req->sql); !refused.is_null()) {
    return send(conn, refused);
  }
  audit::AuditRecord base{.event = "approval",
                          .session_id = s->id,
                          .identity = s->identity.subject,
                          .groups = s->identity.groups,
                          .target = s->target->name,
                          .policy = s->policy->name,
                          .policy_version = s->policy->version,
                          .rule = req->rule,
                          .sql = req->sql};
  base.extra["shape_key"] = req->shape_key;
  approvals::ApprovalStore* store = handlers_.approvals;
  if (store == nullptr) {
    base.decision = "deny";
    base.reason = "approvals are not available on this gateway";
    audit_.record(base);
    protocol::ApprovalResponse resp{"deny", "", base.reason};
    return send(conn, protocol::make_ok(id, resp.to_json()));
  }
  approvals::ApprovalEffect effect;
  {
    // What the analysis measured for this statement (estimate, dry run) goes to the reviewer.
    std::lock_guard<std::mutex> lock(s->sql.mu);
    effect = s->sql.take_effect(req->sql);
  }
  // A standing (shape-scoped) grant answers at once, without a new request, unless this
  // statement reaches further than the approved one (another literal may widen the effect).
  std::optional<approvals::StandingGrant> grant;
  if (!req->shape_key.empty()) {
    grant =
        store->lookup_standing_grant(s->identity.subject, req->shape_key, protocol::now_unix_ms());
  }
  if (grant) {
    // Not used: a new request is made, which the reviewer sees with its own effect.
    auto granted = store->get(grant->approval_id);
    if (!granted || !approvals::wider_than_grant(*granted, req->rule, effect).empty()) {
      grant.reset();
    }
  }
  if (grant) {
    bump(Counter::k_approvals_standing_grant);
    base.decision = "allow";
    base.reason = "standing grant from approval " + grant->approval_id;
    base.extra["approval_id"] = grant->approval_id;
    base.extra["grant_expires_ms"] = grant->expires_ms;
    audit_.record(base);
    protocol::ApprovalResponse resp{"allow", grant->approval_id, base.reason};
    return send(conn, protocol::make_ok(id, resp.to_json()));
  }
  approvals::NewApprovalRequest n;
  n.session_id = s->id;
  n.identity = s->identity.subject;
  n.groups = s->identity.groups;
  n.target = s->target->name;
  n.sql = req->sql;
  n.shape_key = req->shape_key;
  n.rule = req->rule;
  n.reason = req->reason;
  n.settings = s->policy->approvals;
  n.deadline_ms = deadline_ms;
  n.effect = std::move(effect);
  // The store audits every transition (requested, approved, denied, expired, abandoned).
  auto created = store->create(n);
  if (!created.is_ok()) {
    base.decision = "deny";
    base.reason = created.status().message();
    audit_.record(base);
    return send(conn, protocol::make_error(id, ec::kNotAvailable, created.status()));
  }
  bump(Counter::k_approvals_requested);
  {
    // The held client learns at once why its statement waits and where to decide it; the
    // dataplane repeats it every reminder_interval_s while the request is pending. Sent before
    // the waiter is registered, so it precedes the decision on this connection.
    auto cfg = store_.current();
    std::string url = approvals::approval_console_url(cfg->console_public_url(), created->id);
    std::string notice = "waiting for approval " + created->id;
    if (!url.empty()) notice += ": " + url;
    send(conn, json{{"type", "event"},
                    {"kind", "approval_waiting"},
                    {"session_id", s->id},
                    {"approval_id", created->id},
                    {"notice", notice},
                    {"deadline_ms", created->deadline_ms},
                    {"required_approvals", created->required_approvals},
                    {"reminder_ms", int64_t{cfg->approvals.reminder_interval_s} * 1000}});
  }
  std::weak_ptr<Connection> weak = conn;
  Status waiting = store->wait(created->id, [this, weak, id](const approvals::ApprovalRequest& r) {
    bool allow = r.state == approvals::ApprovalState::kApproved;
    std::string reason = r.decision_reason;
    if (reason.empty()) reason = std::string(approvals::approval_state_name(r.state));
    protocol::ApprovalResponse resp{allow ? "allow" : "deny", r.id, reason};
    if (auto c = weak.lock()) send(c, protocol::make_ok(id, resp.to_json()));
  });
  if (!waiting.is_ok()) {
    send(conn, protocol::make_error(id, ec::kInternal, internal_error("approval wait failed")));
  }
}

void EscalationServer::end_session(const std::shared_ptr<Session>& s, const std::string& reason) {
  if (s->ended.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    if (ended_.emplace(s->id, reason).second) ended_order_.push_back(s->id);
    if (ended_order_.size() > kEndedKept) {
      ended_.erase(ended_order_.front());
      ended_order_.pop_front();
    }
  }
  if (handlers_.on_session)
    handlers_.on_session(s->id, s->identity.subject, s->target->name, false);
  if (handlers_.approvals != nullptr) {
    size_t n = handlers_.approvals->abandon_session(s->id);
    if (n > 0) spdlog::info("session {}: {} pending approvals abandoned", s->id, n);
  }
  if (handlers_.recorder != nullptr && handlers_.recorder->session_open(s->id)) {
    Status st = handlers_.recorder->try_append(s->id, "session_end", {{"reason", reason}});
    if (!st.is_ok()) {
      bump(Counter::k_recording_dropped);
      spdlog::warn("session {}: recording not closed: {}", s->id, st.message());
    }
  }
}

Status EscalationServer::record_event(const std::shared_ptr<Session>& s, const std::string& kind,
                                      json fields, bool count_loss) {
  recording::Recorder* rec = handlers_.recorder;
  if (rec == nullptr) return Status::ok();
  if (kind == "session_start") {
    recording::SessionStart start;
    start.session_id = s->id;
    start.identity = s->identity.subject;
    start.groups = s->identity.groups;
    start.target = s->target->name;
    start.client_addr = s->client_addr;
    start.tls = fields.contains("tls") && fields["tls"].is_boolean() && fields["tls"].get<bool>();
    start.policy = s->policy->name;
    start.level = s->policy->recording;
    start.row_cap = s->policy->recording_row_cap;
    Status st = rec->start_session(start);
    if (!st.is_ok()) {
      spdlog::warn("session {}: recording not started: {}", s->id, st.message());
      if (s->policy->recording_required && s->policy->recording != policy::RecordingLevel::kOff) {
        // Retried before the session's next statement is accepted (catch_up_recording).
        s->start = std::move(start);
        s->start_pending = true;
      }
    }
    return Status::ok();
  }
  return record_event(s, kind, recording::RecordFields::from_json(fields), count_loss);
}

Status EscalationServer::record_event(const std::shared_ptr<Session>& s, const std::string& kind,
                                      recording::RecordFields fields, bool count_loss, bool defer) {
  recording::Recorder* rec = handlers_.recorder;
  if (rec == nullptr || !rec->session_open(s->id)) return Status::ok();
  // A recording-required session's events are never dropped for a full queue: the dp waits
  // for its next statement's record, which comes after them (backpressure, not loss).
  recording::AppendOptions opts;
  opts.keep = s->policy->recording_required;
  opts.defer = defer;
  Status st = rec->append(s->id, kind, std::move(fields), std::move(opts));
  if (st.is_ok() || !count_loss) return st;
  bump(Counter::k_recording_dropped);
  s->recording_lost.fetch_add(1);
  if (s->policy->recording_required && s->policy->recording != policy::RecordingLevel::kOff) {
    if (!s->recording_behind.exchange(true)) {
      spdlog::warn("session {}: recording queue full; holding statements until it drains", s->id);
    }
  }
  return st;
}

audit::AuditRecord EscalationServer::audit_base(const std::shared_ptr<Session>& s,
                                                std::string event, std::string session_id) {
  audit::AuditRecord r;
  r.event = std::move(event);
  r.session_id = std::move(session_id);
  if (s) {
    r.identity = s->identity.subject;
    r.target = s->target->name;
    r.policy = s->policy->name;
    r.policy_version = s->policy->version;
  }
  return r;
}

std::optional<audit::AuditRecord> EscalationServer::audit_record_of(
    const std::shared_ptr<Session>& s, const protocol::Event& ev) {
  // Recorded, not audited: row values never reach the audit log, and a pooled session may
  // move to another upstream backend at every transaction.
  if (ev.kind == "rows" || ev.kind == "upstream_backend") return std::nullopt;
  audit::AuditRecord r = audit_base(s, ev.kind, ev.session_id);
  const json& f = ev.fields;
  auto take = [&](const char* key, std::string& out) {
    if (f.contains(key) && f[key].is_string()) out = f[key].get<std::string>();
  };
  take("sql", r.sql);
  take("verdict", r.decision);
  take("rule", r.rule);
  take("message", r.reason);
  for (const auto& [k, v] : f.items()) {
    if (k != "sql" && k != "verdict" && k != "rule" && k != "message") r.extra[k] = v;
  }
  return r;
}

void EscalationServer::handle_event(const std::shared_ptr<Connection>& conn, json&& j) {
  bump(Counter::k_events_received);
  auto ev = protocol::Event::from_json(std::move(j));
  if (!ev.is_ok()) {
    bump(Counter::k_events_bad);
    spdlog::warn("dp connection {}: bad event: {}", conn->id, ev.status().message());
    return;
  }
  if (ev->kind == "rules_applied" || ev->kind == "dataplane_stats") {
    // Which rules generation this dp process enforces (wait_rules_enforced()), and its name.
    const json& f = ev->fields;
    std::string name;
    if (f.contains("dp") && f["dp"].is_string()) name = f["dp"].get<std::string>();
    if (f.contains("dp") && f["dp"].is_object()) name = f["dp"].value("name", std::string());
    {
      // Also reached from the hello under rules_mu_ (its ring drain): acks_mu_ nests inside.
      std::lock_guard<std::mutex> lock(acks_mu_);
      ++ack_events_;
      const std::string key = rules_ack_key(*conn);
      if (!name.empty()) rules_dp_names_[key] = name;
      if (ev->kind == "rules_applied" && f.value("ok", false) && f.contains("hash") &&
          f["hash"].is_string()) {
        rules_acked_[key] = f["hash"].get<std::string>();
      }
      // The stats say again what every worker enforces (an acknowledgement the dp could not
      // deliver, e.g. while one of its connections was down, is not lost).
      if (ev->kind == "dataplane_stats" && f.contains("rules") && f["rules"].is_object()) {
        const json& rules = f["rules"];
        if (rules.contains("enforced_hash") && rules["enforced_hash"].is_string() &&
            !rules["enforced_hash"].get<std::string>().empty()) {
          rules_acked_[key] = rules["enforced_hash"].get<std::string>();
        }
      }
    }
    rules_cv_.notify_all();
    // A push of the generation the dp already ran (after its reconnection) changed nothing:
    // acknowledged, not audited.
    if (ev->kind == "rules_applied" && f.value("unchanged", false)) return;
  }
  if (ev->kind == "dataplane_stats") {
    Status st = dataplanes_.update(conn->id, std::move(ev->fields), protocol::now_unix_ms());
    bump(st.is_ok() ? Counter::k_dataplane_stats_received : Counter::k_dataplane_stats_refused);
    if (!st.is_ok()) spdlog::warn("dp connection {}: {}", conn->id, st.message());
    return;
  }
  auto s = find_session(conn, ev->session_id);
  // The audit record is built first so that the fields can then be moved into the recording;
  // dp events' audit lines are flushed once per epoll batch.
  std::optional<audit::AuditRecord> r = audit_record_of(s, *ev);
  if (s && ev->kind == "statement" && ev->fields.value("phase", std::string()) == "end") {
    account_statement(s, ev->fields);
  }
  if (s) (void)record_event(s, ev->kind, std::move(ev->fields), /*count_loss=*/true);
  if (r) {
    audit_.record_batched(*r);
    audit_unflushed_ = true;
  }
  if (ev->kind == "session_end" && s) {
    end_session(s, "session_end");  // closes the recording if the dp's event did not
    std::lock_guard<std::mutex> lock(sessions_mu_);
    sessions_.erase(ev->session_id);
  }
}

// ---------------------------------------------------------------------------------------------
// Revocation and re-registration

json EscalationServer::live_sessions() const {
  std::vector<std::shared_ptr<Session>> all;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (const auto& [id, s] : sessions_) all.push_back(s);
  }
  json list = json::array();
  for (const auto& s : all) {
    list.push_back(json{{"session_id", s->id},
                        {"identity", s->identity.subject},
                        {"groups", s->identity.groups},
                        {"provider", s->identity.provider},
                        {"key_id", s->identity.key_id},
                        {"target", s->target->name},
                        {"policy", s->policy->name},
                        {"client_addr", s->client_addr},
                        {"token_exp_ms", s->identity.expires_at_ms},
                        {"reregistered", s->reregistered}});
  }
  return list;
}

std::string EscalationServer::grant_broken(const Session& s, const config::Config& cfg,
                                           int64_t now_ms) {
  const AuthenticatedIdentity& id = s.identity;
  if (handlers_.revocations != nullptr) {
    if (auto rev = handlers_.revocations->find(id.subject, id.key_id, now_ms)) {
      std::string what = rev->name == id.subject ? "identity " + rev->name : "key " + rev->name;
      return what + " was revoked" + (rev->reason.empty() ? "" : ": " + rev->reason);
    }
  }
  const config::Target* target = cfg.find_target(s.target->name);
  if (target == nullptr) return "target " + s.target->name + " was removed from the configuration";
  const policy::Policy* pol = cfg.select_policy(id.groups, target->name);
  if (pol == nullptr) {
    return "no policy grants " + id.subject + " access to " + target->name + " any more";
  }
  if (pol->name != s.policy->name) {
    return "the groups of " + id.subject + " now map to policy " + pol->name + ", not " +
           s.policy->name;
  }
  if (id.provider.starts_with("service-key:")) {
    bool present = std::any_of(cfg.service_keys.begin(), cfg.service_keys.end(),
                               [&](const identity::ServiceKeyConfig& k) {
                                 return k.id == id.key_id && k.identity == id.subject;
                               });
    if (!present) return "service key " + id.key_id + " was removed from the configuration";
    return "";
  }
  const identity::IdentityProviderConfig* provider = nullptr;
  for (const auto& p : cfg.identity_providers) {
    if (p.name == id.provider) provider = &p;
  }
  if (provider == nullptr) return "identity provider " + id.provider + " was removed";
  if (id.expires_at_ms > 0 && !pol->keep_session_past_token_expiry &&
      now_ms >= id.expires_at_ms + provider->leeway_seconds * 1000) {
    return "the session's token expired";
  }
  if (!id.key_id.empty() && handlers_.provider_has_key) {
    std::optional<bool> has = handlers_.provider_has_key(id.provider, id.key_id);
    if (has.has_value() && !*has) {
      return "signing key " + id.key_id + " is no longer in the JWKS of provider " + id.provider;
    }
  }
  return "";
}

bool EscalationServer::kill(const std::shared_ptr<Session>& s, const std::string& reason,
                            const std::string& by, const std::string& cause) {
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    auto it = sessions_.find(s->id);
    if (it == sessions_.end() || it->second != s) return false;
    sessions_.erase(it);
  }
  std::shared_ptr<Connection> owner;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto& [fd, c] : conns_) {
      if (c->id == s->owner) owner = c;
    }
  }
  std::string message = "pgwarden: terminating connection: " + reason;
  if (owner) {
    send(owner, json{{"type", "event"},
                     {"kind", "kill"},
                     {"session_id", s->id},
                     {"sqlstate", "57P01"},
                     {"message", message}});
  }
  bump(Counter::k_sessions_killed);
  audit::AuditRecord r{.event = "session_kill",
                       .session_id = s->id,
                       .identity = s->identity.subject,
                       .groups = s->identity.groups,
                       .target = s->target->name,
                       .policy = s->policy->name,
                       .policy_version = s->policy->version,
                       .decision = "killed",
                       .reason = reason};
  r.extra["cause"] = cause;
  if (!by.empty()) r.extra["by"] = by;
  if (!s->identity.key_id.empty()) r.extra["key_id"] = s->identity.key_id;
  r.extra["dp_notified"] = owner != nullptr;
  audit_.record(r);
  if (handlers_.recorder != nullptr && handlers_.recorder->session_open(s->id)) {
    (void)handlers_.recorder->try_append(s->id, "session_killed",
                                         {{"reason", reason}, {"cause", cause}, {"by", by}});
  }
  end_session(s, "killed: " + reason);
  spdlog::info("session {} of {} ended: {} ({})", s->id, s->identity.subject, reason, cause);
  return true;
}

std::vector<std::string> EscalationServer::kill_sessions(const SessionSelector& sel,
                                                         const std::string& reason,
                                                         const std::string& by,
                                                         const std::string& cause) {
  std::vector<std::shared_ptr<Session>> hits;
  if (!sel.empty()) {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (const auto& [id, s] : sessions_) {
      if (!sel.session_id.empty() && s->id != sel.session_id) continue;
      if (!sel.subject.empty() && s->identity.subject != sel.subject) continue;
      if (!sel.key_id.empty() && s->identity.key_id != sel.key_id) continue;
      hits.push_back(s);
    }
  }
  std::vector<std::string> killed;
  for (const auto& s : hits) {
    if (kill(s, reason, by, cause)) killed.push_back(s->id);
  }
  return killed;
}

void EscalationServer::follow_masks_all(const config::Config& cfg) {
  std::vector<std::shared_ptr<Session>> all;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (const auto& [id, s] : sessions_) all.push_back(s);
  }
  size_t moved = 0;
  for (const auto& s : all) moved += follow_masks(*s, cfg) ? 1 : 0;
  if (moved > 0) spdlog::info("{} open session(s) follow their policy's new masks", moved);
}

std::vector<std::string> EscalationServer::revalidate_sessions(const std::string& cause) {
  auto cfg = store_.current();
  std::vector<std::shared_ptr<Session>> all;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (const auto& [id, s] : sessions_) {
      if (s->end_by_ms == 0) all.push_back(s);  // one that ended at its dp is over already
    }
  }
  std::vector<std::string> killed;
  int64_t now = protocol::now_unix_ms();
  for (const auto& s : all) {
    std::string why = grant_broken(*s, *cfg, now);
    if (!why.empty() && kill(s, why, "", cause)) killed.push_back(s->id);
  }
  return killed;
}

void EscalationServer::sweep_loop() {
  std::unique_lock<std::mutex> lock(sweep_mu_);
  while (!stopping_) {
    sweep_cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_.load(); });
    if (stopping_) break;
    lock.unlock();
    const int64_t now = protocol::now_unix_ms();
    end_detached([now](const Session& s) { return s.detached_until_ms <= now; },
                 "the dataplane did not re-register the session within " +
                     std::to_string(kReattachWindowMs / 1000) +
                     " s after its connection to the control plane closed: the session ended "
                     "abnormally");
    end_overdue(now);
    (void)revalidate_sessions("sweep");
    // A failing audit log heals without a statement to write (its resumed line is written).
    if (audit_.failing() && audit_.retry().is_ok()) {
      spdlog::info("cp.audit_resumed: the audit log can be written again");
    }
    push_audit_state();
    if (handlers_.budgets != nullptr) {
      if (Status st = handlers_.budgets->flush(); !st.is_ok()) {
        spdlog::error("budget ledger not saved: {}", st.message());
      }
    }
    lock.lock();
  }
}

void EscalationServer::collect_orphans() {
  recording::Recorder* rec = handlers_.recorder;
  if (rec == nullptr) return;
  // path_for() is <dir>/<id>.jsonl.
  const std::string dir = std::filesystem::path(rec->path_for("")).parent_path().string();
  std::vector<std::string> ids = possibly_open_recordings(dir, rec->checkpoint_path());
  if (ids.empty()) return;
  // No dp that was connected to the previous cp runs any more: nobody can re-register them.
  const bool none_can_return = roster_.load().all_exited();
  const int64_t when = protocol::now_unix_ms() + (none_can_return ? 0 : kReattachWindowMs);
  std::lock_guard<std::mutex> lock(sessions_mu_);
  for (const std::string& id : ids) orphans_[id] = when;
  spdlog::info(
      "{} recordings may have been open when the previous control plane stopped; those no "
      "dataplane re-registers {} are sealed as ended abnormally",
      ids.size(),
      none_can_return ? "(every dataplane connected to it has exited) now"
                      : "within " + std::to_string(kReattachWindowMs / 1000) + " s");
}

void EscalationServer::end_overdue(int64_t now_ms) {
  std::vector<std::string> orphans;
  std::vector<std::shared_ptr<Session>> unended;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (auto it = orphans_.begin(); it != orphans_.end();) {
      if (it->second > now_ms) {
        ++it;
        continue;
      }
      if (sessions_.count(it->first) == 0 && ended_.count(it->first) == 0) {
        orphans.push_back(it->first);
      }
      it = orphans_.erase(it);
    }
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second->end_by_ms != 0 && it->second->end_by_ms <= now_ms) {
        unended.push_back(it->second);
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  const std::string orphan_reason =
      "the control plane restarted and no dataplane re-registered the session (its dataplane "
      "exited or lost it while the control plane was down): the session ended abnormally";
  for (const std::string& id : orphans) {
    // Not audited as a session of this cp: only its recording is closed.
    auto sealed = seal_orphan(*handlers_.recorder, id, orphan_reason);
    if (!sealed.is_ok()) {
      spdlog::warn(
          "recording of session {} left open by the previous control plane not "
          "sealed: {}",
          id, sealed.status().message());
      continue;
    }
    if (*sealed) {
      bump(Counter::k_sessions_abandoned);
      audit::AuditRecord r{.event = "session_end", .session_id = id};
      r.decision = "abnormal";
      r.reason = orphan_reason;
      audit_.record(r);
      spdlog::warn("session {}: {}", id, orphan_reason);
    }
  }
  const std::string unended_reason =
      "the session ended in the dataplane while the control plane was down; its session_end "
      "did not reach the control plane";
  for (const auto& s : unended) {
    spdlog::warn("session {} of {}: {}", s->id, s->identity.subject, unended_reason);
    end_session(s, unended_reason);
  }
}

json EscalationServer::handle_reregister(const std::shared_ptr<Connection>& conn,
                                         const json& request, uint64_t id) {
  std::string session_id = request.value("session_id", std::string());
  std::string ticket = request.contains("ticket") && request["ticket"].is_string()
                           ? request["ticket"].get<std::string>()
                           : std::string();
  audit::AuditRecord r{.event = "reregister", .session_id = session_id.substr(0, 128)};
  auto refuse = [&](std::string_view code, const Status& st) {
    bump(Counter::k_reregister_refused);
    r.decision = "refused";
    r.rule = std::string(code);
    r.reason = st.message();
    audit_.record(r);
    return protocol::make_error(id, code, st);
  };
  if (handlers_.tickets == nullptr) {
    return refuse(ec::kBadTicket,
                  Status(StatusCode::kFailedPrecondition,
                         "this control plane issues no session tickets; log in again", "57P01"));
  }
  auto claims = handlers_.tickets->verify(ticket);
  if (!claims.is_ok()) {
    return refuse(ec::kBadTicket, Status(StatusCode::kPermissionDenied,
                                         "the session ticket is not valid (" +
                                             claims.status().message() + "); log in again",
                                         "57P01"));
  }
  if (claims->session_id != session_id) {
    return refuse(ec::kBadTicket, Status(StatusCode::kPermissionDenied,
                                         "the session ticket belongs to another session", "57P01"));
  }
  r.identity = claims->subject;
  r.groups = claims->groups;
  r.target = claims->target;
  r.policy = claims->policy;
  r.client_addr = claims->client_addr;
  // The session ended at the dp after its login; cp may not have recorded its end (it was
  // away, or the end was still on the ring when it stopped). Its recording is continued so
  // that the events the dp kept for it, session_end last, are recorded and it is sealed.
  const bool ended_at_dp =
      request.contains("ended") && request["ended"].is_boolean() && request["ended"].get<bool>();
  // A session this cp still holds, detached from a closed connection of the same dp: it is
  // reattached (the recording is open here). One that ended here is never re-admitted.
  std::shared_ptr<Session> detached;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) {
      if (it->second->owner != 0 && it->second->owner != conn->id) {
        return refuse(
            ec::kBadRequest,
            invalid_argument("session " + session_id + " is live on another connection", "08P01"));
      }
      if (it->second->owner == 0) detached = it->second;
    } else if (auto e = ended_.find(session_id); e != ended_.end()) {
      if (ended_at_dp) return protocol::make_ok(id, {{"ended", true}});  // recorded already
      return refuse(ec::kRevoked, Status(StatusCode::kFailedPrecondition,
                                         "pgwarden: terminating connection: the session has "
                                         "ended in the control plane (" +
                                             e->second + ")",
                                         "57P01"));
    }
  }
  auto cfg = store_.current();
  r.policy_version = cfg->version;
  const config::Target* target = cfg->find_target(claims->target);
  const policy::Policy* pol =
      target != nullptr ? cfg->select_policy(claims->groups, target->name) : nullptr;
  auto session = std::make_shared<Session>();
  session->id = claims->session_id;
  session->owner = conn->id;
  session->identity = AuthenticatedIdentity{claims->subject,  claims->issuer, claims->groups,
                                            claims->provider, claims->key_id, claims->token_exp_ms};
  session->config = cfg;
  session->client_addr = claims->client_addr;
  session->tls = claims->tls;
  session->reregistered = true;
  std::string why;
  if (target == nullptr) {
    why = "target " + claims->target + " was removed from the configuration";
  } else if (pol == nullptr) {
    why = "no policy grants " + claims->subject + " access to " + target->name + " any more";
  } else if (pol->name != claims->policy) {
    why = "the groups of " + claims->subject + " now map to policy " + pol->name + ", not " +
          claims->policy;
  } else {
    session->policy = pol;
    session->target = target;
    why = grant_broken(*session, *cfg, protocol::now_unix_ms());
  }
  if (!why.empty() && ended_at_dp) {
    if (session->policy != nullptr) {
      why.clear();  // the grant broke after the session ended: its recording is closed as usual
    } else if (handlers_.recorder != nullptr) {
      // Its policy or target is gone: the recording is closed without the dp's events.
      (void)seal_orphan(
          *handlers_.recorder, session_id,
          "the session ended in the dataplane while the control plane was down (" + why + ")");
      std::lock_guard<std::mutex> lock(sessions_mu_);
      orphans_.erase(session_id);
      return protocol::make_ok(id, {{"ended", true}});
    }
  }
  if (!why.empty()) {
    // A detached session ends here as a kill does (audited, recorded, sealed).
    if (detached && kill(detached, why, "", "reregister")) {
      return refuse(ec::kRevoked, Status(StatusCode::kPermissionDenied,
                                         "pgwarden: terminating connection: " + why, "57P01"));
    }
    audit::AuditRecord k = r;
    k.event = "session_kill";
    k.decision = "killed";
    k.reason = why;
    k.extra["cause"] = "reregister";
    audit_.record(k);
    // Its recording, open since before the restart, ends here too (as a kill's would).
    if (handlers_.recorder != nullptr) {
      (void)seal_orphan(*handlers_.recorder, session_id, "killed: " + why);
      std::lock_guard<std::mutex> lock(sessions_mu_);
      orphans_.erase(session_id);
    }
    return refuse(ec::kRevoked, Status(StatusCode::kPermissionDenied,
                                       "pgwarden: terminating connection: " + why, "57P01"));
  }
  bool reattached = false;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    orphans_.erase(session->id);
    auto it = sessions_.find(session->id);
    if (detached) {
      // Still detached (not ended by the sweeper or a kill meanwhile): it is ours again.
      if (it == sessions_.end() || it->second != detached || detached->owner != 0) {
        return refuse(ec::kRevoked, Status(StatusCode::kFailedPrecondition,
                                           "pgwarden: terminating connection: the session "
                                           "ended in the control plane while its dataplane "
                                           "was reconnecting",
                                           "57P01"));
      }
      detached->owner = conn->id;
      detached->detached_until_ms = 0;
      detached->detached_peer = 0;
      session = detached;
      reattached = true;
    } else {
      if (it != sessions_.end() && it->second->owner != conn->id) {
        return refuse(
            ec::kBadRequest,
            invalid_argument("session " + session->id + " is live on another connection", "08P01"));
      }
      sessions_[session->id] = session;
    }
    if (ended_at_dp) session->end_by_ms = protocol::now_unix_ms() + kEndedGraceMs;
  }
  const policy::Policy* spol = session->policy;
  recording::Recorder* rec = handlers_.recorder;
  // The dp's write-ahead record that was in flight when its connection closed (`ahead`, see
  // note_ahead()): after a cp restart, the recording's last record says whether it was
  // written, so it is read before the session_resumed record follows it.
  const json* ahead =
      request.contains("ahead") && request["ahead"].is_object() ? &request["ahead"] : nullptr;
  json last_record;
  if (ahead != nullptr && !reattached && rec != nullptr) {
    if (auto tail = recording::read_recording_tail(rec->path_for(session->id));
        tail.is_ok() && tail->ok) {
      last_record = std::move(tail->last);
    }
  }
  if (rec != nullptr && spol->recording != policy::RecordingLevel::kOff) {
    Status st;
    if (reattached) {
      st = rec->session_open(session->id)
               ? rec->append(session->id, "session_resumed",
                             recording::RecordFields::from_json(
                                 {{"reason", "dataplane reconnected to the control plane"}}),
                             {.keep = true})
               : failed_precondition("the session's recording is not open");
    } else {
      recording::SessionStart start;
      start.session_id = session->id;
      start.identity = claims->subject;
      start.groups = claims->groups;
      start.target = target->name;
      start.client_addr = claims->client_addr;
      start.tls = claims->tls;
      start.policy = pol->name;
      start.level = pol->recording;
      start.row_cap = pol->recording_row_cap;
      st = rec->resume_session(start, "control plane restart");
    }
    // A sealed recording (57P01) means the session ended: it is not re-admitted, whatever
    // the policy says about recording.
    if (!st.is_ok() && (spol->recording_required || st.sqlstate() == "57P01")) {
      {
        std::lock_guard<std::mutex> lock(sessions_mu_);
        auto it = sessions_.find(session->id);
        if (it != sessions_.end() && it->second == session) sessions_.erase(it);
      }
      // An ended session whose recording is sealed: the previous cp recorded its end.
      if (ended_at_dp && !reattached && st.sqlstate() == "57P01") {
        return protocol::make_ok(id, {{"ended", true}});
      }
      spdlog::warn("session {}: recording not resumed: {}", session->id, st.message());
      if (reattached) end_session(session, "the recording could not be continued");
      return refuse(ec::kRevoked,
                    Status(StatusCode::kFailedPrecondition,
                           "pgwarden: terminating connection: the session recording cannot be "
                           "continued (" +
                               st.message() + ")",
                           "57P01"));
    }
    if (!st.is_ok()) {
      spdlog::warn("session {}: recording not resumed: {}", session->id, st.message());
    } else if (Status gap = record_lost_events(session, request); !gap.is_ok()) {
      spdlog::warn("session {}: the events its dataplane lost are not recorded: {}", session->id,
                   gap.message());
    }
  }
  bump(reattached ? Counter::k_sessions_reattached : Counter::k_sessions_reregistered);
  r.decision = "ok";
  if (reattached) r.extra["reattached"] = true;
  if (ended_at_dp) r.extra["ended"] = true;
  audit_.record(r);
  if (handlers_.on_session && !reattached) {
    handlers_.on_session(session->id, session->identity.subject, session->target->name, true);
  }
  json answer = {{"policy", {{"name", spol->name}, {"version", spol->version}}},
                 {"recording_required",
                  spol->recording_required && spol->recording != policy::RecordingLevel::kOff},
                 {"reattached", reattached}};
  // Always present, also empty: the budgets replace what the dp had before the restart.
  answer["budgets"] = budget_states(session->identity);
  if (ended_at_dp) answer["ended"] = true;
  if (ahead == nullptr) {
    if (reattached) {
      std::lock_guard<std::mutex> lock(session->ahead_mu);
      forget_ahead(*session);
    }
    return protocol::make_ok(id, answer);
  }
  const uint64_t ahead_seq = ahead->value("seq", uint64_t{0});
  if (!reattached) {
    answer["ahead"] = {{"seq", ahead_seq},
                       {"state", written_last(last_record, *ahead) ? "written" : "unknown"}};
    return protocol::make_ok(id, answer);
  }
  std::lock_guard<std::mutex> lock(session->ahead_mu);
  if (session->ahead_seq == ahead_seq && session->ahead_state == Session::Ahead::kPending) {
    // Still being written: the answer goes out with its outcome (note_ahead()).
    std::weak_ptr<Connection> weak = conn;
    std::weak_ptr<Session> weak_session = session;
    session->on_ahead_answered = [this, weak, weak_session, id, answer]() mutable {
      auto c = weak.lock();
      auto s = weak_session.lock();
      if (!c || !s) return;
      {
        std::lock_guard<std::mutex> lock(s->ahead_mu);
        answer["ahead"] = ahead_json(*s);
        forget_ahead(*s);
      }
      send(c, protocol::make_ok(id, answer));
    };
    return json();
  }
  answer["ahead"] = session->ahead_seq == ahead_seq
                        ? ahead_json(*session)
                        : json{{"seq", ahead_seq}, {"state", "unknown"}};
  forget_ahead(*session);
  return protocol::make_ok(id, answer);
}

void EscalationServer::forget_ahead(Session& s) {
  // Ring seqs start again at 1 on the new connection: a later question must not match a
  // record of the old one.
  s.ahead_seq = 0;
  s.ahead_state = Session::Ahead::kNone;
  s.ahead_error = nullptr;
}

json EscalationServer::ahead_json(const Session& s) {
  json out = {{"seq", s.ahead_seq}};
  switch (s.ahead_state) {
    case Session::Ahead::kWritten:
      out["state"] = "written";
      break;
    case Session::Ahead::kRefused:
      out["state"] = "refused";
      out["error"] = s.ahead_error;
      break;
    default:
      out["state"] = "unknown";
  }
  return out;
}

bool EscalationServer::written_last(const json& last, const json& ahead) {
  if (!last.is_object() || last.value("kind", "") != "statement" || last.contains("phase")) {
    return false;
  }
  // The record itself: every field of it as the recording has it, nothing else but the
  // envelope. Time, source and SQL alone cannot tell two executions of a prepared statement
  // within one millisecond apart.
  if (auto hex = ahead.find("payload_hex"); hex != ahead.end() && hex->is_string()) {
    const std::string& h = hex->get_ref<const std::string&>();
    std::string payload;
    payload.reserve(h.size() / 2);
    auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    for (size_t i = 0; i + 1 < h.size(); i += 2) {
      payload += static_cast<char>(nibble(h[i]) << 4 | nibble(h[i + 1]));
    }
    return h.size() % 2 == 0 && recorded_as(last, payload);
  }
  auto sql = last.find("sql");
  if (sql == last.end() || !sql->is_string()) return false;
  // chain_hash with an empty prev is the plain SHA-256 of the text.
  return last.value("ts_ms", int64_t{-1}) == ahead.value("ts_ms", int64_t{-2}) &&
         last.value("source", "") == ahead.value("source", "-") &&
         recording::chain_hash("", sql->get_ref<const std::string&>()) ==
             ahead.value("sql_sha256", "");
}

void EscalationServer::note_ahead(Session& s, uint64_t seq, const json& answer) {
  std::function<void()> waiting;
  {
    std::lock_guard<std::mutex> lock(s.ahead_mu);
    if (answer.is_null()) {
      s.ahead_seq = seq;
      s.ahead_state = Session::Ahead::kPending;
      s.ahead_error = nullptr;
      return;
    }
    if (s.ahead_seq != seq) return;
    const bool ok = answer.value("ok", false);
    s.ahead_state = ok ? Session::Ahead::kWritten : Session::Ahead::kRefused;
    s.ahead_error = ok ? json() : answer.value("error", json::object());
    waiting = std::move(s.on_ahead_answered);
    s.on_ahead_answered = nullptr;
  }
  if (waiting) waiting();
}

Status EscalationServer::record_lost_events(const std::shared_ptr<Session>& session,
                                            const json& request) {
  auto lost = request.find("lost");
  if (lost == request.end() || !lost->is_object()) return Status::ok();
  auto u64 = [&](const char* key) -> uint64_t {
    auto v = lost->find(key);
    return v != lost->end() && v->is_number_unsigned() ? v->get<uint64_t>() : 0;
  };
  const uint64_t records = u64("records");
  if (records == 0) return Status::ok();
  json kinds = json::object();
  if (auto k = lost->find("kinds"); k != lost->end() && k->is_object()) {
    for (const auto& [kind, n] : k->items()) {
      if (kind.size() <= 64 && n.is_number_unsigned()) kinds[kind] = n;
    }
  }
  json fields = {{"records", records},
                 {"kinds", std::move(kinds)},
                 {"not_run", 0},
                 {"first_ts", u64("first_ts")},
                 {"last_ts", u64("last_ts")},
                 {"reason",
                  "events of the session the dataplane could not deliver while it had no "
                  "connection to the control plane (they happened before the session_resumed "
                  "record above)"}};
  return handlers_.recorder->append(session->id, "recording_gap",
                                    recording::RecordFields::from_json(fields), {.keep = true});
}

// ---------------------------------------------------------------------------------------------
// Budgets (docs/budgets.md)

json EscalationServer::budget_states(const AuthenticatedIdentity& identity) const {
  json out = json::array();
  if (handlers_.budgets == nullptr) return out;
  auto cfg = store_.current();
  for (const protocol::BudgetState& b : handlers_.budgets->states(
           cfg->budgets, identity.subject, identity.groups, protocol::now_unix_ms())) {
    out.push_back(b.to_json());
  }
  return out;
}

void EscalationServer::account_statement(const std::shared_ptr<Session>& s, const json& f) {
  if (handlers_.budgets == nullptr) return;
  auto cfg = store_.current();
  if (cfg->budgets.empty()) return;
  auto u64 = [&](const char* key) -> uint64_t {
    auto it = f.find(key);
    return it != f.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
  };
  protocol::BudgetUsage usage;
  usage[protocol::BudgetMeasure::kStatements] = f.value("executed", false) ? 1 : 0;
  usage[protocol::BudgetMeasure::kRows] = u64("rows");
  usage[protocol::BudgetMeasure::kResultBytes] = u64("result_bytes");
  usage[protocol::BudgetMeasure::kMaskedCells] = u64("masked_cells");
  account_usage(s, usage);
}

void EscalationServer::account_usage(const std::shared_ptr<Session>& s,
                                     const protocol::BudgetUsage& usage) {
  if (handlers_.budgets == nullptr || usage.empty()) return;
  auto cfg = store_.current();
  if (cfg->budgets.empty()) return;
  int64_t now = protocol::now_unix_ms();
  budgets::BudgetBook::Accounted a =
      handlers_.budgets->account(cfg->budgets, s->identity.subject, s->identity.groups, usage, now);
  // A statement that completes while a budget is already exhausted ran in a session that did
  // not know (a reload lowered the limit, another session crossed it, a pipeline): tell them.
  bool exhausted = std::any_of(a.states.begin(), a.states.end(),
                               [](const auto& b) { return b.exhausted_measure() >= 0; });
  if (!exhausted) return;
  for (const std::string& name : a.crossed) {
    bump(Counter::k_budgets_exhausted);
    for (const protocol::BudgetState& b : a.states) {
      if (b.name != name) continue;
      audit::AuditRecord r{.event = "budget_exhausted",
                           .session_id = s->id,
                           .identity = s->identity.subject,
                           .groups = s->identity.groups,
                           .target = s->target->name,
                           .policy = s->policy->name,
                           .decision = b.approve ? "approve" : "deny",
                           .rule = "budget:" + name,
                           .reason = b.refusal_message(s->identity.subject, now)};
      r.extra["budget"] = b.to_json();
      audit_.record(r);
      spdlog::info("budget {} of {} exhausted: {}", name, s->identity.subject, r.reason);
    }
  }
  push_budgets(s->identity.subject);
}

size_t EscalationServer::push_budgets(const std::string& subject, bool only_exhausted) {
  std::vector<std::shared_ptr<Session>> hits;
  {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    for (const auto& [id, s] : sessions_) {
      if (s->identity.subject == subject) hits.push_back(s);
    }
  }
  if (hits.empty()) return 0;
  std::map<uint64_t, std::shared_ptr<Connection>> owners;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto& [fd, c] : conns_) owners[c->id] = c;
  }
  size_t told = 0;
  for (const auto& s : hits) {
    auto it = owners.find(s->owner);
    if (it == owners.end()) continue;
    json states = budget_states(s->identity);
    if (only_exhausted && std::none_of(states.begin(), states.end(), [](const json& b) {
          return b.contains("exhausted") && !b["exhausted"].is_null();
        })) {
      continue;
    }
    send(it->second, json{{"type", "event"},
                          {"kind", "budget"},
                          {"session_id", s->id},
                          {"budgets", std::move(states)}});
    bump(Counter::k_budget_pushes);
    ++told;
  }
  return told;
}

// ---------------------------------------------------------------------------------------------
// Event ring

bool EscalationServer::attach_ring(const std::shared_ptr<Connection>& conn, std::vector<int>& fds) {
  if (fds.size() != 3) return false;
  auto region = protocol::RingRegion::attach(fds[0]);
  fds[0] = -1;  // taken (closed by attach on failure)
  if (!region.is_ok()) {
    spdlog::warn("dp connection {}: event ring refused: {}", conn->id, region.status().message());
    fds.erase(fds.begin());
    return false;
  }
  auto ring = std::make_unique<Connection::Ring>();
  ring->region = std::move(*region);
  ring->cp_wake_fd = fds[1];
  ring->dp_wake_fd = fds[2];
  fds.clear();
  // The dp's eventfds might be anything it chose to send: cp_wake is only waited on
  // (edge-triggered, never read), dp_wake only ever written 8 bytes, non-blocking.
  int flags = fcntl(ring->cp_wake_fd, F_GETFL);
  if (flags < 0 || fcntl(ring->cp_wake_fd, F_SETFL, flags | O_NONBLOCK) != 0) return false;
  flags = fcntl(ring->dp_wake_fd, F_GETFL);
  if (flags < 0 || fcntl(ring->dp_wake_fd, F_SETFL, flags | O_NONBLOCK) != 0) return false;
  ring->written = ring->region.watermark().written.load();
  ring->expected_seq = ring->written + 1;
  int wake = ring->cp_wake_fd;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    epoll_event ev{};
    // Edge-triggered: each write of the dp is an edge, so the eventfd is never read (one
    // system call less per wake-up; whatever the dp sent, cp only ever waits on it).
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = wake;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake, &ev) != 0) return false;
    ring_fds_[wake] = conn;
  }
  conn->ring = std::move(ring);
  bump(Counter::k_rings_attached);
  spdlog::info("dp connection {}: events on a shared-memory ring ({} KiB)", conn->id,
               conn->ring->region.forward().capacity() >> 10);
  return true;
}

void EscalationServer::drain_ring(const std::shared_ptr<Connection>& conn) {
  Connection::Ring* ring = conn->ring.get();
  if (ring == nullptr || ring->draining || conn->reading_stopped) return;
  ring->draining = true;
  protocol::SpscRing& fwd = ring->region.forward();
  while (!conn->reading_stopped) {
    protocol::RecordView r;
    size_t n = 0;
    // Batches: the space goes back to the producer once per batch, not per record.
    while (n < 256 && fwd.peek(&r)) {
      on_ring_record(conn, r);
      fwd.advance();
      ++n;
      if (conn->reading_stopped || conn->ring.get() != ring) break;
    }
    // The batch's records are written here, on this thread (one pwritev per session file),
    // and the dp's write-ahead waits answered through the watermark.
    if (n > 0 && handlers_.recorder != nullptr) {
      grouping_audit_ = true;
      handlers_.recorder->commit();
      grouping_audit_ = false;
      answer_audit_group();
    }
    if (conn->ring.get() != ring) return;
    fwd.release();
    if (n > 0) bump(Counter::k_ring_batches);
    if (fwd.corrupt()) {
      bump(Counter::k_frames_bad);
      ring->draining = false;
      return fail_connection(conn, 0, ec::kBadFrame,
                             invalid_argument("the event ring is corrupt", "08P01"));
    }
    if (n == 256) continue;
    if (fwd.park()) break;
  }
  ring->draining = false;
}

void EscalationServer::on_ring_record(const std::shared_ptr<Connection>& conn,
                                      const protocol::RecordView& r) {
  bump(Counter::k_ring_records);
  auto type = static_cast<protocol::RecordType>(r.header.type);
  Connection::Ring* ring = conn->ring.get();
  if (type == protocol::RecordType::kStatementRecord) {
    if (r.header.seq != ring->expected_seq) {
      bump(Counter::k_frames_bad);
      return fail_connection(
          conn, 0, ec::kBadFrame,
          invalid_argument("event ring: write-ahead record out of sequence", "08P01"));
    }
    ++ring->expected_seq;
  }
  if (type != protocol::RecordType::kEventJson) return on_ring_event(conn, r);
  auto fields = protocol::record_to_json(type, r.payload);
  if (!fields.is_ok()) {
    bump(Counter::k_events_bad);
    spdlog::warn("dp connection {}: bad ring record: {}", conn->id, fields.status().message());
    if (type == protocol::RecordType::kStatementRecord) {
      ring_answer(conn, r.header.seq, protocol::make_error(0, ec::kBadRequest, fields.status()));
    }
    return;
  }
  handle_event(conn, std::move(*fields));
}

void EscalationServer::on_ring_event(const std::shared_ptr<Connection>& conn,
                                     const protocol::RecordView& r) {
  auto type = static_cast<protocol::RecordType>(r.header.type);
  recording::RecordFields fields;
  std::string sql;
  if (Status st = ring_record_fields(type, r.payload, fields, sql); !st.is_ok()) {
    bump(Counter::k_events_bad);
    spdlog::warn("dp connection {}: bad ring record: {}", conn->id, st.message());
    if (type == protocol::RecordType::kStatementRecord) {
      ring_answer(conn, r.header.seq, protocol::make_error(0, ec::kBadRequest, st));
    }
    return;
  }
  // Reused: a 16-digit id does not fit std::string's inline buffer (one allocation a record).
  thread_local std::string sid;
  char hex[16];
  sid.assign(protocol::session_hex(r.header.session, hex));
  // The dp publishes a session's records only after cp answered its authenticate or
  // reregister (docs/protocol.md, "reregister"): an unknown session here is not one whose
  // registration is still in the socket.
  auto s = find_session(conn, sid);
  const bool rows = type == protocol::RecordType::kRows;
  if (s && type == protocol::RecordType::kStatementEnd && handlers_.budgets != nullptr) {
    if (auto end = protocol::StatementEndFields::decode(r.payload); end.is_ok()) {
      protocol::BudgetUsage usage;
      usage[protocol::BudgetMeasure::kStatements] = end->executed ? 1 : 0;
      usage[protocol::BudgetMeasure::kRows] = end->rows;
      usage[protocol::BudgetMeasure::kResultBytes] = end->result_bytes;
      usage[protocol::BudgetMeasure::kMaskedCells] = end->masked_cells;
      account_usage(s, usage);
    }
  }
  std::optional<audit::AuditRecord> audited;
  if (!rows) {
    audited = audit_base(s, "statement", sid);
    audit_fields(fields, *audited);
  }
  if (type == protocol::RecordType::kStatementRecord) {
    json answer;
    if (!s) {
      answer = protocol::make_error(0, ec::kUnknownSession,
                                    invalid_argument("no authenticated session", "08P01"));
    } else {
      note_ahead(*s, r.header.seq, nullptr);
      answer = record_ahead(conn, s, std::move(fields), std::move(sql), std::move(audited), 0,
                            r.header.seq);
      if (!answer.is_null()) note_ahead(*s, r.header.seq, answer);
    }
    if (!answer.is_null()) ring_answer(conn, r.header.seq, answer);
    return;
  }
  bump(Counter::k_events_received);
  if (s) {
    (void)record_event(s, rows ? "rows" : "statement", std::move(fields), /*count_loss=*/true,
                       /*defer=*/true);
  }
  if (audited) audit_recorded(*audited);
}

void EscalationServer::answer_audit_group() {
  if (audit_group_.empty()) return;
  std::vector<AuditedAnswer> group;
  group.swap(audit_group_);
  const Status st = audit_.write_batched();
  static const json kRingOk = protocol::make_ok(0);
  for (AuditedAnswer& a : group) {
    // Recorded but not audited: the statement does not run (as for a single line).
    const json answer = st.is_ok() ? kRingOk : refuse_unaudited(a.session, 0, a.sql, st);
    note_ahead(*a.session, a.ring_seq, answer);
    if (auto c = a.conn.lock()) ring_answer(c, a.ring_seq, answer);
  }
}

void EscalationServer::audit_recorded(const audit::AuditRecord& r) {
  if (std::this_thread::get_id() != loop_thread_.get_id()) return audit_.record(r);
  audit_.record_batched(r);
  audit_unflushed_ = true;
}

void EscalationServer::reply(const std::shared_ptr<Connection>& conn, uint64_t ring_seq,
                             const json& answer) {
  if (ring_seq == 0) return send(conn, answer);
  ring_answer(conn, ring_seq, answer);
}

void EscalationServer::ring_answer(const std::shared_ptr<Connection>& conn, uint64_t seq,
                                   const json& answer) {
  Connection::Ring* ring = conn->ring.get();
  if (ring == nullptr) return;
  bool wake = false;
  bool overflow = false;
  {
    std::lock_guard<std::mutex> lock(ring->mu);
    if (seq <= ring->written || ring->answered_ahead.count(seq) != 0) return;
    if (!answer.value("ok", false)) {
      bump(Counter::k_ring_refused);
      std::string error = answer.contains("error")
                              ? answer["error"].dump(-1, ' ', false, json::error_handler_t::replace)
                              : std::string("{}");
      protocol::SpscRing& back = ring->region.backward();
      overflow = !back.try_write(static_cast<uint16_t>(protocol::BackwardType::kRecordRefused), 0,
                                 seq, {error});
      back.publish();
    }
    if (!overflow) {
      uint64_t written = ring->written;
      // In order (the usual case): no set node to allocate and free.
      if (seq == written + 1) {
        written = seq;
      } else {
        ring->answered_ahead.insert(seq);
      }
      while (!ring->answered_ahead.empty() && *ring->answered_ahead.begin() == written + 1) {
        ring->answered_ahead.erase(ring->answered_ahead.begin());
        ++written;
      }
      if (written != ring->written) {
        ring->written = written;
        protocol::WatermarkBlock& wm = ring->region.watermark();
        wm.written.store(written, std::memory_order_seq_cst);
        uint64_t wants = wm.dp_wants.load(std::memory_order_seq_cst);
        wake = wants != 0 && wants <= written && wm.dp_wants.exchange(0) != 0;
      }
    }
  }
  if (wake) {
    bump(Counter::k_ring_dp_wakes);
    uint64_t one = 1;
    (void)!::write(ring->dp_wake_fd, &one, sizeof one);
  }
  if (overflow) {
    // The dp does not read its refusals: drop the connection (its statements fail closed and
    // are sent again on the next connection).
    spdlog::warn("dp connection {}: event ring answers not read; closing", conn->id);
    std::lock_guard<std::mutex> lock(conn->mu);
    if (!conn->closed) ::shutdown(conn->fd, SHUT_RDWR);
  }
}

}  // namespace pgwarden::server
