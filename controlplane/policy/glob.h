// Glob matching for policy names ("crm.*", "public.kv?", "*").
#pragma once

#include <string_view>

namespace pgwarden::policy {

enum class GlobCase { kSensitive, kInsensitive };

// True when `text` matches `pattern` as a whole. `*` matches any run of characters
// (including '.' and the empty run), `?` exactly one character; everything else matches
// itself, case-sensitively unless `kInsensitive` (ASCII folding: column and type names).
// Runs in O(|pattern| * |text|) worst case, without recursion. The one glob matcher of
// the control plane: config, policy and mask plans all use it.
bool glob_match(std::string_view pattern, std::string_view text,
                GlobCase mode = GlobCase::kSensitive);

}  // namespace pgwarden::policy
