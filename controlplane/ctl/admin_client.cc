#include "controlplane/ctl/admin_client.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/protocol/client.h"
#include "controlplane/ctl/token_cache.h"
#include "controlplane/net/http_client.h"

namespace pgwarden::ctl {

using json = nlohmann::json;

std::optional<std::string> ParsedArgs::get(std::string_view name) const {
  auto it = options.find(std::string(name));
  if (it == options.end()) return std::nullopt;
  return it->second;
}

Result<ParsedArgs> parse_args(std::span<const std::string_view> args,
                              const std::set<std::string>& flag_names) {
  ParsedArgs p;
  bool options_end = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (!options_end && a == "--") {
      options_end = true;  // everything after `--` is positional
    } else if (!options_end && a.size() > 2 && a.starts_with("--")) {
      std::string name(a);
      if (size_t eq = name.find('='); eq != std::string::npos) {
        p.options[name.substr(0, eq)] = name.substr(eq + 1);
      } else if (flag_names.count(name) || name == "--json") {
        p.flags.insert(name);
      } else if (i + 1 < args.size()) {
        p.options[name] = std::string(args[++i]);
      } else {
        return invalid_argument("option " + name + " needs a value");
      }
    } else {
      p.positional.emplace_back(a);
    }
  }
  return p;
}

int exit_code_for(std::string_view code) {
  if (code == "unauthenticated" || code == "permission_denied") return kExitAdminDenied;
  if (code == "not_found") return kExitAdminNotFound;
  if (code == "unavailable") return kExitAdminUnreachable;
  return kExitAdminFailure;
}

int exit_code_for(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return kExitAdminOk;
    case StatusCode::kUnauthenticated:
    case StatusCode::kPermissionDenied:
      return kExitAdminDenied;
    case StatusCode::kNotFound:
      return kExitAdminNotFound;
    case StatusCode::kUnavailable:
      return kExitAdminUnreachable;
    default:
      return kExitAdminFailure;
  }
}

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

Status status_from_error(const json& error) {
  std::string code = error.value("code", "internal");
  std::string message = error.value("message", "error");
  if (code == "unauthenticated") return unauthenticated(message);
  if (code == "permission_denied") return permission_denied(message);
  if (code == "not_found") return not_found(message);
  if (code == "invalid_argument") return invalid_argument(message);
  if (code == "failed_precondition") return failed_precondition(message);
  if (code == "resource_exhausted") return resource_exhausted(message);
  // The cp answered, so "unavailable" here means a missing backend, not an unreachable cp.
  return internal_error(message);
}

}  // namespace

Result<AdminClient> AdminClient::from_args(const ParsedArgs& args) {
  AdminClient c;
  c.server_ = args.get("--server").value_or(env("PGWARDEN_SERVER"));
  if (!c.server_.empty()) {
    while (c.server_.size() > 8 && c.server_.back() == '/') c.server_.pop_back();
    auto url = net::parse_url(c.server_);
    if (!url.is_ok()) return invalid_argument("--server: " + url.status().message());
    c.cacert_ = args.get("--cacert").value_or(env("PGWARDEN_CACERT"));
    std::string file = args.get("--token-file").value_or(env("PGWARDEN_TOKEN_FILE"));
    if (!file.empty()) {
      std::ifstream in(file);
      if (!in) return invalid_argument("cannot read token file " + file);
      std::getline(in, c.token_);
      while (!c.token_.empty() && (c.token_.back() == '\r' || c.token_.back() == ' ')) {
        c.token_.pop_back();
      }
    } else if (std::string t = env("PGWARDEN_TOKEN"); !t.empty()) {
      c.token_ = t;
    } else {
      auto cached = load_cached_token(c.server_);
      if (!cached.is_ok()) return cached.status();
      c.token_ = *cached;
    }
    if (c.token_.empty()) {
      return unauthenticated("no token for " + c.server_ + ": run `pgwardenctl login --server " +
                             c.server_ + "` or use --token-file / PGWARDEN_TOKEN");
    }
    return c;
  }
  c.socket_ = args.get("--socket").value_or(env("PGWARDEN_ADMIN_SOCKET"));
  if (c.socket_.empty()) c.socket_ = "/run/pgwarden/admin.sock";
  c.principal_ = args.get("--principal").value_or(env("PGWARDEN_ADMIN_PRINCIPAL"));
  std::string file = args.get("--credential-file").value_or(env("PGWARDEN_ADMIN_CREDENTIAL_FILE"));
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) return invalid_argument("cannot read credential file " + file);
    std::getline(in, c.credential_);
    if (!c.credential_.empty() && c.credential_.back() == '\r') c.credential_.pop_back();
  } else {
    c.credential_ = env("PGWARDEN_ADMIN_CREDENTIAL");
  }
  if (c.principal_.empty()) {
    return invalid_argument("no admin principal: use --principal or PGWARDEN_ADMIN_PRINCIPAL");
  }
  if (c.credential_.empty()) {
    return invalid_argument(
        "no admin credential: use --credential-file, PGWARDEN_ADMIN_CREDENTIAL_FILE or "
        "PGWARDEN_ADMIN_CREDENTIAL");
  }
  return c;
}

Result<json> AdminClient::call_https(const std::string& command, const json& args) const {
  std::string url = server_ + "/api/v1/commands/" + net::url_encode(command);
  std::string body = args.dump();
  std::string authorization = "Bearer " + token_;
  net::HttpRequest request;
  request.method = "POST";
  request.headers = {{"Authorization", authorization},
                     {"Content-Type", "application/json"},
                     {"Accept", "application/json"}};
  request.body = body;
  net::HttpClientOptions options;
  options.ca_file = cacert_;
  options.timeout = std::chrono::milliseconds(60000);
  options.max_response_bytes = 64 * 1024 * 1024;
  auto response = net::http_request(url, request, options);
  std::fill(authorization.begin(), authorization.end(), '\0');
  if (!response.is_ok()) {
    return unavailable("cannot reach pgwarden-cp at " + server_ + ": " +
                       response.status().message());
  }
  json reply = json::parse(response->body, nullptr, false);
  if (!reply.is_object()) {
    return internal_error("malformed answer from " + server_ + " (HTTP " +
                          std::to_string(response->status) + ")");
  }
  if (reply.value("ok", false)) return reply.value("result", json::object());
  if (!reply.contains("error") || !reply["error"].is_object()) {
    return internal_error("malformed answer from " + server_);
  }
  if (response->status == 429) return resource_exhausted(reply["error"].value("message", ""));
  if (response->status == 401) {
    // The token is expired, for another audience or issuer, or not signed by the IdP: say
    // what the server said and how to get a good one.
    return unauthenticated(reply["error"].value("message", "token refused") +
                           "; log in again: pgwardenctl login --server " + server_);
  }
  return status_from_error(reply["error"]);
}

Result<json> AdminClient::call(const std::string& command, const json& args) const {
  if (!server_.empty()) return call_https(command, args);
  protocol::BlockingClient client;
  client.set_max_frame_bytes(protocol::kMaxAdminReplyBytes);  // a replay is one reply
  Status s = client.connect(socket_);
  if (!s.is_ok()) return unavailable("cannot reach pgwarden-cp at " + socket_ + ": " + s.message());
  json request{{"id", client.next_id()}, {"type", "admin"},         {"command", command},
               {"args", args},           {"principal", principal_}, {"credential", credential_}};
  auto response = client.call(std::move(request), 60000);
  if (!response.is_ok()) {
    return unavailable("no answer from pgwarden-cp: " + response.status().message());
  }
  if (response->value("ok", false)) return response->value("result", json::object());
  if (!response->contains("error") || !(*response)["error"].is_object()) {
    return internal_error("malformed answer from pgwarden-cp");
  }
  return status_from_error((*response)["error"]);
}

void print_table(std::ostream& out, const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < cells.size() && i < width.size(); ++i) {
      text += cells[i];
      if (i + 1 < cells.size()) text += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    out << text << "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
}

std::string format_time_ms(int64_t ms) {
  if (ms <= 0) return "-";
  time_t secs = static_cast<time_t>(ms / 1000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &t);
  return buf;
}

std::optional<int64_t> parse_duration_s(std::string_view text) {
  if (text.empty()) return std::nullopt;
  int64_t unit = 1;
  switch (text.back()) {
    case 's':
      text.remove_suffix(1);
      break;
    case 'm':
      unit = 60;
      text.remove_suffix(1);
      break;
    case 'h':
      unit = 3600;
      text.remove_suffix(1);
      break;
    case 'd':
      unit = 86400;
      text.remove_suffix(1);
      break;
    default:
      break;
  }
  if (text.empty() || text.size() > 9) return std::nullopt;
  int64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  if (n <= 0) return std::nullopt;
  return n * unit;
}

std::string scalar_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_null()) return "-";
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace pgwarden::ctl
