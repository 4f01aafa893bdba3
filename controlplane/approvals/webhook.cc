#include "controlplane/approvals/webhook.h"

#include <chrono>

#include "controlplane/approvals/approval_store.h"
#include "controlplane/net/http_client.h"

namespace pgwarden::approvals {

namespace {
constexpr size_t kMaxResponseBytes = 64 * 1024;  // only the status matters
}  // namespace

Result<std::unique_ptr<WebhookNotifier>> WebhookNotifier::create(WebhookOptions options) {
  auto url = net::parse_url(options.url, /*allow_plain_http=*/true);
  if (!url) return invalid_argument("webhook URL: " + url.status().message());
  vault::Secret authorization;
  if (options.authorization) {
    auto secret = vault::read_secret(*options.authorization, /*require_private_file=*/true);
    if (!secret) return secret.status();
    for (char c : secret->view()) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return invalid_argument("webhook authorization secret from " +
                                options.authorization->location + " contains control characters");
      }
    }
    authorization = std::move(*secret);
  }
  std::unique_ptr<WebhookNotifier> n(
      new WebhookNotifier(std::move(options), std::move(authorization)));
  n->thread_ = std::thread([raw = n.get()] { raw->run(); });
  return n;
}

WebhookNotifier::WebhookNotifier(WebhookOptions options, vault::Secret authorization)
    : options_(std::move(options)), authorization_(std::move(authorization)) {}

WebhookNotifier::~WebhookNotifier() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool WebhookNotifier::enqueue(const nlohmann::json& body, std::string approval_id) {
  Item item;
  item.approval_id = std::move(approval_id);
  if (auto id = body.find("id"); item.approval_id.empty() && id != body.end() && id->is_string()) {
    item.approval_id = id->get<std::string>();
  }
  item.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= options_.queue_capacity) {
      ++webhook_dropped_;
      return false;
    }
    queue_.push_back(std::move(item));
  }
  cv_.notify_one();
  return true;
}

void WebhookNotifier::run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    Status st = post(item.body);
    if (st.is_ok()) {
      ++webhook_sent_;
      if (options_.on_delivered) options_.on_delivered(item.approval_id);
    } else {
      ++webhook_failed_;
      if (options_.on_failure) options_.on_failure(item.approval_id, st);
    }
    lock.lock();
  }
}

Status WebhookNotifier::post(const std::string& body) {
  net::HttpRequest request;
  request.method = "POST";
  request.headers = {{"Content-Type", "application/json"}};
  if (!authorization_.empty()) request.headers.emplace_back("Authorization", authorization_.view());
  request.body = body;
  net::HttpClientOptions o;
  o.ca_file = options_.ca_file;
  o.timeout = std::chrono::milliseconds(options_.timeout_ms);
  o.connect_timeout = std::chrono::milliseconds(options_.connect_timeout_ms);
  o.max_response_bytes = kMaxResponseBytes;
  o.allow_plain_http = true;
  auto response = net::http_request(options_.url, request, o);
  if (!response) return response.status();
  if (response->status < 200 || response->status > 299) {
    return unavailable("webhook answered HTTP " + std::to_string(response->status));
  }
  return Status::ok();
}

nlohmann::json webhook_body(const ApprovalRequest& r) {
  return nlohmann::json{
      {"event", "approval_requested"},
      {"id", r.id},
      {"identity", r.identity},
      {"target", r.target},
      {"rule", r.rule},
      {"reason", r.request_reason},
      {"sql", r.sql},
      {"effect", r.effect.reasons},
      {"estimated_rows", r.effect.estimated_rows < 0 ? nlohmann::json(nullptr)
                                                     : nlohmann::json(r.effect.estimated_rows)},
      {"dry_run_rows",
       r.effect.dry_run_rows < 0 ? nlohmann::json(nullptr) : nlohmann::json(r.effect.dry_run_rows)},
      {"created_ms", r.created_ms},
      {"deadline_ms", r.deadline_ms},
      {"approve_command", "pgwardenctl approvals approve " + r.id}};
}

}  // namespace pgwarden::approvals
