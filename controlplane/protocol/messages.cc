#include "controlplane/protocol/messages.h"

#include <chrono>
#include <limits>
#include <set>

namespace pgwarden::protocol {

namespace {

Status bad_request(std::string msg) { return invalid_argument(std::move(msg), "08P01"); }

// Reads typed fields, remembering the first problem; callers check status() once.
class Reader {
 public:
  explicit Reader(const json& j) : j_(j) {}

  void str(const char* key, std::string& out, bool required = true, size_t max = 1 << 20) {
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) fail(std::string("missing field \"") + key + "\"");
      return;
    }
    if (!it->is_string()) return fail(std::string("field \"") + key + "\" must be a string");
    if (it->get_ref<const std::string&>().size() > max) {
      return fail(std::string("field \"") + key + "\" is too long");
    }
    out = it->get<std::string>();
    if (required && out.empty()) fail(std::string("field \"") + key + "\" must not be empty");
  }

  template <typename Int>
  void integer(const char* key, Int& out, bool required = true) {
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) fail(std::string("missing field \"") + key + "\"");
      return;
    }
    bool fits = false;
    if (it->is_number_unsigned()) {
      fits = it->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<Int>::max());
    } else if (it->is_number_integer()) {
      int64_t v = it->get<int64_t>();
      fits = v >= static_cast<int64_t>(std::numeric_limits<Int>::min()) &&
             (v < 0 ||
              static_cast<uint64_t>(v) <= static_cast<uint64_t>(std::numeric_limits<Int>::max()));
    }
    if (!fits) return fail(std::string("field \"") + key + "\" must be an integer in range");
    out = it->get<Int>();
  }

  void boolean(const char* key, bool& out, bool required = true) {
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) fail(std::string("missing field \"") + key + "\"");
      return;
    }
    if (!it->is_boolean()) return fail(std::string("field \"") + key + "\" must be a boolean");
    out = it->get<bool>();
  }

  void strings(const char* key, std::vector<std::string>& out, bool required = true) {
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) fail(std::string("missing field \"") + key + "\"");
      return;
    }
    if (!it->is_array() || it->size() > 4096) {
      return fail(std::string("field \"") + key + "\" must be an array of strings");
    }
    for (const json& e : *it) {
      if (!e.is_string()) {
        return fail(std::string("field \"") + key + "\" must be an array of strings");
      }
      out.push_back(e.get<std::string>());
    }
  }

  const json* array(const char* key, bool required = true) {
    auto it = j_.find(key);
    if (it == j_.end()) {
      if (required) fail(std::string("missing field \"") + key + "\"");
      return nullptr;
    }
    if (!it->is_array() || it->size() > 65536) {
      fail(std::string("field \"") + key + "\" must be an array");
      return nullptr;
    }
    return &*it;
  }

  const json* object(const char* key) {
    auto it = j_.find(key);
    if (it == j_.end() || !it->is_object()) {
      fail(std::string("field \"") + key + "\" must be an object");
      return nullptr;
    }
    return &*it;
  }

  void fail(std::string msg) {
    if (status_.is_ok()) status_ = bad_request(std::move(msg));
  }
  void merge(const Status& s) {
    if (status_.is_ok() && !s.is_ok()) status_ = s;
  }
  const Status& status() const { return status_; }
  bool ok() const { return status_.is_ok(); }

 private:
  const json& j_;
  Status status_;
};

json request(uint64_t id, std::string_view type, int64_t deadline_ms) {
  return json{{"id", id}, {"type", type}, {"deadline_ms", deadline_ms}};
}

template <typename T>
Result<T> finish(Reader& r, T value) {
  if (!r.ok()) return r.status();
  return value;
}

}  // namespace

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json make_ok(uint64_t id, json fields) {
  json out = std::move(fields);
  if (!out.is_object()) out = json::object();
  out["id"] = id;
  out["ok"] = true;
  return out;
}

json make_error(uint64_t id, const ErrorInfo& e) {
  return json{{"id", id},
              {"ok", false},
              {"error", {{"sqlstate", e.sqlstate}, {"code", e.code}, {"message", e.message}}}};
}

json make_error(uint64_t id, std::string_view code, const Status& status) {
  return make_error(id, ErrorInfo{status.sqlstate().empty() ? "08P01" : status.sqlstate(),
                                  std::string(code), status.message()});
}

Result<RequestHeader> parse_request_header(const json& j) {
  Reader r(j);
  RequestHeader h;
  r.integer("id", h.id);
  r.str("type", h.type, true, 64);
  r.integer("deadline_ms", h.deadline_ms, h.type != "hello");
  return finish(r, std::move(h));
}

json Hello::to_json(uint64_t id) const {
  return json{{"id", id}, {"type", "hello"}, {"protocol", protocol}, {"dp", dp}};
}

Result<Hello> Hello::from_json(const json& j) {
  Reader r(j);
  Hello h;
  r.integer("protocol", h.protocol);
  r.str("dp", h.dp, false, 256);
  return finish(r, std::move(h));
}

json AuthenticateRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request(id, "authenticate", deadline_ms);
  j.update({{"session_id", session_id},
            {"token", token},
            {"user", user},
            {"target", target},
            {"client_addr", client_addr},
            {"tls", tls}});
  return j;
}

Result<AuthenticateRequest> AuthenticateRequest::from_json(const json& j) {
  Reader r(j);
  AuthenticateRequest a;
  r.str("session_id", a.session_id, true, 128);
  r.str("token", a.token, true, 64 * 1024);
  r.str("user", a.user, false, 256);
  r.str("target", a.target, true, 256);
  r.str("client_addr", a.client_addr, false, 256);
  r.boolean("tls", a.tls, false);
  return finish(r, std::move(a));
}

json AuthenticateResponse::to_json() const {
  return json{
      {"identity",
       {{"subject", identity.subject}, {"issuer", identity.issuer}, {"groups", identity.groups}}},
      {"policy",
       {{"name", policy.name},
        {"version", policy.version},
        {"read_only", policy.read_only},
        {"rule_sets", policy.rule_sets},
        {"recording", policy.recording},
        {"allow_function_call", policy.allow_function_call}}},
      {"upstream",
       {{"host", upstream.host},
        {"port", upstream.port},
        {"unix_socket", upstream.unix_socket},
        {"database", upstream.database},
        {"role", upstream.role},
        {"tls_mode", upstream.tls_mode},
        {"ca_file", upstream.ca_file}}},
      {"startup_parameters", startup_parameters}};
}

Result<AuthenticateResponse> AuthenticateResponse::from_json(const json& j) {
  Reader r(j);
  AuthenticateResponse a;
  if (const json* id = r.object("identity")) {
    Reader ri(*id);
    ri.str("subject", a.identity.subject);
    ri.str("issuer", a.identity.issuer, false);
    ri.strings("groups", a.identity.groups);
    r.merge(ri.status());
  }
  if (const json* p = r.object("policy")) {
    Reader rp(*p);
    rp.str("name", a.policy.name);
    rp.integer("version", a.policy.version);
    rp.boolean("read_only", a.policy.read_only);
    rp.strings("rule_sets", a.policy.rule_sets);
    rp.str("recording", a.policy.recording);
    rp.boolean("allow_function_call", a.policy.allow_function_call);
    r.merge(rp.status());
  }
  if (const json* u = r.object("upstream")) {
    Reader ru(*u);
    ru.str("host", a.upstream.host, false);
    ru.integer("port", a.upstream.port);
    ru.str("unix_socket", a.upstream.unix_socket, false);
    ru.str("database", a.upstream.database);
    ru.str("role", a.upstream.role);
    ru.str("tls_mode", a.upstream.tls_mode);
    ru.str("ca_file", a.upstream.ca_file, false);
    r.merge(ru.status());
  }
  if (const json* sp = r.object("startup_parameters")) {
    for (const auto& [k, v] : sp->items()) {
      if (!v.is_string()) {
        r.fail("startup_parameters values must be strings");
        break;
      }
      a.startup_parameters[k] = v.get<std::string>();
    }
  }
  return finish(r, std::move(a));
}

Result<ScramStartRequest> ScramStartRequest::from_json(const json& j) {
  Reader r(j);
  ScramStartRequest s;
  r.str("session_id", s.session_id, true, 128);
  r.strings("mechanisms", s.mechanisms);
  return finish(r, std::move(s));
}
json ScramStartRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request(id, "scram_start", deadline_ms);
  j.update({{"session_id", session_id}, {"mechanisms", mechanisms}});
  return j;
}

Result<ScramContinueRequest> ScramContinueRequest::from_json(const json& j) {
  Reader r(j);
  ScramContinueRequest s;
  r.str("session_id", s.session_id, true, 128);
  r.str("server_first", s.server_first, true, 4096);
  return finish(r, std::move(s));
}
json ScramContinueRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request(id, "scram_continue", deadline_ms);
  j.update({{"session_id", session_id}, {"server_first", server_first}});
  return j;
}

Result<ScramFinishRequest> ScramFinishRequest::from_json(const json& j) {
  Reader r(j);
  ScramFinishRequest s;
  r.str("session_id", s.session_id, true, 128);
  r.str("server_final", s.server_final, true, 4096);
  return finish(r, std::move(s));
}
json ScramFinishRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request(id, "scram_finish", deadline_ms);
  j.update({{"session_id", session_id}, {"server_final", server_final}});
  return j;
}

Result<AnalyseRequest> AnalyseRequest::from_json(const json& j) {
  Reader r(j);
  AnalyseRequest a;
  r.str("session_id", a.session_id, true, 128);
  r.str("sql", a.sql, true);
  r.str("shape_key", a.shape_key, false, 64);
  if (const json* p = r.array("prescreen", false)) {
    for (const json& e : *p) {
      if (!e.is_object()) {
        r.fail("prescreen entries must be objects");
        break;
      }
      Reader re(e);
      PrescreenHit h;
      re.str("rule", h.rule, true, 256);
      re.str("action", h.action, true, 16);
      if (re.ok() && h.action != "deny" && h.action != "approve" && h.action != "detect") {
        re.fail("prescreen action must be deny, approve or detect");
      }
      r.merge(re.status());
      a.prescreen.push_back(std::move(h));
    }
  }
  return finish(r, std::move(a));
}
json AnalyseRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request(id, "analyse", deadline_ms);
  json hits = json::array();
  for (const auto& h : prescreen) hits.push_back({{"rule", h.rule}, {"action", h.action}});
  j.update(
      {{"session_id", session_id}, {"sql", sql}, {"shape_key", shape_key}, {"prescreen", hits}});
  return j;
}

json AnalyseResponse::to_json() const {
  return json{{"verdict", verdict}, {"rule", rule}, {"message", message}, {"cacheable", cacheable}};
}
Result<AnalyseResponse> AnalyseResponse::from_json(const json& j) {
  Reader r(j);
  AnalyseResponse a;
  r.str("verdict", a.verdict);
  r.str("rule", a.rule, false);
  r.str("message", a.message, false);
  r.boolean("cacheable", a.cacheable, false);
  if (r.ok() && a.verdict != "allow" && a.verdict != "deny" && a.verdict != "approve") {
    r.fail("verdict must be allow, deny or approve");
  }
  return finish(r, std::move(a));
}

Result<ApprovalRequest> ApprovalRequest::from_json(const json& j) {
  Reader r(j);
  ApprovalRequest a;
  r.str("session_id", a.session_id, true, 128);
  r.str("sql", a.sql, true);
  r.str("shape_key", a.shape_key, false, 64);
  r.str("rule", a.rule, false, 256);
  r.str("reason", a.reason, false, 4096);
  return finish(r, std::move(a));
}
json ApprovalRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request(id, "approval", deadline_ms);
  j.update({{"session_id", session_id},
            {"sql", sql},
            {"shape_key", shape_key},
            {"rule", rule},
            {"reason", reason}});
  return j;
}

json ApprovalResponse::to_json() const {
  return json{{"verdict", verdict}, {"approval_id", approval_id}, {"reason", reason}};
}
Result<ApprovalResponse> ApprovalResponse::from_json(const json& j) {
  Reader r(j);
  ApprovalResponse a;
  r.str("verdict", a.verdict);
  r.str("approval_id", a.approval_id, false);
  r.str("reason", a.reason, false);
  if (r.ok() && a.verdict != "allow" && a.verdict != "deny") {
    r.fail("verdict must be allow or deny");
  }
  return finish(r, std::move(a));
}

Result<MaskPlanRequest> MaskPlanRequest::from_json(const json& j) {
  Reader r(j);
  MaskPlanRequest m;
  r.str("session_id", m.session_id, true, 128);
  if (j.contains("copy")) {
    CopyPlanRequest c;
    if (const json* cj = r.object("copy")) {
      Reader rc(*cj);
      rc.str("sql", c.sql);
      rc.integer("index", c.index);
      rc.integer("format", c.format);
      rc.integer("columns", c.columns);
      if (rc.ok() &&
          (c.index < 0 || (c.format != 0 && c.format != 1) || c.columns < 0 || c.columns > 1664)) {
        rc.fail("copy: index, format or columns out of range");
      }
      r.merge(rc.status());
    }
    m.copy = std::move(c);
    return finish(r, std::move(m));
  }
  if (const json* f = r.array("fields")) {
    if (f->size() > 1664) r.fail("more fields than PostgreSQL allows in a row (1664)");
    for (const json& e : *f) {
      if (!r.ok()) break;
      if (!e.is_object()) {
        r.fail("fields entries must be objects");
        break;
      }
      Reader re(e);
      FieldDescription d;
      re.str("name", d.name, false, 1024);
      re.integer("table_oid", d.table_oid);
      re.integer("attnum", d.attnum);
      re.integer("type_oid", d.type_oid);
      re.integer("format", d.format, false);
      r.merge(re.status());
      m.fields.push_back(std::move(d));
    }
  }
  return finish(r, std::move(m));
}
json MaskPlanRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request(id, "mask_plan", deadline_ms);
  json fs = json::array();
  for (const auto& f : fields) {
    fs.push_back({{"name", f.name},
                  {"table_oid", f.table_oid},
                  {"attnum", f.attnum},
                  {"type_oid", f.type_oid},
                  {"format", f.format}});
  }
  j.update({{"session_id", session_id}, {"fields", fs}});
  if (copy) {
    j.erase("fields");
    j["copy"] = {{"sql", copy->sql},
                 {"index", copy->index},
                 {"format", copy->format},
                 {"columns", copy->columns}};
  }
  return j;
}

json MaskPlanResponse::to_json() const {
  json j{{"plan", plan}};
  if (!copy.is_null()) j["copy"] = copy;
  return j;
}

Result<MaskPlanResponse> MaskPlanResponse::from_json(const json& j) {
  Reader r(j);
  MaskPlanResponse m;
  const json* plan = j.is_object() && j.contains("plan") ? &j["plan"] : nullptr;
  if (plan == nullptr || !plan->is_object()) {
    r.fail("\"plan\" must be an object");
    return finish(r, std::move(m));
  }
  Reader rp(*plan);
  bool detect = false;
  rp.boolean("detect", detect, false);
  if (const json* cols = rp.array("columns")) {
    for (const json& e : *cols) {
      if (!e.is_object()) {
        rp.fail("columns entries must be objects");
        break;
      }
      Reader re(e);
      int index = 0;
      std::string function;
      re.integer("index", index);
      re.str("function", function);
      rp.merge(re.status());
    }
  }
  r.merge(rp.status());
  m.plan = *plan;
  if (j.contains("copy")) {
    if (j["copy"].is_object()) {
      m.copy = j["copy"];
    } else {
      r.fail("\"copy\" must be an object");
    }
  }
  return finish(r, std::move(m));
}

Result<Event> Event::from_json(const json& j) {
  Reader r(j);
  Event e;
  r.str("session_id", e.session_id, true, 128);
  r.str("kind", e.kind, true, 32);
  static const std::set<std::string> kKinds = {"session_start", "statement", "rows", "error",
                                               "session_end", "wire_deny"};
  if (r.ok() && !kKinds.count(e.kind)) r.fail("unknown event kind \"" + e.kind + "\"");
  e.fields = json::object();
  for (const auto& [k, v] : j.items()) {
    if (k != "type" && k != "session_id" && k != "kind") e.fields[k] = v;
  }
  return finish(r, std::move(e));
}
json Event::to_json() const {
  json j = fields.is_object() ? fields : json::object();
  j["type"] = "event";
  j["session_id"] = session_id;
  j["kind"] = kind;
  return j;
}

}  // namespace pgwarden::protocol
