#include "controlplane/web/browser_sessions.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdexcept>

#include "common/protocol/messages.h"
#include "controlplane/identity/base64url.h"

namespace pgwarden::web {
namespace {

std::string random_token() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) throw std::runtime_error("RAND_bytes failed");
  return identity::base64url_encode(
      std::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

}  // namespace

std::string random_url_token() { return random_token(); }

BrowserSessions::BrowserSessions(std::chrono::seconds ttl, size_t max_sessions)
    : ttl_(ttl), max_sessions_(std::max<size_t>(max_sessions, 1)) {}

NewBrowserSession BrowserSessions::create(Person person, std::string remote_ip) {
  NewBrowserSession n;
  n.cookie_value = random_token();
  int64_t now = protocol::now_unix_ms();
  n.session = BrowserSession{.person = std::move(person),
                             .csrf_token = random_token(),
                             .created_ms = now,
                             .expires_ms = now + ttl_.count() * 1000,
                             .remote_ip = std::move(remote_ip)};
  std::lock_guard<std::mutex> lock(mu_);
  sweep_locked(now);
  while (by_hash_.size() >= max_sessions_) {
    auto oldest = by_hash_.begin();
    for (auto it = by_hash_.begin(); it != by_hash_.end(); ++it) {
      if (it->second.created_ms < oldest->second.created_ms) oldest = it;
    }
    by_hash_.erase(oldest);
  }
  by_hash_[sha256_hex(n.cookie_value)] = n.session;
  return n;
}

std::optional<BrowserSession> BrowserSessions::find(std::string_view cookie_value) {
  if (cookie_value.empty() || cookie_value.size() > 128) return std::nullopt;
  std::string key = sha256_hex(cookie_value);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_hash_.find(key);
  if (it == by_hash_.end()) return std::nullopt;
  if (it->second.expires_ms <= protocol::now_unix_ms()) {
    by_hash_.erase(it);
    return std::nullopt;
  }
  return it->second;
}

bool BrowserSessions::remove(std::string_view cookie_value) {
  if (cookie_value.empty() || cookie_value.size() > 128) return false;
  std::string key = sha256_hex(cookie_value);
  std::lock_guard<std::mutex> lock(mu_);
  return by_hash_.erase(key) > 0;
}

size_t BrowserSessions::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_hash_.size();
}

void BrowserSessions::sweep_locked(int64_t now_ms) {
  for (auto it = by_hash_.begin(); it != by_hash_.end();) {
    if (it->second.expires_ms <= now_ms) {
      it = by_hash_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace pgwarden::web
