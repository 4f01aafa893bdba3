// The open-file limit of a gateway process. Every agent connection is a socket in
// pgwarden-dp (and an upstream socket too in session pooling mode), and every live recorded
// session an open file in pgwarden-cp: 5,000 agents need well over the usual soft limit of
// 1024 (docs/operations.md "Sizing").
#pragma once

#include <cstdint>

namespace pgwarden {

// Raises the soft RLIMIT_NOFILE to the hard limit (which only the service manager or root
// raises: systemd's LimitNOFILE=). Returns the soft limit in force afterwards (0 when it
// cannot be read).
uint64_t raise_fd_limit();

}  // namespace pgwarden
