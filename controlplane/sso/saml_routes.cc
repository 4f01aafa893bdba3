#include "controlplane/sso/saml_routes.h"

#include <fstream>
#include <sstream>
#include <string>

namespace pgwarden::sso {
namespace {

web::Response refused_page(int status, const std::string& reason) {
  web::Response r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body =
      "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Sign-in refused</title>"
      "</head><body><h1>Sign-in refused</h1><p id=\"reason\">" +
      markup_escape(reason) +
      "</p><p><a href=\"/console/\">Back to the console</a></p></body></html>";
  return r;
}

// A field of an application/x-www-form-urlencoded body, decoded the same way as a query
// parameter.
std::string form_field(const web::Request& request, std::string_view name) {
  web::Request form;
  form.query = request.body;
  return form.query_param(name);
}

}  // namespace

Result<std::shared_ptr<SamlServiceProvider>> saml_sp_from_config(const config::HttpSettings& http) {
  if (!http.saml) return failed_precondition("$.control_plane.http.saml is not configured");
  const config::HttpSamlSettings& s = *http.saml;
  std::ifstream in(s.idp_metadata_file);
  if (!in) {
    return invalid_argument("$.control_plane.http.saml.idp_metadata_file: cannot read " +
                            s.idp_metadata_file);
  }
  std::ostringstream xml;
  xml << in.rdbuf();
  std::string base = http.public_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  SamlSpConfig c;
  c.entity_id = s.entity_id.empty() ? base + kSamlMetadataPath : s.entity_id;
  c.acs_url = base + kSamlAcsPath;
  c.idp_metadata_xml = xml.str();
  c.groups_attribute = s.groups_attribute;
  c.name_attribute = s.name_attribute;
  c.clock_skew = std::chrono::seconds(s.clock_skew_s);
  auto sp = SamlServiceProvider::create(std::move(c));
  if (!sp.is_ok()) return sp.status();
  return std::shared_ptr<SamlServiceProvider>(std::move(*sp));
}

void register_saml_routes(web::HttpsServer& https, std::shared_ptr<SamlServiceProvider> sp) {
  https.add_route({.method = "GET",
                   .prefix = kSamlMetadataPath,
                   .access = web::Access::kPublic,
                   .handler = [sp](const web::Request&) {
                     web::Response r;
                     r.content_type = "application/samlmetadata+xml";
                     r.body = sp->metadata_xml();
                     return r;
                   }});
  https.add_route(
      {.method = "GET",
       .prefix = "/auth/saml/config",
       .access = web::Access::kPublic,
       .handler = [sp](const web::Request&) {
         return web::Response::json(
             200, {{"ok", true}, {"result", {{"enabled", true}, {"idp", sp->idp_entity_id()}}}});
       }});
  https.add_route({.method = "GET",
                   .prefix = "/auth/saml/login",
                   .access = web::Access::kPublic,
                   .login = true,
                   .handler = [sp](const web::Request& request) {
                     std::string return_to = request.query_param("return_to");
                     auto url = sp->start_login(return_to.empty() ? "/console/" : return_to);
                     if (!url.is_ok()) return web::Response::from_status(url.status());
                     return web::Response::redirect(*url);
                   }});
  web::HttpsServer* server = &https;
  https.add_route(
      {.method = "POST",
       .prefix = kSamlAcsPath,
       .access = web::Access::kPublic,
       .login = true,
       .handler = [sp, server](const web::Request& request) {
         auto person =
             sp->consume(form_field(request, "SAMLResponse"), form_field(request, "RelayState"));
         if (!person.is_ok()) {
           server->audit().record(audit::AuditRecord{.event = "http_login",
                                                     .client_addr = request.remote_ip,
                                                     .decision = "rejected",
                                                     .reason = person.status().message(),
                                                     .extra = {{"via", "saml"}}});
           int status = person.status().code() == StatusCode::kUnauthenticated ? 401 : 500;
           return refused_page(status, person.status().message());
         }
         return server->start_browser_session(person->name, person->groups, "saml", request,
                                              person->return_to);
       }});
}

}  // namespace pgwarden::sso
