#include "controlplane/masking/mask_plan.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "controlplane/policy/glob.h"

namespace pgwarden::maskplan {

namespace {

// Column and type names are matched ASCII case-insensitively.
constexpr auto kFold = policy::GlobCase::kInsensitive;

constexpr size_t kKeyBytes = 32;

// Types whose values can carry personal data as text, so the content detectors scan them:
// strings, JSON, XML, and the containers whose text form holds text values: composites
// (whole-row references, row types), anonymous records (ROW(...)), arrays and hstore.
bool text_like(const TypeInfo* t) {
  if (t == nullptr) return false;
  return t->category == 'S' || t->category == 'C' || t->category == 'A' || t->name == "json" ||
         t->name == "jsonb" || t->name == "xml" || t->name == "record" || t->name == "hstore";
}

std::string hex(std::string_view raw) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

}  // namespace

nlohmann::json MaskPlan::to_json() const {
  nlohmann::json cols = nlohmann::json::array();
  for (const auto& c : columns) {
    cols.push_back({{"index", c.index},
                    {"function", c.function},
                    {"text", c.text},
                    {"keep_last", c.keep_last},
                    {"type_oid", c.type_oid},
                    {"format", c.format}});
  }
  return {{"column_count", column_count},
          {"columns", cols},
          {"detect", detect},
          {"hash_key", hex(hash_key)}};
}

Result<MaskPlan> build_mask_plan(const std::vector<ResultField>& fields,
                                 const policy::Policy& policy, Catalog& catalog,
                                 std::string_view hash_key, const MaskPlanOptions& options) {
  std::set<uint32_t> tables, types;
  for (const auto& f : fields) {
    if (f.table_oid != 0) tables.insert(f.table_oid);
    types.insert(f.type_oid);
  }
  auto snap = catalog.resolve({tables.begin(), tables.end()}, {types.begin(), types.end()});
  if (!snap) return snap.status();

  MaskPlan plan;
  plan.column_count = fields.size();
  bool uses_hash = false;
  for (size_t i = 0; i < fields.size(); ++i) {
    const ResultField& f = fields[i];
    const ColumnName* col = nullptr;
    if (f.table_oid != 0 && f.attnum > 0) {
      auto it = snap->columns.find({f.table_oid, f.attnum});
      if (it != snap->columns.end()) col = &it->second;
    }
    const TypeInfo* type = nullptr;
    if (auto it = snap->types.find(f.type_oid); it != snap->types.end()) type = &it->second;

    const policy::MaskRule* match = nullptr;
    std::string reason;
    for (const auto& rule : policy.masks) {
      if (!rule.column_glob.empty()) {
        if (col != nullptr && policy::glob_match(rule.column_glob, col->qualified(), kFold)) {
          reason = "column_glob " + rule.column_glob;
        }
      } else if (!rule.name_pattern.empty()) {
        if ((col != nullptr && policy::glob_match(rule.name_pattern, col->column, kFold)) ||
            policy::glob_match(rule.name_pattern, f.name, kFold)) {
          reason = "name_pattern " + rule.name_pattern;
        }
      } else if (!rule.type_name.empty()) {
        if (type != nullptr && policy::glob_match(rule.type_name, type->name, kFold)) {
          reason = "type_name " + rule.type_name;
        }
      }
      if (!reason.empty()) {
        match = &rule;
        break;
      }
    }

    PlannedColumn pc;
    pc.index = static_cast<int>(i);
    pc.type_oid = f.type_oid;
    pc.format = f.format;
    pc.source = col != nullptr ? col->qualified() : f.name;
    if (match != nullptr) {
      pc.function = match->function;
      pc.text = match->text;
      pc.keep_last = match->keep_last;
      pc.reason = std::move(reason);
      uses_hash = uses_hash || pc.function == "hash";
      plan.columns.push_back(std::move(pc));
    } else if (options.detect_text_columns && text_like(type)) {
      pc.function = "detect";
      pc.reason = "detect";
      plan.detect = true;
      plan.columns.push_back(std::move(pc));
    }
  }
  if (uses_hash) {
    if (hash_key.size() != kKeyBytes) {
      return invalid_argument("policy " + policy.name +
                              " masks with hash but no 32-byte pseudonymisation key is set");
    }
    plan.hash_key = std::string(hash_key);
  }
  return plan;
}

Result<std::string> derive_policy_key(std::string_view master_key, std::string_view policy_name) {
  if (master_key.size() < 16) return invalid_argument("masking master key shorter than 16 bytes");
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return internal_error("HKDF unavailable");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (ctx == nullptr) return internal_error("HKDF context failed");
  static constexpr char kSalt[] = "pgwarden/mask/v1";
  std::string info = "policy:" + std::string(policy_name);
  std::string ikm(master_key);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm.data(), ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(kSalt),
                                        sizeof(kSalt) - 1),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end(),
  };
  std::string out(kKeyBytes, '\0');
  int rc = EVP_KDF_derive(ctx, reinterpret_cast<unsigned char*>(out.data()), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  OPENSSL_cleanse(ikm.data(), ikm.size());
  if (rc != 1) return internal_error("HKDF derive failed");
  return out;
}

}  // namespace pgwarden::maskplan
