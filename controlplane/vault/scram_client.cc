#include "controlplane/vault/scram_client.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <array>
#include <charconv>

#include "controlplane/vault/encoding.h"

namespace pgwarden::vault {

namespace {

constexpr size_t kKeyBytes = 32;
using Key = std::array<unsigned char, kKeyBytes>;

struct WipedKey {
  Key k{};
  ~WipedKey() { OPENSSL_cleanse(k.data(), k.size()); }
};

void hmac(const Key& key, std::string_view msg, Key& out) {
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out.data(), &len);
}

bool printable_nonce(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

std::string escape_username(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == ',') {
      out += "=2C";
    } else if (c == '=') {
      out += "=3D";
    } else {
      out += c;
    }
  }
  return out;
}

Status protocol_error(std::string msg) {
  return unauthenticated("SCRAM: " + std::move(msg), "08P01");
}

}  // namespace

ScramClient::ScramClient(Secret password, std::string client_nonce, std::string username)
    : password_(std::move(password)),
      client_nonce_(std::move(client_nonce)),
      username_(std::move(username)) {}

ScramClient::~ScramClient() { wipe_string(expected_server_signature_); }

Status ScramClient::fail(Status s) {
  state_ = State::kFailed;
  wipe_string(expected_server_signature_);
  password_ = Secret();
  return s;
}

Result<std::string> ScramClient::client_first_message() {
  if (state_ != State::kInitial) return fail(failed_precondition("SCRAM: out of order step"));
  if (client_nonce_.empty()) {
    std::string raw(18, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(raw.size())) !=
        1) {
      return fail(internal_error("SCRAM: RAND_bytes failed"));
    }
    client_nonce_ = base64_encode(raw);
  } else if (!printable_nonce(client_nonce_)) {
    return fail(invalid_argument("SCRAM: injected nonce is not printable"));
  }
  client_first_bare_ = "n=" + escape_username(username_) + ",r=" + client_nonce_;
  state_ = State::kSentClientFirst;
  return "n,," + client_first_bare_;
}

Result<std::string> ScramClient::handle_server_first(std::string_view server_first) {
  if (state_ != State::kSentClientFirst) {
    return fail(failed_precondition("SCRAM: out of order step"));
  }
  if (server_first.size() > 4096) return fail(protocol_error("server-first-message too long"));
  // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," ext]
  std::string_view rest = server_first;
  auto next_attr = [&rest](char name, std::string_view& value) {
    if (rest.size() < 2 || rest[0] != name || rest[1] != '=') return false;
    size_t comma = rest.find(',');
    value = rest.substr(2, comma == std::string_view::npos ? comma : comma - 2);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    return true;
  };
  std::string_view nonce, salt_b64, iter_text;
  if (!rest.empty() && rest[0] == 'm') {
    return fail(protocol_error("server requires an unsupported mandatory extension"));
  }
  if (!next_attr('r', nonce) || !next_attr('s', salt_b64) || !next_attr('i', iter_text)) {
    return fail(protocol_error("malformed server-first-message"));
  }
  if (nonce.size() <= client_nonce_.size() ||
      nonce.substr(0, client_nonce_.size()) != client_nonce_ || !printable_nonce(nonce)) {
    return fail(protocol_error("server nonce does not extend the client nonce"));
  }
  auto salt = base64_decode(salt_b64);
  if (!salt || salt->empty()) return fail(protocol_error("bad salt in server-first-message"));
  uint64_t iterations = 0;
  auto [ptr, ec] =
      std::from_chars(iter_text.data(), iter_text.data() + iter_text.size(), iterations);
  if (ec != std::errc() || ptr != iter_text.data() + iter_text.size() || iter_text.empty()) {
    return fail(protocol_error("bad iteration count in server-first-message"));
  }
  if (iterations < kScramMinIterations || iterations > kScramMaxIterations) {
    return fail(protocol_error("server iteration count " + std::to_string(iterations) +
                               " outside 4096..10000000"));
  }

  WipedKey salted, client_key, stored_key, client_sig, server_key;
  if (PKCS5_PBKDF2_HMAC(password_.view().data(), static_cast<int>(password_.size()),
                        reinterpret_cast<const unsigned char*>(salt->data()),
                        static_cast<int>(salt->size()), static_cast<int>(iterations), EVP_sha256(),
                        kKeyBytes, salted.k.data()) != 1) {
    return fail(internal_error("SCRAM: PBKDF2 failed"));
  }
  // The password is no longer needed once the salted password exists.
  password_ = Secret();
  hmac(salted.k, "Client Key", client_key.k);
  SHA256(client_key.k.data(), client_key.k.size(), stored_key.k.data());

  std::string without_proof = "c=biws,r=" + std::string(nonce);
  std::string auth_message =
      client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  hmac(stored_key.k, auth_message, client_sig.k);
  WipedKey proof;
  for (size_t i = 0; i < kKeyBytes; ++i) proof.k[i] = client_key.k[i] ^ client_sig.k[i];

  hmac(salted.k, "Server Key", server_key.k);
  Key server_sig{};
  hmac(server_key.k, auth_message, server_sig);
  expected_server_signature_.assign(reinterpret_cast<const char*>(server_sig.data()),
                                    server_sig.size());
  OPENSSL_cleanse(server_sig.data(), server_sig.size());

  state_ = State::kSentClientFinal;
  return without_proof + ",p=" +
         base64_encode(
             std::string_view(reinterpret_cast<const char*>(proof.k.data()), proof.k.size()));
}

Status ScramClient::verify_server_final(std::string_view server_final) {
  if (state_ != State::kSentClientFinal) {
    return fail(failed_precondition("SCRAM: out of order step"));
  }
  if (server_final.substr(0, 2) == "e=") {
    std::string reason(server_final.substr(2, 200));
    return fail(unauthenticated("SCRAM: server reported error: " + reason, "28P01"));
  }
  if (server_final.substr(0, 2) != "v=") {
    return fail(protocol_error("malformed server-final-message"));
  }
  std::string_view sig_b64 = server_final.substr(2);
  size_t comma = sig_b64.find(',');
  if (comma != std::string_view::npos) sig_b64 = sig_b64.substr(0, comma);
  auto sig = base64_decode(sig_b64);
  if (!sig || sig->size() != expected_server_signature_.size() ||
      CRYPTO_memcmp(sig->data(), expected_server_signature_.data(), sig->size()) != 0) {
    return fail(
        unauthenticated("SCRAM: server signature does not match (upstream server is "
                        "not who it claims to be)",
                        "28000"));
  }
  wipe_string(expected_server_signature_);
  state_ = State::kDone;
  return Status::ok();
}

}  // namespace pgwarden::vault
