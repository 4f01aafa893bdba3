#include "tests/integration/pg_raw.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pgwarden::testing {

namespace {
void put32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}
uint32_t get32(const char* p) {
  auto u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | u[3];
}
constexpr size_t kMaxMessage = 1 << 20;
}  // namespace

int32_t BackendMessage::auth_code() const {
  if (type != 'R' || payload.size() < 4) return -1;
  return static_cast<int32_t>(get32(payload.data()));
}

std::vector<std::string> BackendMessage::sasl_mechanisms() const {
  std::vector<std::string> out;
  size_t pos = 4;
  while (pos < payload.size()) {
    size_t end = payload.find('\0', pos);
    if (end == std::string::npos || end == pos) break;
    out.push_back(payload.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::map<char, std::string> BackendMessage::fields() const {
  std::map<char, std::string> out;
  size_t pos = 0;
  while (pos < payload.size() && payload[pos] != '\0') {
    size_t end = payload.find('\0', pos + 1);
    if (end == std::string::npos) break;
    out[payload[pos]] = payload.substr(pos + 1, end - pos - 1);
    pos = end + 1;
  }
  return out;
}

RawPgConnection::~RawPgConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Status RawPgConnection::connect_tcp(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res) {
    return unavailable("cannot resolve " + host);
  }
  fd_ = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc = fd_ < 0 ? -1 : ::connect(fd_, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) return unavailable(std::string("connect: ") + std::strerror(errno));
  return Status::ok();
}

Status RawPgConnection::send_all(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return unavailable(std::string("send: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status RawPgConnection::send_startup(const std::string& user, const std::string& database) {
  std::string body;
  put32(body, 196608);  // protocol 3.0
  for (const auto& [k, v] :
       {std::pair<std::string, std::string>{"user", user}, {"database", database}}) {
    body += k;
    body.push_back('\0');
    body += v;
    body.push_back('\0');
  }
  body.push_back('\0');
  std::string msg;
  put32(msg, static_cast<uint32_t>(body.size() + 4));
  return send_all(msg + body);
}

Status RawPgConnection::send_sasl_initial_response(const std::string& mechanism,
                                                   const std::string& data) {
  std::string body = mechanism;
  body.push_back('\0');
  put32(body, static_cast<uint32_t>(data.size()));
  body += data;
  std::string msg = "p";
  put32(msg, static_cast<uint32_t>(body.size() + 4));
  return send_all(msg + body);
}

Status RawPgConnection::send_sasl_response(const std::string& data) {
  std::string msg = "p";
  put32(msg, static_cast<uint32_t>(data.size() + 4));
  return send_all(msg + data);
}

Result<BackendMessage> RawPgConnection::read_message(int timeout_ms) {
  while (true) {
    if (in_.size() >= 5) {
      uint32_t len = get32(in_.data() + 1);
      if (len < 4 || len > kMaxMessage) return invalid_argument("bad backend message length");
      if (in_.size() >= len + 1) {
        BackendMessage m{in_[0], in_.substr(5, len - 4)};
        in_.erase(0, len + 1);
        return m;
      }
    }
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r == 0) return deadline_exceeded("no backend message within timeout");
    if (r < 0 && errno != EINTR) return unavailable("poll failed");
    char buf[8192];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n == 0) return unavailable("server closed the connection");
    if (n < 0) {
      if (errno == EINTR) continue;
      return unavailable(std::string("recv: ") + std::strerror(errno));
    }
    in_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace pgwarden::testing
