#include "controlplane/recording/recording_file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>

#include "controlplane/recording/recorder.h"

namespace pgwarden::recording {

namespace fs = std::filesystem;

std::string canonical_bytes(const nlohmann::json& record) {
  return record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// Fetched once: EVP_sha256() would be looked up again (under a lock) by every EVP_DigestInit.
const EVP_MD* sha256_md() {
  static const EVP_MD* md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return fetched != nullptr ? fetched : EVP_sha256();
  }();
  return md;
}

}  // namespace

ChainHasher::ChainHasher() : ctx_(EVP_MD_CTX_new()) {}
ChainHasher::~ChainHasher() { EVP_MD_CTX_free(ctx_); }

void ChainHasher::begin(std::string_view prev_hex) {
  EVP_DigestInit_ex2(ctx_, sha256_md(), nullptr);
  EVP_DigestUpdate(ctx_, prev_hex.data(), prev_hex.size());
}

void ChainHasher::update(std::string_view part) {
  EVP_DigestUpdate(ctx_, part.data(), part.size());
}

void ChainHasher::finish_hex(char* out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_, md, &n);
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned int i = 0; i < n && i < 32; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 15];
  }
}

std::string chain_hash(std::string_view prev_hex, std::string_view canonical) {
  thread_local ChainHasher hasher;
  hasher.begin(prev_hex);
  hasher.update(canonical);
  std::string out(64, '0');
  hasher.finish_hex(out.data());
  return out;
}

namespace {

// Checks one line against the chain; empty reason = good.
std::string check_line(const std::string& line, uint64_t expected_seq, const std::string& prev,
                       nlohmann::json* record, std::string* hash) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return "malformed json";
  auto h = j.find("hash");
  auto p = j.find("prev");
  auto s = j.find("seq");
  if (h == j.end() || !h->is_string() || p == j.end() || !p->is_string() || s == j.end() ||
      !s->is_number_unsigned()) {
    return "missing seq, prev or hash";
  }
  *hash = h->get<std::string>();
  if (s->get<uint64_t>() != expected_seq) return "seq gap";
  if (p->get<std::string>() != prev) return "prev mismatch";
  j.erase("hash");
  if (chain_hash(prev, canonical_bytes(j)) != *hash) return "hash mismatch";
  *record = std::move(j);
  return {};
}

}  // namespace

Result<std::vector<nlohmann::json>> read_recording(const std::string& path,
                                                   VerifyReport* report_out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open recording " + path);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return unavailable("cannot read recording " + path);
  VerifyReport report;
  std::vector<nlohmann::json> records;
  std::string prev(kGenesisHash);
  size_t pos = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) {
      report.torn_tail = true;
      report.torn_bytes = data.size() - pos;
      break;
    }
    std::string line = data.substr(pos, nl - pos);
    pos = nl + 1;
    nlohmann::json rec;
    std::string hash;
    std::string reason = check_line(line, report.records + 1, prev, &rec, &hash);
    if (!reason.empty()) {
      report.ok = false;
      report.bad_seq = report.records + 1;
      report.reason = std::move(reason);
      break;
    }
    if (!records.empty() && records.back().value("kind", "") == "seal") {
      report.ok = false;
      report.bad_seq = report.records + 1;
      report.reason = "record after seal";
      break;
    }
    if (rec.value("kind", "") == "seal" &&
        (rec.value("records", uint64_t{0}) != report.records || rec.value("head", "") != prev)) {
      report.ok = false;
      report.bad_seq = report.records + 1;
      report.reason = "bad seal";
      break;
    }
    rec["hash"] = hash;
    records.push_back(std::move(rec));
    prev = std::move(hash);
    ++report.records;
  }
  report.last_hash = report.records > 0 ? prev : std::string();
  report.sealed = report.ok && !records.empty() && records.back().value("kind", "") == "seal";
  if (report_out != nullptr) *report_out = report;
  return records;
}

Result<RecordingTail> read_recording_tail(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return not_found("cannot open recording " + path);
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return unavailable("cannot stat recording " + path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  // Read backwards in blocks until the last complete line and the newline before it (or the
  // start of the file) are in `buf`, which holds the file's bytes [start, size).
  constexpr uint64_t kBlock = 64 << 10;
  std::string buf;
  uint64_t start = size;
  auto read_more = [&]() -> bool {
    const uint64_t n = std::min(kBlock, start);
    std::string block(n, '\0');
    uint64_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd, block.data() + done, n - done, static_cast<off_t>(start - n + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      done += static_cast<uint64_t>(r);
    }
    start -= n;
    buf.insert(0, block);
    return true;
  };
  RecordingTail tail;
  size_t last_nl = std::string::npos;  // in buf: the newline that ends the last complete line
  while (true) {
    last_nl = buf.rfind('\n');
    if (last_nl != std::string::npos || start == 0) break;
    if (!read_more()) return unavailable("cannot read recording " + path);
  }
  if (last_nl == std::string::npos) {  // no complete line at all
    tail.torn_tail = size > 0;
    tail.torn_bytes = size;
    return tail;
  }
  tail.good_bytes = start + last_nl + 1;
  tail.torn_bytes = size - tail.good_bytes;
  tail.torn_tail = tail.torn_bytes > 0;
  size_t line_start = std::string::npos;
  while (true) {
    size_t prev_nl = last_nl == 0 ? std::string::npos : buf.rfind('\n', last_nl - 1);
    if (prev_nl != std::string::npos) {
      line_start = prev_nl + 1;
      break;
    }
    if (start == 0) {
      line_start = 0;
      break;
    }
    const size_t before = buf.size();
    if (!read_more()) return unavailable("cannot read recording " + path);
    last_nl += buf.size() - before;
  }
  auto j = nlohmann::json::parse(buf.begin() + static_cast<long>(line_start),
                                 buf.begin() + static_cast<long>(last_nl), nullptr, false);
  auto fail = [&](std::string why) {
    tail.ok = false;
    tail.reason = std::move(why);
    return tail;
  };
  if (j.is_discarded() || !j.is_object()) return fail("malformed json");
  auto h = j.find("hash");
  auto p = j.find("prev");
  auto s = j.find("seq");
  if (h == j.end() || !h->is_string() || p == j.end() || !p->is_string() || s == j.end() ||
      !s->is_number_unsigned() || s->get<uint64_t>() == 0) {
    return fail("missing seq, prev or hash");
  }
  std::string hash = h->get<std::string>();
  std::string prev = p->get<std::string>();
  j.erase("hash");
  if (chain_hash(prev, canonical_bytes(j)) != hash) return fail("hash mismatch");
  tail.records = s->get<uint64_t>();
  tail.last_hash = std::move(hash);
  tail.last_kind = j.value("kind", "");
  tail.last = std::move(j);
  return tail;
}

nlohmann::json VerifyReport::to_json() const {
  nlohmann::json j{
      {"ok", ok}, {"records", records}, {"torn_tail", torn_tail}, {"last_hash", last_hash}};
  if (!ok) {
    j["bad_seq"] = bad_seq;
    j["reason"] = reason;
  }
  if (torn_tail) j["torn_bytes"] = torn_bytes;
  j["sealed"] = sealed;
  if (!state.empty()) {
    j["state"] = state;
    j["detail"] = detail;
    j["gaps"] = gaps;
    j["missing_records"] = missing_records;
    j["redelivered"] = redelivered;
  }
  if (checkpoint) j["checkpoint_seq"] = checkpoint->seq;
  return j;
}

Result<Checkpoint> read_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("no recording checkpoint " + path);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto j = nlohmann::json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("sessions") || !j["sessions"].is_object()) {
    return invalid_argument("recording checkpoint " + path + " cannot be parsed");
  }
  Checkpoint cp;
  cp.written_ms = j.value("written_ms", int64_t{0});
  for (const auto& [id, h] : j["sessions"].items()) {
    if (!h.is_object()) continue;
    cp.heads[id] = ChainHead{h.value("seq", uint64_t{0}), h.value("hash", std::string()),
                             h.value("sealed", false)};
  }
  return cp;
}

uint64_t redelivered_records(const std::vector<nlohmann::json>& records) {
  auto same = [](const nlohmann::json& a, const nlohmann::json& b) {
    if (a.size() != b.size()) return false;
    for (const auto& [k, v] : a.items()) {
      if (k == "seq" || k == "ts" || k == "prev" || k == "hash") continue;
      auto o = b.find(k);
      if (o == b.end() || *o != v) return false;
    }
    return true;
  };
  uint64_t total = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const nlohmann::json& r = records[i];
    if (r.value("kind", "") != "session_resumed" ||
        r.value("reason", "") != "control plane restart") {
      continue;
    }
    size_t post = i + 1;
    if (post < records.size() && records[post].value("kind", "") == "recording_gap") ++post;
    // The longest run before the marker that the records after it repeat.
    size_t k = std::min({i, records.size() - post, kMaxRedelivered});
    for (; k > 0; --k) {
      bool all = true;
      for (size_t j = 0; j < k && all; ++j) all = same(records[i - k + j], records[post + j]);
      if (all) break;
    }
    total += k;
  }
  return total;
}

Result<VerifyReport> verify_session(const std::string& path, const Checkpoint* checkpoint,
                                    std::optional<bool> open_in_live_cp) {
  VerifyReport report;
  auto records = read_recording(path, &report);
  if (!records.is_ok()) return records.status();
  const std::string id = fs::path(path).stem().string();
  if (checkpoint != nullptr) {
    if (auto it = checkpoint->heads.find(id); it != checkpoint->heads.end()) {
      report.checkpoint = it->second;
    }
  }
  auto n = [](uint64_t v) { return std::to_string(v); };
  for (const auto& r : *records) {
    if (r.value("kind", "") != "recording_gap") continue;
    ++report.gaps;
    report.missing_records += r.value("records", uint64_t{0});
  }
  if (!report.ok) {
    report.state = "tampered";
    report.detail = "the hash chain breaks at seq " + n(report.bad_seq) + " (" + report.reason +
                    "); " + n(report.records) + " records before it verified";
    return report;
  }
  if (report.checkpoint) {
    const ChainHead& h = *report.checkpoint;
    if (report.records < h.seq) {
      report.ok = false;
      report.bad_seq = report.records + 1;
      report.reason = "truncated";
      report.state = "truncated";
      report.detail = "the recording ends at seq " + n(report.records) +
                      " but the checkpoint recorded seq " + n(h.seq) + ": " +
                      n(h.seq - report.records) + " records were cut off the end";
      return report;
    }
    if (h.seq > 0 && (*records)[h.seq - 1].value("hash", "") != h.hash) {
      report.ok = false;
      report.bad_seq = h.seq;
      report.reason = "checkpoint mismatch";
      report.state = "tampered";
      report.detail = "record seq " + n(h.seq) + " differs from the checkpointed chain head";
      return report;
    }
    if (h.sealed && !report.sealed) {
      report.ok = false;
      report.bad_seq = report.records + 1;
      report.reason = "truncated";
      report.state = "truncated";
      report.detail = "the checkpoint says the session was sealed but the seal is missing";
      return report;
    }
  }
  if (report.sealed) {
    report.state = "sealed";
    report.detail = "sealed after " + n(report.records - 1) + " records; chain intact";
  } else if (open_in_live_cp.value_or(false)) {
    report.state = "open";
    report.detail = "still open in the running pgwarden-cp; chain intact so far";
  } else {
    report.state = "unsealed";
    report.detail =
        open_in_live_cp.has_value()
            ? "never sealed and not open in the running pgwarden-cp: it ended in a crash"
            : "never sealed: it ended in a crash or is still open (ask the cp without "
              "--state-dir to tell)";
    if (report.torn_tail) report.detail += "; a torn last line was ignored";
    if (!report.checkpoint) report.detail += "; no checkpointed head to compare the end with";
  }
  if (report.gaps > 0) {
    report.detail += "; " + n(report.gaps) + " gap records say " + n(report.missing_records) +
                     " records could not be recorded (see replay)";
  }
  report.redelivered = redelivered_records(*records);
  if (report.redelivered > 0) {
    report.detail += "; " + n(report.redelivered) +
                     " records after a control-plane restart repeat the records just before it "
                     "(delivered again: the control plane crashed after writing them)";
  }
  return report;
}

Result<VerifyReport> verify_recording(const std::string& path) {
  VerifyReport report;
  auto records = read_recording(path, &report);
  if (!records) return records.status();
  return report;
}

Result<std::vector<RecordingSummary>> list_recordings(const std::string& dir) {
  std::error_code ec;
  std::vector<RecordingSummary> out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file() || e.path().extension() != ".jsonl") continue;
    std::string id = e.path().stem().string();
    if (!valid_session_id(id)) continue;
    RecordingSummary s;
    s.session_id = id;
    s.path = e.path().string();
    s.size_bytes = e.file_size(ec);
    VerifyReport report;
    auto records = read_recording(s.path, &report);
    if (!records) continue;
    s.verified = report.ok;
    for (const auto& r : *records) {
      const std::string kind = r.value("kind", "");
      if (kind == "session_start") {
        s.identity = r.value("identity", "");
        s.target = r.value("target", "");
        s.start_ms = r.value("ts", int64_t{0});
      } else if (kind == "statement") {
        ++s.statements;
      } else if (kind == "session_end") {
        s.end_ms = r.value("ts", int64_t{0});
      }
    }
    if (s.start_ms == 0) {
      struct stat st;
      if (::stat(s.path.c_str(), &st) == 0) s.start_ms = int64_t{st.st_mtime} * 1000;
    }
    out.push_back(std::move(s));
  }
  if (ec) return unavailable("cannot list recordings in " + dir + ": " + ec.message());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.start_ms, a.session_id) < std::tie(b.start_ms, b.session_id);
  });
  return out;
}

Result<std::vector<std::string>> apply_retention(const std::string& dir,
                                                 const RetentionPolicy& policy, int64_t now_ms,
                                                 const std::set<std::string>& active) {
  auto all = list_recordings(dir);
  if (!all) return all.status();
  std::vector<std::string> deleted;
  uint64_t total = 0;
  for (const auto& s : *all) total += s.size_bytes;
  auto remove = [&](const RecordingSummary& s) -> Status {
    std::error_code ec;
    fs::remove(s.path, ec);
    if (ec) return unavailable("cannot delete " + s.path + ": " + ec.message());
    total -= s.size_bytes;
    deleted.push_back(s.session_id);
    return Status::ok();
  };
  const int64_t max_age_ms = int64_t{policy.max_age_days} * 86'400'000;
  std::vector<const RecordingSummary*> kept;
  for (const auto& s : *all) {
    if (active.count(s.session_id) == 0 && policy.max_age_days > 0 &&
        s.start_ms < now_ms - max_age_ms) {
      PGW_RETURN_IF_ERROR(remove(s));
    } else {
      kept.push_back(&s);
    }
  }
  for (const RecordingSummary* s : kept) {
    if (policy.max_total_bytes == 0 || total <= policy.max_total_bytes) break;
    if (active.count(s->session_id) != 0) continue;
    PGW_RETURN_IF_ERROR(remove(*s));
  }
  return deleted;
}

}  // namespace pgwarden::recording
