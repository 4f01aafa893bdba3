#include "controlplane/server/identity_authenticator.h"

#include <gtest/gtest.h>

#include "controlplane/identity/service_key.h"

namespace pgwarden::server {
namespace {

protocol::AuthenticateRequest with_token(std::string token) {
  protocol::AuthenticateRequest r;
  r.session_id = "s";
  r.target = "demo";
  r.token = std::move(token);
  return r;
}

config::Config config_with_key(uint64_t version, const std::string& id) {
  config::Config c;
  c.version = version;
  auto key = identity::generate_service_key(id).value();
  c.service_keys.push_back({id, key.hash.salt, key.hash.hash, "svc:" + id, {"ops"}});
  return c;
}

TEST(IdentityAuthenticatorTest, ServiceKeyYieldsConfiguredIdentityAndRejectionsCarryReasonNames) {
  config::Config c;
  c.version = 1;
  auto key = identity::generate_service_key("ci").value();
  c.service_keys.push_back({"ci", key.hash.salt, key.hash.hash, "svc:ci", {"ops"}});
  IdentityAuthenticator a;
  AuthOutcome ok = a.authenticate(c, with_token(key.key));
  ASSERT_TRUE(ok.ok) << ok.error.to_string();
  EXPECT_EQ(ok.identity.subject, "svc:ci");
  EXPECT_EQ(ok.identity.issuer, "pgwarden:service-key");
  EXPECT_EQ(ok.identity.groups, std::vector<std::string>{"ops"});

  std::string wrong = key.key;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  struct Case {
    std::string token;
    std::string code;
  };
  for (const Case& k : {Case{wrong, "bad_service_key"},
                        Case{"pgw_sk_other_" + key.key.substr(10), "unknown_service_key"},
                        Case{"eyJhbGciOiJub25lIn0.e30.", "alg_none"}, Case{"", "malformed"}}) {
    AuthOutcome o = a.authenticate(c, with_token(k.token));
    EXPECT_FALSE(o.ok) << k.token;
    EXPECT_EQ(o.code, k.code) << k.token;
    EXPECT_EQ(o.error.sqlstate(), "28P01");
    EXPECT_EQ(o.error.message().find(key.key), std::string::npos);
  }
}

TEST(IdentityAuthenticatorTest, NewerConfigVersionRebuildsTheValidator) {
  IdentityAuthenticator a;
  config::Config v1 = config_with_key(1, "first");
  config::Config v2 = config_with_key(2, "second");
  auto first = a.validator_for(v1);
  ASSERT_TRUE(first.is_ok());
  auto second = a.validator_for(v2);
  ASSERT_TRUE(second.is_ok());
  EXPECT_NE(first->get(), second->get());
  // An older snapshot keeps the newest validator (no rebuild thrash).
  EXPECT_EQ(a.validator_for(v1)->get(), second->get());
}

}  // namespace
}  // namespace pgwarden::server
