#include "dataplane/session/cp_client.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "dataplane/session/large_values.h"

namespace pgwarden::session {

namespace {
// Reconnecting is a local connect(): retrying often keeps a cp restart short for sessions
// waiting on limits.cp_unavailable_wait_ms.
constexpr int64_t kMaxBackoffMs = 500;
constexpr int64_t kGraceMs = 1000;
constexpr size_t kMaxOut = 16u << 20;
// Events kept while there is no connection (or left undelivered by the last one).
constexpr size_t kMaxUndeliveredBytes = 8u << 20;
// While records wait for ring space, the ring is retried this often (cp drains in batches).
constexpr int64_t kOverflowRetryMs = 1;

void signal_eventfd(int fd) {
  uint64_t one = 1;
  (void)!::write(fd, &one, sizeof one);
}
}  // namespace

Status status_from_cp_error(const nlohmann::json& error) {
  std::string sqlstate = "XX000";
  std::string message = "control plane error";
  std::string code;
  if (error.is_object()) {
    if (error.contains("sqlstate") && error["sqlstate"].is_string()) {
      sqlstate = error["sqlstate"].get<std::string>();
    }
    if (error.contains("message") && error["message"].is_string()) {
      message = error["message"].get<std::string>();
    }
    if (error.contains("code") && error["code"].is_string()) code = error["code"];
  }
  StatusCode sc = StatusCode::kFailedPrecondition;
  if (sqlstate.rfind("28", 0) == 0)
    sc = StatusCode::kUnauthenticated;
  else if (sqlstate == "42501")
    sc = StatusCode::kPermissionDenied;
  else if (sqlstate.rfind("08", 0) == 0)
    sc = StatusCode::kUnavailable;
  else if (sqlstate == "57014" || code == "deadline_exceeded")
    sc = StatusCode::kDeadlineExceeded;
  else if (sqlstate.rfind("22", 0) == 0)
    sc = StatusCode::kInvalidArgument;
  return Status(sc, message, sqlstate);
}

CpClient::CpClient(EventLoop* loop, std::string socket_path, bool use_ring)
    : loop_(loop), socket_path_(std::move(socket_path)), use_ring_(use_ring) {
  wake_handler_.client = this;
}

CpClient::Ring::~Ring() {
  if (cp_wake_fd >= 0) ::close(cp_wake_fd);
  if (dp_wake_fd >= 0) ::close(dp_wake_fd);
}

CpClient::~CpClient() {
  stopped_ = true;
  cancel_event_timer();
  if (overflow_timer_ != 0) loop_->cancel_timer(overflow_timer_);
  if (ring_ && ring_->registered) loop_->remove(ring_->dp_wake_fd);
  if (fd_ >= 0) {
    loop_->remove(fd_);
    close(fd_);
  }
}

void CpClient::start() {
  stopped_ = false;
  connect_now();
}

void CpClient::stop() {
  stopped_ = true;
  if (reconnect_timer_ != 0) loop_->cancel_timer(reconnect_timer_);
  reconnect_timer_ = 0;
  // Records written to the ring but not yet published (session_end of a draining dp) go out
  // first; cp drains the ring before it acts on the closed socket.
  publish_ring();
  flush();
  disconnect("dataplane stopping");
  std::map<uint64_t, Waiting> waiting;
  waiting.swap(waiting_);
  for (auto& [key, w] : waiting) {
    if (w.timer != 0) loop_->cancel_timer(w.timer);
    fail_later(std::move(w.cb), unavailable("dataplane stopping"));
  }
  std::map<uint64_t, Uncertain> uncertain;
  uncertain.swap(uncertain_);
  for (auto& [session, u] : uncertain) {
    if (u.record.timer != 0) loop_->cancel_timer(u.record.timer);
    fail_later(std::move(u.record.cb), unavailable("dataplane stopping"));
  }
}

void CpClient::connect_now() {
  reconnect_timer_ = 0;
  if (stopped_ || fd_ >= 0) return;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return schedule_reconnect();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    close(fd);
    return schedule_reconnect();
  }
  memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (rc != 0 && errno != EINPROGRESS && errno != EAGAIN) {
    close(fd);
    return schedule_reconnect();
  }
  fd_ = fd;
  connecting_ = rc != 0;
  interest_ = 0;
  in_.clear();
  out_.clear();
  out_off_ = 0;
  if (!loop_->add(fd_, EPOLLIN, this).is_ok()) {
    close(fd_);
    fd_ = -1;
    return schedule_reconnect();
  }
  interest_ = EPOLLIN;
  hello_id_ = next_id_++;
  nlohmann::json hello = {{"type", "hello"},
                          {"id", hello_id_},
                          {"protocol", 1},
                          {"dp", "pgwarden-dp/0.1"},
                          {"rules", true},  // push the rules generation cp validated
                          {"deadline_ms", unix_ms() + 5000}};
  fds_sent_ = false;
  offered_ring_ = use_ring_ ? make_ring() : nullptr;
  if (offered_ring_) {
    // The memfd and both eventfds ride on the hello's first bytes (SCM_RIGHTS, see flush()).
    hello["ring"] = {{"version", protocol::RingRegion::kVersion},
                     {"fds", {"region", "cp_wake", "dp_wake", "life"}}};
  }
  send_frame(hello, false);
}

int CpClient::process_life_fd() {
  // The write end is never closed (and not inherited by exec): it closes when the process
  // ends, however it ends.
  static const int fd = [] {
    int p[2];
    return ::pipe2(p, O_CLOEXEC) == 0 ? p[0] : -1;
  }();
  return fd;
}

std::unique_ptr<CpClient::Ring> CpClient::make_ring() {
  if (process_life_fd() < 0) {
    spdlog::warn(
        "event ring unavailable, using JSON events: the process's life pipe could "
        "not be created");
    return nullptr;
  }
  auto region = protocol::RingRegion::create();
  if (!region.is_ok()) {
    spdlog::warn("event ring unavailable, using JSON events: {}", region.status().message());
    return nullptr;
  }
  auto r = std::make_unique<Ring>();
  r->region = std::move(*region);
  r->cp_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  r->dp_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (r->cp_wake_fd < 0 || r->dp_wake_fd < 0) return nullptr;
  return r;
}

void CpClient::drop_ring() {
  offered_ring_.reset();
  if (!ring_) return;
  if (ring_->registered) loop_->remove(ring_->dp_wake_fd);
  ring_.reset();
}

void CpClient::schedule_reconnect() {
  if (stopped_ || reconnect_timer_ != 0) return;
  reconnect_timer_ = loop_->add_timer(monotonic_ms() + backoff_ms_, [this] { connect_now(); });
  backoff_ms_ = std::min(backoff_ms_ * 2, kMaxBackoffMs);
}

void CpClient::heard_from_cp() { last_heard_ms_ = monotonic_ms(); }

int64_t CpClient::ping_after_ms() const {
  return std::clamp<int64_t>(silence_limit_ms_ / 2, 100, kPingIntervalMs);
}

int64_t CpClient::reply_wait_ms() const {
  return std::max<int64_t>(silence_limit_ms_ - ping_after_ms(), kMinReplyWaitMs);
}

void CpClient::arm_liveness() {
  if (liveness_timer_ != 0 || silence_limit_ms_ <= 0 || !ready_) return;
  liveness_timer_ =
      loop_->add_timer(monotonic_ms() + std::max<int64_t>(ping_after_ms() / 4, 10), [this] {
        liveness_timer_ = 0;
        check_liveness();
      });
}

void CpClient::check_liveness() {
  if (!ready_ || fd_ < 0 || silence_limit_ms_ <= 0) return;
  const int64_t now = monotonic_ms();
  // Anything from cp since the ping proves it alive, whether or not the answer came yet.
  if (ping_id_ != 0 && last_heard_ms_ >= ping_sent_ms_) ping_id_ = 0;
  if (ping_id_ != 0 && now - ping_sent_ms_ >= reply_wait_ms()) {
    ++silent_disconnects_;
    const int64_t quiet = now - last_heard_ms_;
    spdlog::warn(
        "the control plane answered nothing for {} ms (limits.cp_unavailable_wait_ms = {}): "
        "closing the connection as if it had gone",
        quiet, silence_limit_ms_);
    return disconnect("the control plane answered nothing for " + std::to_string(quiet) +
                      " ms (limits.cp_unavailable_wait_ms)");
  }
  if (ping_id_ == 0 && now - last_heard_ms_ >= ping_after_ms()) {
    // Answered inline by cp's connection loop (an older cp answers unknown_type: as good).
    ping_id_ = next_id_++;
    ping_sent_ms_ = now;
    send_body(
        nlohmann::json{
            {"type", "ping"}, {"id", ping_id_}, {"deadline_ms", unix_ms() + reply_wait_ms()}}
            .dump(),
        false);
  }
  arm_liveness();
}

void CpClient::disconnect(const std::string& why, bool peer_closed) {
  cancel_event_timer();
  if (liveness_timer_ != 0) loop_->cancel_timer(liveness_timer_);
  liveness_timer_ = 0;
  ping_id_ = 0;
  registration_.clear();
  ring_held_ = false;
  if (peer_closed) {
    keep_ring_leftovers();
  } else if (ring_) {
    // We close: cp drains what is published when it sees the close, so it is not kept here
    // (it would be recorded twice).
    ring_->region.forward().publish();
  }
  drop_ring();
  refused_.clear();
  // Events queued for the ring that is gone wait for the next connection after those cp did
  // not take from it, in order. Write-ahead records (seq) are sent again from ring_pending_.
  for (Overflow& o : overflow_) {
    if (o.seq == 0) keep_undelivered(o.type, o.session, std::move(o.payload));
  }
  overflow_.clear();
  overflow_bytes_ = 0;
  fail_ring_pending("control plane connection lost: " + why);
  if (fd_ >= 0) {
    loop_->remove(fd_);
    close(fd_);
    fd_ = -1;
  }
  bool was_ready = ready_;
  ready_ = false;
  connecting_ = false;
  std::map<uint64_t, Pending> pending;
  pending.swap(pending_);
  int64_t now = monotonic_ms();
  for (auto& [id, p] : pending) {
    if (p.timer != 0) loop_->cancel_timer(p.timer);
    if (p.wait_until_ms > now && !stopped_) {
      if (p.record_session != 0) {
        // A write-ahead record cp may have written (JSON fallback): asked about like a ring
        // record in flight, by its request id.
        Waiting w = waiting_record(p.record_session, std::move(p.record_payload), p.timeout_ms,
                                   p.wait_until_ms, std::move(p.cb));
        if (!hold_uncertain(id, w)) enqueue_waiting(std::move(w));
        continue;
      }
      // cp may never have seen it: send it again once a connection is back.
      p.fields.erase("id");
      p.fields.erase("deadline_ms");
      enqueue_waiting(Waiting{.type = std::move(p.type),
                              .fields = std::move(p.fields),
                              .timeout_ms = p.timeout_ms,
                              .wait_until_ms = p.wait_until_ms,
                              .cb = std::move(p.cb)});
      continue;
    }
    fail_later(std::move(p.cb), unavailable("control plane connection lost: " + why));
  }
  if (was_ready && on_ready_change_) on_ready_change_(false);
  schedule_reconnect();
}

void CpClient::fail_ring_pending(const std::string& why) {
  std::map<uint64_t, RingPending> pending;
  pending.swap(ring_pending_);
  int64_t now = monotonic_ms();
  for (auto& [seq, p] : pending) {
    if (p.timer != 0) loop_->cancel_timer(p.timer);
    if (p.wait_until_ms > now && !stopped_) {
      Waiting w = waiting_record(p.session, std::move(p.payload), p.timeout_ms, p.wait_until_ms,
                                 std::move(p.cb));
      // cp may have written it (its answer was lost with the ring): the session's
      // re-registration asks before it is sent again (uncertain_ahead()).
      if (hold_uncertain(seq, w)) continue;
      enqueue_waiting(std::move(w));  // cp may never have seen it: sent again
      continue;
    }
    fail_later(std::move(p.cb), unavailable(why));
  }
}

bool CpClient::hold_uncertain(uint64_t seq, Waiting& w) {
  if (uncertain_.count(w.session) != 0) return false;
  const uint64_t session = w.session;
  w.timer = loop_->add_timer(w.wait_until_ms, [this, session] {
    auto it = uncertain_.find(session);
    if (it == uncertain_.end()) return;
    Callback c = std::move(it->second.record.cb);
    uncertain_.erase(it);
    c(
        unavailable("the pgwarden control plane is unreachable and did not come back within "
                    "limits.cp_unavailable_wait_ms"));
  });
  uncertain_.emplace(session, Uncertain{seq, std::move(w)});
  return true;
}

nlohmann::json CpClient::uncertain_ahead(uint64_t session) const {
  auto it = uncertain_.find(session);
  if (it == uncertain_.end()) return nullptr;
  auto rec = protocol::StatementFields::decode(it->second.record.payload);
  if (!rec.is_ok()) return nullptr;
  nlohmann::json ahead = {{"seq", it->second.seq},
                          {"ts_ms", rec->ts_ms},
                          {"source", protocol::source_name(rec->source)},
                          {"sql_sha256", sha256_hex(rec->sql)}};
  // The whole record, so that cp can tell it from an earlier one with the same time, source
  // and SQL (two executions of a prepared statement within a millisecond).
  const std::string& payload = it->second.record.payload;
  if (payload.size() <= kMaxAheadPayload) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    hex.reserve(payload.size() * 2);
    for (unsigned char ch : payload) {
      hex += kHex[ch >> 4];
      hex += kHex[ch & 15];
    }
    ahead["payload_hex"] = std::move(hex);
  }
  return ahead;
}

void CpClient::resolve_ahead(uint64_t session, const Result<nlohmann::json>& answer) {
  auto it = uncertain_.find(session);
  if (it == uncertain_.end()) return;
  if (!answer.is_ok() && answer.status().code() == StatusCode::kUnavailable &&
      answer.status().sqlstate() != "57P01") {
    return;  // cp went away again: the next re-registration asks
  }
  Uncertain u = std::move(it->second);
  uncertain_.erase(it);
  if (u.record.timer != 0) loop_->cancel_timer(u.record.timer);
  if (!answer.is_ok()) return u.record.cb(answer.status());
  const nlohmann::json* ahead = answer->contains("ahead") ? &(*answer)["ahead"] : nullptr;
  const bool same =
      ahead != nullptr && ahead->is_object() && ahead->value("seq", uint64_t{0}) == u.seq;
  const std::string state = same ? ahead->value("state", std::string()) : std::string();
  if (state == "written") return u.record.cb(nlohmann::json::object());
  if (state == "refused") {
    return u.record.cb(
        status_from_cp_error(ahead->contains("error") ? (*ahead)["error"] : nlohmann::json()));
  }
  // cp did not see it: sent now (behind the re-registration, like every held record).
  record(session, std::move(u.record.payload), u.record.timeout_ms, std::move(u.record.cb),
         std::max<int64_t>(u.record.wait_until_ms - monotonic_ms(), 1));
}

void CpClient::fail_later(Callback cb, Status st) {
  loop_->defer([cb = std::move(cb), st = std::move(st)]() mutable { cb(std::move(st)); });
}

void CpClient::send_frame(const nlohmann::json& frame, bool is_event) {
  send_body(frame.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), is_event);
}

void CpClient::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  loop_->defer([this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired()) return;
    flush_scheduled_ = false;
    flush();
  });
}

void CpClient::event_text(std::string body) {
  if (ring_) return post(protocol::RecordType::kEventJson, 0, body);
  if (!ready_) return keep_undelivered(protocol::RecordType::kEventJson, 0, std::move(body));
  if (out_.size() - out_off_ > kMaxOut || body.size() > kMaxFrame) {
    return count_lost_record(protocol::RecordType::kEventJson, 0, body);
  }
  send_body(body, true);
}

void CpClient::cancel_event_timer() {
  if (event_timer_ != 0) loop_->cancel_timer(event_timer_);
  event_timer_ = 0;
}

void CpClient::send_body(const std::string& body, bool is_event) {
  uint32_t n = static_cast<uint32_t>(body.size());
  char hdr[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                 static_cast<char>(n)};
  if (out_off_ > 0 && out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  }
  out_.append(hdr, 4);
  out_ += body;
  if (!is_event || out_.size() - out_off_ >= kEventBatchBytes) return schedule_flush();
  if (event_timer_ == 0 && !flush_scheduled_) {
    event_timer_ = loop_->add_timer(monotonic_ms() + kEventDelayMs, [this] {
      event_timer_ = 0;
      flush();
    });
  }
}

void CpClient::enqueue_waiting(Waiting w) {
  uint64_t key = next_waiting_key_++;
  w.key = key;
  w.timer = loop_->add_timer(w.wait_until_ms, [this, key] {
    auto it = waiting_.find(key);
    if (it == waiting_.end()) return;
    Callback c = std::move(it->second.cb);
    waiting_.erase(it);
    c(
        unavailable("the pgwarden control plane is unreachable and did not come back within "
                    "limits.cp_unavailable_wait_ms"));
  });
  waiting_.emplace(key, std::move(w));
}

CpClient::Waiting CpClient::waiting_record(uint64_t session, std::string payload,
                                           int64_t timeout_ms, int64_t wait_until_ms, Callback cb) {
  Waiting w;
  w.is_record = true;
  w.session = session;
  w.payload = std::move(payload);
  w.timeout_ms = timeout_ms;
  w.wait_until_ms = wait_until_ms;
  w.cb = std::move(cb);
  return w;
}

void CpClient::send_waiting() {
  std::map<uint64_t, Waiting> waiting;
  waiting.swap(waiting_);
  int64_t now = monotonic_ms();
  for (auto& [key, w] : waiting) {
    if (w.timer != 0) loop_->cancel_timer(w.timer);
    if (w.is_record) {
      record(w.session, std::move(w.payload), w.timeout_ms, std::move(w.cb),
             std::max<int64_t>(w.wait_until_ms - now, 1));
      continue;
    }
    request(w.type, std::move(w.fields), w.timeout_ms, std::move(w.cb),
            std::max<int64_t>(w.wait_until_ms - now, 1));
  }
}

void CpClient::request(const std::string& type, nlohmann::json fields, int64_t timeout_ms,
                       Callback cb, int64_t wait_for_cp_ms) {
  if (!ready_) {
    if (wait_for_cp_ms > 0 && !stopped_) {
      enqueue_waiting(Waiting{.type = type,
                              .fields = std::move(fields),
                              .timeout_ms = timeout_ms,
                              .wait_until_ms = monotonic_ms() + wait_for_cp_ms,
                              .cb = std::move(cb)});
      return;
    }
    fail_later(std::move(cb), unavailable("pgwarden control plane is unreachable"));
    return;
  }
  if (out_.size() - out_off_ > kMaxOut) {
    fail_later(std::move(cb), unavailable("pgwarden control plane is not keeping up"));
    return;
  }
  uint64_t id = next_id_++;
  fields["type"] = type;
  fields["id"] = id;
  fields["deadline_ms"] = unix_ms() + timeout_ms;
  std::string body = fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (body.size() > kMaxFrame) {
    // cp would drop the whole connection for an oversized frame: refuse this request alone.
    fail_later(std::move(cb),
               resource_exhausted("the " + type + " request (" + std::to_string(body.size()) +
                                      " bytes) exceeds the control-plane frame "
                                      "limit of " +
                                      std::to_string(kMaxFrame) + " bytes",
                                  "54000"));
    return;
  }
  Pending p;
  p.cb = std::move(cb);
  if (wait_for_cp_ms > 0 && type != "approval") {
    p.type = type;
    p.timeout_ms = timeout_ms;
    p.wait_until_ms = monotonic_ms() + wait_for_cp_ms;
  }
  p.timer = loop_->add_timer(monotonic_ms() + timeout_ms + kGraceMs, [this, id, type] {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    Callback c = std::move(it->second.cb);
    pending_.erase(it);
    c(deadline_exceeded("control plane did not answer " + type + " in time"));
    registration_answered(id);
  });
  if (in_ready_callback_) {
    // A re-registration: the ring carries nothing more until cp answered it.
    registration_.insert(id);
    ring_held_ = ring_ != nullptr;
  }
  if (p.wait_until_ms != 0) {
    send_frame(fields, false);
    p.fields = std::move(fields);
    pending_.emplace(id, std::move(p));
    return;
  }
  pending_.emplace(id, std::move(p));
  send_body(body, false);
}

void CpClient::event(nlohmann::json fields) {
  fields["type"] = "event";
  if (!ready_) {
    return keep_undelivered(protocol::RecordType::kEventJson, 0,
                            fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  if (out_.size() - out_off_ > kMaxOut) {
    uint64_t session = 0;
    if (auto sid = fields.find("session_id"); sid != fields.end() && sid->is_string()) {
      session = std::strtoull(sid->get_ref<const std::string&>().c_str(), nullptr, 16);
    }
    return count_lost(session, fields.value("kind", std::string("event")),
                      fields.value("ts_ms", int64_t{0}));
  }
  if (ring_) {
    return post(protocol::RecordType::kEventJson, 0,
                fields.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  send_frame(fields, true);
}

void CpClient::update_interest() {
  if (fd_ < 0) return;
  uint32_t want = EPOLLIN;
  if (connecting_ || out_off_ < out_.size()) want |= EPOLLOUT;
  if (want != interest_) {
    interest_ = want;
    (void)loop_->modify(fd_, want, this);
  }
}

void CpClient::flush() {
  cancel_event_timer();
  if (fd_ < 0 || connecting_) return update_interest();
  while (out_off_ < out_.size()) {
    ssize_t n;
    if (offered_ring_ && !fds_sent_) {
      // The first bytes of the connection (the hello) carry the ring's descriptors.
      iovec iov{out_.data() + out_off_, out_.size() - out_off_};
      int fds[4] = {offered_ring_->region.fd(), offered_ring_->cp_wake_fd,
                    offered_ring_->dp_wake_fd, process_life_fd()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof fds);
      memcpy(CMSG_DATA(c), fds, sizeof fds);
      n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (n > 0) fds_sent_ = true;
    } else {
      n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
    }
    if (n > 0) {
      out_off_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return disconnect(std::string("write: ") + strerror(errno), /*peer_closed=*/true);
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > (1u << 20)) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
  update_interest();
}

void CpClient::on_io(int, uint32_t events) {
  if (fd_ < 0) return;
  if (connecting_ && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return disconnect(strerror(err));
    connecting_ = false;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    read_frames();
    if (fd_ < 0) return;
  }
  flush();
}

void CpClient::read_frames() {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      heard_from_cp();
      in_.append(buf, static_cast<size_t>(n));
      size_t off = 0;
      while (in_.size() - off >= 4) {
        const auto* p = reinterpret_cast<const unsigned char*>(in_.data() + off);
        uint32_t len = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) |
                       uint32_t{p[3]};
        if (len == 0 || len > kMaxFrame) return disconnect("bad frame length from cp");
        if (in_.size() - off - 4 < len) break;
        auto frame =
            nlohmann::json::parse(in_.begin() + static_cast<long>(off + 4),
                                  in_.begin() + static_cast<long>(off + 4 + len), nullptr, false);
        off += 4 + len;
        if (frame.is_discarded() || !frame.is_object()) {
          return disconnect("malformed JSON frame from cp");
        }
        handle_frame(std::move(frame));
        if (fd_ < 0) return;
      }
      in_.erase(0, off);
      continue;
    }
    if (n == 0) return disconnect("cp closed the connection", /*peer_closed=*/true);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    return disconnect(std::string("read: ") + strerror(errno), /*peer_closed=*/true);
  }
}

void CpClient::handle_frame(nlohmann::json frame) {
  if (!frame.contains("id") || !frame["id"].is_number_unsigned()) {  // events from cp
    if (on_event_) on_event_(std::move(frame));
    return;
  }
  uint64_t id = frame["id"].get<uint64_t>();
  if (id == ping_id_ && ping_id_ != 0) {
    ping_id_ = 0;  // ok, or unknown_type from an older cp: either way it answers
    return;
  }
  bool ok = frame.value("ok", false);
  if (id == hello_id_ && !ready_) {
    if (!ok) return disconnect("cp refused hello");
    policy_version_ = frame.value("policy_version", uint64_t{0});
    if (offered_ring_ && fds_sent_ && frame.value("ring", false)) {
      ring_ = std::move(offered_ring_);
      // Edge-triggered: each write of cp is an edge, so the eventfd is never read (one
      // system call less per wake-up; the counter saturates only after 2^64 - 2 writes).
      if (loop_->add(ring_->dp_wake_fd, EPOLLIN | EPOLLET, &wake_handler_).is_ok()) {
        ring_->registered = true;
      } else {
        ring_.reset();
      }
    }
    offered_ring_.reset();  // an older cp (no "ring" in its answer): JSON events
    ready_ = true;
    ++connections_ready_;
    backoff_ms_ = 100;
    heard_from_cp();
    arm_liveness();
    if (on_ready_change_) {
      in_ready_callback_ = true;
      on_ready_change_(true);
      in_ready_callback_ = false;
    }
    // After the callback's re-registrations (the ring now waits for their answers): first
    // the events the last connection did not deliver, then the requests and records that
    // waited, each session's after its reregister.
    if (ready_) deliver_undelivered();
    if (ready_) send_waiting();
    return;
  }
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (p.timer != 0) loop_->cancel_timer(p.timer);
  if (ok) {
    p.cb(std::move(frame));
  } else {
    p.cb(status_from_cp_error(frame.contains("error") ? frame["error"] : nlohmann::json()));
  }
  registration_answered(id);
}

void CpClient::registration_answered(uint64_t id) {
  if (registration_.erase(id) == 0 || !registration_.empty() || !ring_held_) return;
  // cp handled every re-registration before answering it: from now on it knows each session
  // whose records were held, so they go out, in the order they were made.
  ring_held_ = false;
  drain_overflow();
}

// ---------------------------------------------------------------------------------------------
// Event ring

void CpClient::post_json(protocol::RecordType type, uint64_t session, std::string_view payload) {
  if (type == protocol::RecordType::kEventJson) return event_text(std::string(payload));
  if (!ready_) return keep_undelivered(type, session, std::string(payload));
  auto fields = protocol::record_to_json(type, payload);
  if (!fields.is_ok()) {
    ++events_dropped_;
    return;
  }
  (*fields)["type"] = "event";
  (*fields)["session_id"] = protocol::session_hex(session);
  if (out_.size() - out_off_ > kMaxOut) {
    return count_lost(session, fields->value("kind", std::string("event")),
                      fields->value("ts_ms", int64_t{0}));
  }
  send_frame(*fields, true);
}

void CpClient::keep_undelivered(protocol::RecordType type, uint64_t session, std::string payload) {
  if (undelivered_bytes_ + payload.size() > kMaxUndeliveredBytes) {
    return count_lost_record(type, session, payload);
  }
  undelivered_bytes_ += payload.size();
  undelivered_.push_back(Overflow{type, session, 0, std::move(payload)});
}

void CpClient::deliver_undelivered() {
  std::deque<Overflow> events;
  events.swap(undelivered_);
  undelivered_bytes_ = 0;
  for (Overflow& o : events) {
    if (!ready_) {  // the new connection broke already: they wait for the next one
      keep_undelivered(o.type, o.session, std::move(o.payload));
      continue;
    }
    post(o.type, o.session, o.payload);
  }
}

void CpClient::count_lost(uint64_t session, std::string_view kind, int64_t ts_ms) {
  ++events_dropped_;
  if (session == 0) return;
  if (ts_ms <= 0) ts_ms = unix_ms();
  Lost& l = lost_[session];
  if (l.records == 0 || ts_ms < l.first_ts) l.first_ts = ts_ms;
  l.last_ts = std::max(l.last_ts, ts_ms);
  ++l.records;
  ++l.kinds[std::string(kind)];
}

void CpClient::count_lost_record(protocol::RecordType type, uint64_t session,
                                 std::string_view payload) {
  if (type == protocol::RecordType::kEventJson) {
    // A session's rare event (session_start, error, session_end, ...) names its session inside.
    auto j = nlohmann::json::parse(payload, nullptr, false);
    if (j.is_object()) {
      const std::string sid = j.value("session_id", std::string());
      return count_lost(sid.empty() ? 0 : std::strtoull(sid.c_str(), nullptr, 16),
                        j.value("kind", std::string("event")), j.value("ts_ms", int64_t{0}));
    }
    return count_lost(0, "event");
  }
  count_lost(session, type == protocol::RecordType::kRows ? "rows" : "statement");
}

void CpClient::keep_ring_leftovers() {
  if (!ring_) return;
  // Read our own forward ring as its consumer would, from what cp released: a cp that is
  // still up drained it before it closed the connection (what is left was published after
  // that); one that crashed left the rest unread.
  protocol::SpscRing& f = ring_->region.forward();
  f.publish();
  f.resume();
  protocol::RecordView v;
  while (f.peek(&v)) {
    if (v.header.seq == 0) {
      keep_undelivered(static_cast<protocol::RecordType>(v.header.type), v.header.session,
                       std::string(v.payload));
    }
    f.advance();
  }
}

void CpClient::restore_lost(uint64_t session, const nlohmann::json& lost) {
  if (!lost.is_object()) return;
  Lost& l = lost_[session];
  const uint64_t records = lost.value("records", uint64_t{0});
  const int64_t first = lost.value("first_ts", int64_t{0});
  if (l.records == 0 || first < l.first_ts) l.first_ts = first;
  l.last_ts = std::max(l.last_ts, lost.value("last_ts", int64_t{0}));
  l.records += records;
  if (auto k = lost.find("kinds"); k != lost.end() && k->is_object()) {
    for (const auto& [kind, n] : k->items()) {
      if (n.is_number_unsigned()) l.kinds[kind] += n.get<uint64_t>();
    }
  }
}

nlohmann::json CpClient::take_lost(uint64_t session) {
  auto it = lost_.find(session);
  if (it == lost_.end()) return nullptr;
  nlohmann::json kinds = nlohmann::json::object();
  for (const auto& [k, n] : it->second.kinds) kinds[k] = n;
  nlohmann::json out = {{"records", it->second.records},
                        {"kinds", std::move(kinds)},
                        {"first_ts", it->second.first_ts},
                        {"last_ts", it->second.last_ts}};
  lost_.erase(it);
  return out;
}

void CpClient::post(protocol::RecordType type, uint64_t session, std::string_view payload) {
  if (!ring_) return post_json(type, session, payload);
  if (payload.size() > ring_->region.forward().max_payload()) {
    return count_lost_record(type, session, payload);
  }
  if (!overflow_.empty() || !ring_write(type, session, 0, payload)) {
    if (overflow_bytes_ > kMaxOut) return count_lost_record(type, session, payload);
    overflow_.push_back(Overflow{type, session, 0, std::string(payload)});
    overflow_bytes_ += payload.size();
    drain_overflow();
  }
}

void CpClient::record(uint64_t session, std::string payload, int64_t timeout_ms, Callback cb,
                      int64_t wait_for_cp_ms) {
  if (!ready_) {
    if (wait_for_cp_ms > 0 && !stopped_) {
      enqueue_waiting(waiting_record(session, std::move(payload), timeout_ms,
                                     monotonic_ms() + wait_for_cp_ms, std::move(cb)));
      return;
    }
    fail_later(std::move(cb), unavailable("pgwarden control plane is unreachable"));
    return;
  }
  if (!ring_) {
    auto fields = protocol::record_to_json(protocol::RecordType::kStatementRecord, payload);
    if (!fields.is_ok()) return fail_later(std::move(cb), fields.status());
    (*fields)["session_id"] = protocol::session_hex(session);
    const uint64_t id = next_id_;
    request("record", std::move(*fields), timeout_ms, std::move(cb), wait_for_cp_ms);
    if (auto it = pending_.find(id); it != pending_.end() && it->second.wait_until_ms != 0) {
      it->second.record_session = session;
      it->second.record_payload = std::move(payload);
    }
    return;
  }
  if (payload.size() > ring_->region.forward().max_payload()) {
    return fail_later(std::move(cb),
                      resource_exhausted("the statement record (" + std::to_string(payload.size()) +
                                             " bytes) exceeds the event ring's record limit",
                                         "54000"));
  }
  if (overflow_bytes_ > kMaxOut) {
    // The recorder is far behind: the session holds and retries (53000), as for cp's queue.
    return fail_later(std::move(cb), resource_exhausted("the event ring is full", "53000"));
  }
  uint64_t seq = ring_->next_seq++;
  RingPending p;
  p.session = session;
  p.cb = std::move(cb);
  p.timeout_ms = timeout_ms;
  if (wait_for_cp_ms > 0) p.wait_until_ms = monotonic_ms() + wait_for_cp_ms;
  p.timer = loop_->add_timer(monotonic_ms() + timeout_ms + kGraceMs, [this, seq] {
    auto it = ring_pending_.find(seq);
    if (it == ring_pending_.end()) return;
    Callback c = std::move(it->second.cb);
    ring_pending_.erase(it);
    c(deadline_exceeded("control plane did not answer record in time"));
  });
  if (!overflow_.empty() ||
      !ring_write(protocol::RecordType::kStatementRecord, session, seq, payload)) {
    overflow_.push_back(Overflow{protocol::RecordType::kStatementRecord, session, seq, payload});
    overflow_bytes_ += payload.size();
    drain_overflow();
  }
  p.payload = std::move(payload);
  ring_pending_.emplace(seq, std::move(p));
  // The lowest seq waited for: cp wakes this worker when its watermark passes it.
  ring_->region.watermark().dp_wants.store(ring_pending_.begin()->first, std::memory_order_seq_cst);
}

bool CpClient::ring_write(protocol::RecordType type, uint64_t session, uint64_t seq,
                          std::string_view payload) {
  if (ring_held_ ||
      !ring_->region.forward().try_write(static_cast<uint16_t>(type), session, seq, {payload})) {
    return false;
  }
  ++ring_records_;
  schedule_publish();
  return true;
}

void CpClient::drain_overflow() {
  if (ring_held_) return;  // registration_answered() drains it
  while (ring_ && !overflow_.empty()) {
    Overflow& o = overflow_.front();
    if (!ring_write(o.type, o.session, o.seq, o.payload)) break;
    overflow_bytes_ -= o.payload.size();
    overflow_.pop_front();
  }
  if (!ring_ || overflow_.empty() || overflow_timer_ != 0) return;
  // Publish what fits (cp frees space as it drains), then try again shortly.
  publish_ring();
  overflow_timer_ = loop_->add_timer(monotonic_ms() + kOverflowRetryMs, [this] {
    overflow_timer_ = 0;
    drain_overflow();
  });
}

void CpClient::schedule_publish() {
  if (publish_scheduled_) return;
  publish_scheduled_ = true;
  loop_->defer([this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired()) return;
    publish_scheduled_ = false;
    publish_ring();
  });
}

void CpClient::publish_ring() {
  if (!ring_) return;
  // Requests queued before these records reach the socket first (cp drains the ring before
  // it acts on each frame).
  if (out_off_ < out_.size()) flush();
  if (!ring_) return;
  if (ring_->region.forward().publish()) {
    ++ring_consumer_wakes_;
    signal_eventfd(ring_->cp_wake_fd);
  }
  if (ring_->region.forward().corrupt()) disconnect("cp corrupted the event ring");
}

void CpClient::WakeHandler::on_io(int, uint32_t) {
  // dp_wake_fd is edge-triggered: nothing to read.
  if (!client->ring_) return;
  client->heard_from_cp();
  client->check_acks();
}

void CpClient::check_acks() {
  while (ring_ && !ring_pending_.empty()) {
    protocol::WatermarkBlock& wm = ring_->region.watermark();
    uint64_t written = wm.written.load(std::memory_order_seq_cst);
    // Refusals precede the watermark that covers them: read after the watermark.
    protocol::SpscRing& back = ring_->region.backward();
    protocol::RecordView v;
    while (back.peek(&v)) {
      if (v.header.type == static_cast<uint16_t>(protocol::BackwardType::kRecordRefused)) {
        auto err = nlohmann::json::parse(v.payload, nullptr, false);
        refused_[v.header.seq] = err.is_discarded() ? nlohmann::json::object() : std::move(err);
      }
      back.advance();
    }
    back.release();
    if (back.corrupt()) return disconnect("cp corrupted the event ring");
    while (!ring_pending_.empty() && ring_pending_.begin()->first <= written) {
      auto it = ring_pending_.begin();
      uint64_t seq = it->first;
      RingPending p = std::move(it->second);
      ring_pending_.erase(it);
      if (p.timer != 0) loop_->cancel_timer(p.timer);
      if (auto r = refused_.find(seq); r != refused_.end()) {
        nlohmann::json error = std::move(r->second);
        refused_.erase(r);
        p.cb(status_from_cp_error(error));
      } else {
        p.cb(nlohmann::json::object());
      }
      if (!ring_) return;  // a callback may tear the connection down
    }
    uint64_t want = ring_pending_.empty() ? 0 : ring_pending_.begin()->first;
    wm.dp_wants.store(want, std::memory_order_seq_cst);
    // A watermark published between our read and the store above did not see `want`.
    if (want == 0 || wm.written.load(std::memory_order_seq_cst) < want) return;
  }
}

}  // namespace pgwarden::session
