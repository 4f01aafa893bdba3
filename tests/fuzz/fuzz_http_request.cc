// Fuzzes what controlplane/web parses from an untrusted HTTPS request after cpp-httplib has
// framed it: the Cookie header, query parameters (percent-decoding), the /api/v1 path ->
// admin command mapping with its JSON body, and the session table lookup by cookie.
// Input lines: method, path, query, Cookie header, body (the rest).
// Properties checked: no crash; a mapped command always has the minimum role the role table
// gives it, and its arguments are a JSON object.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "controlplane/web/admin_routes.h"
#include "controlplane/web/browser_sessions.h"
#include "controlplane/web/roles.h"

namespace {

using namespace pgwarden::web;

std::string_view next_line(std::string_view& in) {
  size_t nl = in.find('\n');
  std::string_view line = in.substr(0, nl);
  in = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static BrowserSessions sessions(std::chrono::seconds(60), 16);
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Request req;
  req.method = std::string(next_line(in));
  req.path = std::string(next_line(in));
  req.query = std::string(next_line(in));
  req.headers["cookie"] = std::string(next_line(in));
  req.body = std::string(in);
  (void)req.cookie("pgw_session");
  (void)req.cookie("");
  (void)req.query_param("state");
  (void)req.query_param("");
  (void)sessions.find(req.cookie("pgw_session"));
  auto call = admin_call_for(req);
  if (call.is_ok()) {
    auto role = command_min_role(call->command);
    if (!role || *role != call->min_role || !call->args.is_object()) std::abort();
  }
  return 0;
}
