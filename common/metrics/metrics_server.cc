#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <limits>
#include <string_view>
#include <thread>

namespace pgwarden::metrics {

prometheus::ClientMetric& Families::add(const std::string& name, const std::string& help,
                                        prometheus::MetricType type, const Labels& labels) {
  prometheus::MetricFamily* family = nullptr;
  for (auto& f : families_) {
    if (f.name == name) family = &f;
  }
  if (family == nullptr) {
    families_.push_back(prometheus::MetricFamily{name, help, type, {}});
    family = &families_.back();
  }
  prometheus::ClientMetric& m = family->metric.emplace_back();
  for (const auto& [k, v] : labels) m.label.push_back({k, v});
  return m;
}

void Families::counter(const std::string& name, const std::string& help, double value,
                       const Labels& labels) {
  static constexpr std::string_view kSuffix = "_total";
  bool has_suffix = name.size() >= kSuffix.size() &&
                    name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
  add(has_suffix ? name : name + std::string(kSuffix), help, prometheus::MetricType::Counter,
      labels)
      .counter.value = value;
}

void Families::gauge(const std::string& name, const std::string& help, double value,
                     const Labels& labels) {
  add(name, help, prometheus::MetricType::Gauge, labels).gauge.value = value;
}

void Families::histogram(const std::string& name, const std::string& help,
                         const HistogramSnapshot& h, const Labels& labels) {
  prometheus::ClientMetric& m = add(name, help, prometheus::MetricType::Histogram, labels);
  m.histogram.sample_count = h.count;
  m.histogram.sample_sum = static_cast<double>(h.sum_ns) / 1e9;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kLatencyBuckets; ++i) {
    cumulative += h.counts[i];
    double bound = i < kLatencyBoundsSeconds.size() ? kLatencyBoundsSeconds[i]
                                                    : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back({cumulative, bound});
  }
}

class MetricsServer::Collector : public prometheus::Collectable {
 public:
  explicit Collector(std::function<void(Families&)> collect) : collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    Families f;
    collect_(f);
    return f.take();
  }

 private:
  std::function<void(Families&)> collect_;
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& listen,
                                                            Collect collect) {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->collector_ = std::make_shared<Collector>(std::move(collect));
  try {
    // One civetweb worker thread: scrapes are rare and cheap.
    s->exposer_ = std::make_unique<prometheus::Exposer>(listen, 1);
  } catch (const std::exception& e) {
    return unavailable("cannot serve metrics on " + listen + ": " + e.what());
  }
  s->exposer_->RegisterCollectable(s->collector_);
  std::vector<int> ports = s->exposer_->GetListeningPorts();
  s->port_ = ports.empty() ? 0 : ports.front();
  s->host_ = listen.substr(0, listen.rfind(':'));
  return s;
}

namespace {

// Opens and closes a TCP connection to the endpoint, which wakes civetweb's accept loop: it
// polls its listening socket with a 2 s timeout and sees the stop request only when it wakes.
void poke(const std::string& host, int port) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  std::string h = host;
  if (!h.empty() && h.front() == '[') h = h.substr(1, h.size() - 2);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, h == "0.0.0.0" ? "127.0.0.1" : h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v4;
  } else if (inet_pton(AF_INET6, h == "::" ? "::1" : h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof *v6;
  } else {
    return;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  (void)connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  close(fd);
}

}  // namespace

MetricsServer::~MetricsServer() {
  // Stopping joins the civetweb threads (no collect after this). Its accept loop only notices
  // the stop when its poll wakes, so poke it until the stop is done instead of waiting out
  // the poll's 2 s timeout.
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    exposer_.reset();
    stopped.store(true);
  });
  while (!stopped.load() && port_ != 0) {
    poke(host_, port_);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stopper.join();
}

}  // namespace pgwarden::metrics
