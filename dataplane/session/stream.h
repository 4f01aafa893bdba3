// Stream: a non-blocking socket, optionally wrapped in TLS (OpenSSL), with the read/write
// calls the session engine needs. Owned by one session; not thread-safe.
//
// TLS follows OpenSSL's non-blocking contract: SSL_read may need the socket to be writable
// and SSL_write may need it readable (wants_write_for_read / wants_read_for_write tell the
// session which epoll interest to keep), and a write that returned kWouldBlock is retried
// with the same bytes at the front of the buffer.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace pgwarden::session {

enum class IoStatus { kOk, kWouldBlock, kClosed, kError };

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::shared_ptr<SSL_CTX>;

// Server context from PEM certificate chain and key files (TLS 1.2+).
Result<SslCtxPtr> make_server_tls_context(const std::string& cert_file,
                                          const std::string& key_file);
// Client context for upstream connections. `verify` checks the chain against `ca_file`
// (system store when empty); hostname checking is per connection (Stream::start_tls).
Result<SslCtxPtr> make_client_tls_context(bool verify, const std::string& ca_file);

// Last OpenSSL error queue entries as text (and clears the queue).
std::string openssl_errors();

class Stream {
 public:
  Stream() = default;
  explicit Stream(int fd) : fd_(fd) {}
  ~Stream() { reset(); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  int fd() const { return fd_; }
  bool open() const { return fd_ >= 0; }
  bool tls() const { return ssl_ != nullptr; }
  void set_fd(int fd) { fd_ = fd; }
  // Closes the socket and frees the TLS state.
  void reset();
  // Exchanges sockets and TLS state (a pooled upstream connection moves between the pool and
  // the session it serves).
  void swap(Stream& other) noexcept {
    std::swap(fd_, other.fd_);
    std::swap(ssl_, other.ssl_);
    std::swap(read_wants_write_, other.read_wants_write_);
    std::swap(write_wants_read_, other.write_wants_read_);
    std::swap(handshake_wants_write_, other.handshake_wants_write_);
    std::swap(error_, other.error_);
  }

  // Wraps the socket in TLS. `server` selects accept vs connect; `verify_host` (client only,
  // may be empty) enables hostname/IP verification.
  Status start_tls(SSL_CTX* ctx, bool server, const std::string& verify_host);
  // Advances the handshake: kOk when done, kWouldBlock to be called again on I/O.
  IoStatus handshake();

  // Appends at most `max` bytes to `in`. `*drained` is set when nothing is left to read but
  // what epoll will announce (a short plaintext read; with TLS, nothing left in OpenSSL's
  // buffers), so the caller need not read again until epoll says so.
  IoStatus read(std::string& in, size_t max, bool* drained);
  // Writes a prefix of `data`; *written is how much.
  IoStatus write(std::string_view data, size_t* written);

  bool wants_write_for_read() const { return read_wants_write_; }
  bool wants_read_for_write() const { return write_wants_read_; }
  bool handshake_wants_write() const { return handshake_wants_write_; }
  // Bytes OpenSSL holds that epoll cannot announce: decrypted and not yet returned, or read
  // ahead from the socket and not yet decrypted (possibly an incomplete record, which needs
  // more from the socket: see read()'s kWouldBlock).
  bool has_buffered_input() const { return ssl_ != nullptr && SSL_has_pending(ssl_) != 0; }
  const std::string& error() const { return error_; }

 private:
  IoStatus ssl_result(int rc, bool reading, bool handshaking);

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  bool read_wants_write_ = false;
  bool write_wants_read_ = false;
  bool handshake_wants_write_ = false;
  std::string error_;
};

}  // namespace pgwarden::session
