// A few hand-built PostgreSQL frontend messages over a raw socket, playing the dataplane in
// integration tests (the pgwire codec is a separate module; these tests must not depend on
// it). https://www.postgresql.org/docs/15/protocol-message-formats.html
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace pgwarden::testing {

struct BackendMessage {
  char type = 0;
  std::string payload;  // without type byte and length

  // 'R' messages: the Int32 auth request code (0 ok, 10 SASL, 11 continue, 12 final).
  int32_t auth_code() const;
  // 'R' code 11/12: the SASL data after the code.
  std::string sasl_data() const { return payload.size() > 4 ? payload.substr(4) : ""; }
  // 'R' code 10: mechanism names.
  std::vector<std::string> sasl_mechanisms() const;
  // 'E'/'N': field code -> value (e.g. 'C' -> SQLSTATE).
  std::map<char, std::string> fields() const;
};

class RawPgConnection {
 public:
  RawPgConnection() = default;
  ~RawPgConnection();
  RawPgConnection(const RawPgConnection&) = delete;
  RawPgConnection& operator=(const RawPgConnection&) = delete;

  Status connect_tcp(const std::string& host, int port);
  Status send_startup(const std::string& user, const std::string& database);
  Status send_sasl_initial_response(const std::string& mechanism, const std::string& data);
  Status send_sasl_response(const std::string& data);
  // Waits up to `timeout_ms` for one whole message.
  Result<BackendMessage> read_message(int timeout_ms = 10000);

 private:
  Status send_all(const std::string& bytes);
  int fd_ = -1;
  std::string in_;
};

}  // namespace pgwarden::testing
