#include "controlplane/fleet/node_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdlib>

namespace pgwarden::fleet {

namespace {

std::string signed_text(std::string_view method, std::string_view path, std::string_view from,
                        std::string_view to, int64_t time_ms) {
  std::string s = "pgwarden-node-v1\n";
  for (std::string_view part : {method, path, from, to}) {
    s += part;
    s += '\n';
  }
  return s + std::to_string(time_ms);
}

}  // namespace

Result<NodeKey> NodeKey::load(const std::string& path) {
  auto key = vault::read_secret({vault::SecretSource::Kind::kFile, path},
                                /*require_private_file=*/true);
  if (!key.is_ok()) return key.status();
  if (key->size() < kMinNodeKeyBytes) {
    return invalid_argument("node key file " + path + " holds fewer than " +
                            std::to_string(kMinNodeKeyBytes) +
                            " bytes (make one with: openssl rand -hex 32)");
  }
  return NodeKey(std::move(*key));
}

NodeKey NodeKey::from_bytes(std::string_view bytes) {
  return NodeKey(vault::Secret::copy_of(bytes));
}

std::string NodeKey::sign(std::string_view method, std::string_view path,
                          std::string_view from_node, std::string_view to_node,
                          int64_t time_ms) const {
  std::string text = signed_text(method, path, from_node, to_node, time_ms);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.view().data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(text.data()), text.size(), mac, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[mac[i] >> 4];
    out += kHex[mac[i] & 15];
  }
  return out;
}

Status NodeKey::verify(std::string_view method, std::string_view path, std::string_view from_node,
                       std::string_view self_node, std::string_view time_text,
                       std::string_view signature, int64_t now_ms) const {
  if (from_node.empty() || time_text.empty() || signature.empty()) {
    return unauthenticated("no node signature");
  }
  std::string t(time_text);
  char* end = nullptr;
  long long time_ms = std::strtoll(t.c_str(), &end, 10);
  if (end == t.c_str() || *end != '\0') return unauthenticated("bad node signature time");
  if (time_ms < now_ms - kNodeSignatureWindowMs || time_ms > now_ms + kNodeSignatureWindowMs) {
    return unauthenticated("node signature outside the time window (clocks more than " +
                           std::to_string(kNodeSignatureWindowMs / 1000) + " s apart?)");
  }
  std::string expected = sign(method, path, from_node, self_node, time_ms);
  if (signature.size() != expected.size() ||
      CRYPTO_memcmp(signature.data(), expected.data(), expected.size()) != 0) {
    return unauthenticated("bad node signature (a different node key, or not for this node)");
  }
  return Status::ok();
}

}  // namespace pgwarden::fleet
