// Test vectors for the SAML service provider's unit test and fuzz target: a fixed IdP
// EntityDescriptor (entity "https://idp.test/saml") with a throwaway self-signed certificate.
// Its key was used once to sign the fuzz seeds in tests/fuzz/corpus/fuzz_saml_acs and then
// dropped; tests that need fresh signed responses use the real IdP (tests/support/saml_idp.py).
#pragma once

namespace pgwarden::sso::testing {

inline constexpr char kTestIdpMetadata[] = R"(<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.test/saml">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>MIIDGDCCAgCgAwIBAgITVS6nRPjZvjI4FF4nlC3ySJZtnzANBgkqhkiG9w0BAQsFADAcMRowGAYDVQQDDBFwZ3dhcmRlbi10ZXN0LWlkcDAeFw0yNjEyMDYxODUyNDlaFw0yNjEyMDgxODUyNDlaMBwxGjAYBgNVBAMMEXBnd2FyZGVuLXRlc3QtaWRwMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoikEDj5kYU8R20o6aUeFxxIT0borKY9zzCB1RYRAcN6zIHABKwbsYa5RoICDk4nqul9vOTFgWQ29U5iissatBNF/zHsK2VR1UlLoKIx8ugOalJ774rxMCQHq6CD97UXIAaF8k4J1O6vHdFBxLzMakOjwaMVrPPjyvk2C/cjqmq/VS2UpBmhMPQt4x7MJXMNmDgDO8tv+LmQGzqhVB3cjtAd0L2DIH2Y+VsMr+VJvBGGC+95Lp6W4OwTVtt5pEWv9pJSJgt9NNu4YrwIFNV4ToUmz1FDRkofs1DPeisP0YV/p5Hv5ZY1dTlO27+Q3Xj+pQEY1uFbRRxZJ0iJ2kttc7wIDAQABo1MwUTAdBgNVHQ4EFgQUN6QNDcEyGkA9qlRMrVOwtI8BIEEwHwYDVR0jBBgwFoAUN6QNDcEyGkA9qlRMrVOwtI8BIEEwDwYDVR0TAQH/BAUwAwEB/zANBgkqhkiG9w0BAQsFAAOCAQEAnxY3heOIvPDMgZSSMxyF/I4BlBQTYzqwZ7J/zz1kGjeB88ACzVrWTaA2KKR0/WsLm4ja/jyCq6KuQZ+7m08O2HDfcceT70m9Xys+6HPQTppHpKeRJDFlegadvh762/B1gqcefXZoj+NNPgORwlo3SdM999YFHRGTkgwGDP3TnLrs0DBlLt9C7ER5CKPZHkBEJ65HN8jsxG7I3FJqqcbS+eqL1ZG8TxoeOcGZ3ZIWFdfGOXf0D66SDmDUAr3mfMEdlXrV4xKYcDrp1yV6gcng+BJpsuDrtFoj91Yszr4djZcA8+I5buNst5puGVaDGlwBTlfJfs2ACq9x+nLYQh6EzA==</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="https://idp.test/sso/redirect"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
)";

inline constexpr char kTestSpEntityId[] = "https://gw.test/saml";
inline constexpr char kTestAcsUrl[] = "https://gw.test/auth/saml/acs";

}  // namespace pgwarden::sso::testing
