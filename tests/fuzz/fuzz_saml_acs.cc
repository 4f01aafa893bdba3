// Fuzzes the SAML service provider's ACS input (controlplane/sso/saml_sp): each input is
// POSTed as a SAMLResponse for a freshly started login, both base64-encoded (hostile XML
// through lasso's parser, xmlsec's signature check and our checks) and as given (hostile
// base64), and parsed as an xs:dateTime. Seeds are real pysaml2 responses signed with the key
// of the test IdP metadata (saml_test_vectors.h). Properties: no crash, and nothing is ever
// accepted (no seed or mutation answers the random request IDs this SP makes).
#include <openssl/evp.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "controlplane/sso/saml_sp.h"
#include "controlplane/sso/saml_test_vectors.h"

namespace {

using namespace pgwarden::sso;

SamlServiceProvider& sp() {
  static auto* p = [] {
    SamlSpConfig c;
    c.entity_id = testing::kTestSpEntityId;
    c.acs_url = testing::kTestAcsUrl;
    c.idp_metadata_xml = testing::kTestIdpMetadata;
    auto r = SamlServiceProvider::create(c);
    if (!r.is_ok()) abort();
    return r->release();
  }();
  return *p;
}

std::string relay_of(const std::string& url) {
  std::size_t p = url.find("RelayState=");
  if (p == std::string::npos) abort();
  std::string r = url.substr(p + 11);
  return r.substr(0, r.find('&'));
}

std::string b64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(n);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)parse_saml_time(in);
  for (const std::string& msg : {b64(in), std::string(in)}) {
    auto url = sp().start_login("/console/");
    if (!url.is_ok()) abort();
    auto person = sp().consume(msg, relay_of(*url));
    if (person.is_ok()) abort();  // nothing here answers our request: accepting is a bug
  }
  return 0;
}
