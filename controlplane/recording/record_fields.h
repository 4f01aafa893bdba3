// Canonical JSON without building trees: the serialiser the Recorder writes records with, and
// RecordFields, the pre-serialised event fields a caller can hand to Recorder::append instead
// of a nlohmann::json object.
//
// Canonical bytes are defined by canonical_bytes() in recording_file.h (nlohmann::json::dump():
// sorted keys, no spaces, UTF-8 kept as is, invalid UTF-8 replaced by U+FFFD); every function
// here produces exactly those bytes (record_fields_test.cc compares them with dump() over
// generated values), so a record written from RecordFields verifies like one written from a
// tree.
//
// Thread-safety: RecordFields is a value; distinct objects may be used from distinct threads.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace pgwarden::recording {

// Canonical key order (std::string's, bytewise), deciding most comparisons on the first byte.
inline bool key_less(std::string_view a, std::string_view b) {
  if (!a.empty() && !b.empty() && a[0] != b[0]) {
    return static_cast<unsigned char>(a[0]) < static_cast<unsigned char>(b[0]);
  }
  return a < b;
}

// Appends the canonical bytes of `value` (any JSON value) to `out`.
void append_canonical(std::string& out, const nlohmann::json& value);
// Appends `s` as a canonical JSON string (quoted, escaped; invalid UTF-8 replaced as dump()
// replaces it).
void append_canonical_string(std::string& out, std::string_view s);

// The members of one record's fields object, each already serialised. Members may be added in
// any order; a key added twice keeps its last value (as assignment into a JSON object does).
// The Recorder sorts them and merges its envelope (seq, ts, session_id, kind, prev, hash: any
// member with one of those keys is dropped) when it writes the record.
//
// A "rows" member that is an array remembers where each element ends, so that the Recorder can
// cut it to the row cap without parsing.
class RecordFields {
 public:
  RecordFields() = default;
  // REQUIRES: object.is_object().
  static RecordFields from_json(const nlohmann::json& object);

  RecordFields& add(std::string_view key, std::string_view value);
  RecordFields& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view(value));
  }
  RecordFields& add(std::string_view key, const char* value) {
    return add(key, std::string_view(value));
  }
  RecordFields& add(std::string_view key, std::nullptr_t);
  RecordFields& add(std::string_view key, const nlohmann::json& value);
  // A member whose value is already canonical JSON text (the value() of another RecordFields'
  // member, a rendering by append_canonical...). REQUIRES: `json_text` is one canonical value.
  RecordFields& add_canonical(std::string_view key, std::string_view json_text);
  // The "rows" member from its canonical array text `[e1,e2,...]` and where each element ends
  // (offsets into `array_text` just past the element), as add("rows", array) would make it.
  // REQUIRES: the text and the ends describe one canonical array.
  RecordFields& add_rows(std::string_view array_text, const std::vector<uint32_t>& element_ends);
  template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
  RecordFields& add(std::string_view key, T value) {
    if constexpr (std::is_same_v<T, bool>) {
      return add_raw(key, value ? std::string_view("true") : std::string_view("false"));
    } else if constexpr (std::is_signed_v<T>) {
      return add_int(key, static_cast<int64_t>(value));
    } else {
      return add_uint(key, static_cast<uint64_t>(value));
    }
  }

  // Removes every member; the buffers keep their capacity (a reused scratch object).
  void clear();
  bool empty() const { return members_.empty(); }
  size_t size() const { return members_.size(); }
  bool has(std::string_view key) const;
  // Elements of the (last added) "rows" member; -1 when there is none or it is not an array.
  int64_t rows_count() const;
  // Keeps the first `keep` elements of the "rows" member. REQUIRES: 0 <= keep <= rows_count().
  void cut_rows(int64_t keep);
  // Bytes held (the serialised members and their keys).
  size_t byte_size() const { return buf_.size(); }

  // The canonical JSON object of the fields (what from_json() was given, re-serialised).
  std::string to_canonical() const;

  // One member: `"key":value` at text_off..text_off+text_len of the buffer, its raw key at
  // key_off. Sorted by key (the last of equal keys is the one kept) by sort().
  struct Member {
    uint32_t key_off = 0;
    uint32_t key_len = 0;
    uint32_t text_off = 0;
    uint32_t text_len = 0;
    uint32_t value_off = 0;  // where the value starts (after `"key":`)
  };
  // Sorts the members by key and drops all but the last of equal keys; idempotent.
  void sort();
  const std::vector<Member>& members() const { return members_; }
  std::string_view key(const Member& m) const { return {buf_.data() + m.key_off, m.key_len}; }
  std::string_view text(const Member& m) const { return {buf_.data() + m.text_off, m.text_len}; }
  // The member's canonical value alone.
  std::string_view value(const Member& m) const {
    return {buf_.data() + m.value_off, m.text_off + m.text_len - m.value_off};
  }

 private:
  RecordFields& add_raw(std::string_view key, std::string_view json_text);
  RecordFields& add_int(std::string_view key, int64_t value);
  RecordFields& add_uint(std::string_view key, uint64_t value);
  // Starts a member: stores the key and `"key":`; the value follows in buf_. Returns its index.
  size_t begin_member(std::string_view key);
  void end_member(size_t index);

  // Reserved at the first member.
  static constexpr size_t kTypicalMembers = 24;
  static constexpr size_t kTypicalBytes = 512;

  std::string buf_;
  std::vector<Member> members_;
  bool sorted_ = true;
  // The last "rows" member that is an array: its text_off (-1: none) and where each element
  // ends (offset in buf_ just past the element).
  int64_t rows_text_off_ = -1;
  std::vector<uint32_t> rows_ends_;
};

}  // namespace pgwarden::recording
