#include "controlplane/server/mask_planner.h"

#include <algorithm>

#include "controlplane/server/copy_planner.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::server {

namespace {

constexpr size_t kMaxCachedPolicyKeys = 1024;

// libpq keyword value: single-quoted, with \ and ' escaped.
std::string quote(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

bool policy_uses_hash(const policy::Policy& p) {
  return std::any_of(p.masks.begin(), p.masks.end(),
                     [](const policy::MaskRule& m) { return m.function == "hash"; });
}

// Identifies a target's connection settings (not the secret itself).
std::string target_key(const config::Target& t) {
  return t.name + "\n" + t.host + "\n" + std::to_string(t.port) + "\n" + t.unix_socket + "\n" +
         t.database + "\n" + t.role + "\n" + t.credential.location + "\n" +
         std::string(protocol::enum_name(t.tls_mode)) + "\n" + t.ca_file;
}

}  // namespace

std::string metadata_conninfo(const config::Target& target, std::string_view password) {
  std::string ci;
  ci += "host=" + quote(target.unix_socket.empty() ? target.host : target.unix_socket);
  ci += " port=" + std::to_string(target.port);
  ci += " dbname=" + quote(target.database);
  ci += " user=" + quote(target.role);
  ci += " password=" + quote(password);
  switch (target.tls_mode) {
    case config::UpstreamTlsMode::kDisable:
      ci += " sslmode=disable";
      break;
    case config::UpstreamTlsMode::kRequire:
      ci += " sslmode=require";
      break;
    case config::UpstreamTlsMode::kVerifyFull:
      ci += " sslmode=verify-full";
      if (!target.ca_file.empty()) ci += " sslrootcert=" + quote(target.ca_file);
      break;
  }
  ci += " connect_timeout=5 application_name='pgwarden-cp catalog'";
  return ci;
}

void CatalogMaskPlanner::set_catalog_for_test(const std::string& target,
                                              std::shared_ptr<maskplan::Catalog> c) {
  std::lock_guard<std::mutex> lock(mu_);
  test_catalogs_[target] = std::move(c);
}

Result<std::shared_ptr<maskplan::Catalog>> CatalogMaskPlanner::catalog_for(
    const config::Config& config, const config::Target& target) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = test_catalogs_.find(target.name); it != test_catalogs_.end()) return it->second;
  std::string key = target_key(target);
  if (auto it = catalogs_.find(key); it != catalogs_.end()) return it->second;
  auto secret = vault::read_secret(target.credential);
  if (!secret.is_ok()) {
    return unavailable("cannot read the credential for target " + target.name +
                       " (catalog lookups for masking)");
  }
  // Drop catalogs of targets whose settings changed (their connection closes with them).
  for (auto it = catalogs_.begin(); it != catalogs_.end();) {
    if (it->first.substr(0, it->first.find('\n')) == target.name) {
      it = catalogs_.erase(it);
    } else {
      ++it;
    }
  }
  maskplan::PgCatalogOptions options;
  options.conninfo = metadata_conninfo(target, secret->view());
  options.ttl = std::chrono::seconds(config.masking.catalog_ttl_s);
  auto catalog = std::make_shared<maskplan::PgCatalog>(std::move(options));
  catalogs_[key] = catalog;
  return std::shared_ptr<maskplan::Catalog>(catalog);
}

Result<std::shared_ptr<policy::LineageCatalog>> CatalogMaskPlanner::lineage_catalog(
    const config::Config& config, const config::Target& target) {
  auto catalog = catalog_for(config, target);
  if (!catalog.is_ok()) return catalog.status();
  auto lineage = std::dynamic_pointer_cast<policy::LineageCatalog>(*catalog);
  if (!lineage)
    return failed_precondition("the catalog of target " + target.name +
                               " cannot resolve column lineage");
  return lineage;
}

Result<std::string> CatalogMaskPlanner::policy_key(const config::Config& config,
                                                   const policy::Policy& policy) {
  if (!policy_uses_hash(policy)) return std::string();
  std::string cache_key = std::to_string(config.version) + "/" + policy.name;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = policy_keys_.find(cache_key); it != policy_keys_.end()) return it->second;
  }
  if (!config.masking.key) {
    return unavailable("no masking key is configured ($.masking.key_file or key_env)");
  }
  auto master = vault::read_secret(*config.masking.key);
  if (!master.is_ok()) return unavailable("cannot read the masking key");
  auto derived = maskplan::derive_policy_key(master->view(), policy.name);
  if (!derived.is_ok()) return unavailable("masking key unusable: " + derived.status().message());
  std::lock_guard<std::mutex> lock(mu_);
  if (policy_keys_.size() >= kMaxCachedPolicyKeys) policy_keys_.clear();
  policy_keys_[cache_key] = *derived;
  return *derived;
}

Result<protocol::MaskPlanResponse> CatalogMaskPlanner::plan(
    const SessionView& session, const protocol::MaskPlanRequest& request) {
  if (request.copy) {
    auto key = policy_key(session.config, session.policy);
    if (!key.is_ok()) return key.status();
    auto catalog = catalog_for(session.config, session.target);
    if (!catalog.is_ok()) return catalog.status();
    return plan_copy(*request.copy, session.policy, **catalog, *key);
  }
  std::vector<maskplan::ResultField> fields;
  fields.reserve(request.fields.size());
  for (const auto& f : request.fields) {
    if (f.attnum < INT16_MIN || f.attnum > INT16_MAX || (f.format != 0 && f.format != 1)) {
      return invalid_argument("field " + f.name.substr(0, 64) + ": attnum/format out of range",
                              "08P01");
    }
    fields.push_back({f.name, f.table_oid, static_cast<int16_t>(f.attnum), f.type_oid,
                      static_cast<int16_t>(f.format)});
  }
  auto key = policy_key(session.config, session.policy);
  if (!key.is_ok()) return key.status();
  auto catalog = catalog_for(session.config, session.target);
  if (!catalog.is_ok()) return catalog.status();
  maskplan::MaskPlanOptions options;
  options.lineage = dynamic_cast<policy::LineageCatalog*>(catalog->get());
  auto plan = maskplan::build_mask_plan(fields, session.policy, **catalog, *key, options);
  if (!plan.is_ok()) return plan.status();
  protocol::MaskPlanResponse response;
  response.plan = plan->to_json();
  return response;
}

}  // namespace pgwarden::server
