// The listen address of a /metrics endpoint: "ADDRESS:PORT" with a numeric IPv4 address or a
// bracketed IPv6 address ([::1]:9631) and a port 1..65535. Host names are refused: the
// endpoint must bind exactly where the operator said.
#pragma once

#include <string>

namespace pgwarden::metrics {

// "" when `listen` is valid, else what is wrong with it (for an error message).
std::string check_listen_address(const std::string& listen);

}  // namespace pgwarden::metrics
