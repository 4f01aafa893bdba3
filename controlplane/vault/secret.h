// Secret: bytes that must never be logged and are wiped from memory when dropped.
//
// A Secret owns its buffer; the destructor (and every assignment over it) erases the bytes
// with OPENSSL_cleanse before the memory is released. There is deliberately no operator<<,
// to_string() or implicit conversion: code that needs the bytes asks for view() by name,
// which makes every use greppable. Not thread-safe for concurrent mutation; const access
// from several threads is fine.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden::vault {

class Secret {
 public:
  Secret() = default;
  // Takes the bytes; the caller's string is wiped and left empty.
  explicit Secret(std::string&& bytes);
  // Copies the bytes (the caller stays responsible for wiping its copy).
  static Secret copy_of(std::string_view bytes);
  ~Secret();

  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;

  bool empty() const { return bytes_.empty(); }
  size_t size() const { return bytes_.size(); }
  // The secret bytes. The view dies with this Secret.
  std::string_view view() const { return bytes_; }

 private:
  void wipe();
  std::string bytes_;
};

// Wipes a std::string in place (contents and any capacity in use) and clears it.
void wipe_string(std::string& s);

// Where a target's upstream password comes from (config: "credential": {"file"|"env"}).
struct SecretSource {
  enum class Kind { kFile, kEnv };
  Kind kind = Kind::kFile;
  std::string location;  // file path or environment variable name
};

// Reads the secret now. A file must be a regular file of at most 64 KiB, not readable by
// group/other when `require_private_file` (mode & 077 == 0); one trailing "\n" or "\r\n" is
// stripped. An environment variable must be set and non-empty. Errors never contain the
// secret, only its location.
Result<Secret> read_secret(const SecretSource& source, bool require_private_file = false);

}  // namespace pgwarden::vault
