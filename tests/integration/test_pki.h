// A throwaway PKI for TLS integration tests, made with the openssl CLI in `dir`:
//   ca.crt / ca.key          a CA ("pgw-test-ca")
//   rogue.crt / rogue.key    an unrelated CA ("rogue-ca"), for "untrusted certificate" cases
//   server.crt / server.key  a server certificate signed by ca.crt naming only IP 127.0.0.1
//                            (so "localhost" is a wrong host name)
// Keys are P-256, certificates valid for one day. The CLI's output goes to dir/openssl.log.
#pragma once

#include <cstdlib>
#include <string>

namespace pgwarden::testing {

// True when every file was made.
inline bool make_test_pki(const std::string& dir) {
  std::string cmd =
      "cd '" + dir +
      "' && "
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=pgw-test-ca"
      " -keyout ca.key -out ca.crt -days 1 && "
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=rogue-ca"
      " -keyout rogue.key -out rogue.crt -days 1 && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1"
      " -keyout server.key -out server.csr && "
      "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n"
      "extendedKeyUsage=serverAuth\\n' > ext.cnf && "
      "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial"
      " -out server.crt -days 1 -extfile ext.cnf";
  return std::system(("(" + cmd + ") >'" + dir + "/openssl.log' 2>&1").c_str()) == 0;
}

}  // namespace pgwarden::testing
