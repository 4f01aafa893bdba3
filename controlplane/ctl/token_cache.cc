#include "controlplane/ctl/token_cache.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/atomic_file.h"

namespace pgwarden::ctl {

using json = nlohmann::json;

namespace {

std::string config_dir() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/pgwarden";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') return std::string(home) + "/.config/pgwarden";
  return std::string();
}

Result<json> read_cache(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return json::object();
    return unavailable("cannot stat " + path + ": " + std::strerror(errno));
  }
  if ((st.st_mode & 077) != 0) {
    return permission_denied(path + " is readable by others; chmod 600 it (it holds tokens)");
  }
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (!j.is_object()) return invalid_argument(path + " is not a JSON object; remove it");
  return j;
}

}  // namespace

std::string token_cache_path() {
  std::string dir = config_dir();
  return dir.empty() ? std::string() : dir + "/tokens.json";
}

Result<std::string> load_cached_token(const std::string& server) {
  std::string path = token_cache_path();
  if (path.empty()) return std::string();
  auto cache = read_cache(path);
  if (!cache.is_ok()) return cache.status();
  auto it = cache->find(server);
  if (it == cache->end() || !it->is_object()) return std::string();
  return it->value("token", "");
}

Status store_cached_token(const std::string& server, const std::string& token,
                          int64_t expires_at) {
  std::string dir = config_dir();
  if (dir.empty()) return failed_precondition("neither XDG_CONFIG_HOME nor HOME is set");
  std::string parent = dir.substr(0, dir.rfind('/'));
  ::mkdir(parent.c_str(), 0700);  // ~/.config may exist already
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return unavailable("cannot create " + dir + ": " + std::strerror(errno));
  }
  ::chmod(dir.c_str(), 0700);
  std::string path = dir + "/tokens.json";
  auto cache = read_cache(path);
  if (!cache.is_ok()) return cache.status();
  json entry{{"token", token}};
  if (expires_at > 0) entry["expires_at"] = expires_at;
  (*cache)[server] = std::move(entry);
  return replace_file_atomically(path, cache->dump(2) + "\n", 0600);
}

}  // namespace pgwarden::ctl
