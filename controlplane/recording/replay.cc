#include "controlplane/recording/replay.h"

#include <algorithm>
#include <ctime>
#include <sstream>
#include <thread>

namespace pgwarden::recording {

namespace {

size_t display_width(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) == 0x80 ? 0 : 1;
  return n;
}

// Control characters would break the table: show them as escapes.
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';
    } else {
      out += c;
    }
  }
  return out;
}

// The types psql right-aligns (int2/4/8, oid, xid, cid, float4/8, money, numeric).
bool numeric_type(uint32_t oid) {
  switch (oid) {
    case 20:
    case 21:
    case 23:
    case 26:
    case 28:
    case 29:
    case 700:
    case 701:
    case 790:
    case 1700:
      return true;
    default:
      return false;
  }
}

std::string format_time(int64_t ms) {
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

std::string json_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A cell of a recorded row: a value as is, or a large value the dataplane summarised
// ({"length", "sha256", "prefix"}, dataplane/session/large_values.h) as its prefix and a note.
std::string cell_text(const nlohmann::json& v) {
  if (v.is_object() && v.contains("sha256") && v.contains("length")) {
    return json_text(v.value("prefix", nlohmann::json(""))) + "... (" + json_text(v["length"]) +
           " bytes, sha256 " + json_text(v["sha256"]) + ")";
  }
  return json_text(v);
}

struct PendingResult {
  std::vector<std::string> columns;
  std::vector<bool> right;
  std::vector<std::vector<std::optional<std::string>>> rows;
  int64_t truncated = 0;
  bool any = false;
};

void take_rows(const nlohmann::json& rec, PendingResult* p) {
  if (!p->any) {
    for (const auto& c : rec.value("columns", nlohmann::json::array())) {
      if (c.is_object()) {
        p->columns.push_back(c.value("name", ""));
        p->right.push_back(numeric_type(c.value("type_oid", 0u)));
      } else {
        p->columns.push_back(json_text(c));
        p->right.push_back(false);
      }
    }
    p->any = true;
  }
  for (const auto& r : rec.value("rows", nlohmann::json::array())) {
    std::vector<std::optional<std::string>> row;
    if (r.is_array()) {
      for (const auto& v : r) {
        row.push_back(v.is_null() ? std::nullopt : std::optional<std::string>(cell_text(v)));
      }
    }
    row.resize(p->columns.size());
    p->rows.push_back(std::move(row));
  }
  p->truncated += rec.value("truncated", int64_t{0});
}

void print_result(std::ostream& out, PendingResult* p, std::optional<int64_t> total) {
  if (!p->any) return;
  out << render_table(p->columns, p->right, p->rows);
  int64_t shown = static_cast<int64_t>(p->rows.size());
  int64_t n = total.value_or(shown + p->truncated);
  out << "(" << n << (n == 1 ? " row" : " rows");
  if (n > shown) out << "; " << shown << " recorded";
  out << ")\n";
  *p = PendingResult{};
}

}  // namespace

std::string render_table(const std::vector<std::string>& columns,
                         const std::vector<bool>& right_align,
                         const std::vector<std::vector<std::optional<std::string>>>& rows) {
  const size_t n = columns.size();
  std::vector<std::string> header(n);
  std::vector<size_t> width(n);
  for (size_t c = 0; c < n; ++c) {
    header[c] = printable(columns[c]);
    width[c] = display_width(header[c]);
  }
  std::vector<std::vector<std::string>> cells;
  for (const auto& r : rows) {
    std::vector<std::string> line(n);
    for (size_t c = 0; c < n && c < r.size(); ++c) {
      line[c] = r[c] ? printable(*r[c]) : std::string();
      width[c] = std::max(width[c], display_width(line[c]));
    }
    cells.push_back(std::move(line));
  }
  std::ostringstream out;
  for (size_t c = 0; c < n; ++c) {
    size_t pad = width[c] - display_width(header[c]);
    out << (c == 0 ? " " : " | ") << std::string(pad / 2, ' ') << header[c]
        << std::string(pad - pad / 2, ' ');
  }
  out << " \n";
  for (size_t c = 0; c < n; ++c) out << (c == 0 ? "" : "+") << std::string(width[c] + 2, '-');
  out << "\n";
  for (const auto& line : cells) {
    for (size_t c = 0; c < n; ++c) {
      size_t pad = width[c] - display_width(line[c]);
      bool right = c < right_align.size() && right_align[c];
      out << (c == 0 ? " " : " | ");
      if (right) {
        out << std::string(pad, ' ') << line[c];
      } else {
        out << line[c];
        if (c + 1 < n) out << std::string(pad, ' ');
      }
    }
    out << "\n";
  }
  return out.str();
}

Result<VerifyReport> render_replay(const std::string& path, std::ostream& out,
                                   const ReplayOptions& options) {
  VerifyReport report;
  auto records = read_recording(path, &report);
  if (!records) return records.status();
  auto sleep = options.sleep ? options.sleep
                             : [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  PendingResult pending;
  std::string prompt = "=> ";
  int64_t last_ts = 0;
  for (const auto& rec : *records) {
    int64_t ts = rec.value("ts", int64_t{0});
    if (options.speed > 0 && last_ts != 0 && ts > last_ts) {
      auto gap = std::chrono::milliseconds(
          static_cast<int64_t>(static_cast<double>(ts - last_ts) / options.speed));
      sleep(std::min(gap, options.max_gap));
    }
    last_ts = ts;
    const std::string kind = rec.value("kind", "");
    if (kind == "session_start") {
      prompt = rec.value("target", "") + "=> ";
      out << "-- session " << rec.value("session_id", "") << ": " << rec.value("identity", "")
          << " -> " << rec.value("target", "") << " from " << rec.value("client_addr", "")
          << (rec.value("tls", false) ? " (tls)" : " (no tls)") << ", policy "
          << rec.value("policy", "") << ", started " << format_time(ts) << "\n";
    } else if (kind == "rows") {
      take_rows(rec, &pending);
    } else if (kind == "statement") {
      out << prompt << printable(rec.value("sql", "")) << "\n";
      if (rec.contains("params") && rec["params"].is_array()) {
        // An execution of a prepared statement: the values it was bound with.
        out << "-- params: " << printable(json_text(rec["params"]));
        if (rec.value("params_truncated", false)) out << " (truncated)";
        out << "\n";
      }
      std::string verdict = rec.value("verdict", "");
      if (!rec.value("approval_id", "").empty()) {
        out << "-- held for approval " << rec.value("approval_id", "") << "\n";
      }
      if (verdict == "deny") {
        pending = PendingResult{};
        out << "ERROR:  " << rec.value("message", "statement denied by policy");
        if (!rec.value("rule", "").empty()) out << " (rule " << rec.value("rule", "") << ")";
        out << "\n\n";
        continue;
      }
      std::optional<int64_t> total;
      if (rec.contains("rows") && rec["rows"].is_number_integer())
        total = rec["rows"].get<int64_t>();
      print_result(out, &pending, total);
      if (rec.contains("error") && rec["error"].is_object()) {
        out << "ERROR:  " << rec["error"].value("message", "") << "\n";
      } else if (!rec.value("tag", "").empty() && total.has_value() == false) {
        out << rec.value("tag", "") << "\n";
      }
      out << "\n";
    } else if (kind == "error") {
      out << "ERROR:  " << rec.value("message", "") << "\n\n";
    } else if (kind == "recording_gap") {
      // Records that were refused (write errors) or dropped (full queue): say so, with counts.
      out << "-- RECORDING GAP: " << json_text(rec.value("records", nlohmann::json(0)))
          << " records not recorded between " << format_time(rec.value("first_ts", int64_t{0}))
          << " and " << format_time(rec.value("last_ts", int64_t{0}));
      if (rec.value("not_run", 0) > 0) {
        out << " (" << json_text(rec["not_run"]) << " statements refused, not run)";
      }
      if (!rec.value("reason", "").empty()) out << ": " << printable(rec.value("reason", ""));
      out << "\n";
    } else if (kind == "session_resumed") {
      out << "-- recording resumed " << format_time(ts) << " ("
          << printable(rec.value("reason", "")) << ")\n";
    } else if (kind == "seal") {
      out << "-- sealed after " << json_text(rec.value("records", nlohmann::json(0)))
          << " records\n";
    } else if (kind == "session_end") {
      print_result(out, &pending, std::nullopt);
      out << "-- session ended " << format_time(ts);
      if (!rec.value("reason", "").empty()) out << " (" << rec.value("reason", "") << ")";
      out << "\n";
    }
  }
  if (pending.any) {
    out << "-- rows of a statement that did not complete:\n";
    print_result(out, &pending, std::nullopt);
  }
  if (!report.ok) {
    out << "-- recording fails verification at seq " << report.bad_seq << ": " << report.reason
        << "\n";
  }
  if (report.torn_tail) {
    out << "-- last record incomplete (" << report.torn_bytes << " bytes ignored)\n";
  }
  return report;
}

}  // namespace pgwarden::recording
