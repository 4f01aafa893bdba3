// Session tickets: what cp hands the dp at login so that, after a cp restart, the dp can
// re-register a live session (docs/protocol.md, `reregister`) without the client's token.
//
// A ticket is "v1.<payload>.<mac>": payload = base64url of a JSON object with the session id,
// identity (subject, issuer, groups, provider, key id), policy name, target, the token's exp
// and the issue time; mac = base64url(HMAC-SHA256(key, "v1." + payload)). The key (32 random
// bytes) lives in <state_dir>/ticket.key (mode 0600), created at the first start and kept
// across restarts. A ticket proves cp admitted the session; it does not prove the grant
// still holds: cp re-checks that against the current config and revocations.
//
// Thread-safety: a TicketKey is immutable after open(); issue/verify may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgwarden::server {

struct TicketClaims {
  std::string session_id;
  std::string subject;
  std::string issuer;
  std::vector<std::string> groups;
  std::string provider;  // identity provider name or "service-key:<id>"
  std::string key_id;    // JWKS kid or service key id
  std::string policy;
  std::string target;
  std::string client_addr;
  bool tls = false;
  int64_t token_exp_ms = 0;  // 0: the credential does not expire (service key)
  int64_t issued_ms = 0;
};

class TicketKey {
 public:
  // Reads <state_dir>/ticket.key, creating it (0600, O_EXCL) when absent. An existing file
  // that is not exactly 32 bytes or is readable by group/others is an error.
  static Result<std::unique_ptr<TicketKey>> open(const std::string& state_dir);
  // A key given directly (tests).
  static std::unique_ptr<TicketKey> from_bytes(std::string key);

  std::string issue(const TicketClaims& claims) const;
  // invalid_argument ("malformed ticket") or permission_denied ("ticket signature does not
  // verify") when the ticket was not issued with this key or was altered.
  Result<TicketClaims> verify(std::string_view ticket) const;

 private:
  explicit TicketKey(std::string key) : key_(std::move(key)) {}
  std::string mac(std::string_view data) const;
  std::string key_;
};

}  // namespace pgwarden::server
