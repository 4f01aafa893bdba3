#include "dataplane/packet/audit_event.h"

#include <string_view>

namespace pgwarden::packet {

nlohmann::json AuditEvent::to_json() const {
  std::string client_addr = client.to_string() + ":" + std::to_string(client_port);
  std::string_view rule;
  for (std::string_view prefix : {"deny:", "approve_required:"}) {
    if (std::string_view(reason).starts_with(prefix)) {
      rule = std::string_view(reason).substr(prefix.size());
    }
  }
  return nlohmann::json{{"type", "event"},
                        {"kind", "wire_deny"},
                        {"session_id", "wire:" + client_addr},
                        {"verdict", "deny"},
                        {"rule", std::string(rule)},
                        {"message", reason},
                        {"reason", reason},
                        {"unix_ms", unix_ms},
                        {"lcore", lcore_id},
                        {"client", client_addr},
                        {"server", server.to_string() + ":" + std::to_string(server_port)}};
}

}  // namespace pgwarden::packet
