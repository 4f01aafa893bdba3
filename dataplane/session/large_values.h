// Large values: how the session relays and records values of any size PostgreSQL accepts
// (up to 1 GB) without holding them whole.
//
// Recording. A recorded value (a result column, a COPY line, a bound parameter) up to
// kRecordedValueBytes is kept as it is (text as sent; binary or invalid UTF-8 as "\x<hex>").
// A longer value is kept as a summary computed while the value streams past:
//   {"length": <bytes>, "sha256": "<64 hex digits>", "prefix": <its first bytes, rendered as a
//    value>}
// with at most kRecordedPrefixBytes of prefix. Once a row has spent kRecordedRowBytes of
// rendered value text, its further long values are summarised with an empty prefix, so one
// recorded row stays far below the control-plane frame limit whatever the column count.
// `sha256` and `length` cover the value's bytes exactly as they crossed the wire (text format:
// the text; binary format: the binary representation; COPY: the CopyData bytes).
//
// Stream parsers. ValueListStream walks "Int16 count, count × (Int32 length (-1 = NULL),
// bytes)" — a DataRow body, the parameter part of a Bind — fed in chunks of any size
// (split-invariant: the same answer fed whole or byte by byte). BindStream walks a whole Bind
// body the same way. Both keep memory bounded: names are capped (kMaxBindNameBytes), values are
// never buffered beyond kRecordedValueBytes.
//
// Thread-safety: none; per session.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace pgwarden::session {

inline constexpr size_t kRecordedValueBytes = 16 * 1024;  // kept whole up to this
inline constexpr size_t kRecordedPrefixBytes = 1024;      // prefix of a summarised value
inline constexpr size_t kRecordedRowBytes = 256 * 1024;   // rendered value text per row
inline constexpr size_t kMaxBindNameBytes = 64 * 1024;    // portal / statement name in a Bind
// Parameter text recorded per streamed Bind (as ExecutionLedger::kMaxParamBytes): later
// parameters are left out and the record says params_truncated.
inline constexpr size_t kRecordedParamBytes = 64 * 1024;

// Hex SHA-256 of `data` (for tests and callers that hold a value whole).
std::string sha256_hex(std::string_view data);

// One value as a recording keeps it, fed in chunks.
class ValueRecorder {
 public:
  ValueRecorder();
  ~ValueRecorder();
  ValueRecorder(const ValueRecorder&) = delete;
  ValueRecorder& operator=(const ValueRecorder&) = delete;

  // Starts a value. `whole_cap`: kept whole up to this many bytes; `prefix_cap`: prefix of the
  // summary otherwise.
  void start(bool binary, size_t whole_cap, size_t prefix_cap);
  void update(std::string_view chunk);
  uint64_t length() const { return length_; }
  // The value itself (≤ whole_cap) or its summary; adds the rendered size to `*bytes`.
  nlohmann::json finish(size_t* bytes);

 private:
  bool binary_ = false;
  size_t whole_cap_ = 0;
  size_t prefix_cap_ = 0;
  std::string head_;  // the first max(whole_cap, prefix_cap) bytes
  uint64_t length_ = 0;
  EVP_MD_CTX* sha_ = nullptr;  // started once the value is longer than whole_cap
  bool hashing_ = false;
};

// Walks a value list (see the file comment). `formats`: format codes as in Bind (none: all text;
// one: for every value; else one per value) or per DataRow column.
class ValueListStream {
 public:
  // `record`: render values (else only lengths are tracked). Once `stop_after` bytes of value
  // text are rendered, later values are left out of take_values() (summarised() says so).
  void start(std::vector<int16_t> formats, bool record, size_t stop_after = SIZE_MAX);
  // Consumes the bytes of `chunk` that belong to the list and returns how many (fewer than
  // chunk.size() once the list is complete). Malformed input sets failed() and consumes all.
  size_t feed(std::string_view chunk);
  bool complete() const { return state_ == State::kDone; }
  bool failed() const { return state_ == State::kFailed; }
  // Rendered values (record mode), null for NULL.
  nlohmann::json take_values() { return std::exchange(values_, nlohmann::json::array()); }
  size_t rendered_bytes() const { return rendered_; }
  bool summarised() const { return summarised_; }  // some value was cut to its summary
  // The longest value seen so far: its index and length (-1 when none).
  int largest_index() const { return largest_index_; }
  uint64_t largest_length() const { return largest_length_; }

 private:
  enum class State { kCount, kLength, kValue, kDone, kFailed };
  bool binary(size_t i) const;
  void end_value();

  State state_ = State::kDone;
  std::vector<int16_t> formats_;
  bool record_ = false;
  size_t stop_after_ = SIZE_MAX;
  bool this_ = false;  // the current value is recorded
  uint8_t hdr_[4] = {0, 0, 0, 0};
  size_t hdr_have_ = 0;
  uint32_t count_ = 0;
  uint32_t index_ = 0;
  uint64_t value_left_ = 0;
  ValueRecorder value_;
  nlohmann::json values_ = nlohmann::json::array();
  size_t rendered_ = 0;
  bool summarised_ = false;
  int largest_index_ = -1;
  uint64_t largest_length_ = 0;
};

// Rebuilds a DataRow body fed in chunks, replacing every non-NULL value of a column whose mask
// does not depend on the value (masking::mask_ignores_value) by a one-byte placeholder and
// copying everything else, up to `cap` bytes: a row too large to mask whole can then be masked
// exactly as the whole row would have been, as long as its other values fit.
//
// Split: when a value longer than `split_above` starts in a column from which on no column is
// masked (`unmasked_from`: the first such index), the rebuild stops before that value (split()):
// body() then holds the count and the columns before it, and the caller masks those and
// streams the rest of the row (that value's bytes onward) unchanged.
class RowReducer {
 public:
  void start(std::vector<bool> shrinkable, size_t cap, size_t unmasked_from = SIZE_MAX,
             size_t split_above = SIZE_MAX);
  // Returns the bytes of `chunk` consumed: all of them, unless the row split inside it.
  size_t feed(std::string_view chunk);
  // The whole body was fed, was well formed and fits the cap.
  bool ok() const { return state_ == State::kDone; }
  bool split() const { return state_ == State::kSplit; }
  uint32_t split_index() const { return index_; }       // the column at the split
  uint32_t split_length() const { return split_len_; }  // its value's length
  uint32_t count() const { return count_; }
  const std::string& body() const { return body_; }

 private:
  enum class State { kCount, kLength, kValue, kDone, kSplit, kFailed };
  void next_value();
  bool append(std::string_view bytes);

  State state_ = State::kDone;
  std::vector<bool> shrinkable_;
  size_t cap_ = 0;
  std::string body_;
  uint8_t hdr_[4] = {0, 0, 0, 0};
  size_t hdr_have_ = 0;
  uint32_t count_ = 0;
  uint32_t index_ = 0;
  uint64_t value_left_ = 0;
  bool copying_ = false;  // the current value is copied (else dropped for its placeholder)
  size_t unmasked_from_ = SIZE_MAX;
  size_t split_above_ = SIZE_MAX;
  uint32_t split_len_ = 0;
};

// Walks a Bind body fed in chunks: portal, statement, parameter formats, parameters (recorded
// with ValueListStream, at most kRecordedParamBytes of them), result formats.
class BindStream {
 public:
  void start();
  void feed(std::string_view chunk);
  // True once the whole body was fed and it was well formed.
  bool ok() const { return state_ == State::kTail && !failed_; }
  const std::string& portal() const { return portal_; }
  const std::string& statement() const { return statement_; }
  nlohmann::json take_params() { return values_.take_values(); }
  bool params_summarised() const { return values_.summarised(); }

 private:
  enum class State { kPortal, kStatement, kFormatCount, kFormats, kValues, kTail };
  State state_ = State::kPortal;
  bool failed_ = false;
  std::string portal_;
  std::string statement_;
  uint8_t hdr_[2] = {0, 0};
  size_t hdr_have_ = 0;
  uint32_t format_count_ = 0;
  std::vector<int16_t> formats_;
  ValueListStream values_;
};

}  // namespace pgwarden::session
