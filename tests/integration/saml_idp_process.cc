#include "tests/integration/saml_idp_process.h"

#include <signal.h>
#include <sys/wait.h>

#include <string_view>

#include "common/source_root.h"
#include "controlplane/net/http_client.h"
#include "tests/integration/cp_process.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

std::string html_unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    static constexpr std::pair<std::string_view, char> kEntities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&#x27;", '\''}};
    bool done = false;
    for (auto [name, c] : kEntities) {
      if (s.substr(i, name.size()) == name) {
        out += c;
        i += name.size() - 1;
        done = true;
        break;
      }
    }
    if (!done) out += '&';
  }
  return out;
}

// The value="..." of the element whose text starts at `from` (the IdP's form is ours: one
// attribute per name, double quotes).
std::string attribute_after(const std::string& html, std::size_t from, std::string_view attr) {
  std::size_t end = html.find('>', from);
  std::string key = std::string(attr) + "=\"";
  std::size_t p = html.find(key, from);
  if (p == std::string::npos || p > end) return {};
  p += key.size();
  return html_unescape(std::string_view(html).substr(p, html.find('"', p) - p));
}

}  // namespace

Status SamlIdpProcess::start(const std::string& dir, const std::string& sp_metadata_path,
                             const std::string& user, const std::string& groups) {
  dir_ = dir;
  std::string log = dir + "/saml_idp.log";
  auto pid = spawn_logged(
      {"/usr/bin/python3", std::string(PGW_SOURCE_ROOT) + "/tests/support/saml_idp.py", "--dir",
       dir, "--sp-metadata", sp_metadata_path, "--user", user, "--groups", groups},
      log);
  if (!pid.is_ok()) return pid.status();
  pid_ = *pid;
  bool ready = eventually(
      [&] {
        std::string text = slurp(log);
        std::size_t p = text.find("READY ");
        if (p == std::string::npos) return waitpid(pid_, nullptr, WNOHANG) != 0;
        port_ = std::atoi(text.c_str() + p + 6);
        return true;
      },
      60000);
  if (!ready || port_ <= 0) {
    return unavailable("the test SAML IdP did not start: " + slurp(log));
  }
  return Status::ok();
}

void SamlIdpProcess::stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string SamlIdpProcess::metadata_xml() const { return slurp(dir_ + "/idp-metadata.xml"); }

Result<std::map<std::string, std::string>> SamlIdpProcess::follow_redirect(
    const std::string& url, const std::string& mode) {
  net::HttpClientOptions opt;
  opt.allow_plain_http = true;
  opt.timeout = std::chrono::milliseconds(30000);
  auto resp =
      net::http_request(mode.empty() ? url : url + "&mode=" + mode, net::HttpRequest{}, opt);
  if (!resp.is_ok()) return resp.status();
  if (resp->status != 200) {
    return internal_error("IdP answered " + std::to_string(resp->status) + ": " + resp->body);
  }
  const std::string& html = resp->body;
  std::map<std::string, std::string> form;
  std::size_t f = html.find("<form");
  if (f == std::string::npos) return internal_error("no form in the IdP's answer: " + html);
  form["action"] = attribute_after(html, f, "action");
  for (const char* name : {"SAMLResponse", "RelayState"}) {
    std::size_t p = html.find(std::string("name=\"") + name + "\"");
    if (p == std::string::npos) return internal_error(std::string("no ") + name + " field");
    form[name] = attribute_after(html, html.rfind('<', p), "value");
  }
  return form;
}

}  // namespace pgwarden::testing
