#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "common/metrics/histogram.h"
#include "common/metrics/labeled_counters.h"
#include "common/metrics/metrics_server.h"

namespace pgwarden::metrics {
namespace {

TEST(LatencyHistogramTest, ObservationsLandInTheFirstBucketWhoseBoundHoldsThem) {
  EXPECT_EQ(latency_bucket(0), 0u);
  EXPECT_EQ(latency_bucket(10'000), 0u);  // exactly 10 us: le
  EXPECT_EQ(latency_bucket(10'001), 1u);
  EXPECT_EQ(latency_bucket(1'000'000), 6u);                        // 1 ms
  EXPECT_EQ(latency_bucket(10'000'000'000), kLatencyBuckets - 2);  // 10 s
  EXPECT_EQ(latency_bucket(10'000'000'001), kLatencyBuckets - 1);  // +Inf
}

TEST(LatencyHistogramTest, SnapshotCountEqualsTheBucketsAndSumsAdd) {
  LatencyHistogram h;
  h.observe_ns(5'000);
  h.observe_ns(2'000'000);
  h.observe_ns(20'000'000'000);
  HistogramSnapshot s = h.snapshot();
  EXPECT_EQ(s.count, 3u);
  EXPECT_EQ(s.sum_ns, 20'002'005'000u);
  EXPECT_EQ(s.counts[0], 1u);
  EXPECT_EQ(s.counts[kLatencyBuckets - 1], 1u);
  HistogramSnapshot total = s;
  total.add(s);
  EXPECT_EQ(total.count, 6u);
  EXPECT_EQ(total.counts[0], 2u);
}

TEST(LatencyHistogramTest, ConcurrentWritersLoseNoObservation) {
  LatencyHistogram h;
  std::thread a([&] {
    for (int i = 0; i < 100000; ++i) h.observe_ns(1000);
  });
  std::thread b([&] {
    for (int i = 0; i < 100000; ++i) h.observe_ns(3'000'000);
  });
  a.join();
  b.join();
  EXPECT_EQ(h.snapshot().count, 200000u);
}

TEST(LabeledCountersTest, CountsPerLabelTupleIncludingEmptyValues) {
  LabeledCounters c;
  c.inc({"deny", "no_drop", "prescreen"});
  c.inc({"deny", "no_drop", "prescreen"});
  c.inc({"allow", "", "cache"});
  std::map<std::vector<std::string>, uint64_t> seen;
  c.for_each([&](const std::vector<std::string>& v, uint64_t n) { seen[v] = n; });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ((seen[{"deny", "no_drop", "prescreen"}]), 2u);
  EXPECT_EQ((seen[{"allow", "", "cache"}]), 1u);
}

TEST(LabeledCountersTest, KeysBeyondTheCapGoToTheOverflowCounter) {
  LabeledCounters c(2);
  c.inc({"a"});
  c.inc({"b"});
  c.inc({"c"});
  c.inc({"a"});
  size_t keys = 0;
  c.for_each([&](const std::vector<std::string>&, uint64_t) { ++keys; });
  EXPECT_EQ(keys, 2u);
  EXPECT_EQ(c.overflowed(), 1u);
}

// GET /metrics over a plain socket: the exposition text.
std::string scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return "";
  }
  std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

// A port nobody listens on right now (bound then released).
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

TEST(MetricsServerTest, EachScrapeReadsTheCurrentValuesInTextFormat) {
  std::atomic<uint64_t> denied{0};
  LatencyHistogram h;
  h.observe_ns(3'000'000);
  auto server = MetricsServer::start("127.0.0.1:" + std::to_string(free_port()), [&](Families& f) {
    f.counter("pgwarden_test_statements_total", "Statements.", static_cast<double>(denied.load()),
              {{"verdict", "deny"}, {"rule", "quote\"d"}});
    f.gauge("pgwarden_test_queue_depth", "Queue.", 7);
    f.histogram("pgwarden_test_latency_seconds", "Latency.", h.snapshot());
  });
  ASSERT_TRUE(server.is_ok()) << server.status().message();
  std::string first = scrape((*server)->port());
  EXPECT_NE(first.find("200 OK"), std::string::npos) << first;
  EXPECT_NE(first.find("# TYPE pgwarden_test_statements_total counter"), std::string::npos);
  EXPECT_NE(first.find("pgwarden_test_statements_total{verdict=\"deny\",rule=\"quote\\\"d\"} 0"),
            std::string::npos)
      << first;
  EXPECT_NE(first.find("pgwarden_test_queue_depth 7"), std::string::npos);
  EXPECT_NE(first.find("pgwarden_test_latency_seconds_bucket{le=\"0.0025\"} 0"), std::string::npos)
      << first;
  EXPECT_NE(first.find("pgwarden_test_latency_seconds_bucket{le=\"0.005\"} 1"), std::string::npos);
  EXPECT_NE(first.find("pgwarden_test_latency_seconds_count 1"), std::string::npos);
  denied = 3;
  std::string second = scrape((*server)->port());
  EXPECT_NE(second.find("pgwarden_test_statements_total{verdict=\"deny\",rule=\"quote\\\"d\"} 3"),
            std::string::npos)
      << second;
}

TEST(MetricsServerTest, AnAddressInUseIsReportedNotThrown) {
  auto first = MetricsServer::start("127.0.0.1:" + std::to_string(free_port()), [](Families&) {});
  ASSERT_TRUE(first.is_ok()) << first.status().message();
  auto second =
      MetricsServer::start("127.0.0.1:" + std::to_string((*first)->port()), [](Families&) {});
  ASSERT_FALSE(second.is_ok());
  EXPECT_NE(second.status().message().find("cannot serve metrics on 127.0.0.1:"), std::string::npos)
      << second.status().message();
}

TEST(MetricsServerTest, AnAddressThatCannotBeBoundIsReported) {
  auto s = MetricsServer::start("192.0.2.1:9187", [](Families&) {});  // not ours (TEST-NET-1)
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.status().message().find("192.0.2.1:9187"), std::string::npos);
}

}  // namespace
}  // namespace pgwarden::metrics
