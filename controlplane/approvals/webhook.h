// WebhookNotifier: tells an external system (chat bot, ticketing) that an approval request
// is waiting, by HTTP POSTing a JSON body to a configured URL.
//
// Delivery is best effort and never on the decision path: enqueue() only pushes onto a
// bounded queue (full -> the notification is dropped and counted) and one background thread
// posts, with a connect/IO timeout per attempt and no retries. A slow or failing webhook
// therefore never delays creating, deciding or expiring a request. Only http:// URLs are
// supported (https is rejected at construction; put a local TLS-terminating relay in front).
//
// Thread-safety: enqueue() and the counters are safe from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/status.h"

namespace pgwarden::approvals {

struct HttpUrl {
  std::string host;
  int port = 80;
  std::string path = "/";
};

// Parses "http://host[:port][/path]". invalid_argument for anything else (https included).
Result<HttpUrl> parse_http_url(const std::string& url);

struct WebhookOptions {
  std::string url;
  size_t queue_capacity = 256;
  int timeout_ms = 3000;  // per connect and per read/write
};

#define PGW_WEBHOOK_COUNTERS(X) \
  X(webhook_sent)               \
  X(webhook_failed)             \
  X(webhook_dropped)

class WebhookNotifier {
 public:
  static Result<std::unique_ptr<WebhookNotifier>> create(const WebhookOptions& options);
  ~WebhookNotifier();  // stops the thread; undelivered notifications are discarded
  WebhookNotifier(const WebhookNotifier&) = delete;
  WebhookNotifier& operator=(const WebhookNotifier&) = delete;

  // Queues `body` for POSTing; false (and webhook_dropped++) when the queue is full.
  bool enqueue(const nlohmann::json& body);

#define PGW_DECLARE_COUNTER(name) \
  uint64_t name() const { return name##_.load(); }
  PGW_WEBHOOK_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER

 private:
  WebhookNotifier(WebhookOptions options, HttpUrl url);
  void run();
  Status post(const std::string& body);

  WebhookOptions options_;
  HttpUrl url_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> queue_;
  bool stopping_ = false;
  std::thread thread_;
#define PGW_DEFINE_COUNTER(name) std::atomic<uint64_t> name##_{0};
  PGW_WEBHOOK_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER
};

// The JSON body posted for a new request: {"event":"approval_requested", "id", "identity",
// "target", "rule", "reason", "sql", "deadline_ms", "approve_command"}.
struct ApprovalRequest;
nlohmann::json webhook_body(const ApprovalRequest& request);

}  // namespace pgwarden::approvals
