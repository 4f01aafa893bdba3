#include "controlplane/identity/strict_json.h"

#include <set>
#include <vector>

namespace pgwarden::identity {
namespace {

struct StrictJsonError {
  const char* what;
};

}  // namespace

std::optional<nlohmann::json> parse_strict_json(std::string_view text, std::string* error) {
  std::vector<std::set<std::string>> keys;  // member names of each open object
  int depth = 0;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                      nlohmann::json& parsed) -> bool {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start:
        keys.emplace_back();
        [[fallthrough]];
      case E::array_start:
        if (++depth > kMaxJsonDepth) throw StrictJsonError{"nesting too deep"};
        break;
      case E::object_end:
        keys.pop_back();
        [[fallthrough]];
      case E::array_end:
        --depth;
        break;
      case E::key:
        if (!keys.back().insert(parsed.get<std::string>()).second) {
          throw StrictJsonError{"duplicate member name"};
        }
        break;
      case E::value:
        break;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                                 /*ignore_comments=*/false);
  } catch (const StrictJsonError& e) {
    if (error) *error = e.what;
  } catch (const nlohmann::json::exception&) {
    if (error) *error = "invalid JSON";
  }
  return std::nullopt;
}

}  // namespace pgwarden::identity
