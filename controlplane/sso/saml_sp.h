// A SAML 2.0 service provider for the web console (Web Browser SSO profile, SAML 2.0 core and
// bindings, OASIS 2005): the console sends people to the identity provider with an
// AuthnRequest (HTTP-Redirect binding) and receives the IdP's signed Response at its
// AssertionConsumerService (HTTP-POST binding).
//
// XML parsing, canonicalisation and the XML-DSig check are Debian's lasso (which uses xmlsec1
// and libxml2); this class adds what decides whether a person is logged in, each with an error
// a human can act on:
//  * the Response or the Assertion must carry a valid signature by the IdP's key from the
//    configured IdP metadata (unsigned → refused, whatever lasso's defaults are);
//  * exactly one Assertion, issued by the configured IdP;
//  * Audience == our entity ID; SubjectConfirmation (bearer) Recipient == our ACS URL;
//  * NotBefore / NotOnOrAfter of the Conditions and of the SubjectConfirmationData, with
//    `clock_skew`;
//  * InResponseTo names a request this SP made, for the same RelayState, not yet answered
//    and not older than `request_ttl` (no unsolicited, IdP-initiated logins);
//  * an Assertion ID is accepted once (replay cache until its NotOnOrAfter).
// Groups come from the attribute named `groups_attribute`; the caller maps them to roles.
//
// Thread-safety: all public methods may be called concurrently (one mutex; lasso is not
// thread-safe and SSO logins are rare).
#pragma once

#include <chrono>
#include <cstddef>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pgwarden::sso {

struct SamlSpConfig {
  std::string entity_id;         // this SP's entity ID, e.g. "https://gw.example/saml"
  std::string acs_url;           // public URL of the ACS, e.g. "https://gw.example/auth/saml/acs"
  std::string idp_metadata_xml;  // the IdP's EntityDescriptor (entity ID, SSO URL, signing cert)
  std::string groups_attribute = "groups";  // attribute whose values are the person's groups
  std::string name_attribute;  // attribute naming the person; empty = the Subject's NameID
  std::chrono::seconds clock_skew{60};
  std::chrono::seconds request_ttl{600};        // how long a started login may take at the IdP
  std::size_t max_pending = 4096;               // cap on started, unanswered logins
  std::size_t max_response_bytes = 256 * 1024;  // cap on the POSTed SAMLResponse (base64)
  // Clock, for tests; default std::time(nullptr).
  std::function<std::time_t()> now;
};

// A person the IdP vouched for.
struct SamlPerson {
  std::string name;                 // NameID or `name_attribute`'s first value
  std::vector<std::string> groups;  // values of `groups_attribute`
  std::string idp_entity_id;
  std::string assertion_id;
  std::string return_to;  // the local path given to start_login()
};

class SamlServiceProvider {
 public:
  // Loads the IdP metadata; fails on a config that cannot work (no entity ID, an ACS URL that
  // is not https:// or http://127.0.0.1, metadata without an IdP signing certificate).
  static Result<std::unique_ptr<SamlServiceProvider>> create(SamlSpConfig config);
  ~SamlServiceProvider();
  SamlServiceProvider(const SamlServiceProvider&) = delete;
  SamlServiceProvider& operator=(const SamlServiceProvider&) = delete;

  // This SP's metadata (EntityDescriptor) for the IdP administrator.
  const std::string& metadata_xml() const { return metadata_; }
  const std::string& idp_entity_id() const { return idp_entity_id_; }

  // Starts a login: returns the IdP URL to redirect the browser to (AuthnRequest with a fresh
  // ID and an opaque RelayState). `return_to` must be a local absolute path ("/console/...");
  // anything else (another host, "//x", a scheme) is replaced by "/".
  Result<std::string> start_login(std::string_view return_to);

  // Consumes the POSTed SAMLResponse (base64) and RelayState. On success the request is
  // answered and the assertion ID remembered; every failure says why (kUnauthenticated).
  Result<SamlPerson> consume(std::string_view saml_response_b64, std::string_view relay_state);

 private:
  struct Pending {
    std::string request_id;
    std::string return_to;
    std::time_t started = 0;
  };
  explicit SamlServiceProvider(SamlSpConfig config);
  std::time_t now() const;
  void expire_locked(std::time_t now);

  SamlSpConfig config_;
  std::string metadata_;
  std::string idp_entity_id_;
  void* server_ = nullptr;  // LassoServer*, kept out of this header (GLib)

  std::mutex mu_;
  std::map<std::string, Pending> pending_;   // by RelayState token
  std::map<std::string, std::time_t> seen_;  // assertion ID → forget after
};

// Parses an xs:dateTime as SAML uses it ("2026-12-06T19:00:00Z", optional fraction, "Z" or
// "+hh:mm"); nullopt on anything else. Exposed for tests and the fuzz target.
std::optional<std::time_t> parse_saml_time(std::string_view text);

// `in` with &, <, >, " and ' as character references: safe in XML and HTML text and in
// quoted attribute values (the SP's metadata, the ACS's error page).
std::string markup_escape(std::string_view in);

}  // namespace pgwarden::sso
