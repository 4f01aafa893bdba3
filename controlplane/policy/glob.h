// Glob matching for policy names ("crm.*", "public.kv?", "*").
#pragma once

#include <string_view>

namespace pgwarden::policy {

// True when `text` matches `pattern` as a whole. `*` matches any run of characters
// (including '.' and the empty run), `?` exactly one character; everything else matches
// itself, case-sensitively. Runs in O(|pattern| * |text|) worst case, without recursion.
bool glob_match(std::string_view pattern, std::string_view text);

}  // namespace pgwarden::policy
