#include "common/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pgwarden {

Status replace_file_atomically(const std::string& path, std::string_view content, mode_t mode) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return unavailable("cannot write " + tmp + ": " + std::strerror(errno));
  std::string_view rest = content;
  const char* step = nullptr;
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      step = "write";
      break;
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  if (step == nullptr && ::fsync(fd) != 0) step = "fsync";
  int saved = errno;
  ::close(fd);
  if (step == nullptr && ::rename(tmp.c_str(), path.c_str()) != 0) {
    step = "rename";
    saved = errno;
  }
  if (step != nullptr) {
    ::unlink(tmp.c_str());
    return unavailable("cannot replace " + path + " (" + step + "): " + std::strerror(saved));
  }
  // The rename is durable once the directory is synced.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::ok();
}

}  // namespace pgwarden
