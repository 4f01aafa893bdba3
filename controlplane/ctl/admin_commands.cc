#include "controlplane/ctl/admin_commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <initializer_list>
#include <iomanip>
#include <iterator>
#include <sstream>

#include "controlplane/ctl/admin_client.h"
#include "controlplane/ctl/rules_command.h"
#include "controlplane/identity/jws.h"
#include "controlplane/recording/recorder.h"
#include "controlplane/recording/recording_file.h"
#include "controlplane/recording/replay.h"

namespace pgwarden::ctl {
namespace {

using json = nlohmann::json;
using Args = std::span<const std::string_view>;

// One admin invocation: parsed options, output mode, and the shared error handling.
struct Invocation {
  ParsedArgs args;
  std::ostream& out;
  std::ostream& err;
  bool json_out = false;

  // Runs `command` on the cp; on error prints it and returns its exit code in `code`.
  std::optional<json> call(const std::string& command, const json& cmd_args, int& code) const {
    auto client = AdminClient::from_args(args);
    if (!client.is_ok()) {
      err << "pgwardenctl: " << client.status().message() << "\n";
      code = kExitAdminUsage;
      return std::nullopt;
    }
    auto r = client->call(command, cmd_args);
    if (!r.is_ok()) {
      code = exit_code_for(r.status());
      if (json_out) {
        out << json{{"ok", false},
                    {"error", {{"message", r.status().message()}, {"exit_code", code}}}}
                   .dump(2)
            << "\n";
      }
      err << "pgwardenctl: " << r.status().message() << "\n";
      return std::nullopt;
    }
    code = kExitAdminOk;
    return std::move(*r);
  }
  // Prints `result` as JSON when --json; returns true if it did.
  bool emit_json(const json& result) const {
    if (json_out) out << result.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return json_out;
  }
};

std::optional<Invocation> start(Args args, std::ostream& out, std::ostream& err, int& code,
                                const std::set<std::string>& flags = {}) {
  auto parsed = parse_args(args, flags);
  if (!parsed.is_ok()) {
    err << "pgwardenctl: " << parsed.status().message() << "\n";
    code = kExitAdminUsage;
    return std::nullopt;
  }
  Invocation inv{std::move(*parsed), out, err};
  inv.json_out = inv.args.has("--json");
  return inv;
}

int usage(std::ostream& err, std::string_view text) {
  err << "usage: pgwardenctl " << text << "\n";
  return kExitAdminUsage;
}

// A status section ("recorder:", "audit:"): `keys` of obj[name] that are present, one
// "  key value" line each (times *_ms as dates). Nothing when the section is absent.
void print_section(std::ostream& out, const json& obj, const char* name,
                   std::initializer_list<const char*> keys) {
  if (!obj.contains(name) || !obj[name].is_object()) return;
  const json& section = obj[name];
  out << name << ":\n";
  for (const char* key : keys) {
    if (!section.contains(key)) continue;
    out << "  " << key << " ";
    if (std::string_view(key).ends_with("_ms")) {
      out << format_time_ms(section[key].get<int64_t>()) << "\n";
    } else {
      out << scalar_text(section[key]) << "\n";
    }
  }
}

void print_fields(std::ostream& out, const json& obj, const std::vector<std::string>& keys) {
  std::vector<std::vector<std::string>> rows;
  for (const std::string& k : keys) {
    if (!obj.contains(k)) continue;
    const json& v = obj[k];
    std::string text;
    if (k.ends_with("_ms") && v.is_number_integer()) {
      text = format_time_ms(v.get<int64_t>());
    } else if (v.is_array()) {
      for (const json& e : v) text += (text.empty() ? "" : ", ") + scalar_text(e);
    } else {
      text = scalar_text(v);
    }
    rows.push_back({k + ":", text});
  }
  size_t w = 0;
  for (const auto& r : rows) w = std::max(w, r[0].size());
  for (const auto& r : rows) out << r[0] << std::string(w - r[0].size() + 1, ' ') << r[1] << "\n";
}

// The elements of a JSON array joined with ',' ("-" when empty or not an array).
std::string join_list(const json& a) {
  std::string s;
  if (a.is_array()) {
    for (const json& e : a) s += (s.empty() ? "" : ",") + scalar_text(e);
  }
  return s.empty() ? std::string("-") : s;
}

std::string one_line(std::string s, size_t max) {
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (s.size() > max) s = s.substr(0, max - 3) + "...";
  return s;
}

// The nodes sharing this node's state store and the rules generation each last loaded.
void print_fleet(std::ostream& out, const json& fleet) {
  if (fleet.contains("error")) {
    out << "fleet: state store unavailable: " << fleet.value("error", "") << "\n";
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const json& n : fleet.value("nodes", json::array())) {
    std::string rules = "-";
    if (n.contains("rules_generation")) {
      rules = scalar_text(n["rules_generation"]) + " (sha256 " +
              n.value("rules_hash", "").substr(0, 12) + ")";
    }
    rows.push_back(
        {n.value("node_id", "") + (n.value("this_node", false) ? " (this)" : ""),
         n.value("admin_url", "").empty() ? "-" : n.value("admin_url", ""), rules,
         n.contains("same_rules") ? (n.value("same_rules", false) ? "yes" : "NO") : "-",
         n.contains("loaded_ms") ? format_time_ms(n.value("loaded_ms", int64_t{0})) : "-"});
  }
  out << "fleet (state store):\n";
  print_table(out, {"NODE", "ADMIN URL", "RULES", "SAME AS HERE", "LOADED"}, rows);
}

// "rules generation G (sha256 0123456789ab, N rules in M lists)" from cp's rules status.
std::string rules_generation_text(const json& r) {
  if (!r.is_object() || r.value("generation", uint64_t{0}) == 0) return "rules not managed by cp";
  std::string hash = r.value("hash", "");
  return "rules generation " + scalar_text(r["generation"]) + " (sha256 " + hash.substr(0, 12) +
         ", " + (r.contains("rules") ? scalar_text(r["rules"]) : "?") + " rules in " +
         (r.contains("lists") ? scalar_text(r["lists"]) : "?") + " lists)";
}

// The rules and login-flood lines of `status` for each dataplane.
void print_dataplane_summaries(std::ostream& out, const json& dps) {
  if (!dps.is_array()) return;
  for (const json& d : dps) {
    out << "dataplane " << d.value("name", "?") << " (" << d.value("mode", "?")
        << "): " << (d.value("connected", false) ? "connected" : "disconnected")
        << (d.value("stale", false) ? ", STALE" : "");
    if (d.contains("rules_generation")) {
      out << ", rules generation " << scalar_text(d["rules_generation"]) << " ("
          << d.value("rules_source", "?");
      if (d.contains("rules_in_sync")) {
        out << (d.value("rules_in_sync", false) ? ", in sync" : ", BEHIND cp");
      }
      out << ")";
    }
    out << "\n";
    if (d.contains("logins") && d["logins"].is_object()) {
      out << "  logins:";
      for (const auto& [k, v] : d["logins"].items()) out << " " << k << "=" << scalar_text(v);
      out << "\n";
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------- status

int run_status_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  if (!inv->args.positional.empty()) return usage(err, "status [--json]");
  auto r = inv->call("status", json::object(), code);
  if (!r) return code;
  if (inv->emit_json(*r)) return kExitAdminOk;
  print_fields(out, *r,
               {"version", "uptime_s", "policy_version", "config_path", "policies", "targets",
                "dp_connections", "sessions", "pending_approvals", "principal"});
  print_section(out, *r, "recorder",
                {"state", "last_error", "since_ms", "last_error_ms", "records_refused",
                 "records_dropped", "gaps_written", "gaps_pending", "sync"});
  print_section(out, *r, "audit",
                {"state", "since_ms", "last_error", "last_error_ms", "refused", "lines_lost",
                 "outages"});
  if (r->contains("rules")) out << "cp: " << rules_generation_text((*r)["rules"]) << "\n";
  if (r->contains("budgets") && (*r)["budgets"].is_object()) {
    out << "budgets: " << scalar_text((*r)["budgets"]["configured"]) << " configured, "
        << scalar_text((*r)["budgets"]["exhausted"])
        << " exhausted in the current window (pgwardenctl budgets list)\n";
  }
  if (r->contains("dataplanes")) print_dataplane_summaries(out, (*r)["dataplanes"]);
  if (r->contains("fleet") && (*r)["fleet"].is_object()) print_fleet(out, (*r)["fleet"]);
  if (r->contains("counters") && (*r)["counters"].is_object()) {
    out << "counters:\n";
    for (const auto& [k, v] : (*r)["counters"].items()) {
      out << "  " << k << " " << scalar_text(v) << "\n";
    }
  }
  return kExitAdminOk;
}

// ------------------------------------------------------------------------------- dataplane

namespace {

std::string counter_text(const json& obj, const char* key) {
  return obj.contains(key) ? scalar_text(obj[key]) : "-";
}

void print_dataplane(std::ostream& out, const json& d) {
  const json& snap = d.contains("snapshot") ? d["snapshot"] : json::object();
  const json& dp = snap.contains("dp") ? snap["dp"] : json::object();
  out << "dataplane " << d.value("name", "?") << " (" << dp.value("mode", "?") << ", pid "
      << counter_text(dp, "pid")
      << "): " << (d.value("connected", false) ? "connected" : "disconnected") << ", snapshot "
      << format_time_ms(d.value("received_unix_ms", int64_t{0})) << " ("
      << counter_text(d, "age_ms") << " ms ago)" << (d.value("stale", true) ? " STALE" : "")
      << "\n";
  if (snap.contains("rules") && snap["rules"].is_object()) {
    const json& r = snap["rules"];
    out << "rules: generation " << counter_text(r, "generation") << ", version "
        << r.value("version", "-") << ", reloads ok " << counter_text(r, "reloads_ok")
        << ", failed " << counter_text(r, "reloads_failed");
    if (!r.value("last_error", "").empty()) {
      out << ", last error: " << one_line(r.value("last_error", ""), 120);
    }
    out << "\n";
  }
  if (snap.contains("ports") && snap["ports"].is_array()) {
    std::vector<std::vector<std::string>> rows;
    for (const json& p : snap["ports"]) {
      std::string link = p.value("link_up", false) ? "up" : "down";
      rows.push_back({p.value("name", ""), p.value("role", ""), link,
                      counter_text(p, "link_speed_mbps"), counter_text(p, "rx_packets"),
                      counter_text(p, "tx_packets"), counter_text(p, "rx_bytes"),
                      counter_text(p, "tx_bytes"), counter_text(p, "rx_missed"),
                      counter_text(p, "rx_errors"), counter_text(p, "rx_nombuf")});
    }
    print_table(out,
                {"PORT", "ROLE", "LINK", "MBPS", "RX_PKTS", "TX_PKTS", "RX_BYTES", "TX_BYTES",
                 "MISSED", "RX_ERR", "NOMBUF"},
                rows);
  }
  if (snap.contains("spread") && snap["spread"].is_string()) {
    // How flows reach their lcore; with "software" the STEER_* columns show the hand-overs.
    out << "spread: " << snap["spread"].get<std::string>() << "\n";
  }
  if (snap.contains("lcores") && snap["lcores"].is_array()) {
    std::vector<std::vector<std::string>> rows;
    for (const json& l : snap["lcores"]) {
      const json& c = l.contains("counters") ? l["counters"] : json::object();
      rows.push_back({counter_text(l, "lcore_id"), counter_text(l, "queue"),
                      counter_text(l, "flows_active") + "/" + counter_text(l, "flow_capacity"),
                      counter_text(l, "reassembly_memory_used"),
                      counter_text(l, "rules_generation"), counter_text(c, "rx_packets"),
                      counter_text(c, "tx_packets"), counter_text(c, "prescreen_messages"),
                      counter_text(c, "prescreen_denied"), counter_text(c, "enforce_resets_sent"),
                      counter_text(c, "tx_dropped"), counter_text(c, "rx_steered_in"),
                      counter_text(c, "rx_steered_out"), counter_text(c, "rx_steer_dropped")});
    }
    print_table(out,
                {"LCORE", "QUEUE", "FLOWS", "REASM_BYTES", "RULES_GEN", "RX", "TX", "MESSAGES",
                 "DENIED", "RESETS", "TX_DROPPED", "STEER_IN", "STEER_OUT", "STEER_DROP"},
                rows);
  }
  if (snap.contains("audit") && snap["audit"].is_object()) {
    out << "audit:";
    for (const auto& [k, v] : snap["audit"].items()) out << " " << k << "=" << scalar_text(v);
    out << "\n";
  }
}

}  // namespace

int run_dataplane_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  if (!inv->args.positional.empty()) return usage(err, "dataplane [--json]");
  auto r = inv->call("dataplane", json::object(), code);
  if (!r) return code;
  if (inv->emit_json(*r)) return kExitAdminOk;
  const json& list = r->contains("dataplanes") ? (*r)["dataplanes"] : json::array();
  if (list.empty()) out << "no dataplane has reported stats\n";
  bool first = true;
  for (const json& d : list) {
    if (!first) out << "\n";
    first = false;
    print_dataplane(out, d);
  }
  return kExitAdminOk;
}

// -------------------------------------------------------------------------------- sessions

namespace {

constexpr std::string_view kSessionsUsage =
    "sessions list | show ID | replay ID [--speed X] | verify ID  [--state-dir DIR] [--json]\n"
    "       pgwardenctl sessions kill ID | --identity SUBJECT | --key KEY-ID [--reason TEXT]";

// sessions kill: ends live sessions; the clients get FATAL 57P01 with the reason.
int run_sessions_kill(const Invocation& inv) {
  const auto& pos = inv.args.positional;
  json args = json::object();
  if (pos.size() == 2) args["id"] = pos[1];
  if (auto v = inv.args.get("--identity")) args["identity"] = *v;
  if (auto v = inv.args.get("--key")) args["key"] = *v;
  if (auto v = inv.args.get("--reason")) args["reason"] = *v;
  if (pos.size() > 2 ||
      (!args.contains("id") && !args.contains("identity") && !args.contains("key"))) {
    return usage(inv.err, "sessions kill ID | --identity SUBJECT | --key KEY-ID [--reason TEXT]");
  }
  int code = 0;
  auto r = inv.call("sessions.kill", args, code);
  if (!r) return code;
  if (inv.emit_json(*r)) return kExitAdminOk;
  const json& killed = (*r)["killed"];
  if (killed.empty()) {
    inv.out << "no live session matched\n";
  } else {
    inv.out << "ended " << killed.size() << " session(s): " << join_list(killed) << " ("
            << r->value("reason", "") << ")\n";
  }
  return kExitAdminOk;
}

// `sessions verify` of a recording that is intact but was never sealed (crash).
constexpr int kExitUnsealed = 6;

void print_verify(std::ostream& out, const std::string& id, const json& v) {
  const std::string state = v.value("state", "");
  if (!v.value("ok", false) && state != "truncated") {
    out << id << ": TAMPERED at record seq " << scalar_text(v["bad_seq"]) << " ("
        << v.value("reason", "") << "); " << scalar_text(v["records"])
        << " records before it verified\n";
  } else if (state == "truncated") {
    out << id << ": TRUNCATED: " << v.value("detail", "") << "\n";
  } else if (state == "unsealed") {
    out << id << ": UNSEALED: " << v.value("detail", "") << "; " << scalar_text(v["records"])
        << " records verified, last hash " << v.value("last_hash", "") << "\n";
  } else if (state == "open") {
    out << id << ": open (still recording in the running pgwarden-cp), "
        << scalar_text(v["records"]) << " records verified so far, last hash "
        << v.value("last_hash", "") << "\n";
  } else {
    out << id << ": ok" << (v.value("sealed", false) ? ", sealed" : "") << ", "
        << scalar_text(v["records"]) << " records verified, last hash " << v.value("last_hash", "")
        << "\n";
  }
  if (v.value("gaps", 0) > 0) {
    out << id << ": " << scalar_text(v["gaps"])
        << " gap records: " << scalar_text(v["missing_records"])
        << " records could not be recorded (write errors or a full queue; see replay)\n";
  }
  if (v.contains("checkpoint_seq")) {
    out << id << ": checkpointed chain head at seq " << scalar_text(v["checkpoint_seq"]) << "\n";
  }
  if (v.value("torn_tail", false)) {
    out << id << ": torn last line (" << scalar_text(v["torn_bytes"])
        << " bytes, a crash mid-write) ignored\n";
  }
}

// 0 sealed or still open, 1 tampered or truncated, 6 never sealed (crash).
int verify_exit_code(const json& v) {
  const std::string state = v.value("state", "");
  if (!v.value("ok", false) || state == "truncated" || state == "tampered") {
    return kExitAdminFailure;
  }
  if (state == "unsealed") return kExitUnsealed;
  return kExitAdminOk;
}

}  // namespace

int run_sessions_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  const auto& pos = inv->args.positional;
  if (pos.empty()) return usage(err, kSessionsUsage);
  const std::string sub = pos[0];
  if (sub == "kill") return run_sessions_kill(*inv);
  std::optional<std::string> state_dir = inv->args.get("--state-dir");
  std::string dir = state_dir ? *state_dir + "/recordings" : "";
  double speed = 0;
  if (auto s = inv->args.get("--speed")) {
    char* end = nullptr;
    speed = std::strtod(s->c_str(), &end);
    if (end == s->c_str() || *end != '\0' || speed <= 0 || speed > 1000) {
      return usage(err, "sessions replay ID --speed X  (0 < X <= 1000)");
    }
  }

  if (sub == "list") {
    if (pos.size() != 1) return usage(err, kSessionsUsage);
    json result;
    if (state_dir) {
      auto recs = recording::list_recordings(dir);
      if (!recs.is_ok()) {
        err << "pgwardenctl: " << recs.status().message() << "\n";
        return exit_code_for(recs.status());
      }
      result["sessions"] = json::array();
      for (const auto& r : *recs) {
        result["sessions"].push_back(json{{"session_id", r.session_id},
                                          {"identity", r.identity},
                                          {"target", r.target},
                                          {"start_ms", r.start_ms},
                                          {"end_ms", r.end_ms},
                                          {"statements", r.statements},
                                          {"size_bytes", r.size_bytes},
                                          {"verified", r.verified}});
      }
    } else {
      auto r = inv->call("sessions.list", json::object(), code);
      if (!r) return code;
      result = std::move(*r);
    }
    if (inv->emit_json(result)) return kExitAdminOk;
    std::vector<std::vector<std::string>> rows;
    for (const json& s : result["sessions"]) {
      rows.push_back(
          {s.value("session_id", ""), s.value("identity", ""), s.value("target", ""),
           format_time_ms(s.value("start_ms", int64_t{0})),
           s.value("live", false) ? "live" : format_time_ms(s.value("end_ms", int64_t{0})),
           scalar_text(s["statements"]), scalar_text(s["size_bytes"]),
           s.value("verified", false) ? "yes" : "NO"});
    }
    print_table(
        out,
        {"SESSION", "IDENTITY", "TARGET", "STARTED", "ENDED", "STATEMENTS", "BYTES", "VERIFIED"},
        rows);
    out << "(" << rows.size() << " sessions)\n";
    if (result.contains("live") && result["live"].is_array() && !result["live"].empty()) {
      // Live sessions as cp knows them: the ids `sessions kill` takes.
      std::vector<std::vector<std::string>> live;
      for (const json& l : result["live"]) {
        live.push_back({l.value("session_id", ""), l.value("identity", ""), l.value("key_id", ""),
                        l.value("target", ""), l.value("policy", ""), l.value("client_addr", "")});
      }
      out << "\n";
      print_table(out, {"LIVE SESSION", "IDENTITY", "KEY", "TARGET", "POLICY", "CLIENT"}, live);
      out << "(" << live.size() << " live)\n";
    }
    return kExitAdminOk;
  }

  if (pos.size() != 2 || (sub != "show" && sub != "replay" && sub != "verify")) {
    return usage(err, kSessionsUsage);
  }
  const std::string id = pos[1];
  if (state_dir && !recording::valid_session_id(id)) {
    err << "pgwardenctl: bad session id\n";
    return kExitAdminUsage;
  }
  const std::string path = dir + "/" + id + ".jsonl";

  if (sub == "verify") {
    json v;
    if (state_dir) {
      auto checkpoint = recording::read_checkpoint(*state_dir + "/recording_checkpoint.json");
      auto report = recording::verify_session(path, checkpoint.is_ok() ? &*checkpoint : nullptr,
                                              std::nullopt);
      if (!report.is_ok()) {
        err << "pgwardenctl: " << report.status().message() << "\n";
        return exit_code_for(report.status());
      }
      v = report->to_json();
    } else {
      auto r = inv->call("sessions.verify", json{{"id", id}}, code);
      if (!r) return code;
      v = std::move(*r);
    }
    if (!inv->emit_json(v)) print_verify(out, id, v);
    return verify_exit_code(v);
  }

  if (sub == "show") {
    json result;
    if (state_dir) {
      recording::VerifyReport report;
      auto records = recording::read_recording(path, &report);
      if (!records.is_ok()) {
        err << "pgwardenctl: " << records.status().message() << "\n";
        return exit_code_for(records.status());
      }
      result = json{{"session_id", id}, {"path", path}, {"verify", report.to_json()}};
      json kinds = json::object();
      for (const json& r : *records) {
        std::string kind = r.value("kind", "");
        kinds[kind] = kinds.value(kind, 0) + 1;
        if (kind == "session_start") result["start"] = r;
        if (kind == "session_end") result["end"] = r;
      }
      result["kinds"] = kinds;
    } else {
      auto r = inv->call("sessions.show", json{{"id", id}}, code);
      if (!r) return code;
      result = std::move(*r);
    }
    if (inv->emit_json(result)) return kExitAdminOk;
    json flat{{"session_id", id}, {"path", result.value("path", "")}};
    if (result.contains("start")) {
      const json& s = result["start"];
      for (const char* k :
           {"identity", "groups", "target", "client_addr", "tls", "policy", "level"}) {
        if (s.contains(k)) flat[k] = s[k];
      }
      flat["started_ms"] = s.value("ts", int64_t{0});
    }
    if (result.contains("end")) flat["ended_ms"] = result["end"].value("ts", int64_t{0});
    std::string kinds;
    for (const auto& [k, v] : result["kinds"].items()) {
      kinds += (kinds.empty() ? "" : ", ") + k + "=" + scalar_text(v);
    }
    flat["records"] = kinds;
    print_fields(out, flat,
                 {"session_id", "identity", "groups", "target", "client_addr", "tls", "policy",
                  "level", "started_ms", "ended_ms", "records", "path"});
    print_verify(out, id, result["verify"]);
    return kExitAdminOk;
  }

  // replay
  std::string replay_path = path;
  std::string temp;
  if (!state_dir) {
    auto r = inv->call("sessions.replay", json{{"id", id}}, code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    // Re-render the verified records locally (replay re-verifies the chain it is given).
    char tmpl[] = "/tmp/pgwardenctl-replay-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0) {
      err << "pgwardenctl: cannot create a temporary file\n";
      return kExitAdminFailure;
    }
    ::close(fd);
    temp = tmpl;
    std::ofstream f(temp, std::ios::trunc);
    for (const json& rec : (*r)["records"]) {
      f << rec.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    }
    f.close();
    replay_path = temp;
    const json& v = (*r)["verify"];
    if (!v.value("ok", true)) {
      recording::ReplayOptions o;
      o.speed = speed;
      (void)recording::render_replay(replay_path, out, o);
      ::unlink(temp.c_str());
      out << "-- recording verification FAILED at seq " << scalar_text(v["bad_seq"]) << ": "
          << v.value("reason", "") << "\n";
      return kExitAdminFailure;
    }
  }
  recording::ReplayOptions o;
  o.speed = speed;
  auto report = recording::render_replay(replay_path, out, o);
  if (!temp.empty()) ::unlink(temp.c_str());
  if (!report.is_ok()) {
    err << "pgwardenctl: " << report.status().message() << "\n";
    return exit_code_for(report.status());
  }
  return report->ok ? kExitAdminOk : kExitAdminFailure;
}

// ------------------------------------------------------------------------------- approvals

// "1 of 2" approvals given / required ("-" for a journal without the fields).
std::string approvals_progress(const json& a) {
  if (!a.contains("required_approvals")) return "-";
  return std::to_string(a.value("votes", json::array()).size()) + " of " +
         std::to_string(a.value("required_approvals", 1));
}

int run_approvals_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  constexpr std::string_view kUsage =
      "approvals list [--state pending|approved|denied|expired|abandoned|all] | show ID |\n"
      "       approve ID [--scope once|shape] [--for DURATION] [--reason TEXT] |\n"
      "       break-glass ID --reason TEXT | deny ID --reason TEXT   [--json]";
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  const auto& pos = inv->args.positional;
  if (pos.empty()) return usage(err, kUsage);
  const std::string sub = pos[0];
  if (sub == "list") {
    if (pos.size() != 1) return usage(err, kUsage);
    auto r = inv->call("approvals.list",
                       json{{"state", inv->args.get("--state").value_or("pending")}}, code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    std::vector<std::vector<std::string>> rows;
    for (const json& a : (*r)["approvals"]) {
      rows.push_back({a.value("id", ""), a.value("state", ""), a.value("session_id", ""),
                      a.value("identity", ""), join_list(a.value("groups", json::array())),
                      a.value("target", ""), a.value("rule", ""), approvals_progress(a),
                      a.value("shape_key", ""), format_time_ms(a.value("created_ms", int64_t{0})),
                      format_time_ms(a.value("deadline_ms", int64_t{0})),
                      one_line(a.value("sql", ""), 60)});
    }
    print_table(out,
                {"ID", "STATE", "SESSION", "REQUESTER", "GROUPS", "TARGET", "RULE", "APPROVALS",
                 "SHAPE", "CREATED", "DEADLINE", "SQL"},
                rows);
    out << "(" << rows.size() << " approvals)\n";
    return kExitAdminOk;
  }
  if (pos.size() != 2) return usage(err, kUsage);
  json cmd_args{{"id", pos[1]}};
  if (auto reason = inv->args.get("--reason")) cmd_args["reason"] = *reason;
  std::string command;
  if (sub == "show") {
    command = "approvals.show";
  } else if (sub == "approve") {
    command = "approvals.approve";
    std::string scope = inv->args.get("--scope").value_or("once");
    if (scope != "once" && scope != "shape") return usage(err, kUsage);
    cmd_args["scope"] = scope;
    if (auto d = inv->args.get("--for")) {
      auto secs = parse_duration_s(*d);
      if (!secs) {
        err << "pgwardenctl: bad duration '" << *d << "' (e.g. 90s, 15m, 1h, 1d)\n";
        return kExitAdminUsage;
      }
      cmd_args["for_s"] = *secs;
    }
    if (scope == "shape" && !cmd_args.contains("for_s")) {
      err << "pgwardenctl: --scope shape needs --for DURATION\n";
      return kExitAdminUsage;
    }
  } else if (sub == "break-glass") {
    command = "approvals.break_glass";
    if (!cmd_args.contains("reason") || cmd_args["reason"].get<std::string>().empty()) {
      err << "pgwardenctl: break-glass needs --reason TEXT (it pages the audit sink)\n";
      return kExitAdminUsage;
    }
  } else if (sub == "deny") {
    command = "approvals.deny";
    if (!cmd_args.contains("reason") || cmd_args["reason"].get<std::string>().empty()) {
      err << "pgwardenctl: deny needs --reason TEXT (the client sees it)\n";
      return kExitAdminUsage;
    }
  } else {
    return usage(err, kUsage);
  }
  auto r = inv->call(command, cmd_args, code);
  if (!r) return code;
  if (inv->emit_json(*r)) return kExitAdminOk;
  if (sub != "show") out << pos[1] << ": " << r->value("state", "") << "\n";
  json shown = *r;
  shown["approvals"] = approvals_progress(*r);
  shown["votes"] = json::array();
  for (const json& v : r->value("votes", json::array())) {
    shown["votes"].push_back(v.value("decider", "") + " at " +
                             format_time_ms(v.value("ms", int64_t{0})) +
                             (v.value("via", "").empty() ? "" : " via " + v.value("via", "")) +
                             (v.value("reason", "").empty() ? "" : ": " + v.value("reason", "")));
  }
  if (shown["votes"].empty()) shown.erase("votes");
  print_fields(out, shown,
               {"id",
                "state",
                "approvals",
                "votes",
                "break_glass",
                "identity",
                "groups",
                "session_id",
                "target",
                "rule",
                "request_reason",
                "effect",
                "estimated_rows",
                "estimate_note",
                "dry_run_rows",
                "dry_run_note",
                "approver_groups",
                "break_glass_groups",
                "requester_links",
                "created_ms",
                "deadline_ms",
                "decided_ms",
                "decider",
                "decision_reason",
                "scope",
                "grant_expires_ms",
                "shape_key",
                "sql"});
  return kExitAdminOk;
}

// ----------------------------------------------------------------------------------- rules

int run_rules_group(Args args, std::istream& in, std::ostream& out, std::ostream& err) {
  static const std::set<std::string_view> kOnline = {"list", "show", "add", "remove", "reload"};
  if (args.empty() || !kOnline.count(args[0])) return run_rules_command(args, in, out, err);
  constexpr std::string_view kUsage =
      "rules list | show SET | add SET [--file FILE|-] | remove SET RULE_ID | reload  [--json]";
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  const auto& pos = inv->args.positional;
  const std::string sub = pos[0];
  json cmd_args = json::object();
  if (sub == "list" || sub == "reload") {
    if (pos.size() != 1) return usage(err, kUsage);
  } else if (sub == "show" || sub == "add") {
    if (pos.size() != 2) return usage(err, kUsage);
    cmd_args["set"] = pos[1];
  } else {
    if (pos.size() != 3) return usage(err, kUsage);
    cmd_args["set"] = pos[1];
    cmd_args["rule"] = pos[2];
  }
  if (sub == "add") {
    std::string file = inv->args.get("--file").value_or("-");
    std::string text;
    if (file == "-") {
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else {
      std::ifstream f(file);
      if (!f) {
        err << "pgwardenctl: cannot read " << file << "\n";
        return kExitAdminFailure;
      }
      text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    cmd_args["text"] = text;
  }
  auto r = inv->call("rules." + sub, cmd_args, code);
  if (!r) return code;
  if (inv->emit_json(*r)) return kExitAdminOk;
  if (sub == "list") {
    std::vector<std::vector<std::string>> rows;
    for (const json& s : (*r)["rule_sets"]) {
      std::string used;
      for (const json& p : s["used_by"]) used += (used.empty() ? "" : ",") + scalar_text(p);
      rows.push_back({s.value("name", ""), s.contains("rules") ? scalar_text(s["rules"]) : "-",
                      used.empty() ? "-" : used,
                      s.contains("error") ? "ERROR: " + one_line(s.value("error", ""), 60)
                                          : s.value("path", "")});
    }
    print_table(out, {"SET", "RULES", "USED_BY", "PATH"}, rows);
  } else if (sub == "show") {
    std::vector<std::vector<std::string>> rows;
    for (const json& rule : (*r)["rules"]) {
      rows.push_back({rule.value("id", ""), rule.value("action", ""), rule.value("view", ""),
                      rule.value("severity", ""), one_line(rule.value("pattern", ""), 50)});
    }
    print_table(out, {"ID", "ACTION", "VIEW", "SEVERITY", "PATTERN"}, rows);
    out << "(" << rows.size() << " rules in " << r->value("path", "") << ")\n";
  } else if (sub == "reload") {
    out << "reloaded: policy version " << scalar_text((*r)["policy_version"]);
    if (r->contains("rules")) out << ", " << rules_generation_text((*r)["rules"]);
    out << "\n";
    if (r->contains("dataplanes")) print_dataplane_summaries(out, (*r)["dataplanes"]);
  } else {
    out << r->value("path", "") << ": " << scalar_text((*r)["rules"]) << " rules (was "
        << scalar_text((*r)["previous_rules"]) << ")\n";
    if (r->contains("policy_version")) {
      out << "reloaded: policy version " << scalar_text((*r)["policy_version"]) << "\n";
    } else if (r->contains("reload_error")) {
      err << "pgwardenctl: rules written but the reload failed:\n"
          << r->value("reload_error", "") << "\n";
      return kExitAdminFailure;
    }
  }
  return kExitAdminOk;
}

// -------------------------------------------------------------------------------- policies

int run_policies_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  constexpr std::string_view kUsage = "policies list | show NAME  [--json]";
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  const auto& pos = inv->args.positional;
  if (pos.size() == 1 && pos[0] == "list") {
    auto r = inv->call("policies.list", json::object(), code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    std::vector<std::vector<std::string>> rows;
    for (const json& p : (*r)["policies"]) {
      rows.push_back({p.value("name", ""), join_list(p["groups"]), join_list(p["targets"]),
                      p.value("read_only", true) ? "yes" : "no", join_list(p["rule_sets"]),
                      p.value("recording", ""), join_list(p["approver_groups"])});
    }
    print_table(out,
                {"POLICY", "GROUPS", "TARGETS", "READ_ONLY", "RULE_SETS", "RECORDING", "APPROVERS"},
                rows);
    out << "(policy version " << scalar_text((*r)["policy_version"]) << ")\n";
    return kExitAdminOk;
  }
  if (pos.size() == 2 && pos[0] == "show") {
    auto r = inv->call("policies.show", json{{"name", pos[1]}}, code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    std::vector<std::string> keys;
    for (const auto& [k, v] : r->items()) keys.push_back(k);
    json flat = *r;
    if (flat.contains("masks")) {
      std::string m;
      for (const json& e : flat["masks"]) {
        std::string sel = e.value("column", e.value("name_pattern", e.value("type", "")));
        m += (m.empty() ? "" : ", ") + sel + "->" + e.value("function", "");
      }
      flat["masks"] = m;
    }
    print_fields(
        out, flat,
        {"name", "groups", "targets", "allowed_kinds", "allowed_relations", "allowed_functions",
         "read_only", "approve_kinds", "approver_groups", "approval_timeout_s", "rule_sets",
         "masks", "deny_masked_in_expressions", "recording", "recording_required",
         "recording_row_cap", "allow_function_call", "version"});
    return kExitAdminOk;
  }
  return usage(err, kUsage);
}

// ------------------------------------------------------------------------------ identities

namespace {

// --until: a duration from now ("90s", "15m", "1h", "2d") or a UTC time
// "YYYY-MM-DDTHH:MM:SSZ". Unix ms, nullopt when unreadable.
std::optional<int64_t> parse_until_ms(const std::string& text) {
  int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  if (auto d = parse_duration_s(text)) return now_ms + *d * 1000;
  std::tm tm{};
  std::istringstream in(text);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
  if (in.fail()) return std::nullopt;
  char z = 0;
  in >> z;
  if (z != 'Z' || in.peek() != EOF) return std::nullopt;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

}  // namespace

int run_identities_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  constexpr std::string_view kUsage =
      "identities list [--all] | revoke SUBJECT|KEY-ID [--identity|--key] [--until TIME] "
      "[--reason TEXT] | unrevoke SUBJECT|KEY-ID [--identity|--key]  [--json]";
  int code = 0;
  auto inv = start(args, out, err, code, {"--all", "--identity", "--key"});
  if (!inv) return code;
  const auto& pos = inv->args.positional;
  if (pos.empty()) return usage(err, kUsage);
  const std::string sub = pos[0];
  if (sub == "list") {
    if (pos.size() != 1) return usage(err, kUsage);
    auto r = inv->call("identities.list", json{{"all", inv->args.has("--all")}}, code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    std::vector<std::vector<std::string>> rows;
    for (const json& e : (*r)["revocations"]) {
      int64_t until = e.value("until_ms", int64_t{0});
      rows.push_back({e.value("name", ""), e.value("kind", ""),
                      until == 0 ? "unrevoked" : format_time_ms(until),
                      format_time_ms(e.value("created_ms", int64_t{0})), e.value("by", ""),
                      one_line(e.value("reason", ""), 60),
                      e.value("active", false) ? "yes" : "expired"});
    }
    print_table(out, {"NAME", "KIND", "UNTIL", "SINCE", "BY", "REASON", "ACTIVE"}, rows);
    out << "(" << rows.size() << " revocations)\n";
    return kExitAdminOk;
  }
  if ((sub != "revoke" && sub != "unrevoke") || pos.size() != 2) return usage(err, kUsage);
  if (inv->args.has("--identity") && inv->args.has("--key")) return usage(err, kUsage);
  json a{{"name", pos[1]},
         {"kind", inv->args.has("--identity") ? "identity"
                  : inv->args.has("--key")    ? "key"
                                              : "any"}};
  if (sub == "unrevoke") {
    auto r = inv->call("identities.unrevoke", a, code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    out << "unrevoked " << pos[1] << " (" << (*r)["removed"].size() << " entries)\n";
    return kExitAdminOk;
  }
  if (auto v = inv->args.get("--reason")) a["reason"] = *v;
  if (auto v = inv->args.get("--until")) {
    auto until = parse_until_ms(*v);
    if (!until) {
      err << "pgwardenctl: --until takes a duration (90s, 15m, 1h, 2d) or a UTC time "
             "YYYY-MM-DDTHH:MM:SSZ\n";
      return kExitAdminUsage;
    }
    a["until_ms"] = *until;
  }
  auto r = inv->call("identities.revoke", a, code);
  if (!r) return code;
  if (inv->emit_json(*r)) return kExitAdminOk;
  const json& rev = (*r)["revocation"];
  int64_t until = rev.value("until_ms", int64_t{0});
  out << "revoked " << rev.value("kind", "") << " " << pos[1] << " "
      << (until == 0 ? std::string("until unrevoked") : "until " + format_time_ms(until))
      << "; ended " << (*r)["killed"].size() << " live session(s)";
  if (!(*r)["killed"].empty()) out << ": " << join_list((*r)["killed"]);
  out << "\n";
  return kExitAdminOk;
}

// --------------------------------------------------------------------------------- budgets

namespace {

// "rows_returned 12 of 100, statements 3 of 5" (measures with a limit).
std::string budget_usage_text(const json& b) {
  std::string s;
  if (!b.contains("limits") || !b["limits"].is_object()) return "-";
  for (const auto& [measure, limit] : b["limits"].items()) {
    const json& used = b["used"];
    s += (s.empty() ? "" : ", ") + measure + " " +
         (used.contains(measure) ? scalar_text(used[measure]) : std::string("0")) + " of " +
         scalar_text(limit);
  }
  return s.empty() ? std::string("-") : s;
}

std::vector<std::string> budget_row(const std::string& identity, const json& b) {
  return {identity,
          b.value("name", ""),
          b.value("window", ""),
          b["exhausted"].is_string() ? "EXHAUSTED (" + b["exhausted"].get<std::string>() + ")"
                                     : std::string("ok"),
          budget_usage_text(b),
          format_time_ms(b.value("resets_at_ms", int64_t{0})),
          b.value("on_exceed", "")};
}

}  // namespace

int run_budgets_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  constexpr std::string_view kUsage =
      "budgets list | show IDENTITY | reset IDENTITY [--budget NAME]  [--json]";
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  const auto& pos = inv->args.positional;
  if (pos.empty()) return usage(err, kUsage);
  const std::string sub = pos[0];
  const std::vector<std::string> header = {"IDENTITY", "BUDGET", "WINDOW",   "STATE",
                                           "USED",     "RESETS", "ON_EXCEED"};
  if (sub == "list") {
    if (pos.size() != 1) return usage(err, kUsage);
    auto r = inv->call("budgets.list", json::object(), code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    std::vector<std::vector<std::string>> rows;
    for (const json& e : (*r)["usage"])
      rows.push_back(budget_row(e.value("identity", ""), e["budget"]));
    print_table(out, header, rows);
    out << "(" << rows.size() << " identities with usage in the current window; budgets: "
        << join_list((*r)["configured"]) << ")\n";
    return kExitAdminOk;
  }
  if ((sub != "show" && sub != "reset") || pos.size() != 2) return usage(err, kUsage);
  if (sub == "show") {
    auto r = inv->call("budgets.show", json{{"identity", pos[1]}}, code);
    if (!r) return code;
    if (inv->emit_json(*r)) return kExitAdminOk;
    std::vector<std::vector<std::string>> rows;
    for (const json& b : (*r)["budgets"]) rows.push_back(budget_row(pos[1], b));
    if (rows.empty()) {
      out << "no budget applies to " << pos[1] << "\n";
      return kExitAdminOk;
    }
    print_table(out, header, rows);
    return kExitAdminOk;
  }
  json a{{"identity", pos[1]}};
  if (auto v = inv->args.get("--budget")) a["budget"] = *v;
  auto r = inv->call("budgets.reset", a, code);
  if (!r) return code;
  if (inv->emit_json(*r)) return kExitAdminOk;
  out << "reset " << scalar_text((*r)["counters_reset"]) << " budget counter(s) of " << pos[1]
      << "; told " << scalar_text((*r)["sessions_told"]) << " live session(s)\n";
  return kExitAdminOk;
}

// ---------------------------------------------------------------------------------- config

int run_config_command(Args args, std::istream&, std::ostream& out, std::ostream& err) {
  int code = 0;
  auto inv = start(args, out, err, code);
  if (!inv) return code;
  if (inv->args.positional.size() != 1 || inv->args.positional[0] != "reload") {
    return usage(err, "config reload [--json]");
  }
  auto r = inv->call("config.reload", json::object(), code);
  if (!r) return code;
  if (inv->emit_json(*r)) return kExitAdminOk;
  out << "reloaded: policy version " << scalar_text((*r)["policy_version"]) << " ("
      << scalar_text((*r)["policies"]) << " policies, " << scalar_text((*r)["targets"])
      << " targets)";
  if (r->contains("rules")) out << ", " << rules_generation_text((*r)["rules"]);
  out << "\n";
  return kExitAdminOk;
}

// ---------------------------------------------------------------------------------- tokens

namespace {

// Local time checks on decoded claims: ["exp", "expired 3600 s ago"], ...
std::vector<std::pair<std::string, std::string>> time_findings(const json& claims, int64_t now_s) {
  std::vector<std::pair<std::string, std::string>> out;
  auto num = [&](const char* k) -> std::optional<int64_t> {
    if (!claims.contains(k) || !claims[k].is_number()) return std::nullopt;
    return claims[k].get<int64_t>();
  };
  if (auto exp = num("exp")) {
    if (*exp <= now_s) {
      out.push_back({"exp", "expired " + std::to_string(now_s - *exp) + " s ago"});
    }
  } else {
    out.push_back({"exp", "missing (pgwarden requires exp)"});
  }
  if (auto nbf = num("nbf"); nbf && *nbf > now_s) {
    out.push_back({"nbf", "not valid for another " + std::to_string(*nbf - now_s) + " s"});
  }
  if (auto iat = num("iat"); iat && *iat > now_s) {
    out.push_back({"iat", "issued " + std::to_string(*iat - now_s) + " s in the future"});
  }
  if (!claims.contains("sub")) out.push_back({"sub", "missing"});
  if (!claims.contains("iss")) out.push_back({"iss", "missing"});
  return out;
}

}  // namespace

int run_tokens_command(Args args, std::istream& in, std::ostream& out, std::ostream& err) {
  constexpr std::string_view kUsage = "tokens inspect TOKEN|- [--offline] [--json]";
  int code = 0;
  auto inv = start(args, out, err, code, {"--offline"});
  if (!inv) return code;
  const auto& pos = inv->args.positional;
  if (pos.size() != 2 || pos[0] != "inspect") return usage(err, kUsage);
  std::string token = pos[1];
  if (token == "-") {
    std::getline(in, token);
    if (!token.empty() && token.back() == '\r') token.pop_back();
  }
  const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  json report{{"offline", inv->args.has("--offline")}};
  auto decoded = identity::decode_unverified(token);
  bool decodes = std::holds_alternative<identity::UnverifiedToken>(decoded);
  std::vector<std::pair<std::string, std::string>> findings;
  if (decodes) {
    const auto& t = std::get<identity::UnverifiedToken>(decoded);
    report["header"] = t.header;
    report["claims"] = t.claims;
    findings = time_findings(t.claims, now_s);
    json f = json::object();
    for (const auto& [k, v] : findings) f[k] = v;
    report["findings"] = f;
  } else {
    const auto& rej = std::get<identity::Rejection>(decoded);
    report["decode_error"] = {{"reason", identity::reject_reason_name(rej.reason)},
                              {"message", rej.message}};
  }
  std::optional<json> validation;
  // Without --offline the cp validates too (signature, issuer, audience, times); without
  // admin credentials at all the command falls back to decoding only.
  bool online = !inv->args.has("--offline") && AdminClient::from_args(inv->args).is_ok();
  if (online) {
    auto r = inv->call("tokens.inspect", json{{"token", token}}, code);
    if (r) {
      validation = (*r)["validation"];
      report["validation"] = *validation;
    }
  }
  int result_code = kExitAdminOk;
  if (!decodes) {
    result_code = kExitAdminDenied;
  } else if (validation && validation->value("checked", false)) {
    result_code = validation->value("valid", false) ? kExitAdminOk : kExitAdminDenied;
  } else if (!findings.empty()) {
    result_code = kExitAdminDenied;
  }
  if (code != kExitAdminOk) result_code = code;  // the cp could not be asked
  if (inv->json_out) {
    out << report.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return result_code;
  }
  if (!decodes) {
    out << "not a JWT: " << report["decode_error"].value("reason", "") << ": "
        << report["decode_error"].value("message", "") << "\n";
  } else {
    out << "header:\n";
    for (const auto& [k, v] : report["header"].items())
      out << "  " << k << ": " << scalar_text(v) << "\n";
    out << "claims:\n";
    std::map<std::string, std::string> notes(findings.begin(), findings.end());
    for (const auto& [k, v] : report["claims"].items()) {
      std::string line = "  " + k + ": " + scalar_text(v);
      if ((k == "exp" || k == "nbf" || k == "iat") && v.is_number()) {
        line += " (" + format_time_ms(v.get<int64_t>() * 1000) + ")";
      }
      if (notes.count(k)) line += "  <- " + notes[k];
      out << line << "\n";
    }
    for (const auto& [k, v] : findings) {
      if (!report["claims"].contains(k)) out << "  " << k << ": <- " << v << "\n";
    }
  }
  if (validation) {
    if (!validation->value("checked", false)) {
      out << "validation: not checked (" << validation->value("message", "") << ")\n";
    } else if (validation->value("valid", false)) {
      out << "validation: VALID for subject " << validation->value("subject", "") << " (provider "
          << validation->value("provider", "") << ")\n";
    } else {
      out << "validation: REJECTED: " << validation->value("reason", "") << ": "
          << validation->value("message", "") << "\n";
    }
  } else {
    out << "validation: offline (decoded only; signature, issuer and audience not checked)\n";
  }
  return result_code;
}

}  // namespace pgwarden::ctl
