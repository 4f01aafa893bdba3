// The web console end to end: a real pgwarden-cp (HTTPS listener, console files from the source
// tree, OIDC login against tests/integration/oidc_test_idp.py, SAML login against
// tests/support/saml_idp.py) and pgwarden-dp in front of the sandbox PostgreSQL; the browser
// part runs in Debian's headless chromium driven by puppeteer-core (console_e2e.mjs), which
// also starts the psql clients whose statements wait for approval:
//  * a reviewer signed in through OIDC sees the held UPDATE (its `<script>` / `<img onerror>`
//    text shown as text), approves it once, and psql finishes with UPDATE 2;
//  * a reviewer signed in through SAML denies another with a reason, and psql gets 42501 with
//    that reason;
//  * the link in a held psql's NOTICE opens that request in the console (after the login); the
//    reviewer sees the dry run's row count and approves the shape for 15 minutes, and a second
//    statement of that shape runs without waiting;
//  * a form on another origin POSTs a denial with the reviewer's cookie: refused (403, Origin /
//    CSRF token), audited, and the request stays pending;
//  * an operator kills a live session with a reason, and the client's FATAL 57P01 carries it;
//  * a recording replays with the masked values the client got and its hash chain verified;
//  * the audit search filters (event; identity + decision), and a statement tested against the
//    rule sets gets its verdict.
// Then the audit log must name both logins (via oidc / saml) and both decisions with the
// people who made them. Skips, saying why, when puppeteer-core is not installed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "common/source_root.h"
#include "controlplane/net/http_client.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/saml_idp_process.h"
#include "tests/integration/test_pki.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string url_encode(const std::string& in) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

constexpr const char* kClientId = "pgwarden-console";

class ConsoleE2eTest : public SharedGatewayTest<ConsoleE2eTest> {
 public:
  static GatewayOptions gateway_options() {
    char tmpl[] = "/tmp/pgw-console-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    EXPECT_TRUE(make_test_pki(dir_)) << "openssl failed, see " << dir_ << "/openssl.log";
    https_port_ = free_tcp_port();
    // OIDC: logins authenticate as alice (group reviewers), the IdP's default user.
    std::string port_file = dir_ + "/oidc.port";
    auto pid = spawn_logged(
        {"/usr/bin/python3", std::string(PGW_SOURCE_ROOT) + "/tests/integration/oidc_test_idp.py",
         port_file, dir_ + "/server.crt", dir_ + "/server.key", kClientId,
         base() + "/auth/oidc/callback"},
        dir_ + "/oidc.log");
    EXPECT_TRUE(pid.is_ok());
    oidc_pid_ = pid.is_ok() ? *pid : -1;
    EXPECT_TRUE(eventually([&] { return fs::exists(port_file); }, 30000)) << "OIDC IdP down";
    int oidc_port = 0;
    std::ifstream(port_file) >> oidc_port;
    oidc_url_ = "https://127.0.0.1:" + std::to_string(oidc_port);
    const std::string& oidc = oidc_url_;
    // SAML: logins authenticate as dave (group reviewers). It reads our SP metadata per
    // request; SetUpTestSuite writes it once cp serves it.
    fs::create_directories(dir_ + "/saml");
    saml_ = new SamlIdpProcess();
    Status st = saml_->start(dir_ + "/saml", dir_ + "/saml/sp-metadata.xml", "dave", "reviewers");
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    json http = {
        {"listen", "127.0.0.1:" + std::to_string(https_port_)},
        {"tls_cert_file", dir_ + "/server.crt"},
        {"tls_key_file", dir_ + "/server.key"},
        {"public_url", base()},
        {"console_dir", std::string(PGW_SOURCE_ROOT) + "/controlplane/console"},
        // Every browser login here comes from 127.0.0.1 (about 20 login requests in all).
        {"login_rate_burst", 60},
        {"role_groups",
         {{"viewer", {"staff"}}, {"reviewer", {"reviewers"}}, {"operator", {"operators"}}}},
        {"oidc",
         {{"issuer", oidc},
          {"jwks_url", oidc + "/jwks"},
          {"ca_file", dir_ + "/ca.crt"},
          {"client_id", kClientId},
          {"authorization_endpoint", oidc + "/authorize"},
          {"token_endpoint", oidc + "/token"}}},
        {"saml",
         {{"idp_metadata_file", dir_ + "/saml/idp-metadata.xml"}, {"groups_attribute", "groups"}}}};
    GatewayOptions o;
    // The default policy plus the rolled-back dry run of held statements (the console shows its
    // count) and a column mask (the replay shows the masked values the client got).
    o.policy_json = R"({"name": "agents", "allowed_kinds": ["select", "update", "delete",
        "transaction", "set", "show"],
        "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
        "allowed_functions": ["pg_catalog.pg_sleep"],
        "read_only": false, "rule_sets": ["deny", "approve"], "dry_run": true,
        "masks": [{"column": "crm.customers.email", "function": "email"}]})";
    o.extra_service_keys = {"runaway"};
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 300;
    o.control_plane_http_json = http.dump();
    return o;
  }
  static void SetUpTestSuite() {
    SharedGatewayTest<ConsoleE2eTest>::SetUpTestSuite();
    std::string metadata;
    ASSERT_TRUE(eventually([&] {
      auto r = get(kSamlMetadata);
      if (!r.is_ok() || r->status != 200) return false;
      metadata = r->body;
      return true;
    })) << gw_->cp_log();
    std::ofstream(dir_ + "/saml/sp-metadata.xml") << metadata;
  }
  static void TearDownTestSuite() {
    SharedGatewayTest<ConsoleE2eTest>::TearDownTestSuite();
    delete saml_;
    saml_ = nullptr;
    if (oidc_pid_ > 0) {
      ::kill(oidc_pid_, SIGTERM);
      ::waitpid(oidc_pid_, nullptr, 0);
    }
    if (::testing::UnitTest::GetInstance()->Passed()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

 protected:
  static constexpr const char* kSamlMetadata = "/auth/saml/metadata";
  static std::string base() { return "https://127.0.0.1:" + std::to_string(https_port_); }
  static Result<net::HttpResponse> get(const std::string& path) {
    net::HttpClientOptions options;
    options.ca_file = dir_ + "/ca.crt";
    return net::http_request(base() + path, net::HttpRequest{}, options);
  }
  // The audit records of `event` (from the file sink).
  static std::vector<json> audit(const std::string& event) {
    std::vector<json> out;
    std::istringstream lines(gw_->audit_log());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("event", "") == event) out.push_back(std::move(j));
    }
    return out;
  }

  static inline std::string dir_;
  static inline int https_port_ = 0;
  static inline pid_t oidc_pid_ = -1;
  static inline std::string oidc_url_;
  static inline SamlIdpProcess* saml_ = nullptr;
};

TEST_F(ConsoleE2eTest, ReviewersAndOperatorsSignedInWithOidcOrSamlUseEveryConsolePage) {
  std::string console_tests = std::string(PGW_SOURCE_ROOT) + "/tests/console";
  struct stat st;
  if (stat((console_tests + "/node_modules/puppeteer-core").c_str(), &st) != 0) {
    GTEST_SKIP() << "puppeteer-core not installed: run `npm install` in tests/console "
                    "(scripts/test does)";
  }
  if (stat("/usr/bin/chromium", &st) != 0) GTEST_SKIP() << "Debian's chromium is not installed";
  ASSERT_TRUE(gw_->pg()
                  .psql("create table public.t_console (k int primary key, v text); "
                        "insert into public.t_console values (1, 'a'), (2, 'b'); "
                        "alter table public.t_console owner to app_scram")
                  .is_ok());

  // The browser script: exit 0 = passed (it prints one line per step).
  std::string log = dir_ + "/console_e2e.log";
  setenv("PGW_CONSOLE_URL", base().c_str(), 1);
  setenv("PGW_CONNINFO", gw_->conninfo().c_str(), 1);
  setenv("PGW_TABLE", "public.t_console", 1);
  setenv("PGW_CONNINFO_RUNAWAY", gw_->conninfo_as("runaway").c_str(), 1);
  setenv("PGW_OIDC_URL", oidc_url_.c_str(), 1);
  setenv("NODE_EXTRA_CA_CERTS", (dir_ + "/ca.crt").c_str(), 1);
  auto node = spawn_logged({"/usr/bin/node", console_tests + "/console_e2e.mjs"}, log);
  ASSERT_TRUE(node.is_ok()) << node.status().to_string();
  int status = 0;
  bool exited = eventually([&] { return ::waitpid(*node, &status, WNOHANG) == *node; }, 240000);
  if (!exited) {
    ::kill(*node, SIGKILL);
    ::waitpid(*node, &status, 0);
  }
  std::string out = slurp(log);
  ASSERT_TRUE(exited) << "the browser test did not finish:\n" << out;
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out << "\ncp log:\n"
                                                             << gw_->cp_log() << "\naudit log:\n"
                                                             << gw_->audit_log();
  std::cout << out;

  // Both logins and both decisions are audited with the people who made them.
  bool oidc_login = false, saml_login = false;
  for (const json& j : audit("http_login")) {
    if (j.value("decision", "") != "accepted") continue;
    std::string via = j.contains("via") ? j.value("via", "") : j["extra"].value("via", "");
    oidc_login |= via == "oidc" && j.dump().find("alice") != std::string::npos;
    saml_login |= via == "saml" && j.dump().find("dave") != std::string::npos;
  }
  EXPECT_TRUE(oidc_login) << gw_->audit_log();
  EXPECT_TRUE(saml_login) << gw_->audit_log();
  // Decisions: the admin command path audits each with its principal and `via`.
  bool approved = false, denied = false;
  for (const json& j : audit("admin")) {
    std::string d = j.dump();
    approved |= d.find("\"approvals.approve\"") != std::string::npos &&
                d.find("alice") != std::string::npos && d.find("oidc") != std::string::npos;
    denied |= d.find("\"approvals.deny\"") != std::string::npos &&
              d.find("dave") != std::string::npos && d.find("saml") != std::string::npos;
  }
  EXPECT_TRUE(approved) << gw_->audit_log();
  EXPECT_TRUE(denied) << gw_->audit_log();
  // The shape approval (15 minutes) and the operator's kill, with who and why.
  bool shape = false;
  for (const json& j : audit("approval_approved")) {
    shape |= j.dump().find("\"scope\":\"shape\"") != std::string::npos &&
             j.dump().find("batch fix OPS-7") != std::string::npos;
  }
  EXPECT_TRUE(shape) << gw_->audit_log();
  bool killed = false;
  for (const json& j : audit("session_kill")) {
    killed |= j.dump().find("runaway agent 7") != std::string::npos &&
              j.dump().find("olga") != std::string::npos;
  }
  EXPECT_TRUE(killed) << gw_->audit_log();
  // The forged cross-site form POST: refused before any command, audited with the person.
  bool csrf = false;
  for (const json& j : audit("http_denied")) {
    csrf |= j.value("identity", "") == "alice" &&
            j.value("reason", "").find("cross-origin request") != std::string::npos;
  }
  EXPECT_TRUE(csrf) << gw_->audit_log();
  // The table holds the approved text, as typed, and not the denied one.
  auto v = gw_->pg().psql("select distinct v from public.t_console");
  ASSERT_TRUE(v.is_ok());
  EXPECT_NE(v->find("<script>alert(1)</script>"), std::string::npos) << *v;
}

// The ACS over HTTPS: a tampered assertion (signed, then a group changed) gets the 401 page
// naming the reason, no session cookie, and an audit record; the same for a replayed POST of
// a good response.
TEST_F(ConsoleE2eTest, SamlAcsRefusesATamperedOrReplayedResponseWithAClearError) {
  auto post_acs = [](const std::map<std::string, std::string>& form) {
    std::string body = "SAMLResponse=" + url_encode(form.at("SAMLResponse")) +
                       "&RelayState=" + url_encode(form.at("RelayState"));
    net::HttpRequest req;
    req.method = "POST";
    req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    req.body = body;
    net::HttpClientOptions options;
    options.ca_file = dir_ + "/ca.crt";
    return net::http_request(base() + "/auth/saml/acs", req, options);
  };
  auto login_url = [] {
    auto r = get("/auth/saml/login?return_to=/console/");
    EXPECT_TRUE(r.is_ok() && r->status == 303);
    return r.is_ok() ? r->header("location") : std::string();
  };
  auto tampered = saml_->follow_redirect(login_url(), "tampered");
  ASSERT_TRUE(tampered.is_ok()) << tampered.status().to_string();
  auto r = post_acs(*tampered);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->status, 401);
  EXPECT_NE(r->body.find("signature does not verify"), std::string::npos) << r->body;
  for (const auto& [name, value] : r->headers) {
    EXPECT_FALSE(name == "set-cookie" && value.find("pgw_session") != std::string::npos) << value;
  }

  auto good = saml_->follow_redirect(login_url());
  ASSERT_TRUE(good.is_ok());
  auto first = post_acs(*good);
  ASSERT_TRUE(first.is_ok());
  EXPECT_EQ(first->status, 303);
  auto replay = post_acs(*good);
  ASSERT_TRUE(replay.is_ok());
  EXPECT_EQ(replay->status, 401) << replay->body;

  int rejected = 0;
  for (const json& j : audit("http_login")) {
    if (j.value("decision", "") == "rejected" && j.dump().find("saml") != std::string::npos) {
      ++rejected;
    }
  }
  EXPECT_GE(rejected, 2) << gw_->audit_log();
}

}  // namespace
}  // namespace pgwarden::testing
