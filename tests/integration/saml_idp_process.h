// The test SAML identity provider (tests/support/saml_idp.py, Debian's python3-pysaml2) as a
// child process, for the SAML tests: it writes its metadata into `dir` and answers
// AuthnRequests with auto-submitting POST forms (see the script's header for the modes that
// make bad responses on purpose). Dies with the test process. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

#include "common/status.h"

namespace pgwarden::testing {

class SamlIdpProcess {
 public:
  SamlIdpProcess() = default;
  ~SamlIdpProcess() { stop(); }
  SamlIdpProcess(const SamlIdpProcess&) = delete;
  SamlIdpProcess& operator=(const SamlIdpProcess&) = delete;

  // Starts the IdP (files and log in `dir`), reading the SP's metadata from `sp_metadata_path`
  // at each request, and waits for its READY line. `groups` is comma separated.
  Status start(const std::string& dir, const std::string& sp_metadata_path,
               const std::string& user = "alice", const std::string& groups = "pgw-reviewers");
  void stop();

  int port() const { return port_; }
  std::string metadata_xml() const;  // the IdP's EntityDescriptor

  // GETs the IdP's SSO redirect URL (as a browser following the SP's redirect would, with
  // `&mode=..` appended when not empty) and returns the auto-POST form's fields
  // ("action", "SAMLResponse", "RelayState").
  Result<std::map<std::string, std::string>> follow_redirect(const std::string& url,
                                                             const std::string& mode = "");

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;
};

}  // namespace pgwarden::testing
