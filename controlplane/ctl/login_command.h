// `pgwardenctl login --server URL [--cacert F] [--token - | --token-file F]`: obtains a bearer
// token for pgwarden-cp's HTTPS admin API and caches it (token_cache.h).
//   --token - / --token-file F   a token obtained elsewhere (pasted on stdin / from a file);
//   otherwise                    OAuth 2.0 device authorization (RFC 8628) against the IdP
//                                the server names at GET URL/auth/oidc/config: prints the
//                                verification URL and user code, polls the token endpoint,
//                                caches the id_token (its audience is the client id the
//                                server accepts; the access_token when there is none).
// The token is checked with GET URL/auth/session before it is cached; prints who it
// authenticates and their role. Exit codes as admin_client.h (3: token refused).
#pragma once

#include <istream>
#include <ostream>
#include <span>
#include <string_view>

namespace pgwarden::ctl {

int run_login_command(std::span<const std::string_view> args, std::istream& in, std::ostream& out,
                      std::ostream& err);

}  // namespace pgwarden::ctl
