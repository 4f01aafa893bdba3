// SCRAM-SHA-256 client (RFC 5802, RFC 7677) as PostgreSQL's SASL authentication uses it.
// https://www.postgresql.org/docs/15/sasl-authentication.html
//
// One ScramClient per upstream login, driven in order:
//   client_first_message()             -> SASLInitialResponse data ("n,,n=,r=<nonce>")
//   handle_server_first(server_first)  -> SASLResponse data (client-final with the proof)
//   verify_server_final(server_final)  -> ok only if the server proved it knows the verifier
// Any error moves the client to kFailed for good (fail closed: no step may be retried).
//
// No channel binding: the gs2 header is "n,," (PostgreSQL's SCRAM-SHA-256 mechanism).
// PostgreSQL ignores the SCRAM user name (it uses the startup user), so it is empty by
// default. SASLprep: a password made only of ASCII is used unchanged, which is exactly what
// SASLprep yields for printable ASCII (and what PostgreSQL does when SASLprep rejects a
// control character). Non-ASCII passwords are used as raw UTF-8 bytes without
// normalisation; passwords whose SASLprep form differs (e.g. containing U+00A0 or
// compatibility characters) are not supported.
//
// Thread-safety: none; callers serialise access (cp holds one per session under a lock).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::vault {

inline constexpr std::string_view kScramSha256 = "SCRAM-SHA-256";
inline constexpr uint32_t kScramMinIterations = 4096;
inline constexpr uint32_t kScramMaxIterations = 10'000'000;

class ScramClient {
 public:
  enum class State { kInitial, kSentClientFirst, kSentClientFinal, kDone, kFailed };

  // `client_nonce`: empty = 18 random bytes, base64 (tests inject the RFC example nonce; it
  // must be printable ASCII without ','). `username` is escaped per RFC 5802 (=2C, =3D).
  explicit ScramClient(Secret password, std::string client_nonce = {}, std::string username = {});
  ~ScramClient();
  ScramClient(const ScramClient&) = delete;
  ScramClient& operator=(const ScramClient&) = delete;

  // REQUIRES: state() == kInitial.
  Result<std::string> client_first_message();
  // Parses r, s, i; checks the nonce extends ours, 4096 <= i <= 10,000,000, and rejects
  // mandatory extensions. REQUIRES: state() == kSentClientFirst.
  Result<std::string> handle_server_first(std::string_view server_first);
  // "v=<signature>" compared in constant time; "e=<error>" fails. REQUIRES: kSentClientFinal.
  Status verify_server_final(std::string_view server_final);

  State state() const { return state_; }

 private:
  Status fail(Status s);

  Secret password_;
  std::string client_nonce_;
  std::string username_;
  std::string client_first_bare_;
  std::string expected_server_signature_;  // wiped on destruction
  State state_ = State::kInitial;
};

}  // namespace pgwarden::vault
