#include "controlplane/identity/validator.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "common/ascii.h"
#include "controlplane/identity/service_key.h"

namespace pgwarden::identity {
namespace {

Rejection reject(RejectReason r, std::string msg) { return Rejection{r, std::move(msg)}; }

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t dot = path.find('.', start);
    out.push_back(path.substr(start, dot == std::string::npos ? dot : dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

// NumericDate (RFC 7519 section 2): a JSON number of seconds, possibly fractional.
std::optional<double> numeric_date(const nlohmann::json& claims, const char* name,
                                   std::optional<Rejection>* error) {
  auto it = claims.find(name);
  if (it == claims.end()) return std::nullopt;
  // Bounded so the conversion to seconds below cannot overflow (year 9999 is plenty).
  if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < 0 ||
      it->get<double>() > 253402300799.0) {
    *error = reject(RejectReason::kInvalidClaim,
                    std::string("\"") + name + "\" is not a valid NumericDate");
    return std::nullopt;
  }
  return it->get<double>();
}

}  // namespace

Status validate_provider_config(const IdentityProviderConfig& c) {
  auto bad = [&](const std::string& what) {
    return invalid_argument("identity provider \"" + c.name + "\": " + what);
  };
  if (c.name.empty()) return invalid_argument("identity provider without a name");
  if (c.issuer.empty()) return bad("issuer is required");
  if (c.audiences.empty()) return bad("at least one audience is required");
  for (const auto& a : c.audiences) {
    if (a.empty()) return bad("empty audience");
  }
  int sources = !c.jwks_file.empty() + !c.jwks_url.empty() + !c.discovery_url.empty();
  if (sources != 1) return bad("exactly one of jwks_file, jwks_url, discovery_url is required");
  for (const auto* url : {&c.jwks_url, &c.discovery_url}) {
    if (!url->empty() && url->rfind("https://", 0) != 0) return bad("URLs must be https://");
  }
  for (const auto& a : c.algorithms) {
    if (!algorithm_from_name(a)) {
      return bad("algorithm \"" + a +
                 "\" is not supported (RS256/384/512, PS256/384/512, ES256/384/512, EdDSA)");
    }
  }
  if (c.groups_claim.empty()) return bad("groups_claim must not be empty");
  for (const auto& seg : split_path(c.groups_claim)) {
    if (seg.empty()) return bad("groups_claim has an empty path segment");
  }
  if (c.leeway_seconds < 0 || c.leeway_seconds > 600) return bad("leeway_seconds not in [0, 600]");
  if (c.refresh_min_interval_seconds < 0 || c.refresh_min_interval_seconds > 86400) {
    return bad("refresh_min_interval_seconds not in [0, 86400]");
  }
  if (c.refresh_interval_seconds < 1 || c.refresh_interval_seconds > 7 * 86400) {
    return bad("refresh_interval_seconds not in [1, 604800]");
  }
  return Status::ok();
}

Result<std::unique_ptr<TokenValidator>> TokenValidator::create(
    std::vector<IdentityProviderConfig> providers, std::vector<ServiceKeyConfig> service_keys,
    ValidatorOptions options) {
  std::unique_ptr<TokenValidator> v(new TokenValidator());
  v->clock_ = options.clock ? options.clock : [] { return std::chrono::system_clock::now(); };
  HttpGetter http_get = options.http_get ? options.http_get : HttpGetter(net::https_get);
  std::set<std::string> names, issuers;
  for (auto& c : providers) {
    PGW_RETURN_IF_ERROR(validate_provider_config(c));
    if (!names.insert(c.name).second) {
      return invalid_argument("duplicate identity provider name \"" + c.name + "\"");
    }
    if (!issuers.insert(c.issuer).second) {
      return invalid_argument("two identity providers share issuer \"" + c.issuer + "\"");
    }
    auto p = std::make_unique<Provider>();
    p->config = std::move(c);
    if (p->config.algorithms.empty()) {
      for (int a = 0; a <= static_cast<int>(Algorithm::kEdDSA); ++a) {
        p->algorithms.push_back(static_cast<Algorithm>(a));
      }
    } else {
      for (const auto& a : p->config.algorithms) p->algorithms.push_back(*algorithm_from_name(a));
    }
    p->groups_path = split_path(p->config.groups_claim);
    p->keys = std::make_unique<KeySource>(p->config, http_get, v->clock_, options.fetch_timeout);
    Status st = p->keys->load();
    if (!st.is_ok() && !p->config.jwks_file.empty()) return st;
    v->providers_.push_back(std::move(p));
  }
  std::set<std::string> ids;
  for (const auto& k : service_keys) {
    Status st = validate_service_key_config(k);
    if (!st.is_ok()) return invalid_argument("service key \"" + k.id + "\": " + st.message());
    if (!ids.insert(k.id).second) return invalid_argument("duplicate service key id " + k.id);
  }
  v->service_keys_ = std::move(service_keys);
  return v;
}

IdentityResult TokenValidator::validate(std::string_view credential) const {
  if (credential.size() > kMaxTokenBytes) {
    return reject(RejectReason::kOversized, "credential is " + std::to_string(credential.size()) +
                                                " bytes, limit " + std::to_string(kMaxTokenBytes));
  }
  if (looks_like_service_key(credential)) {
    return verified_service_keys_.verify(credential, service_keys_);
  }
  return validate_jwt(credential, nullptr);
}

IdentityResult TokenValidator::validate_for_provider(std::string_view credential,
                                                     std::string_view provider_name) const {
  if (credential.size() > kMaxTokenBytes) {
    return reject(RejectReason::kOversized, "credential is " + std::to_string(credential.size()) +
                                                " bytes, limit " + std::to_string(kMaxTokenBytes));
  }
  if (looks_like_service_key(credential)) {
    return reject(RejectReason::kNoMatchingProvider, "a service key is not a token of provider \"" +
                                                         std::string(provider_name) + "\"");
  }
  for (const auto& p : providers_) {
    if (p->config.name == provider_name) return validate_jwt(credential, p.get());
  }
  return reject(RejectReason::kNoMatchingProvider,
                "no identity provider named \"" + std::string(provider_name) + "\"");
}

std::vector<KeySourceStatus> TokenValidator::provider_status() const {
  std::vector<KeySourceStatus> out;
  for (const auto& p : providers_) out.push_back(p->keys->status());
  return out;
}

std::optional<bool> TokenValidator::has_key(std::string_view provider_name,
                                            std::string_view kid) const {
  for (const auto& p : providers_) {
    if (p->config.name != provider_name) continue;
    auto keys = p->keys->keys();
    if (!keys) return std::nullopt;
    return std::any_of(keys->keys.begin(), keys->keys.end(),
                       [&](const Jwk& k) { return k.kid == kid; });
  }
  return false;
}

IdentityResult TokenValidator::validate_jwt(std::string_view token,
                                            const Provider* required) const {
  auto parsed = parse_compact_jws(token);
  if (auto* r = std::get_if<Rejection>(&parsed)) return *r;
  auto& jws = std::get<ParsedJws>(parsed);

  // Algorithm checks come first and do not depend on the provider: "none" and HMAC can never
  // be right, whatever the token claims to be.
  std::string alg_lower = ascii_lower(jws.alg);
  if (alg_lower == "none") return reject(RejectReason::kAlgNone, "unsecured JWT (alg none)");
  if (jws.alg == "HS256" || jws.alg == "HS384" || jws.alg == "HS512") {
    return reject(RejectReason::kHmacWithAsymmetricKey,
                  jws.alg + " cannot be verified with the provider's public keys");
  }
  auto alg = algorithm_from_name(jws.alg);
  if (!alg) return reject(RejectReason::kUnsupportedAlg, "alg is not supported");
  if (jws.header.contains("crit")) {
    return reject(RejectReason::kUnsupportedCrit, "critical header extensions not supported");
  }

  auto iss = jws.payload.find("iss");
  if (iss == jws.payload.end()) return reject(RejectReason::kMissingClaim, "no \"iss\" claim");
  if (!iss->is_string()) return reject(RejectReason::kInvalidClaim, "\"iss\" is not a string");
  const std::string& issuer = iss->get_ref<const std::string&>();
  const Provider* provider = required;
  if (provider) {
    if (issuer != provider->config.issuer) {
      return reject(RejectReason::kWrongIssuer, "issuer is not \"" + provider->config.issuer +
                                                    "\" (provider " + provider->config.name + ")");
    }
  } else {
    for (const auto& p : providers_) {
      if (p->config.issuer == issuer) provider = p.get();
    }
    if (!provider) {
      return reject(RejectReason::kNoMatchingProvider, "no identity provider has this issuer");
    }
  }
  return verify_with(*provider, jws, *alg);
}

IdentityResult TokenValidator::verify_with(const Provider& provider, ParsedJws& jws,
                                           Algorithm alg) const {
  const auto& cfg = provider.config;
  if (std::find(provider.algorithms.begin(), provider.algorithms.end(), alg) ==
      provider.algorithms.end()) {
    return reject(RejectReason::kAlgNotAllowed,
                  jws.alg + " is not allowed for provider " + cfg.name);
  }

  // Key selection. With a kid: that key (refetching once on a miss). Without: every key
  // that fits the algorithm is tried.
  auto keys = provider.keys->keys();
  if (!keys) {
    return reject(RejectReason::kJwksUnavailable,
                  "keys of provider " + cfg.name +
                      " could not be loaded: " + provider.keys->status().last_error);
  }
  std::vector<const Jwk*> candidates;
  auto collect = [&](const KeySet& set) {
    candidates.clear();
    for (const auto& k : set.keys) {
      if (jws.kid.empty() ? !check_key_fits(alg, k) : k.kid == jws.kid) candidates.push_back(&k);
    }
  };
  collect(*keys);
  if (candidates.empty() && !jws.kid.empty()) {
    keys = provider.keys->refresh_for_unknown_kid(keys);
    collect(*keys);
  }
  if (candidates.empty()) {
    return reject(RejectReason::kUnknownKid,
                  jws.kid.empty() ? "no key of provider " + cfg.name + " fits " + jws.alg
                                  : "provider " + cfg.name + " has no key with this kid");
  }
  std::optional<Rejection> sig_error;
  bool verified = false;
  std::string key_id;
  for (const Jwk* k : candidates) {
    sig_error = verify_signature(alg, *k, jws.signing_input, jws.signature);
    if (!sig_error) {
      verified = true;
      key_id = k->kid;
      break;
    }
  }
  if (!verified) return *sig_error;

  // Claims, only now that they are authentic.
  const auto& claims = jws.payload;
  std::optional<Rejection> err;
  auto now = std::chrono::duration<double>(clock_().time_since_epoch()).count();
  auto leeway = static_cast<double>(cfg.leeway_seconds);
  auto exp = numeric_date(claims, "exp", &err);
  if (err) return *err;
  if (!exp) return reject(RejectReason::kMissingClaim, "no \"exp\" claim");
  if (now >= *exp + leeway) return reject(RejectReason::kExpired, "token has expired");
  auto nbf = numeric_date(claims, "nbf", &err);
  if (err) return *err;
  if (nbf && now + leeway < *nbf)
    return reject(RejectReason::kNotYetValid, "token not yet valid (nbf)");
  auto iat = numeric_date(claims, "iat", &err);
  if (err) return *err;
  if (iat && now + leeway < *iat) {
    return reject(RejectReason::kNotYetValid, "token issued in the future (iat)");
  }

  auto aud = claims.find("aud");
  if (aud == claims.end()) return reject(RejectReason::kWrongAudience, "no \"aud\" claim");
  std::vector<std::string> token_aud;
  if (aud->is_string()) {
    token_aud.push_back(aud->get<std::string>());
  } else if (aud->is_array()) {
    for (const auto& a : *aud) {
      if (!a.is_string()) return reject(RejectReason::kInvalidClaim, "\"aud\" has a non-string");
      token_aud.push_back(a.get<std::string>());
    }
  } else {
    return reject(RejectReason::kInvalidClaim, "\"aud\" is neither a string nor an array");
  }
  bool aud_ok = std::any_of(token_aud.begin(), token_aud.end(), [&](const std::string& a) {
    return std::find(cfg.audiences.begin(), cfg.audiences.end(), a) != cfg.audiences.end();
  });
  if (!aud_ok) {
    return reject(RejectReason::kWrongAudience,
                  "audience is not one of provider " + cfg.name + "'s audiences");
  }

  auto sub = claims.find("sub");
  if (sub == claims.end()) return reject(RejectReason::kMissingClaim, "no \"sub\" claim");
  if (!sub->is_string() || sub->get_ref<const std::string&>().empty()) {
    return reject(RejectReason::kInvalidClaim, "\"sub\" is not a non-empty string");
  }

  Identity id;
  // Groups: a missing claim means no groups; a present one must be a string or an array of
  // strings (anything else is rejected rather than silently read as "no groups").
  const nlohmann::json* node = &claims;
  for (const auto& seg : provider.groups_path) {
    auto it = node->is_object() ? node->find(seg) : node->end();
    if (!node->is_object() || it == node->end()) {
      node = nullptr;
      break;
    }
    node = &*it;
  }
  if (node) {
    if (node->is_string()) {
      id.groups.push_back(node->get<std::string>());
    } else if (node->is_array()) {
      for (const auto& g : *node) {
        if (!g.is_string()) {
          return reject(RejectReason::kInvalidClaim,
                        "groups claim \"" + cfg.groups_claim + "\" has a non-string member");
        }
        id.groups.push_back(g.get<std::string>());
      }
    } else {
      return reject(RejectReason::kInvalidClaim,
                    "groups claim \"" + cfg.groups_claim + "\" is not a string or array");
    }
  }
  id.subject = sub->get<std::string>();
  id.issuer = cfg.issuer;
  id.expires_at = std::chrono::sys_seconds(std::chrono::seconds(static_cast<int64_t>(*exp)));
  id.provider = cfg.name;
  id.key_id = std::move(key_id);
  id.claims = std::move(jws.payload);
  return id;
}

}  // namespace pgwarden::identity
