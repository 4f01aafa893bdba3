// The HTTPS admin API and people's SSO, live: a real pgwarden-cp serving
// $.control_plane.http over TLS (a throwaway CA), a real OpenID Connect IdP started by the
// test (tests/integration/oidc_test_idp.py: authorization code + PKCE, device code, JWKS,
// RS256), the real pgwardenctl, and a real psql whose held statement is approved over HTTPS.
// Checked: authentication (none / bad / expired / wrong audience / foreign key -> 401), roles
// (viewer cannot approve -> 403), CSRF for cookie sessions, the browser login (state, nonce,
// PKCE: an authorization code injected into another login fails at the IdP), logout, the
// login rate limit (429 + Retry-After), `pgwardenctl login` (pasted token, device code) and
// `pgwardenctl --server`, and that every call is in the audit log with its principal and
// source address. The rate-limit test runs last: it exhausts the loopback address's budget.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/source_root.h"
#include "controlplane/net/http_client.h"
#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/test_pki.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kClientId = "pgwarden-console";

struct Reply {
  int status = 0;
  json body;
  net::HttpResponse raw;
};

class HttpsAdminApiTest : public SharedGatewayTest<HttpsAdminApiTest> {
 public:
  static GatewayOptions gateway_options() {
    char tmpl[] = "/tmp/pgw-https-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    EXPECT_TRUE(make_test_pki(dir_)) << "openssl failed, see " << dir_ << "/openssl.log";
    https_port_ = free_tcp_port();
    std::string port_file = dir_ + "/idp.port";
    auto pid = spawn_logged(
        {"/usr/bin/python3", std::string(PGW_SOURCE_ROOT) + "/tests/integration/oidc_test_idp.py",
         port_file, dir_ + "/server.crt", dir_ + "/server.key", kClientId,
         base() + "/auth/oidc/callback"},
        dir_ + "/idp.log");
    EXPECT_TRUE(pid.is_ok());
    idp_pid_ = pid.is_ok() ? *pid : -1;
    EXPECT_TRUE(eventually([&] { return fs::exists(port_file); }, 30000)) << "IdP did not start";
    std::ifstream(port_file) >> idp_port_;
    std::string idp = idp_url();
    json http = {{"listen", "127.0.0.1:" + std::to_string(https_port_)},
                 {"tls_cert_file", dir_ + "/server.crt"},
                 {"tls_key_file", dir_ + "/server.key"},
                 {"public_url", base()},
                 {"threads", 4},
                 {"login_rate_per_minute", 1},
                 {"login_rate_burst", 40},
                 {"role_groups",
                  {{"viewer", {"staff"}},
                   {"reviewer", {"reviewers"}},
                   {"operator", {"sre"}},
                   {"admin", {"admins"}}}},
                 {"oidc",
                  {{"issuer", idp},
                   {"jwks_url", idp + "/jwks"},
                   {"ca_file", dir_ + "/ca.crt"},
                   {"client_id", kClientId},
                   {"authorization_endpoint", idp + "/authorize"},
                   {"token_endpoint", idp + "/token"},
                   {"device_authorization_endpoint", idp + "/device"}}}};
    GatewayOptions o;
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.control_plane_http_json = http.dump();
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest<HttpsAdminApiTest>::SetUpTestSuite();
    ASSERT_TRUE(eventually([] { return get("/auth/oidc/config").status == 200; })) << gw_->cp_log();
  }
  static void TearDownTestSuite() {
    SharedGatewayTest<HttpsAdminApiTest>::TearDownTestSuite();
    if (idp_pid_ > 0) {
      ::kill(idp_pid_, SIGTERM);
      ::waitpid(idp_pid_, nullptr, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

 protected:
  static std::string base() { return "https://127.0.0.1:" + std::to_string(https_port_); }
  static std::string idp_url() { return "https://127.0.0.1:" + std::to_string(idp_port_); }

  static Reply request(const std::string& url, const std::string& method,
                       std::vector<std::pair<std::string, std::string>> headers = {},
                       const std::string& body = "") {
    net::HttpRequest req;
    req.method = method;
    for (const auto& [k, v] : headers) req.headers.emplace_back(k, v);
    req.body = body;
    net::HttpClientOptions options;
    options.ca_file = dir_ + "/ca.crt";
    options.timeout = std::chrono::milliseconds(20000);
    auto r = net::http_request(url, req, options);
    Reply out;
    if (!r.is_ok()) {
      ADD_FAILURE() << method << " " << url << ": " << r.status().to_string();
      return out;
    }
    out.status = r->status;
    out.body = json::parse(r->body, nullptr, false);
    out.raw = std::move(*r);
    return out;
  }
  static Reply get(const std::string& path,
                   std::vector<std::pair<std::string, std::string>> headers = {}) {
    return request(base() + path, "GET", std::move(headers));
  }
  static Reply post(const std::string& path, const json& body,
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
    headers.emplace_back("Content-Type", "application/json");
    return request(base() + path, "POST", std::move(headers), body.dump());
  }
  static std::string mint(const std::string& sub, const std::string& groups,
                          const std::string& extra = "") {
    Reply r = request(idp_url() + "/mint?sub=" + sub + "&groups=" + groups + extra, "GET");
    return r.body.is_object() ? r.body.value("token", "") : "";
  }
  static std::pair<std::string, std::string> bearer(const std::string& token) {
    return {"Authorization", "Bearer " + token};
  }
  // The audit records matching `pred`.
  static std::vector<json> audit(const std::function<bool(const json&)>& pred) {
    std::vector<json> out;
    std::istringstream lines(gw_->audit_log());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && pred(j)) out.push_back(std::move(j));
    }
    return out;
  }
  // The value of cookie `name` in the response's Set-Cookie headers ("" when absent).
  static std::string set_cookie(const net::HttpResponse& r, const std::string& name,
                                std::string* attributes = nullptr) {
    for (const auto& [k, v] : r.headers) {
      if (k != "set-cookie" || !v.starts_with(name + "=")) continue;
      size_t semi = v.find(';');
      if (attributes) *attributes = semi == std::string::npos ? "" : v.substr(semi);
      return v.substr(name.size() + 1, semi == std::string::npos ? semi : semi - name.size() - 1);
    }
    return "";
  }
  // Runs the browser's side of an OIDC login up to the IdP's redirect back to us: returns the
  // callback path+query ("/auth/oidc/callback?code=..&state=..").
  static std::string authorize_at_idp(const std::string& login_location) {
    Reply at_idp = request(login_location, "GET");
    EXPECT_EQ(at_idp.status, 302) << at_idp.raw.body;
    std::string back = at_idp.raw.header("location");
    EXPECT_TRUE(back.starts_with(base() + "/auth/oidc/callback?")) << back;
    return back.substr(base().size());
  }
  static std::string start_login() {
    Reply login = get("/auth/oidc/login?return_to=/console/approvals");
    EXPECT_EQ(login.status, 303);
    return login.raw.header("location");
  }
  static void set_idp_user(const std::string& sub, const std::string& groups,
                           const std::string& extra = "") {
    ASSERT_EQ(
        request(idp_url() + "/control/user?sub=" + sub + "&groups=" + groups + extra, "GET").status,
        200);
  }
  static CtlResult ctl(const std::vector<std::string>& args, const std::string& input = "") {
    return run_ctl(CtlIdentity{}, args, dir_, input);
  }

  static inline std::string dir_;
  static inline int https_port_ = 0;
  static inline int idp_port_ = 0;
  static inline pid_t idp_pid_ = -1;
};

TEST_F(HttpsAdminApiTest, UnauthenticatedCallsGet401AndAreAudited) {
  Reply r = get("/api/v1/status");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body["error"]["code"], "unauthenticated");
  EXPECT_NE(r.raw.header("www-authenticate"), "");
  // Basic (break-glass) is off by default.
  Reply basic = get("/api/v1/status", {{"Authorization", "Basic YWRtaW46c2VjcmV0"}});
  EXPECT_EQ(basic.status, 401);
  EXPECT_FALSE(audit([](const json& j) {
                 return j.value("event", "") == "http_auth" &&
                        j.value("decision", "") == "rejected" &&
                        j.value("client_addr", "") == "127.0.0.1";
               }).empty());
}

TEST_F(HttpsAdminApiTest, BadExpiredWrongAudienceAndForeignKeyTokensGet401) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"garbage", "not.a.jwt"},
      {"wrong audience", mint("bob", "reviewers", "&aud=someone-else")},
      {"expired", mint("bob", "reviewers", "&exp_in=-600")},
      {"signed by another key", mint("bob", "reviewers", "&key=other")},
  };
  for (const auto& [what, token] : cases) {
    ASSERT_FALSE(token.empty()) << what;
    Reply r = get("/api/v1/status", {bearer(token)});
    EXPECT_EQ(r.status, 401) << what << ": " << r.raw.body;
  }
  EXPECT_EQ(get("/api/v1/status", {bearer(mint("bob", "reviewers"))}).status, 200);
}

TEST_F(HttpsAdminApiTest, RolesAreEnforcedAndDenialsAudited) {
  std::string viewer = mint("vera", "staff");
  std::string nobody = mint("nora", "contractors");
  Reply list = get("/api/v1/approvals", {bearer(viewer)});
  EXPECT_EQ(list.status, 200) << list.raw.body;
  EXPECT_TRUE(list.body["result"]["approvals"].is_array());
  Reply approve = post("/api/v1/approvals/AnyId01/approve", json::object(), {bearer(viewer)});
  EXPECT_EQ(approve.status, 403) << approve.raw.body;
  EXPECT_EQ(approve.body["error"]["code"], "permission_denied");
  EXPECT_EQ(post("/api/v1/commands/config.reload", json::object(), {bearer(viewer)}).status, 403);
  // Groups with no role: authenticated, but nothing is allowed.
  EXPECT_EQ(get("/api/v1/status", {bearer(nobody)}).status, 403);
  EXPECT_EQ(post("/api/v1/commands/shell.exec", json::object(), {bearer(viewer)}).status, 404);
  EXPECT_FALSE(audit([](const json& j) {
                 return j.value("event", "") == "http_denied" &&
                        j.value("identity", "") == "vera" && j.value("role", "") == "viewer";
               }).empty());
  // A call that maps to no command is audited with its principal too.
  EXPECT_FALSE(audit([](const json& j) {
                 return j.value("event", "") == "admin" && j.value("identity", "") == "vera" &&
                        j.value("decision", "") == "not_found" &&
                        j.value("path", "") == "/api/v1/commands/shell.exec" &&
                        j.value("via", "") == "https:bearer";
               }).empty());
}

TEST_F(HttpsAdminApiTest, ViewersTestStatementsAgainstRuleSetsAndSearchTheAuditLog) {
  std::string viewer = mint("vera", "staff");
  Reply t = post("/api/v1/rules/test", {{"sql", "DROP DATABASE demo"}, {"policy", "agents"}},
                 {bearer(viewer)});
  ASSERT_EQ(t.status, 200) << t.raw.body;
  EXPECT_EQ(t.body["result"]["verdict"], "deny");
  ASSERT_FALSE(t.body["result"]["matches"].empty());
  EXPECT_EQ(t.body["result"]["matches"][0]["id"], "deny.drop_database");
  Reply allow =
      post("/api/v1/rules/test", {{"sql", "select 1"}, {"sets", {"deny"}}}, {bearer(viewer)});
  EXPECT_EQ(allow.body["result"]["verdict"], "allow") << allow.raw.body;
  EXPECT_EQ(post("/api/v1/rules/test", {{"sql", "select 1"}, {"sets", {"../x"}}}, {bearer(viewer)})
                .status,
            400);
  // The newest admin record of vera is the rule test just made (the search is audited after).
  Reply a = get("/api/v1/audit?event=admin&identity=vera&limit=1", {bearer(viewer)});
  ASSERT_EQ(a.status, 200) << a.raw.body;
  ASSERT_EQ(a.body["result"]["records"].size(), 1u) << a.raw.body;
  EXPECT_EQ(a.body["result"]["records"][0]["command"], "rules.test");
  EXPECT_EQ(a.body["result"]["records"][0]["peer"], "ip=127.0.0.1");
}

TEST_F(HttpsAdminApiTest, ApprovalOverHttpsReleasesTheHeldPsqlStatementAndIsAudited) {
  ASSERT_TRUE(gw_->pg()
                  .psql("create table public.https_t (k int primary key, v text); insert into "
                        "public.https_t values (1, 'a'), (2, 'b'); alter table public.https_t "
                        "owner to app_scram")
                  .is_ok());
  const std::string sql = "update public.https_t set v = 'z'";
  PsqlProcess psql(gw_->conninfo(), sql, dir_ + "/psql.log");
  std::string reviewer = mint("bob", "reviewers");
  std::string id;
  ASSERT_TRUE(eventually([&] {
    Reply r = get("/api/v1/approvals?state=pending", {bearer(reviewer)});
    for (const json& a : r.body["result"]["approvals"]) {
      if (a.value("sql", "") == sql) id = a.value("id", "");
    }
    return !id.empty();
  })) << "no pending approval for the held statement";
  EXPECT_TRUE(psql.running());
  Reply show = get("/api/v1/approvals/" + id, {bearer(reviewer)});
  EXPECT_EQ(show.status, 200);
  EXPECT_EQ(show.body["result"]["state"], "pending");
  Reply ok =
      post("/api/v1/approvals/" + id + "/approve", {{"reason", "OPS-7"}}, {bearer(reviewer)});
  ASSERT_EQ(ok.status, 200) << ok.raw.body;
  EXPECT_EQ(ok.body["result"]["state"], "approved");
  EXPECT_EQ(psql.wait(20000), 0) << psql.output();
  auto v = gw_->pg().psql("select string_agg(v, ',' order by k) from public.https_t");
  ASSERT_TRUE(v.is_ok());
  EXPECT_EQ(v->substr(0, 3), "z,z");
  // The decision is audited with the person, how they logged in and where from.
  auto records = audit([&](const json& j) {
    return j.value("event", "") == "admin" && j.value("command", "") == "approvals.approve" &&
           j.contains("args") && j["args"].value("id", "") == id;
  });
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["identity"], "bob");
  EXPECT_EQ(records[0]["via"], "https:bearer");
  EXPECT_EQ(records[0]["peer"], "ip=127.0.0.1");
  EXPECT_EQ(records[0]["role"], "reviewer");
  EXPECT_EQ(records[0]["decision"], "ok");
  // Reads are audited too.
  EXPECT_FALSE(audit([&](const json& j) {
                 return j.value("event", "") == "admin" &&
                        j.value("command", "") == "approvals.show" &&
                        j.value("identity", "") == "bob";
               }).empty());
}

TEST_F(HttpsAdminApiTest, BrowserLoginWithPkceSetsASecureSessionAndCsrfIsEnforced) {
  set_idp_user("carol", "reviewers");
  std::string location = start_login();
  ASSERT_TRUE(location.starts_with(idp_url() + "/authorize?")) << location;
  EXPECT_NE(location.find("code_challenge_method=S256"), std::string::npos);
  EXPECT_NE(location.find("nonce="), std::string::npos);
  std::string callback = authorize_at_idp(location);
  Reply done = get(callback);
  ASSERT_EQ(done.status, 303) << done.raw.body;
  EXPECT_EQ(done.raw.header("location"), "/console/approvals");
  std::string attrs;
  std::string cookie = set_cookie(done.raw, "pgw_session", &attrs);
  ASSERT_FALSE(cookie.empty());
  EXPECT_NE(attrs.find("HttpOnly"), std::string::npos);
  EXPECT_NE(attrs.find("Secure"), std::string::npos);
  EXPECT_NE(attrs.find("SameSite=Lax"), std::string::npos);
  std::string csrf = set_cookie(done.raw, "pgw_csrf");
  ASSERT_FALSE(csrf.empty());
  // A code is good once: replaying the callback fails.
  EXPECT_EQ(get(callback).status, 400);

  std::pair<std::string, std::string> session{"Cookie", "pgw_session=" + cookie};
  Reply me = get("/auth/session", {session});
  ASSERT_EQ(me.status, 200);
  EXPECT_EQ(me.body["result"]["name"], "carol");
  EXPECT_EQ(me.body["result"]["role"], "reviewer");
  EXPECT_EQ(me.body["result"]["via"], "oidc");
  EXPECT_EQ(me.body["result"]["csrf_token"], csrf);
  EXPECT_EQ(get("/api/v1/status", {session}).status, 200);
  // State-changing calls need the CSRF token, and a foreign Origin is refused.
  json deny{{"reason", "no"}};
  EXPECT_EQ(post("/api/v1/approvals/NoSuch01/deny", deny, {session}).status, 403);
  EXPECT_EQ(
      post("/api/v1/approvals/NoSuch01/deny", deny, {session, {"X-CSRF-Token", "x" + csrf}}).status,
      403);
  EXPECT_EQ(post("/api/v1/approvals/NoSuch01/deny", deny,
                 {session, {"X-CSRF-Token", csrf}, {"Origin", "https://evil.example"}})
                .status,
            403);
  Reply passed = post("/api/v1/approvals/NoSuch01/deny", deny,
                      {session, {"X-CSRF-Token", csrf}, {"Origin", base()}});
  EXPECT_EQ(passed.status, 404) << passed.raw.body;  // past CSRF and role: no such approval
  EXPECT_FALSE(audit([](const json& j) {
                 return j.value("event", "") == "http_login" &&
                        j.value("identity", "") == "carol" &&
                        j.value("decision", "") == "accepted" && j.value("via", "") == "oidc";
               }).empty());
  // Logout ends the session server-side.
  EXPECT_EQ(post("/auth/logout", json::object(), {session, {"X-CSRF-Token", csrf}}).status, 200);
  EXPECT_EQ(get("/api/v1/status", {session}).status, 401);
}

TEST_F(HttpsAdminApiTest, AnAuthorizationCodeInjectedIntoAnotherLoginFailsThePkceCheck) {
  set_idp_user("mallory", "reviewers");
  std::string a = start_login();
  std::string b = start_login();
  std::string callback_a = authorize_at_idp(a);
  // The code of login A with the state of login B: cp sends B's verifier, the IdP refuses.
  std::string code = callback_a.substr(callback_a.find("code=") + 5);
  code = code.substr(0, code.find('&'));
  std::string state_b = b.substr(b.find("state=") + 6);
  state_b = state_b.substr(0, state_b.find('&'));
  Reply injected = get("/auth/oidc/callback?code=" + code + "&state=" + state_b);
  EXPECT_EQ(injected.status, 401) << injected.raw.body;
  EXPECT_TRUE(set_cookie(injected.raw, "pgw_session").empty());
  Reply log = request(idp_url() + "/log", "GET");
  bool pkce_refused = false;
  for (const json& e : log.body) pkce_refused |= e.value("outcome", "") == "pkce_mismatch";
  EXPECT_TRUE(pkce_refused) << log.raw.body;
  // An unknown state is refused before the IdP is asked.
  EXPECT_EQ(get("/auth/oidc/callback?code=x&state=forged").status, 400);
}

TEST_F(HttpsAdminApiTest, AnIdTokenWithAnotherNonceOrNoRoleDoesNotLogIn) {
  set_idp_user("carol", "reviewers", "&nonce=replayed-nonce");
  Reply r = get(authorize_at_idp(start_login()));
  EXPECT_EQ(r.status, 401) << r.raw.body;
  EXPECT_TRUE(set_cookie(r.raw, "pgw_session").empty());
  set_idp_user("dave", "contractors");
  Reply norole = get(authorize_at_idp(start_login()));
  EXPECT_EQ(norole.status, 403) << norole.raw.body;
  EXPECT_TRUE(set_cookie(norole.raw, "pgw_session").empty());
  set_idp_user("alice", "reviewers");
}

TEST_F(HttpsAdminApiTest, PgwardenctlLogsInWithAPastedTokenOrDeviceCodeAndTalksHttps) {
  std::string home = dir_ + "/home";
  fs::create_directories(home);
  ::setenv("HOME", home.c_str(), 1);
  ::unsetenv("XDG_CONFIG_HOME");
  const std::string ca = dir_ + "/ca.crt";
  // A viewer's pasted token: cached 0600, then used; approving is refused (exit 3).
  CtlResult login = ctl({"login", "--server", base(), "--cacert", ca, "--token", "-"},
                        mint("vera", "staff") + "\n");
  ASSERT_EQ(login.code, 0) << login.out << login.err;
  EXPECT_NE(login.out.find("as vera (role viewer)"), std::string::npos) << login.out;
  struct stat st {};
  ASSERT_EQ(::stat((home + "/.config/pgwarden/tokens.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  CtlResult status = ctl({"--server", base(), "--cacert", ca, "status", "--json"});
  EXPECT_EQ(status.code, 0) << status.out << status.err;
  EXPECT_EQ(json::parse(status.out, nullptr, false).value("principal", ""), "vera");
  CtlResult denied = ctl({"--server", base(), "--cacert", ca, "approvals", "approve", "X1"});
  EXPECT_EQ(denied.code, 3) << denied.out << denied.err;
  // A token the server refuses is not cached.
  CtlResult bad = ctl({"login", "--server", base(), "--cacert", ca, "--token", "-"},
                      mint("vera", "staff", "&aud=other") + "\n");
  EXPECT_EQ(bad.code, 3) << bad.out << bad.err;
  // Device code: the IdP (auto-consent) logs in its current user.
  set_idp_user("erin", "reviewers");
  CtlResult device = ctl({"login", "--server", base(), "--cacert", ca});
  ASSERT_EQ(device.code, 0) << device.out << device.err;
  EXPECT_NE(device.err.find("WDJB-MJHT"), std::string::npos) << device.err;
  EXPECT_NE(device.out.find("as erin (role reviewer)"), std::string::npos) << device.out;
  CtlResult list = ctl({"--server", base(), "--cacert", ca, "approvals", "list", "--json"});
  EXPECT_EQ(list.code, 0) << list.out << list.err;
  EXPECT_FALSE(audit([](const json& j) {
                 return j.value("event", "") == "admin" && j.value("identity", "") == "erin" &&
                        j.value("command", "") == "approvals.list";
               }).empty());
  // An expired token or one from another issuer (signed with the IdP's own key): exit 3 with
  // the server's reason and how to log in again; nothing runs.
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"expired", mint("erin", "reviewers", "&exp_in=-600")},
      {"issuer", mint("erin", "reviewers", "&iss=https://other-idp.example")}};
  for (const auto& [why, token] : refused) {
    std::string file = dir_ + "/token-" + why;
    std::ofstream(file) << token << "\n";
    CtlResult r =
        ctl({"--server", base(), "--cacert", ca, "--token-file", file, "approvals", "list"});
    EXPECT_EQ(r.code, 3) << why << ": " << r.out << r.err;
    EXPECT_NE(r.err.find(why), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("log in again: pgwardenctl login --server " + base()), std::string::npos)
        << r.err;
  }
  // Without the CA the server's certificate is not trusted.
  CtlResult untrusted = ctl({"--server", base(), "status"});
  EXPECT_EQ(untrusted.code, 5) << untrusted.out << untrusted.err;
  set_idp_user("alice", "reviewers");
}

// Last: exhausts the loopback address's login budget.
TEST_F(HttpsAdminApiTest, LoginEndpointsAreRateLimitedPerSourceAddress) {
  Reply limited;
  for (int i = 0; i < 60; ++i) {
    limited = get("/auth/oidc/login");
    if (limited.status != 303) break;
  }
  ASSERT_EQ(limited.status, 429) << limited.raw.body;
  int retry_after = std::atoi(limited.raw.header("retry-after").c_str());
  EXPECT_GE(retry_after, 1);
  EXPECT_LE(retry_after, 60);
  // API calls with a token are not login attempts.
  EXPECT_EQ(get("/api/v1/status", {bearer(mint("bob", "reviewers"))}).status, 200);
  EXPECT_FALSE(audit([](const json& j) {
                 return j.value("event", "") == "http_login" &&
                        j.value("decision", "") == "rate_limited";
               }).empty());
}

}  // namespace
}  // namespace pgwarden::testing
