// TcpSeq: a TCP sequence number with modulo-2^32 ("wrap-safe") arithmetic and ordering.
//
// Ordering follows RFC 793 / RFC 1982 serial-number arithmetic: a < b iff (b - a), taken as a
// signed 32-bit difference, is positive. It is only meaningful for numbers less than 2^31
// apart, which TCP windows guarantee. Plain value type; thread-compatible.
#pragma once

#include <cstdint>

namespace pgwarden::packet {

class TcpSeq {
 public:
  constexpr TcpSeq() = default;
  constexpr explicit TcpSeq(uint32_t raw) : raw_(raw) {}

  constexpr uint32_t raw() const { return raw_; }

  // Signed distance from `other` to *this: positive when *this is after `other`.
  constexpr int32_t operator-(TcpSeq other) const {
    return static_cast<int32_t>(raw_ - other.raw_);
  }
  constexpr TcpSeq operator+(uint32_t n) const { return TcpSeq(raw_ + n); }
  constexpr TcpSeq operator-(uint32_t n) const { return TcpSeq(raw_ - n); }
  constexpr TcpSeq& operator+=(uint32_t n) {
    raw_ += n;
    return *this;
  }

  constexpr bool operator==(const TcpSeq&) const = default;
  constexpr bool operator<(TcpSeq o) const { return (*this - o) < 0; }
  constexpr bool operator<=(TcpSeq o) const { return (*this - o) <= 0; }
  constexpr bool operator>(TcpSeq o) const { return (*this - o) > 0; }
  constexpr bool operator>=(TcpSeq o) const { return (*this - o) >= 0; }

 private:
  uint32_t raw_ = 0;
};

constexpr TcpSeq seq_max(TcpSeq a, TcpSeq b) { return a < b ? b : a; }
constexpr TcpSeq seq_min(TcpSeq a, TcpSeq b) { return a < b ? a : b; }

}  // namespace pgwarden::packet
