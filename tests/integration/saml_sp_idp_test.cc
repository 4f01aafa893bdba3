// controlplane/sso/saml_sp against a real SAML 2.0 identity provider (pysaml2, signing with
// xmlsec1) started by the test: the happy login, and each attack or fault the SP must refuse
// with a clear reason. The browser part (cp's HTTPS ACS, the console) is in tests/console.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <memory>
#include <string>

#include "controlplane/sso/saml_sp.h"
#include "tests/integration/saml_idp_process.h"

namespace pgwarden::sso {
namespace {

using testing::SamlIdpProcess;

class SamlSpIdpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pgw-saml-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    idp_ = new SamlIdpProcess();
    // The IdP reads the SP metadata per request, so it may start first.
    Status st =
        idp_->start(*dir_, *dir_ + "/sp-metadata.xml", "alice", "pgw-reviewers,pgw-viewers");
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    auto sp = SamlServiceProvider::create(config());
    ASSERT_TRUE(sp.is_ok()) << sp.status().to_string();
    std::ofstream(*dir_ + "/sp-metadata.xml") << (*sp)->metadata_xml();
  }
  static void TearDownTestSuite() {
    delete idp_;
    idp_ = nullptr;
    if (dir_ != nullptr && !::testing::Test::HasFailure()) {
      std::string cmd = "rm -rf '" + *dir_ + "'";
      (void)system(cmd.c_str());
    }
    delete dir_;
  }
  static SamlSpConfig config() {
    SamlSpConfig c;
    c.entity_id = "https://gw.test/saml";
    c.acs_url = "https://gw.test/auth/saml/acs";
    c.idp_metadata_xml = idp_->metadata_xml();
    return c;
  }
  void SetUp() override {
    auto sp = SamlServiceProvider::create(config());
    ASSERT_TRUE(sp.is_ok()) << sp.status().to_string();
    sp_ = std::move(*sp);
  }
  // One browser round trip: SP redirect → IdP (in `mode`) → the POST form's fields.
  std::map<std::string, std::string> login_form(const std::string& mode = "",
                                                const std::string& return_to = "/console/") {
    auto url = sp_->start_login(return_to);
    EXPECT_TRUE(url.is_ok()) << url.status().to_string();
    if (!url.is_ok()) return {};
    auto form = idp_->follow_redirect(*url, mode);
    EXPECT_TRUE(form.is_ok()) << form.status().to_string();
    return form.is_ok() ? *form : std::map<std::string, std::string>{};
  }
  void expect_refused(const std::string& mode, const std::string& why) {
    auto form = login_form(mode);
    auto person = sp_->consume(form["SAMLResponse"], form["RelayState"]);
    ASSERT_FALSE(person.is_ok()) << mode << " was accepted for " << person->name;
    EXPECT_EQ(person.status().code(), StatusCode::kUnauthenticated) << mode;
    EXPECT_NE(person.status().message().find(why), std::string::npos)
        << mode << ": " << person.status().message();
    RecordProperty(mode, person.status().message());
  }

  static inline std::string* dir_ = nullptr;
  static inline SamlIdpProcess* idp_ = nullptr;
  std::unique_ptr<SamlServiceProvider> sp_;
};

TEST_F(SamlSpIdpTest, SignedAssertionLogsThePersonInWithGroups) {
  auto form = login_form("", "/console/#approvals");
  EXPECT_EQ(form["action"], "https://gw.test/auth/saml/acs");
  auto person = sp_->consume(form["SAMLResponse"], form["RelayState"]);
  ASSERT_TRUE(person.is_ok()) << person.status().to_string();
  EXPECT_EQ(person->name, "alice");
  EXPECT_EQ(person->groups, (std::vector<std::string>{"pgw-reviewers", "pgw-viewers"}));
  EXPECT_EQ(person->idp_entity_id, "https://idp.test/saml");
  EXPECT_EQ(person->return_to, "/console/#approvals");
  EXPECT_FALSE(person->assertion_id.empty());
}

TEST_F(SamlSpIdpTest, ReplayedResponseIsRefused) {
  auto form = login_form();
  ASSERT_TRUE(sp_->consume(form["SAMLResponse"], form["RelayState"]).is_ok());
  // The same POST again.
  auto again = sp_->consume(form["SAMLResponse"], form["RelayState"]);
  ASSERT_FALSE(again.is_ok());
  EXPECT_NE(again.status().message().find("no login in progress"), std::string::npos);
  // The same response against a freshly started login: it answers another request.
  auto url = sp_->start_login("/");
  ASSERT_TRUE(url.is_ok());
  std::string relay = url->substr(url->find("RelayState=") + 11);
  relay = relay.substr(0, relay.find('&'));
  auto replay = sp_->consume(form["SAMLResponse"], relay);
  ASSERT_FALSE(replay.is_ok());
  EXPECT_NE(replay.status().message().find("another request"), std::string::npos)
      << replay.status().message();
}

TEST_F(SamlSpIdpTest, TamperedAssertionIsRefused) {
  expect_refused("tampered", "signature does not verify");
}

TEST_F(SamlSpIdpTest, OnlyTheAssertionSignedIsEnough) {
  auto form = login_form("assertion_only");
  auto person = sp_->consume(form["SAMLResponse"], form["RelayState"]);
  ASSERT_TRUE(person.is_ok()) << person.status().to_string();
  EXPECT_EQ(person->groups, (std::vector<std::string>{"pgw-reviewers", "pgw-viewers"}));
}

TEST_F(SamlSpIdpTest, TamperedAssertionInAnUnsignedResponseIsRefused) {
  expect_refused("assertion_only_tampered", "signature does not verify");
}

TEST_F(SamlSpIdpTest, UnsignedResponseIsRefused) { expect_refused("unsigned", "not signed"); }

TEST_F(SamlSpIdpTest, ResponseSignedWithAnotherKeyIsRefused) {
  expect_refused("other_key", "signature does not verify");
}

TEST_F(SamlSpIdpTest, AssertionForAnotherAudienceIsRefused) {
  expect_refused("wrong_audience", "another audience");
}

TEST_F(SamlSpIdpTest, ExpiredAssertionIsRefused) { expect_refused("expired", "expired"); }

TEST_F(SamlSpIdpTest, ResponseToARequestNeverMadeIsRefused) {
  expect_refused("wrong_request", "another request");
}

TEST_F(SamlSpIdpTest, AssertionValidatedLaterThanItsLifetimeIsRefused) {
  auto c = config();
  // Same IdP, an SP whose clock is 10 minutes ahead: the 5-minute assertion is stale.
  c.now = [] { return std::time(nullptr) + 600; };
  auto late = SamlServiceProvider::create(c);
  ASSERT_TRUE(late.is_ok());
  auto url = (*late)->start_login("/");
  ASSERT_TRUE(url.is_ok());
  auto form2 = idp_->follow_redirect(*url);
  ASSERT_TRUE(form2.is_ok());
  auto person = (*late)->consume((*form2)["SAMLResponse"], (*form2)["RelayState"]);
  ASSERT_FALSE(person.is_ok());
  EXPECT_NE(person.status().message().find("expired"), std::string::npos)
      << person.status().message();
}

}  // namespace
}  // namespace pgwarden::sso
