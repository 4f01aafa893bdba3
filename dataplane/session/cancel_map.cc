#include "dataplane/session/cancel_map.h"

#include <netdb.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "dataplane/pgwire/messages.h"

namespace pgwarden::session {

void CancelEntry::set(const CancelTarget& target) {
  std::lock_guard<std::mutex> lock(mu_);
  target_ = target;  // copy-assigned: the strings keep their buffers, nothing is allocated
}

void CancelEntry::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  target_.process_id = 0;
  target_.secret_key = 0;
}

std::optional<CancelTarget> CancelEntry::get() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (target_.process_id == 0) return std::nullopt;
  return target_;
}

GatewayKey CancelMap::add(CancelTarget target, std::shared_ptr<CancelEntry>* entry) {
  std::lock_guard<std::mutex> lock(mu_);
  const int32_t pid = target.process_id;
  const int32_t upstream_secret = target.secret_key;
  auto made = std::make_shared<CancelEntry>(std::move(target));
  for (;;) {
    uint32_t r = 0;
    RAND_bytes(reinterpret_cast<unsigned char*>(&r), sizeof(r));
    auto key = static_cast<int32_t>(r);
    if (key == upstream_secret) continue;  // never hand out the upstream's own secret
    if (!map_.try_emplace(slot(pid, key), made).second) continue;
    if (entry != nullptr) *entry = std::move(made);
    return GatewayKey{pid, key};
  }
}

void CancelMap::remove(GatewayKey key) {
  std::lock_guard<std::mutex> lock(mu_);
  map_.erase(slot(key.process_id, key.secret_key));
}

std::optional<CancelTarget> CancelMap::find(int32_t process_id, int32_t secret_key) const {
  std::shared_ptr<CancelEntry> entry;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(slot(process_id, secret_key));
    if (it == map_.end()) return std::nullopt;
    entry = it->second;
  }
  return entry->get();
}

size_t CancelMap::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return map_.size();
}

namespace {

int connect_with_timeout(const sockaddr* addr, socklen_t len, int family, int timeout_ms) {
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, addr, len) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      close(fd);
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t el = sizeof(err);
    if (poll(&p, 1, timeout_ms) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
        err != 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

std::atomic<int> g_cancels_in_flight{0};

}  // namespace

Status send_cancel(const CancelTarget& target, int timeout_ms) {
  int fd = -1;
  if (!target.unix_path.empty()) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (target.unix_path.size() >= sizeof(sa.sun_path)) return invalid_argument("path too long");
    memcpy(sa.sun_path, target.unix_path.data(), target.unix_path.size());
    fd = connect_with_timeout(reinterpret_cast<sockaddr*>(&sa), sizeof(sa), AF_UNIX, timeout_ms);
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string port = std::to_string(target.port);
    if (getaddrinfo(target.host.c_str(), port.c_str(), &hints, &res) != 0) {
      return unavailable("cannot resolve " + target.host);
    }
    for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
      fd = connect_with_timeout(a->ai_addr, a->ai_addrlen, a->ai_family, timeout_ms);
    }
    freeaddrinfo(res);
  }
  if (fd < 0) return unavailable("cannot connect to upstream to cancel");
  std::string msg;
  pgwire::append_cancel_request(msg, target.process_id, target.secret_key);
  pollfd p{fd, POLLOUT, 0};
  poll(&p, 1, timeout_ms);
  ssize_t n = send(fd, msg.data(), msg.size(), MSG_NOSIGNAL);
  // PostgreSQL closes the connection once it has read the request; wait for that so the
  // request is not cut off by our close.
  pollfd r{fd, POLLIN, 0};
  poll(&r, 1, timeout_ms);
  close(fd);
  if (n != static_cast<ssize_t>(msg.size())) return unavailable("short write of CancelRequest");
  return Status::ok();
}

void send_cancel_async(CancelTarget target) {
  if (g_cancels_in_flight.fetch_add(1) >= 16) {
    g_cancels_in_flight.fetch_sub(1);
    return;
  }
  std::thread([t = std::move(target)] {
    (void)send_cancel(t, 3000);
    g_cancels_in_flight.fetch_sub(1);
  }).detach();
}

}  // namespace pgwarden::session
