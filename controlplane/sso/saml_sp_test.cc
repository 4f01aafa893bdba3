#include "controlplane/sso/saml_sp.h"

#include <gtest/gtest.h>

#include <string>

#include "controlplane/sso/saml_test_vectors.h"

namespace pgwarden::sso {
namespace {

SamlSpConfig config() {
  SamlSpConfig c;
  c.entity_id = testing::kTestSpEntityId;
  c.acs_url = testing::kTestAcsUrl;
  c.idp_metadata_xml = testing::kTestIdpMetadata;
  return c;
}

struct TimeCase {
  const char* text;
  std::optional<std::time_t> want;
};

class ParseSamlTime : public ::testing::TestWithParam<TimeCase> {};

TEST_P(ParseSamlTime, ParsesXsDateTimeOrRejects) {
  EXPECT_EQ(parse_saml_time(GetParam().text), GetParam().want) << GetParam().text;
}

INSTANTIATE_TEST_SUITE_P(Table, ParseSamlTime,
                         ::testing::Values(TimeCase{"2026-12-06T19:00:00Z", 1796583600},
                                           TimeCase{"2026-12-06T19:00:00.123Z", 1796583600},
                                           TimeCase{"2026-12-06T19:00:00", 1796583600},
                                           TimeCase{"2026-12-06T20:30:00+01:30", 1796583600},
                                           TimeCase{"2026-12-06T17:00:00-02:00", 1796583600},
                                           TimeCase{"1970-01-01T00:00:00Z", 0},
                                           TimeCase{"", std::nullopt},
                                           TimeCase{"2026-12-06", std::nullopt},
                                           TimeCase{"2026-13-06T19:00:00Z", std::nullopt},
                                           TimeCase{"2026-12-06T19:00:00ZZ", std::nullopt},
                                           TimeCase{"2026-12-06T19:00:00.Z", std::nullopt},
                                           TimeCase{"2026-12-06T19:00:00+1", std::nullopt},
                                           TimeCase{"2026-12-06T19:00:00+01:00x", std::nullopt},
                                           TimeCase{"2026-12-06 19:00:00Z", std::nullopt},
                                           TimeCase{"+026-12-06T19:00:00Z", std::nullopt}));

TEST(SamlServiceProvider, ConfigThatCannotWorkIsRefused) {
  auto c = config();
  c.entity_id.clear();
  EXPECT_FALSE(SamlServiceProvider::create(c).is_ok());
  c = config();
  c.acs_url = "http://gw.test/auth/saml/acs";  // clear text to a remote host
  EXPECT_FALSE(SamlServiceProvider::create(c).is_ok());
  c = config();
  c.idp_metadata_xml = "<not-metadata/>";
  auto bad = SamlServiceProvider::create(c);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("IdP metadata"), std::string::npos);
}

TEST(SamlServiceProvider, MetadataNamesEntityAndPostAcs) {
  auto sp = SamlServiceProvider::create(config());
  ASSERT_TRUE(sp.is_ok()) << sp.status().to_string();
  EXPECT_EQ((*sp)->idp_entity_id(), "https://idp.test/saml");
  const std::string& md = (*sp)->metadata_xml();
  EXPECT_NE(md.find("entityID=\"https://gw.test/saml\""), std::string::npos);
  EXPECT_NE(md.find("HTTP-POST\" Location=\"https://gw.test/auth/saml/acs\""), std::string::npos);
  EXPECT_NE(md.find("WantAssertionsSigned=\"true\""), std::string::npos);
}

TEST(SamlServiceProvider, StartLoginRedirectsToIdpWithRequestAndRelayState) {
  auto sp = SamlServiceProvider::create(config());
  ASSERT_TRUE(sp.is_ok()) << sp.status().to_string();
  auto a = (*sp)->start_login("/console/");
  auto b = (*sp)->start_login("/console/");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  ASSERT_TRUE(b.is_ok());
  EXPECT_TRUE(a->starts_with("https://idp.test/sso/redirect?SAMLRequest=")) << *a;
  EXPECT_NE(a->find("RelayState="), std::string::npos);
  EXPECT_NE(*a, *b);  // fresh request ID and RelayState each time
}

TEST(SamlServiceProvider, ResponseWithoutStartedLoginIsRefused) {
  auto sp = SamlServiceProvider::create(config());
  ASSERT_TRUE(sp.is_ok());
  auto r = (*sp)->consume("PHNhbWxwOlJlc3BvbnNlLz4=", "never-issued");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(r.status().message().find("no login in progress"), std::string::npos);
  EXPECT_FALSE((*sp)->consume("", "x").is_ok());
}

TEST(SamlServiceProvider, OversizedResponseIsRefusedBeforeParsing) {
  auto c = config();
  c.max_response_bytes = 64;
  auto sp = SamlServiceProvider::create(c);
  ASSERT_TRUE(sp.is_ok());
  auto r = (*sp)->consume(std::string(65, 'A'), "x");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("larger than"), std::string::npos);
}

TEST(SamlServiceProvider, GarbageForAStartedLoginIsRefusedAndUsesUpTheLogin) {
  auto sp = SamlServiceProvider::create(config());
  ASSERT_TRUE(sp.is_ok());
  auto url = (*sp)->start_login("/");
  ASSERT_TRUE(url.is_ok());
  std::string relay = url->substr(url->find("RelayState=") + 11);
  relay = relay.substr(0, relay.find('&'));
  for (const char* garbage : {"bm90IHhtbA==", "!!!not base64!!!",
                              "PHNhbWxwOlJlc3BvbnNlIHhtbG5zOnNhbWxwPSJ1cm46b2FzaXM6bmFtZXM6dGM6"
                              "U0FNTDoyLjA6cHJvdG9jb2wiLz4="}) {
    auto r = (*sp)->consume(garbage, relay);
    ASSERT_FALSE(r.is_ok()) << garbage;
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated);
  }
}

std::string b64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<unsigned char>(in[i + 2]);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < in.size() ? k[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? k[v & 63] : '=';
  }
  return out;
}

TEST(SamlServiceProvider, DoctypeEntitiesAreNotExpanded) {
  auto sp = SamlServiceProvider::create(config());
  ASSERT_TRUE(sp.is_ok());
  const std::string tail =
      "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" "
      "xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_r\" Version=\"2.0\" "
      "IssueInstant=\"2026-12-06T19:00:00Z\"><saml:Issuer>&e;</saml:Issuer>"
      "</samlp:Response>";
  // An external entity (file disclosure) and a billion-laughs expansion.
  std::string laughs = "<!ENTITY l0 \"lol\">";
  for (int i = 1; i < 10; ++i) {
    laughs += "<!ENTITY l" + std::to_string(i) + " \"";
    for (int j = 0; j < 10; ++j) laughs += "&l" + std::to_string(i - 1) + ";";
    laughs += "\">";
  }
  for (const std::string& doctype :
       {std::string("<!DOCTYPE r [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"),
        "<!DOCTYPE r [" + laughs + "<!ENTITY e \"&l9;\">]>"}) {
    auto url = (*sp)->start_login("/");
    ASSERT_TRUE(url.is_ok());
    std::string relay = url->substr(url->find("RelayState=") + 11);
    relay = relay.substr(0, relay.find('&'));
    auto r = (*sp)->consume(b64("<?xml version=\"1.0\"?>" + doctype + tail), relay);
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().message().find("root:"), std::string::npos) << r.status().message();
  }
}

TEST(SamlServiceProvider, PendingLoginsAreCapped) {
  auto c = config();
  c.max_pending = 2;
  auto sp = SamlServiceProvider::create(c);
  ASSERT_TRUE(sp.is_ok());
  EXPECT_TRUE((*sp)->start_login("/").is_ok());
  EXPECT_TRUE((*sp)->start_login("/").is_ok());
  auto third = (*sp)->start_login("/");
  ASSERT_FALSE(third.is_ok());
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace pgwarden::sso
