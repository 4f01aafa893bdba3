// Write-ahead recorder throughput (issue 15 goal: >= 200,000 acknowledged records/s into one
// state directory with group commit) and the cost of the fdatasync it amortises.
//
// BM_RecorderWriteAhead: each iteration appends a burst of records round-robin over `sessions`
// sessions and waits until every one is acknowledged (on_done: written to the file — with
// sync "always" written and fdatasync'ed). items_per_second is acknowledged records/s.
//   payload 0: a `statement` record as the dataplane sends it (sql, verdict, rule, duration,
//              row count, tag, ...: ~450 bytes on disk);
//   payload 1: a `rows` record of 20 rows x 4 columns (~1.7 KB on disk);
//   always  0: sync = interval 100 ms (the default; syncs run in the background, as in
//              production), 1: sync "always" (the acknowledgement waits for the fdatasync);
//   api     0: Recorder::append(json): the caller hands over a tree (built before the burst,
//              outside the timing: it stands for the event the caller parsed);
//           1: Recorder::append(RecordFields): fields serialised by the caller (a copy of a
//              prepared RecordFields per record, inside the timing), written by the writer
//              thread;
//           2: the same appended with AppendOptions::defer and written by the caller's
//              Recorder::commit() after every 64 appends (pgwarden-cp's ring drain: the
//              thread that drains the events writes them, no hand-off).
// cpu_us_per_record: CPU of the whole process (caller, writer, sync helpers) per record: on a
// loaded machine wall-clock records/s falls with the CPU share the process gets, this does not.
// BM_Fdatasync: the latency of one small append + fdatasync on the same file system (what
// group commit amortises).
//
// Records go to $PGW_BENCH_DIR (default /var/tmp: a real disk, not tmpfs).
// Run: build/bench/recorder_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "controlplane/recording/recorder.h"

// The bench also builds against a recorder from before RecordFields (to measure "before").
#if __has_include("controlplane/recording/record_fields.h")
#define PGW_BENCH_HAVE_RECORD_FIELDS 1
#else
#define PGW_BENCH_HAVE_RECORD_FIELDS 0
#endif

namespace {

using namespace pgwarden::recording;

std::string bench_dir() {
  const char* base = std::getenv("PGW_BENCH_DIR");
  std::string tmpl = std::string(base != nullptr ? base : "/var/tmp") + "/pgw-recbench-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return {};
  return tmpl;
}

constexpr int kBurst = 10000;

double process_cpu_us() {
  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

nlohmann::json statement_fields() {
  return {{"sql", "SELECT abalance FROM pgbench_accounts WHERE aid = 4242"},
          {"shape_key", "9f3ab2c4d5e6f708"},
          {"verdict", "allow"},
          {"rule", "policy.allowed_kinds:select"},
          {"source", "cache"},
          {"phase", "end"},
          {"executed", true},
          {"duration_ms", 1},
          {"duration_us", 412},
          {"rows", 1},
          {"rows_recorded", 1},
          {"tag", "SELECT 1"},
          {"ts_ms", 1767225600000}};
}

nlohmann::json rows_fields() {
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < 20; ++i) {
    char email[64];
    std::snprintf(email, sizeof email, "customer%04d@example.com", 4200 + i);
    rows.push_back({std::to_string(4200 + i), email, "2026-12-06 05:09:25.123456+00",
                    i % 5 == 0 ? nlohmann::json(nullptr) : nlohmann::json("1234.50")});
  }
  return {{"columns",
           {{{"name", "id"}, {"type_oid", 23}},
            {{"name", "email"}, {"type_oid", 25}},
            {{"name", "created_at"}, {"type_oid", 1184}},
            {{"name", "balance"}, {"type_oid", 1700}}}},
          {"rows", std::move(rows)}};
}

// The bench also builds against a recorder from before Recorder::commit() (api 2 skipped).
template <typename O>
bool set_defer(O& options) {
  if constexpr (requires { options.defer; }) {
    options.defer = true;
    return true;
  }
  return false;
}
template <typename R>
void commit(R& rec) {
  if constexpr (requires { rec.commit(); }) rec.commit();
}
constexpr int kCommitBatch = 64;

// Session ids as the control plane makes them: 16 hex digits.
std::string session_id(int i) {
  char b[17];
  std::snprintf(b, sizeof b, "%016x", 0x7b1c0000u + static_cast<unsigned>(i));
  return b;
}

// args: payload (0 statement, 1 rows), sessions, always (0 interval 100 ms, 1 always),
// api (0 json, 1 RecordFields, 2 RecordFields + commit() on the caller), idle (sessions
// open with a file but not writing: a fleet's parked agents), commit (records per
// commit() with api 2; cp commits once per ring batch)
void BM_RecorderWriteAhead(benchmark::State& state) {
  const bool rows = state.range(0) == 1;
  const int sessions = static_cast<int>(state.range(1));
  const bool always = state.range(2) == 1;
  const bool pre_serialised = state.range(3) >= 1;
  const bool caller_commits = state.range(3) == 2;
  const int idle = static_cast<int>(state.range(4));
  const int commit_batch = static_cast<int>(state.range(5));
  if (caller_commits) {
    AppendOptions probe;
    if (!set_defer(probe)) {
      state.SkipWithError("this recorder has no Recorder::commit()");
      return;
    }
  }
  const std::string root = bench_dir();
  RecorderOptions o;
  o.dir = root + "/recordings";
  o.queue_capacity = kBurst;
  o.sync_mode = always ? SyncMode::kAlways : SyncMode::kInterval;
  auto rec = Recorder::open(o);
  if (!rec.is_ok()) {
    state.SkipWithError(rec.status().message().c_str());
    return;
  }
  std::vector<std::string> ids;
  for (int s = 0; s < sessions; ++s) {
    SessionStart st;
    st.session_id = session_id(s);
    st.identity = "svc:bench";
    st.target = "demo";
    st.row_cap = 1 << 30;  // every rows record is kept whole
    (void)(*rec)->start_session(st);
    ids.push_back(st.session_id);
  }
  for (int s = 0; s < idle; ++s) {
    SessionStart st;
    st.session_id = session_id(sessions + s);
    st.identity = "svc:idle";
    st.target = "demo";
    (void)(*rec)->start_session(st);
    (void)(*rec)->try_append(st.session_id, "statement", statement_fields());
  }
  if (idle > 0) (void)(*rec)->flush();  // their files are open and synced
  const std::string kind = rows ? "rows" : "statement";
  const nlohmann::json fields = rows ? rows_fields() : statement_fields();
#if PGW_BENCH_HAVE_RECORD_FIELDS
  const RecordFields serialised = RecordFields::from_json(fields);
#else
  if (pre_serialised) {
    state.SkipWithError("this recorder has no RecordFields overload");
    return;
  }
#endif
  std::atomic<uint64_t> acked{0};
  std::atomic<uint64_t> target{0};
  uint64_t expected = 0;
  uint64_t failed = 0;
  std::vector<nlohmann::json> trees;
  double cpu_us = 0;
  for (auto _ : state) {
    if (!pre_serialised) {
      state.PauseTiming();
      trees.assign(kBurst, fields);
      state.ResumeTiming();
    }
    const double cpu_start = process_cpu_us();
    expected += kBurst;
    target = expected;
    for (int i = 0; i < kBurst; ++i) {
      AppendOptions ao{.keep = true, .on_done = [&acked, &target](const pgwarden::Status&) {
                         if (acked.fetch_add(1) + 1 == target.load()) acked.notify_all();
                       }};
      if (caller_commits) set_defer(ao);
#if PGW_BENCH_HAVE_RECORD_FIELDS
      pgwarden::Status st =
          pre_serialised
              ? (*rec)->append(ids[i % sessions], kind, RecordFields(serialised), std::move(ao))
              : (*rec)->append(ids[i % sessions], kind, std::move(trees[i]), std::move(ao));
#else
      pgwarden::Status st =
          (*rec)->append(ids[i % sessions], kind, std::move(trees[i]), std::move(ao));
#endif
      if (!st.is_ok()) ++failed;
      if (caller_commits && (i + 1) % commit_batch == 0) commit(**rec);
    }
    if (caller_commits) commit(**rec);
    if (failed > 0) {
      state.SkipWithError("append failed");
      break;
    }
    // Write-ahead: a record counts once it is acknowledged (written; with always: synced).
    for (uint64_t seen = acked.load(); seen < expected; seen = acked.load()) acked.wait(seen);
    cpu_us += process_cpu_us() - cpu_start;
    if (!pre_serialised) {
      state.PauseTiming();
      trees.clear();  // the moved-from trees
      state.ResumeTiming();
    }
  }
  (void)(*rec)->flush();
  state.SetItemsProcessed(state.iterations() * kBurst);
  state.counters["acked"] = static_cast<double>(acked.load());
  state.counters["cpu_us_per_record"] =
      cpu_us / static_cast<double>(std::max<uint64_t>(expected, 1));
  state.counters["fdatasyncs"] = static_cast<double>((*rec)->batches_synced());
  state.counters["pwritevs"] = static_cast<double>((*rec)->batches_written());
  state.counters["records_per_pwritev"] =
      static_cast<double>((*rec)->records_written()) /
      static_cast<double>(std::max<uint64_t>((*rec)->batches_written(), 1));
  if ((*rec)->write_errors() > 0) state.SkipWithError("recorder write errors");
  rec->reset();
  std::filesystem::remove_all(root);
}
BENCHMARK(BM_RecorderWriteAhead)
    ->ArgNames({"payload", "sessions", "always", "api", "idle", "commit"})
    ->ArgsProduct({{0, 1}, {1, 64}, {0, 1}, {0, 1, 2}, {0}, {kCommitBatch}})
    // A cp with a fleet attached: 8 busy sessions committing per ring batch, 5,000 parked.
    ->Args({0, 8, 0, 2, 0, 8})
    ->Args({0, 8, 0, 2, 5000, 8})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// What group commit amortises: one small append + fdatasync on the same file system.
void BM_Fdatasync(benchmark::State& state) {
  const std::string root = bench_dir();
  const std::string path = root + "/sync";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const std::string line(450, 'x');
  for (auto _ : state) {
    if (::write(fd, line.data(), line.size()) < 0 || ::fdatasync(fd) != 0) {
      state.SkipWithError("write/fdatasync failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  ::close(fd);
  std::filesystem::remove_all(root);
}
BENCHMARK(BM_Fdatasync)->Unit(benchmark::kMicrosecond)->UseRealTime();

// What re-registering sessions after a pgwarden-cp restart costs (docs/recording.md,
// "Continuing a recording"): `sessions` recordings of `mib` MiB each (64 KiB rows records,
// unsealed: the cp was killed) are written before the timing. Each iteration opens a new
// Recorder on them (a restarted cp) and resumes every session as the reregister handler does
// on cp's event loop (Recorder::resume_session): resume_ms_per_session is that loop-thread
// time per session. Then flush() waits until the writer appended every session_resumed
// record (its first write to each existing file): first_write_ms_per_session.
void BM_ResumeSessions(benchmark::State& state) {
  const int sessions = static_cast<int>(state.range(0));
  const int64_t mib = state.range(1);
  const std::string root = bench_dir();
  RecorderOptions o;
  o.dir = root + "/recordings";
  std::vector<SessionStart> starts;
  {
    auto rec = Recorder::open(o);
    if (!rec.is_ok()) {
      state.SkipWithError(rec.status().message().c_str());
      return;
    }
    const nlohmann::json value(std::string(64 << 10, 'v'));
    const nlohmann::json fields = {{"columns", {"payload"}}, {"rows", {{value}}}};
    for (int s = 0; s < sessions; ++s) {
      SessionStart st;
      st.session_id = session_id(s);
      st.identity = "svc:bench";
      st.target = "demo";
      st.row_cap = 1 << 30;
      (void)(*rec)->start_session(st);
      for (int64_t r = 0; r < mib * 16; ++r) {
        (void)(*rec)->append(st.session_id, "rows", fields, {.keep = true});
      }
      starts.push_back(st);
    }
    (void)(*rec)->flush();
  }  // destroyed without a session_end: the recordings stay open, as after a cp crash
  double resume_ms = 0;
  double write_ms = 0;
  for (auto _ : state) {
    auto rec = Recorder::open(o);
    if (!rec.is_ok()) {
      state.SkipWithError(rec.status().message().c_str());
      break;
    }
    auto t0 = std::chrono::steady_clock::now();
    for (const SessionStart& st : starts) {
      if (!(*rec)->resume_session(st, "bench").is_ok()) {
        state.SkipWithError("resume_session failed");
        break;
      }
    }
    auto t1 = std::chrono::steady_clock::now();
    (void)(*rec)->flush();
    auto t2 = std::chrono::steady_clock::now();
    resume_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
    write_ms += std::chrono::duration<double, std::milli>(t2 - t1).count();
  }
  const double n = static_cast<double>(std::max<int64_t>(state.iterations(), 1)) * sessions;
  state.counters["resume_ms_per_session"] = resume_ms / n;
  state.counters["first_write_ms_per_session"] = write_ms / n;
  state.counters["loop_stall_ms"] =
      resume_ms / static_cast<double>(std::max<int64_t>(state.iterations(), 1));
  std::filesystem::remove_all(root);
}
BENCHMARK(BM_ResumeSessions)
    ->ArgNames({"sessions", "mib"})
    ->Args({200, 4})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
