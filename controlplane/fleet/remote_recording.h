// Recordings of other nodes (docs/scale-out.md, "Recordings of other nodes"). Recordings stay
// files on the node that recorded them; the state store's index names that node and the node
// its HTTPS admin URL. This module is both ends of fetching one:
//
//  * serving: register_node_routes() adds GET /api/v1/node/recordings/<session id> to this
//    node's HTTPS server. Only other nodes of the fleet may call it: the request must carry a
//    node signature (node_auth.h) addressed to this node. The answer is the recording file as
//    it is on disk (application/octet-stream) and, in headers, whether the session is still
//    open here and its checkpointed chain head. Every call is audited (event node_request).
//  * fetching: fetch_recording() looks the session up in the store, signs a request to the
//    owning node, verifies that node's TLS certificate (node_ca_file) and writes the answer to
//    a private temporary directory. The caller verifies the copy with the same hash-chain code
//    as a local file (recording_file.h), so a file altered on the other node is reported as
//    tampered here; nothing the other node says is trusted beyond the bytes it sends.
//
// Thread-safety: every function is reentrant.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/status.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/fleet/node_auth.h"
#include "controlplane/recording/recording_file.h"
#include "controlplane/state/state_store.h"
#include "controlplane/web/https_server.h"

namespace pgwarden::fleet {

inline constexpr std::string_view kNodeRecordingsPath = "/api/v1/node/recordings/";
inline constexpr size_t kMaxFetchedRecordingBytes = size_t{512} << 20;

struct NodeRoutesOptions {
  std::string node_id;                 // this node
  std::shared_ptr<const NodeKey> key;  // REQUIRES: not null
  // The recordings directory and the Recorder's checkpoint file of the current config.
  std::function<std::string()> recordings_dir;
  std::function<std::string()> checkpoint_path;
  // Whether the session's recording is still open in this cp.
  std::function<bool(const std::string& session_id)> recording_open;
  audit::AuditLog* audit = nullptr;  // REQUIRES: not null, outlives the server
};

// REQUIRES: before server.start().
void register_node_routes(web::HttpsServer& server, NodeRoutesOptions options);

// A recording fetched from another node: a copy in a private temporary directory, removed
// when this object dies.
class FetchedRecording {
 public:
  FetchedRecording(std::string node_id, std::string url, std::string file, std::string dir,
                   std::string path)
      : node_id_(std::move(node_id)),
        url_(std::move(url)),
        file_(std::move(file)),
        dir_(std::move(dir)),
        path_(std::move(path)) {}
  ~FetchedRecording();
  FetchedRecording(const FetchedRecording&) = delete;
  FetchedRecording& operator=(const FetchedRecording&) = delete;

  const std::string& node_id() const { return node_id_; }
  const std::string& url() const { return url_; }
  const std::string& file() const { return file_; }  // its path on the owning node
  const std::string& path() const { return path_; }  // <dir>/<session id>.jsonl
  // The owning node's checkpoint, holding at most this session's head.
  recording::Checkpoint checkpoint;
  bool open = false;  // still open (being recorded) on the owning node

 private:
  std::string node_id_, url_, file_, dir_, path_;
};

struct FetchOptions {
  state::StateStore* store = nullptr;  // REQUIRES: not null
  std::shared_ptr<const NodeKey> key;  // null: fetching is not configured
  std::string ca_file;                 // verifies the other nodes' certificates; "" = system
  std::string temp_parent;             // where the private temporary directory is made
  int timeout_ms = 30000;
};

// The recording of `session_id` from the node that holds it. not_found when the store's index
// does not know the session (or names this node: the file is gone); failed_precondition when
// fetching is not configured here or the owning node advertises no admin URL; unavailable
// (naming the node and its URL) when that node cannot be reached or refuses.
Result<std::unique_ptr<FetchedRecording>> fetch_recording(const FetchOptions& options,
                                                          const std::string& session_id);

}  // namespace pgwarden::fleet
