// MetricsServer: the Prometheus `/metrics` endpoint of pgwarden-cp and pgwarden-dp (text
// exposition format, served by prometheus-cpp's pull exposer on its own civetweb threads).
//
// Nothing is registered ahead of time: every scrape calls the process's `collect` function,
// which reads the counters the process already keeps (worker counters, the escalation
// server's counters, recorder health, ...) into a Families builder. So the endpoint never
// holds a second copy of any number, and it shows only what `collect` writes: never secrets,
// SQL text, identities or session ids (labels are bounded by the configuration).
//
// Thread-safety: `collect` runs on a civetweb thread, possibly while the process's other
// threads write their counters; it must only read thread-safe state. After the server's
// destructor returns, `collect` is never called again.
#pragma once

#include <prometheus/metric_family.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/metrics/histogram.h"
#include "common/status.h"

namespace prometheus {
class Exposer;
}

namespace pgwarden::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

// Builds one scrape's metric families. A family is created by its first sample; later samples
// with the same name join it (same type and help expected).
class Families {
 public:
  // Counter names end in "_total" (appended when `name` lacks it: X-macro counter names such
  // as requests_total stay readable).
  void counter(const std::string& name, const std::string& help, double value,
               const Labels& labels = {});
  void gauge(const std::string& name, const std::string& help, double value,
             const Labels& labels = {});
  void histogram(const std::string& name, const std::string& help, const HistogramSnapshot& h,
                 const Labels& labels = {});
  std::vector<prometheus::MetricFamily> take() { return std::move(families_); }

 private:
  prometheus::ClientMetric& add(const std::string& name, const std::string& help,
                                prometheus::MetricType type, const Labels& labels);
  std::vector<prometheus::MetricFamily> families_;
};

class MetricsServer {
 public:
  using Collect = std::function<void(Families&)>;

  // Serves GET /metrics on `listen` ("ADDRESS:PORT", an IPv4 address or a bracketed IPv6
  // address; config::check_listen_address validates it). unavailable (with the address and
  // the reason) when it cannot listen.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& listen, Collect collect);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The TCP port it listens on.
  int port() const { return port_; }

 private:
  class Collector;
  MetricsServer() = default;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::string host_;  // the listen address without the port
};

}  // namespace pgwarden::metrics
