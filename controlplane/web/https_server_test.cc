#include "controlplane/web/https_server.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "controlplane/net/http_client.h"
#include "controlplane/vault/credential_hash.h"
#include "tests/integration/test_pki.h"

namespace pgwarden::web {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class HttpsServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pgw-web-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    ASSERT_TRUE(testing::make_test_pki(dir_));
    fs::create_directories(dir_ + "/console/js");
    std::ofstream(dir_ + "/console/index.html") << "<h1>console</h1>";
    std::ofstream(dir_ + "/console/js/app.js") << "console.log(1)";
    std::ofstream(dir_ + "/console/.secret") << "no";
    std::ofstream(dir_ + "/outside.txt") << "outside";
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void SetUp() override {
    auto log = audit::AuditLog::open(
        {config::AuditSink{config::AuditSink::Kind::kFile, dir_ + "/audit.log"}});
    ASSERT_TRUE(log.is_ok());
    audit_ = std::move(*log);
  }

  config::HttpSettings settings() const {
    config::HttpSettings s;
    s.listen = "127.0.0.1:0";
    s.tls_cert_file = dir_ + "/server.crt";
    s.tls_key_file = dir_ + "/server.key";
    s.public_url = "https://127.0.0.1";
    s.console_dir = dir_ + "/console";
    s.threads = 2;
    s.login_rate_per_minute = 1;
    s.login_rate_burst = 2;
    s.role_groups.viewer = {"staff"};
    s.role_groups.reviewer = {"dba"};
    return s;
  }
  static identity::IdentityResult fake_idp(std::string_view token) {
    // Stands in for the JWKS validator (tested with a real IdP in https_admin_api_test).
    if (token == "viewer-token") {
      return identity::Identity{.subject = "vera", .groups = {"staff"}};
    }
    return identity::Rejection{identity::RejectReason::kBadSignature, "bad"};
  }
  net::HttpResponse call(const HttpsServer& server, const std::string& method,
                         const std::string& path,
                         std::vector<std::pair<std::string_view, std::string_view>> headers = {},
                         std::string_view body = "") {
    net::HttpRequest req;
    req.method = method;
    req.headers = std::move(headers);
    req.body = body;
    net::HttpClientOptions o;
    o.ca_file = dir_ + "/ca.crt";
    auto r = net::http_request("https://127.0.0.1:" + std::to_string(server.port()) + path, req, o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : net::HttpResponse{};
  }
  static Route route(std::string method, std::string prefix, Access access, std::string text) {
    return Route{.method = std::move(method),
                 .prefix = std::move(prefix),
                 .access = access,
                 .handler = [text](const Request&) {
                   return Response::json(200, json{{"ok", true}, {"result", text}});
                 }};
  }

  static inline std::string dir_;
  std::unique_ptr<audit::AuditLog> audit_;
};

TEST_F(HttpsServerTest, RefusesToStartWithoutCertificateAndKey) {
  config::HttpSettings s = settings();
  s.tls_key_file.clear();
  HttpsServer server(s, {}, audit_.get(), {});
  Status st = server.start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  config::HttpSettings wrong = settings();
  wrong.tls_key_file = dir_ + "/rogue.key";  // does not match the certificate
  HttpsServer mismatched(wrong, {}, audit_.get(), {});
  EXPECT_FALSE(mismatched.start().is_ok());
}

TEST_F(HttpsServerTest, RoutesByLongestPrefixAndMethodAndAuthenticatesPersons) {
  HttpsServer server(settings(), {}, audit_.get(), fake_idp);
  server.add_route(route("GET", "/pub", Access::kPublic, "pub"));
  server.add_route(route("GET", "/pub/deeper", Access::kPublic, "deeper"));
  server.add_route(route("GET", "/private", Access::kPerson, "private"));
  server.add_route(Route{.method = "POST",
                         .prefix = "/review",
                         .access = Access::kPerson,
                         .min_role = Role::kReviewer,
                         .handler = [](const Request&) { return Response::json(200, json{}); }});
  ASSERT_TRUE(server.start().is_ok());
  EXPECT_EQ(json::parse(call(server, "GET", "/pub/x").body)["result"], "pub");
  EXPECT_EQ(json::parse(call(server, "GET", "/pub/deeper/y").body)["result"], "deeper");
  EXPECT_EQ(call(server, "GET", "/publisher").status, 404);  // a prefix is a path segment
  EXPECT_EQ(call(server, "POST", "/pub").status, 405);
  EXPECT_EQ(call(server, "GET", "/private").status, 401);
  EXPECT_EQ(call(server, "GET", "/private", {{"Authorization", "Bearer forged"}}).status, 401);
  net::HttpResponse ok =
      call(server, "GET", "/private", {{"Authorization", "Bearer viewer-token"}});
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.header("cache-control"), "no-store");
  EXPECT_EQ(ok.header("x-frame-options"), "DENY");
  EXPECT_NE(ok.header("strict-transport-security"), "");
  EXPECT_EQ(call(server, "POST", "/review", {{"Authorization", "Bearer viewer-token"}}).status,
            403);
  std::string big(kMaxRequestBodyBytes + 1, 'x');
  EXPECT_EQ(call(server, "POST", "/review", {{"Authorization", "Bearer viewer-token"}}, big).status,
            413);
}

TEST_F(HttpsServerTest, ServesConsoleFilesButNothingOutsideOrHidden) {
  HttpsServer server(settings(), {}, audit_.get(), {});
  ASSERT_TRUE(server.start().is_ok());
  net::HttpResponse index = call(server, "GET", "/console/");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.body, "<h1>console</h1>");
  EXPECT_EQ(index.content_type, "text/html; charset=utf-8");
  EXPECT_NE(index.header("content-security-policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(call(server, "GET", "/console/js/app.js").content_type,
            "text/javascript; charset=utf-8");
  EXPECT_EQ(call(server, "GET", "/").status, 303);
  for (const char* path :
       {"/console/../outside.txt", "/console/%2e%2e/outside.txt", "/console/.secret",
        "/console/js/../../outside.txt", "/console/nope.html"}) {
    net::HttpResponse r = call(server, "GET", path);
    EXPECT_NE(r.status, 200) << path;
    EXPECT_EQ(r.body.find("outside"), std::string::npos) << path;
  }
}

// The link in a held client's NOTICE and in chat (<public_url>/approvals/ID) opens the
// console's page of that request; nothing but an approval id is passed on.
TEST_F(HttpsServerTest, ApprovalLinksRedirectToTheConsolePageOfTheRequest) {
  HttpsServer server(settings(), {}, audit_.get(), {});
  ASSERT_TRUE(server.start().is_ok());
  net::HttpResponse r = call(server, "GET", "/approvals/EnK7-oQwE7qe_SIb");
  EXPECT_EQ(r.status, 303);
  EXPECT_EQ(r.header("location"), "/console/#approvals/EnK7-oQwE7qe_SIb");
  for (const char* path : {"/approvals", "/approvals/", "/approvals/a%2Fb", "/approvals/a/b",
                           "/approvals/%3Cscript%3E", "/approvals/a%0d%0aSet-Cookie:x=1"}) {
    net::HttpResponse bad = call(server, "GET", path);
    EXPECT_EQ(bad.status, 404) << path;
    EXPECT_EQ(bad.header("location"), "") << path;
  }
  // Without a console there is no page to open.
  config::HttpSettings no_console = settings();
  no_console.console_dir.clear();
  HttpsServer bare(no_console, {}, audit_.get(), {});
  ASSERT_TRUE(bare.start().is_ok());
  EXPECT_EQ(call(bare, "GET", "/approvals/EnK7-oQwE7qe_SIb").status, 404);
}

TEST_F(HttpsServerTest, BreakGlassIsOffByDefaultAndRateLimitedWhenOn) {
  config::AdminPrincipal admin{
      .name = "root",
      .credential = *vault::parse_credential_hash(vault::hash_credential("s3cret", 1000)),
      .groups = {"dba"}};
  {
    HttpsServer off(settings(), {admin}, audit_.get(), {});
    off.add_route(route("GET", "/private", Access::kPerson, "private"));
    ASSERT_TRUE(off.start().is_ok());
    // "root:s3cret"
    EXPECT_EQ(call(off, "GET", "/private", {{"Authorization", "Basic cm9vdDpzM2NyZXQ="}}).status,
              401);
  }
  config::HttpSettings s = settings();
  s.break_glass = true;
  HttpsServer on(s, {admin}, audit_.get(), {});
  on.add_route(route("GET", "/private", Access::kPerson, "private"));
  ASSERT_TRUE(on.start().is_ok());
  EXPECT_EQ(call(on, "GET", "/private", {{"Authorization", "Basic cm9vdDpzM2NyZXQ="}}).status, 200);
  // "root:wrong"
  EXPECT_EQ(call(on, "GET", "/private", {{"Authorization", "Basic cm9vdDp3cm9uZw=="}}).status, 401);
  // Browser login: the session cookie, and no open redirect.
  net::HttpResponse login =
      call(on, "POST", "/auth/break-glass/login", {},
           R"({"name": "root", "credential": "s3cret", "return_to": "//evil.example/x"})");
  EXPECT_EQ(login.status, 303);
  EXPECT_EQ(login.header("location"), "/console/");
  EXPECT_TRUE(login.header("set-cookie").starts_with("pgw_session="));
  // Burst 2: the third login attempt from this address is refused.
  net::HttpResponse third =
      call(on, "POST", "/auth/break-glass/login", {}, R"({"name": "root", "credential": "x"})");
  EXPECT_EQ(third.status, 401);
  net::HttpResponse limited =
      call(on, "POST", "/auth/break-glass/login", {}, R"({"name": "root", "credential": "x"})");
  EXPECT_EQ(limited.status, 429);
  EXPECT_GE(std::atoi(limited.header("retry-after").c_str()), 1);
}

}  // namespace
}  // namespace pgwarden::web
