// Large values through the gateway (issue 14 item 1): values and rows of any size PostgreSQL
// accepts pass in both directions with the default recording (full, required), streamed rather
// than buffered; the recording keeps a huge value as prefix + length + SHA-256; a value too
// large to mask is refused with ERROR 54000 naming the column, and the session stays usable;
// dp's memory stays bounded while 100 MB pass. Real sandbox PostgreSQL, real pgwarden-cp and
// pgwarden-dp, libpq.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <openssl/evp.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/recording/recording_file.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

// Deterministic incompressible bytes (xorshift64): PostgreSQL stores them as they are.
std::string noise(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed | 1;
  for (size_t i = 0; i < n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    for (size_t k = 0; k < 8 && i + k < n; ++k) out[i + k] = static_cast<char>(x >> (8 * k));
  }
  return out;
}

// ASCII letters, `n` bytes (no COPY escapes needed); `seed` varies them.
std::string text_of(size_t n, int seed) {
  std::string out(n, ' ');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>('a' + (seed + i) % 26);
  return out;
}

class GatewayLargeValuesTest : public SharedGatewayTest<GatewayLargeValuesTest> {
 public:
  // The harness's default rule sets; recording not configured, i.e. full and required (the
  // shipped default); two masked columns: one whose mask needs the value (partial), one whose
  // mask does not (redact).
  static constexpr const char* kPolicy =
      R"({"name": "agents", "allowed_kinds": ["select", "insert", "copy_to_stdout",
          "copy_from_stdin", "transaction", "set", "show", "ddl_create", "prepare", "execute"],
          "allowed_relations": ["public.*", "pg_catalog.*"],
          "allowed_functions": ["pg_catalog.sha256", "pg_catalog.length",
                                "pg_catalog.octet_length", "pg_catalog.repeat",
                                "pg_catalog.encode"],
          "read_only": false, "rule_sets": ["deny", "approve"],
          "masks": [{"column": "public.lv_masked.secret", "function": "partial", "keep_last": 4},
                    {"column": "public.lv_masked.note", "function": "redact"}]})";

 protected:
  Conn connect() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  static Res exec(PGconn* c, const std::string& sql) { return Res(PQexec(c, sql.c_str())); }
  static void exec_ok(PGconn* c, const std::string& sql) {
    Res r = exec(c, sql);
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << sql << ": " << PQerrorMessage(c);
  }
  // The session works: a trivial query answers.
  static void expect_usable(PGconn* c) {
    Res r = exec(c, "SELECT 41 + 1");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c);
    EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "42");
  }

  // The records of the ended session whose records mention `marker` (waits for the recorder).
  static std::vector<json> wait_recording(const std::string& marker) {
    namespace fs = std::filesystem;
    const fs::path dir = gw_->state_dir() + "/recordings";
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        if (e.path().extension() != ".jsonl") continue;
        auto records = recording::read_recording(e.path().string());
        if (!records.is_ok()) continue;
        bool mine = false, ended = false;
        for (const json& r : *records) {
          if (r.dump().find(marker) != std::string::npos) mine = true;
          if (r.value("kind", "") == "session_end") ended = true;
        }
        if (mine && ended) return *records;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return {};
  }

  // Every summarised value ({"length", "sha256", "prefix"}) anywhere in `records`.
  static std::vector<json> summaries(const std::vector<json>& records, const std::string& kind) {
    std::vector<json> out;
    std::function<void(const json&)> walk = [&](const json& v) {
      if (v.is_object() && v.contains("sha256") && v.contains("length")) {
        out.push_back(v);
        return;
      }
      if (v.is_structured()) {
        for (const json& e : v) walk(e);
      }
    };
    for (const json& r : records) {
      if (r.value("kind", "") == kind) walk(r);
    }
    return out;
  }
};

TEST_F(GatewayLargeValuesTest, TwoMebibyteTextValueInAndOutAndItsParametersAreRecorded) {
  const std::string t = text_of(2u << 20, 1);
  const std::string digest = sha256_hex(t);
  {
    Conn c = connect();
    exec_ok(c.get(), "CREATE TABLE IF NOT EXISTS public.lv_text (id int, t text)");
    Res p(PQprepare(c.get(), "lv_ins", "INSERT INTO public.lv_text VALUES ($1, $2)", 2, nullptr));
    ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
    for (const char* id : {"1", "2"}) {
      // The second execution needs a write-ahead record of its own, with its parameters.
      const char* values[] = {id, t.c_str()};
      Res r(PQexecPrepared(c.get(), "lv_ins", 2, values, nullptr, nullptr, 0));
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
    }
    // Simple protocol, text format.
    Res s = exec(c.get(), "SELECT t AS lv_marker_text FROM public.lv_text WHERE id = 2");
    ASSERT_EQ(PQresultStatus(s.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    ASSERT_EQ(PQntuples(s.get()), 1);
    ASSERT_EQ(static_cast<size_t>(PQgetlength(s.get(), 0, 0)), t.size());
    EXPECT_EQ(sha256_hex(std::string_view(PQgetvalue(s.get(), 0, 0), t.size())), digest);
    // A value made by the server, extended protocol.
    Res e(PQexecParams(c.get(), "SELECT repeat('ab', 1048576) AS lv_rep, 7 AS n", 0, nullptr,
                       nullptr, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(e.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    EXPECT_EQ(PQgetlength(e.get(), 0, 0), 2 << 20);
    EXPECT_STREQ(PQgetvalue(e.get(), 0, 1), "7");
    expect_usable(c.get());
  }
  std::vector<json> records = wait_recording("lv_marker_text");
  ASSERT_FALSE(records.empty()) << "no ended recording for the session";
  // The result row: prefix + length + digest of the value as the client got it.
  bool row_seen = false;
  for (const json& v : summaries(records, "rows")) {
    if (v["sha256"] != digest) continue;
    row_seen = true;
    EXPECT_EQ(v["length"], t.size());
    EXPECT_EQ(v["prefix"], t.substr(0, 1024));
  }
  EXPECT_TRUE(row_seen) << "the recording has no summary of the 2 MiB result value";
  // The second execution's record: its bound parameter, summarised the same way.
  bool param_seen = false;
  for (const json& r : records) {
    if (r.value("kind", "") != "statement" || !r.contains("params")) continue;
    for (const json& v : r["params"]) {
      if (v.is_object() && v.value("sha256", "") == digest && v.value("length", 0u) == t.size()) {
        param_seen = true;
        EXPECT_TRUE(r.value("params_truncated", false));
      }
    }
  }
  EXPECT_TRUE(param_seen) << "the execute record lacks the 2 MiB parameter's summary";
}

TEST_F(GatewayLargeValuesTest, HundredMegabyteByteaRoundTripKeepsDpMemoryBounded) {
  const std::string data = noise(100u << 20, 0x5eed);
  const std::string digest = sha256_hex(data);
  Conn c = connect();
  exec_ok(c.get(), "CREATE TABLE IF NOT EXISTS public.lv_bytes (id int, b bytea)");
  ASSERT_TRUE(gw_->reset_dp_peak_rss());
  const long rss_before = gw_->dp_rss_kib();
  {
    const char* values[] = {"1", data.data()};
    const int lengths[] = {1, static_cast<int>(data.size())};
    const int formats[] = {0, 1};
    Res r(PQexecParams(c.get(), "INSERT INTO public.lv_bytes VALUES ($1, $2)", 2, nullptr, values,
                       lengths, formats, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  }
  {
    // What PostgreSQL stored is exactly what the client sent.
    Res r = exec(c.get(),
                 "SELECT octet_length(b), encode(sha256(b), 'hex') FROM public.lv_bytes "
                 "WHERE id = 1");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string(data.size()));
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 1)), digest);
  }
  {
    // And back, binary format.
    const char* values[] = {"1"};
    Res r(PQexecParams(c.get(), "SELECT b AS lv_marker_bytea FROM public.lv_bytes WHERE id = $1", 1,
                       nullptr, values, nullptr, nullptr, 1));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    ASSERT_EQ(static_cast<size_t>(PQgetlength(r.get(), 0, 0)), data.size());
    EXPECT_EQ(sha256_hex(std::string_view(PQgetvalue(r.get(), 0, 0), data.size())), digest);
  }
  const long peak = gw_->dp_peak_rss_kib();
  expect_usable(c.get());
  c.reset();
  std::cout << "dp RSS before " << rss_before << " KiB, peak while 2 x 100 MB passed " << peak
            << " KiB\n";
  // 100 MB went in and 100 MB came out; dp held a few buffers' worth (docs/dataplane.md: about
  // 4 MiB per session for unmasked data), nowhere near the value.
  EXPECT_LT(peak - rss_before, 16 * 1024)
      << "dp peak RSS grew from " << rss_before << " to " << peak << " KiB";
  std::vector<json> records = wait_recording("lv_marker_bytea");
  ASSERT_FALSE(records.empty()) << "no ended recording for the session";
  bool seen = false;
  for (const json& v : summaries(records, "rows")) {
    if (v["sha256"] != digest) continue;
    seen = true;
    EXPECT_EQ(v["length"], data.size());
    std::string prefix = v["prefix"];
    ASSERT_EQ(prefix.size(), 2 + 2 * 1024u);
    EXPECT_EQ(prefix.substr(0, 2), "\\x");
  }
  EXPECT_TRUE(seen) << "the recording has no summary of the 100 MB value";
}

TEST_F(GatewayLargeValuesTest, TextFormatByteaRoundTripAsDriversSendIt) {
  // Drivers that bind as text send bytea as "\x<hex>" (twice the bytes) and read it back so.
  const std::string data = noise(12u << 20, 0xb17e);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex = "\\x";
  hex.reserve(2 + 2 * data.size());
  for (unsigned char ch : data) {
    hex += kHex[ch >> 4];
    hex += kHex[ch & 15];
  }
  Conn c = connect();
  exec_ok(c.get(), "CREATE TABLE IF NOT EXISTS public.lv_hex (id int, b bytea)");
  const char* values[] = {"1", hex.c_str()};
  Res ins(PQexecParams(c.get(), "INSERT INTO public.lv_hex VALUES ($1, $2)", 2, nullptr, values,
                       nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(ins.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  Res r = exec(c.get(), "SELECT b FROM public.lv_hex WHERE id = 1");
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  ASSERT_EQ(static_cast<size_t>(PQgetlength(r.get(), 0, 0)), hex.size());
  EXPECT_EQ(sha256_hex(std::string_view(PQgetvalue(r.get(), 0, 0), hex.size())), sha256_hex(hex));
  expect_usable(c.get());
}

TEST_F(GatewayLargeValuesTest, PipelinedLargeBindsKeepTheirOrder) {
  Conn c = connect();
  exec_ok(c.get(), "CREATE TABLE IF NOT EXISTS public.lv_pipe (id int, t text)");
  std::vector<std::string> texts;
  for (int i = 0; i < 3; ++i) texts.push_back(text_of((3u << 20) + i, 11 + i));
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  for (int i = 0; i < 3; ++i) {
    std::string id = std::to_string(i);
    const char* values[] = {id.c_str(), texts[i].c_str()};
    ASSERT_EQ(PQsendQueryParams(c.get(), "INSERT INTO public.lv_pipe VALUES ($1, $2)", 2, nullptr,
                                values, nullptr, nullptr, 0),
              1);
  }
  ASSERT_EQ(PQsendQueryParams(c.get(), "SELECT length(t) FROM public.lv_pipe ORDER BY id", 0,
                              nullptr, nullptr, nullptr, nullptr, 0),
            1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  for (int i = 0; i < 3; ++i) {
    Res r(PQgetResult(c.get()));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << i << ": " << PQerrorMessage(c.get());
    EXPECT_EQ(PQgetResult(c.get()), nullptr);
  }
  Res sel(PQgetResult(c.get()));
  ASSERT_EQ(PQresultStatus(sel.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
  ASSERT_EQ(PQntuples(sel.get()), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(std::string(PQgetvalue(sel.get(), i, 0)), std::to_string(texts[i].size()));
  }
  EXPECT_EQ(PQgetResult(c.get()), nullptr);
  Res sync(PQgetResult(c.get()));
  EXPECT_EQ(PQresultStatus(sync.get()), PGRES_PIPELINE_SYNC);
  ASSERT_EQ(PQexitPipelineMode(c.get()), 1);
  expect_usable(c.get());
}

TEST_F(GatewayLargeValuesTest, SixtyFiveThousandParametersInAStreamedBindExecuteTwice) {
  // 65,535 parameters of 24 bytes: a Bind over max_message_bytes, streamed; the second
  // execution's write-ahead record carries a bounded part of them.
  constexpr int kParams = 65535;
  std::string sql = "SELECT cardinality(ARRAY[";
  std::vector<std::string> values(kParams);
  std::vector<const char*> ptrs(kParams);
  for (int i = 0; i < kParams; ++i) {
    sql += (i ? ",$" : "$") + std::to_string(i + 1);
    values[i] = text_of(24, i);
    ptrs[i] = values[i].c_str();
  }
  sql += "]::text[]) AS lv_many";
  Conn c = connect();
  Res p(PQprepare(c.get(), "lv_many", sql.c_str(), 0, nullptr));
  ASSERT_EQ(PQresultStatus(p.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  for (int run = 0; run < 2; ++run) {
    Res r(PQexecPrepared(c.get(), "lv_many", kParams, ptrs.data(), nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << run << ": " << PQerrorMessage(c.get());
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0)), std::to_string(kParams));
  }
  expect_usable(c.get());
}

TEST_F(GatewayLargeValuesTest, CopyInAndOutWithEightMebibyteRowsAndLargeBlocks) {
  Conn c = connect();
  exec_ok(c.get(), "CREATE TABLE IF NOT EXISTS public.lv_copy (id int, t text)");
  std::vector<std::string> lines;
  for (int i = 0; i < 3; ++i) {
    lines.push_back(std::to_string(i) + "\t" + text_of(8u << 20, i) + "\n");
  }
  // One more block of 8 MiB holding 2,000 small rows.
  std::string block;
  for (int i = 100; i < 2100; ++i) block += std::to_string(i) + "\t" + text_of(4000, 5) + "\n";
  {
    Res r = exec(c.get(), "COPY public.lv_copy FROM STDIN");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_IN) << PQerrorMessage(c.get());
    for (const std::string& line : lines) {
      ASSERT_EQ(PQputCopyData(c.get(), line.data(), static_cast<int>(line.size())), 1);
    }
    ASSERT_EQ(PQputCopyData(c.get(), block.data(), static_cast<int>(block.size())), 1);
    ASSERT_EQ(PQputCopyEnd(c.get(), nullptr), 1);
    Res done(PQgetResult(c.get()));
    ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
    EXPECT_STREQ(PQcmdTuples(done.get()), "2003");
    while (PGresult* more = PQgetResult(c.get())) PQclear(more);
  }
  {
    Res r = exec(c.get(), "COPY public.lv_copy TO STDOUT");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COPY_OUT) << PQerrorMessage(c.get());
    std::vector<std::string> big;
    size_t small = 0;
    for (;;) {
      char* buf = nullptr;
      int n = PQgetCopyData(c.get(), &buf, 0);
      if (n < 0) break;
      if (static_cast<size_t>(n) > (1u << 20)) {
        big.emplace_back(buf, static_cast<size_t>(n));
      } else {
        ++small;
      }
      PQfreemem(buf);
    }
    Res done(PQgetResult(c.get()));
    ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
    EXPECT_EQ(small, 2000u);
    ASSERT_EQ(big.size(), lines.size());
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(sha256_hex(big[i]), sha256_hex(lines[i])) << "row " << i;
    }
  }
  expect_usable(c.get());
}

TEST_F(GatewayLargeValuesTest, ValueTooLargeToMaskIsRefusedInStepAndNamesTheColumn) {
  Conn c = connect();
  exec_ok(
      c.get(),
      "CREATE TABLE IF NOT EXISTS public.lv_masked (id int, secret text, note text, blob bytea)");
  const std::string big = text_of(20u << 20, 7);
  {
    // id 1: a huge value under `partial` (needs the value); id 2: a huge value under
    // `redact` (does not); id 3: small values.
    const char* values[] = {big.c_str(), "short note", "tiny secret", big.c_str()};
    Res r(PQexecParams(c.get(),
                       "INSERT INTO public.lv_masked VALUES (1, $1, $2), (2, $3, $4), "
                       "(3, 'small secret', 'small note')",
                       4, nullptr, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  }
  for (int format : {0, 1}) {
    Res r(PQexecParams(c.get(), "SELECT id, secret, note FROM public.lv_masked ORDER BY id", 0,
                       nullptr, nullptr, nullptr, nullptr, format));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR) << "format " << format;
    EXPECT_EQ(sqlstate(r.get()), "54000");
    std::string msg = PQresultErrorMessage(r.get());
    EXPECT_NE(msg.find("\"secret\""), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(16u << 20)), std::string::npos) << msg;
    expect_usable(c.get());
  }
  // A huge value whose mask does not depend on it (redact) is masked without holding it.
  {
    Res r =
        exec(c.get(), "SELECT id, secret, note FROM public.lv_masked WHERE id >= 2 ORDER BY id");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    ASSERT_EQ(PQntuples(r.get()), 2);
    EXPECT_STREQ(PQgetvalue(r.get(), 0, 1), "*******cret");
    EXPECT_STREQ(PQgetvalue(r.get(), 0, 2), "****");
    EXPECT_STREQ(PQgetvalue(r.get(), 1, 1), "********cret");
    EXPECT_STREQ(PQgetvalue(r.get(), 1, 2), "****");
  }
  // A huge unmasked value after the masked columns streams; the columns before it are masked.
  const std::string blob = noise(30u << 20, 0xb10b);
  {
    const char* values[] = {blob.data()};
    const int lengths[] = {static_cast<int>(blob.size())};
    const int formats[] = {1};
    Res r(PQexecParams(c.get(),
                       "INSERT INTO public.lv_masked VALUES (4, 'secret four', 'note four', $1)", 1,
                       nullptr, values, lengths, formats, 0));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQerrorMessage(c.get());
  }
  {
    Res r(PQexecParams(c.get(),
                       "SELECT secret, note, blob AS lv_marker_blob, id FROM public.lv_masked "
                       "WHERE id = 4",
                       0, nullptr, nullptr, nullptr, nullptr, 1));
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 0), PQgetlength(r.get(), 0, 0)), "*******four");
    EXPECT_EQ(std::string(PQgetvalue(r.get(), 0, 1), PQgetlength(r.get(), 0, 1)), "****");
    ASSERT_EQ(static_cast<size_t>(PQgetlength(r.get(), 0, 2)), blob.size());
    EXPECT_EQ(sha256_hex(std::string_view(PQgetvalue(r.get(), 0, 2), blob.size())),
              sha256_hex(blob));
    ASSERT_EQ(PQgetlength(r.get(), 0, 3), 4);
  }
  {
    // The same value before a masked column cannot stream (the row's length depends on the
    // masked value after it): refused, naming it.
    Res r = exec(c.get(), "SELECT blob, secret FROM public.lv_masked WHERE id = 4");
    ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
    EXPECT_EQ(sqlstate(r.get()), "54000");
    std::string msg = PQresultErrorMessage(r.get());
    EXPECT_NE(msg.find("\"blob\""), std::string::npos) << msg;
    expect_usable(c.get());
  }
  // Inside a transaction the refusal fails it, as an error from PostgreSQL would.
  exec_ok(c.get(), "BEGIN");
  Res in_tx = exec(c.get(), "SELECT secret FROM public.lv_masked WHERE id = 1");
  EXPECT_EQ(sqlstate(in_tx.get()), "54000");
  Res after = exec(c.get(), "SELECT 1");
  EXPECT_EQ(sqlstate(after.get()), "25P02");
  Res commit = exec(c.get(), "COMMIT");
  EXPECT_STREQ(PQcmdStatus(commit.get()), "ROLLBACK");
  expect_usable(c.get());
  c.reset();
  // The recording has the streamed row as the client saw it: masked head, summarised blob.
  std::vector<json> records = wait_recording("lv_marker_blob");
  ASSERT_FALSE(records.empty()) << "no ended recording for the session";
  // Binary-format values are recorded as "\\x<hex>".
  auto hex_of = [](std::string_view v) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out = "\\x";
    for (unsigned char ch : v) {
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
    return out;
  };
  bool seen = false;
  for (const json& r : records) {
    if (r.value("kind", "") != "rows") continue;
    for (const json& row : r["rows"]) {
      if (row.size() == 4 && row[0] == hex_of("*******four") && row[1] == hex_of("****") &&
          row[2].is_object()) {
        seen = true;
        EXPECT_EQ(row[2]["sha256"], sha256_hex(blob));
        EXPECT_EQ(row[2]["length"], blob.size());
      }
    }
  }
  EXPECT_TRUE(seen) << "the streamed masked row is not in the recording";
  for (const json& r : records) {
    if (r.value("kind", "") != "rows") continue;
    EXPECT_EQ(r.dump().find(hex_of("secret four").substr(2)), std::string::npos)
        << "an unmasked value was recorded";
  }
}

TEST_F(GatewayLargeValuesTest, StatementTextOverTheLimitIsRefusedAndTheSessionGoesOn) {
  Conn c = connect();
  std::string sql = "SELECT '" + text_of(3u << 20, 9) + "' AS lv_long";
  Res r = exec(c.get(), sql);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(sqlstate(r.get()), "54000");
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("max_message_bytes"),
            std::string::npos);
  expect_usable(c.get());
}

}  // namespace
}  // namespace pgwarden::testing
