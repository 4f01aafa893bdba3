#include "common/metrics/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>

namespace pgwarden::metrics {

std::string check_listen_address(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return "must be \"ADDRESS:PORT\"";
  std::string host = listen.substr(0, colon);
  std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::atoi(port.c_str()) < 1 ||
      std::atoi(port.c_str()) > 65535) {
    return "port must be a number 1..65535";
  }
  in_addr v4;
  in6_addr v6;
  bool ok = host.front() == '['
                ? host.back() == ']' &&
                      inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &v6) == 1
                : inet_pton(AF_INET, host.c_str(), &v4) == 1;
  if (!ok) return "address must be a numeric IPv4 address or a bracketed IPv6 address ([::1]:9631)";
  return "";
}

}  // namespace pgwarden::metrics
