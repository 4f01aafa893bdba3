#include "common/protocol/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/protocol/messages.h"

namespace pgwarden::protocol {

BlockingClient::~BlockingClient() { close(); }

void BlockingClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Status BlockingClient::connect(const std::string& socket_path) {
  close();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return invalid_argument("socket path too long: " + socket_path);
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return unavailable(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    Status s = unavailable("connect " + socket_path + ": " + std::strerror(errno));
    close();
    return s;
  }
  decoder_ = FrameDecoder(max_frame_bytes_);
  pending_.clear();
  return Status::ok();
}

Result<uint64_t> BlockingClient::hello(const std::string& dp_name) {
  Hello h;
  h.dp = dp_name;
  auto r = call(h.to_json(next_id()));
  if (!r.is_ok()) return r.status();
  if (!r->value("ok", false)) {
    return unavailable("hello rejected: " + r->value("error", json::object()).dump());
  }
  if (!r->contains("policy_version") || !(*r)["policy_version"].is_number_unsigned()) {
    return invalid_argument("hello response without policy_version");
  }
  return (*r)["policy_version"].get<uint64_t>();
}

Status BlockingClient::send_raw(const std::string& bytes) {
  if (fd_ < 0) return failed_precondition("not connected");
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return unavailable(std::string("send: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  return Status::ok();
}

Result<uint64_t> BlockingClient::send(json request) {
  if (!request.is_object()) return invalid_argument("request must be a JSON object");
  if (!request.contains("id")) request["id"] = next_id();
  if (!request.contains("deadline_ms") && request.value("type", "") != "hello") {
    request["deadline_ms"] = now_unix_ms() + default_deadline_ms_;
  }
  const json& id_field = request["id"];
  if (!id_field.is_number_integer() || id_field.get<int64_t>() < 0) {
    if (!id_field.is_number_unsigned()) return invalid_argument("request id must be a uint64");
  }
  uint64_t id = id_field.get<uint64_t>();
  std::string out;
  PGW_RETURN_IF_ERROR(append_message(out, request));
  PGW_RETURN_IF_ERROR(send_raw(out));
  return id;
}

Result<json> BlockingClient::receive(int timeout_ms) {
  if (!pending_.empty()) {
    json j = std::move(pending_.begin()->second);
    pending_.erase(pending_.begin());
    return j;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    auto frame = decoder_.next();
    if (!frame.is_ok()) return frame.status();
    if (frame->has_value()) return parse_payload(**frame);
    if (fd_ < 0) return failed_precondition("not connected");
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (left <= 0) return deadline_exceeded("no frame from cp within timeout");
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, left);
    if (r < 0 && errno != EINTR) return unavailable("poll failed");
    if (r <= 0) continue;
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n == 0) return unavailable("cp closed the connection");
    if (n < 0) {
      if (errno == EINTR) continue;
      return unavailable(std::string("recv: ") + std::strerror(errno));
    }
    decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
  }
}

Result<json> BlockingClient::receive_for(uint64_t id, int timeout_ms) {
  auto it = pending_.find(id);
  if (it != pending_.end()) {
    json j = std::move(it->second);
    pending_.erase(it);
    return j;
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    deadline - std::chrono::steady_clock::now())
                                    .count());
    if (left <= 0) return deadline_exceeded("no response within timeout");
    // Bypass the pending queue: read straight from the socket.
    std::map<uint64_t, json> saved;
    saved.swap(pending_);
    auto r = receive(left);
    saved.swap(pending_);
    if (!r.is_ok()) return r.status();
    const json& j = *r;
    uint64_t got = j.contains("id") && j["id"].is_number_unsigned() ? j["id"].get<uint64_t>() : 0;
    if (got == id) return std::move(r).value();
    pending_[got] = std::move(r).value();
  }
}

Result<json> BlockingClient::call(json request, int timeout_ms) {
  auto id = send(std::move(request));
  if (!id.is_ok()) return id.status();
  return receive_for(*id, timeout_ms);
}

}  // namespace pgwarden::protocol
