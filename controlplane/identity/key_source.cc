#include "controlplane/identity/key_source.h"

#include <fstream>
#include <sstream>

#include "controlplane/identity/strict_json.h"

namespace pgwarden::identity {

KeySource::KeySource(const IdentityProviderConfig& config, HttpGetter http_get, WallClock clock,
                     std::chrono::milliseconds fetch_timeout)
    : config_(config),
      http_get_(std::move(http_get)),
      clock_(std::move(clock)),
      fetch_timeout_(fetch_timeout) {
  status_.provider = config.name;
}

Status KeySource::load() {
  refresh(Trigger::kInitial, nullptr);
  std::lock_guard lock(mu_);
  if (status_.last_error.empty()) return Status::ok();
  return unavailable("provider \"" + config_.name + "\": " + status_.last_error);
}

std::shared_ptr<const KeySet> KeySource::keys() {
  std::shared_ptr<const KeySet> current;
  bool stale;
  {
    std::lock_guard lock(mu_);
    current = keys_;
    auto now = clock_();
    stale = !status_.loaded_at ||
            now - *status_.loaded_at >= std::chrono::seconds(config_.refresh_interval_seconds);
    // While the provider is down, do not make every validation wait for a fetch timeout.
    if (stale && status_.last_attempt &&
        now - *status_.last_attempt < std::chrono::seconds(config_.refresh_min_interval_seconds)) {
      stale = false;
    }
  }
  if (!stale) return current;
  return refresh(Trigger::kStale, current.get());
}

std::shared_ptr<const KeySet> KeySource::refresh_for_unknown_kid(
    const std::shared_ptr<const KeySet>& seen) {
  return refresh(Trigger::kUnknownKid, seen.get());
}

std::shared_ptr<const KeySet> KeySource::refresh(Trigger trigger, const KeySet* seen) {
  // One fetch at a time; callers that queued behind a fetch see its result instead of
  // fetching again.
  std::lock_guard fetch_lock(fetch_mu_);
  {
    std::lock_guard lock(mu_);
    if (trigger != Trigger::kInitial) {
      if (keys_.get() != seen) return keys_;  // someone else refreshed meanwhile
      auto now = clock_();
      if (status_.last_attempt && now - *status_.last_attempt <
                                      std::chrono::seconds(config_.refresh_min_interval_seconds)) {
        return keys_;
      }
    }
    status_.last_attempt = clock_();
    ++status_.fetches;
  }
  auto fetched = fetch();  // without mu_: readers keep using the current keys meanwhile
  std::lock_guard lock(mu_);
  if (fetched) {
    keys_ = std::make_shared<const KeySet>(std::move(*fetched));
    status_.loaded_at = clock_();
    status_.key_count = keys_->keys.size();
    status_.last_error.clear();
  } else {
    // Keep the last good keys: an IdP outage must not lock every agent out.
    ++status_.fetch_failures;
    status_.last_error = fetched.status().message();
  }
  return keys_;
}

Result<std::string> KeySource::get_json(const std::string& url, const char* what) {
  net::HttpClientOptions opts;
  opts.ca_file = config_.ca_file;
  opts.timeout = fetch_timeout_;
  opts.max_response_bytes = kMaxJwksBytes + 64 * 1024;
  auto resp = http_get_(url, opts);
  if (!resp) return resp.status();
  if (resp->status != 200) {
    return unavailable(std::string(what) + " " + url + " answered HTTP " +
                       std::to_string(resp->status));
  }
  return std::move(resp->body);
}

Result<KeySet> KeySource::fetch() {
  if (!config_.jwks_file.empty()) {
    std::ifstream in(config_.jwks_file, std::ios::binary);
    if (!in) return invalid_argument("cannot read JWKS file " + config_.jwks_file);
    std::string text;
    text.resize(kMaxJwksBytes + 1);
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(in.gcount()));
    auto set = parse_jwks(text);
    if (!set) return invalid_argument(config_.jwks_file + ": " + set.status().message());
    return set;
  }
  std::string jwks_url = config_.jwks_url;
  if (jwks_url.empty()) {
    auto doc_text = get_json(config_.discovery_url, "discovery document");
    if (!doc_text) return doc_text.status();
    std::string err;
    auto doc = parse_strict_json(*doc_text, &err);
    if (!doc || !doc->is_object()) {
      return invalid_argument("discovery document is not a JSON object " + err);
    }
    // OpenID Connect Discovery 1.0 section 4.3: the issuer must match exactly.
    auto iss = doc->find("issuer");
    if (iss == doc->end() || !iss->is_string() || *iss != config_.issuer) {
      return invalid_argument("discovery document issuer does not match \"" + config_.issuer +
                              "\"");
    }
    auto uri = doc->find("jwks_uri");
    if (uri == doc->end() || !uri->is_string()) {
      return invalid_argument("discovery document has no jwks_uri");
    }
    jwks_url = uri->get<std::string>();
  }
  auto text = get_json(jwks_url, "JWKS endpoint");
  if (!text) return text.status();
  auto set = parse_jwks(*text);
  if (!set) return invalid_argument(jwks_url + ": " + set.status().message());
  return set;
}

KeySourceStatus KeySource::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

}  // namespace pgwarden::identity
