#include "controlplane/approvals/approval_store.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <queue>
#include <thread>
#include <utility>

namespace pgwarden::approvals {

namespace {

constexpr char kJournalName[] = "approvals.jsonl";
constexpr char kSystemDecider[] = "pgwarden";

int64_t system_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::string> random_id() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return internal_error("RAND_bytes failed");
  // The first character is a letter: an id is typed on command lines, where a leading '-'
  // would read as an option (`pgwardenctl approvals deny --x... --reason R`).
  std::string id(1, kAlphabet[bytes[0] % 52]);
  for (size_t i = 1; i < sizeof(bytes); ++i) id += kAlphabet[bytes[i] & 63];
  return id;
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return unavailable(std::string("approval journal write failed: ") + std::strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::ok();
}

std::string event_name(ApprovalState state) {
  switch (state) {
    case ApprovalState::kPending:
      return "approval_requested";
    case ApprovalState::kApproved:
      return "approval_approved";
    case ApprovalState::kDenied:
      return "approval_denied";
    case ApprovalState::kExpired:
      return "approval_expired";
    case ApprovalState::kAbandoned:
      return "approval_abandoned";
  }
  return "approval_unknown";
}

}  // namespace

std::string_view approval_state_name(ApprovalState state) {
  switch (state) {
    case ApprovalState::kPending:
      return "pending";
    case ApprovalState::kApproved:
      return "approved";
    case ApprovalState::kDenied:
      return "denied";
    case ApprovalState::kExpired:
      return "expired";
    case ApprovalState::kAbandoned:
      return "abandoned";
  }
  return "unknown";
}

std::string_view approval_scope_name(ApprovalScope scope) {
  return scope == ApprovalScope::kShape ? "shape" : "once";
}

std::optional<ApprovalState> parse_approval_state(std::string_view name) {
  for (auto s : {ApprovalState::kPending, ApprovalState::kApproved, ApprovalState::kDenied,
                 ApprovalState::kExpired, ApprovalState::kAbandoned}) {
    if (approval_state_name(s) == name) return s;
  }
  return std::nullopt;
}

std::optional<ApprovalScope> parse_approval_scope(std::string_view name) {
  if (name == "once") return ApprovalScope::kOnce;
  if (name == "shape") return ApprovalScope::kShape;
  return std::nullopt;
}

std::string approval_console_url(std::string_view public_url, std::string_view id) {
  if (public_url.empty()) return "";
  while (!public_url.empty() && public_url.back() == '/') public_url.remove_suffix(1);
  return std::string(public_url) + "/approvals/" + std::string(id);
}

nlohmann::json ApprovalRequest::to_json() const {
  auto count = [](int64_t n) { return n < 0 ? nlohmann::json(nullptr) : nlohmann::json(n); };
  return nlohmann::json{
      {"id", id},
      {"session_id", session_id},
      {"identity", identity},
      {"groups", groups},
      {"target", target},
      {"sql", sql},
      {"shape_key", shape_key},
      {"rule", rule},
      {"request_reason", request_reason},
      {"approver_groups", approver_groups},
      {"created_ms", created_ms},
      {"deadline_ms", deadline_ms},
      {"state", approval_state_name(state)},
      {"decided_ms", decided_ms},
      {"decider", decider},
      {"decision_reason", decision_reason},
      {"scope", approval_scope_name(scope)},
      {"grant_expires_ms", grant_expires_ms},
      {"effect", effect.reasons},
      {"estimated_rows", count(effect.estimated_rows)},
      {"estimate_note", effect.estimate_note},
      {"dry_run_rows", count(effect.dry_run_rows)},
      {"dry_run_note", effect.dry_run_note},
      {"required_approvals", required_approvals},
      {"break_glass_groups", break_glass_groups},
      {"requester_links", requester_links},
      {"votes", votes_json()},
      {"break_glass", break_glass},
      {"via", via},
  };
}

nlohmann::json ApprovalRequest::votes_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const ApprovalVote& v : votes) {
    out.push_back({{"decider", v.decider},
                   {"ms", v.ms},
                   {"reason", v.reason},
                   {"via", v.via},
                   {"scope", approval_scope_name(v.scope)},
                   {"grant_seconds", v.grant_seconds}});
  }
  return out;
}

Result<ApprovalRequest> ApprovalRequest::from_json(const nlohmann::json& j) {
  if (!j.is_object()) return invalid_argument("approval record is not an object");
  ApprovalRequest r;
  try {
    r.id = j.at("id").get<std::string>();
    r.session_id = j.at("session_id").get<std::string>();
    r.identity = j.at("identity").get<std::string>();
    r.groups = j.at("groups").get<std::vector<std::string>>();
    r.target = j.at("target").get<std::string>();
    r.sql = j.at("sql").get<std::string>();
    r.shape_key = j.at("shape_key").get<std::string>();
    r.rule = j.at("rule").get<std::string>();
    r.request_reason = j.at("request_reason").get<std::string>();
    r.approver_groups = j.at("approver_groups").get<std::vector<std::string>>();
    r.created_ms = j.at("created_ms").get<int64_t>();
    r.deadline_ms = j.at("deadline_ms").get<int64_t>();
    auto state = parse_approval_state(j.at("state").get<std::string>());
    auto scope = parse_approval_scope(j.at("scope").get<std::string>());
    if (!state || !scope) return invalid_argument("approval record has a bad state or scope");
    r.state = *state;
    r.scope = *scope;
    r.decided_ms = j.at("decided_ms").get<int64_t>();
    r.decider = j.at("decider").get<std::string>();
    r.decision_reason = j.at("decision_reason").get<std::string>();
    r.grant_expires_ms = j.at("grant_expires_ms").get<int64_t>();
    // Journals written before approvals by effect have no effect fields.
    if (j.contains("effect")) r.effect.reasons = j["effect"].get<std::vector<std::string>>();
    auto count = [&](const char* key) {
      return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : -1;
    };
    r.effect.estimated_rows = count("estimated_rows");
    r.effect.dry_run_rows = count("dry_run_rows");
    r.effect.estimate_note = j.value("estimate_note", std::string());
    r.effect.dry_run_note = j.value("dry_run_note", std::string());
    // Journals written before approval hygiene have none of these.
    r.required_approvals = j.value("required_approvals", 1);
    if (j.contains("break_glass_groups")) {
      r.break_glass_groups = j["break_glass_groups"].get<std::vector<std::string>>();
    }
    if (j.contains("requester_links")) {
      r.requester_links = j["requester_links"].get<std::vector<std::string>>();
    }
    if (j.contains("votes")) {
      for (const auto& v : j["votes"]) {
        ApprovalVote vote;
        vote.decider = v.at("decider").get<std::string>();
        vote.ms = v.at("ms").get<int64_t>();
        vote.reason = v.value("reason", std::string());
        vote.via = v.value("via", std::string());
        vote.scope = parse_approval_scope(v.value("scope", std::string("once")))
                         .value_or(ApprovalScope::kOnce);
        vote.grant_seconds = v.value("grant_seconds", int64_t{0});
        r.votes.push_back(std::move(vote));
      }
    }
    r.break_glass = j.value("break_glass", false);
    r.via = j.value("via", std::string());
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(std::string("approval record: ") + e.what());
  }
  if (r.id.empty()) return invalid_argument("approval record without id");
  return r;
}

struct ApprovalStore::Impl {
  ApprovalStoreOptions options;
  std::string journal_path;
  int fd = -1;

  mutable std::mutex mu;
  std::condition_variable timer_cv;
  bool stopping = false;
  std::thread timer;
  // Insertion order is creation order: list() sorts by (created_ms, id).
  std::map<std::string, ApprovalRequest> requests;
  std::map<std::string, std::vector<ApprovalWaiter>> waiters;
  // (identity, shape_key) -> grant; the latest expiry wins.
  std::map<std::pair<std::string, std::string>, StandingGrant> grants;
  using Deadline = std::pair<int64_t, std::string>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines;

  int64_t now() const { return options.clock_ms ? options.clock_ms() : system_now_ms(); }

  // REQUIRES: mu held. Appends the snapshot and syncs it. On any error the file is cut back to
  // its size before the append (no torn line, and no line a restart would read as a
  // transition that was reported failed): journal_error().
  Status journal(const ApprovalRequest& r) {
    PGW_RETURN_IF_ERROR(journal_still_at_path());
    std::string line = r.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    line += '\n';
    struct stat st;
    if (::fstat(fd, &st) != 0) return journal_error(errno, "fstat");
    const off_t good = st.st_size;
    std::string_view data = line;
    int err = 0;
    const char* what = "write";
    while (!data.empty()) {
      ssize_t n = ::write(fd, data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = n < 0 ? errno : ENOSPC;
        break;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    if (err == 0 && ::fdatasync(fd) != 0) {
      err = errno;
      what = "fdatasync";
    }
    if (err == 0) return Status::ok();
    (void)!::ftruncate(fd, good);
    return journal_error(err, what);
  }

  // REQUIRES: mu held. The journal a restart reads is the file at journal_path: when that path
  // no longer names the file `fd` writes (removed, moved away, replaced by a directory or
  // another file), the transitions appended to `fd` would be lost at the next start. Writes a
  // new journal at the path (one snapshot per request, as the compaction at open does: tmp,
  // fsync, rename) and appends to it from now on; when that fails (a directory at the path:
  // EISDIR) the transition is refused, and the next one tries again.
  Status journal_still_at_path() {
    struct stat at_path, open_file;
    if (::fstat(fd, &open_file) != 0) return journal_error(errno, "fstat");
    if (::stat(journal_path.c_str(), &at_path) == 0 && at_path.st_dev == open_file.st_dev &&
        at_path.st_ino == open_file.st_ino) {
      return Status::ok();
    }
    std::string all;
    for (const auto& [id, req] : requests) {
      all += req.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      all += '\n';
    }
    const std::string tmp = journal_path + ".tmp";
    int tfd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (tfd < 0) return journal_error(errno, "rewrite (open)");
    size_t off = 0;
    int err = 0;
    while (off < all.size()) {
      ssize_t n = ::write(tfd, all.data() + off, all.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        err = n < 0 ? errno : ENOSPC;
        break;
      }
      off += static_cast<size_t>(n);
    }
    if (err == 0 && ::fsync(tfd) != 0) err = errno;
    ::close(tfd);
    if (err == 0 && ::rename(tmp.c_str(), journal_path.c_str()) != 0) err = errno;
    if (err != 0) {
      (void)::unlink(tmp.c_str());
      return journal_error(err, "rewrite (the journal file was removed or replaced)");
    }
    int nfd = ::open(journal_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (nfd < 0) return journal_error(errno, "reopen");
    ::close(fd);
    fd = nfd;
    int dfd = ::open(options.state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
    return Status::ok();
  }

  // The refusal of a transition the journal could not take: 53100 (ENOSPC, EDQUOT) or 58030.
  Status journal_error(int err, const char* what) const {
    return storage_write_error(err, "the approval journal could not be written (" +
                                        std::string(what) + " " + journal_path + ": " +
                                        errno_text(err) + "); nothing was changed");
  }

  void index_grant(const ApprovalRequest& r) {
    if (r.state != ApprovalState::kApproved || r.scope != ApprovalScope::kShape) return;
    auto& g = grants[{r.identity, r.shape_key}];
    if (r.grant_expires_ms > g.expires_ms) g = StandingGrant{r.id, r.grant_expires_ms};
  }

  struct Outcome {
    ApprovalRequest request;
    std::vector<ApprovalWaiter> waiters;
  };

  // REQUIRES: mu held. The shared store (if any) first, then the local journal.
  Status persist(const ApprovalRequest& r, bool created) {
    if (options.replicate) PGW_RETURN_IF_ERROR(options.replicate(r, created));
    return journal(r);
  }

  // REQUIRES: mu held, request pending. Journals and applies a terminal transition;
  // `remote`: another node made it and the shared store has it already.
  Result<Outcome> transition(ApprovalRequest next, bool remote = false) {
    PGW_RETURN_IF_ERROR(remote ? journal(next) : persist(next, false));
    requests[next.id] = next;
    index_grant(next);
    Outcome out{std::move(next), {}};
    auto w = waiters.find(out.request.id);
    if (w != waiters.end()) {
      out.waiters = std::move(w->second);
      waiters.erase(w);
    }
    return out;
  }

  // Runs without mu: audit first (the record exists before anyone acts on the outcome).
  void deliver(const Outcome& o) {
    emit_audit(o.request);
    for (const auto& w : o.waiters) w(o.request);
  }

  void emit_audit(const ApprovalRequest& r) {
    if (!options.audit) return;
    options.audit(
        nlohmann::json{{"event", event_name(r.state)},
                       {"ts", r.state == ApprovalState::kPending ? r.created_ms : r.decided_ms},
                       {"approval", r.to_json()}});
    if (r.state == ApprovalState::kApproved && r.break_glass) {
      // A distinct, high-severity record: forwarders and pagers key on it.
      options.audit(nlohmann::json{{"event", "approval_break_glass"},
                                   {"ts", r.decided_ms},
                                   {"severity", "critical"},
                                   {"page", true},
                                   {"decider", r.decider},
                                   {"reason", r.decision_reason},
                                   {"approval", r.to_json()}});
    }
  }

  // REQUIRES: mu not held. One of several required approvals was given.
  void emit_vote(const ApprovalRequest& r) {
    if (!options.audit || r.votes.empty()) return;
    const ApprovalVote& v = r.votes.back();
    options.audit(nlohmann::json{{"event", "approval_vote"},
                                 {"ts", v.ms},
                                 {"decider", v.decider},
                                 {"reason", v.reason},
                                 {"via", v.via},
                                 {"votes", r.votes.size()},
                                 {"required_approvals", r.required_approvals},
                                 {"approval", r.to_json()}});
  }

  // The requester and every identity linked to it (now or when the request was made).
  bool is_requester(const ApprovalRequest& r, const std::string& who) const {
    if (who == r.identity) return true;
    if (std::find(r.requester_links.begin(), r.requester_links.end(), who) !=
        r.requester_links.end()) {
      return true;
    }
    if (!options.linked_identities) return false;
    auto now_linked = options.linked_identities(r.identity);
    return std::find(now_linked.begin(), now_linked.end(), who) != now_linked.end();
  }

  // The earlier voter `who` is, or is linked to; "" when none.
  std::string voted_as(const ApprovalRequest& r, const std::string& who) const {
    std::vector<std::string> same{who};
    if (options.linked_identities) {
      auto l = options.linked_identities(who);
      same.insert(same.end(), l.begin(), l.end());
    }
    for (const ApprovalVote& v : r.votes) {
      if (std::find(same.begin(), same.end(), v.decider) != same.end()) return v.decider;
    }
    return "";
  }

  // REQUIRES: mu held.
  Result<Outcome> finish(const ApprovalRequest& current, ApprovalState state, std::string reason) {
    ApprovalRequest next = current;
    next.state = state;
    next.decided_ms = now();
    next.decider = kSystemDecider;
    next.decision_reason = std::move(reason);
    return transition(std::move(next));
  }

  void timer_loop() {
    std::unique_lock lock(mu);
    while (!stopping) {
      int64_t wait_ms = 1000;
      if (!deadlines.empty()) wait_ms = std::clamp<int64_t>(deadlines.top().first - now(), 0, 1000);
      if (wait_ms > 0) {
        timer_cv.wait_for(lock, std::chrono::milliseconds(wait_ms));
        continue;
      }
      lock.unlock();
      expire_due_impl();
      lock.lock();
    }
  }

  size_t expire_due_impl() {
    std::vector<Outcome> done;
    {
      std::lock_guard lock(mu);
      int64_t t = now();
      while (!deadlines.empty() && deadlines.top().first <= t) {
        std::string id = deadlines.top().second;
        deadlines.pop();
        auto it = requests.find(id);
        if (it == requests.end() || it->second.terminal()) continue;
        auto o = finish(it->second, ApprovalState::kDenied, "timed out");
        if (!o) {
          // The journal is unwritable: retry later rather than report an unrecorded denial.
          deadlines.emplace(t + 1000, id);
          break;
        }
        done.push_back(std::move(*o));
      }
    }
    for (const auto& o : done) deliver(o);
    return done.size();
  }
};

ApprovalStore::ApprovalStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApprovalStore::~ApprovalStore() {
  if (impl_->timer.joinable()) {
    {
      std::lock_guard lock(impl_->mu);
      impl_->stopping = true;
    }
    impl_->timer_cv.notify_all();
    impl_->timer.join();
  }
  if (impl_->fd >= 0) ::close(impl_->fd);
}

Result<std::unique_ptr<ApprovalStore>> ApprovalStore::open(ApprovalStoreOptions options) {
  if (options.state_dir.empty()) return invalid_argument("approvals: state_dir is empty");
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->journal_path = impl->options.state_dir + "/" + kJournalName;

  // Replay: last snapshot per id wins; unparsable lines (a torn tail) are skipped.
  std::vector<std::string> order;
  {
    std::ifstream in(impl->journal_path);
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;
      auto r = ApprovalRequest::from_json(j);
      if (!r) continue;
      if (impl->requests.count(r->id) == 0) order.push_back(r->id);
      impl->requests[r->id] = std::move(*r);
    }
  }

  // Compact: rewrite one snapshot per request, then atomically replace the journal.
  std::string tmp = impl->journal_path + ".tmp";
  {
    int tfd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (tfd < 0) {
      return unavailable("approvals: cannot create " + tmp + ": " + std::strerror(errno));
    }
    std::string all;
    for (const auto& id : order) {
      all += impl->requests[id].to_json().dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace);
      all += '\n';
    }
    Status st = write_all(tfd, all);
    if (st.is_ok() && ::fsync(tfd) != 0) st = unavailable("approvals: fsync failed");
    ::close(tfd);
    PGW_RETURN_IF_ERROR(st);
    if (::rename(tmp.c_str(), impl->journal_path.c_str()) != 0) {
      return unavailable("approvals: rename failed: " + std::string(std::strerror(errno)));
    }
  }
  impl->fd = ::open(impl->journal_path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (impl->fd < 0) {
    return unavailable("approvals: cannot open " + impl->journal_path + ": " +
                       std::strerror(errno));
  }
  int dfd = ::open(impl->options.state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }

  // Pending requests from a previous process: abandoned unless their session is still here.
  std::vector<Impl::Outcome> done;
  {
    std::lock_guard lock(impl->mu);
    for (const auto& id : order) {
      const ApprovalRequest& r = impl->requests[id];
      impl->index_grant(r);
      if (r.terminal()) continue;
      bool alive = impl->options.session_alive && impl->options.session_alive(r.session_id);
      if (alive) {
        impl->deadlines.emplace(r.deadline_ms, r.id);
        continue;
      }
      auto o = impl->finish(r, ApprovalState::kAbandoned, "session ended before a decision");
      if (!o) {
        // Shared state: another node decided it meanwhile; its outcome arrives by
        // apply_remote() when the owner syncs with the store.
        if (impl->options.replicate && o.status().code() == StatusCode::kFailedPrecondition) {
          continue;
        }
        return o.status();
      }
      done.push_back(std::move(*o));
    }
  }
  for (const auto& o : done) impl->deliver(o);

  std::unique_ptr<ApprovalStore> store(new ApprovalStore(std::move(impl)));
  if (store->impl_->options.start_timer_thread) {
    Impl* raw = store->impl_.get();
    raw->timer = std::thread([raw] { raw->timer_loop(); });
  }
  return store;
}

Result<ApprovalRequest> ApprovalStore::create(const NewApprovalRequest& in) {
  if (in.session_id.empty() || in.identity.empty()) {
    return invalid_argument("approval request needs a session id and an identity");
  }
  if (in.sql.size() > impl_->options.max_statement_bytes) {
    return resource_exhausted("statement too long for an approval request");
  }
  if (in.settings.approver_groups.empty()) {
    // Nobody could ever approve it: deny now rather than hold the statement until timeout.
    return permission_denied("policy requires approval but names no approver groups");
  }
  auto id = random_id();
  if (!id) return id.status();
  ApprovalRequest r;
  r.id = std::move(*id);
  r.session_id = in.session_id;
  r.identity = in.identity;
  r.groups = in.groups;
  r.target = in.target;
  r.sql = in.sql;
  r.shape_key = in.shape_key;
  r.rule = in.rule;
  r.request_reason = in.reason;
  r.effect = in.effect;
  r.approver_groups = in.settings.approver_groups;
  r.required_approvals = std::max(in.settings.required_approvals, 1);
  r.break_glass_groups = in.settings.break_glass_groups;
  if (impl_->options.linked_identities) {
    r.requester_links = impl_->options.linked_identities(in.identity);
  }
  r.created_ms = impl_->now();
  r.deadline_ms =
      r.created_ms + static_cast<int64_t>(std::max(in.settings.timeout_seconds, 1)) * 1000;
  if (in.deadline_ms > 0) r.deadline_ms = std::min(r.deadline_ms, in.deadline_ms);
  {
    std::lock_guard lock(impl_->mu);
    PGW_RETURN_IF_ERROR(impl_->persist(r, true));
    impl_->requests[r.id] = r;
    impl_->deadlines.emplace(r.deadline_ms, r.id);
  }
  impl_->timer_cv.notify_all();
  impl_->emit_audit(r);
  if (impl_->options.on_created) impl_->options.on_created(r);
  return r;
}

Status ApprovalStore::wait(const std::string& id, ApprovalWaiter waiter) {
  std::optional<ApprovalRequest> done;
  {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->requests.find(id);
    if (it == impl_->requests.end()) return not_found("no approval request " + id);
    if (it->second.terminal()) {
      done = it->second;
    } else {
      impl_->waiters[id].push_back(std::move(waiter));
    }
  }
  if (done) waiter(*done);
  return Status::ok();
}

Result<ApprovalRequest> ApprovalStore::decide(const std::string& id,
                                              const ApprovalDecision& decision) {
  if (decision.decider.empty()) return invalid_argument("decision without a decider");
  if (decision.approve && decision.scope == ApprovalScope::kShape &&
      (decision.grant_seconds <= 0 || decision.grant_seconds > impl_->options.max_grant_seconds)) {
    return invalid_argument("shape grant duration must be between 1 and " +
                            std::to_string(impl_->options.max_grant_seconds) + " seconds");
  }
  if (decision.break_glass && !decision.approve) {
    return invalid_argument("break-glass is for approvals; deny needs none");
  }
  if (decision.break_glass && decision.reason.find_first_not_of(" \t\r\n") == std::string::npos) {
    return permission_denied("a break-glass approval needs a reason");
  }
  if (impl_->options.refresh) {
    // Votes other nodes cast since this node last heard of the request.
    auto current = impl_->options.refresh(id);
    if (!current.is_ok()) return current.status();
    if (current->has_value()) PGW_RETURN_IF_ERROR(apply_remote(**current));
  }
  Impl::Outcome outcome;
  bool expired_first = false;
  bool vote_only = false;
  {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->requests.find(id);
    if (it == impl_->requests.end()) return not_found("no approval request " + id);
    const ApprovalRequest& r = it->second;
    if (r.terminal()) {
      return failed_precondition("approval request " + id + " is already " +
                                 std::string(approval_state_name(r.state)));
    }
    if (decision.decider == r.identity) {
      return permission_denied("the requester cannot decide their own approval request");
    }
    if (impl_->is_requester(r, decision.decider)) {
      return permission_denied("the decider " + decision.decider + " is linked to the requester " +
                               r.identity +
                               " (approvals.identity_links) and cannot decide this request");
    }
    auto in_any = [&](const std::vector<std::string>& allowed) {
      return std::any_of(decision.decider_groups.begin(), decision.decider_groups.end(),
                         [&](const auto& g) {
                           return std::find(allowed.begin(), allowed.end(), g) != allowed.end();
                         });
    };
    if (decision.break_glass) {
      if (r.break_glass_groups.empty()) {
        return permission_denied("the policy of this request allows no break-glass approval");
      }
      if (!in_any(r.break_glass_groups)) {
        return permission_denied("decider is in none of the break-glass groups");
      }
    } else if (!in_any(r.approver_groups)) {
      return permission_denied("decider is in none of the approver groups");
    }
    int64_t t = impl_->now();
    Result<Impl::Outcome> o = Status(StatusCode::kInternal, "unset");
    if (t >= r.deadline_ms) {
      o = impl_->finish(r, ApprovalState::kDenied, "timed out");
      expired_first = true;
    } else if (!decision.approve) {
      // One deny denies, whatever approvals came before.
      ApprovalRequest next = r;
      next.state = ApprovalState::kDenied;
      next.decided_ms = t;
      next.decider = decision.decider;
      next.decision_reason = decision.reason;
      next.via = decision.via;
      next.scope = ApprovalScope::kOnce;
      next.grant_expires_ms = 0;
      o = impl_->transition(std::move(next));
    } else {
      if (!decision.break_glass) {
        std::string earlier = impl_->voted_as(r, decision.decider);
        if (!earlier.empty()) {
          return failed_precondition(
              "approval request " + id + " was already approved by " + earlier +
              (earlier == decision.decider ? "" : ", an identity linked to " + decision.decider) +
              "; it needs " + std::to_string(r.required_approvals) + " distinct approvers");
        }
      }
      ApprovalRequest next = r;
      next.votes.push_back(ApprovalVote{decision.decider, t, decision.reason, decision.via,
                                        decision.scope, decision.grant_seconds});
      if (!decision.break_glass && static_cast<int>(next.votes.size()) < r.required_approvals) {
        // Not the last approval needed: record the vote (in the shared store too), stay
        // pending.
        PGW_RETURN_IF_ERROR(impl_->persist(next, false));
        it->second = next;
        outcome.request = std::move(next);
        vote_only = true;
      } else {
        next.state = ApprovalState::kApproved;
        next.decided_ms = t;
        next.decider = decision.decider;
        next.decision_reason = decision.reason;
        next.via = decision.via;
        next.break_glass = decision.break_glass;
        // The narrowest scope any approver gave: a shape grant only if every approver gave
        // one, for the shortest duration among them.
        next.scope = decision.scope;
        int64_t grant_seconds = decision.grant_seconds;
        if (!decision.break_glass) {
          for (const ApprovalVote& v : next.votes) {
            if (v.scope == ApprovalScope::kOnce) next.scope = ApprovalScope::kOnce;
            grant_seconds = std::min(grant_seconds, v.grant_seconds);
          }
        }
        next.grant_expires_ms = next.scope == ApprovalScope::kShape ? t + grant_seconds * 1000 : 0;
        o = impl_->transition(std::move(next));
      }
    }
    if (!vote_only) {
      if (!o) return o.status();
      outcome = std::move(*o);
    }
  }
  if (vote_only) {
    impl_->emit_vote(outcome.request);
    return outcome.request;
  }
  impl_->deliver(outcome);
  if (expired_first) return failed_precondition("approval request " + id + " timed out");
  return outcome.request;
}

size_t ApprovalStore::abandon_session(const std::string& session_id) {
  std::vector<Impl::Outcome> done;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [id, r] : impl_->requests) {
      if (r.session_id != session_id || r.terminal()) continue;
      auto o = impl_->finish(r, ApprovalState::kAbandoned, "session ended before a decision");
      if (o) done.push_back(std::move(*o));
    }
  }
  for (const auto& o : done) impl_->deliver(o);
  return done.size();
}

size_t ApprovalStore::expire_due() { return impl_->expire_due_impl(); }

std::string wider_than_grant(const ApprovalRequest& granted, const std::string& rule,
                             const ApprovalEffect& effect) {
  if (rule != granted.rule) return "it needs approval under " + rule + ", not " + granted.rule;
  auto rule_of = [](const std::string& reason) { return reason.substr(0, reason.find(':')); };
  for (const std::string& reason : effect.reasons) {
    const std::string r = rule_of(reason);
    bool seen = std::any_of(granted.effect.reasons.begin(), granted.effect.reasons.end(),
                            [&](const std::string& g) { return rule_of(g) == r; });
    if (!seen) return "the approved statement had no " + r + ": " + reason;
  }
  if (granted.effect.estimated_rows >= 0) {
    if (effect.estimated_rows < 0) {
      return "the approved statement had a planner estimate (" +
             std::to_string(granted.effect.estimated_rows) + " rows), this one has none";
    }
    if (effect.estimated_rows > granted.effect.estimated_rows) {
      return "the planner estimates " + std::to_string(effect.estimated_rows) +
             " rows, more than the " + std::to_string(granted.effect.estimated_rows) +
             " of the approved statement";
    }
  }
  return "";
}

std::optional<StandingGrant> ApprovalStore::lookup_standing_grant(const std::string& identity,
                                                                  const std::string& shape_key,
                                                                  int64_t now_ms) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->grants.find({identity, shape_key});
  if (it == impl_->grants.end() || it->second.expires_ms <= now_ms) return std::nullopt;
  return it->second;
}

Status ApprovalStore::apply_remote(const ApprovalRequest& r) {
  Impl::Outcome outcome;
  {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->requests.find(r.id);
    if (it == impl_->requests.end()) {
      PGW_RETURN_IF_ERROR(impl_->journal(r));
      impl_->requests[r.id] = r;
      impl_->index_grant(r);
      if (!r.terminal()) impl_->deadlines.emplace(r.deadline_ms, r.id);
      return Status::ok();
    }
    if (it->second.terminal()) return Status::ok();
    if (!r.terminal()) {
      if (r.votes.size() <= it->second.votes.size()) return Status::ok();
      ApprovalRequest next = it->second;
      next.votes = r.votes;
      PGW_RETURN_IF_ERROR(impl_->journal(next));
      it->second = std::move(next);
      return Status::ok();
    }
    auto o = impl_->transition(r, /*remote=*/true);
    if (!o) return o.status();
    outcome = std::move(*o);
  }
  for (const auto& w : outcome.waiters) w(outcome.request);
  return Status::ok();
}

std::optional<ApprovalRequest> ApprovalStore::get(const std::string& id) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->requests.find(id);
  if (it == impl_->requests.end()) return std::nullopt;
  return it->second;
}

std::vector<ApprovalRequest> ApprovalStore::list(std::optional<ApprovalState> state) const {
  std::vector<ApprovalRequest> out;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [id, r] : impl_->requests) {
      if (!state || r.state == *state) out.push_back(r);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.created_ms, a.id) < std::tie(b.created_ms, b.id);
  });
  return out;
}

std::string ApprovalStore::journal_path() const { return impl_->journal_path; }

}  // namespace pgwarden::approvals
