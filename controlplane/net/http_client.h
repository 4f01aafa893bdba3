// A minimal HTTP/1.1 client for the control plane's outbound calls (JWKS and OIDC discovery
// documents, the approval webhook): one request per connection ("Connection: close") over a
// non-blocking socket with a connect timeout and one overall deadline.
//
// https:// is OpenSSL SSL, TLS 1.2 or newer, server certificate verified against the system
// trust store or a configured CA file plus host name (or IP address) verification. Plain
// http:// is refused unless the caller allows it, and then only to a loopback host (127/8,
// ::1, "localhost"), so request bodies and headers never cross a network in clear text.
// Responses: a cap on the total size, Content-Length and chunked bodies. Redirects are not
// followed (every URL the control plane calls is configured, not discovered by redirect).
//
// Thread-safety: every function is reentrant; each request uses its own SSL_CTX and socket.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace pgwarden::net {

struct HttpUrl {
  bool tls = true;   // https
  std::string host;  // without IPv6 brackets
  std::string port;  // digits; 443 / 80 by default
  std::string path = "/";
};

// Parses "https://host[:port][/path]" (and "http://..." to a loopback host when
// `allow_plain_http`). InvalidArgument, with a message naming the problem, for any other
// scheme, credentials in the authority, whitespace or control characters, an empty host or
// a port outside 1..65535. A "#fragment" is dropped.
Result<HttpUrl> parse_url(std::string_view url, bool allow_plain_http = false);

struct HttpClientOptions {
  std::string ca_file;  // PEM bundle; empty: OpenSSL's default (system) verify paths
  std::chrono::milliseconds timeout{5000};  // connect + handshake + request + response
  // TCP connect (per resolved address); zero or more than `timeout`: `timeout` applies.
  std::chrono::milliseconds connect_timeout{0};
  size_t max_response_bytes = 1024 * 1024;  // headers + body
  bool allow_plain_http = false;            // see parse_url
};

// Header values are views: they must outlive the call (a secret's view() is fine: the
// client wipes its own copy of the serialised request before returning).
struct HttpRequest {
  std::string method = "GET";
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string_view body;  // sent with Content-Length when the method is not GET
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order

  // The first header named `lower_name`; "" when absent.
  std::string header(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_name) return value;
    }
    return std::string();
  }
};

// Sends `request` to `url`. Errors: InvalidArgument (bad URL or scheme, CR/LF or control
// characters in a header, unparseable HTTP), Unavailable (DNS, connect, TLS handshake or
// certificate verification failure, timeout), ResourceExhausted (response over the cap).
// Any HTTP status is returned as a response; callers decide what it means. Error messages
// name the host, never header values.
Result<HttpResponse> http_request(std::string_view url, const HttpRequest& request,
                                  const HttpClientOptions& options);

// Percent-encodes everything but RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~): for
// query parameters and application/x-www-form-urlencoded bodies.
std::string url_encode(std::string_view text);
// "k1=v1&k2=v2", each key and value url_encode()d.
std::string form_encode(const std::vector<std::pair<std::string, std::string>>& fields);

// GET with "Accept: application/json".
Result<HttpResponse> https_get(std::string_view url, const HttpClientOptions& options);

}  // namespace pgwarden::net
