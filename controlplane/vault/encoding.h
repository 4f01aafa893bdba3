// Base64 (RFC 4648, standard alphabet, padded) as SCRAM and the credential hashes use it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pgwarden::vault {

std::string base64_encode(std::string_view bytes);
// nullopt unless `text` is canonical padded base64 (length a multiple of 4, valid alphabet).
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace pgwarden::vault
