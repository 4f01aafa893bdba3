// CatalogMaskPlanner: the MaskPlanner behind `mask_plan`, backed by controlplane/masking.
//
// For each request it resolves the RowDescription fields through a PgCatalog for the
// session's target and applies the session policy's mask rules (maskplan::build_mask_plan).
// A request with `copy` (a COPY TO STDOUT) is planned by plan_copy() (copy_planner.h) over the
// same catalog.
// The catalog's metadata connection logs in as the target's role with the password read
// from the vault (pgwarden-cp holds the secrets; the conninfo is never logged). One
// PgCatalog per distinct target definition, created on first use and kept across reloads
// while the target's connection settings are unchanged.
//
// The `hash` function's key is derive_policy_key(master, policy name), the master key read
// from $.masking.key_file / key_env; derived keys are cached per (policy, config version).
//
// Errors: unavailable when the catalog cannot be asked or the master key cannot be read
// (the dp refuses the result set: no plan means unmasked rows).
//
// Thread-safety: plan() may be called concurrently.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "controlplane/masking/catalog.h"
#include "controlplane/masking/mask_plan.h"
#include "controlplane/server/interfaces.h"

namespace pgwarden::server {

// The libpq conninfo of a target's metadata connection: host/port or unix_socket, dbname,
// user, password, sslmode (disable|require|verify-full), sslrootcert, connect_timeout,
// application_name. Values are quoted for libpq. Contains the password: never log it.
std::string metadata_conninfo(const config::Target& target, std::string_view password);

class CatalogMaskPlanner : public MaskPlanner {
 public:
  Result<protocol::MaskPlanResponse> plan(const SessionView& session,
                                          const protocol::MaskPlanRequest& request) override;

  // The target's catalog as a column-lineage catalog (PolicyAnalyser's CatalogProvider);
  // failed_precondition when the catalog (a test catalog) does not implement it.
  Result<std::shared_ptr<policy::LineageCatalog>> lineage_catalog(const config::Config& config,
                                                                  const config::Target& target);

  // Test hook: use `catalog` for the target named `target` instead of a PgCatalog.
  void set_catalog_for_test(const std::string& target, std::shared_ptr<maskplan::Catalog> c);

 private:
  Result<std::shared_ptr<maskplan::Catalog>> catalog_for(const config::Config& config,
                                                         const config::Target& target);
  Result<std::string> policy_key(const config::Config& config, const policy::Policy& policy);

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<maskplan::Catalog>> catalogs_;  // by target settings
  std::map<std::string, std::shared_ptr<maskplan::Catalog>> test_catalogs_;
  std::map<std::string, std::string> policy_keys_;  // "<version>/<policy>" -> 32 raw bytes
};

}  // namespace pgwarden::server
