// RevocationStore: identities and keys that may not log in (and whose live sessions are
// ended), persisted in <state_dir>/revocations.json so they hold across cp restarts.
//
// An entry names a subject or a key id (a service key id or a JWKS "kid"); `kind` says which
// (`any` matches either, for `pgwardenctl identities revoke NAME` when the operator does not
// say). An entry with `until_ms` stops applying then (0: until unrevoked). Every change
// rewrites the file atomically (temp file in the same directory, fsync, rename, mode 0600);
// a write error leaves memory and file unchanged and returns the error.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgwarden::server {

enum class RevocationKind { kAny, kIdentity, kKey };
std::string_view revocation_kind_name(RevocationKind kind);
std::optional<RevocationKind> parse_revocation_kind(std::string_view name);

struct Revocation {
  std::string name;  // subject or key id
  RevocationKind kind = RevocationKind::kAny;
  std::string reason;
  std::string by;  // the admin principal
  int64_t created_ms = 0;
  int64_t until_ms = 0;  // 0: until unrevoked

  bool active(int64_t now_ms) const { return until_ms == 0 || now_ms < until_ms; }
  bool matches(std::string_view subject, std::string_view key_id) const;
  nlohmann::json to_json() const;
  // invalid_argument for an entry without a name or with an unknown kind.
  static Result<Revocation> from_json(const nlohmann::json& j);
};

// Where revocations are shared with other gateway nodes (controlplane/state): each change is
// written there before the local file; an error refuses the change.
struct RevocationReplica {
  std::function<Status(const Revocation& entry)> put;
  std::function<Status(const std::string& name, RevocationKind kind)> remove;
};

class RevocationStore {
 public:
  // Reads <state_dir>/revocations.json if it exists. A file that cannot be parsed is an error
  // (cp must not start and forget revocations).
  static Result<std::unique_ptr<RevocationStore>> open(const std::string& state_dir);

  // Adds (or replaces: same name and kind) an entry and persists it.
  Status revoke(Revocation r);
  // Removes every entry named `name` (of `kind`, or any kind for kAny). not_found when none.
  Result<std::vector<Revocation>> unrevoke(const std::string& name, RevocationKind kind);
  // Active entries (expired ones are kept in the file but not listed unless `all`).
  std::vector<Revocation> list(int64_t now_ms, bool all = false) const;
  // The first active entry matching the identity or its key.
  std::optional<Revocation> find(std::string_view subject, std::string_view key_id,
                                 int64_t now_ms) const;
  const std::string& path() const { return path_; }

  // REQUIRES: called before any other thread uses the store.
  void set_replica(RevocationReplica replica) { replica_ = std::move(replica); }
  // The whole set as the shared store has it (another node changed it): replaces the entries
  // and persists them locally.
  Status apply_remote(std::vector<Revocation> entries);

 private:
  explicit RevocationStore(std::string path) : path_(std::move(path)) {}
  Status persist(const std::vector<Revocation>& entries) const;

  std::string path_;
  mutable std::mutex mu_;
  std::vector<Revocation> entries_;
  RevocationReplica replica_;
};

}  // namespace pgwarden::server
