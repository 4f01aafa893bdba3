#include "rules/rule_bundle.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <fstream>

namespace pgwarden::rules {

namespace {

std::string hex(const unsigned char* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}

std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> unbase64(const std::string& text) {
  if (text.size() % 4 != 0) return invalid_argument("base64 length is not a multiple of 4");
  std::string out(text.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return invalid_argument("invalid base64");
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

// Length-prefixed, so that no two different bundles feed the same bytes to the hash.
void feed(EVP_MD_CTX* ctx, std::string_view s) {
  uint64_t n = s.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (56 - 8 * i));
  EVP_DigestUpdate(ctx, len, sizeof len);
  EVP_DigestUpdate(ctx, s.data(), s.size());
}

}  // namespace

std::string rule_set_list_key(const std::vector<std::string>& names) {
  std::string key;
  for (const auto& n : names) {
    if (!key.empty()) key += ',';
    key += n;
  }
  return key;
}

Result<std::string> rule_set_file(const std::string& dir, const std::string& name) {
  std::vector<std::string> candidates = {name};
  if (name.rfind("default-", 0) == 0) candidates.push_back(name.substr(8));
  if (name.size() > 7 && name.compare(name.size() - 7, 7, "-detect") == 0) {
    candidates.push_back(name.substr(0, name.size() - 7));
  }
  for (const auto& c : candidates) {
    std::string path = dir + "/" + c + ".rules";
    if (access(path.c_str(), R_OK) == 0) return path;
  }
  return not_found("rule set \"" + name + "\" has no file " + dir + "/" + name + ".rules");
}

Result<RuleBundle> RuleBundle::read(const std::string& dir,
                                    const std::vector<std::vector<std::string>>& lists) {
  RuleBundle b;
  for (const auto& list : lists) {
    if (list.empty()) continue;
    if (std::find(b.lists.begin(), b.lists.end(), list) == b.lists.end()) b.lists.push_back(list);
    for (const auto& name : list) {
      if (b.files.count(name)) continue;
      auto path = rule_set_file(dir, name);
      if (!path.is_ok()) return path.status();
      std::ifstream in(*path, std::ios::binary);
      if (!in) return invalid_argument(*path + ":0: cannot open file");
      std::string content;
      char buf[65536];
      while (in.read(buf, sizeof buf) || in.gcount() > 0) {
        content.append(buf, static_cast<size_t>(in.gcount()));
        if (content.size() > kMaxRuleFileBytes) {
          return invalid_argument(*path + ":0: file is larger than " +
                                  std::to_string(kMaxRuleFileBytes) + " bytes");
        }
      }
      b.files.emplace(name, File{*path, std::move(content)});
    }
  }
  b.hash = b.compute_hash();
  return b;
}

Result<CompiledLists> RuleBundle::compile() const {
  // Each file alone first, so a broken file is reported once (with file:line) rather than
  // once per list that uses it.
  std::string errors;
  for (const auto& [name, f] : files) {
    RuleSource src{f.path, f.content};
    auto parsed = RuleSet::parse(std::span<const RuleSource>(&src, 1));
    if (!parsed.is_ok()) errors += (errors.empty() ? "" : "\n") + parsed.status().message();
  }
  if (!errors.empty()) return invalid_argument(std::move(errors));
  CompiledLists out;
  for (const auto& list : lists) {
    std::vector<RuleSource> sources;
    for (const auto& name : list) {
      auto it = files.find(name);
      if (it == files.end()) {
        return invalid_argument("rule set \"" + name + "\" is not in the bundle");
      }
      sources.push_back({it->second.path, it->second.content});
    }
    // Lists combine files: ids must also be unique across them, and Hyperscan must take
    // the whole list.
    auto parsed = RuleSet::parse(sources);
    if (!parsed.is_ok()) return invalid_argument(parsed.status().message());
    CompileOptions options;
    auto db = databases.find(rule_set_list_key(list));
    if (db != databases.end()) options.serialized = db->second;
    auto compiled = CompiledRuleSet::compile(std::move(*parsed), options);
    if (!compiled.is_ok()) return invalid_argument(compiled.status().message());
    out.emplace(rule_set_list_key(list), std::move(*compiled));
  }
  return out;
}

void RuleBundle::attach_databases(const CompiledLists& compiled) {
  databases.clear();
  for (const auto& [key, set] : compiled) {
    std::string bytes = set->serialize();
    if (!bytes.empty()) databases[key] = std::move(bytes);
  }
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), md);
  return hex(md, sizeof md);
}

std::string RuleBundle::compute_hash() const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  feed(ctx, "pgwarden-rules-v1");
  feed(ctx, std::to_string(lists.size()));
  for (const auto& list : lists) feed(ctx, rule_set_list_key(list));
  feed(ctx, std::to_string(policy_lists.size()));
  for (const auto& [policy, key] : policy_lists) {
    feed(ctx, policy);
    feed(ctx, key);
  }
  if (!policy_masks.empty()) {
    feed(ctx, "masks");
    feed(ctx, std::to_string(policy_masks.size()));
    // The masks' content, not their version (a config version, which differs between nodes
    // that loaded one config at different times): one config gives one hash on every node.
    for (const auto& [policy, m] : policy_masks) {
      feed(ctx, policy);
      feed(ctx, m.digest);
      feed(ctx, m.masks_values ? "1" : "0");
    }
  }
  feed(ctx, std::to_string(files.size()));
  for (const auto& [name, f] : files) {
    feed(ctx, name);
    feed(ctx, f.path);
    feed(ctx, f.content);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  return hex(md, len);
}

size_t RuleBundle::rule_file_bytes() const {
  size_t n = 0;
  for (const auto& [name, f] : files) n += f.content.size();
  return n;
}

nlohmann::json RuleBundle::to_json() const {
  nlohmann::json files_json = nlohmann::json::array();
  for (const auto& [name, f] : files) {
    files_json.push_back({{"name", name}, {"path", f.path}, {"base64", base64(f.content)}});
  }
  nlohmann::json dbs = nlohmann::json::array();
  for (const auto& [key, bytes] : databases) {
    dbs.push_back({{"list", key}, {"sha256", sha256_hex(bytes)}, {"base64", base64(bytes)}});
  }
  nlohmann::json masks = nlohmann::json::object();
  for (const auto& [policy, m] : policy_masks) {
    masks[policy] = {
        {"version", m.version}, {"digest", m.digest}, {"masks_values", m.masks_values}};
  }
  return {{"generation", generation}, {"hash", hash},     {"lists", lists},
          {"files", files_json},      {"databases", dbs}, {"policies", policy_lists},
          {"masks", masks}};
}

Result<RuleBundle> RuleBundle::from_json(const nlohmann::json& j) {
  if (!j.is_object()) return invalid_argument("rules bundle: not an object");
  RuleBundle b;
  if (!j.contains("generation") || !j["generation"].is_number_unsigned() || !j.contains("hash") ||
      !j["hash"].is_string() || !j.contains("lists") || !j["lists"].is_array() ||
      !j.contains("files") || !j["files"].is_array()) {
    return invalid_argument("rules bundle: generation, hash, lists and files are required");
  }
  b.generation = j["generation"].get<uint64_t>();
  for (const auto& list : j["lists"]) {
    if (!list.is_array() || list.empty()) return invalid_argument("rules bundle: bad list");
    std::vector<std::string> names;
    for (const auto& n : list) {
      if (!n.is_string()) return invalid_argument("rules bundle: list names must be strings");
      names.push_back(n.get<std::string>());
    }
    b.lists.push_back(std::move(names));
  }
  for (const auto& f : j["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("path") ||
        !f["path"].is_string() || !f.contains("base64") || !f["base64"].is_string()) {
      return invalid_argument("rules bundle: files need name, path and base64");
    }
    auto content = unbase64(f["base64"].get<std::string>());
    if (!content.is_ok()) return invalid_argument("rules bundle: " + content.status().message());
    b.files[f["name"].get<std::string>()] = File{f["path"].get<std::string>(), std::move(*content)};
  }
  for (const auto& list : b.lists) {
    for (const auto& name : list) {
      if (!b.files.count(name))
        return invalid_argument("rules bundle: no file for \"" + name + "\"");
    }
  }
  if (j.contains("databases")) {
    if (!j["databases"].is_array()) return invalid_argument("rules bundle: bad databases");
    for (const auto& d : j["databases"]) {
      if (!d.is_object() || !d.contains("list") || !d["list"].is_string() ||
          !d.contains("sha256") || !d["sha256"].is_string() || !d.contains("base64") ||
          !d["base64"].is_string()) {
        return invalid_argument("rules bundle: databases need list, sha256 and base64");
      }
      auto bytes = unbase64(d["base64"].get<std::string>());
      if (!bytes.is_ok() || sha256_hex(*bytes) != d["sha256"].get<std::string>()) {
        return invalid_argument("rules bundle: the database of list \"" +
                                d["list"].get<std::string>() + "\" does not match its sha256");
      }
      b.databases[d["list"].get<std::string>()] = std::move(*bytes);
    }
  }
  if (j.contains("policies")) {
    if (!j["policies"].is_object()) return invalid_argument("rules bundle: bad policies");
    for (const auto& [policy, key] : j["policies"].items()) {
      if (!key.is_string()) return invalid_argument("rules bundle: policy lists are strings");
      b.policy_lists[policy] = key.get<std::string>();
    }
  }
  if (j.contains("masks")) {
    if (!j["masks"].is_object()) return invalid_argument("rules bundle: bad masks");
    for (const auto& [policy, m] : j["masks"].items()) {
      if (!m.is_object() || !m.contains("version") || !m["version"].is_number_unsigned() ||
          !m.contains("digest") || !m["digest"].is_string() || !m.contains("masks_values") ||
          !m["masks_values"].is_boolean()) {
        return invalid_argument(
            "rules bundle: policy masks need version, digest and masks_values");
      }
      b.policy_masks[policy] = {m["version"].get<uint64_t>(), m["digest"].get<std::string>(),
                                m["masks_values"].get<bool>()};
    }
  }
  b.hash = j["hash"].get<std::string>();
  if (b.compute_hash() != b.hash) {
    return invalid_argument("rules bundle: content does not match its hash " + b.hash);
  }
  return b;
}

}  // namespace pgwarden::rules
