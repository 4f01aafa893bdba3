// The bearer tokens `pgwardenctl login` obtained, per server URL, in
// $XDG_CONFIG_HOME/pgwarden/tokens.json (default ~/.config/pgwarden/tokens.json): the
// directory is created 0700, the file written 0600 (atomically). A file readable by group or
// others is refused (the token is a credential).
#pragma once

#include <string>

#include "common/status.h"

namespace pgwarden::ctl {

// The cache file's path ("" when neither XDG_CONFIG_HOME nor HOME is set).
std::string token_cache_path();

// The token cached for `server` ("" when none). Errors: a cache file with loose permissions
// or that cannot be parsed.
Result<std::string> load_cached_token(const std::string& server);

// Stores `token` for `server` (replacing an older one), with its expiry when known (unix s,
// 0 = unknown).
Status store_cached_token(const std::string& server, const std::string& token,
                          int64_t expires_at);

}  // namespace pgwarden::ctl
