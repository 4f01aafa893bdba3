// pgwire codec throughput: framing a backend result stream and parsing its DataRows, as the
// session engine does for every result. Run: build/bench/pgwire_bench
#include <benchmark/benchmark.h>

#include <string>

#include "dataplane/pgwire/framer.h"
#include "dataplane/pgwire/messages.h"

namespace pgwarden::pgwire {
namespace {

std::string result_stream(int rows) {
  std::string s;
  const FieldDescription f[] = {{"id", 16390, 1, 20, 8, -1, 0},
                                {"email", 16390, 3, 25, -1, -1, 0},
                                {"notes", 16390, 8, 25, -1, -1, 0}};
  append_row_description(s, f);
  for (int i = 0; i < rows; ++i) {
    std::string id = std::to_string(i);
    const std::optional<std::string_view> cols[] = {id, "someone@example.com", std::nullopt};
    append_data_row(s, cols);
  }
  append_command_complete(s, "SELECT " + std::to_string(rows));
  append_ready_for_query(s, 'I');
  return s;
}

void BM_FrameAndParseResultRows(benchmark::State& state) {
  std::string stream = result_stream(1000);
  size_t messages = 0;
  for (auto _ : state) {
    Framer framer(Direction::kBackend);
    Bytes input = as_bytes(stream);
    size_t columns = 0;
    while (true) {
      FrameResult r = framer.next(input);
      if (r.status != FrameStatus::kMessage) break;
      if (r.message.type == DataRow::kType) {
        DataRow row;
        if (!parse(r.message.body, &row).ok()) state.SkipWithError("parse failed");
        for (const Value& v : row.columns) columns += v.data.size();
      }
      input = input.subspan(r.consumed);
      ++messages;
    }
    benchmark::DoNotOptimize(columns);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * stream.size()));
  state.SetItemsProcessed(static_cast<int64_t>(messages));
}
BENCHMARK(BM_FrameAndParseResultRows);

void BM_BuildDataRow(benchmark::State& state) {
  std::string out;
  out.reserve(256);
  const std::optional<std::string_view> cols[] = {"42", "someone@example.com", std::nullopt};
  for (auto _ : state) {
    out.clear();
    append_data_row(out, cols);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_BuildDataRow);

}  // namespace
}  // namespace pgwarden::pgwire

BENCHMARK_MAIN();
