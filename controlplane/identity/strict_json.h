// JSON parsing for untrusted JOSE input: one JSON value and nothing after it, duplicate
// object member names rejected (RFC 7515 section 5.2 allows either rejecting or taking the
// last; two parsers disagreeing on a duplicate "alg" or "sub" is a classic bypass), and a
// nesting limit so hostile input cannot make destruction or traversal deep.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace pgwarden::identity {

inline constexpr int kMaxJsonDepth = 32;

// Parses `text`. On failure returns nullopt and, when `error` is set, a short reason (never
// echoing the input).
std::optional<nlohmann::json> parse_strict_json(std::string_view text, std::string* error);

}  // namespace pgwarden::identity
