#include "controlplane/recording/record_fields.h"

#include <algorithm>
#include <charconv>
#include <cstring>

namespace pgwarden::recording {

namespace {

// Length of the well-formed UTF-8 sequence at p (Unicode Table 3-7: no overlongs, no
// surrogates, nothing above U+10FFFF), 0 when it is not one. REQUIRES: n > 0, p[0] >= 0x80.
size_t utf8_sequence(const unsigned char* p, size_t n) {
  const unsigned char c = p[0];
  auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i < n && p[i] >= lo && p[i] <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

// True when one of the 8 bytes of w is < 0x20, '"', '\\' or >= 0x80: the bytes a JSON string
// cannot copy blindly.
inline bool word_needs_care(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  auto has_zero = [](uint64_t v) { return ((v - kOnes) & ~v & kHigh) != 0; };
  if ((w & kHigh) != 0) return true;
  if (((w - 0x2020202020202020ULL) & kHigh) != 0) return true;  // a byte < 0x20 (no byte >= 0x80)
  return has_zero(w ^ (kOnes * '"')) || has_zero(w ^ (kOnes * '\\'));
}

void append_escape(std::string& out, unsigned char c) {
  switch (c) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\b':
      out += "\\b";
      return;
    case '\t':
      out += "\\t";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\r':
      out += "\\r";
      return;
    default: {
      static constexpr char kHex[] = "0123456789abcdef";
      const char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
      out.append(u, 6);
    }
  }
}

void append_int(std::string& out, int64_t v) {
  char b[24];
  auto r = std::to_chars(b, b + sizeof b, v);
  out.append(b, r.ptr);
}

void append_uint(std::string& out, uint64_t v) {
  char b[24];
  auto r = std::to_chars(b, b + sizeof b, v);
  out.append(b, r.ptr);
}

// What dump() writes for values this file does not serialise itself (floats, binary, discarded).
void append_dumped(std::string& out, const nlohmann::json& v) {
  out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

void append_canonical_string(std::string& out, std::string_view s) {
  const size_t mark = out.size();
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t run = 0;  // start of the bytes not yet copied
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (!word_needs_care(w)) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c >= 0x80) {
      const size_t len = utf8_sequence(p + i, n - i);
      if (len == 0) {
        // Invalid UTF-8: dump() decides how it is replaced (which bytes one U+FFFD stands
        // for); rare enough to pay for a copy.
        out.resize(mark);
        append_dumped(out, nlohmann::json(std::string(s)));
        return;
      }
      i += len;
      continue;
    }
    if (c < 0x20 || c == '"' || c == '\\') {
      out.append(s.data() + run, i - run);
      append_escape(out, c);
      run = ++i;
      continue;
    }
    ++i;
  }
  out.append(s.data() + run, n - run);
  out += '"';
}

void append_canonical(std::string& out, const nlohmann::json& value) {
  using value_t = nlohmann::json::value_t;
  switch (value.type()) {
    case value_t::null:
      out += "null";
      return;
    case value_t::boolean:
      out += value.get<bool>() ? "true" : "false";
      return;
    case value_t::number_integer:
      append_int(out, value.get<int64_t>());
      return;
    case value_t::number_unsigned:
      append_uint(out, value.get<uint64_t>());
      return;
    case value_t::string:
      append_canonical_string(out, value.get_ref<const std::string&>());
      return;
    case value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : value.get_ref<const nlohmann::json::array_t&>()) {
        if (!first) out += ',';
        first = false;
        append_canonical(out, e);
      }
      out += ']';
      return;
    }
    case value_t::object: {
      // object_t is a std::map: iterated in key order, which is the canonical order.
      out += '{';
      bool first = true;
      for (const auto& [k, v] : value.get_ref<const nlohmann::json::object_t&>()) {
        if (!first) out += ',';
        first = false;
        append_canonical_string(out, k);
        out += ':';
        append_canonical(out, v);
      }
      out += '}';
      return;
    }
    default:
      append_dumped(out, value);
      return;
  }
}

RecordFields RecordFields::from_json(const nlohmann::json& object) {
  RecordFields f;
  const auto& members = object.get_ref<const nlohmann::json::object_t&>();
  f.members_.reserve(members.size());
  f.buf_.reserve(64 * members.size() + 64);  // grown (rarely) by doubling beyond this
  for (const auto& [k, v] : members) f.add(k, v);
  return f;
}

size_t RecordFields::begin_member(std::string_view key) {
  if (members_.capacity() == 0) {
    // One allocation each for a typical record (a statement's 10-20 members, a few hundred
    // bytes) instead of one per doubling from nothing.
    members_.reserve(kTypicalMembers);
    buf_.reserve(kTypicalBytes);
  }
  if (!members_.empty() && sorted_ && !key_less(this->key(members_.back()), key)) sorted_ = false;
  Member m;
  m.key_off = static_cast<uint32_t>(buf_.size());
  m.key_len = static_cast<uint32_t>(key.size());
  buf_.append(key);
  m.text_off = static_cast<uint32_t>(buf_.size());
  append_canonical_string(buf_, key);
  buf_ += ':';
  m.value_off = static_cast<uint32_t>(buf_.size());
  members_.push_back(m);
  return members_.size() - 1;
}

void RecordFields::end_member(size_t index) {
  Member& m = members_[index];
  m.text_len = static_cast<uint32_t>(buf_.size() - m.text_off);
}

RecordFields& RecordFields::add_raw(std::string_view key, std::string_view json_text) {
  size_t i = begin_member(key);
  buf_.append(json_text);
  end_member(i);
  return *this;
}

RecordFields& RecordFields::add_canonical(std::string_view key, std::string_view json_text) {
  if (key == "rows") rows_text_off_ = -1;
  return add_raw(key, json_text);
}

RecordFields& RecordFields::add_rows(std::string_view array_text,
                                     const std::vector<uint32_t>& element_ends) {
  size_t i = begin_member("rows");
  const uint32_t base = static_cast<uint32_t>(buf_.size());
  rows_text_off_ = members_[i].text_off;
  rows_ends_.clear();
  rows_ends_.reserve(element_ends.size());
  for (uint32_t e : element_ends) rows_ends_.push_back(base + e);
  buf_.append(array_text);
  end_member(i);
  return *this;
}

RecordFields& RecordFields::add_int(std::string_view key, int64_t value) {
  size_t i = begin_member(key);
  append_int(buf_, value);
  end_member(i);
  return *this;
}

RecordFields& RecordFields::add_uint(std::string_view key, uint64_t value) {
  size_t i = begin_member(key);
  append_uint(buf_, value);
  end_member(i);
  return *this;
}

RecordFields& RecordFields::add(std::string_view key, std::string_view value) {
  size_t i = begin_member(key);
  append_canonical_string(buf_, value);
  end_member(i);
  return *this;
}

RecordFields& RecordFields::add(std::string_view key, std::nullptr_t) {
  return add_raw(key, "null");
}

RecordFields& RecordFields::add(std::string_view key, const nlohmann::json& value) {
  size_t i = begin_member(key);
  if (key == "rows" && value.is_array()) {
    rows_text_off_ = members_[i].text_off;
    rows_ends_.clear();
    rows_ends_.reserve(value.size());
    buf_ += '[';
    bool first = true;
    for (const auto& e : value.get_ref<const nlohmann::json::array_t&>()) {
      if (!first) buf_ += ',';
      first = false;
      append_canonical(buf_, e);
      rows_ends_.push_back(static_cast<uint32_t>(buf_.size()));
    }
    buf_ += ']';
  } else {
    if (key == "rows") rows_text_off_ = -1;
    append_canonical(buf_, value);
  }
  end_member(i);
  return *this;
}

bool RecordFields::has(std::string_view k) const {
  return std::any_of(members_.begin(), members_.end(),
                     [&](const Member& m) { return key(m) == k; });
}

int64_t RecordFields::rows_count() const {
  // Only when the array is what the record will hold: the last "rows" member.
  for (auto it = members_.rbegin(); it != members_.rend(); ++it) {
    if (key(*it) != "rows") continue;
    return static_cast<int64_t>(it->text_off) == rows_text_off_
               ? static_cast<int64_t>(rows_ends_.size())
               : -1;
  }
  return -1;
}

void RecordFields::cut_rows(int64_t keep) {
  auto it = std::find_if(members_.begin(), members_.end(), [&](const Member& m) {
    return static_cast<int64_t>(m.text_off) == rows_text_off_;
  });
  if (it == members_.end() || keep < 0 || keep >= static_cast<int64_t>(rows_ends_.size())) {
    return;
  }
  // The text is `"rows":[e1,e2,...]`; the kept elements end at rows_ends_[keep - 1].
  constexpr size_t kOpen = sizeof("\"rows\":[") - 1;
  const size_t end = keep == 0 ? it->text_off + kOpen : rows_ends_[keep - 1];
  rows_ends_.resize(static_cast<size_t>(keep));
  if (it->text_off + it->text_len == buf_.size()) {
    buf_.resize(end);
  } else {
    // Members follow it in the buffer: the cut array goes to the end instead.
    std::string kept = buf_.substr(it->text_off, end - it->text_off);
    const uint32_t moved = static_cast<uint32_t>(buf_.size()) - it->text_off;
    for (auto& e : rows_ends_) e += moved;
    it->text_off = static_cast<uint32_t>(buf_.size());
    it->value_off += moved;
    rows_text_off_ = it->text_off;
    buf_ += kept;
  }
  buf_ += ']';
  it->text_len = static_cast<uint32_t>(buf_.size() - it->text_off);
}

void RecordFields::clear() {
  buf_.clear();
  members_.clear();
  sorted_ = true;
  rows_text_off_ = -1;
  rows_ends_.clear();
}

void RecordFields::sort() {
  if (sorted_) return;
  // Insertion sort (stable, in place): a record has a few dozen members at most, mostly in
  // order already; std::stable_sort would allocate a buffer per record.
  for (size_t i = 1; i < members_.size(); ++i) {
    const Member m = members_[i];
    size_t j = i;
    for (; j > 0 && key_less(key(m), key(members_[j - 1])); --j) members_[j] = members_[j - 1];
    members_[j] = m;
  }
  // Keep the last of equal keys.
  size_t out = 0;
  for (size_t i = 0; i < members_.size(); ++i) {
    if (i + 1 < members_.size() && key(members_[i]) == key(members_[i + 1])) continue;
    members_[out++] = members_[i];
  }
  members_.resize(out);
  sorted_ = true;
}

std::string RecordFields::to_canonical() const {
  RecordFields copy = *this;
  copy.sort();
  std::string out = "{";
  for (size_t i = 0; i < copy.members_.size(); ++i) {
    if (i > 0) out += ',';
    out += copy.text(copy.members_[i]);
  }
  out += '}';
  return out;
}

}  // namespace pgwarden::recording
