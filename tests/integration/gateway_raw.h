// Raw protocol 3.0 client for gateway tests that need bytes no client library sends
// (garbage, truncated packets, giant length headers, a client that stops reading).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>

namespace pgwarden::testing {

inline void put32(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 24));
  s.push_back(static_cast<char>(v >> 16));
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

inline std::string startup_packet(const std::string& user, const std::string& db) {
  std::string body;
  put32(body, 196608);
  body += "user";
  body.push_back('\0');
  body += user;
  body.push_back('\0');
  body += "database";
  body.push_back('\0');
  body += db;
  body.push_back('\0');
  body.push_back('\0');
  std::string out;
  put32(out, static_cast<uint32_t>(body.size() + 4));
  return out + body;
}

inline std::string typed_message(char type, const std::string& body) {
  std::string out(1, type);
  put32(out, static_cast<uint32_t>(body.size() + 4));
  return out + body;
}

inline std::string cstr(const std::string& s) { return s + std::string(1, '\0'); }

inline bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads and drops bytes until the peer closes (EOF or reset); returns how many arrived, or -1
// when it stayed open for `timeout_ms`.
inline long read_until_close(int fd, int timeout_ms) {
  long got = 0;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char buf[512];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    end - std::chrono::steady_clock::now())
                                    .count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return got;
    if (n < 0) return errno == ECONNRESET ? got : -1;
    got += n;
  }
  return -1;
}

// Reads one backend message. Returns its type, 0 on EOF, -1 on timeout.
inline int read_message(int fd, std::string* body, int timeout_ms) {
  auto read_n = [&](char* p, size_t n) -> int {
    size_t got = 0;
    while (got < n) {
      pollfd pfd{fd, POLLIN, 0};
      if (poll(&pfd, 1, timeout_ms) != 1) return -1;
      ssize_t r = recv(fd, p + got, n - got, 0);
      if (r <= 0) return 0;
      got += static_cast<size_t>(r);
    }
    return 1;
  };
  char hdr[5];
  int rc = read_n(hdr, 5);
  if (rc <= 0) return rc;
  uint32_t len = (uint32_t(uint8_t(hdr[1])) << 24) | (uint32_t(uint8_t(hdr[2])) << 16) |
                 (uint32_t(uint8_t(hdr[3])) << 8) | uint32_t(uint8_t(hdr[4]));
  if (len < 4 || len > (64u << 20)) return 0;
  body->assign(len - 4, '\0');
  rc = read_n(body->data(), len - 4);
  if (rc <= 0) return rc;
  return static_cast<unsigned char>(hdr[0]);
}

// Logs in on the connected socket `fd` as "agent" to "demo" with `token` as the cleartext
// password (a loopback-only listener without TLS); true once ReadyForQuery arrived.
inline bool login_plaintext(int fd, const std::string& token) {
  if (!send_all(fd, startup_packet("agent", "demo"))) return false;
  std::string body;
  if (read_message(fd, &body, 10000) != 'R') return false;
  if (!send_all(fd, typed_message('p', cstr(token)))) return false;
  for (;;) {
    int t = read_message(fd, &body, 10000);
    if (t == 'Z') return true;
    if (t <= 0 || t == 'E') return false;
  }
}

// The SQLSTATE ('C' field) of an ErrorResponse body.
inline std::string error_sqlstate(const std::string& body) {
  size_t i = 0;
  while (i < body.size() && body[i] != '\0') {
    char code = body[i++];
    size_t end = body.find('\0', i);
    if (end == std::string::npos) break;
    if (code == 'C') return body.substr(i, end - i);
    i = end + 1;
  }
  return "";
}

}  // namespace pgwarden::testing
