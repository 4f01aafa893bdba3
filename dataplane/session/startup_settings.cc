#include "dataplane/session/startup_settings.h"

#include <array>
#include <cctype>

namespace pgwarden::session {

namespace {

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Client encodings in which a byte < 0x80 is not always that ASCII character.
bool unsafe_client_encoding(std::string_view v) {
  std::string n;
  for (char c : v) {
    if (c != '-' && c != '_') n += lower(c);
  }
  static constexpr std::array<std::string_view, 13> kUnsafe = {
      "sjis",    "shiftjis",   "big5",       "gbk",        "uhc",        "gb18030", "johab",
      "mskanji", "windows932", "windows936", "windows949", "windows950", "tcvn"};
  for (std::string_view u : kUnsafe) {
    if (n == u) return true;
  }
  return false;
}

bool boolean_on(std::string_view v) {
  return iequals(v, "on") || iequals(v, "true") || iequals(v, "yes") || iequals(v, "1");
}

Status bad_options(std::string msg) { return invalid_argument(std::move(msg), "42501"); }

}  // namespace

std::span<const std::string_view> default_startup_settings() {
  static constexpr std::array<std::string_view, 10> kDefault = {
      "application_name", "client_encoding",
      "DateStyle",        "TimeZone",
      "IntervalStyle",    "extra_float_digits",
      "bytea_output",     "statement_timeout",
      "lock_timeout",     "idle_in_transaction_session_timeout"};
  return kDefault;
}

bool startup_glob_match(std::string_view glob, std::string_view name) {
  // Iterative wildcard match with one backtrack point (the last `*`).
  size_t g = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (g < glob.size() && (glob[g] == '?' || lower(glob[g]) == lower(name[n]))) {
      ++g;
      ++n;
    } else if (g < glob.size() && glob[g] == '*') {
      star = g++;
      mark = n;
    } else if (star != std::string_view::npos) {
      g = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (g < glob.size() && glob[g] == '*') ++g;
  return g == glob.size();
}

Result<std::vector<StartupSetting>> parse_startup_options(std::string_view options) {
  // pg_split_opts: arguments are separated by whitespace; a backslash makes the next character
  // part of the argument (so "\ " is a space inside a value).
  std::vector<std::string> args;
  size_t i = 0;
  while (i < options.size()) {
    while (i < options.size() && std::isspace(static_cast<unsigned char>(options[i]))) ++i;
    if (i >= options.size()) break;
    std::string arg;
    while (i < options.size() && !std::isspace(static_cast<unsigned char>(options[i]))) {
      if (options[i] == '\\' && i + 1 < options.size()) ++i;
      arg += options[i++];
    }
    args.push_back(std::move(arg));
  }
  std::vector<StartupSetting> out;
  auto add = [&](const std::string& assignment, bool dashes_to_underscores) -> Status {
    size_t eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0) {
      return bad_options("startup option \"" + assignment.substr(0, 64) +
                         "\" is not of the form name=value");
    }
    StartupSetting s;
    s.name = assignment.substr(0, eq);
    if (dashes_to_underscores) {
      for (char& c : s.name) {
        if (c == '-') c = '_';
      }
    }
    s.value = assignment.substr(eq + 1);
    s.from_options = true;
    out.push_back(std::move(s));
    return Status::ok();
  };
  for (size_t a = 0; a < args.size(); ++a) {
    const std::string& arg = args[a];
    Status st;
    if (arg.starts_with("--")) {
      st = add(arg.substr(2), true);
    } else if (arg == "-c") {
      if (a + 1 >= args.size()) {
        return bad_options("startup option -c needs a name=value argument");
      }
      st = add(args[++a], true);
    } else if (arg.starts_with("-c")) {
      st = add(arg.substr(2), true);
    } else {
      return bad_options("startup option \"" + arg.substr(0, 64) +
                         "\" is not supported through the gateway; only -c name=value and "
                         "--name=value settings are");
    }
    if (!st.is_ok()) return st;
  }
  return out;
}

std::string startup_setting_refusal(const StartupSetting& setting,
                                    std::span<const std::string> allowed) {
  const std::string& name = setting.name;
  if (iequals(name, "role") || iequals(name, "session_authorization")) {
    return "setting \"" + name + "\" changes the identity of the session and is never allowed";
  }
  if (iequals(name, "standard_conforming_strings") && !boolean_on(setting.value)) {
    return "standard_conforming_strings must stay on (pgwarden reads string literals as the "
           "server does only then)";
  }
  if (iequals(name, "client_encoding") && unsafe_client_encoding(setting.value)) {
    return "client_encoding \"" + setting.value.substr(0, 32) +
           "\" is not supported: its multi-byte characters can contain quote and backslash "
           "bytes";
  }
  for (const std::string& glob : allowed) {
    if (startup_glob_match(glob, name)) return {};
  }
  return "setting \"" + name.substr(0, 64) + "\" is not in the policy's allowed_startup_settings";
}

}  // namespace pgwarden::session
