#include "controlplane/web/https_server.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/ascii.h"
#include "common/status_names.h"
#include "controlplane/identity/base64url.h"
#include "controlplane/vault/credential_hash.h"

namespace pgwarden::web {

namespace {

using json = nlohmann::json;

int url_hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded value decoding ('+' is a space).
std::string url_decode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%' && i + 2 < in.size() && url_hex(in[i + 1]) >= 0 &&
               url_hex(in[i + 2]) >= 0) {
      out += static_cast<char>(url_hex(in[i + 1]) * 16 + url_hex(in[i + 2]));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

bool prefix_matches(std::string_view prefix, std::string_view path) {
  if (prefix == "/") return true;
  if (path == prefix) return true;
  return path.size() > prefix.size() && path.starts_with(prefix) && path[prefix.size()] == '/';
}

// The origin ("https://host[:port]") of public_url.
std::string origin_of(std::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  size_t slash = url.find('/', scheme + 3);
  return std::string(url.substr(0, slash));
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

const vault::CredentialHash& dummy_hash() {
  static const vault::CredentialHash h = *vault::parse_credential_hash(
      vault::hash_credential("pgwarden-http-dummy", vault::kDefaultCredentialIterations));
  return h;
}

std::string content_type_for(const std::filesystem::path& p) {
  std::string ext = ascii_lower(p.extension().string());
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

// TLS 1.2 or newer with our certificate chain and key; false (server not valid) when they do
// not load or do not match.
bool setup_tls(SSL_CTX& ctx, const std::string& cert, const std::string& key) {
  if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_use_certificate_chain_file(&ctx, cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(&ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(&ctx) != 1) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    spdlog::error("https: cannot load tls_cert_file {} / tls_key_file {}: {}", cert, key, buf);
    ERR_clear_error();
    return false;
  }
  SSL_CTX_set_options(
      &ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
  return true;
}

// GET /approvals/ID -> 303 /console/#approvals/ID; 404 for anything but an approval id.
Response approval_page_redirect(const Request& r) {
  constexpr std::string_view kPrefix = "/approvals/";
  std::string_view id = std::string_view(r.path).substr(std::min(r.path.size(), kPrefix.size()));
  auto id_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
  };
  if (!r.path.starts_with(kPrefix) || id.empty() || id.size() > 64 ||
      !std::all_of(id.begin(), id.end(), id_char)) {
    return Response::error(404, "not_found", "no such approval request");
  }
  return Response::redirect("/console/#approvals/" + std::string(id));
}

}  // namespace

std::string Request::header(std::string_view lower_name) const {
  auto it = headers.find(std::string(lower_name));
  return it == headers.end() ? std::string() : it->second;
}

std::string Request::cookie(std::string_view name) const {
  std::string all = header("cookie");
  std::string_view rest = all;
  while (!rest.empty()) {
    size_t semi = rest.find(';');
    std::string_view item = rest.substr(0, semi);
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    size_t eq = item.find('=');
    if (eq != std::string_view::npos && item.substr(0, eq) == name) {
      return std::string(item.substr(eq + 1));
    }
  }
  return std::string();
}

std::string Request::query_param(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view item = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    size_t eq = item.find('=');
    std::string key = url_decode(item.substr(0, eq));
    if (key == name) {
      return eq == std::string_view::npos ? std::string() : url_decode(item.substr(eq + 1));
    }
  }
  return std::string();
}

Response Response::json(int status, const nlohmann::json& body) {
  Response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

Response Response::error(int status, std::string_view code, std::string_view message) {
  return json(status,
              nlohmann::json{{"ok", false}, {"error", {{"code", code}, {"message", message}}}});
}

Response Response::from_status(const Status& s) {
  int status = 500;
  switch (s.code()) {
    case StatusCode::kOk:
      status = 200;
      break;
    case StatusCode::kInvalidArgument:
      status = 400;
      break;
    case StatusCode::kUnauthenticated:
      status = 401;
      break;
    case StatusCode::kPermissionDenied:
      status = 403;
      break;
    case StatusCode::kNotFound:
      status = 404;
      break;
    case StatusCode::kFailedPrecondition:
      status = 409;
      break;
    case StatusCode::kResourceExhausted:
      status = 429;
      break;
    case StatusCode::kUnavailable:
      status = 503;
      break;
    case StatusCode::kDeadlineExceeded:
      status = 504;
      break;
    case StatusCode::kInternal:
      status = 500;
      break;
  }
  nlohmann::json e{{"code", status_code_snake_name(s.code())}, {"message", s.message()}};
  if (!s.sqlstate().empty()) e["sqlstate"] = s.sqlstate();
  return json(status, nlohmann::json{{"ok", false}, {"error", std::move(e)}});
}

Response Response::redirect(std::string location) {
  Response r;
  r.status = 303;
  r.content_type = "text/plain; charset=utf-8";
  r.body = "see " + location + "\n";
  r.headers.emplace_back("Location", std::move(location));
  return r;
}

HttpsServer::HttpsServer(config::HttpSettings settings,
                         std::vector<config::AdminPrincipal> break_glass, audit::AuditLog* audit,
                         PersonTokenValidator validate_bearer)
    : settings_(std::move(settings)),
      break_glass_(std::move(break_glass)),
      audit_(audit),
      validate_bearer_(std::move(validate_bearer)),
      sessions_(std::chrono::seconds(settings_.session_ttl_s)),
      login_limiter_(settings_.login_rate_per_minute, settings_.login_rate_burst) {
  // Built-in routes: who am I (the console's first call), logout, break-glass login.
  add_route(Route{
      .method = "GET",
      .prefix = "/auth/session",
      .access = Access::kPerson,
      .min_role = Role::kViewer,
      .handler = [this](const Request& r) {
        const Person& p = *r.person;
        nlohmann::json j{
            {"name", p.name}, {"groups", p.groups}, {"role", role_name(p.role)}, {"via", p.via}};
        if (auto s = sessions_.find(r.cookie(kSessionCookie))) {
          j["csrf_token"] = s->csrf_token;
          j["expires_ms"] = s->expires_ms;
        }
        return Response::json(200, nlohmann::json{{"ok", true}, {"result", j}});
      }});
  add_route(Route{.method = "POST",
                  .prefix = "/auth/logout",
                  .access = Access::kPerson,
                  .min_role = Role::kViewer,
                  .handler = [this](const Request& r) {
                    bool removed = sessions_.remove(r.cookie(kSessionCookie));
                    audit_->record(audit::AuditRecord{.event = "http_logout",
                                                      .identity = r.person->name,
                                                      .client_addr = r.remote_ip,
                                                      .decision = removed ? "ok" : "no_session",
                                                      .extra = {{"via", r.person->via}}});
                    Response resp = Response::json(200, nlohmann::json{{"ok", true}});
                    resp.headers.emplace_back(
                        "Set-Cookie", std::string(kSessionCookie) +
                                          "=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax");
                    resp.headers.emplace_back("Set-Cookie", std::string(kCsrfCookie) +
                                                                "=; Path=/; Max-Age=0; Secure; "
                                                                "SameSite=Lax");
                    return resp;
                  }});
  if (!settings_.console_dir.empty()) {
    // The link a held client's NOTICE and the chat message carry
    // (approvals::approval_console_url): the console's page of that request. Public like the
    // console's files: the page asks for a login and then loads the request with its session.
    add_route(Route{.method = "GET",
                    .prefix = "/approvals",
                    .access = Access::kPublic,
                    .handler = approval_page_redirect});
  }
  if (settings_.break_glass) {
    add_route(Route{
        .method = "POST",
        .prefix = "/auth/break-glass/login",
        .access = Access::kPublic,
        .login = true,
        .handler = [this](const Request& r) {
          nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
          std::string name, credential;
          if (body.is_object()) {
            name = body.value("name", "");
            credential = body.value("credential", "");
          }
          const config::AdminPrincipal* match = nullptr;
          for (const config::AdminPrincipal& a : break_glass_) {
            if (a.name == name) match = &a;
          }
          bool ok = vault::verify_credential(match ? match->credential : dummy_hash(), credential);
          if (!match || !ok || credential.empty()) {
            audit_->record(audit::AuditRecord{.event = "http_login",
                                              .identity = name.substr(0, 128),
                                              .client_addr = r.remote_ip,
                                              .decision = "rejected",
                                              .reason = "bad break-glass credential",
                                              .extra = {{"via", "break_glass"}}});
            return Response::error(401, "unauthenticated", "break-glass login failed");
          }
          std::string return_to = body.value("return_to", "/console/");
          return start_browser_session(match->name, match->groups, "break_glass", r, return_to);
        }});
  }
}

HttpsServer::~HttpsServer() { stop(); }

void HttpsServer::add_route(Route route) { routes_.push_back(std::move(route)); }

int HttpsServer::port() const { return port_; }

Status HttpsServer::start() {
  if (settings_.tls_cert_file.empty() || settings_.tls_key_file.empty()) {
    return invalid_argument(
        "$.control_plane.http needs tls_cert_file and tls_key_file: the admin API is served "
        "over HTTPS only");
  }
  size_t colon = settings_.listen.rfind(':');
  if (colon == std::string::npos) return invalid_argument("bad listen address " + settings_.listen);
  std::string host = settings_.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = std::atoi(settings_.listen.c_str() + colon + 1);
  std::string cert = settings_.tls_cert_file, key = settings_.tls_key_file;
  server_ = std::make_unique<httplib::SSLServer>(
      [cert, key](SSL_CTX& ctx) { return setup_tls(ctx, cert, key); });
  if (!server_->is_valid()) {
    server_.reset();
    return invalid_argument("cannot load $.control_plane.http tls_cert_file " + cert +
                            " / tls_key_file " + key + " (see the log)");
  }
  int threads = settings_.threads;
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_payload_max_length(kMaxRequestBodyBytes);
  server_->set_read_timeout(30, 0);
  server_->set_write_timeout(30, 0);
  server_->set_keep_alive_timeout(30);
  auto handler = [this](const httplib::Request& in, httplib::Response& out) { dispatch(in, out); };
  server_->Get(".*", handler);
  // POST bodies come through a content reader: cpp-httplib's plain handlers answer 413 to an
  // application/x-www-form-urlencoded body over 8 KiB (CPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_
  // LENGTH, compiled into Debian's library), and a browser's SAML ACS POST is larger. The
  // payload cap (kMaxRequestBodyBytes, set_payload_max_length) still applies.
  server_->Post(".*", [this](const httplib::Request& in, httplib::Response& out,
                             const httplib::ContentReader& reader) {
    httplib::Request req = in;
    bool complete = reader([&req](const char* data, size_t n) {
      req.body.append(data, n);
      return req.body.size() <= kMaxRequestBodyBytes;
    });
    if (!complete) {
      out.status = 413;
      return;
    }
    dispatch(req, out);
  });
  server_->Put(".*", handler);
  server_->Patch(".*", handler);
  server_->Delete(".*", handler);
  server_->Options(".*", handler);
  bool bound = false;
  if (port == 0) {
    port_ = server_->bind_to_any_port(host);
    bound = port_ > 0;
  } else {
    bound = server_->bind_to_port(host, port);
    port_ = port;
  }
  if (!bound) {
    server_.reset();
    return unavailable("cannot listen for https on " + settings_.listen + ": " +
                       std::strerror(errno));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return Status::ok();
}

void HttpsServer::stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

void HttpsServer::dispatch(const httplib::Request& in, httplib::Response& out) {
  Request req;
  req.method = in.method;
  req.path = in.path;
  size_t q = in.target.find('?');
  req.query = q == std::string::npos ? std::string() : in.target.substr(q + 1);
  req.remote_ip = in.remote_addr;
  for (const auto& [name, value] : in.headers) req.headers.emplace(ascii_lower(name), value);
  req.body = in.body;
  Response resp = serve(req);
  out.status = resp.status;
  out.set_header("Cache-Control", "no-store");
  out.set_header("X-Content-Type-Options", "nosniff");
  out.set_header("X-Frame-Options", "DENY");
  out.set_header("Referrer-Policy", "no-referrer");
  out.set_header("Strict-Transport-Security", "max-age=31536000");
  for (const auto& [name, value] : resp.headers) {
    // Values are built by handlers; CR/LF would split the response.
    if (value.find_first_of("\r\n") != std::string::npos) continue;
    out.headers.emplace(name, value);
  }
  out.set_content(std::move(resp.body), resp.content_type.c_str());
}

std::optional<Person> HttpsServer::authenticate(const Request& request, std::string* why,
                                                bool* via_cookie, std::string* csrf_token) {
  *via_cookie = false;
  std::string authz = request.header("authorization");
  if (authz.size() > 7 && ascii_lower(authz.substr(0, 7)) == "bearer ") {
    if (!validate_bearer_) {
      *why = "bearer tokens are not accepted (no $.control_plane.http.oidc)";
      return std::nullopt;
    }
    identity::IdentityResult r = validate_bearer_(std::string_view(authz).substr(7));
    if (!r.is_ok()) {
      *why = std::string(identity::reject_reason_name(r.rejection().reason)) + ": " +
             r.rejection().message;
      return std::nullopt;
    }
    const identity::Identity& id = r.identity();
    return Person{.name = id.subject,
                  .groups = id.groups,
                  .role = role_for_groups(settings_.role_groups, id.groups),
                  .via = "bearer"};
  }
  if (authz.size() > 6 && ascii_lower(authz.substr(0, 6)) == "basic ") {
    if (!settings_.break_glass) {
      *why = "break-glass logins are off ($.control_plane.http.break_glass)";
      return std::nullopt;
    }
    std::string b64 = authz.substr(6);
    std::string decoded;
    {
      // Standard base64 -> base64url for the shared decoder.
      std::string u = b64;
      for (char& c : u) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
      }
      while (!u.empty() && u.back() == '=') u.pop_back();
      auto d = identity::base64url_decode(u);
      if (d) decoded = *d;
    }
    size_t colon = decoded.find(':');
    std::string name = colon == std::string::npos ? "" : decoded.substr(0, colon);
    std::string credential = colon == std::string::npos ? "" : decoded.substr(colon + 1);
    const config::AdminPrincipal* match = nullptr;
    for (const config::AdminPrincipal& a : break_glass_) {
      if (a.name == name) match = &a;
    }
    bool ok = vault::verify_credential(match ? match->credential : dummy_hash(), credential);
    if (!match || !ok || credential.empty()) {
      *why = "bad break-glass credential";
      return std::nullopt;
    }
    return Person{.name = match->name,
                  .groups = match->groups,
                  .role = role_for_groups(settings_.role_groups, match->groups),
                  .via = "break_glass"};
  }
  std::string cookie = request.cookie(kSessionCookie);
  if (!cookie.empty()) {
    auto s = sessions_.find(cookie);
    if (!s) {
      *why = "no such session (expired or logged out)";
      return std::nullopt;
    }
    *via_cookie = true;
    *csrf_token = s->csrf_token;
    return s->person;
  }
  *why = "no credentials (bearer token or session cookie)";
  return std::nullopt;
}

Response HttpsServer::serve(Request& req) {
  if (req.method == "GET" && req.path == "/" && !settings_.console_dir.empty()) {
    return Response::redirect("/console/");
  }
  if ((req.method == "GET" || req.method == "HEAD") &&
      (req.path == "/console" || req.path.starts_with("/console/")) &&
      !settings_.console_dir.empty()) {
    // Static files are public: the console's data comes from /api/v1 with its session.
    bool routed = false;
    for (const Route& r : routes_) {
      if (prefix_matches(r.prefix, req.path) && r.prefix.starts_with("/console/")) routed = true;
    }
    if (!routed) return serve_static(req);
  }
  const Route* best = nullptr;
  bool path_known = false;
  for (const Route& r : routes_) {
    if (!prefix_matches(r.prefix, req.path)) continue;
    path_known = true;
    if (r.method != "*" && r.method != req.method && !(req.method == "HEAD" && r.method == "GET")) {
      continue;
    }
    if (best == nullptr || r.prefix.size() > best->prefix.size()) best = &r;
  }
  if (best == nullptr) {
    return path_known ? Response::error(405, "invalid_argument", "method not allowed")
                      : Response::error(404, "not_found", "no such path " + req.path);
  }
  if (best->login) {
    int64_t wait = login_limiter_.take(req.remote_ip);
    if (wait > 0) {
      audit_->record(audit::AuditRecord{.event = "http_login",
                                        .client_addr = req.remote_ip,
                                        .decision = "rate_limited",
                                        .reason = "too many login attempts",
                                        .extra = {{"path", req.path}}});
      Response r = Response::error(
          429, "resource_exhausted",
          "too many login attempts from this address; retry in " + std::to_string(wait) + " s");
      r.headers.emplace_back("Retry-After", std::to_string(wait));
      return r;
    }
  }
  std::string why, csrf;
  bool via_cookie = false;
  if (best->access == Access::kPublic) {
    // A person may still be known (e.g. logout-and-login pages); never required.
    if (!req.header("authorization").empty() || !req.cookie(kSessionCookie).empty()) {
      req.person = authenticate(req, &why, &via_cookie, &csrf);
    }
    return best->handler(req);
  }
  req.person = authenticate(req, &why, &via_cookie, &csrf);
  if (!req.person) {
    audit_->record(audit::AuditRecord{.event = "http_auth",
                                      .client_addr = req.remote_ip,
                                      .decision = "rejected",
                                      .reason = why,
                                      .extra = {{"path", req.path}, {"method", req.method}}});
    Response r = Response::error(401, "unauthenticated", "authentication required: " + why);
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"pgwarden\"");
    return r;
  }
  auto deny = [&](const std::string& reason) { return forbid(req, reason); };
  if (req.person->role == Role::kNone) {
    return deny("no role: none of your groups is in $.control_plane.http.role_groups");
  }
  if (via_cookie && req.method != "GET" && req.method != "HEAD") {
    std::string origin = req.header("origin");
    if (!origin.empty() && origin != origin_of(settings_.public_url)) {
      return deny("cross-origin request (Origin " + origin.substr(0, 200) + ")");
    }
    std::string presented = req.header("x-csrf-token");
    if (presented.empty() || !constant_time_equal(presented, csrf)) {
      return deny("missing or wrong CSRF token (X-CSRF-Token)");
    }
  }
  if (req.person->role < best->min_role) {
    return deny("role " + std::string(role_name(req.person->role)) + " may not do this (needs " +
                std::string(role_name(best->min_role)) + ")");
  }
  return best->handler(req);
}

Response HttpsServer::forbid(const Request& req, const std::string& reason) {
  audit_->record(
      audit::AuditRecord{.event = "http_denied",
                         .identity = req.person ? req.person->name : std::string(),
                         .groups = req.person ? req.person->groups : std::vector<std::string>(),
                         .client_addr = req.remote_ip,
                         .decision = "denied",
                         .reason = reason,
                         .extra = {{"path", req.path},
                                   {"method", req.method},
                                   {"role", req.person ? role_name(req.person->role) : "none"},
                                   {"via", req.person ? req.person->via : ""}}});
  return Response::error(403, "permission_denied", reason);
}

Response HttpsServer::serve_static(const Request& req) const {
  namespace fs = std::filesystem;
  std::string rel = req.path == "/console" ? "" : req.path.substr(std::strlen("/console/"));
  if (rel.empty() || rel.back() == '/') rel += "index.html";
  // No "..", no hidden files, no absolute paths, no backslashes or NULs.
  for (std::string_view part : {std::string_view(rel)}) {
    if (part.find("..") != std::string_view::npos || part.find('\\') != std::string_view::npos ||
        part.find('\0') != std::string_view::npos || part.starts_with("/") ||
        part.find("/.") != std::string_view::npos || part.starts_with(".")) {
      return Response::error(404, "not_found", "no such file");
    }
  }
  fs::path path = fs::path(settings_.console_dir) / rel;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return Response::error(404, "not_found", "no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Response::error(404, "not_found", "no such file");
  std::stringstream ss;
  ss << in.rdbuf();
  Response r;
  r.status = 200;
  r.content_type = content_type_for(path);
  r.body = ss.str();
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'self'; frame-ancestors 'none'; base-uri 'none'");
  return r;
}

Response HttpsServer::start_browser_session(const std::string& name,
                                            const std::vector<std::string>& groups,
                                            std::string_view via, const Request& request,
                                            std::string_view return_to) {
  Role role = role_for_groups(settings_.role_groups, groups);
  if (role == Role::kNone) {
    audit_->record(audit::AuditRecord{
        .event = "http_login",
        .identity = name,
        .groups = groups,
        .client_addr = request.remote_ip,
        .decision = "rejected",
        .reason = "no role: none of the groups is in $.control_plane.http.role_groups",
        .extra = {{"via", via}}});
    return Response::error(
        403, "permission_denied",
        "you are authenticated as " + name + " but none of your groups has a role on this gateway");
  }
  NewBrowserSession s = sessions_.create(
      Person{.name = name, .groups = groups, .role = role, .via = std::string(via)},
      request.remote_ip);
  audit_->record(audit::AuditRecord{.event = "http_login",
                                    .identity = name,
                                    .groups = groups,
                                    .client_addr = request.remote_ip,
                                    .decision = "accepted",
                                    .extra = {{"via", via}, {"role", role_name(role)}}});
  std::string target(return_to);
  // Only a local path: an open redirect would hand the session to another site's page.
  if (target.empty() || target[0] != '/' || target.starts_with("//") ||
      target.find_first_of("\\\r\n") != std::string::npos) {
    target = "/console/";
  }
  Response r = Response::redirect(target);
  std::string max_age = std::to_string(settings_.session_ttl_s);
  r.headers.emplace_back("Set-Cookie", std::string(kSessionCookie) + "=" + s.cookie_value +
                                           "; Path=/; Max-Age=" + max_age +
                                           "; HttpOnly; Secure; SameSite=Lax");
  r.headers.emplace_back("Set-Cookie", std::string(kCsrfCookie) + "=" + s.session.csrf_token +
                                           "; Path=/; Max-Age=" + max_age +
                                           "; Secure; SameSite=Lax");
  return r;
}

}  // namespace pgwarden::web
