#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "controlplane/server/interfaces.h"
#include "controlplane/vault/credential_hash.h"

namespace pgwarden::server {
namespace {

std::shared_ptr<const config::Config> config_with_key(const std::string& secret) {
  auto c = std::make_shared<config::Config>();
  c->service_keys.push_back(
      {"ci",
       vault::parse_credential_hash(vault::hash_credential(secret, 1000)).value(),
       "svc:ci",
       {"ops"}});
  return c;
}

protocol::AuthenticateRequest with_token(std::string token) {
  protocol::AuthenticateRequest r;
  r.session_id = "s";
  r.target = "demo";
  r.token = std::move(token);
  return r;
}

TEST(ServiceKeyAuthenticatorTest, CorrectKeyYieldsConfiguredIdentity) {
  auto c = config_with_key("k3y");
  ServiceKeyAuthenticator a;
  AuthOutcome o = a.authenticate(*c, with_token("pgwsk.ci.k3y"));
  ASSERT_TRUE(o.ok);
  EXPECT_EQ(o.identity.subject, "svc:ci");
  EXPECT_EQ(o.identity.issuer, "pgwarden:service-key");
  EXPECT_EQ(o.identity.groups, std::vector<std::string>{"ops"});
}

TEST(ServiceKeyAuthenticatorTest, WrongSecretUnknownIdAndMalformedAreRejectedWith28000) {
  auto c = config_with_key("k3y");
  ServiceKeyAuthenticator a;
  for (const char* t :
       {"pgwsk.ci.k3Y", "pgwsk.other.k3y", "pgwsk.ci.", "pgwsk..k3y", "pgwsk.ci", "k3y", ""}) {
    AuthOutcome o = a.authenticate(*c, with_token(t));
    EXPECT_FALSE(o.ok) << t;
    EXPECT_EQ(o.code, "invalid_token");
    EXPECT_EQ(o.error.sqlstate(), "28000");
    EXPECT_EQ(o.error.message().find("k3y"), std::string::npos);
  }
}

class FixedAuthenticator : public Authenticator {
 public:
  AuthOutcome authenticate(const config::Config&, const protocol::AuthenticateRequest&) override {
    return AuthOutcome::accept({"jwt-user", "https://issuer", {"g"}});
  }
};

TEST(CompositeAuthenticatorTest, RoutesByTokenShape) {
  auto c = config_with_key("k3y");
  CompositeAuthenticator without_jwt(std::make_shared<ServiceKeyAuthenticator>(), nullptr);
  EXPECT_TRUE(without_jwt.authenticate(*c, with_token("pgwsk.ci.k3y")).ok);
  AuthOutcome no_jwt = without_jwt.authenticate(*c, with_token("eyJhbGciOi.x.y"));
  EXPECT_FALSE(no_jwt.ok);
  EXPECT_EQ(no_jwt.code, "invalid_token");
  CompositeAuthenticator with_jwt(std::make_shared<ServiceKeyAuthenticator>(),
                                  std::make_shared<FixedAuthenticator>());
  EXPECT_EQ(with_jwt.authenticate(*c, with_token("eyJhbGciOi.x.y")).identity.subject, "jwt-user");
  EXPECT_FALSE(with_jwt.authenticate(*c, with_token("pgwsk.ci.bad")).ok);
}

TEST(FailClosedAnalyserTest, DeniesEverythingAndNamesPrescreenRule) {
  policy::Policy p;
  config::Target t;
  AuthenticatedIdentity id;
  std::string sid = "s";
  SessionView v{sid, id, p, t};
  FailClosedAnalyser a;
  auto r = a.analyse(v, protocol::AnalyseRequest{"s", "select 1", "", {}});
  EXPECT_EQ(r.verdict, "deny");
  EXPECT_FALSE(r.cacheable);
  auto r2 = a.analyse(v, protocol::AnalyseRequest{"s", "drop table x", "", {{"no-drop", "deny"}}});
  EXPECT_EQ(r2.rule, "no-drop");
  FailClosedMaskPlanner m;
  EXPECT_FALSE(m.plan(v, protocol::MaskPlanRequest{"s", {}}).is_ok());
}

}  // namespace
}  // namespace pgwarden::server
