#include "common/protocol/messages.h"

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <limits>
#include <set>
#include <tuple>
#include <type_traits>

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

  // A string naming one value of the enum E (grant_types.h); any other string is refused.
  template <typename E>
  void enumeration(const char* key, E& out, bool required = true) {
    std::string name;
    str(key, name, required, 64);
    if (name.empty()) return;
    if (auto v = enum_from_name<E>(name)) {
      out = *v;
    } else {
      fail(std::string("field \"") + key + "\" has unknown value " + json(name).dump() + " (" +
           enum_names_list<E>() + ")");
    }
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

template <typename T>
Result<T> finish(Reader& r, T value) {
  if (!r.ok()) return r.status();
  return value;
}

// A message field: JSON key, struct member, required, maximum string length. The member's
// type picks the Reader check (string, integer in range, boolean, array of strings).
template <typename S, typename M>
struct FieldSpec {
  const char* key;
  M S::*member;
  bool required = true;
  size_t max = 1 << 20;
};

template <typename S, typename M>
constexpr FieldSpec<S, M> field(const char* key, M S::*member, bool required = true,
                                size_t max = 1 << 20) {
  return {key, member, required, max};
}

template <typename S, typename M>
void read_field(Reader& r, S& out, const FieldSpec<S, M>& f) {
  M& value = out.*(f.member);
  if constexpr (std::is_same_v<M, std::string>) {
    r.str(f.key, value, f.required, f.max);
  } else if constexpr (std::is_same_v<M, bool>) {
    r.boolean(f.key, value, f.required);
  } else if constexpr (std::is_same_v<M, std::vector<std::string>>) {
    r.strings(f.key, value, f.required);
  } else if constexpr (std::is_enum_v<M>) {
    r.enumeration(f.key, value, f.required);
  } else {
    r.integer(f.key, value, f.required);
  }
}

// Reads every field of `fields` (a tuple of FieldSpec) in order into `out`.
template <typename S, typename Fields>
void read_fields(Reader& r, S& out, const Fields& fields) {
  std::apply([&](const auto&... f) { (read_field(r, out, f), ...); }, fields);
}

template <typename S, typename Fields>
Result<S> parse_fields(const json& j, const Fields& fields) {
  Reader r(j);
  S out;
  read_fields(r, out, fields);
  return finish(r, std::move(out));
}

// A member as JSON: enums by their names.
template <typename M>
json wire_value(const M& v) {
  if constexpr (std::is_enum_v<M>) {
    return std::string(enum_name(v));
  } else {
    return v;
  }
}

// The fields of `value` as a JSON object (added to `into`).
template <typename S, typename Fields>
json fields_json(const S& value, const Fields& fields, json into = json::object()) {
  std::apply([&](const auto&... f) { ((into[f.key] = wire_value(value.*(f.member))), ...); },
             fields);
  return into;
}

// Reads the object at `key` (required) into `out` through `fields`.
template <typename S, typename Fields>
void read_object(Reader& r, const char* key, S& out, const Fields& fields) {
  if (const json* o = r.object(key)) {
    Reader sub(*o);
    read_fields(sub, out, fields);
    r.merge(sub.status());
  }
}

// Reads the objects of `array` into `out` through `fields`, then `check(entry_reader, item)`
// while the entry is still valid. The first problem wins and stops the loop.
template <typename T, typename Fields, typename Check>
void read_entries(Reader& r, const json& array, const char* not_object, const Fields& fields,
                  Check check, std::vector<T>& out) {
  for (const json& e : array) {
    if (!r.ok()) break;
    if (!e.is_object()) {
      r.fail(not_object);
      break;
    }
    Reader re(e);
    T item;
    read_fields(re, item, fields);
    if (re.ok()) check(re, item);
    r.merge(re.status());
    out.push_back(std::move(item));
  }
}

template <typename T, typename Fields>
json entries_json(const std::vector<T>& items, const Fields& fields) {
  json out = json::array();
  for (const T& item : items) out.push_back(fields_json(item, fields));
  return out;
}

// A request frame: the header plus the fields of `value`.
template <typename S, typename Fields>
json request_json(const S& value, std::string_view type, uint64_t id, int64_t deadline_ms,
                  const Fields& fields) {
  return fields_json(value, fields, json{{"id", id}, {"type", type}, {"deadline_ms", deadline_ms}});
}

bool one_of(const std::string& value, std::initializer_list<std::string_view> allowed) {
  return std::find(allowed.begin(), allowed.end(), value) != allowed.end();
}

// Field tables, one per message (nested objects and array entries included).
constexpr auto kHeaderFields =
    std::tuple{field("id", &RequestHeader::id), field("type", &RequestHeader::type, true, 64)};
constexpr auto kHelloFields =
    std::tuple{field("protocol", &Hello::protocol), field("dp", &Hello::dp, false, 256)};
constexpr auto kAuthenticateRequestFields =
    std::tuple{field("session_id", &AuthenticateRequest::session_id, true, 128),
               field("token", &AuthenticateRequest::token, true, 64 * 1024),
               field("user", &AuthenticateRequest::user, false, 256),
               field("target", &AuthenticateRequest::target, true, 256),
               field("client_addr", &AuthenticateRequest::client_addr, false, 256),
               field("tls", &AuthenticateRequest::tls, false)};
constexpr auto kIdentityFields = std::tuple{field("subject", &IdentityInfo::subject),
                                            field("issuer", &IdentityInfo::issuer, false),
                                            field("groups", &IdentityInfo::groups)};
constexpr auto kPolicyFields =
    std::tuple{field("name", &PolicyGrant::name),
               field("version", &PolicyGrant::version),
               field("read_only", &PolicyGrant::read_only),
               field("rule_sets", &PolicyGrant::rule_sets),
               field("recording", &PolicyGrant::recording),
               field("allow_function_call", &PolicyGrant::allow_function_call),
               field("recording_required", &PolicyGrant::recording_required, false),
               field("masks_values", &PolicyGrant::masks_values, false),
               field("masks_version", &PolicyGrant::masks_version, false)};
constexpr auto kUpstreamFields =
    std::tuple{field("host", &UpstreamInfo::host, false),
               field("port", &UpstreamInfo::port),
               field("unix_socket", &UpstreamInfo::unix_socket, false),
               field("database", &UpstreamInfo::database),
               field("role", &UpstreamInfo::role),
               field("tls_mode", &UpstreamInfo::tls_mode),
               field("ca_file", &UpstreamInfo::ca_file, false),
               field("pool_mode", &UpstreamInfo::pool_mode, false),
               field("pool_size", &UpstreamInfo::pool_size, false),
               field("pool_wait_timeout_ms", &UpstreamInfo::pool_wait_timeout_ms, false)};
constexpr auto kScramStartFields =
    std::tuple{field("session_id", &ScramStartRequest::session_id, true, 128),
               field("mechanisms", &ScramStartRequest::mechanisms)};
constexpr auto kScramContinueFields =
    std::tuple{field("session_id", &ScramContinueRequest::session_id, true, 128),
               field("server_first", &ScramContinueRequest::server_first, true, 4096)};
constexpr auto kScramFinishFields =
    std::tuple{field("session_id", &ScramFinishRequest::session_id, true, 128),
               field("server_final", &ScramFinishRequest::server_final, true, 4096)};
constexpr auto kPrescreenFields = std::tuple{field("rule", &PrescreenHit::rule, true, 256),
                                             field("action", &PrescreenHit::action, true, 16)};
// `sql` may be empty (PostgreSQL answers an empty query with EmptyQueryResponse) but not absent.
constexpr auto kAnalyseRequestFields =
    std::tuple{field("session_id", &AnalyseRequest::session_id, true, 128),
               field("sql", &AnalyseRequest::sql, false),
               field("shape_key", &AnalyseRequest::shape_key, false, 64)};
constexpr auto kAnalyseResponseFields =
    std::tuple{field("verdict", &AnalyseResponse::verdict),
               field("rule", &AnalyseResponse::rule, false),
               field("message", &AnalyseResponse::message, false),
               field("cacheable", &AnalyseResponse::cacheable, false),
               field("sqlstate", &AnalyseResponse::sqlstate, false, 5),
               field("position", &AnalyseResponse::position, false)};
constexpr auto kApprovalRequestFields = std::tuple{
    field("session_id", &ApprovalRequest::session_id, true, 128),
    field("sql", &ApprovalRequest::sql), field("shape_key", &ApprovalRequest::shape_key, false, 64),
    field("rule", &ApprovalRequest::rule, false, 256),
    field("reason", &ApprovalRequest::reason, false, 4096)};
constexpr auto kApprovalResponseFields =
    std::tuple{field("verdict", &ApprovalResponse::verdict),
               field("approval_id", &ApprovalResponse::approval_id, false),
               field("reason", &ApprovalResponse::reason, false)};
constexpr auto kFieldDescriptionFields = std::tuple{
    field("name", &FieldDescription::name, false, 1024),
    field("table_oid", &FieldDescription::table_oid), field("attnum", &FieldDescription::attnum),
    field("type_oid", &FieldDescription::type_oid),
    field("format", &FieldDescription::format, false)};
constexpr auto kMaskPlanRequestFields =
    std::tuple{field("session_id", &MaskPlanRequest::session_id, true, 128)};

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
  read_fields(r, h, kHeaderFields);
  r.integer("deadline_ms", h.deadline_ms, h.type != "hello");
  return finish(r, std::move(h));
}

json Hello::to_json(uint64_t id) const {
  return fields_json(*this, kHelloFields, json{{"id", id}, {"type", "hello"}});
}

Result<Hello> Hello::from_json(const json& j) { return parse_fields<Hello>(j, kHelloFields); }

json AuthenticateRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  return request_json(*this, "authenticate", id, deadline_ms, kAuthenticateRequestFields);
}

Result<AuthenticateRequest> AuthenticateRequest::from_json(const json& j) {
  return parse_fields<AuthenticateRequest>(j, kAuthenticateRequestFields);
}

json AuthenticateResponse::to_json() const {
  return json{{"identity", fields_json(identity, kIdentityFields)},
              {"policy", fields_json(policy, kPolicyFields)},
              {"upstream", fields_json(upstream, kUpstreamFields)},
              {"startup_parameters", startup_parameters}};
}

Result<AuthenticateResponse> AuthenticateResponse::from_json(const json& j) {
  Reader r(j);
  AuthenticateResponse a;
  read_object(r, "identity", a.identity, kIdentityFields);
  read_object(r, "policy", a.policy, kPolicyFields);
  read_object(r, "upstream", a.upstream, kUpstreamFields);
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
  return parse_fields<ScramStartRequest>(j, kScramStartFields);
}
json ScramStartRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  return request_json(*this, "scram_start", id, deadline_ms, kScramStartFields);
}

Result<ScramContinueRequest> ScramContinueRequest::from_json(const json& j) {
  return parse_fields<ScramContinueRequest>(j, kScramContinueFields);
}
json ScramContinueRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  return request_json(*this, "scram_continue", id, deadline_ms, kScramContinueFields);
}

Result<ScramFinishRequest> ScramFinishRequest::from_json(const json& j) {
  return parse_fields<ScramFinishRequest>(j, kScramFinishFields);
}
json ScramFinishRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  return request_json(*this, "scram_finish", id, deadline_ms, kScramFinishFields);
}

Result<AnalyseRequest> AnalyseRequest::from_json(const json& j) {
  Reader r(j);
  AnalyseRequest a;
  read_fields(r, a, kAnalyseRequestFields);
  if (!j.contains("sql")) r.fail("missing field \"sql\"");
  if (const json* p = r.array("prescreen", false)) {
    auto check_action = [](Reader& re, const PrescreenHit& h) {
      if (!one_of(h.action, {"deny", "approve", "detect"})) {
        re.fail("prescreen action must be deny, approve or detect");
      }
    };
    read_entries(r, *p, "prescreen entries must be objects", kPrescreenFields, check_action,
                 a.prescreen);
  }
  return finish(r, std::move(a));
}
json AnalyseRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request_json(*this, "analyse", id, deadline_ms, kAnalyseRequestFields);
  j["prescreen"] = entries_json(prescreen, kPrescreenFields);
  return j;
}

json AnalyseResponse::to_json() const { return fields_json(*this, kAnalyseResponseFields); }
Result<AnalyseResponse> AnalyseResponse::from_json(const json& j) {
  auto a = parse_fields<AnalyseResponse>(j, kAnalyseResponseFields);
  if (a && !one_of(a->verdict, {"allow", "deny", "approve"})) {
    return bad_request("verdict must be allow, deny or approve");
  }
  return a;
}

Result<ApprovalRequest> ApprovalRequest::from_json(const json& j) {
  return parse_fields<ApprovalRequest>(j, kApprovalRequestFields);
}
json ApprovalRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  return request_json(*this, "approval", id, deadline_ms, kApprovalRequestFields);
}

json ApprovalResponse::to_json() const { return fields_json(*this, kApprovalResponseFields); }
Result<ApprovalResponse> ApprovalResponse::from_json(const json& j) {
  auto a = parse_fields<ApprovalResponse>(j, kApprovalResponseFields);
  if (a && !one_of(a->verdict, {"allow", "deny"})) {
    return bad_request("verdict must be allow or deny");
  }
  return a;
}

Result<MaskPlanRequest> MaskPlanRequest::from_json(const json& j) {
  Reader r(j);
  MaskPlanRequest m;
  read_fields(r, m, kMaskPlanRequestFields);
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
    read_entries(
        r, *f, "fields entries must be objects", kFieldDescriptionFields,
        [](Reader&, const FieldDescription&) {}, m.fields);
  }
  return finish(r, std::move(m));
}
json MaskPlanRequest::to_json(uint64_t id, int64_t deadline_ms) const {
  json j = request_json(*this, "mask_plan", id, deadline_ms, kMaskPlanRequestFields);
  j["fields"] = entries_json(fields, kFieldDescriptionFields);
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

Result<Event> Event::from_json(const json& j) { return from_json(json(j)); }
Result<Event> Event::from_json(json&& j) {
  Reader r(j);
  Event e;
  r.str("kind", e.kind, true, 32);
  // Dataplane-wide events (stats snapshots, wire rule reloads) belong to no session.
  static const std::set<std::string> kDataplaneKinds = {"dataplane_stats", "wire_rules_reload",
                                                        "rules_applied"};
  r.str("session_id", e.session_id, !kDataplaneKinds.count(e.kind), 128);
  // upstream_backend: transaction pooling, a session's transactions moved to another backend.
  static const std::set<std::string> kKinds = {
      "session_start",   "statement",         "rows",
      "error",           "session_end",       "wire_deny",
      "dataplane_stats", "wire_rules_reload", "rules_applied",
      "upstream_backend"};
  if (r.ok() && !kKinds.count(e.kind)) r.fail("unknown event kind \"" + e.kind + "\"");
  e.fields = json::object();
  if (j.is_object()) {
    for (auto& [k, v] : j.get_ref<json::object_t&>()) {
      if (k != "type" && k != "session_id" && k != "kind") e.fields[k] = std::move(v);
    }
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
