// Defaults shared by pgwarden-cp and pgwarden-dp for files they find without being told.
#pragma once

#include <filesystem>
#include <string>

#include "common/source_root.h"

namespace pgwarden {

// The directory of the rule sets when --rules-dir is not given: the installed
// <sysconfdir>/pgwarden/rules when it exists (a packaged or `meson install`ed gateway), else
// the source tree's rules/sets (a development checkout running from build/).
inline std::string default_rules_dir() {
  std::error_code ec;
  if (std::filesystem::is_directory(PGW_INSTALLED_RULES_DIR, ec)) return PGW_INSTALLED_RULES_DIR;
  return std::string(PGW_SOURCE_ROOT) + "/rules/sets";
}

}  // namespace pgwarden
