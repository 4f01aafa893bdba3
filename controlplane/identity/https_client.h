// A minimal HTTPS GET client for JWKS and OIDC discovery documents: OpenSSL SSL over a
// non-blocking socket with one overall deadline, server certificate verified against the
// system trust store or a configured CA file plus host name (or IP address) verification,
// TLS 1.2 or newer, a cap on the response size, Content-Length and chunked bodies.
// Redirects are not followed (an IdP's JWKS URL is configured, not discovered by redirect).
//
// Thread-safety: https_get is reentrant; each call uses its own SSL_CTX and socket.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::identity {

struct HttpsGetOptions {
  std::string ca_file;  // PEM bundle; empty: OpenSSL's default (system) verify paths
  std::chrono::milliseconds timeout{5000};  // connect + handshake + request + response
  size_t max_response_bytes = 1024 * 1024;  // headers + body
};

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};

// Fetches `url` ("https://host[:port]/path"). Errors: InvalidArgument (bad URL, not https),
// Unavailable (DNS, connect, TLS handshake or certificate verification failure, timeout),
// ResourceExhausted (response over the cap), InvalidArgument (unparseable HTTP).
// Any HTTP status is returned as a response; callers decide what 200 means.
Result<HttpResponse> https_get(std::string_view url, const HttpsGetOptions& options);

}  // namespace pgwarden::identity
