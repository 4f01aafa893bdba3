// WebhookNotifier: tells an external system (chat bot, ticketing) that an approval request
// is waiting, by POSTing a JSON body to a configured URL.
//
// Transport: controlplane/net's client. https:// with the server certificate verified
// against the system trust store or `ca_file` plus host name verification; plain http:// is
// accepted only to a loopback host (a local relay). An optional Authorization header value
// comes from a secret (file or environment variable, read once at create()); it is never
// logged, audited or put in an error message.
//
// Delivery is best effort and never on the decision path: enqueue() only pushes onto a
// bounded queue (full -> the notification is dropped and counted) and one background thread
// posts, with a connect timeout and an overall timeout per attempt, a bounded response read
// and no retries. A slow or failing webhook therefore never delays creating, deciding or
// expiring a request. Each failed attempt is counted and reported to `on_failure`, each
// delivery to `on_delivered` (the control plane logs and audits both).
//
// Thread-safety: enqueue() and the counters are safe from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.h"
#include "controlplane/vault/secret.h"

namespace pgwarden::approvals {

struct WebhookOptions {
  std::string url;  // https://host[:port]/path, or http:// to a loopback host
  size_t queue_capacity = 256;
  int timeout_ms = 3000;          // one attempt: connect + TLS handshake + request + response
  int connect_timeout_ms = 1000;  // TCP connect (capped by timeout_ms)
  std::string ca_file;            // PEM bundle for https; "" = system trust store
  // The Authorization header's whole value (e.g. "Bearer abc"); a file must be private
  // (mode & 077 == 0). No header when unset.
  std::optional<vault::SecretSource> authorization;
  // Called on the notifier thread after a failed attempt with the approval request id (""
  // when the body has none) and the error (never containing the Authorization value).
  // Must not block for long: later notifications wait behind it.
  std::function<void(std::string_view approval_id, const Status& error)> on_failure;
  // Called on the notifier thread after a delivered notification (a 2xx answer) with its
  // approval request id (the audit trail's "message sent" step). Same rules as on_failure.
  std::function<void(std::string_view approval_id)> on_delivered;
};

#define PGW_WEBHOOK_COUNTERS(X) \
  X(webhook_sent)               \
  X(webhook_failed)             \
  X(webhook_dropped)

class WebhookNotifier {
 public:
  // invalid_argument for a bad URL (unknown scheme, plain http to a non-loopback host, ...),
  // the secret's error when the Authorization secret cannot be read, invalid_argument when it
  // contains control characters.
  static Result<std::unique_ptr<WebhookNotifier>> create(WebhookOptions options);
  ~WebhookNotifier();  // stops the thread; undelivered notifications are discarded
  WebhookNotifier(const WebhookNotifier&) = delete;
  WebhookNotifier& operator=(const WebhookNotifier&) = delete;

  // Queues `body` for POSTing; false (and webhook_dropped++) when the queue is full.
  // `approval_id` names the request in on_failure/on_delivered; "" = the body's "id".
  bool enqueue(const nlohmann::json& body, std::string approval_id = "");

#define PGW_DECLARE_COUNTER(name) \
  uint64_t name() const { return name##_.load(); }
  PGW_WEBHOOK_COUNTERS(PGW_DECLARE_COUNTER)
#undef PGW_DECLARE_COUNTER

 private:
  struct Item {
    std::string approval_id;
    std::string body;
  };
  WebhookNotifier(WebhookOptions options, vault::Secret authorization);
  void run();
  Status post(const std::string& body);

  WebhookOptions options_;
  vault::Secret authorization_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::thread thread_;
#define PGW_DEFINE_COUNTER(name) std::atomic<uint64_t> name##_{0};
  PGW_WEBHOOK_COUNTERS(PGW_DEFINE_COUNTER)
#undef PGW_DEFINE_COUNTER
};

// The JSON body posted for a new request: {"event":"approval_requested", "id", "identity",
// "target", "rule", "reason", "sql", "created_ms", "deadline_ms", "approve_command"}.
struct ApprovalRequest;
nlohmann::json webhook_body(const ApprovalRequest& request);

}  // namespace pgwarden::approvals
