// Big-endian primitives of the PostgreSQL frontend/backend protocol 3.0.
//
// Field types are named as in the protocol documentation
// (https://www.postgresql.org/docs/15/protocol-message-formats.html):
//   Int8 / Int16 / Int32   big-endian two's complement integers
//   String                 bytes terminated by one NUL (the NUL is not part of the value)
//   ByteN                  N raw bytes
//
// Reader is a bounds-checked cursor over a caller's buffer: every read validates that the
// bytes exist before touching them, and the first failure sticks (later reads fail too), so a
// parser can read a whole message and check `ok()` once. Nothing here allocates; views
// returned by Reader point into the caller's buffer, which must outlive them.
// Thread-safety: none needed (no shared state).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace pgwarden::pgwire {

// Protocol field types, as the documentation names them. Oid is an Int32 read as unsigned.
using Int8 = uint8_t;
using Int16 = int16_t;
using Int32 = int32_t;
using Oid = uint32_t;
// ByteN: a view of N bytes in the caller's buffer.
using Bytes = std::span<const uint8_t>;

inline Bytes as_bytes(std::string_view s) {
  return Bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
inline std::string_view as_string_view(Bytes b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

inline uint16_t load_be16(const uint8_t* p) {
  return static_cast<uint16_t>((static_cast<uint16_t>(p[0]) << 8) | p[1]);
}
inline uint32_t load_be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// Why a read failed; mapped to FrameErrorCode by the parsers.
enum class ReadFailure : uint8_t { kNone, kTruncated, kMissingNul };

class Reader {
 public:
  explicit Reader(Bytes data) : data_(data) {}

  bool ok() const { return failure_ == ReadFailure::kNone; }
  ReadFailure failure() const { return failure_; }
  size_t remaining() const { return ok() ? data_.size() - pos_ : 0; }
  bool at_end() const { return ok() && pos_ == data_.size(); }
  size_t position() const { return pos_; }

  bool read_int8(uint8_t* out) {
    if (!need(1)) return false;
    *out = data_[pos_++];
    return true;
  }
  bool read_int16(int16_t* out) {
    if (!need(2)) return false;
    *out = static_cast<int16_t>(load_be16(data_.data() + pos_));
    pos_ += 2;
    return true;
  }
  bool read_int32(int32_t* out) {
    if (!need(4)) return false;
    *out = static_cast<int32_t>(load_be32(data_.data() + pos_));
    pos_ += 4;
    return true;
  }
  bool read_uint32(uint32_t* out) {
    if (!need(4)) return false;
    *out = load_be32(data_.data() + pos_);
    pos_ += 4;
    return true;
  }
  // String: up to (not including) the next NUL; the NUL is consumed.
  bool read_string(std::string_view* out) {
    if (!ok()) return false;
    const uint8_t* start = data_.data() + pos_;
    const void* nul = std::memchr(start, 0, data_.size() - pos_);
    if (nul == nullptr) {
      failure_ = ReadFailure::kMissingNul;
      return false;
    }
    size_t len = static_cast<size_t>(static_cast<const uint8_t*>(nul) - start);
    *out = std::string_view(reinterpret_cast<const char*>(start), len);
    pos_ += len + 1;
    return true;
  }
  // ByteN.
  bool read_bytes(size_t n, Bytes* out) {
    if (!need(n)) return false;
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  // Everything left (e.g. SASL data, CopyData payload).
  Bytes read_rest() {
    Bytes out = ok() ? data_.subspan(pos_) : Bytes();
    pos_ = data_.size();
    return out;
  }

 private:
  bool need(size_t n) {
    if (!ok()) return false;
    if (data_.size() - pos_ < n) {
      failure_ = ReadFailure::kTruncated;
      return false;
    }
    return true;
  }

  Bytes data_;
  size_t pos_ = 0;
  ReadFailure failure_ = ReadFailure::kNone;
};

// Writers append to a caller-owned std::string (it only grows; callers reuse one buffer per
// connection so the hot path does not allocate once it has reached its working size).
inline void append_int8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }
inline void append_int16(std::string& out, int16_t v) {
  uint16_t u = static_cast<uint16_t>(v);
  out.push_back(static_cast<char>(u >> 8));
  out.push_back(static_cast<char>(u & 0xff));
}
inline void append_int32(std::string& out, int32_t v) {
  uint8_t b[4];
  store_be32(b, static_cast<uint32_t>(v));
  out.append(reinterpret_cast<const char*>(b), 4);
}
inline void append_uint32(std::string& out, uint32_t v) {
  append_int32(out, static_cast<int32_t>(v));
}
// String. A String cannot carry a NUL, so `s` is written up to its first NUL (if any): the
// output is always well-formed. Callers that must reject such input check `has_nul` first.
inline void append_string(std::string& out, std::string_view s) {
  out.append(s.substr(0, s.find('\0')));
  out.push_back('\0');
}
inline void append_bytes(std::string& out, Bytes b) {
  out.append(reinterpret_cast<const char*>(b.data()), b.size());
}
inline bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

// Starts a typed message: appends the type byte and a placeholder Int32 length. Returns the
// offset of the length field for `finish_message`. `type` 0 starts an untyped (startup) packet.
inline size_t begin_message(std::string& out, char type) {
  if (type != 0) out.push_back(type);
  size_t at = out.size();
  out.append(4, '\0');
  return at;
}
// Patches the length field written by `begin_message` (length counts itself, not the type).
inline void finish_message(std::string& out, size_t length_at) {
  store_be32(reinterpret_cast<uint8_t*>(out.data() + length_at),
             static_cast<uint32_t>(out.size() - length_at));
}

}  // namespace pgwarden::pgwire
