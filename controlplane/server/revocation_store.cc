#include "controlplane/server/revocation_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/atomic_file.h"

namespace pgwarden::server {

using nlohmann::json;

std::string_view revocation_kind_name(RevocationKind kind) {
  switch (kind) {
    case RevocationKind::kAny:
      return "any";
    case RevocationKind::kIdentity:
      return "identity";
    case RevocationKind::kKey:
      return "key";
  }
  return "any";
}

std::optional<RevocationKind> parse_revocation_kind(std::string_view name) {
  if (name == "any" || name.empty()) return RevocationKind::kAny;
  if (name == "identity") return RevocationKind::kIdentity;
  if (name == "key") return RevocationKind::kKey;
  return std::nullopt;
}

bool Revocation::matches(std::string_view subject, std::string_view key_id) const {
  bool by_subject = kind != RevocationKind::kKey && !subject.empty() && name == subject;
  bool by_key = kind != RevocationKind::kIdentity && !key_id.empty() && name == key_id;
  return by_subject || by_key;
}

json Revocation::to_json() const {
  return json{{"name", name}, {"kind", revocation_kind_name(kind)}, {"reason", reason},
              {"by", by},     {"created_ms", created_ms},           {"until_ms", until_ms}};
}

Result<Revocation> Revocation::from_json(const json& e) {
  if (!e.is_object() || !e.contains("name") || !e["name"].is_string()) {
    return invalid_argument("an entry without a name");
  }
  Revocation r;
  r.name = e["name"].get<std::string>();
  auto kind = parse_revocation_kind(e.value("kind", std::string("any")));
  if (!kind) return invalid_argument("unknown kind for " + r.name);
  r.kind = *kind;
  r.reason = e.value("reason", std::string());
  r.by = e.value("by", std::string());
  r.created_ms = e.value("created_ms", int64_t{0});
  r.until_ms = e.value("until_ms", int64_t{0});
  return r;
}

Result<std::unique_ptr<RevocationStore>> RevocationStore::open(const std::string& state_dir) {
  std::unique_ptr<RevocationStore> store(new RevocationStore(state_dir + "/revocations.json"));
  std::ifstream in(store->path_, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return store;
    return unavailable("cannot read " + store->path_ + ": " + std::strerror(errno));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  json doc = json::parse(ss.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("revocations") ||
      !doc["revocations"].is_array()) {
    return invalid_argument(store->path_ + " is not a revocation file (fix or remove it)");
  }
  for (const json& e : doc["revocations"]) {
    auto r = Revocation::from_json(e);
    if (!r.is_ok()) return invalid_argument(store->path_ + ": " + r.status().message());
    store->entries_.push_back(std::move(*r));
  }
  return store;
}

Status RevocationStore::persist(const std::vector<Revocation>& entries) const {
  json list = json::array();
  for (const Revocation& r : entries) list.push_back(r.to_json());
  std::string text = json{{"revocations", std::move(list)}}.dump(1) + "\n";
  Status st = replace_file_atomically(path_, text, 0600);
  if (!st.is_ok()) {
    return unavailable("cannot persist revocations to " + path_ + ": " + st.message());
  }
  return Status::ok();
}

Status RevocationStore::revoke(Revocation r) {
  if (r.name.empty() || r.name.size() > 256) {
    return invalid_argument("a revocation names a subject or key id (1..256 bytes)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Revocation> next = entries_;
  next.erase(
      std::remove_if(next.begin(), next.end(),
                     [&](const Revocation& e) { return e.name == r.name && e.kind == r.kind; }),
      next.end());
  if (replica_.put) PGW_RETURN_IF_ERROR(replica_.put(r));
  next.push_back(std::move(r));
  PGW_RETURN_IF_ERROR(persist(next));
  entries_ = std::move(next);
  return Status::ok();
}

Result<std::vector<Revocation>> RevocationStore::unrevoke(const std::string& name,
                                                          RevocationKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Revocation> next;
  std::vector<Revocation> removed;
  for (const Revocation& e : entries_) {
    bool hit = e.name == name && (kind == RevocationKind::kAny || e.kind == kind);
    (hit ? removed : next).push_back(e);
  }
  if (removed.empty()) return not_found("no revocation for " + name);
  if (replica_.remove) PGW_RETURN_IF_ERROR(replica_.remove(name, kind));
  PGW_RETURN_IF_ERROR(persist(next));
  entries_ = std::move(next);
  return removed;
}

Status RevocationStore::apply_remote(std::vector<Revocation> entries) {
  std::lock_guard<std::mutex> lock(mu_);
  PGW_RETURN_IF_ERROR(persist(entries));
  entries_ = std::move(entries);
  return Status::ok();
}

std::vector<Revocation> RevocationStore::list(int64_t now_ms, bool all) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Revocation> out;
  for (const Revocation& e : entries_) {
    if (all || e.active(now_ms)) out.push_back(e);
  }
  return out;
}

std::optional<Revocation> RevocationStore::find(std::string_view subject, std::string_view key_id,
                                                int64_t now_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Revocation& e : entries_) {
    if (e.active(now_ms) && e.matches(subject, key_id)) return e;
  }
  return std::nullopt;
}

}  // namespace pgwarden::server
