#include "controlplane/vault/secret.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace pgwarden::vault {

namespace {
constexpr size_t kMaxSecretFileBytes = 64 * 1024;
}  // namespace

void wipe_string(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

Secret::Secret(std::string&& bytes) {
  // Copy into our own buffer rather than stealing: a moved-from SSO string could keep the
  // bytes in the caller's object, so wipe the caller's buffer explicitly.
  bytes_.assign(bytes.data(), bytes.size());
  wipe_string(bytes);
}

Secret Secret::copy_of(std::string_view bytes) {
  Secret s;
  s.bytes_.assign(bytes.data(), bytes.size());
  return s;
}

Secret::~Secret() { wipe(); }

Secret::Secret(Secret&& other) noexcept {
  bytes_.assign(other.bytes_.data(), other.bytes_.size());
  other.wipe();
}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    wipe();
    bytes_.assign(other.bytes_.data(), other.bytes_.size());
    other.wipe();
  }
  return *this;
}

void Secret::wipe() {
  // Wipe the whole allocated capacity, not only size(): earlier longer contents may linger.
  if (bytes_.capacity() > 0) {
    bytes_.resize(bytes_.capacity());
    OPENSSL_cleanse(bytes_.data(), bytes_.size());
  }
  bytes_.clear();
}

Result<Secret> read_secret(const SecretSource& source, bool require_private_file) {
  if (source.kind == SecretSource::Kind::kEnv) {
    const char* v = std::getenv(source.location.c_str());
    if (v == nullptr || *v == '\0') {
      return failed_precondition("credential environment variable " + source.location +
                                 " is not set or empty");
    }
    return Secret::copy_of(v);
  }
  int fd = ::open(source.location.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return failed_precondition("cannot open credential file " + source.location + ": " +
                               std::strerror(errno));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return failed_precondition("credential file " + source.location + " is not a regular file");
  }
  if (require_private_file && (st.st_mode & 077) != 0) {
    ::close(fd);
    return failed_precondition("credential file " + source.location +
                               " is readable by group or others (chmod 600)");
  }
  if (static_cast<size_t>(st.st_size) > kMaxSecretFileBytes) {
    ::close(fd);
    return failed_precondition("credential file " + source.location + " is larger than 64 KiB");
  }
  std::string buf;
  buf.resize(kMaxSecretFileBytes + 1);
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got > kMaxSecretFileBytes) {
    wipe_string(buf);
    return failed_precondition("credential file " + source.location + " is larger than 64 KiB");
  }
  size_t len = got;
  if (len > 0 && buf[len - 1] == '\n') --len;
  if (len > 0 && buf[len - 1] == '\r') --len;
  Secret s = Secret::copy_of(std::string_view(buf.data(), len));
  buf.resize(buf.capacity());
  wipe_string(buf);
  if (s.empty()) {
    return failed_precondition("credential file " + source.location + " is empty");
  }
  return s;
}

}  // namespace pgwarden::vault
