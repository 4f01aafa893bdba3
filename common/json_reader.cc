#include "common/json_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <set>

namespace pgwarden {

using json = nlohmann::json;

std::string json_quote(std::string_view s) { return json(std::string(s)).dump(); }

json parse_json_document(std::string_view text, std::vector<FieldError>& errors) {
  // Track the keys of every open object while parsing: nlohmann keeps the last duplicate.
  std::vector<std::set<std::string>> open_objects;
  std::vector<std::string> duplicates;
  auto on_event = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end && !open_objects.empty()) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty() &&
               !open_objects.back().insert(parsed.get<std::string>()).second) {
      duplicates.push_back(parsed.get<std::string>());
    }
    return true;
  };
  json root;
  try {
    root = json::parse(text, on_event);
  } catch (const json::parse_error& e) {
    errors.push_back({"$", std::string("invalid JSON: ") + e.what()});
    return json(json::value_t::discarded);
  }
  for (const std::string& key : duplicates) {
    errors.push_back({"$", "duplicate key " + json_quote(key)});
  }
  return root;
}

bool read_document_file(const std::string& path, size_t max_bytes, std::string& text,
                        std::vector<FieldError>& errors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errors.push_back({"$", "cannot read config file " + path});
    return false;
  }
  text.resize(max_bytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > max_bytes) {
    errors.push_back({"$", "config file is larger than " + std::to_string(max_bytes >> 20) +
                               " MiB"});
    return false;
  }
  return true;
}

void JsonReader::error(const std::string& path, std::string message) {
  errors_.push_back({path, std::move(message)});
}

bool JsonReader::object(const json& j, const std::string& path,
                        std::initializer_list<std::string_view> allowed) {
  if (!j.is_object()) {
    error(path, "must be an object");
    return false;
  }
  for (const auto& [key, value] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      error(path + "." + key, "unknown key " + json_quote(key));
    }
  }
  return true;
}

const json* JsonReader::field(const json& obj, const std::string& key, const std::string& path,
                              bool required) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) error(path + "." + key, "is required");
    return nullptr;
  }
  return &*it;
}

void JsonReader::str(const json& obj, const std::string& key, const std::string& path,
                     std::string& out, bool required) {
  const json* v = field(obj, key, path, required);
  if (v == nullptr) return;
  if (!v->is_string()) {
    error(path + "." + key, "must be a string");
  } else if (v->get_ref<const std::string&>().empty()) {
    error(path + "." + key, "must not be empty");
  } else {
    out = v->get<std::string>();
  }
}

void JsonReader::integer(const json& obj, const std::string& key, const std::string& path,
                         int& out, int min, int max, bool required) {
  const json* v = field(obj, key, path, required);
  if (v == nullptr) return;
  if (!v->is_number_integer()) {
    error(path + "." + key, "must be an integer");
    return;
  }
  int64_t n = v->get<int64_t>();
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    n = INT64_MAX;
  }
  if (n < min || n > max) {
    error(path + "." + key,
          "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return;
  }
  out = static_cast<int>(n);
}

void JsonReader::boolean(const json& obj, const std::string& key, const std::string& path,
                         bool& out) {
  const json* v = field(obj, key, path, false);
  if (v == nullptr) return;
  if (!v->is_boolean()) {
    error(path + "." + key, "must be true or false");
    return;
  }
  out = v->get<bool>();
}

void JsonReader::strings(const json& obj, const std::string& key, const std::string& path,
                         std::vector<std::string>& out, bool required, bool non_empty,
                         const std::function<std::string(const std::string&)>& check) {
  const json* v = field(obj, key, path, required);
  if (v == nullptr) return;
  std::string p = path + "." + key;
  if (!v->is_array()) {
    error(p, "must be an array of strings");
    return;
  }
  if (non_empty && v->empty()) error(p, "must not be empty");
  std::vector<std::string> result;
  for (size_t i = 0; i < v->size(); ++i) {
    std::string ip = p + "[" + std::to_string(i) + "]";
    const json& e = (*v)[i];
    if (!e.is_string() || e.get_ref<const std::string&>().empty()) {
      error(ip, "must be a non-empty string");
      continue;
    }
    std::string s = e.get<std::string>();
    if (check) {
      std::string msg = check(s);
      if (!msg.empty()) {
        error(ip, msg);
        continue;
      }
    }
    result.push_back(std::move(s));
  }
  out = std::move(result);
}

void JsonReader::check_readable(const std::string& path, const std::string& file) {
  if (check_environment_ && ::access(file.c_str(), R_OK) != 0) {
    error(path, "cannot read " + json_quote(file));
  }
}

}  // namespace pgwarden
