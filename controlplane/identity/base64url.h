// Strict base64url (RFC 4648 section 5) as JOSE uses it (RFC 7515 section 2): no padding, the
// URL-safe alphabet only, and canonical encodings only (unused trailing bits must be zero), so
// one byte string has exactly one accepted encoding.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pgwarden::identity {

// Decodes `in`. Returns nullopt on any character outside [A-Za-z0-9_-] (including '='
// padding, '+', '/', whitespace), on a length that is 1 mod 4, and on non-zero unused bits.
std::optional<std::string> base64url_decode(std::string_view in);

// Encodes `in` without padding.
std::string base64url_encode(std::string_view in);

}  // namespace pgwarden::identity
