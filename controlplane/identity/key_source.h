// Where a provider's verification keys come from (a JWKS file, a JWKS URL, or an OIDC
// discovery document naming the jwks_uri) and the cache around them: keys are refetched when
// older than refresh_interval_seconds or when a token names an unknown kid, never more often
// than refresh_min_interval_seconds, and a failed fetch keeps the last good keys.
//
// Thread-safety: all methods are safe to call concurrently. At most one fetch per provider
// runs at a time; other callers wait for it and then use its result.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/status.h"
#include "controlplane/identity/identity.h"
#include "controlplane/identity/jwk.h"
#include "controlplane/net/http_client.h"

namespace pgwarden::identity {

using WallClock = std::function<std::chrono::system_clock::time_point()>;
using HttpGetter = std::function<Result<net::HttpResponse>(std::string_view url,
                                                           const net::HttpClientOptions& options)>;

// A snapshot for operators (pgwardenctl / admin API).
struct KeySourceStatus {
  std::string provider;
  size_t key_count = 0;
  std::optional<std::chrono::system_clock::time_point> loaded_at;  // last successful load
  std::optional<std::chrono::system_clock::time_point> last_attempt;
  std::string last_error;  // empty when the last attempt succeeded
  uint64_t fetches = 0;
  uint64_t fetch_failures = 0;
};

class KeySource {
 public:
  // REQUIRES: exactly one of config.jwks_file / jwks_url / discovery_url is set.
  KeySource(const IdentityProviderConfig& config, HttpGetter http_get, WallClock clock,
            std::chrono::milliseconds fetch_timeout);

  // First load. Returns the error of the attempt; the caller decides whether it is fatal
  // (a bad file is, an unreachable URL is not: keys are fetched again on demand).
  Status load();

  // The current keys, refetching first when they are older than the refresh interval (and
  // the minimum interval allows). nullptr when no load has ever succeeded.
  std::shared_ptr<const KeySet> keys();

  // Called when a token names a kid that `seen` does not have: refetches unless another
  // caller already replaced `seen` or the minimum interval has not passed since the last
  // attempt. Returns the (possibly unchanged) current keys.
  std::shared_ptr<const KeySet> refresh_for_unknown_kid(const std::shared_ptr<const KeySet>& seen);

  KeySourceStatus status() const;

 private:
  enum class Trigger { kInitial, kStale, kUnknownKid };
  std::shared_ptr<const KeySet> refresh(Trigger trigger, const KeySet* seen);
  Result<KeySet> fetch();
  Result<std::string> get_json(const std::string& url, const char* what);

  const IdentityProviderConfig config_;
  const HttpGetter http_get_;
  const WallClock clock_;
  const std::chrono::milliseconds fetch_timeout_;

  std::mutex fetch_mu_;    // serialises fetches; acquired before mu_, never after
  mutable std::mutex mu_;  // guards the members below; never held during a fetch
  std::shared_ptr<const KeySet> keys_;
  KeySourceStatus status_;
};

}  // namespace pgwarden::identity
