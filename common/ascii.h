// ASCII helpers for protocol tokens, option names and header fields (never locale-dependent).
#pragma once

#include <string>
#include <string_view>

namespace pgwarden {

// `s` with A-Z mapped to a-z; every other byte unchanged.
inline std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace pgwarden
