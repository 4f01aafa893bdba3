#include "controlplane/masking/mask_plan.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <memory>
#include <set>

#include "controlplane/policy/glob.h"
#include "controlplane/policy/mask_lineage.h"

namespace pgwarden::maskplan {

namespace {

// Column and type names are matched ASCII case-insensitively.
constexpr auto kFold = policy::GlobCase::kInsensitive;

constexpr size_t kKeyBytes = 32;

bool text_like(const TypeInfo* t) {
  if (t == nullptr) return false;
  return t->category == 'S' || t->name == "json" || t->name == "jsonb" || t->name == "xml";
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

// Lineage of the views met while building one plan, by "schema.table" (null: not a view).
using ViewCache = std::map<std::string, std::shared_ptr<std::vector<policy::OutputColumn>>>;

bool system_schema(std::string_view s) { return s == "pg_catalog" || s == "information_schema"; }

// The lineage of view column `attnum` of the relation `col` names; nullptr when the relation
// is not a view (or is a catalog view).
Result<const policy::ColumnLineage*> view_column(policy::LineageCatalog& lineage,
                                                 const ColumnName& col, int16_t attnum,
                                                 ViewCache* views) {
  const std::string key = col.schema + "." + col.table;
  auto it = views->find(key);
  if (it == views->end()) {
    std::shared_ptr<std::vector<policy::OutputColumn>> cols;
    if (!system_schema(col.schema)) {
      auto rels = lineage.relations(col.schema, col.table);
      if (!rels.is_ok()) return rels.status();
      bool is_view = std::any_of(rels->begin(), rels->end(), [](const policy::CatalogRelation& r) {
        return r.kind == 'v' || r.kind == 'm';
      });
      if (is_view) {
        auto l = policy::view_lineage(col.schema, col.table, lineage);
        if (!l.is_ok()) {
          return unavailable("cannot resolve the columns of view " + key + ": " +
                             l.status().message());
        }
        cols = std::make_shared<std::vector<policy::OutputColumn>>(std::move(l).value());
      }
    }
    it = views->emplace(key, std::move(cols)).first;
  }
  if (!it->second) return static_cast<const policy::ColumnLineage*>(nullptr);
  if (attnum < 1 || static_cast<size_t>(attnum) > it->second->size()) {
    return unavailable("view " + key + " has no column " + std::to_string(attnum));
  }
  return &(*it->second)[attnum - 1].lineage;
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
  ViewCache views;
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

    // The field's origin, and for a view column the source columns it shows as is.
    std::vector<ColumnName> origins;
    if (col != nullptr) origins.push_back(*col);
    const policy::MaskRule* derived = nullptr;
    std::string derived_source;
    if (col != nullptr && options.lineage != nullptr) {
      auto view = view_column(*options.lineage, *col, f.attnum, &views);
      if (!view.is_ok()) return view.status();
      if (*view != nullptr) {
        for (const auto& s : (*view)->as_is) origins.push_back({s.schema, s.table, s.column});
        for (const auto& s : (*view)->transformed) {
          if (const policy::MaskRule* r = policy::mask_rule_for_source(policy, s)) {
            derived = r;
            derived_source = s.qualified();
            break;
          }
        }
      }
    }
    const policy::MaskRule* match = nullptr;
    std::string reason;
    for (const auto& rule : policy.masks) {
      if (!rule.column_glob.empty()) {
        for (const ColumnName& o : origins) {
          if (policy::glob_match(rule.column_glob, o.qualified(), kFold)) {
            reason = "column_glob " + rule.column_glob;
          }
        }
      } else if (!rule.name_pattern.empty()) {
        bool hit = policy::glob_match(rule.name_pattern, f.name, kFold);
        for (const ColumnName& o : origins) {
          hit = hit || policy::glob_match(rule.name_pattern, o.column, kFold);
        }
        if (hit) reason = "name_pattern " + rule.name_pattern;
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
    if (derived != nullptr) {
      // A view column computed from a masked source: never the value or a function of it.
      pc.function = "redact";
      pc.text = "****";
      pc.keep_last = 0;
      pc.reason = "derived from masked " + derived_source;
      plan.columns.push_back(std::move(pc));
    } else if (match != nullptr) {
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
