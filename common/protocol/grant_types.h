// The typed settings of a session's grant, shared by both processes: enums in memory, their
// names on the wire and in the configuration file. A name that is not in the table is refused
// where it is read (a malformed grant fails the login closed), never kept as a string.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgwarden::protocol {

// $.policies[i].recording.level: what the recorder keeps of a session.
enum class RecordingLevel : uint8_t { kOff, kMetadata, kFull };
// $.targets[i].tls_mode: TLS towards the upstream PostgreSQL.
enum class UpstreamTlsMode : uint8_t { kDisable, kRequire, kVerifyFull };
// $.targets[i].pool_mode: one upstream connection per session, or shared per transaction.
enum class PoolMode : uint8_t { kSession, kTransaction };

// EnumNames<E>::names[i] is the name of E(i).
template <typename E>
struct EnumNames;
template <>
struct EnumNames<RecordingLevel> {
  static constexpr std::array<std::string_view, 3> names{"off", "metadata", "full"};
};
template <>
struct EnumNames<UpstreamTlsMode> {
  static constexpr std::array<std::string_view, 3> names{"disable", "require", "verify-full"};
};
template <>
struct EnumNames<PoolMode> {
  static constexpr std::array<std::string_view, 2> names{"session", "transaction"};
};

template <typename E>
constexpr std::string_view enum_name(E value) {
  return EnumNames<E>::names[static_cast<size_t>(value)];
}

template <typename E>
constexpr std::optional<E> enum_from_name(std::string_view name) {
  const auto& names = EnumNames<E>::names;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<E>(i);
  }
  return std::nullopt;
}

// "a, b, c": the accepted names, for error messages.
template <typename E>
std::string enum_names_list() {
  std::string out;
  for (std::string_view n : EnumNames<E>::names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

}  // namespace pgwarden::protocol
