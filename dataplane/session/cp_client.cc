#include "dataplane/session/cp_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pgwarden::session {

namespace {
// Reconnecting is a local connect(): retrying often keeps a cp restart short for sessions
// waiting on limits.cp_unavailable_wait_ms.
constexpr int64_t kMaxBackoffMs = 500;
constexpr int64_t kGraceMs = 1000;
constexpr size_t kMaxOut = 16u << 20;
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

CpClient::CpClient(EventLoop* loop, std::string socket_path)
    : loop_(loop), socket_path_(std::move(socket_path)) {}

CpClient::~CpClient() {
  stopped_ = true;
  cancel_event_timer();
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
  flush();
  disconnect("dataplane stopping");
  std::map<uint64_t, Waiting> waiting;
  waiting.swap(waiting_);
  for (auto& [key, w] : waiting) {
    if (w.timer != 0) loop_->cancel_timer(w.timer);
    fail_later(std::move(w.cb), unavailable("dataplane stopping"));
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
  send_frame({{"type", "hello"},
              {"id", hello_id_},
              {"protocol", 1},
              {"dp", "pgwarden-dp/0.1"},
              {"rules", true},  // push the rules generation cp validated (event kind rules)
              {"deadline_ms", unix_ms() + 5000}},
             false);
}

void CpClient::schedule_reconnect() {
  if (stopped_ || reconnect_timer_ != 0) return;
  reconnect_timer_ = loop_->add_timer(monotonic_ms() + backoff_ms_, [this] { connect_now(); });
  backoff_ms_ = std::min(backoff_ms_ * 2, kMaxBackoffMs);
}

void CpClient::disconnect(const std::string& why) {
  cancel_event_timer();
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
      // cp may never have seen it: send it again once a connection is back.
      p.fields.erase("id");
      p.fields.erase("deadline_ms");
      enqueue_waiting(std::move(p.type), std::move(p.fields), p.timeout_ms, p.wait_until_ms,
                      std::move(p.cb));
      continue;
    }
    fail_later(std::move(p.cb), unavailable("control plane connection lost: " + why));
  }
  if (was_ready && on_ready_change_) on_ready_change_(false);
  schedule_reconnect();
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
  if (!ready_ || out_.size() - out_off_ > kMaxOut || body.size() > kMaxFrame) {
    ++events_dropped_;
    return;
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

void CpClient::enqueue_waiting(std::string type, nlohmann::json fields, int64_t timeout_ms,
                               int64_t wait_until_ms, Callback cb) {
  uint64_t key = next_waiting_key_++;
  Waiting w{key, std::move(type), std::move(fields), timeout_ms, wait_until_ms, std::move(cb), 0};
  w.timer = loop_->add_timer(wait_until_ms, [this, key] {
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

void CpClient::send_waiting() {
  std::map<uint64_t, Waiting> waiting;
  waiting.swap(waiting_);
  int64_t now = monotonic_ms();
  for (auto& [key, w] : waiting) {
    if (w.timer != 0) loop_->cancel_timer(w.timer);
    request(w.type, std::move(w.fields), w.timeout_ms, std::move(w.cb),
            std::max<int64_t>(w.wait_until_ms - now, 1));
  }
}

void CpClient::request(const std::string& type, nlohmann::json fields, int64_t timeout_ms,
                       Callback cb, int64_t wait_for_cp_ms) {
  if (!ready_) {
    if (wait_for_cp_ms > 0 && !stopped_) {
      enqueue_waiting(type, std::move(fields), timeout_ms, monotonic_ms() + wait_for_cp_ms,
                      std::move(cb));
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
  });
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
  if (!ready_ || out_.size() - out_off_ > kMaxOut) {
    ++events_dropped_;
    return;
  }
  fields["type"] = "event";
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
    ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
    if (n > 0) {
      out_off_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    return disconnect(std::string("write: ") + strerror(errno));
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
    if (n == 0) return disconnect("cp closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    return disconnect(std::string("read: ") + strerror(errno));
  }
}

void CpClient::handle_frame(nlohmann::json frame) {
  if (!frame.contains("id") || !frame["id"].is_number_unsigned()) {  // events from cp
    if (on_event_) on_event_(std::move(frame));
    return;
  }
  uint64_t id = frame["id"].get<uint64_t>();
  bool ok = frame.value("ok", false);
  if (id == hello_id_ && !ready_) {
    if (!ok) return disconnect("cp refused hello");
    policy_version_ = frame.value("policy_version", uint64_t{0});
    ready_ = true;
    backoff_ms_ = 100;
    if (on_ready_change_) on_ready_change_(true);
    // After the callback's re-registrations: requests of a session follow its reregister.
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
}

}  // namespace pgwarden::session
