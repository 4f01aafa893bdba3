// BrowserSessions: the server-side table of logged-in browsers (cookie sessions of the web
// console). A session is created only after a person was authenticated (OIDC code flow,
// SAML ACS, break-glass) and holds who they are, their role, a CSRF token and an absolute
// expiry. The cookie value is 256 random bits (base64url); the table is keyed by its
// SHA-256, so the table never holds a usable cookie. Expired sessions are dropped on lookup
// and by sweep; the table is capped (the oldest session is evicted when it is full).
//
// Thread-safety: every method may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "controlplane/web/roles.h"

namespace pgwarden::web {

// An authenticated person (bearer token, cookie session or break-glass account).
struct Person {
  std::string name;  // the IdP's name claim (or sub), the SAML NameID, the principal name
  std::vector<std::string> groups;
  Role role = Role::kNone;
  std::string via;  // "bearer", "oidc", "saml", "break_glass"
};

struct BrowserSession {
  Person person;
  std::string csrf_token;  // 256 random bits, base64url; sent back in X-CSRF-Token
  int64_t created_ms = 0;
  int64_t expires_ms = 0;
  std::string remote_ip;  // where it was created (audited; not enforced)
};

struct NewBrowserSession {
  std::string cookie_value;  // the secret the browser presents; never logged
  BrowserSession session;
};

// 256 random bits, base64url (43 characters): cookie values, CSRF tokens, OIDC state/nonce.
std::string random_url_token();

class BrowserSessions {
 public:
  explicit BrowserSessions(std::chrono::seconds ttl, size_t max_sessions = 10000);

  NewBrowserSession create(Person person, std::string remote_ip);
  // The live session for `cookie_value`; nullopt when unknown or expired.
  std::optional<BrowserSession> find(std::string_view cookie_value);
  // Logout. True when a session was removed.
  bool remove(std::string_view cookie_value);
  size_t size() const;

 private:
  void sweep_locked(int64_t now_ms);

  const std::chrono::seconds ttl_;
  const size_t max_sessions_;
  mutable std::mutex mu_;
  std::map<std::string, BrowserSession> by_hash_;  // SHA-256(cookie) hex -> session
};

}  // namespace pgwarden::web
