#include "rules/matcher.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "rules/validators.h"

namespace pgwarden::rules {

struct CompiledRuleSetAccess {
  static std::shared_ptr<CompiledRuleSet> make() {
    return std::shared_ptr<CompiledRuleSet>(new CompiledRuleSet());
  }
};

namespace {

constexpr int kViews = 3;
constexpr char kCacheMagic[8] = {'P', 'G', 'W', 'H', 'S', 'D', 'B', '1'};
constexpr size_t kMaxCacheFileBytes = size_t{1} << 31;

std::atomic<uint64_t> g_next_generation{1};

// One Hyperscan scratch per thread, grown to fit every set this thread has scanned with. A
// scratch only grows, so once sized for a set it stays valid for it; the generations it is
// known to fit are remembered so that a thread serving sessions with different sets does not
// call hs_alloc_scratch on every scan.
struct ThreadScratch {
  hs_scratch_t* scratch = nullptr;
  std::array<uint64_t, 8> fits{};
  size_t next = 0;
  ~ThreadScratch() {
    if (scratch != nullptr) hs_free_scratch(scratch);
  }
};
thread_local ThreadScratch t_scratch;

hs_scratch_t* scratch_for(hs_database_t* const* dbs, uint64_t generation) {
  for (uint64_t g : t_scratch.fits) {
    if (g == generation) return t_scratch.scratch;
  }
  for (int v = 0; v < kViews; ++v) {
    if (dbs[v] != nullptr && hs_alloc_scratch(dbs[v], &t_scratch.scratch) != HS_SUCCESS) {
      return nullptr;
    }
  }
  t_scratch.fits[t_scratch.next] = generation;
  t_scratch.next = (t_scratch.next + 1) % t_scratch.fits.size();
  return t_scratch.scratch;
}

// Rule indices reported by one hs_scan; a small inline buffer covers the usual case.
struct IdCollector {
  std::array<uint32_t, 32> inline_ids;
  size_t count = 0;
  std::vector<uint32_t> overflow;

  void add(uint32_t id) {
    if (count < inline_ids.size()) {
      inline_ids[count++] = id;
    } else {
      overflow.push_back(id);
    }
  }
  template <typename F>
  void for_each(F&& f) const {
    for (size_t k = 0; k < count; ++k) f(inline_ids[k]);
    for (uint32_t id : overflow) f(id);
  }
};

int on_rule_match(unsigned int id, unsigned long long, unsigned long long, unsigned int,
                  void* ctx) {
  static_cast<IdCollector*>(ctx)->add(id);
  return 0;
}

struct RawDetect {
  uint32_t id;
  uint32_t begin;
  uint32_t end;
};

int on_detect_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int,
                    void* ctx) {
  static_cast<std::vector<RawDetect>*>(ctx)->push_back(
      {id, static_cast<uint32_t>(from), static_cast<uint32_t>(to)});
  return 0;
}

std::string hs_error_name(hs_error_t err) {
  switch (err) {
    case HS_NOMEM:
      return "out of memory";
    case HS_SCRATCH_IN_USE:
      return "scratch in use";
    case HS_DB_MODE_ERROR:
      return "database mode mismatch";
    case HS_DB_PLATFORM_ERROR:
      return "database built for another platform";
    case HS_INVALID:
      return "invalid parameter";
    default:
      return "hyperscan error " + std::to_string(err);
  }
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  if (size < 0 || static_cast<size_t>(size) > kMaxCacheFileBytes) return false;
  out.resize(static_cast<size_t>(size));
  in.seekg(0);
  return static_cast<bool>(in.read(out.data(), size));
}

// Cache file: magic, u32 version length + hs_version(), then per view u64 length + bytes.
bool load_serialized(std::string_view bytes, hs_database_t* (&dbs)[kViews]) {
  std::string_view rest = bytes;
  auto take = [&rest](size_t n) -> std::string_view {
    if (rest.size() < n) return {};
    std::string_view head = rest.substr(0, n);
    rest.remove_prefix(n);
    return head;
  };
  if (take(sizeof(kCacheMagic)) != std::string_view(kCacheMagic, sizeof(kCacheMagic))) {
    return false;
  }
  uint32_t version_len = 0;
  std::string_view field = take(sizeof(version_len));
  if (field.size() != sizeof(version_len)) return false;
  std::memcpy(&version_len, field.data(), sizeof(version_len));
  if (version_len > 256 || take(version_len) != std::string_view(hs_version())) return false;
  hs_database_t* loaded[kViews] = {nullptr, nullptr, nullptr};
  bool ok = true;
  for (int v = 0; v < kViews && ok; ++v) {
    uint64_t len = 0;
    field = take(sizeof(len));
    if (field.size() != sizeof(len)) {
      ok = false;
      break;
    }
    std::memcpy(&len, field.data(), sizeof(len));
    if (len == 0) continue;
    std::string_view db = take(len);
    ok =
        db.size() == len && hs_deserialize_database(db.data(), db.size(), &loaded[v]) == HS_SUCCESS;
  }
  ok = ok && rest.empty();
  for (int v = 0; v < kViews; ++v) {
    if (ok) {
      dbs[v] = loaded[v];
    } else if (loaded[v] != nullptr) {
      hs_free_database(loaded[v]);
    }
  }
  return ok;
}

bool load_cached(const std::string& path, hs_database_t* (&dbs)[kViews]) {
  std::string bytes;
  return read_file(path, bytes) && load_serialized(bytes, dbs);
}

// The cache file format of `dbs`; false when Hyperscan cannot serialize one.
bool serialize_dbs(hs_database_t* const (&dbs)[kViews], std::string& out) {
  out.assign(kCacheMagic, sizeof(kCacheMagic));
  std::string_view version = hs_version();
  uint32_t version_len = static_cast<uint32_t>(version.size());
  out.append(reinterpret_cast<const char*>(&version_len), sizeof(version_len));
  out.append(version);
  for (int v = 0; v < kViews; ++v) {
    uint64_t len = 0;
    char* bytes = nullptr;
    size_t size = 0;
    if (dbs[v] != nullptr) {
      if (hs_serialize_database(dbs[v], &bytes, &size) != HS_SUCCESS) return false;
      len = size;
    }
    out.append(reinterpret_cast<const char*>(&len), sizeof(len));
    if (bytes != nullptr) {
      out.append(bytes, size);
      std::free(bytes);
    }
  }
  return true;
}

// Best effort: a cache that cannot be written only costs the next start a compile.
void store_cached(const std::string& dir, const std::string& path,
                  hs_database_t* const (&dbs)[kViews]) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string out;
  if (!serialize_dbs(dbs, out)) return;
  std::string tmp = path + ".tmp." + std::to_string(g_next_generation.fetch_add(1));
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f.write(out.data(), static_cast<std::streamsize>(out.size()))) {
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp, ec);
}

}  // namespace

std::string_view verdict_name(Verdict verdict) {
  switch (verdict) {
    case Verdict::kAllow:
      return "allow";
    case Verdict::kDeny:
      return "deny";
    case Verdict::kApprove:
      return "approve";
  }
  return "?";
}

Result<std::shared_ptr<const CompiledRuleSet>> CompiledRuleSet::compile(
    RuleSet rules, const CompileOptions& options) {
  auto start = std::chrono::steady_clock::now();
  std::shared_ptr<CompiledRuleSet> set = CompiledRuleSetAccess::make();
  set->rules_ = std::move(rules);
  set->generation_ = g_next_generation.fetch_add(1);
  const std::vector<Rule>& all = set->rules_.rules();

  std::string cache_path;
  if (!options.serialized.empty()) {
    set->loaded_from_cache_ = load_serialized(options.serialized, set->dbs_);
  }
  if (!options.cache_dir.empty() && !set->loaded_from_cache_) {
    cache_path = options.cache_dir + "/" + set->rules_.content_hash() + ".hsdb";
    set->loaded_from_cache_ = load_cached(cache_path, set->dbs_);
  }
  for (int v = 0; v < kViews && !set->loaded_from_cache_; ++v) {
    std::vector<const char*> exprs;
    std::vector<unsigned> flags;
    std::vector<unsigned> ids;
    for (size_t i = 0; i < all.size(); ++i) {
      if (static_cast<int>(all[i].view) != v) continue;
      exprs.push_back(all[i].pattern.c_str());
      flags.push_back(all[i].hs_flags);
      ids.push_back(static_cast<unsigned>(i));
    }
    if (exprs.empty()) continue;
    hs_compile_error_t* err = nullptr;
    hs_error_t rc = hs_compile_multi(exprs.data(), flags.data(), ids.data(),
                                     static_cast<unsigned>(exprs.size()), HS_MODE_BLOCK, nullptr,
                                     &set->dbs_[v], &err);
    if (rc != HS_SUCCESS) {
      std::string reason = err != nullptr && err->message != nullptr ? err->message : "unknown";
      std::string where = "rule set";
      if (err != nullptr && err->expression >= 0 &&
          static_cast<size_t>(err->expression) < ids.size()) {
        const Rule& r = all[ids[err->expression]];
        where = r.file + ":" + std::to_string(r.line) + ": rule " + r.id;
      }
      hs_free_compile_error(err);
      return invalid_argument(where + ": Hyperscan cannot compile the " +
                              std::string(view_name(static_cast<View>(v))) +
                              " database: " + reason);
    }
  }
  if (!cache_path.empty() && !set->loaded_from_cache_) {
    store_cached(options.cache_dir, cache_path, set->dbs_);
  }
  // Allocating this thread's scratch now surfaces memory problems at load, not first scan.
  const bool any_db = set->dbs_[0] != nullptr || set->dbs_[1] != nullptr || set->dbs_[2] != nullptr;
  if (any_db && scratch_for(set->dbs_, set->generation_) == nullptr) {
    return resource_exhausted("cannot allocate Hyperscan scratch space");
  }
  set->build_ms_ =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return std::shared_ptr<const CompiledRuleSet>(std::move(set));
}

std::string CompiledRuleSet::serialize() const {
  std::string out;
  if (!serialize_dbs(dbs_, out)) out.clear();
  return out;
}

CompiledRuleSet::~CompiledRuleSet() {
  for (hs_database_t* db : dbs_) {
    if (db != nullptr) hs_free_database(db);
  }
}

size_t CompiledRuleSet::database_bytes() const {
  size_t total = 0;
  for (hs_database_t* db : dbs_) {
    size_t size = 0;
    if (db != nullptr && hs_database_size(db, &size) == HS_SUCCESS) total += size;
  }
  return total;
}

Verdict CompiledRuleSet::scan(const LexedSql& sql, MatchSink& sink) const {
  if (dbs_[0] == nullptr && dbs_[1] == nullptr) return Verdict::kAllow;  // no deny/approve rules
  hs_scratch_t* scratch = scratch_for(dbs_, generation_);
  if (scratch == nullptr) {
    sink.on_scan_error("cannot allocate Hyperscan scratch space");
    return Verdict::kDeny;
  }
  IdCollector ids;
  const std::string_view views[2] = {sql.code(), sql.text()};
  if (views[0].size() > UINT32_MAX || views[1].size() > UINT32_MAX) {
    sink.on_scan_error("statement too large to scan");
    return Verdict::kDeny;
  }
  for (int v = 0; v < 2; ++v) {
    if (dbs_[v] == nullptr) continue;
    hs_error_t rc = hs_scan(dbs_[v], views[v].data(), static_cast<unsigned>(views[v].size()), 0,
                            scratch, on_rule_match, &ids);
    if (rc != HS_SUCCESS) {
      sink.on_scan_error(hs_error_name(rc));
      return Verdict::kDeny;
    }
  }
  Verdict verdict = Verdict::kAllow;
  const std::vector<Rule>& all = rules_.rules();
  ids.for_each([&](uint32_t id) {
    const Rule& r = all[id];
    if (r.action == Action::kDeny) {
      verdict = Verdict::kDeny;
    } else if (r.action == Action::kApprove && verdict == Verdict::kAllow) {
      verdict = Verdict::kApprove;
    }
    sink.on_match(r);
  });
  return verdict;
}

Status CompiledRuleSet::detect(std::string_view value, std::vector<DetectSpan>& out) const {
  hs_database_t* db = dbs_[static_cast<int>(View::kValue)];
  if (db == nullptr || value.empty()) return Status::ok();
  if (value.size() > UINT32_MAX) return resource_exhausted("value too large to scan");
  hs_scratch_t* scratch = scratch_for(dbs_, generation_);
  if (scratch == nullptr) return resource_exhausted("cannot allocate Hyperscan scratch space");
  std::vector<RawDetect> raw;
  hs_error_t rc = hs_scan(db, value.data(), static_cast<unsigned>(value.size()), 0, scratch,
                          on_detect_match, &raw);
  if (rc != HS_SUCCESS) return internal_error("detect scan failed: " + hs_error_name(rc));
  std::sort(raw.begin(), raw.end(), [](const RawDetect& a, const RawDetect& b) {
    return a.id != b.id ? a.id < b.id : (a.begin != b.begin ? a.begin < b.begin : a.end > b.end);
  });
  const std::vector<Rule>& all = rules_.rules();
  // Validators confirm each candidate and may narrow it (or, for IBANs, take the country's
  // exact length from its start), so spans are merged per rule after validation.
  std::vector<RawDetect> confirmed;
  confirmed.reserve(raw.size());
  for (const RawDetect& m : raw) {
    std::optional<ValueSpan> span = confirm(all[m.id].validator, value, {m.begin, m.end});
    if (!span) continue;
    confirmed.push_back(
        {m.id, static_cast<uint32_t>(span->begin), static_cast<uint32_t>(span->end)});
  }
  std::sort(confirmed.begin(), confirmed.end(), [](const RawDetect& a, const RawDetect& b) {
    return a.id != b.id ? a.id < b.id : (a.begin != b.begin ? a.begin < b.begin : a.end > b.end);
  });
  size_t first_new = out.size();
  for (const RawDetect& m : confirmed) {
    const Rule& r = all[m.id];
    if (out.size() > first_new && out.back().rule == &r && m.begin <= out.back().end) {
      out.back().end = std::max(out.back().end, m.end);
      continue;
    }
    out.push_back({m.begin, m.end, &r});
  }
  std::sort(out.begin() + static_cast<std::ptrdiff_t>(first_new), out.end(),
            [](const DetectSpan& a, const DetectSpan& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  return Status::ok();
}

Status Matcher::load(std::span<const std::string> paths, const CompileOptions& options) {
  Result<RuleSet> parsed = RuleSet::load_files(paths);
  if (!parsed.is_ok()) return parsed.status();
  Result<std::shared_ptr<const CompiledRuleSet>> compiled =
      CompiledRuleSet::compile(std::move(parsed).value(), options);
  if (!compiled.is_ok()) return compiled.status();
  install(std::move(compiled).value());
  return Status::ok();
}

Verdict Matcher::scan(const LexedSql& sql, MatchSink& sink) const {
  std::shared_ptr<const CompiledRuleSet> set = current_.load();
  if (set == nullptr) {
    sink.on_scan_error("no rule set loaded");
    return Verdict::kDeny;
  }
  return set->scan(sql, sink);
}

PrescreenResult Matcher::prescreen(const LexedSql& sql) const {
  struct Collect : MatchSink {
    PrescreenResult* result;
    void on_match(const Rule& rule) override { result->matches.push_back(&rule); }
    void on_scan_error(std::string_view) override { result->scan_failed = true; }
  };
  PrescreenResult result;
  result.rules = current_.load();
  Collect sink;
  sink.result = &result;
  if (result.rules == nullptr) {
    result.scan_failed = true;
    result.verdict = Verdict::kDeny;
    return result;
  }
  result.verdict = result.rules->scan(sql, sink);
  return result;
}

Status Matcher::detect(std::string_view value, std::vector<DetectSpan>& out,
                       std::shared_ptr<const CompiledRuleSet>& pinned) const {
  pinned = current_.load();
  if (pinned == nullptr) return failed_precondition("no rule set loaded");
  return pinned->detect(value, out);
}

}  // namespace pgwarden::rules
