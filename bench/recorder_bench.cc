// Write-ahead recorder throughput (issue 15 goal: >= 200,000 records/s into one state dir with
// group commit) and the cost of the fdatasync it amortises. Each iteration appends a burst of
// statement-sized records from `sessions` sessions and waits until every record is
// acknowledged (on_done: written, or with sync "always" written and fdatasync'ed). Records go to
// $PGW_BENCH_DIR (default /var/tmp: a real disk, not tmpfs). Run: build/bench/recorder_bench
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "controlplane/recording/recorder.h"

namespace {

using namespace pgwarden::recording;

std::string bench_dir() {
  const char* base = std::getenv("PGW_BENCH_DIR");
  std::string tmpl = std::string(base != nullptr ? base : "/var/tmp") + "/pgw-recbench-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return {};
  return tmpl;
}

constexpr int kBurst = 20000;

// args: sessions, sync (0 = interval 100 ms, 1 = always)
void BM_RecorderWriteAhead(benchmark::State& state) {
  const int sessions = static_cast<int>(state.range(0));
  const bool always = state.range(1) == 1;
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
  for (int s = 0; s < sessions; ++s) {
    SessionStart st;
    st.session_id = "bench-" + std::to_string(s);
    st.identity = "svc:bench";
    st.target = "demo";
    (void)(*rec)->start_session(st);
  }
  std::atomic<uint64_t> acked{0};
  std::atomic<uint64_t> target{0};
  const nlohmann::json fields = {{"sql", "SELECT abalance FROM pgbench_accounts WHERE aid = 4242"},
                                 {"shape_key", "9f3ab2c4d5e6f708"},
                                 {"verdict", "allow"},
                                 {"rule", "allow.select"},
                                 {"source", "cache"},
                                 {"ts_ms", 1767225600000}};
  uint64_t expected = 0;
  for (auto _ : state) {
    expected += kBurst;
    target = expected;
    for (int i = 0; i < kBurst; ++i) {
      (void)(*rec)->append("bench-" + std::to_string(i % sessions), "statement", fields,
                           {.keep = true, .on_done = [&acked, &target](const pgwarden::Status&) {
                              if (acked.fetch_add(1) + 1 == target.load()) acked.notify_all();
                            }});
    }
    // Write-ahead: a record counts once it is acknowledged (written; with always: synced).
    // Syncs in interval mode run in the background, as in production.
    for (uint64_t seen = acked.load(); seen < expected; seen = acked.load()) acked.wait(seen);
  }
  (void)(*rec)->flush();
  state.SetItemsProcessed(state.iterations() * kBurst);
  state.counters["acked"] = static_cast<double>(acked.load());
  state.counters["syncs"] = static_cast<double>((*rec)->batches_synced());
  state.counters["pwritev_batches"] = static_cast<double>((*rec)->batches_written());
  rec->reset();
  std::filesystem::remove_all(root);
}
BENCHMARK(BM_RecorderWriteAhead)
    ->ArgNames({"sessions", "always"})
    ->Args({1, 0})
    ->Args({8, 0})
    ->Args({64, 0})
    ->Args({8, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// What group commit amortises: one small append + fdatasync on the same file system.
void BM_Fdatasync(benchmark::State& state) {
  const std::string root = bench_dir();
  const std::string path = root + "/sync";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const std::string line(300, 'x');
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

}  // namespace

BENCHMARK_MAIN();
