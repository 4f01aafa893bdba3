// Generated rule sets for the benchmarks (prescreen_bench, packet_bench), so both measure the
// same rules: n deny rules in the shapes real rules take (function calls, keyword sequences,
// object names, `[^;]*` spans, caseless text-view rules on literal values). None matches
// ordinary ORM traffic, so every rule is evaluated in full.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pgwarden::bench {

// Rule-file text (rules/rule_set.h syntax) with ids gen.r0 .. gen.r<n-1>; deterministic in n.
inline std::string generated_rules(size_t n) {
  uint64_t x = 88172645463325252ull ^ (n * 7919 + 1);  // xorshift64, fixed seed per size
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::string tag = std::to_string(i) + "x" + std::to_string(x % 1000);
    std::string view = "code", pattern, flags;
    switch (i % 10) {
      case 0:
      case 1:
      case 2:
        pattern = "\\bfn_" + tag + "\\s*\\(";
        break;
      case 3:
      case 4:
        pattern = "\\bdrop\\s+table\\s+(?:\\w+\\.)?tbl_" + tag + "\\b";
        break;
      case 5:
        pattern = "\\b(?:from|join)\\s+(?:public\\.)?secret_" + tag + "\\b";
        break;
      case 6:
        pattern = "\\bcopy\\b[^;]*\\bto\\s+prog_" + tag + "\\b";
        break;
      case 7:
        pattern = "\\balter\\s+(?:table|view)\\s+obj_" + tag + "\\s+(?:add|drop)\\b";
        break;
      case 8:
        pattern = "\\bgrant\\s+\\w+\\s+on\\s+t" + tag + "\\b";
        break;
      default:
        view = "text";
        pattern = "'/(?:etc|var|home)/path_" + tag + "[^']*'";
        flags = "caseless";
    }
    out += "[gen.r" + std::to_string(i) + "]\naction = deny\nview = " + view +
           "\npattern = " + pattern + "\n";
    if (!flags.empty()) out += "flags = " + flags + "\n";
    out += "message = generated rule\nseverity = high\n";
  }
  return out;
}

}  // namespace pgwarden::bench
