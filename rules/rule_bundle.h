// RuleBundle: the rule sets one configuration names, as the control plane validated them,
// in a form that crosses the dp <-> cp channel (docs/operations.md, "Reloading rules and
// configuration").
//
// pgwarden-cp reads every rule set file the policies name (read()), compiles every rule_sets
// list (compile(): this is the validation; any error, with file:line, rejects the reload)
// and ships the bundle to each pgwarden-dp as JSON (to_json()): the files' bytes (base64)
// plus a SHA-256 content hash over the lists and the files. The dp checks the hash
// (from_json() refuses a bundle whose content does not hash to what cp announced) and
// compiles the same bytes with the same compiler, so it never runs a set cp did not
// validate and never reads a rule file of its own after the first cp push.
//
// Thread-safety: an immutable value once built; share it freely.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "rules/matcher.h"
#include "rules/rule_set.h"

namespace pgwarden::rules {

// The compiled set of every list, keyed by rule_set_list_key(list).
using CompiledLists = std::map<std::string, std::shared_ptr<const CompiledRuleSet>>;

// A rule_sets list as one key: the names joined with ','.
std::string rule_set_list_key(const std::vector<std::string>& names);

// Resolves a rule set name to a readable file in `dir`: <name>.rules, else the name without
// a "default-" prefix or a "-detect" suffix (default-deny -> deny.rules). not_found names
// the file that is missing.
Result<std::string> rule_set_file(const std::string& dir, const std::string& name);

// Hex SHA-256 of `bytes` (file contents, databases, digests of settings in a bundle).
std::string sha256_hex(std::string_view bytes);

struct RuleBundle {
  struct File {
    std::string path;  // as read by cp; diagnostics name it
    std::string content;
  };
  // Every rule_sets list of the configuration (no duplicates; empty lists left out).
  std::vector<std::vector<std::string>> lists;
  // The file of every rule set name the lists use.
  std::map<std::string, File> files;
  // Every policy's current list (its rule_sets as rule_set_list_key(); "" for none), so that
  // sessions admitted under an older config follow their policy's current rule sets.
  std::map<std::string, std::string> policy_lists;
  // Every policy's masks: the config version at which its mask-relevant settings last changed
  // (policy::Policy::masks_version), a SHA-256 of those settings, and whether it masks at all
  // (error texts are redacted). Open sessions compare the version with the one their
  // statements were decided under (docs/masking.md, "Verdicts across a policy reload"). The
  // digests are part of `hash` (the versions are not: nodes that loaded one config at
  // different times agree on it), so a change of masks is a new generation, and a reload that
  // changes none is not.
  struct PolicyMasks {
    uint64_t version = 0;
    std::string digest;
    bool masks_values = false;
    bool operator==(const PolicyMasks&) const = default;
  };
  std::map<std::string, PolicyMasks> policy_masks;
  // Hex SHA-256 over the lists and the files (see compute_hash()).
  std::string hash;
  // cp's rules generation this bundle is (0 = not assigned).
  uint64_t generation = 0;
  // Optional, by list key: the Hyperscan databases cp compiled for that list
  // (CompiledRuleSet::serialize()). compile() loads them instead of compiling when they load
  // on this host (same Hyperscan version and platform), else compiles the sources. Not part
  // of `hash` (they are derived from the sources); each is checked against its own SHA-256
  // by from_json().
  std::map<std::string, std::string> databases;

  // Reads the file of every name in `lists` from `dir`. Errors: not_found (no file for a
  // name), invalid_argument (unreadable, or larger than kMaxRuleFileBytes).
  static Result<RuleBundle> read(const std::string& dir,
                                 const std::vector<std::vector<std::string>>& lists);
  // Parses and compiles every list (or loads its database, above). invalid_argument with one
  // "file:line: reason" per line when any rule of any file is wrong.
  Result<CompiledLists> compile() const;
  // Fills `databases` from `compiled` (the result of compile()).
  void attach_databases(const CompiledLists& compiled);
  std::string compute_hash() const;
  size_t rule_file_bytes() const;

  // {"generation", "hash", "lists": [[...]], "files": [{"name", "path", "base64"}],
  //  "databases": [{"list", "sha256", "base64"}], "policies": {"name": "list key"}}
  nlohmann::json to_json() const;
  // Checks shape, decodes the files and verifies that they hash to "hash" (data_loss-like
  // invalid_argument otherwise).
  static Result<RuleBundle> from_json(const nlohmann::json& j);
};

}  // namespace pgwarden::rules
