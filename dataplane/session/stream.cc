#include "dataplane/session/stream.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pgwarden::session {

std::string openssl_errors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

namespace {

// What Stream expects of both kinds of context: partial, retried writes; buffers freed while
// idle (an idle TLS session stays small); and read-ahead: one read() per wake-up instead of
// two per record (header, then body) — OpenSSL reads what the socket holds and decrypts from
// its buffer (Stream::read tells when that buffer is empty).
void set_stream_modes(SSL_CTX* ctx) {
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
}

}  // namespace

Result<SslCtxPtr> make_server_tls_context(const std::string& cert_file,
                                          const std::string& key_file) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()), SslCtxDeleter());
  if (!ctx) return internal_error("SSL_CTX_new: " + openssl_errors());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  set_stream_modes(ctx.get());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1) {
    return invalid_argument("cannot load TLS certificate " + cert_file + ": " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    return invalid_argument("cannot load TLS key " + key_file + ": " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    return invalid_argument("TLS key " + key_file + " does not match " + cert_file);
  }
  return ctx;
}

Result<SslCtxPtr> make_client_tls_context(bool verify, const std::string& ca_file) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()), SslCtxDeleter());
  if (!ctx) return internal_error("SSL_CTX_new: " + openssl_errors());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  set_stream_modes(ctx.get());
  if (verify) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    int ok = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx.get())
                             : SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr);
    if (ok != 1) {
      return invalid_argument("cannot load CA file " + ca_file + ": " + openssl_errors());
    }
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  }
  return ctx;
}

void Stream::reset() {
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

Status Stream::start_tls(SSL_CTX* ctx, bool server, const std::string& verify_host) {
  ssl_ = SSL_new(ctx);
  if (ssl_ == nullptr) return internal_error("SSL_new: " + openssl_errors());
  SSL_set_fd(ssl_, fd_);
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    if (!verify_host.empty()) {
      in6_addr addr6;
      in_addr addr4;
      bool is_ip = inet_pton(AF_INET, verify_host.c_str(), &addr4) == 1 ||
                   inet_pton(AF_INET6, verify_host.c_str(), &addr6) == 1;
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
      int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, verify_host.c_str())
                     : SSL_set1_host(ssl_, verify_host.c_str());
      if (ok != 1) return internal_error("cannot set TLS peer name " + verify_host);
      if (!is_ip) SSL_set_tlsext_host_name(ssl_, verify_host.c_str());
    }
  }
  return Status::ok();
}

IoStatus Stream::ssl_result(int rc, bool reading, bool handshaking) {
  int err = SSL_get_error(ssl_, rc);
  switch (err) {
    case SSL_ERROR_WANT_READ:
      if (!reading && !handshaking) write_wants_read_ = true;
      return IoStatus::kWouldBlock;
    case SSL_ERROR_WANT_WRITE:
      if (handshaking)
        handshake_wants_write_ = true;
      else if (reading)
        read_wants_write_ = true;
      return IoStatus::kWouldBlock;
    case SSL_ERROR_ZERO_RETURN:
      return IoStatus::kClosed;
    case SSL_ERROR_SYSCALL:
      if (errno == EAGAIN || errno == EINTR) return IoStatus::kWouldBlock;
      error_ = errno != 0 ? strerror(errno) : "connection closed during TLS";
      ERR_clear_error();
      return errno == 0 ? IoStatus::kClosed : IoStatus::kError;
    default:
      error_ = openssl_errors();
      return IoStatus::kError;
  }
}

IoStatus Stream::handshake() {
  handshake_wants_write_ = false;
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return IoStatus::kOk;
  IoStatus st = ssl_result(rc, false, true);
  if (st == IoStatus::kClosed) error_ = "peer closed the connection during the TLS handshake";
  return st;
}

IoStatus Stream::read(std::string& in, size_t max, bool* drained) {
  // Read into per-thread scratch and append what arrived: growing `in` by `max` first would
  // zero-fill `max` bytes on every read.
  thread_local std::string scratch;
  if (scratch.size() < max) scratch.resize(max);
  *drained = false;
  if (ssl_ != nullptr) {
    read_wants_write_ = false;
    ERR_clear_error();
    size_t got = 0;
    int rc = SSL_read_ex(ssl_, scratch.data(), max, &got);
    if (rc == 1) {
      in.append(scratch.data(), got);
      // Nothing left in OpenSSL's buffers (read ahead): the read that filled them most likely
      // emptied the socket, so skip the read that would only say "want read" (level-triggered
      // epoll reports anything still in, or arriving at, the socket).
      *drained = SSL_has_pending(ssl_) == 0;
      return IoStatus::kOk;
    }
    return ssl_result(rc, true, false);
  }
  for (;;) {
    ssize_t n = ::recv(fd_, scratch.data(), max, 0);
    if (n > 0) {
      in.append(scratch.data(), static_cast<size_t>(n));
      // A short read emptied the socket buffer: skip the read that would only say EAGAIN
      // (level-triggered epoll reports anything that arrives later).
      *drained = static_cast<size_t>(n) < max;
      return IoStatus::kOk;
    }
    if (n == 0) return IoStatus::kClosed;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoStatus::kWouldBlock;
    error_ = strerror(errno);
    return IoStatus::kError;
  }
}

IoStatus Stream::write(std::string_view data, size_t* written) {
  *written = 0;
  if (data.empty()) return IoStatus::kOk;
  if (ssl_ != nullptr) {
    write_wants_read_ = false;
    ERR_clear_error();
    size_t n = 0;
    int rc = SSL_write_ex(ssl_, data.data(), data.size(), &n);
    if (rc == 1) {
      *written = n;
      return IoStatus::kOk;
    }
    return ssl_result(rc, false, false);
  }
  for (;;) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      *written = static_cast<size_t>(n);
      return IoStatus::kOk;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return IoStatus::kWouldBlock;
    error_ = strerror(errno);
    return errno == EPIPE || errno == ECONNRESET ? IoStatus::kClosed : IoStatus::kError;
  }
}

}  // namespace pgwarden::session
