#include "controlplane/approvals/webhook.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "controlplane/approvals/approval_store.h"

namespace pgwarden::approvals {

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

Status wait_fd(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return deadline_exceeded("webhook timed out");
  if (rc < 0) return unavailable(std::string("webhook poll: ") + std::strerror(errno));
  return Status::ok();
}

}  // namespace

Result<HttpUrl> parse_http_url(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.compare(0, kScheme.size(), kScheme) != 0) {
    return invalid_argument("webhook URL must start with http:// (https is not supported)");
  }
  std::string rest = url.substr(kScheme.size());
  HttpUrl out;
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos) out.path = rest.substr(slash);
  size_t colon = hostport.rfind(':');
  if (colon != std::string::npos) {
    std::string port = hostport.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos) {
      return invalid_argument("webhook URL has a bad port");
    }
    out.port = std::stoi(port);
    if (out.port < 1 || out.port > 65535) return invalid_argument("webhook URL has a bad port");
    hostport.resize(colon);
  }
  if (hostport.empty()) return invalid_argument("webhook URL has no host");
  for (char c : out.path) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return invalid_argument("webhook URL path has control characters or spaces");
    }
  }
  out.host = hostport;
  return out;
}

Result<std::unique_ptr<WebhookNotifier>> WebhookNotifier::create(const WebhookOptions& options) {
  auto url = parse_http_url(options.url);
  if (!url) return url.status();
  std::unique_ptr<WebhookNotifier> n(new WebhookNotifier(options, std::move(*url)));
  n->thread_ = std::thread([raw = n.get()] { raw->run(); });
  return n;
}

WebhookNotifier::WebhookNotifier(WebhookOptions options, HttpUrl url)
    : options_(std::move(options)), url_(std::move(url)) {}

WebhookNotifier::~WebhookNotifier() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool WebhookNotifier::enqueue(const nlohmann::json& body) {
  std::string text = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= options_.queue_capacity) {
      ++webhook_dropped_;
      return false;
    }
    queue_.push_back(std::move(text));
  }
  cv_.notify_one();
  return true;
}

void WebhookNotifier::run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    std::string body = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Status st = post(body);
    if (st.is_ok()) {
      ++webhook_sent_;
    } else {
      ++webhook_failed_;
    }
    lock.lock();
  }
}

Status WebhookNotifier::post(const std::string& body) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int gai = ::getaddrinfo(url_.host.c_str(), std::to_string(url_.port).c_str(), &hints, &res);
  if (gai != 0) return unavailable(std::string("webhook resolve: ") + gai_strerror(gai));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
  Fd fd(
      ::socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, res->ai_protocol));
  if (fd.get() < 0) return unavailable("webhook socket failed");
  if (::connect(fd.get(), res->ai_addr, res->ai_addrlen) != 0) {
    if (errno != EINPROGRESS)
      return unavailable(std::string("webhook connect: ") + strerror(errno));
    PGW_RETURN_IF_ERROR(wait_fd(fd.get(), POLLOUT, options_.timeout_ms));
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return unavailable(std::string("webhook connect: ") + strerror(err));
  }
  std::string req = "POST " + url_.path + " HTTP/1.1\r\nHost: " + url_.host + ":" +
                    std::to_string(url_.port) +
                    "\r\nContent-Type: application/json\r\nUser-Agent: pgwarden-cp\r\n"
                    "Connection: close\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  std::string_view out = req;
  while (!out.empty()) {
    PGW_RETURN_IF_ERROR(wait_fd(fd.get(), POLLOUT, options_.timeout_ms));
    ssize_t n = ::send(fd.get(), out.data(), out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return unavailable(std::string("webhook send: ") + strerror(errno));
    }
    out.remove_prefix(static_cast<size_t>(n));
  }
  // Read the status line only: "HTTP/1.x NNN".
  std::string resp;
  char buf[512];
  while (resp.find("\r\n") == std::string::npos && resp.size() < 4096) {
    PGW_RETURN_IF_ERROR(wait_fd(fd.get(), POLLIN, options_.timeout_ms));
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  if (resp.size() < 12 || resp.compare(0, 5, "HTTP/") != 0) {
    return unavailable("webhook: no HTTP response");
  }
  char cls = resp[9];
  if (cls != '2') return unavailable("webhook answered " + resp.substr(9, 3));
  return Status::ok();
}

nlohmann::json webhook_body(const ApprovalRequest& r) {
  return nlohmann::json{{"event", "approval_requested"},
                        {"id", r.id},
                        {"identity", r.identity},
                        {"target", r.target},
                        {"rule", r.rule},
                        {"reason", r.request_reason},
                        {"sql", r.sql},
                        {"created_ms", r.created_ms},
                        {"deadline_ms", r.deadline_ms},
                        {"approve_command", "pgwardenctl approvals approve " + r.id}};
}

}  // namespace pgwarden::approvals
