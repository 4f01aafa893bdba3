#include "controlplane/sso/saml_sp.h"

// libxml2 first: lasso includes it inside extern "C", where ICU's C++ templates (pulled in
// by libxml/encoding.h) do not compile; with the guards set here they are not included again.
#include <libxml/encoding.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
// clang-format off
#include <lasso/lasso.h>
#include <lasso/xml/misc_text_node.h>
#include <lasso/xml/saml-2.0/samlp2_authn_request.h>
#include <lasso/xml/saml-2.0/samlp2_response.h>
#include <lasso/xml/saml-2.0/saml2_assertion.h>
#include <lasso/xml/saml-2.0/saml2_attribute.h>
#include <lasso/xml/saml-2.0/saml2_attribute_statement.h>
#include <lasso/xml/saml-2.0/saml2_attribute_value.h>
#include <lasso/xml/saml-2.0/saml2_audience_restriction.h>
#include <lasso/xml/saml-2.0/saml2_conditions.h>
#include <lasso/xml/saml-2.0/saml2_subject.h>
#include <lasso/xml/saml-2.0/saml2_subject_confirmation.h>
#include <lasso/xml/saml-2.0/saml2_subject_confirmation_data.h>
// clang-format on
#include <openssl/rand.h>

#include <cstdio>
#include <mutex>

#include "controlplane/identity/base64url.h"

namespace pgwarden::sso {
namespace {

constexpr std::string_view kBearer = "urn:oasis:names:tc:SAML:2.0:cm:bearer";

LassoServer* as_server(void* p) { return static_cast<LassoServer*>(p); }

// Owns a GObject reference (LassoLogin).
struct LoginRef {
  LassoLogin* login;
  ~LoginRef() {
    if (login != nullptr) g_object_unref(login);
  }
  LassoProfile* profile() const { return LASSO_PROFILE(login); }
};

Status refused(std::string why) { return unauthenticated("SAML login refused: " + why); }

std::string random_token() {
  unsigned char raw[24];
  if (RAND_bytes(raw, sizeof raw) != 1) return {};
  return identity::base64url_encode(std::string_view(reinterpret_cast<char*>(raw), sizeof raw));
}

std::string_view str(const char* s) { return s == nullptr ? std::string_view() : s; }

// Text values of a saml:Attribute (xs:string values are LassoMiscTextNode children).
std::vector<std::string> attribute_values(LassoSaml2Attribute* attr) {
  std::vector<std::string> out;
  for (GList* v = attr->AttributeValue; v != nullptr; v = v->next) {
    if (!LASSO_IS_SAML2_ATTRIBUTE_VALUE(v->data)) continue;
    for (GList* n = LASSO_SAML2_ATTRIBUTE_VALUE(v->data)->any; n != nullptr; n = n->next) {
      if (LASSO_IS_MISC_TEXT_NODE(n->data) && LASSO_MISC_TEXT_NODE(n->data)->content != nullptr) {
        out.emplace_back(LASSO_MISC_TEXT_NODE(n->data)->content);
      }
    }
  }
  return out;
}

std::vector<std::string> find_attribute(LassoSaml2Assertion* a, std::string_view name) {
  std::vector<std::string> out;
  for (GList* s = a->AttributeStatement; s != nullptr; s = s->next) {
    if (!LASSO_IS_SAML2_ATTRIBUTE_STATEMENT(s->data)) continue;
    for (GList* at = LASSO_SAML2_ATTRIBUTE_STATEMENT(s->data)->Attribute; at != nullptr;
         at = at->next) {
      if (!LASSO_IS_SAML2_ATTRIBUTE(at->data)) continue;
      auto* attr = LASSO_SAML2_ATTRIBUTE(at->data);
      if (str(attr->Name) == name || str(attr->FriendlyName) == name) {
        for (auto& v : attribute_values(attr)) out.push_back(std::move(v));
      }
    }
  }
  return out;
}

// "not before" / "not on or after" against now with skew; `what` names the element.
Status check_window(const char* not_before, const char* not_on_or_after, std::time_t now,
                    std::time_t skew, std::string_view what, bool require_end,
                    std::time_t* end_out) {
  if (not_before != nullptr) {
    auto t = parse_saml_time(not_before);
    if (!t) return refused(std::string(what) + " NotBefore is not a valid time");
    if (now + skew < *t)
      return refused(std::string(what) + " is not valid yet (NotBefore " + not_before +
                     "); check the clocks");
  }
  if (not_on_or_after == nullptr) {
    if (require_end) return refused(std::string(what) + " has no NotOnOrAfter");
    return Status::ok();
  }
  auto t = parse_saml_time(not_on_or_after);
  if (!t) return refused(std::string(what) + " NotOnOrAfter is not a valid time");
  if (now - skew >= *t) {
    return refused("assertion expired (" + std::string(what) + " NotOnOrAfter " + not_on_or_after +
                   ")");
  }
  if (end_out != nullptr && *t > *end_out) *end_out = *t;
  return Status::ok();
}

std::string lasso_reason(int rc) {
  switch (rc) {
    case LASSO_DS_ERROR_SIGNATURE_NOT_FOUND:
    case LASSO_PROFILE_ERROR_CANNOT_VERIFY_SIGNATURE:
      return "the response is not signed by the identity provider";
    case LASSO_DS_ERROR_INVALID_SIGNATURE:
    case LASSO_DS_ERROR_SIGNATURE_VERIFICATION_FAILED:
      return "the signature does not verify against the identity provider's certificate "
             "(tampered, or signed with another key)";
    case LASSO_PROFILE_ERROR_STATUS_NOT_SUCCESS:
      return "the identity provider answered with a failure status";
    case LASSO_SERVER_ERROR_PROVIDER_NOT_FOUND:
    case LASSO_PROFILE_ERROR_UNKNOWN_PROVIDER:
      return "the response was issued by an unknown identity provider";
    default: {
      const char* s = lasso_strerror(rc);
      return std::string("malformed response (") + (s != nullptr ? s : "lasso error") + ")";
    }
  }
}

// The node's original XML has a direct ds:Signature child.
bool has_signature_child(LassoNode* node) {
  xmlNode* x = lasso_node_get_original_xmlnode(node);
  if (x == nullptr) return false;
  for (xmlNode* c = x->children; c != nullptr; c = c->next) {
    if (c->type == XML_ELEMENT_NODE && c->ns != nullptr &&
        xmlStrEqual(c->name, BAD_CAST "Signature") &&
        xmlStrEqual(c->ns->href, BAD_CAST "http://www.w3.org/2000/09/xmldsig#")) {
      return true;
    }
  }
  return false;
}

bool local_path(std::string_view p) {
  if (p.empty() || p[0] != '/' || (p.size() > 1 && (p[1] == '/' || p[1] == '\\'))) return false;
  for (char c : p) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '\\') return false;
  }
  return true;
}

}  // namespace

std::string markup_escape(std::string_view in) {
  std::string out;
  for (char c : in) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::optional<std::time_t> parse_saml_time(std::string_view s) {
  auto digits = [&](std::size_t pos, std::size_t n) -> int {
    if (pos + n > s.size()) return -1;
    int v = 0;
    for (std::size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return -1;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  int year = digits(0, 4), mon = digits(5, 2), day = digits(8, 2), hour = digits(11, 2),
      min = digits(14, 2), sec = digits(17, 2);
  if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 ||
      min < 0 || min > 59 || sec < 0 || sec > 60) {
    return std::nullopt;
  }
  std::size_t pos = 19;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
    if (pos == start || pos - start > 9) return std::nullopt;
  }
  long offset = 0;
  if (pos < s.size() && s[pos] == 'Z') {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh = digits(pos + 1, 2), om = digits(pos + 4, 2);
    if (oh < 0 || om < 0 || oh > 14 || om > 59 || pos + 3 >= s.size() || s[pos + 3] != ':') {
      return std::nullopt;
    }
    offset = (s[pos] == '+' ? 1 : -1) * (oh * 3600L + om * 60L);
    pos += 6;
  }
  if (pos != s.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  std::time_t t = timegm(&tm);
  if (t == static_cast<std::time_t>(-1)) return std::nullopt;
  return t - offset;
}

SamlServiceProvider::SamlServiceProvider(SamlSpConfig config) : config_(std::move(config)) {}

SamlServiceProvider::~SamlServiceProvider() {
  if (server_ != nullptr) g_object_unref(as_server(server_));
}

std::time_t SamlServiceProvider::now() const {
  return config_.now ? config_.now() : std::time(nullptr);
}

Result<std::unique_ptr<SamlServiceProvider>> SamlServiceProvider::create(SamlSpConfig config) {
  static std::once_flag once;
  static int init_rc = 0;
  std::call_once(once, [] {
    // lasso logs every malformed message on stderr (GLib warnings/criticals): hostile POSTs
    // must not write the process's log. Each refusal's reason is in our Status instead.
    for (const char* domain : {"Lasso", "lasso"}) {
      g_log_set_handler(
          domain, static_cast<GLogLevelFlags>(G_LOG_LEVEL_MASK | G_LOG_FLAG_RECURSION),
          [](const gchar*, GLogLevelFlags, const gchar*, gpointer) {}, nullptr);
    }
    init_rc = lasso_init();
  });
  if (init_rc != 0) return internal_error("lasso_init failed: " + lasso_reason(init_rc));

  if (config.entity_id.empty()) return invalid_argument("saml.entity_id is empty");
  if (!config.acs_url.starts_with("https://") && !config.acs_url.starts_with("http://127.0.0.1") &&
      !config.acs_url.starts_with("http://localhost")) {
    return invalid_argument("SAML ACS URL must be https:// (got '" + config.acs_url + "')");
  }
  if (config.idp_metadata_xml.empty()) return invalid_argument("SAML IdP metadata is empty");
  if (config.groups_attribute.empty()) return invalid_argument("saml.groups_attribute is empty");

  std::unique_ptr<SamlServiceProvider> sp(new SamlServiceProvider(std::move(config)));
  const SamlSpConfig& c = sp->config_;
  sp->metadata_ =
      "<?xml version=\"1.0\"?>\n"
      "<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" entityID=\"" +
      markup_escape(c.entity_id) +
      "\">\n"
      "  <md:SPSSODescriptor AuthnRequestsSigned=\"false\" WantAssertionsSigned=\"true\" "
      "protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">\n"
      "    <md:AssertionConsumerService "
      "Binding=\"urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST\" Location=\"" +
      markup_escape(c.acs_url) +
      "\" index=\"0\" isDefault=\"true\"/>\n"
      "  </md:SPSSODescriptor>\n"
      "</md:EntityDescriptor>\n";

  LassoServer* server =
      lasso_server_new_from_buffers(sp->metadata_.c_str(), nullptr, nullptr, nullptr);
  if (server == nullptr) return internal_error("lasso could not load the SP metadata");
  sp->server_ = server;
  int rc = lasso_server_add_provider_from_buffer(server, LASSO_PROVIDER_ROLE_IDP,
                                                 c.idp_metadata_xml.c_str(), nullptr, nullptr);
  if (rc != 0) {
    return invalid_argument("SAML IdP metadata could not be loaded: " + lasso_reason(rc));
  }
  if (g_hash_table_size(server->providers) != 1) {
    return invalid_argument("SAML IdP metadata must describe exactly one identity provider");
  }
  GHashTableIter it;
  gpointer key = nullptr, value = nullptr;
  g_hash_table_iter_init(&it, server->providers);
  if (g_hash_table_iter_next(&it, &key, &value)) {
    sp->idp_entity_id_ = static_cast<const char*>(key);
  }
  if (sp->idp_entity_id_.empty()) return invalid_argument("SAML IdP metadata has no entityID");
  return sp;
}

void SamlServiceProvider::expire_locked(std::time_t t) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    it = (t - it->second.started > config_.request_ttl.count()) ? pending_.erase(it) : ++it;
  }
  for (auto it = seen_.begin(); it != seen_.end();) {
    it = (it->second < t) ? seen_.erase(it) : ++it;
  }
}

Result<std::string> SamlServiceProvider::start_login(std::string_view return_to) {
  std::lock_guard lock(mu_);
  std::time_t t = now();
  expire_locked(t);
  if (pending_.size() >= config_.max_pending) {
    return resource_exhausted("too many SAML logins in progress; try again in a few minutes");
  }
  std::string relay = random_token();
  if (relay.empty()) return internal_error("no randomness for the SAML RelayState");

  LoginRef ref{lasso_login_new(as_server(server_))};
  if (ref.login == nullptr) return internal_error("lasso_login_new failed");
  // Our AuthnRequests are not signed (metadata: AuthnRequestsSigned="false"; the SP has no
  // key). This profile object only builds the request; responses use their own, FORCE.
  lasso_profile_set_signature_hint(ref.profile(), LASSO_PROFILE_SIGNATURE_HINT_FORBID);
  int rc = lasso_login_init_authn_request(ref.login, const_cast<char*>(idp_entity_id_.c_str()),
                                          LASSO_HTTP_METHOD_REDIRECT);
  if (rc != 0) return internal_error("SAML AuthnRequest: " + lasso_reason(rc));
  LassoSamlp2AuthnRequest* req = LASSO_SAMLP2_AUTHN_REQUEST(ref.profile()->request);
  g_free(req->ProtocolBinding);
  req->ProtocolBinding = g_strdup(LASSO_SAML2_METADATA_BINDING_POST);
  g_free(req->AssertionConsumerServiceURL);
  req->AssertionConsumerServiceURL = g_strdup(config_.acs_url.c_str());
  if (req->NameIDPolicy != nullptr) req->NameIDPolicy->AllowCreate = TRUE;
  g_free(ref.profile()->msg_relayState);
  ref.profile()->msg_relayState = g_strdup(relay.c_str());
  rc = lasso_login_build_authn_request_msg(ref.login);
  if (rc != 0 || ref.profile()->msg_url == nullptr) {
    return internal_error("SAML AuthnRequest: " + lasso_reason(rc));
  }
  Pending p;
  p.request_id = str(LASSO_SAMLP2_REQUEST_ABSTRACT(req)->ID);
  p.return_to = local_path(return_to) ? std::string(return_to) : "/";
  p.started = t;
  if (p.request_id.empty()) return internal_error("SAML AuthnRequest without an ID");
  pending_.emplace(relay, std::move(p));
  return std::string(ref.profile()->msg_url);
}

Result<SamlPerson> SamlServiceProvider::consume(std::string_view saml_response_b64,
                                                std::string_view relay_state) {
  if (saml_response_b64.empty()) return refused("no SAMLResponse in the POST");
  if (saml_response_b64.size() > config_.max_response_bytes) {
    return refused("SAMLResponse larger than " + std::to_string(config_.max_response_bytes) +
                   " bytes");
  }
  std::lock_guard lock(mu_);
  std::time_t t = now();
  expire_locked(t);
  // One answer per started login: the entry goes whatever the outcome.
  auto pit = pending_.find(std::string(relay_state));
  if (pit == pending_.end()) {
    return refused(
        "no login in progress for this RelayState (expired, already used, or not "
        "started here); start the login again");
  }
  Pending pending = std::move(pit->second);
  pending_.erase(pit);

  LoginRef ref{lasso_login_new(as_server(server_))};
  if (ref.login == nullptr) return internal_error("lasso_login_new failed");
  lasso_profile_set_signature_verify_hint(ref.profile(), LASSO_PROFILE_SIGNATURE_VERIFY_HINT_MAYBE);
  std::string msg(saml_response_b64);
  int rc = lasso_login_process_authn_response_msg(ref.login, msg.data());
  // lasso (VERIFY_HINT_MAYBE, lasso >= 2.7) answers 0 only when the Response's signature or,
  // for an unsigned Response, every Assertion's signature verified against the IdP's key;
  // unsigned → LASSO_DS_ERROR_SIGNATURE_NOT_FOUND. (FORCE would refuse the common
  // "only the assertion is signed" IdP setting.)
  if (rc != 0) return refused(lasso_reason(rc));
  bool response_signed = ref.profile()->signature_status == 0;
  if (!LASSO_IS_SAMLP2_RESPONSE(ref.profile()->response)) return refused("not a SAML Response");
  auto* response = LASSO_SAMLP2_RESPONSE(ref.profile()->response);
  auto* status_response = LASSO_SAMLP2_STATUS_RESPONSE(response);
  if (response->EncryptedAssertion != nullptr) {
    return refused("encrypted assertions are not supported; configure the IdP to sign only");
  }
  if (response->Assertion == nullptr || response->Assertion->next != nullptr) {
    return refused("the response must carry exactly one assertion");
  }
  if (status_response->Issuer != nullptr &&
      str(status_response->Issuer->content) != idp_entity_id_) {
    return refused("response issuer '" + std::string(str(status_response->Issuer->content)) +
                   "' is not the configured IdP");
  }
  if (status_response->Destination != nullptr &&
      str(status_response->Destination) != config_.acs_url) {
    return refused("response Destination '" + std::string(str(status_response->Destination)) +
                   "' is not this ACS (" + config_.acs_url + ")");
  }
  if (status_response->InResponseTo != nullptr &&
      str(status_response->InResponseTo) != pending.request_id) {
    return refused("the response answers another request (InResponseTo)");
  }
  if (!LASSO_IS_SAML2_ASSERTION(response->Assertion->data)) return refused("bad assertion");
  auto* a = LASSO_SAML2_ASSERTION(response->Assertion->data);
  if (a->Issuer == nullptr || str(a->Issuer->content) != idp_entity_id_) {
    return refused("assertion issuer is not the configured IdP (" + idp_entity_id_ + ")");
  }
  if (str(a->ID).empty()) return refused("assertion without an ID");
  // Belt and braces for an unsigned Response: the assertion lasso verified carries its own
  // ds:Signature (so a lasso regression that let a missing signature pass fails closed here).
  if (!response_signed && !has_signature_child(LASSO_NODE(a))) {
    return refused(lasso_reason(LASSO_DS_ERROR_SIGNATURE_NOT_FOUND));
  }

  // Audience: every AudienceRestriction must name us (SAML core 2.5.1.4).
  std::time_t skew = config_.clock_skew.count();
  std::time_t forget_after = t;
  if (a->Conditions == nullptr || a->Conditions->AudienceRestriction == nullptr) {
    return refused("assertion has no audience restriction");
  }
  for (GList* r = a->Conditions->AudienceRestriction; r != nullptr; r = r->next) {
    auto* ar = LASSO_SAML2_AUDIENCE_RESTRICTION(r->data);
    if (ar == nullptr || str(ar->Audience) != config_.entity_id) {
      return refused("assertion is for another audience ('" +
                     std::string(ar != nullptr ? str(ar->Audience) : "") + "', expected '" +
                     config_.entity_id + "')");
    }
  }
  PGW_RETURN_IF_ERROR(check_window(a->Conditions->NotBefore, a->Conditions->NotOnOrAfter, t, skew,
                                   "Conditions", false, &forget_after));

  // Bearer subject confirmation for our ACS, answering our request.
  if (a->Subject == nullptr || a->Subject->SubjectConfirmation == nullptr) {
    return refused("assertion has no SubjectConfirmation");
  }
  auto* sc = a->Subject->SubjectConfirmation;
  if (str(sc->Method) != kBearer) return refused("SubjectConfirmation method is not bearer");
  auto* scd = sc->SubjectConfirmationData;
  if (scd == nullptr) return refused("SubjectConfirmation has no SubjectConfirmationData");
  if (str(scd->Recipient) != config_.acs_url) {
    return refused("SubjectConfirmationData Recipient '" + std::string(str(scd->Recipient)) +
                   "' is not this ACS (" + config_.acs_url + ")");
  }
  if (str(scd->InResponseTo) != pending.request_id) {
    return refused(scd->InResponseTo == nullptr
                       ? "unsolicited assertion (no InResponseTo); start the login at pgwarden"
                       : "the assertion answers another request (InResponseTo)");
  }
  PGW_RETURN_IF_ERROR(check_window(scd->NotBefore, scd->NotOnOrAfter, t, skew,
                                   "SubjectConfirmationData", true, &forget_after));
  if (a->AuthnStatement == nullptr) return refused("assertion has no AuthnStatement");

  std::string id = a->ID;
  if (seen_.contains(id)) return refused("assertion " + id + " was already used (replay)");

  SamlPerson person;
  if (config_.name_attribute.empty()) {
    if (a->Subject->NameID != nullptr) person.name = str(a->Subject->NameID->content);
  } else {
    auto v = find_attribute(a, config_.name_attribute);
    if (!v.empty()) person.name = v.front();
  }
  if (person.name.empty()) {
    return refused(config_.name_attribute.empty()
                       ? "assertion has no NameID"
                       : "assertion has no attribute '" + config_.name_attribute + "'");
  }
  person.groups = find_attribute(a, config_.groups_attribute);
  person.idp_entity_id = idp_entity_id_;
  person.assertion_id = id;
  person.return_to = pending.return_to;
  seen_[id] = forget_after + skew;
  return person;
}

}  // namespace pgwarden::sso
