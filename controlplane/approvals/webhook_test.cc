#include "controlplane/approvals/webhook.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "controlplane/approvals/approval_store.h"

namespace pgwarden::approvals {
namespace {

using namespace std::chrono_literals;

// A real HTTP/1.1 listener on 127.0.0.1 that records request bodies and answers `status`
// (or never answers when `hang` is set).
class TinyHttpServer {
 public:
  explicit TinyHttpServer(int status = 200, bool hang = false) : status_(status), hang_(hang) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 64), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TinyHttpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mu_);
    return bodies_;
  }
  std::vector<std::string> heads() {
    std::lock_guard lock(mu_);
    return heads_;
  }

 private:
  void serve() {
    while (!stop_) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      if (hang_) {
        held_.push_back(c);
        continue;
      }
      std::string data;
      char buf[4096];
      size_t want = std::string::npos;
      while (true) {
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        data.append(buf, static_cast<size_t>(n));
        size_t end = data.find("\r\n\r\n");
        if (end != std::string::npos && want == std::string::npos) {
          auto cl = data.find("Content-Length: ");
          want = end + 4 + std::stoul(data.substr(cl + 16));
        }
        if (want != std::string::npos && data.size() >= want) break;
      }
      size_t end = data.find("\r\n\r\n");
      {
        std::lock_guard lock(mu_);
        heads_.push_back(data.substr(0, end));
        bodies_.push_back(data.substr(end + 4));
      }
      std::string resp = "HTTP/1.1 " + std::to_string(status_) + " X\r\nContent-Length: 0\r\n\r\n";
      ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
      ::close(c);
    }
    for (int c : held_) ::close(c);
  }

  int status_;
  bool hang_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> bodies_, heads_;
  std::vector<int> held_;
};

template <typename F>
bool eventually(F f, std::chrono::milliseconds limit = 5000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return f();
}

TEST(WebhookNotifier, CreateRejectsUnknownSchemesAndPlainHttpToRemoteHosts) {
  for (const char* bad : {"ftp://x/", "hooks.example.com/x", "http://hooks.example.com/x",
                          "http://10.1.2.3/x", "https://", "https://h:99999/", "https://h/a b"}) {
    auto hook = WebhookNotifier::create({.url = bad});
    ASSERT_FALSE(hook.is_ok()) << bad;
    EXPECT_EQ(hook.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(hook.status().message().rfind("webhook URL: ", 0), 0u) << hook.status().message();
  }
  EXPECT_TRUE(WebhookNotifier::create({.url = "https://hooks.example.com/x"}).is_ok());
  EXPECT_TRUE(WebhookNotifier::create({.url = "http://127.0.0.1:8088/x"}).is_ok());
}

TEST(WebhookNotifier, AuthorizationSecretMustBeReadablePrivateAndSingleLine) {
  char tmpl[] = "/tmp/pgw-webhook-auth-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string file = std::string(tmpl) + "/token";
  auto write = [&](const std::string& text, mode_t mode) {
    FILE* f = std::fopen(file.c_str(), "w");
    std::fputs(text.c_str(), f);
    std::fclose(f);
    ::chmod(file.c_str(), mode);
  };
  auto with_file = [&] {
    WebhookOptions o{.url = "https://hooks.example.com/x"};
    o.authorization = vault::SecretSource{vault::SecretSource::Kind::kFile, file};
    return WebhookNotifier::create(std::move(o));
  };
  EXPECT_FALSE(with_file().is_ok());  // missing
  write("Bearer s3cret\n", 0644);
  auto shared = with_file();
  ASSERT_FALSE(shared.is_ok());
  EXPECT_EQ(shared.status().message().find("s3cret"), std::string::npos);
  write("Bearer s3cret\nX-Injected: 1\n", 0600);
  auto injected = with_file();
  ASSERT_FALSE(injected.is_ok());
  EXPECT_EQ(injected.status().message().find("s3cret"), std::string::npos);
  write("Bearer s3cret\n", 0600);
  EXPECT_TRUE(with_file().is_ok());
  std::filesystem::remove_all(tmpl);
}

TEST(WebhookNotifier, SendsTheAuthorizationHeaderFromTheSecret) {
  TinyHttpServer server;
  ::setenv("PGW_WEBHOOK_TEST_AUTH", "Bearer env-token", 1);
  WebhookOptions o{.url = server.url()};
  o.authorization = vault::SecretSource{vault::SecretSource::Kind::kEnv, "PGW_WEBHOOK_TEST_AUTH"};
  auto hook = WebhookNotifier::create(std::move(o));
  ::unsetenv("PGW_WEBHOOK_TEST_AUTH");
  ASSERT_TRUE(hook.is_ok()) << hook.status().to_string();
  EXPECT_TRUE((*hook)->enqueue({{"id", "r1"}}));
  ASSERT_TRUE(eventually([&] { return server.heads().size() == 1; }));
  EXPECT_NE(server.heads()[0].find("\r\nAuthorization: Bearer env-token\r\n"), std::string::npos)
      << server.heads()[0];
  EXPECT_TRUE(eventually([&] { return (*hook)->webhook_sent() == 1; }));
}

TEST(WebhookNotifier, PostsJsonForNewApprovalRequest) {
  TinyHttpServer server;
  auto hook = WebhookNotifier::create({.url = server.url()});
  ASSERT_TRUE(hook.is_ok());
  char tmpl[] = "/tmp/pgw-webhook-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  ApprovalStoreOptions o;
  o.state_dir = tmpl;
  o.start_timer_thread = false;
  WebhookNotifier* h = hook->get();
  o.on_created = [h](const ApprovalRequest& r) { h->enqueue(webhook_body(r)); };
  auto store = ApprovalStore::open(o);
  ASSERT_TRUE(store.is_ok());
  NewApprovalRequest req;
  req.session_id = "s1";
  req.identity = "agent";
  req.sql = "DROP TABLE crm.orders";
  req.settings.approver_groups = {"dba"};
  auto r = (*store)->create(req);
  ASSERT_TRUE(r.is_ok());
  ASSERT_TRUE(eventually([&] { return server.bodies().size() == 1; }));
  auto body = nlohmann::json::parse(server.bodies()[0]);
  EXPECT_EQ(body["id"], r->id);
  EXPECT_EQ(body["sql"], "DROP TABLE crm.orders");
  EXPECT_EQ(body["event"], "approval_requested");
  EXPECT_NE(server.heads()[0].find("POST /hook HTTP/1.1"), std::string::npos);
  EXPECT_NE(server.heads()[0].find("Content-Type: application/json"), std::string::npos);
  EXPECT_TRUE(eventually([&] { return (*hook)->webhook_sent() == 1; }));
  std::filesystem::remove_all(tmpl);
}

// A chat message has no top-level "id": the caller names its request, and the delivery is
// reported (cp audits it as approval_chat_sent); a failure is not reported as delivered.
TEST(WebhookNotifier, ReportsEachDeliveryWithTheRequestItNames) {
  TinyHttpServer server;
  std::mutex mu;
  std::vector<std::string> delivered;
  WebhookOptions o{.url = server.url()};
  o.on_delivered = [&](std::string_view id) {
    std::lock_guard lock(mu);
    delivered.emplace_back(id);
  };
  auto hook = WebhookNotifier::create(std::move(o));
  ASSERT_TRUE(hook.is_ok());
  EXPECT_TRUE((*hook)->enqueue({{"text", "approval needed"}, {"blocks", nlohmann::json::array()}},
                               "req-7"));
  EXPECT_TRUE((*hook)->enqueue({{"id", "req-8"}}));
  ASSERT_TRUE(eventually([&] { return (*hook)->webhook_sent() == 2; }));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(delivered, (std::vector<std::string>{"req-7", "req-8"}));
  }
  TinyHttpServer failing(500);
  bool reported = false;
  WebhookOptions f{.url = failing.url()};
  f.on_delivered = [&](std::string_view) { reported = true; };
  auto bad = WebhookNotifier::create(std::move(f));
  ASSERT_TRUE(bad.is_ok());
  EXPECT_TRUE((*bad)->enqueue({{"id", "req-9"}}));
  ASSERT_TRUE(eventually([&] { return (*bad)->webhook_failed() == 1; }));
  bad->reset();  // joins the notifier thread: no late report
  EXPECT_FALSE(reported);
}

TEST(WebhookNotifier, ErrorStatusAndUnreachableEndpointCountAsFailures) {
  TinyHttpServer server(500);
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> failures;
  WebhookOptions o{.url = server.url()};
  o.on_failure = [&](std::string_view id, const Status& st) {
    std::lock_guard lock(mu);
    failures.emplace_back(std::string(id), st.message());
  };
  auto hook = WebhookNotifier::create(std::move(o));
  ASSERT_TRUE(hook.is_ok());
  EXPECT_TRUE((*hook)->enqueue({{"id", "req-1"}}));
  EXPECT_TRUE(eventually([&] { return (*hook)->webhook_failed() == 1; }));
  EXPECT_EQ((*hook)->webhook_sent(), 0u);
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(failures.size(), 1u);
    EXPECT_EQ(failures[0].first, "req-1");
    EXPECT_EQ(failures[0].second, "webhook answered HTTP 500");
  }

  // Port 1 on loopback: nothing listens there.
  auto dead = WebhookNotifier::create({.url = "http://127.0.0.1:1/x"});
  ASSERT_TRUE(dead.is_ok());
  EXPECT_TRUE((*dead)->enqueue({{"a", 1}}));
  EXPECT_TRUE(eventually([&] { return (*dead)->webhook_failed() == 1; }));
}

TEST(WebhookNotifier, HangingEndpointNeverBlocksEnqueueAndOverflowIsDropped) {
  TinyHttpServer server(200, /*hang=*/true);
  auto hook =
      WebhookNotifier::create({.url = server.url(), .queue_capacity = 8, .timeout_ms = 500});
  ASSERT_TRUE(hook.is_ok());
  auto start = std::chrono::steady_clock::now();
  int accepted = 0;
  for (int i = 0; i < 100; ++i) accepted += (*hook)->enqueue({{"n", i}}) ? 1 : 0;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1000ms);  // blocking would cost 500 ms each
  EXPECT_LE(accepted, 9);  // the queue plus at most the one in flight
  EXPECT_EQ((*hook)->webhook_dropped(), static_cast<uint64_t>(100 - accepted));
  EXPECT_TRUE(eventually([&] { return (*hook)->webhook_failed() >= 1; }));
}

}  // namespace
}  // namespace pgwarden::approvals
