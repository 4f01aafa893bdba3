#include "controlplane/server/admin_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <deque>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/atomic_file.h"
#include "common/status_names.h"
#include "common/protocol/frame.h"
#include "common/protocol/messages.h"
#include "controlplane/identity/jws.h"
#include "controlplane/recording/recorder.h"
#include "controlplane/recording/recording_file.h"
#include "controlplane/vault/credential_hash.h"
#include "rules/lexer.h"
#include "rules/matcher.h"
#include "rules/rule_set.h"

namespace pgwarden::server {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr int kIdleTimeoutMs = 30000;
constexpr size_t kMaxPrincipalBytes = 128;

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string peer_of(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return "unknown";
  return "uid=" + std::to_string(cred.uid) + ",pid=" + std::to_string(cred.pid);
}

json error_json(const Status& s) {
  json e{{"code", admin_error_code(s)}, {"message", s.message()}};
  if (!s.sqlstate().empty()) e["sqlstate"] = s.sqlstate();
  return e;
}

std::string str_arg(const json& args, const char* key) {
  auto it = args.find(key);
  return it != args.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The same PBKDF2 cost as a real check when the principal is unknown.
const vault::CredentialHash& dummy_hash() {
  static const vault::CredentialHash h = *vault::parse_credential_hash(
      vault::hash_credential("pgwarden-admin-dummy", vault::kDefaultCredentialIterations));
  return h;
}

json policy_summary(const policy::Policy& p) {
  return json{{"name", p.name},
              {"groups", p.groups},
              {"targets", p.targets},
              {"read_only", p.read_only},
              {"rule_sets", p.rule_sets},
              {"recording", protocol::enum_name(p.recording)},
              {"approver_groups", p.approvals.approver_groups}};
}

json policy_detail(const policy::Policy& p) {
  json j = policy_summary(p);
  j["allowed_kinds"] = p.allowed_kinds;
  j["allowed_relations"] = p.allowed_relations;
  j["allowed_functions"] = p.allowed_functions;
  j["approve_kinds"] = p.approve_kinds;
  json masks = json::array();
  for (const policy::MaskRule& m : p.masks) {
    json mj{{"function", m.function}};
    if (!m.column_glob.empty()) mj["column"] = m.column_glob;
    if (!m.name_pattern.empty()) mj["name_pattern"] = m.name_pattern;
    if (!m.type_name.empty()) mj["type"] = m.type_name;
    masks.push_back(std::move(mj));
  }
  j["masks"] = std::move(masks);
  j["deny_masked_in_expressions"] = p.deny_masked_in_expressions;
  j["approval_timeout_s"] = p.approvals.timeout_seconds;
  j["recording_required"] = p.recording_required;
  j["recording_row_cap"] = p.recording_row_cap;
  j["allow_function_call"] = p.allow_function_call;
  j["version"] = p.version;
  return j;
}

bool valid_set_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > rules::kMaxRuleFileBytes) return resource_exhausted(path + " too large");
  return ss.str();
}

// Parses and compiles `content` as rule set `name`; the Hyperscan compile catches patterns
// the parser accepts but the engine cannot build.
Result<rules::RuleSet> validate_rules(const std::string& name, const std::string& content) {
  rules::RuleSource src{name + ".rules", content};
  auto set = rules::RuleSet::parse(std::span<const rules::RuleSource>(&src, 1));
  if (!set.is_ok()) return invalid_argument(set.status().message());
  auto compiled = rules::CompiledRuleSet::compile(*set);
  if (!compiled.is_ok()) return invalid_argument(compiled.status().message());
  return std::move(*set);
}

json rule_json(const rules::Rule& r) {
  return json{{"id", r.id},
              {"action", rules::action_name(r.action)},
              {"view", rules::view_name(r.view)},
              {"pattern", r.pattern},
              {"message", r.message},
              {"severity", rules::severity_name(r.severity)},
              {"line", r.line}};
}

// "2026-11-24T02:11:42.123Z" (the audit log's ts) -> unix ms; 0 when unparseable.
int64_t audit_time_ms(const std::string& ts) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(ts.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6) {
    return 0;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(::timegm(&tm)) * 1000 + ms;
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

std::string_view admin_error_code(const Status& status) {
  return status_code_snake_name(status.code());
}

namespace {

// Gives the freshly bound (owner-only) socket file its configured group and mode. The path
// must still be our socket: a directory writable by others could let it be swapped.
Status apply_socket_access(const std::string& path, const config::ControlPlaneSettings& s) {
  auto fail = [&](const std::string& what) {
    return unavailable("cannot " + what + " admin socket " + path + ": " + std::strerror(errno));
  };
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return fail("stat");
  if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid()) {
    return unavailable("admin socket " + path + " was replaced after bind");
  }
  if (!s.admin_socket_group.empty()) {
    auto gid = config::lookup_group(s.admin_socket_group);
    if (!gid.is_ok()) {
      return unavailable("admin socket group: " + gid.status().message());
    }
    if (::lchown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
      return fail("chgrp (to " + s.admin_socket_group + ")");
    }
  }
  if (::chmod(path.c_str(), s.admin_socket_mode) != 0) return fail("chmod");
  return Status::ok();
}

}  // namespace

AdminServer::AdminServer(AdminBackend backend) : b_(std::move(backend)) {
  if (!b_.reload) {
    config::ConfigStore* store = b_.config;
    b_.reload = [store] { return store->reload(); };
  }
}

AdminServer::~AdminServer() { stop(); }

Status AdminServer::start() {
  auto cfg = b_.config->current();
  if (!cfg || cfg->control_plane.admin_socket.empty()) {
    return failed_precondition("no $.control_plane.admin_socket configured");
  }
  (void)dummy_hash();
  socket_path_ = cfg->control_plane.admin_socket;
  // The socket is bound under a temporary name, given its group and mode, made to listen and
  // only then renamed into place: whoever sees the configured path sees a socket that accepts
  // connections with its final access, never a half-set-up one.
  const std::string tmp_path = socket_path_ + ".tmp";
  sockaddr_un addr{};
  if (tmp_path.size() >= sizeof(addr.sun_path)) {
    return invalid_argument("admin socket path too long (at most " +
                            std::to_string(sizeof(addr.sun_path) - 5) +
                            " bytes): " + socket_path_);
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, tmp_path.c_str(), tmp_path.size() + 1);
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return internal_error(std::string("socket: ") + std::strerror(errno));
  ::unlink(tmp_path.c_str());
  // Created with no access for anyone but the owner; only then given its group and widened to
  // the configured mode, so it is never more open than configured.
  mode_t old = ::umask(0177);
  int rc = ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old);
  Status st =
      rc == 0
          ? apply_socket_access(tmp_path, cfg->control_plane)
          : unavailable("cannot bind admin socket " + tmp_path + ": " + std::strerror(errno));
  if (st.is_ok() && ::listen(listen_fd_, 16) != 0) {
    st = unavailable("cannot listen on admin socket " + tmp_path + ": " + std::strerror(errno));
  }
  if (st.is_ok() && ::rename(tmp_path.c_str(), socket_path_.c_str()) != 0) {
    st = unavailable("cannot rename admin socket " + tmp_path + " to " + socket_path_ + ": " +
                     std::strerror(errno));
  }
  if (!st.is_ok()) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    if (rc == 0) ::unlink(tmp_path.c_str());
    return st;
  }
  if (::pipe2(wake_fd_, O_CLOEXEC) != 0) return internal_error("pipe2 failed");
  accept_thread_ = std::thread([this] { accept_loop(); });
  return Status::ok();
}

void AdminServer::stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_[1] >= 0) (void)!::write(wake_fd_[1], "x", 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (Conn& c : conns_) ::shutdown(c.fd, SHUT_RDWR);
  }
  reap(true);
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(socket_path_.c_str());
    listen_fd_ = -1;
  }
  for (int& fd : wake_fd_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
}

void AdminServer::reap(bool all) {
  std::list<Conn> finished;
  {
    std::lock_guard<std::mutex> lock(conns_mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (all || it->done->load()) {
        finished.splice(finished.end(), conns_, it++);
      } else {
        ++it;
      }
    }
  }
  for (Conn& c : finished) c.thread.join();
}

void AdminServer::accept_loop() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_[0], POLLIN, 0}};
  while (!stopping_.load()) {
    int n = ::poll(fds, 2, 1000);
    reap(false);
    if (n <= 0 || stopping_.load()) continue;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(conns_mu_);
    if (conns_.size() >= static_cast<size_t>(kMaxAdminConnections)) {
      std::string out;
      (void)protocol::append_message(
          out, json{{"ok", false},
                    {"error", error_json(resource_exhausted("too many admin connections"))}});
      (void)write_all(fd, out);
      ::close(fd);
      continue;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    Conn c{fd, {}, done};
    c.thread = std::thread([this, fd, done] {
      serve(fd);
      ::close(fd);
      done->store(true);
    });
    conns_.push_back(std::move(c));
  }
}

void AdminServer::serve(int fd) {
  const std::string peer = peer_of(fd);
  protocol::FrameDecoder decoder;
  char buf[16384];
  while (!stopping_.load()) {
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, kIdleTimeoutMs);
    if (n <= 0) return;  // idle too long, or error
    ssize_t got = ::recv(fd, buf, sizeof(buf), 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;
    decoder.feed(std::string_view(buf, static_cast<size_t>(got)));
    while (true) {
      auto frame = decoder.next();
      std::string out;
      if (!frame.is_ok()) {
        (void)protocol::append_message(
            out, json{{"ok", false}, {"error", error_json(invalid_argument("bad frame"))}});
        (void)write_all(fd, out);
        return;
      }
      if (!frame->has_value()) break;
      auto request = protocol::parse_payload(**frame);
      json response;
      if (!request.is_ok()) {
        response = json{{"ok", false}, {"error", error_json(invalid_argument("bad json"))}};
      } else {
        response = handle(*request, peer);
      }
      std::string text = response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (text.size() > protocol::kMaxAdminReplyBytes) {
        json small{{"ok", false},
                   {"error", error_json(resource_exhausted(
                                 "reply too large for the admin API; read the state "
                                 "directory directly (--state-dir)"))}};
        if (response.contains("id")) small["id"] = response["id"];
        text = small.dump();
      }
      if (!protocol::append_frame(out, text, protocol::kMaxAdminReplyBytes).is_ok() ||
          !write_all(fd, out)) {
        return;
      }
    }
  }
}

json AdminServer::handle(const json& request, const std::string& peer) {
  json response{{"ok", false}};
  if (request.contains("id") && request["id"].is_number_integer() && request["id"] >= 0) {
    response["id"] = request["id"];
  }
  auto fail = [&](const Status& s) {
    response["ok"] = false;
    response["error"] = error_json(s);
    return response;
  };
  if (str_arg(request, "type") != "admin") return fail(invalid_argument("type must be admin"));
  std::string command = str_arg(request, "command");
  std::string principal = str_arg(request, "principal");
  std::string credential = str_arg(request, "credential");
  json args = request.contains("args") ? request["args"] : json::object();
  if (!args.is_object()) return fail(invalid_argument("args must be an object"));
  if (principal.size() > kMaxPrincipalBytes) principal.resize(kMaxPrincipalBytes);

  auto cfg = b_.config->current();
  const config::AdminPrincipal* match = nullptr;
  for (const config::AdminPrincipal& a : cfg->control_plane.admin_principals) {
    if (a.name == principal) match = &a;
  }
  // Constant work whether or not the principal exists.
  bool verified = vault::verify_credential(match ? match->credential : dummy_hash(), credential);
  if (!match || !verified || credential.empty()) {
    b_.audit->record(
        audit::AuditRecord{.event = "admin_auth",
                           .identity = principal,
                           .policy_version = cfg->version,
                           .decision = "rejected",
                           .reason = match ? "bad credential" : "unknown principal",
                           .extra = {{"command", command.substr(0, 64)}, {"peer", peer}}});
    return fail(unauthenticated("admin authentication failed"));
  }
  AdminCaller who{.name = match->name, .groups = match->groups, .via = "socket", .peer = peer};
  Result<json> result = execute(command, args, who);
  if (!result.is_ok()) return fail(result.status());
  response["ok"] = true;
  response["result"] = std::move(*result);
  return response;
}

Result<json> AdminServer::execute(const std::string& command, const json& args,
                                  const AdminCaller& who) {
  auto cfg = b_.config->current();
  Result<json> result = run(command, args, who, cfg);
  json audited_args = json::object();
  for (const char* key : {"id", "set", "rule", "name", "scope", "for_s", "state", "identity", "key",
                          "kind", "until_ms", "budget"}) {
    if (args.contains(key)) audited_args[key] = args[key];
  }
  json extra{{"command", command}, {"peer", who.peer}, {"args", audited_args}};
  if (who.via != "socket") extra["via"] = who.via;
  if (!who.role.empty()) extra["role"] = who.role;
  b_.audit->record(audit::AuditRecord{
      .event = "admin",
      .identity = who.name,
      .groups = who.groups,
      .policy_version = cfg->version,
      .decision = result.is_ok() ? "ok" : std::string(admin_error_code(result.status())),
      .reason = result.is_ok() ? str_arg(args, "reason") : result.status().message(),
      .extra = extra});
  return result;
}

std::string AdminServer::recordings_dir(const config::Config& cfg) const {
  if (!b_.recordings_dir.empty()) return b_.recordings_dir;
  return cfg.control_plane.state_dir + "/recordings";
}

Status AdminServer::wait_enforced(const config::Config& applied) {
  if (!b_.wait_rules_enforced) return Status::ok();
  std::vector<std::string> behind = b_.wait_rules_enforced(kRulesEnforcedWaitMs);
  if (behind.empty()) return Status::ok();
  std::string names;
  for (const std::string& n : behind) names += (names.empty() ? "" : ", ") + n;
  json runtime = b_.runtime_status ? b_.runtime_status() : json::object();
  std::string generation =
      runtime.contains("rules") ? std::to_string(runtime["rules"].value("generation", 0)) : "?";
  return deadline_exceeded(
      "applied in cp (policy version " + std::to_string(applied.version) + ", rules generation " +
      generation + "), but " + std::to_string(behind.size()) +
      " dataplane(s) did not confirm within " + std::to_string(kRulesEnforcedWaitMs / 1000) +
      " s that they enforce it: " + names +
      "; they may still run the previous rules (pgwardenctl status shows each dataplane's "
      "generation)");
}

Result<json> AdminServer::reload_config(const std::string& event, const Principal& who) {
  config::LoadOutcome outcome = b_.reload();
  json runtime = b_.runtime_status ? b_.runtime_status() : json::object();
  if (!outcome.ok()) {
    auto cfg = b_.config->current();
    std::string running = "policy version " + std::to_string(cfg ? cfg->version : 0);
    if (runtime.contains("rules")) {
      running += ", rules generation " + std::to_string(runtime["rules"].value("generation", 0));
    }
    return invalid_argument(std::string(event == "rules_reload" ? "rules" : "configuration") +
                            " rejected, the running version stays in cp and every dataplane (" +
                            running + "):\n" + outcome.error_text());
  }
  (void)who;
  PGW_RETURN_IF_ERROR(wait_enforced(*outcome.config));
  runtime = b_.runtime_status ? b_.runtime_status() : json::object();
  json j{{"policy_version", outcome.config->version},
         {"policies", outcome.config->policies.size()},
         {"targets", outcome.config->targets.size()}};
  if (runtime.contains("rules")) j["rules"] = runtime["rules"];
  if (runtime.contains("dataplanes")) j["dataplanes"] = runtime["dataplanes"];
  return j;
}

Result<json> AdminServer::run(const std::string& command, const json& args, const Principal& who,
                              std::shared_ptr<const config::Config> cfg) {
  if (command == "status") {
    json j{{"version", b_.version},
           {"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::steady_clock::now() - started_)
                            .count()},
           {"policy_version", cfg->version},
           {"config_path", b_.config->path()},
           {"policies", cfg->policies.size()},
           {"targets", cfg->targets.size()},
           {"principal", who.name}};
    if (b_.approvals) {
      j["pending_approvals"] = b_.approvals->list(approvals::ApprovalState::kPending).size();
    }
    if (b_.runtime_status) j.update(b_.runtime_status());
    if (b_.budgets) {
      size_t exhausted = 0;
      for (const json& row : b_.budgets->list(cfg->budgets, protocol::now_unix_ms())) {
        if (!row["budget"]["exhausted"].is_null()) ++exhausted;
      }
      j["budgets"] = {{"configured", cfg->budgets.size()}, {"exhausted", exhausted}};
    }
    return j;
  }

  if (command.starts_with("budgets.")) return budget_command(command, args, *cfg);

  if (command == "dataplane") {
    if (!b_.dataplanes) return unavailable("this control plane does not collect dataplane stats");
    return b_.dataplanes();
  }

  if (command.starts_with("approvals.")) {
    if (!b_.approvals) return unavailable("approvals are not enabled in this control plane");
    std::string id = str_arg(args, "id");
    if (command == "approvals.list") {
      std::optional<approvals::ApprovalState> state;
      std::string s = str_arg(args, "state");
      if (!s.empty() && s != "all") {
        state = approvals::parse_approval_state(s);
        if (!state) return invalid_argument("unknown approval state '" + s + "'");
      }
      json list = json::array();
      for (const approvals::ApprovalRequest& r : b_.approvals->list(state)) {
        list.push_back(r.to_json());
      }
      return json{{"approvals", std::move(list)}};
    }
    if (id.empty()) return invalid_argument(command + " needs an approval id");
    if (command == "approvals.show") {
      auto r = b_.approvals->get(id);
      if (!r) return not_found("no approval " + id);
      return r->to_json();
    }
    if (command == "approvals.approve" || command == "approvals.deny" ||
        command == "approvals.break_glass") {
      if (!b_.approvals->get(id)) return not_found("no approval " + id);
      approvals::ApprovalDecision d;
      d.approve = command != "approvals.deny";
      d.break_glass = command == "approvals.break_glass";
      d.via = who.via;
      d.decider = who.name;
      d.decider_groups = who.groups;
      d.reason = str_arg(args, "reason");
      if (!d.approve && d.reason.empty()) return invalid_argument("deny needs a --reason");
      if (d.break_glass && d.reason.empty()) {
        return invalid_argument("break-glass needs a --reason");
      }
      if (d.approve) {
        std::string scope = str_arg(args, "scope");
        if (!scope.empty()) {
          auto sc = approvals::parse_approval_scope(scope);
          if (!sc) return invalid_argument("scope must be once or shape");
          d.scope = *sc;
        }
        if (args.contains("for_s") && args["for_s"].is_number_integer()) {
          d.grant_seconds = args["for_s"].get<int64_t>();
        }
      }
      auto r = b_.approvals->decide(id, d);
      if (!r.is_ok()) return r.status();
      return r->to_json();
    }
    return invalid_argument("unknown command " + command);
  }

  if (command == "sessions.kill" || command.starts_with("identities.")) {
    return revocation_command(command, args, who);
  }

  if (command.starts_with("sessions.")) {
    std::string dir = recordings_dir(*cfg);
    if (command == "sessions.list") {
      json live = b_.live_sessions ? b_.live_sessions() : json::array();
      std::set<std::string> live_ids;
      for (const json& s : live) {
        if (s.contains("session_id")) live_ids.insert(str_arg(s, "session_id"));
      }
      json list = json::array();
      std::error_code ec;
      if (fs::is_directory(dir, ec)) {
        auto recs = recording::list_recordings(dir);
        if (!recs.is_ok()) return recs.status();
        for (const recording::RecordingSummary& r : *recs) {
          list.push_back(json{{"session_id", r.session_id},
                              {"identity", r.identity},
                              {"target", r.target},
                              {"start_ms", r.start_ms},
                              {"end_ms", r.end_ms},
                              {"statements", r.statements},
                              {"size_bytes", r.size_bytes},
                              {"verified", r.verified},
                              {"live", live_ids.count(r.session_id) > 0}});
        }
      }
      return json{{"sessions", std::move(list)}, {"live", std::move(live)}, {"dir", dir}};
    }
    std::string id = str_arg(args, "id");
    if (!recording::valid_session_id(id)) return invalid_argument("bad session id");
    std::string path = dir + "/" + id + ".jsonl";
    std::error_code ec;
    // Recorded on another node: a verified copy of that node's file (the hash chain is
    // checked here, on the bytes it sent).
    std::unique_ptr<fleet::FetchedRecording> remote;
    if (!fs::exists(path, ec)) {
      if (!b_.fetch_recording) return not_found("no recording for session " + id);
      auto fetched = b_.fetch_recording(id);
      if (!fetched.is_ok()) return fetched.status();
      remote = std::move(*fetched);
      path = remote->path();
    }
    auto where = [&](json j) {
      j["session_id"] = id;
      j["path"] = remote ? remote->node_id() + ":" + remote->file() : path;
      if (remote) {
        j["node"] = remote->node_id();
        j["fetched_from"] = remote->url();
      }
      return j;
    };
    if (command == "sessions.verify") {
      // The checkpoint lives in the state dir, next to the recordings dir.
      auto checkpoint =
          remote ? Result<recording::Checkpoint>(remote->checkpoint)
                 : recording::read_checkpoint(
                       (fs::path(dir).parent_path() / "recording_checkpoint.json").string());
      std::optional<bool> open;
      if (remote) {
        open = remote->open;
      } else if (b_.recording_open) {
        open = b_.recording_open(id);
      }
      auto report =
          recording::verify_session(path, checkpoint.is_ok() ? &*checkpoint : nullptr, open);
      if (!report.is_ok()) return report.status();
      return where(report->to_json());
    }
    if (command == "sessions.show" || command == "sessions.replay") {
      recording::VerifyReport report;
      auto records = recording::read_recording(path, &report);
      if (!records.is_ok()) return records.status();
      json j = where(json{{"verify", report.to_json()}});
      if (command == "sessions.replay") {
        j["records"] = std::move(*records);
        return j;
      }
      json kinds = json::object();
      for (const json& r : *records) {
        std::string kind = str_arg(r, "kind");
        kinds[kind] = kinds.value(kind, 0) + 1;
        if (kind == "session_start") j["start"] = r;
        if (kind == "session_end") j["end"] = r;
      }
      j["kinds"] = std::move(kinds);
      return j;
    }
    return invalid_argument("unknown command " + command);
  }

  if (command == "policies.list") {
    json list = json::array();
    for (const policy::Policy& p : cfg->policies) list.push_back(policy_summary(p));
    return json{{"policies", std::move(list)}, {"policy_version", cfg->version}};
  }
  if (command == "policies.show") {
    std::string name = str_arg(args, "name");
    for (const policy::Policy& p : cfg->policies) {
      if (p.name == name) return policy_detail(p);
    }
    return not_found("no policy '" + name + "'");
  }

  if (command == "config.reload") return reload_config("config_reload", who);

  if (command.starts_with("rules.")) {
    if (command == "rules.reload") return reload_config("rules_reload", who);
    return rules_command(command.substr(6), args, *cfg);
  }

  if (command == "audit.search") return audit_search(args, *cfg);

  if (command == "tokens.inspect") {
    std::string token = str_arg(args, "token");
    auto decoded = identity::decode_unverified(token);
    json j;
    if (auto* rej = std::get_if<identity::Rejection>(&decoded)) {
      j["decoded"] = false;
      j["decode_error"] = {{"reason", identity::reject_reason_name(rej->reason)},
                           {"message", rej->message}};
    } else {
      const auto& t = std::get<identity::UnverifiedToken>(decoded);
      j["decoded"] = true;
      j["header"] = t.header;
      j["claims"] = t.claims;
    }
    if (!b_.validate_token) {
      j["validation"] = {{"checked", false}, {"message", "no identity providers loaded"}};
      return j;
    }
    identity::IdentityResult r = b_.validate_token(token);
    if (r.is_ok()) {
      const identity::Identity& id = r.identity();
      j["validation"] = {{"checked", true},     {"valid", true},       {"subject", id.subject},
                         {"issuer", id.issuer}, {"groups", id.groups}, {"provider", id.provider}};
    } else {
      j["validation"] = {{"checked", true},
                         {"valid", false},
                         {"reason", identity::reject_reason_name(r.rejection().reason)},
                         {"message", r.rejection().message}};
    }
    return j;
  }
  return invalid_argument("unknown command '" + command + "'");
}

Result<json> AdminServer::budget_command(const std::string& command, const json& args,
                                         const config::Config& cfg) {
  if (!b_.budgets) return unavailable("budgets are not available in this control plane");
  int64_t now = protocol::now_unix_ms();
  json names = json::array();
  for (const budgets::BudgetRule& r : cfg.budgets) names.push_back(r.name);
  if (command == "budgets.list") {
    return json{{"configured", std::move(names)}, {"usage", b_.budgets->list(cfg.budgets, now)}};
  }
  std::string identity = str_arg(args, "identity");
  if (identity.empty()) return invalid_argument(command + " needs an identity (subject)");
  if (command == "budgets.show") {
    return json{{"identity", identity}, {"budgets", b_.budgets->show(cfg.budgets, identity, now)}};
  }
  if (command != "budgets.reset") return invalid_argument("unknown command '" + command + "'");
  std::string budget = str_arg(args, "budget");
  if (!budget.empty() &&
      std::none_of(cfg.budgets.begin(), cfg.budgets.end(),
                   [&](const budgets::BudgetRule& r) { return r.name == budget; })) {
    return not_found("no budget named \"" + budget + "\" in the configuration");
  }
  auto n = b_.budgets->reset(identity, budget);
  if (!n.is_ok()) return n.status();
  size_t told = b_.push_budgets ? b_.push_budgets(identity) : 0;
  return json{{"identity", identity},
              {"budget", budget.empty() ? json(nullptr) : json(budget)},
              {"counters_reset", *n},
              {"sessions_told", told}};
}

Result<json> AdminServer::revocation_command(const std::string& command, const json& args,
                                             const Principal& who) {
  std::string reason = str_arg(args, "reason");
  int64_t now = protocol::now_unix_ms();
  if (command == "sessions.kill") {
    if (!b_.kill_sessions) return unavailable("this control plane cannot end sessions");
    json selector = json::object();
    for (const char* key : {"session_id", "identity", "key"}) {
      std::string v = str_arg(args, key == std::string("session_id") ? "id" : key);
      if (!v.empty()) selector[key] = v;
    }
    if (selector.empty()) {
      return invalid_argument("sessions kill needs a session id, --identity or --key");
    }
    if (reason.empty()) reason = "ended by an operator";
    auto result = b_.kill_sessions(selector, reason, who.name, "admin_kill");
    if (!result.is_ok()) return result.status();
    std::vector<std::string> killed = std::move(result).value();
    if (killed.empty() && selector.contains("session_id")) {
      return not_found("no live session " + str_arg(args, "id"));
    }
    return json{{"killed", killed}, {"reason", reason}};
  }
  if (!b_.revocations) return unavailable("revocations are not available in this control plane");
  if (command == "identities.list") {
    bool all = args.contains("all") && args["all"].is_boolean() && args["all"].get<bool>();
    json list = json::array();
    for (const Revocation& r : b_.revocations->list(now, all)) {
      json j = r.to_json();
      j["active"] = r.active(now);
      list.push_back(std::move(j));
    }
    return json{{"revocations", std::move(list)}, {"path", b_.revocations->path()}};
  }
  std::string name = str_arg(args, "name");
  if (name.empty()) return invalid_argument(command + " needs a subject or key id");
  auto kind = parse_revocation_kind(str_arg(args, "kind"));
  if (!kind) return invalid_argument("kind must be identity, key or any");
  if (command == "identities.unrevoke") {
    auto removed = b_.revocations->unrevoke(name, *kind);
    if (!removed.is_ok()) return removed.status();
    json list = json::array();
    for (const Revocation& r : *removed) list.push_back(r.to_json());
    return json{{"removed", std::move(list)}};
  }
  if (command != "identities.revoke") return invalid_argument("unknown command " + command);
  Revocation r{.name = name,
               .kind = *kind,
               .reason = reason.empty() ? "revoked by an operator" : reason,
               .by = who.name,
               .created_ms = now};
  if (args.contains("until_ms")) {
    if (!args["until_ms"].is_number_integer() || args["until_ms"].get<int64_t>() <= now) {
      return invalid_argument("--until must be a time in the future");
    }
    r.until_ms = args["until_ms"].get<int64_t>();
  }
  PGW_RETURN_IF_ERROR(b_.revocations->revoke(r));
  std::vector<std::string> killed;
  if (b_.kill_sessions) {
    std::string why = (r.kind == RevocationKind::kKey ? "key " : "identity ") + name +
                      " was revoked: " + r.reason;
    if (r.kind != RevocationKind::kKey) {
      // The revocation is stored: other nodes end their sessions from it even when this
      // kill request cannot reach them.
      auto ended = b_.kill_sessions(json{{"identity", name}}, why, who.name, "revoked");
      for (auto& id : ended.is_ok() ? *ended : std::vector<std::string>{}) {
        killed.push_back(std::move(id));
      }
    }
    if (r.kind != RevocationKind::kIdentity) {
      // The revocation is stored: other nodes end their sessions from it even when this
      // kill request cannot reach them.
      auto ended = b_.kill_sessions(json{{"key", name}}, why, who.name, "revoked");
      for (auto& id : ended.is_ok() ? *ended : std::vector<std::string>{}) {
        killed.push_back(std::move(id));
      }
    }
  }
  return json{{"revocation", r.to_json()}, {"killed", killed}};
}

Result<json> AdminServer::rules_command(const std::string& sub, const json& args,
                                        const config::Config& cfg) {
  if (b_.rules_dir.empty()) return unavailable("no rules directory configured (--rules-dir)");
  std::map<std::string, std::vector<std::string>> used_by;
  for (const policy::Policy& p : cfg.policies) {
    for (const std::string& s : p.rule_sets) used_by[s].push_back(p.name);
  }
  if (sub == "test") return rules_test(args, cfg);
  if (sub == "list") {
    std::set<std::string> names;
    for (const auto& [name, _] : used_by) names.insert(name);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(b_.rules_dir, ec)) {
      if (e.path().extension() == ".rules") names.insert(e.path().stem().string());
    }
    json list = json::array();
    for (const std::string& name : names) {
      std::string path = b_.rules_dir + "/" + name + ".rules";
      json j{{"name", name}, {"path", path}, {"used_by", used_by[name]}};
      auto text = read_text(path);
      if (!text.is_ok()) {
        j["error"] = text.status().message();
      } else {
        rules::RuleSource src{name + ".rules", *text};
        auto set = rules::RuleSet::parse(std::span<const rules::RuleSource>(&src, 1));
        if (set.is_ok()) {
          j["rules"] = set->size();
        } else {
          j["error"] = set.status().message();
        }
      }
      list.push_back(std::move(j));
    }
    return json{{"rule_sets", std::move(list)}, {"dir", b_.rules_dir}};
  }
  std::string name = str_arg(args, "set");
  if (!valid_set_name(name)) return invalid_argument("bad rule set name '" + name + "'");
  std::string path = b_.rules_dir + "/" + name + ".rules";
  std::lock_guard<std::mutex> lock(rules_mu_);
  auto text = read_text(path);
  if (sub == "show") {
    if (!text.is_ok()) return text.status();
    rules::RuleSource src{name + ".rules", *text};
    auto set = rules::RuleSet::parse(std::span<const rules::RuleSource>(&src, 1));
    if (!set.is_ok()) return invalid_argument(set.status().message());
    json list = json::array();
    for (const rules::Rule& r : set->rules()) list.push_back(rule_json(r));
    return json{
        {"set", name}, {"path", path}, {"rules", std::move(list)}, {"used_by", used_by[name]}};
  }
  if (sub != "add" && sub != "remove") return invalid_argument("unknown command rules." + sub);
  if (!text.is_ok()) {
    if (sub == "remove" || used_by.count(name) == 0) return text.status();
    text = std::string();  // a set named by a policy but not written yet
  }
  size_t before = 0;
  if (!text->empty()) {
    auto old = validate_rules(name, *text);
    if (old.is_ok()) before = old->size();
  }
  std::string updated;
  std::string rule_id;
  if (sub == "add") {
    std::string fragment = str_arg(args, "text");
    if (trim(fragment).empty()) return invalid_argument("rules add needs rule text");
    updated = *text;
    if (!updated.empty() && updated.back() != '\n') updated += '\n';
    updated += "\n" + fragment;
    if (updated.back() != '\n') updated += '\n';
  } else {
    rule_id = str_arg(args, "rule");
    std::istringstream in(*text);
    std::string line;
    bool skipping = false;
    bool found = false;
    while (std::getline(in, line)) {
      std::string t = trim(line);
      if (!t.empty() && t.front() == '[') skipping = t == "[" + rule_id + "]";
      if (skipping) {
        found = true;
        continue;
      }
      updated += line + "\n";
    }
    if (!found) return not_found("rule '" + rule_id + "' not in set " + name);
  }
  auto set = validate_rules(name, updated);
  if (!set.is_ok()) {
    return invalid_argument("rejected, " + path + " is unchanged:\n" + set.status().message());
  }
  if (sub == "add" && set->size() <= before) {
    return invalid_argument("the text defines no new rule; " + path + " is unchanged");
  }
  PGW_RETURN_IF_ERROR(replace_file_atomically(path, updated, 0644));
  json j{{"set", name}, {"path", path}, {"rules", set->size()}, {"previous_rules", before}};
  if (!rule_id.empty()) j["removed"] = rule_id;
  config::LoadOutcome outcome = b_.reload();
  if (outcome.ok()) {
    PGW_RETURN_IF_ERROR(wait_enforced(*outcome.config));
    j["policy_version"] = outcome.config->version;
  } else {
    j["reload_error"] = outcome.error_text();
  }
  return j;
}

Result<json> AdminServer::rules_test(const json& args, const config::Config& cfg) {
  std::string sql = str_arg(args, "sql");
  if (sql.empty()) return invalid_argument("rules test needs the sql to test");
  if (sql.size() > protocol::kMaxFrameBytes / 2) return invalid_argument("sql too long");
  // The sets: given by name, or those of the named policy, or every set a policy uses.
  std::vector<std::string> sets;
  if (args.contains("sets") && args["sets"].is_array()) {
    for (const json& s : args["sets"]) {
      if (s.is_string()) sets.push_back(s.get<std::string>());
    }
  } else if (std::string policy = str_arg(args, "policy"); !policy.empty()) {
    const policy::Policy* found = nullptr;
    for (const policy::Policy& p : cfg.policies) {
      if (p.name == policy) found = &p;
    }
    if (!found) return not_found("no policy '" + policy + "'");
    sets = found->rule_sets;
  } else {
    std::set<std::string> all;
    for (const policy::Policy& p : cfg.policies) all.insert(p.rule_sets.begin(), p.rule_sets.end());
    sets.assign(all.begin(), all.end());
  }
  if (sets.empty()) return invalid_argument("no rule sets to test against");
  std::vector<std::string> files;
  for (const std::string& name : sets) {
    if (!valid_set_name(name)) return invalid_argument("bad rule set name '" + name + "'");
    files.push_back(b_.rules_dir + "/" + name + ".rules");
  }
  std::vector<rules::RuleDiagnostic> diags;
  auto parsed = rules::RuleSet::load_files(files, &diags);
  if (!parsed.is_ok()) {
    std::string text;
    for (const rules::RuleDiagnostic& d : diags) text += d.to_string() + "\n";
    return invalid_argument(text.empty() ? parsed.status().message() : text);
  }
  auto compiled = rules::CompiledRuleSet::compile(std::move(*parsed));
  if (!compiled.is_ok()) return invalid_argument(compiled.status().message());
  struct Collect : rules::MatchSink {
    json matches = json::array();
    std::string scan_error;
    void on_match(const rules::Rule& r) override { matches.push_back(rule_json(r)); }
    void on_scan_error(std::string_view reason) override { scan_error = std::string(reason); }
  } sink;
  rules::LexedSql lexed = rules::lex_sql(sql);
  rules::Verdict verdict = (*compiled)->scan(lexed, sink);
  json j{{"verdict", rules::verdict_name(verdict)}, {"matches", std::move(sink.matches)},
         {"sets", sets}};
  if (!sink.scan_error.empty()) j["scan_error"] = sink.scan_error;
  if (lexed.flags().unterminated_quote) j["unterminated_quote"] = true;
  if (lexed.flags().unterminated_comment) j["unterminated_comment"] = true;
  return j;
}

Result<json> AdminServer::audit_search(const json& args, const config::Config& cfg) {
  std::string path;
  for (const config::AuditSink& s : cfg.audit_sinks) {
    if (s.kind == config::AuditSink::Kind::kFile) {
      path = s.path;
      break;
    }
  }
  if (path.empty()) return unavailable("no audit file sink is configured ($.audit.sinks)");
  int64_t limit = 100;
  if (args.contains("limit") && args["limit"].is_number_integer()) {
    limit = std::clamp<int64_t>(args["limit"].get<int64_t>(), 1, 1000);
  }
  int64_t since_ms = args.contains("since_ms") && args["since_ms"].is_number_integer()
                         ? args["since_ms"].get<int64_t>()
                         : 0;
  int64_t until_ms = args.contains("until_ms") && args["until_ms"].is_number_integer()
                         ? args["until_ms"].get<int64_t>()
                         : INT64_MAX;
  std::vector<std::pair<const char*, std::string>> equal;
  for (const char* key : {"event", "identity", "decision", "session_id"}) {
    std::string v = str_arg(args, key);
    if (!v.empty()) equal.emplace_back(key, v);
  }
  std::string text = str_arg(args, "text");
  std::ifstream in(path);
  if (!in) return not_found("cannot read the audit log " + path);
  std::deque<json> found;
  std::string line;
  uint64_t scanned = 0;
  while (std::getline(in, line)) {
    ++scanned;
    if (!text.empty() && line.find(text) == std::string::npos) continue;
    json r = json::parse(line, nullptr, false);
    if (!r.is_object()) continue;
    bool ok = true;
    for (const auto& [key, v] : equal) {
      if (str_arg(r, key) != v) ok = false;
    }
    if (!ok) continue;
    if (since_ms > 0 || until_ms != INT64_MAX) {
      int64_t ts = audit_time_ms(str_arg(r, "ts"));
      if (ts < since_ms || ts > until_ms) continue;
    }
    found.push_back(std::move(r));
    if (found.size() > static_cast<size_t>(limit)) found.pop_front();
  }
  json records = json::array();
  for (auto it = found.rbegin(); it != found.rend(); ++it) records.push_back(std::move(*it));
  return json{{"records", std::move(records)}, {"scanned", scanned}, {"path", path}};
}

}  // namespace pgwarden::server
