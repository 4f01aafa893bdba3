#include "controlplane/net/http_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>

#include "common/ascii.h"

namespace pgwarden::net {
namespace {

using SteadyClock = std::chrono::steady_clock;

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6;
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

bool is_loopback_address(const sockaddr* a) {
  if (a->sa_family == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr) >> 24) == 127;
  }
  return a->sa_family == AF_INET6 &&
         IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr);
}

bool has_control_chars(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int remaining_ms(SteadyClock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

bool wait_fd(int fd, short events, SteadyClock::time_point deadline) {
  for (;;) {
    int ms = remaining_ms(deadline);
    if (ms == 0) return false;
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, ms);
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

Result<int> connect_tcp(const HttpUrl& url, SteadyClock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  // getaddrinfo has no timeout; resolvers are bounded by resolv.conf's own timeouts.
  int gai = getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &res);
  if (gai != 0) return unavailable("cannot resolve " + url.host + ": " + gai_strerror(gai));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
  std::string last_error = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (!url.tls && !is_loopback_address(ai->ai_addr)) {
      last_error = "plain http:// only goes to loopback addresses";
      continue;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline)) {
      int err = 0;
      socklen_t len = sizeof(err);
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) return fd;
      last_error = std::strerror(err);
    } else {
      last_error = errno == EINPROGRESS ? "connect timed out" : std::strerror(errno);
    }
    close(fd);
  }
  return unavailable("cannot connect to " + url.host + ":" + url.port + ": " + last_error);
}

std::string ssl_error_string() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "connection closed";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// Drives one SSL operation to completion, polling the socket until `deadline`.
// Returns the operation's result (> 0) or 0/negative on failure, with `why` set.
template <typename Op>
int ssl_io(SSL* ssl, int fd, SteadyClock::time_point deadline, Op op, std::string* why) {
  for (;;) {
    int rc = op();
    if (rc > 0) return rc;
    int err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      if (!wait_fd(fd, err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
        *why = "timed out";
        return -1;
      }
      continue;
    }
    if (err == SSL_ERROR_ZERO_RETURN) return 0;
    *why = ssl_error_string();
    return -1;
  }
}

// One connected socket, optionally wrapped in TLS. read()/write() return > 0 on progress,
// 0 at end of stream and -1 on failure with `why` set ("timed out" for the deadline).
class Connection {
 public:
  Connection(int fd, SteadyClock::time_point deadline) : fd_(fd), deadline_(deadline) {}

  Status start_tls(const HttpUrl& url, const std::string& ca_file) {
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (!ctx_) return internal_error("SSL_CTX_new failed: " + ssl_error_string());
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_PEER, nullptr);
    int loaded = ca_file.empty()
                     ? SSL_CTX_set_default_verify_paths(ctx_.get())
                     : SSL_CTX_load_verify_locations(ctx_.get(), ca_file.c_str(), nullptr);
    if (loaded != 1) {
      return unavailable("cannot load CA certificates" +
                         (ca_file.empty() ? std::string() : " from " + ca_file) + ": " +
                         ssl_error_string());
    }
    ssl_.reset(SSL_new(ctx_.get()));
    if (!ssl_ || SSL_set_fd(ssl_.get(), fd_.get()) != 1) {
      return internal_error("SSL_new failed: " + ssl_error_string());
    }
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, url.host.c_str(), ip) == 1 ||
                 inet_pton(AF_INET6, url.host.c_str(), ip) == 1;
    if (is_ip) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_.get());
      if (X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str()) != 1) {
        return internal_error("cannot set expected IP address");
      }
    } else if (SSL_set_tlsext_host_name(ssl_.get(), url.host.c_str()) != 1 ||
               SSL_set1_host(ssl_.get(), url.host.c_str()) != 1) {
      return internal_error("cannot set expected host name");
    }
    std::string why;
    if (ssl_io(
            ssl_.get(), fd_.get(), deadline_, [&] { return SSL_connect(ssl_.get()); }, &why) <= 0) {
      long verify = SSL_get_verify_result(ssl_.get());
      if (verify != X509_V_OK) {
        why = std::string("certificate verification failed: ") +
              X509_verify_cert_error_string(verify);
      }
      return unavailable("TLS handshake with " + url.host + " failed: " + why);
    }
    return Status::ok();
  }

  int write(std::string_view data, std::string* why) {
    if (ssl_) {
      return ssl_io(
          ssl_.get(), fd_.get(), deadline_,
          [&] { return SSL_write(ssl_.get(), data.data(), static_cast<int>(data.size())); }, why);
    }
    for (;;) {
      ssize_t n = send(fd_.get(), data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) return static_cast<int>(n);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        if (!wait_fd(fd_.get(), POLLOUT, deadline_)) return timed_out(why);
        continue;
      }
      *why = std::strerror(errno);
      return -1;
    }
  }

  int read(char* buf, size_t size, std::string* why) {
    if (ssl_) {
      return ssl_io(
          ssl_.get(), fd_.get(), deadline_,
          [&] { return SSL_read(ssl_.get(), buf, static_cast<int>(size)); }, why);
    }
    for (;;) {
      ssize_t n = recv(fd_.get(), buf, size, 0);
      if (n >= 0) return static_cast<int>(n);
      if (errno == EAGAIN || errno == EINTR) {
        if (!wait_fd(fd_.get(), POLLIN, deadline_)) return timed_out(why);
        continue;
      }
      *why = std::strerror(errno);
      return -1;
    }
  }

 private:
  static int timed_out(std::string* why) {
    *why = "timed out";
    return -1;
  }

  Fd fd_;
  SteadyClock::time_point deadline_;
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
  std::unique_ptr<SSL, SslFree> ssl_;  // declared after ctx_: freed first
};

// Wipes the serialised request (it may carry an Authorization header) on every exit path.
struct WipedString {
  std::string text;
  ~WipedString() { OPENSSL_cleanse(text.data(), text.size()); }
};

Result<std::string> dechunk(std::string_view body) {
  std::string out;
  size_t pos = 0;
  for (;;) {
    size_t eol = body.find("\r\n", pos);
    if (eol == std::string_view::npos) return invalid_argument("truncated chunked body");
    std::string_view size_line = body.substr(pos, eol - pos);
    size_line = size_line.substr(0, size_line.find(';'));  // chunk extensions
    if (size_line.empty() || size_line.size() > 8) return invalid_argument("bad chunk size");
    size_t size = 0;
    for (char c : size_line) {
      int v = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
              : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
              : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
                                                          : -1;
      if (v < 0) return invalid_argument("bad chunk size");
      size = size * 16 + static_cast<size_t>(v);
    }
    pos = eol + 2;
    if (size == 0) return out;  // trailers ignored
    if (body.size() - pos < size + 2 || body.substr(pos + size, 2) != "\r\n") {
      return invalid_argument("truncated chunk");
    }
    out.append(body.substr(pos, size));
    pos += size + 2;
  }
}

Result<HttpResponse> parse_response(std::string_view raw) {
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string_view::npos) return invalid_argument("no complete HTTP header");
  std::string_view head = raw.substr(0, end);
  std::string_view body = raw.substr(end + 4);
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  // "HTTP/1.x 200 OK"
  if (status_line.substr(0, 7) != "HTTP/1." || status_line.size() < 12 || status_line[8] != ' ') {
    return invalid_argument("bad HTTP status line");
  }
  HttpResponse resp;
  for (size_t i = 9; i < 12; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(status_line[i]))) {
      return invalid_argument("bad HTTP status code");
    }
    resp.status = resp.status * 10 + (status_line[i] - '0');
  }
  bool chunked = false;
  std::optional<size_t> content_length;
  while (eol != std::string_view::npos) {
    size_t start = eol + 2;
    eol = head.find("\r\n", start);
    std::string_view line = head.substr(start, eol == std::string_view::npos ? eol : eol - start);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name = ascii_lower(line.substr(0, colon));
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    resp.headers.emplace_back(name, std::string(value));
    if (name == "transfer-encoding") {
      chunked = ascii_lower(value).find("chunked") != std::string::npos;
    } else if (name == "content-length") {
      if (value.empty() || value.size() > 12 ||
          value.find_first_not_of("0123456789") != std::string_view::npos) {
        return invalid_argument("bad Content-Length");
      }
      content_length = std::stoull(std::string(value));
    } else if (name == "content-type") {
      resp.content_type = std::string(value);
    }
  }
  if (chunked) {
    auto dec = dechunk(body);
    if (!dec) return dec.status();
    resp.body = std::move(*dec);
  } else if (content_length) {
    if (body.size() < *content_length) return invalid_argument("truncated HTTP body");
    resp.body = std::string(body.substr(0, *content_length));
  } else {
    resp.body = std::string(body);  // HTTP/1.0 style: body ends at connection close
  }
  return resp;
}

}  // namespace

Result<HttpUrl> parse_url(std::string_view url, bool allow_plain_http) {
  constexpr std::string_view kHttps = "https://";
  constexpr std::string_view kHttp = "http://";
  HttpUrl out;
  std::string_view rest;
  if (url.substr(0, kHttps.size()) == kHttps) {
    rest = url.substr(kHttps.size());
  } else if (allow_plain_http && url.substr(0, kHttp.size()) == kHttp) {
    out.tls = false;
    rest = url.substr(kHttp.size());
  } else {
    return invalid_argument(allow_plain_http ? "only https:// and http:// URLs are allowed"
                                             : "only https:// URLs are allowed");
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return invalid_argument("URL contains whitespace or control characters");
    }
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) out.path = std::string(rest.substr(slash));
  if (size_t hash = out.path.find('#'); hash != std::string::npos) out.path.resize(hash);
  if (authority.find('@') != std::string_view::npos) {
    return invalid_argument("credentials in URLs are not allowed");
  }
  std::optional<std::string_view> port;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return invalid_argument("bad IPv6 literal");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return invalid_argument("bad authority");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return invalid_argument("URL has no host");
  out.port = port ? std::string(*port) : (out.tls ? "443" : "80");
  if (out.port.empty() || out.port.size() > 5 ||
      out.port.find_first_not_of("0123456789") != std::string::npos || std::stoi(out.port) < 1 ||
      std::stoi(out.port) > 65535) {
    return invalid_argument("bad port");
  }
  if (!out.tls && !is_loopback_host(out.host)) {
    return invalid_argument("plain http:// is only allowed to a loopback host; use https://");
  }
  return out;
}

Result<HttpResponse> http_request(std::string_view url_text, const HttpRequest& request,
                                  const HttpClientOptions& options) {
  auto url = parse_url(url_text, options.allow_plain_http);
  if (!url) return url.status();
  if (request.method.empty() ||
      request.method.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos) {
    return invalid_argument("bad HTTP method");
  }
  for (const auto& [name, value] : request.headers) {
    if (name.empty() || has_control_chars(name) || name.find(':') != std::string_view::npos ||
        has_control_chars(value)) {
      // The value may be a secret: never echoed.
      return invalid_argument("HTTP header " + std::string(name.substr(0, 64)) +
                              " has a bad name or control characters in its value");
    }
  }
  auto start = SteadyClock::now();
  auto deadline = start + options.timeout;
  auto connect_deadline = deadline;
  if (options.connect_timeout.count() > 0 && options.connect_timeout < options.timeout) {
    connect_deadline = start + options.connect_timeout;
  }

  auto fd_or = connect_tcp(*url, connect_deadline);
  if (!fd_or) return fd_or.status();
  Connection conn(*fd_or, deadline);
  if (url->tls) PGW_RETURN_IF_ERROR(conn.start_tls(*url, options.ca_file));

  const std::string default_port = url->tls ? "443" : "80";
  std::string host_header =
      url->host.find(':') != std::string::npos ? "[" + url->host + "]" : url->host;
  if (url->port != default_port) host_header += ":" + url->port;
  WipedString wire;
  std::string& out = wire.text;
  out.reserve(256 + request.body.size());
  out.append(request.method).append(" ").append(url->path).append(" HTTP/1.1\r\nHost: ");
  out.append(host_header).append("\r\nUser-Agent: pgwarden\r\nConnection: close\r\n");
  for (const auto& [name, value] : request.headers) {
    out.append(name).append(": ").append(value).append("\r\n");
  }
  if (request.method != "GET") {
    out.append("Content-Length: ").append(std::to_string(request.body.size())).append("\r\n");
  }
  out.append("\r\n").append(request.body);

  std::string why;
  for (std::string_view left = out; !left.empty();) {
    int n = conn.write(left, &why);
    if (n <= 0) return unavailable("sending request to " + url->host + " failed: " + why);
    left.remove_prefix(static_cast<size_t>(n));
  }

  std::string raw;
  char buf[16384];
  for (;;) {
    int n = conn.read(buf, sizeof(buf), &why);
    if (n == 0) break;  // close_notify / FIN
    if (n < 0) {
      // Many servers close without close_notify after a complete "Connection: close"
      // response; a truncated body is caught by Content-Length/chunk parsing below, but a
      // timeout is always an error.
      if (why == "timed out") return unavailable("reading from " + url->host + " timed out");
      ERR_clear_error();
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
    if (raw.size() > options.max_response_bytes) {
      return resource_exhausted("response from " + url->host + " exceeds " +
                                std::to_string(options.max_response_bytes) + " bytes");
    }
  }
  return parse_response(raw);
}

Result<HttpResponse> https_get(std::string_view url, const HttpClientOptions& options) {
  HttpRequest request;
  request.headers = {{"Accept", "application/json"}};
  return http_request(url, request, options);
}

std::string url_encode(std::string_view text) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string form_encode(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out;
  for (const auto& [k, v] : fields) {
    if (!out.empty()) out += '&';
    out += url_encode(k) + "=" + url_encode(v);
  }
  return out;
}

}  // namespace pgwarden::net
