// What the parts of Session (session.cc, session_statement.cc, session_login.cc,
// session_relay.cc, session_ending.cc) share: buffer sizes and small helpers. Internal to
// dataplane/session; not part of Session's interface.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <sys/socket.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "dataplane/pgwire/wire.h"
#include "dataplane/session/result_masking.h"

namespace pgwarden::session::detail {

constexpr size_t kReadChunk = 32 * 1024;
constexpr size_t kReadBudget = 512 * 1024;  // per pump and side, for fairness
constexpr size_t kClientInSoftCap = 256 * 1024;
constexpr uint32_t kMaxInspectedUpstream = kMaxInspectedMessageBytes;
constexpr int64_t kCloseFlushMs = 2000;
// Upstream bytes held back while a write-ahead record is in flight (Session::awaiting_record_).
constexpr size_t kDeferredUpstreamCap = 64 * 1024;
// PostgreSQL's own cap on a client message (PQ_LARGE_MESSAGE_LIMIT): a streamed Bind or
// CopyData may be this long.
constexpr uint32_t kMaxStreamedMessageBytes = 0x3fffffff;
// How much of a streamed Bind is waited for to read its portal and statement names before it
// is relayed. A longer statement name cannot be a SQL PREPARE's (identifiers are cut to 63
// bytes), so only those are checked against the Parse-prepared names.
constexpr size_t kMaxBindNamesBytes = 64 * 1024;
// Parse-prepared statement names a session remembers (Session::parsed_statements_).
constexpr size_t kMaxParsedStatements = 10000;
// Bytes of prepared statement texts a session keeps to screen them again after a rules reload
// (a statement prepared beyond it is refused at its next Bind after a reload: prepare again).
constexpr size_t kMaxParsedTextBytes = 8u << 20;
// SQL cursors a session remembers with their DECLARE text (Session::cursors_), to screen a
// FETCH of one again after a rules reload; beyond either cap a FETCH after a reload of a cursor
// not remembered is refused (declare it again).
constexpr size_t kMaxCursors = 1024;
constexpr size_t kMaxCursorTextBytes = 1u << 20;

inline uint64_t random64() {
  uint64_t v = 0;
  RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof(v));
  return v;
}

inline uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

inline pgwire::Bytes bytes_of(const std::string& buf, size_t off) {
  return pgwire::Bytes(reinterpret_cast<const uint8_t*>(buf.data()) + off, buf.size() - off);
}

inline std::string describe_peer(const sockaddr_storage& ss, bool* loopback) {
  char host[INET6_ADDRSTRLEN] = {0};
  *loopback = false;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) {
    *loopback = true;
    return "unix";
  }
  return "unknown";
}

inline const nlohmann::json* field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

inline std::string str_field(const nlohmann::json& obj, const char* key, std::string def = {}) {
  const nlohmann::json* v = field(obj, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : def;
}

}  // namespace pgwarden::session::detail
