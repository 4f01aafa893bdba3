#include "dataplane/session/pooled_statements.h"

#include <openssl/evp.h>

#include <cstring>

#include "dataplane/pgwire/messages.h"
#include "dataplane/pgwire/wire.h"

namespace pgwarden::session {

namespace {

// Offset and length of the statement name inside `m`'s body, or false.
bool name_span(const pgwire::Message& m, size_t* off, size_t* len) {
  std::string_view body(reinterpret_cast<const char*>(m.body.data()), m.body.size());
  size_t start = 0;
  switch (m.type) {
    case 'P':
      break;
    case 'B': {
      size_t portal_end = body.find('\0');
      if (portal_end == std::string_view::npos) return false;
      start = portal_end + 1;
      break;
    }
    case 'D':
    case 'C':
      if (body.empty() || body[0] != 'S') return false;
      start = 1;
      break;
    default:
      return false;
  }
  size_t end = body.find('\0', start);
  if (end == std::string_view::npos) return false;
  *off = start;
  *len = end - start;
  return true;
}

}  // namespace

std::string server_statement_name(std::string_view tail) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(tail.data(), tail.size(), md, &n, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string name = "pgw_";
  for (unsigned int i = 0; i < 16 && i < n; ++i) {
    name.push_back(kHex[md[i] >> 4]);
    name.push_back(kHex[md[i] & 15]);
  }
  return name;
}

std::string_view parse_tail(const pgwire::Message& m) {
  size_t off = 0, len = 0;
  if (m.type != 'P' || !name_span(m, &off, &len)) return {};
  std::string_view body(reinterpret_cast<const char*>(m.body.data()), m.body.size());
  return body.substr(off + len + 1);
}

bool kept_parse_query(std::string_view message, std::string_view* sql) {
  if (message.size() < 5) return false;
  pgwire::Parse p;
  const auto* bytes = reinterpret_cast<const uint8_t*>(message.data());
  if (!pgwire::parse(pgwire::Bytes(bytes + 5, message.size() - 5), &p).ok()) return false;
  *sql = p.query;
  return true;
}

bool append_renamed(const pgwire::Message& m, std::string_view name, std::string& out) {
  size_t off = 0, len = 0;
  if (!name_span(m, &off, &len) || name.find('\0') != std::string_view::npos) return false;
  std::string_view body(reinterpret_cast<const char*>(m.body.data()), m.body.size());
  const size_t new_body = body.size() - len + name.size();
  out.push_back(static_cast<char>(m.type));
  uint8_t be[4];
  pgwire::store_be32(be, static_cast<uint32_t>(4 + new_body));
  out.append(reinterpret_cast<const char*>(be), 4);
  out.append(body.substr(0, off));
  out.append(name);
  out.append(body.substr(off + len));
  return true;
}

}  // namespace pgwarden::session
