#include "controlplane/server/session_ticket.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "controlplane/identity/base64url.h"

namespace pgwarden::server {

namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kMaxTicketBytes = 8192;
constexpr std::string_view kPrefix = "v1.";

}  // namespace

Result<std::unique_ptr<TicketKey>> TicketKey::open(const std::string& state_dir) {
  std::string path = state_dir + "/ticket.key";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    std::string key(kKeyBytes, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(kKeyBytes)) !=
        1) {
      return internal_error("RAND_bytes failed creating the session ticket key");
    }
    int w = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w < 0) return unavailable("cannot create " + path + ": " + std::strerror(errno));
    bool ok =
        ::write(w, key.data(), key.size()) == static_cast<ssize_t>(key.size()) && ::fsync(w) == 0;
    ::close(w);
    if (!ok) {
      ::unlink(path.c_str());
      return unavailable("cannot write " + path);
    }
    return std::unique_ptr<TicketKey>(new TicketKey(std::move(key)));
  }
  if (fd < 0) return unavailable("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || (st.st_mode & 077) != 0 ||
      st.st_size != static_cast<off_t>(kKeyBytes)) {
    ::close(fd);
    return failed_precondition(path + " must be a 32-byte file of mode 0600");
  }
  std::string key(kKeyBytes, '\0');
  bool ok = ::read(fd, key.data(), key.size()) == static_cast<ssize_t>(key.size());
  ::close(fd);
  if (!ok) return unavailable("cannot read " + path);
  return std::unique_ptr<TicketKey>(new TicketKey(std::move(key)));
}

std::unique_ptr<TicketKey> TicketKey::from_bytes(std::string key) {
  return std::unique_ptr<TicketKey>(new TicketKey(std::move(key)));
}

std::string TicketKey::mac(std::string_view data) const {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string TicketKey::issue(const TicketClaims& c) const {
  nlohmann::json j{{"sid", c.session_id}, {"sub", c.subject},      {"iss", c.issuer},
                   {"grp", c.groups},     {"prv", c.provider},     {"kid", c.key_id},
                   {"pol", c.policy},     {"tgt", c.target},       {"adr", c.client_addr},
                   {"tls", c.tls},        {"exp", c.token_exp_ms}, {"iat", c.issued_ms}};
  std::string signed_part = std::string(kPrefix) + identity::base64url_encode(j.dump());
  return signed_part + "." + identity::base64url_encode(mac(signed_part));
}

Result<TicketClaims> TicketKey::verify(std::string_view ticket) const {
  if (ticket.size() > kMaxTicketBytes || !ticket.starts_with(kPrefix)) {
    return invalid_argument("malformed session ticket", "08P01");
  }
  size_t dot = ticket.rfind('.');
  if (dot <= kPrefix.size()) return invalid_argument("malformed session ticket", "08P01");
  std::string_view signed_part = ticket.substr(0, dot);
  auto given = identity::base64url_decode(ticket.substr(dot + 1));
  std::string expected = mac(signed_part);
  if (!given || given->size() != expected.size() ||
      CRYPTO_memcmp(given->data(), expected.data(), expected.size()) != 0) {
    return Status(StatusCode::kPermissionDenied, "session ticket signature does not verify",
                  "28000");
  }
  auto payload = identity::base64url_decode(signed_part.substr(kPrefix.size()));
  if (!payload) return invalid_argument("malformed session ticket", "08P01");
  nlohmann::json j = nlohmann::json::parse(*payload, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return invalid_argument("malformed session ticket", "08P01");
  }
  TicketClaims c;
  try {
    c.session_id = j.at("sid").get<std::string>();
    c.subject = j.at("sub").get<std::string>();
    c.issuer = j.at("iss").get<std::string>();
    c.groups = j.at("grp").get<std::vector<std::string>>();
    c.provider = j.at("prv").get<std::string>();
    c.key_id = j.at("kid").get<std::string>();
    c.policy = j.at("pol").get<std::string>();
    c.target = j.at("tgt").get<std::string>();
    c.client_addr = j.at("adr").get<std::string>();
    c.tls = j.at("tls").get<bool>();
    c.token_exp_ms = j.at("exp").get<int64_t>();
    c.issued_ms = j.at("iat").get<int64_t>();
  } catch (const nlohmann::json::exception&) {
    return invalid_argument("malformed session ticket", "08P01");
  }
  return c;
}

}  // namespace pgwarden::server
