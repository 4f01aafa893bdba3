#include "controlplane/fleet/remote_recording.h"

#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "controlplane/net/http_client.h"
#include "controlplane/recording/recorder.h"

namespace pgwarden::fleet {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr std::string_view kOpenHeader = "X-Pgwarden-Recording-Open";
constexpr std::string_view kCheckpointHeader = "X-Pgwarden-Recording-Checkpoint";

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

web::Response serve_recording(const NodeRoutesOptions& o, const web::Request& req) {
  std::string id = req.path.substr(kNodeRecordingsPath.size());
  std::string from = req.header(lower(kNodeHeader));
  audit::AuditRecord a{.event = "node_request", .session_id = id};
  a.extra["node"] = from;
  a.extra["path"] = req.path;
  a.extra["remote_ip"] = req.remote_ip;
  auto refuse = [&](int status, std::string_view code, const std::string& why) {
    a.decision = "rejected";
    a.reason = why;
    o.audit->record(a);
    return web::Response::error(status, code, why);
  };
  Status auth =
      o.key->verify(req.method, req.path, from, o.node_id, req.header(lower(kNodeTimeHeader)),
                    req.header(lower(kNodeSignatureHeader)), now_ms());
  if (!auth.is_ok()) {
    spdlog::warn("node request {} from {} ({}) refused: {}", req.path, from, req.remote_ip,
                 auth.message());
    return refuse(401, "unauthenticated", auth.message());
  }
  if (!recording::valid_session_id(id)) return refuse(400, "invalid_argument", "bad session id");
  std::string path = o.recordings_dir() + "/" + id + ".jsonl";
  std::ifstream in(path, std::ios::binary);
  if (!in) return refuse(404, "not_found", "no recording for session " + id + " on this node");
  std::stringstream data;
  data << in.rdbuf();
  web::Response out;
  out.content_type = "application/octet-stream";
  out.body = data.str();
  out.headers.emplace_back(kOpenHeader, o.recording_open(id) ? "true" : "false");
  json head = nullptr;
  if (auto cp = recording::read_checkpoint(o.checkpoint_path()); cp.is_ok()) {
    if (auto it = cp->heads.find(id); it != cp->heads.end()) {
      head =
          json{{"seq", it->second.seq}, {"hash", it->second.hash}, {"sealed", it->second.sealed}};
    }
  }
  out.headers.emplace_back(kCheckpointHeader, head.dump());
  a.decision = "served";
  a.extra["bytes"] = out.body.size();
  o.audit->record(a);
  return out;
}

}  // namespace

void register_node_routes(web::HttpsServer& server, NodeRoutesOptions options) {
  // Public to the HTTPS layer: no person logs in here; the handler checks the node signature
  // before it reads anything.
  server.add_route(web::Route{
      .method = "GET",
      .prefix = std::string(kNodeRecordingsPath.substr(0, kNodeRecordingsPath.size() - 1)),
      .access = web::Access::kPublic,
      .handler = [o = std::move(options)](const web::Request& req) {
        return serve_recording(o, req);
      }});
}

FetchedRecording::~FetchedRecording() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

Result<std::unique_ptr<FetchedRecording>> fetch_recording(const FetchOptions& o,
                                                          const std::string& id) {
  auto entry = o.store->find_recording(id);
  if (!entry.is_ok()) return entry.status();
  if (!entry->has_value() || (*entry)->node_id == o.store->node_id()) {
    return not_found("no recording for session " + id);
  }
  const std::string node_id = (*entry)->node_id;
  const std::string where = "the recording of session " + id + " is on node " + node_id;
  if (!o.key) {
    return failed_precondition(where + "; fetching it needs state_store.node_key_file here " +
                               "(or run pgwardenctl on " + node_id + ")");
  }
  auto node = o.store->find_node(node_id);
  if (!node.is_ok()) return node.status();
  if (!node->has_value() || (*node)->admin_url.empty()) {
    return failed_precondition(where + ", which advertises no admin_url (run pgwardenctl there)");
  }
  std::string base = (*node)->admin_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::string path = std::string(kNodeRecordingsPath) + id;
  std::string url = base + path;
  const int64_t now = now_ms();
  std::string ts = std::to_string(now);
  std::string signature = o.key->sign("GET", path, o.store->node_id(), node_id, now);
  net::HttpRequest req;
  req.headers = {
      {kNodeHeader, o.store->node_id()}, {kNodeTimeHeader, ts}, {kNodeSignatureHeader, signature}};
  net::HttpClientOptions ho;
  ho.ca_file = o.ca_file;
  ho.timeout = std::chrono::milliseconds(o.timeout_ms);
  ho.connect_timeout = std::chrono::milliseconds(std::min(o.timeout_ms, 3000));
  ho.max_response_bytes = kMaxFetchedRecordingBytes;
  auto r = net::http_request(url, req, ho);
  if (!r.is_ok()) {
    return unavailable(where + " (" + base + "), which cannot be reached: " + r.status().message());
  }
  if (r->status == 404) return not_found("no recording for session " + id + " on node " + node_id);
  if (r->status != 200) {
    json body = json::parse(r->body, nullptr, false);
    std::string why = body.is_object() && body.contains("error") && body["error"].is_object()
                          ? body["error"].value("message", std::string())
                          : std::string();
    return unavailable(where + " (" + base + "), which refused to send it: HTTP " +
                       std::to_string(r->status) + (why.empty() ? "" : ": " + why));
  }
  std::string tmpl = o.temp_parent + "/fetched-recording-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return unavailable("cannot create a temporary directory in " + o.temp_parent);
  }
  auto fetched = std::make_unique<FetchedRecording>(node_id, base, (*entry)->file, tmpl,
                                                    tmpl + "/" + id + ".jsonl");
  {
    std::ofstream out(fetched->path(), std::ios::binary | std::ios::trunc);
    out.write(r->body.data(), static_cast<std::streamsize>(r->body.size()));
    if (!out) return unavailable("cannot write the fetched recording to " + tmpl);
  }
  ::chmod(fetched->path().c_str(), 0600);
  fetched->open = r->header(lower(kOpenHeader)) == "true";
  json head = json::parse(r->header(lower(kCheckpointHeader)), nullptr, false);
  if (head.is_object() && head.contains("seq") && head["seq"].is_number_unsigned() &&
      head.contains("hash") && head["hash"].is_string()) {
    fetched->checkpoint.heads[id] = recording::ChainHead{
        head["seq"].get<uint64_t>(), head["hash"].get<std::string>(), head.value("sealed", false)};
  }
  return fetched;
}

}  // namespace pgwarden::fleet
