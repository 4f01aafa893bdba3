// JsonReader: reads a JSON document into structs, collecting every problem with the JSON path
// of the offending value (`$.listeners.dataplane.port: must be between 1 and 65535`) and
// rejecting unknown keys. Shared by the control plane's configuration parser
// (controlplane/config) and the dataplane's settings (common/protocol/dataplane_settings.h),
// which read the same file: one set of rules for what a value may be.
#pragma once

#include <cstddef>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace pgwarden {

struct FieldError {
  std::string path;  // JSONPath, e.g. "$.policies[2].masks[0].function"
  std::string message;
  std::string to_string() const { return path + ": " + message; }
};

// The JSON text `s` quoted as a JSON string (for messages naming a value).
std::string json_quote(std::string_view s);

// Parses `text` as one JSON document. Duplicate keys in an object are errors (nlohmann keeps
// the last one silently; an operator who wrote "read_only" twice must hear about it). Returns
// a discarded value (and adds to `errors`) when the text is not JSON.
nlohmann::json parse_json_document(std::string_view text, std::vector<FieldError>& errors);

// The largest configuration file either process reads.
inline constexpr size_t kMaxConfigFileBytes = 16 << 20;

// Reads the whole file at `path` (at most `max_bytes`) into `text`; false (and an error at
// "$") when it cannot be read or is larger.
bool read_document_file(const std::string& path, size_t max_bytes, std::string& text,
                        std::vector<FieldError>& errors);

class JsonReader {
 public:
  using json = nlohmann::json;
  // check_environment: files named by the document must be readable (off where the reader
  // cannot, or must not, look: the dataplane does not read the control plane's files).
  JsonReader(std::vector<FieldError>& errors, bool check_environment)
      : errors_(errors), check_environment_(check_environment) {}

  void error(const std::string& path, std::string message);

  // True when `j` is an object; reports keys not in `allowed`.
  bool object(const json& j, const std::string& path,
              std::initializer_list<std::string_view> allowed);
  // obj[key], or nullptr (an error "is required" when `required`).
  const json* field(const json& obj, const std::string& key, const std::string& path,
                    bool required);
  // A non-empty string.
  void str(const json& obj, const std::string& key, const std::string& path, std::string& out,
           bool required = false);
  void integer(const json& obj, const std::string& key, const std::string& path, int& out, int min,
               int max, bool required = false);
  void boolean(const json& obj, const std::string& key, const std::string& path, bool& out);
  // An array of non-empty strings; `check` (if set) returns an error message or "".
  void strings(const json& obj, const std::string& key, const std::string& path,
               std::vector<std::string>& out, bool required = false, bool non_empty = false,
               const std::function<std::string(const std::string&)>& check = {});
  // Calls each(element, its path) for every element of the array obj[key].
  template <typename F>
  void array_of_objects(const json& obj, const std::string& key, const std::string& path,
                        bool required, F each) {
    const json* v = field(obj, key, path, required);
    if (v == nullptr) return;
    if (!v->is_array()) {
      error(path + "." + key, "must be an array");
      return;
    }
    for (size_t i = 0; i < v->size(); ++i) {
      each((*v)[i], path + "." + key + "[" + std::to_string(i) + "]");
    }
  }
  // With environment checks on: an error at `path` when `file` cannot be read.
  void check_readable(const std::string& path, const std::string& file);
  bool check_environment() const { return check_environment_; }
  size_t error_count() const { return errors_.size(); }

 private:
  std::vector<FieldError>& errors_;
  bool check_environment_;
};

}  // namespace pgwarden
