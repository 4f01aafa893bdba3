// Stable snake_case names of status codes, as the admin APIs (Unix socket and HTTPS) answer
// them in {"error": {"code": ...}}. Defined in status.cc.
#pragma once

#include <string_view>

#include "common/status.h"

namespace pgwarden {

// "invalid_argument", "permission_denied", "not_found", ...
std::string_view status_code_snake_name(StatusCode code);

}  // namespace pgwarden
