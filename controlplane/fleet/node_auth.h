// Node-to-node authentication on the HTTPS admin API (docs/scale-out.md, "Recordings of
// other nodes"): a node that fetches something from another node signs the request with the
// fleet's node key, a secret file every node of one fleet holds
// ($.control_plane.state_store.node_key_file; never in the store, never logged).
//
// The signature is HMAC-SHA256 over "pgwarden-node-v1", the method, the path, the requesting
// node, the node it is addressed to and the time (unix ms), each on its own line. It travels
// in three headers: X-Pgwarden-Node (the requesting node id), X-Pgwarden-Node-Time and
// X-Pgwarden-Node-Signature (64 hex digits). The receiver accepts it only when it is addressed
// to itself, made within kNodeSignatureWindowMs of its own clock and the MAC matches
// (constant-time compare). The request is inside TLS whose server certificate the sender
// verified, so a signature is neither visible to nor replayable by anyone on the network; the
// window and the addressee bound what a captured one could be used for.
//
// Thread-safety: NodeKey is immutable after load; all functions are reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::fleet {

inline constexpr int64_t kNodeSignatureWindowMs = 60000;
inline constexpr size_t kMinNodeKeyBytes = 32;
inline constexpr std::string_view kNodeHeader = "X-Pgwarden-Node";
inline constexpr std::string_view kNodeTimeHeader = "X-Pgwarden-Node-Time";
inline constexpr std::string_view kNodeSignatureHeader = "X-Pgwarden-Node-Signature";

class NodeKey {
 public:
  // Reads the key file (mode 0600 or stricter, at least kMinNodeKeyBytes bytes after trailing
  // whitespace is trimmed). invalid_argument / unavailable with the path, never the contents.
  static Result<NodeKey> load(const std::string& path);
  static NodeKey from_bytes(std::string_view bytes);  // tests

  // The signature of a request from `from_node` to `to_node` at `time_ms`: 64 hex digits.
  std::string sign(std::string_view method, std::string_view path, std::string_view from_node,
                   std::string_view to_node, int64_t time_ms) const;
  // Ok when `signature` is this key's for those fields, `to_node` is `self_node` and
  // `time_ms` is within the window of `now_ms`; unauthenticated (with why) otherwise.
  Status verify(std::string_view method, std::string_view path, std::string_view from_node,
                std::string_view self_node, std::string_view time_text, std::string_view signature,
                int64_t now_ms) const;

 private:
  explicit NodeKey(vault::Secret key) : key_(std::move(key)) {}
  vault::Secret key_;
};

}  // namespace pgwarden::fleet
