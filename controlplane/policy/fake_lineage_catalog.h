// A fake LineageCatalog for unit tests and benchmarks (no database): crm.customers and
// crm.orders, public.customers (same name, other schema), views over crm.customers (one over
// another, one filtering on ssn, one referring to itself), user functions public.leak and
// public.hstore, and the built-in functions the tests call.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "controlplane/policy/lineage.h"

namespace pgwarden::policy {

class FakeCatalog : public LineageCatalog {
 public:
  FakeCatalog() {
    add({"crm", "customers", 'r', {"id", "name", "ssn", "email", "phone"}, ""});
    add({"crm", "orders", 'r', {"id", "customer_id", "total", "note"}, ""});
    add({"public", "customers", 'r', {"id", "nick"}, ""});
    add({"crm",
         "customers_view",
         'v',
         {"id", "name", "ssn", "contact"},
         " SELECT customers.id, customers.name, customers.ssn, "
         "lower(customers.email) AS contact FROM crm.customers;"});
    add({"crm",
         "customers_v2",
         'v',
         {"ident", "ssn"},
         " SELECT v.id AS ident, v.ssn FROM crm.customers_view v;"});
    add({"crm",
         "vip",
         'v',
         {"id"},
         " SELECT customers.id FROM crm.customers WHERE customers.ssn LIKE '9%';"});
    add({"crm", "loop", 'v', {"id"}, " SELECT loop.id FROM crm.loop;"});
    functions_["leak"] = {"public"};
    functions_["lower"] = {"pg_catalog"};
    functions_["md5"] = {"pg_catalog"};
    functions_["count"] = {"pg_catalog"};
    functions_["row_to_json"] = {"pg_catalog"};
    functions_["to_jsonb"] = {"pg_catalog"};
    functions_["string_agg"] = {"pg_catalog"};
    functions_["format"] = {"pg_catalog"};
    functions_["unnest"] = {"pg_catalog"};
    functions_["substr"] = {"pg_catalog"};
    functions_["row_number"] = {"pg_catalog"};
    functions_["generate_series"] = {"pg_catalog"};
    functions_["hstore"] = {"public"};
    functions_["array_agg"] = {"pg_catalog"};
    functions_["json_agg"] = {"pg_catalog"};
    for (const char* f :
         {"reverse", "split_part", "rank", "max", "min", "sum", "set_config", "query_to_xml",
          "table_to_xml", "cursor_to_xml", "ts_stat", "pg_notify", "to_date", "percentile_disc",
          "jsonb_path_query", "regexp_replace", "regexp_like", "lag"}) {
      functions_[f] = {"pg_catalog"};
    }
    for (const char* f : {"pg_try_advisory_lock", "hashtext", "setval", "ascii", "length"}) {
      functions_[f] = {"pg_catalog"};
    }
  }
  Result<std::vector<CatalogRelation>> relations(const std::string& schema,
                                                 const std::string& name) override {
    ++lookups;
    std::vector<CatalogRelation> out;
    for (const auto& r : rels_) {
      if (r.name == name && (schema.empty() || r.schema == schema)) out.push_back(r);
    }
    return out;
  }
  Result<std::vector<std::string>> function_schemas(const std::string& name) override {
    auto it = functions_.find(name);
    if (it == functions_.end()) return std::vector<std::string>{};
    return it->second;
  }
  int lookups = 0;

  void add(CatalogRelation r) { rels_.push_back(std::move(r)); }
  void add_function(const std::string& name, const std::string& schema) {
    functions_[name].push_back(schema);
  }

 private:
  std::vector<CatalogRelation> rels_;
  std::map<std::string, std::vector<std::string>> functions_;
};

}  // namespace pgwarden::policy
