#include "controlplane/policy/glob.h"

namespace pgwarden::policy {

namespace {
char fold(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
}  // namespace

bool glob_match(std::string_view pattern, std::string_view text, GlobCase mode) {
  const bool insensitive = mode == GlobCase::kInsensitive;
  size_t p = 0, t = 0;
  size_t star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t] ||
                               (insensitive && fold(pattern[p]) == fold(text[t])))) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      // Remember the star; first try matching it against the empty run.
      star = p++;
      resume = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace pgwarden::policy
