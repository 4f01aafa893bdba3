// HttpsServer: pgwarden-cp's HTTPS listener ($.control_plane.http) for the admin API
// (/api/v1/...), people's logins (/auth/...) and the web console's static files (/console/),
// on Debian's cpp-httplib (libcpp-httplib-dev) with TLS via OpenSSL 3 (TLS 1.2+; the
// certificate and key are required: the server refuses to start without them). Debian's
// libcivetweb was the first choice but its TLS is unusable with OpenSSL 3: it dlopens
// libssl.so and calls SSL_get_peer_certificate, a macro since OpenSSL 3.0, through a null
// pointer on every TLS connection.
//
// Modules register routes before start(). A request is matched to the route with the
// longest prefix whose method matches; then, in this order:
//   1. login routes (Route::login) are rate limited per source IP
//      ($.control_plane.http.login_rate_per_minute): over the limit -> 429 + Retry-After;
//   2. person routes (Access::kPerson) need an authenticated person: a bearer token
//      ("Authorization: Bearer <JWT>", validated against $.control_plane.http.oidc with the
//      JWKS machinery of controlplane/identity), the cookie session ("pgw_session"), or, when
//      $.control_plane.http.break_glass is true, HTTP Basic with an admin_principal.
//      None or invalid -> 401 (audited as http_auth rejected). A role below Route::min_role
//      -> 403 (audited);
//   3. cookie-authenticated requests with a method other than GET/HEAD must carry the
//      session's CSRF token in "X-CSRF-Token" and, if the browser sent an Origin header, an
//      Origin equal to public_url's origin -> else 403 (audited). Bearer and Basic calls need
//      no CSRF token (a browser never adds them on its own);
//   4. the handler runs on one of the server's worker threads.
// Every response carries Cache-Control: no-store, X-Content-Type-Options: nosniff,
// X-Frame-Options: DENY and Strict-Transport-Security. Request bodies are capped
// (kMaxRequestBodyBytes -> 413).
//
// Thread-safety: add_route() and start() from one thread before serving; handlers and
// start_browser_session() run concurrently on worker threads; stop() joins them.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/config/config.h"
#include "controlplane/identity/identity.h"
#include "controlplane/web/browser_sessions.h"
#include "controlplane/web/rate_limiter.h"
#include "controlplane/web/roles.h"

namespace httplib {
class SSLServer;
struct Request;
struct Response;
}  // namespace httplib

namespace pgwarden::web {

inline constexpr size_t kMaxRequestBodyBytes = 1024 * 1024;
inline constexpr std::string_view kSessionCookie = "pgw_session";
inline constexpr std::string_view kCsrfCookie = "pgw_csrf";
inline constexpr std::string_view kCsrfHeader = "X-CSRF-Token";

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // decoded path, no query ("/api/v1/approvals/a1")
  std::string query;   // raw query string without '?'
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string remote_ip;
  // Set for Access::kPerson routes (authenticated, role checked); nullopt on public routes
  // unless the caller happened to present a valid session/token.
  std::optional<Person> person;

  std::string header(std::string_view lower_name) const;
  std::string cookie(std::string_view name) const;
  // URL-decoded query parameter; "" when absent.
  std::string query_param(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers (Set-Cookie, ...)

  static Response json(int status, const nlohmann::json& body);
  // {"ok": false, "error": {"code": code, "message": message}}
  static Response error(int status, std::string_view code, std::string_view message);
  // The admin error envelope for a Status: HTTP status from the code (invalid_argument 400,
  // unauthenticated 401, permission_denied 403, not_found 404, failed_precondition 409,
  // resource_exhausted 429, unavailable 503, deadline_exceeded 504, internal 500).
  static Response from_status(const Status& status);
  static Response redirect(std::string location);  // 303 See Other
};

using Handler = std::function<Response(const Request&)>;

enum class Access {
  kPublic,  // anyone (login endpoints, signed webhook callbacks: the handler authenticates)
  kPerson,  // an authenticated person with at least min_role
};

struct Route {
  std::string method;  // "GET", "POST", ...; "*" = any
  // Matches path == prefix or a path starting with prefix + "/" (prefix "/" matches all).
  std::string prefix;
  Access access = Access::kPerson;
  Role min_role = Role::kViewer;
  bool login = false;  // rate limited per source IP (login endpoints)
  Handler handler;
};

// Validates a person's bearer token (JWT) -> Identity (groups from the configured claim).
using PersonTokenValidator = std::function<identity::IdentityResult(std::string_view token)>;

class HttpsServer {
 public:
  // `audit` must outlive the server. `validate_bearer` may be empty (bearer tokens are then
  // refused with 401).
  HttpsServer(config::HttpSettings settings, std::vector<config::AdminPrincipal> break_glass,
              audit::AuditLog* audit, PersonTokenValidator validate_bearer);
  ~HttpsServer();
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  // REQUIRES: before start().
  void add_route(Route route);

  // Binds settings.listen with TLS. invalid_argument without a certificate/key or when they
  // do not load (or do not match); unavailable when the address cannot be bound.
  Status start();
  void stop();  // idempotent
  int port() const;  // the bound port (after start)

  // Logs a person in after an SSO login (OIDC callback, SAML ACS): maps `groups` to a role
  // (no role -> 403 page, audited as http_login rejected), creates a server-side session and
  // answers 303 to `return_to` (a path on this server starting with "/"; anything else is
  // replaced by "/console/") with Set-Cookie pgw_session (HttpOnly; Secure; SameSite=Lax;
  // Path=/; Max-Age=session_ttl_s) and pgw_csrf (the CSRF token, readable by the page's JS;
  // Secure; SameSite=Lax; Path=/). Audited as http_login accepted with name, groups, role,
  // `via` ("oidc", "saml") and the source IP.
  Response start_browser_session(const std::string& name, const std::vector<std::string>& groups,
                                 std::string_view via, const Request& request,
                                 std::string_view return_to);

  // 403 permission_denied for an authenticated person, audited as http_denied (name, groups,
  // role, path, source IP, `reason`). For handlers that check more than the route's role.
  Response forbid(const Request& request, const std::string& reason);

  const config::HttpSettings& settings() const { return settings_; }
  BrowserSessions& sessions() { return sessions_; }
  audit::AuditLog& audit() { return *audit_; }

 private:
  void dispatch(const httplib::Request& in, httplib::Response& out);
  std::optional<Person> authenticate(const Request& request, std::string* why,
                                     bool* via_cookie, std::string* csrf_token);
  Response serve(Request& request);
  Response serve_static(const Request& request) const;

  const config::HttpSettings settings_;
  const std::vector<config::AdminPrincipal> break_glass_;
  audit::AuditLog* audit_;
  PersonTokenValidator validate_bearer_;
  std::vector<Route> routes_;
  BrowserSessions sessions_;
  RateLimiter login_limiter_;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;  // runs the listener's accept loop
  int port_ = 0;
};

}  // namespace pgwarden::web
