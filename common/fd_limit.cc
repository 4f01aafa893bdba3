#include "common/fd_limit.h"

#include <sys/resource.h>

namespace pgwarden {

uint64_t raise_fd_limit() {
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) != 0) return 0;
  if (nofile.rlim_cur < nofile.rlim_max) {
    rlimit raised = nofile;
    raised.rlim_cur = nofile.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) nofile = raised;
  }
  return nofile.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(nofile.rlim_cur);
}

}  // namespace pgwarden
