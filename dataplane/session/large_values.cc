#include "dataplane/session/large_values.h"

#include <openssl/evp.h>

#include <algorithm>

#include "common/protocol/event_record.h"
#include "dataplane/pgwire/wire.h"

namespace pgwarden::session {

namespace {

using json = nlohmann::json;

std::string hex_of(const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 0xf];
  }
  return out;
}

// A text prefix cut inside a UTF-8 sequence: drop the partial character so the prefix stays
// readable text rather than turning into hex.
std::string_view trim_partial_utf8(std::string_view s) {
  size_t back = 0;
  while (back < 3 && back < s.size() &&
         (static_cast<unsigned char>(s[s.size() - 1 - back]) & 0xc0) == 0x80) {
    ++back;
  }
  if (back < s.size()) {
    auto lead = static_cast<unsigned char>(s[s.size() - 1 - back]);
    size_t n = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : 4;
    if (n > back + 1) return s.substr(0, s.size() - 1 - back);
  }
  return s;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  return hex_of(md, n);
}

// ---------------------------------------------------------------------------------------------
// ValueRecorder

ValueRecorder::ValueRecorder() = default;

ValueRecorder::~ValueRecorder() {
  if (sha_ != nullptr) EVP_MD_CTX_free(sha_);
}

void ValueRecorder::start(bool binary, size_t whole_cap, size_t prefix_cap) {
  binary_ = binary;
  whole_cap_ = whole_cap;
  prefix_cap_ = prefix_cap;
  head_.clear();
  length_ = 0;
  hashing_ = false;
}

void ValueRecorder::update(std::string_view chunk) {
  if (chunk.empty()) return;
  const size_t keep = std::max(whole_cap_, prefix_cap_);
  if (head_.size() < keep) head_.append(chunk.substr(0, keep - head_.size()));
  length_ += chunk.size();
  if (!hashing_ && length_ > whole_cap_) {
    // Longer than a whole value: from here on it is summarised, so hash what came before
    // (all of it is in head_, which holds at least whole_cap bytes) and the rest as it passes.
    if (sha_ == nullptr) sha_ = EVP_MD_CTX_new();
    EVP_DigestInit_ex(sha_, EVP_sha256(), nullptr);
    hashing_ = true;
    const uint64_t before = length_ - chunk.size();
    EVP_DigestUpdate(sha_, head_.data(), static_cast<size_t>(before));
    EVP_DigestUpdate(sha_, chunk.data(), chunk.size());
    return;
  }
  if (hashing_) EVP_DigestUpdate(sha_, chunk.data(), chunk.size());
}

json ValueRecorder::finish(size_t* bytes) {
  if (!hashing_) {
    json v = protocol::text_value_json(head_, binary_);
    *bytes += binary_ ? 2 + 2 * head_.size() : head_.size();
    return v;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(sha_, md, &n);
  hashing_ = false;
  std::string_view prefix = std::string_view(head_).substr(0, prefix_cap_);
  if (!binary_) prefix = trim_partial_utf8(prefix);
  json v = {{"length", length_},
            {"sha256", hex_of(md, n)},
            {"prefix", protocol::text_value_json(prefix, binary_)}};
  *bytes += 96 + (binary_ ? 2 * prefix.size() : prefix.size());
  return v;
}

// ---------------------------------------------------------------------------------------------
// ValueListStream

void ValueListStream::start(std::vector<int16_t> formats, bool record, size_t stop_after) {
  formats_ = std::move(formats);
  record_ = record;
  stop_after_ = stop_after;
  this_ = false;
  state_ = State::kCount;
  hdr_have_ = 0;
  count_ = 0;
  index_ = 0;
  value_left_ = 0;
  values_ = json::array();
  rendered_ = 0;
  summarised_ = false;
  largest_index_ = -1;
  largest_length_ = 0;
}

bool ValueListStream::binary(size_t i) const {
  if (formats_.size() == 1) return formats_[0] == 1;
  return i < formats_.size() && formats_[i] == 1;
}

void ValueListStream::end_value() {
  if (this_) {
    if (value_.length() > kRecordedValueBytes) summarised_ = true;
    values_.push_back(value_.finish(&rendered_));
  }
  ++index_;
  state_ = index_ < count_ ? State::kLength : State::kDone;
}

size_t ValueListStream::feed(std::string_view chunk) {
  size_t used = 0;
  while (used < chunk.size()) {
    switch (state_) {
      case State::kDone:
        return used;
      case State::kFailed:
        return chunk.size();
      case State::kCount: {
        hdr_[hdr_have_++] = static_cast<uint8_t>(chunk[used++]);
        if (hdr_have_ < 2) break;
        hdr_have_ = 0;
        count_ = pgwire::load_be16(hdr_);
        state_ = count_ == 0 ? State::kDone : State::kLength;
        break;
      }
      case State::kLength: {
        hdr_[hdr_have_++] = static_cast<uint8_t>(chunk[used++]);
        if (hdr_have_ < 4) break;
        hdr_have_ = 0;
        auto len = static_cast<int32_t>(pgwire::load_be32(hdr_));
        if (len < -1) {
          state_ = State::kFailed;
          return chunk.size();
        }
        if (len == -1) {
          if (record_ && rendered_ < stop_after_) {
            values_.push_back(nullptr);
          } else if (record_) {
            summarised_ = true;  // the list is cut here
          }
          ++index_;
          state_ = index_ < count_ ? State::kLength : State::kDone;
          break;
        }
        if (static_cast<uint64_t>(len) > largest_length_ || largest_index_ < 0) {
          largest_length_ = static_cast<uint64_t>(len);
          largest_index_ = static_cast<int>(index_);
        }
        value_left_ = static_cast<uint64_t>(len);
        this_ = record_ && rendered_ < stop_after_;
        if (record_ && !this_) summarised_ = true;  // the list is cut here
        if (this_) {
          // Past the row's budget, long values keep no prefix and short ones are summarised
          // too (a row of many wide columns stays small in the recording).
          const bool spent = rendered_ >= kRecordedRowBytes;
          value_.start(binary(index_), spent ? 0 : kRecordedValueBytes,
                       spent ? 0 : kRecordedPrefixBytes);
        }
        if (value_left_ == 0) {
          end_value();
        } else {
          state_ = State::kValue;
        }
        break;
      }
      case State::kValue: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(value_left_, chunk.size() - used));
        if (this_) value_.update(chunk.substr(used, n));
        used += n;
        value_left_ -= n;
        if (value_left_ == 0) end_value();
        break;
      }
    }
  }
  return used;
}

// ---------------------------------------------------------------------------------------------
// RowReducer

void RowReducer::start(std::vector<bool> shrinkable, size_t cap, size_t unmasked_from,
                       size_t split_above) {
  shrinkable_ = std::move(shrinkable);
  cap_ = cap;
  unmasked_from_ = unmasked_from;
  split_above_ = split_above;
  split_len_ = 0;
  body_.clear();
  state_ = State::kCount;
  hdr_have_ = 0;
  count_ = 0;
  index_ = 0;
  value_left_ = 0;
  copying_ = false;
}

bool RowReducer::append(std::string_view bytes) {
  if (body_.size() + bytes.size() > cap_) {
    state_ = State::kFailed;
    body_.clear();
    body_.shrink_to_fit();
    return false;
  }
  body_.append(bytes);
  return true;
}

void RowReducer::next_value() {
  ++index_;
  state_ = index_ < count_ ? State::kLength : State::kDone;
}

size_t RowReducer::feed(std::string_view chunk) {
  size_t used = 0;
  while (used < chunk.size()) {
    switch (state_) {
      case State::kSplit:
        return used;
      case State::kDone:  // bytes after the last value: not a DataRow
      case State::kFailed:
        state_ = State::kFailed;
        return chunk.size();
      case State::kCount:
        hdr_[hdr_have_++] = static_cast<uint8_t>(chunk[used++]);
        if (hdr_have_ < 2) break;
        hdr_have_ = 0;
        count_ = pgwire::load_be16(hdr_);
        if (!append(std::string_view(reinterpret_cast<const char*>(hdr_), 2))) return chunk.size();
        state_ = count_ == 0 ? State::kDone : State::kLength;
        break;
      case State::kLength: {
        hdr_[hdr_have_++] = static_cast<uint8_t>(chunk[used++]);
        if (hdr_have_ < 4) break;
        hdr_have_ = 0;
        auto len = static_cast<int32_t>(pgwire::load_be32(hdr_));
        if (len < -1) {
          state_ = State::kFailed;
          return chunk.size();
        }
        if (len >= 0 && index_ >= unmasked_from_ && static_cast<size_t>(len) > split_above_) {
          split_len_ = static_cast<uint32_t>(len);
          state_ = State::kSplit;
          return used;
        }
        const bool shrink = len >= 0 && index_ < shrinkable_.size() && shrinkable_[index_];
        if (shrink) {
          static constexpr char kPlaceholder[] = {0, 0, 0, 1, 'x'};
          if (!append(std::string_view(kPlaceholder, sizeof(kPlaceholder)))) return chunk.size();
        } else if (!append(std::string_view(reinterpret_cast<const char*>(hdr_), 4))) {
          return chunk.size();
        }
        if (len <= 0) {
          next_value();
          break;
        }
        value_left_ = static_cast<uint64_t>(len);
        copying_ = !shrink;
        state_ = State::kValue;
        break;
      }
      case State::kValue: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(value_left_, chunk.size() - used));
        if (copying_ && !append(chunk.substr(used, n))) return chunk.size();
        used += n;
        value_left_ -= n;
        if (value_left_ == 0) next_value();
        break;
      }
    }
  }
  return used;
}

// ---------------------------------------------------------------------------------------------
// BindStream

void BindStream::start() {
  state_ = State::kPortal;
  failed_ = false;
  portal_.clear();
  statement_.clear();
  hdr_have_ = 0;
  format_count_ = 0;
  formats_.clear();
}

void BindStream::feed(std::string_view chunk) {
  size_t used = 0;
  while (used < chunk.size() && !failed_) {
    switch (state_) {
      case State::kPortal:
      case State::kStatement: {
        std::string& name = state_ == State::kPortal ? portal_ : statement_;
        size_t nul = chunk.find('\0', used);
        size_t end = nul == std::string_view::npos ? chunk.size() : nul;
        if (name.size() + (end - used) > kMaxBindNameBytes) {
          failed_ = true;
          return;
        }
        name.append(chunk.substr(used, end - used));
        used = end;
        if (nul != std::string_view::npos) {
          ++used;
          state_ = state_ == State::kPortal ? State::kStatement : State::kFormatCount;
        }
        break;
      }
      case State::kFormatCount:
        hdr_[hdr_have_++] = static_cast<uint8_t>(chunk[used++]);
        if (hdr_have_ < 2) break;
        hdr_have_ = 0;
        format_count_ = pgwire::load_be16(hdr_);
        if (format_count_ == 0) {
          values_.start(formats_, true, kRecordedParamBytes);
          state_ = State::kValues;
        } else {
          state_ = State::kFormats;
        }
        break;
      case State::kFormats:
        hdr_[hdr_have_++] = static_cast<uint8_t>(chunk[used++]);
        if (hdr_have_ < 2) break;
        hdr_have_ = 0;
        formats_.push_back(static_cast<int16_t>(pgwire::load_be16(hdr_)));
        if (formats_.size() == format_count_) {
          values_.start(formats_, true, kRecordedParamBytes);
          state_ = State::kValues;
        }
        break;
      case State::kValues:
        used += values_.feed(chunk.substr(used));
        if (values_.failed()) failed_ = true;
        if (values_.complete()) state_ = State::kTail;
        break;
      case State::kTail:
        return;  // result format codes: not recorded
    }
  }
}

}  // namespace pgwarden::session
