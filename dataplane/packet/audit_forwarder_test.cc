#include "dataplane/packet/audit_forwarder.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/protocol/frame.h"
#include "common/protocol/messages.h"
#include "dataplane/packet/audit_event.h"

namespace pgwarden::packet {
namespace {

using nlohmann::json;

// A control-plane endpoint speaking the dp <-> cp framing on a real Unix socket: answers
// hello, records every other frame. One connection at a time.
class CpEndpoint {
 public:
  explicit CpEndpoint(std::string path) : path_(std::move(path)) {
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path_.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~CpEndpoint() { stop(); }

  void stop() {
    if (fd_ < 0) return;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    fd_ = -1;
    int c = conn_.exchange(-1);
    if (c >= 0) ::shutdown(c, SHUT_RDWR);
    thread_.join();
    ::unlink(path_.c_str());
  }

  std::vector<json> frames() {
    std::lock_guard<std::mutex> lock(mu_);
    return frames_;
  }
  // The frames once at least `n` have arrived (or after 30 s, whatever arrived): waits on the
  // endpoint's reads, not on a clock.
  std::vector<json> wait_frames(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return frames_.size() >= n; });
    return frames_;
  }

 private:
  void serve() {
    while (true) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      conn_ = c;
      protocol::FrameDecoder dec;
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(c, buf, sizeof buf, 0)) > 0) {
        dec.feed(std::string_view(buf, static_cast<size_t>(n)));
        while (true) {
          auto f = dec.next();
          if (!f.is_ok() || !f->has_value()) break;
          json j = json::parse(**f);
          if (j.value("type", "") == "hello") {
            std::string out;
            (void)protocol::append_message(
                out, {{"id", j["id"]}, {"ok", true}, {"protocol", 1}, {"policy_version", 7}});
            (void)::send(c, out.data(), out.size(), MSG_NOSIGNAL);
          }
          {
            std::lock_guard<std::mutex> lock(mu_);
            frames_.push_back(j);
          }
          cv_.notify_all();
        }
      }
      conn_ = -1;
      ::close(c);
    }
  }

  std::string path_;
  int fd_ = -1;
  std::atomic<int> conn_{-1};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<json> frames_;
};

AuditEvent deny_event(uint16_t port) {
  AuditEvent ev;
  ev.unix_ms = 1764000000000;
  ev.client = Address::v4(0xC6120010);
  ev.client_port = port;
  ev.server = Address::v4(0xC6120014);
  ev.server_port = 5432;
  ev.reason = "deny:deny.drop_database";
  return ev;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) out.push_back(json::parse(line));
  return out;
}

class AuditForwarderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string base = "/tmp/pgw_audit_fwd_" + std::to_string(::getpid()) + "_" +
                       ::testing::UnitTest::GetInstance()->current_test_info()->name();
    socket_ = base + ".sock";
    file_ = base + ".jsonl";
    std::remove(file_.c_str());
  }
  void TearDown() override { std::remove(file_.c_str()); }

  std::string socket_, file_;
};

TEST(AuditEventTest, WireDenyEventCarriesRuleClientAndServer) {
  json j = deny_event(40000).to_json();
  EXPECT_EQ(j["type"], "event");
  EXPECT_EQ(j["kind"], "wire_deny");
  EXPECT_EQ(j["session_id"], "wire:198.18.0.16:40000");
  EXPECT_EQ(j["verdict"], "deny");
  EXPECT_EQ(j["rule"], "deny.drop_database");
  EXPECT_EQ(j["reason"], "deny:deny.drop_database");
  EXPECT_EQ(j["server"], "198.18.0.20:5432");
  EXPECT_FALSE(j.contains("id"));  // events carry no id and get no response
}

TEST(AuditEventTest, ControlPlaneEventParserAcceptsWireDeny) {
  auto ev = protocol::Event::from_json(deny_event(40000).to_json());
  ASSERT_TRUE(ev.is_ok()) << ev.status().to_string();
  EXPECT_EQ(ev->kind, "wire_deny");
  EXPECT_EQ(ev->session_id, "wire:198.18.0.16:40000");
  EXPECT_EQ(ev->fields["rule"], "deny.drop_database");
}

TEST_F(AuditForwarderTest, EventsReachCpAsEventFramesAfterHello) {
  CpEndpoint cp(socket_);
  auto f = AuditForwarder::start({.cp_socket = socket_, .fallback_path = file_});
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  (*f)->submit(deny_event(40000).to_json());
  (*f)->submit(deny_event(40001).to_json());
  (*f)->flush();
  AuditForwarderStats s = (*f)->stats();
  EXPECT_EQ(s.sent_to_cp, 2u);
  EXPECT_EQ(s.written_to_file, 0u);
  EXPECT_EQ(s.cp_connects, 1u);
  f->reset();  // closes the connection: every frame has been read by the endpoint
  std::vector<json> frames = cp.wait_frames(3);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0]["type"], "hello");
  EXPECT_EQ(frames[1]["kind"], "wire_deny");
  EXPECT_EQ(frames[1]["client"], "198.18.0.16:40000");
  EXPECT_EQ(frames[2]["client"], "198.18.0.16:40001");
  EXPECT_TRUE(read_jsonl(file_).empty());
}

TEST_F(AuditForwarderTest, UnreachableCpFallsBackToTheJsonlFileAndCountsIt) {
  auto f = AuditForwarder::start({.cp_socket = socket_, .fallback_path = file_});
  ASSERT_TRUE(f.is_ok());
  (*f)->submit(deny_event(40000).to_json());
  (*f)->flush();
  AuditForwarderStats s = (*f)->stats();
  EXPECT_EQ(s.sent_to_cp, 0u);
  EXPECT_EQ(s.written_to_file, 1u);
  EXPECT_EQ(s.cp_unreachable, 1u);
  EXPECT_EQ(s.cp_connect_failures, 1u);
  std::vector<json> lines = read_jsonl(file_);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["reason"], "deny:deny.drop_database");
}

TEST_F(AuditForwarderTest, CpGoingAwayMidwaySendsLaterEventsToTheFile) {
  auto cp = std::make_unique<CpEndpoint>(socket_);
  auto f = AuditForwarder::start(
      {.cp_socket = socket_, .fallback_path = file_, .reconnect_interval_ms = 60000});
  ASSERT_TRUE(f.is_ok());
  (*f)->submit(deny_event(40000).to_json());
  (*f)->flush();
  EXPECT_EQ((*f)->stats().sent_to_cp, 1u);
  cp->stop();
  cp.reset();
  usleep(20000);
  (*f)->submit(deny_event(40001).to_json());
  (*f)->submit(deny_event(40002).to_json());
  (*f)->flush();
  AuditForwarderStats s = (*f)->stats();
  EXPECT_EQ(s.sent_to_cp, 1u);
  EXPECT_EQ(s.written_to_file, 2u);
  EXPECT_EQ(s.cp_unreachable, 2u);
  EXPECT_EQ(read_jsonl(file_).size(), 2u);
}

// Waits until the forwarder has dealt with `n` stats snapshots (sent or not).
AuditForwarderStats wait_stats(AuditForwarder& f, uint64_t n) {
  AuditForwarderStats s = f.stats();
  for (int i = 0; i < 500 && s.stats_sent + s.stats_unsent < n; ++i) {
    usleep(10000);
    s = f.stats();
  }
  return s;
}

json stats_event(uint64_t rx) {
  return {{"type", "event"},
          {"kind", "dataplane_stats"},
          {"dp", {{"name", "gw"}}},
          {"lcores", json::array({{{"counters", {{"rx_packets", rx}}}}})}};
}

TEST_F(AuditForwarderTest, StatsSnapshotsGoToCpOnTheSameConnectionAndNeverToTheFile) {
  CpEndpoint cp(socket_);
  auto f = AuditForwarder::start({.cp_socket = socket_, .fallback_path = file_});
  ASSERT_TRUE(f.is_ok());
  (*f)->submit(deny_event(40000).to_json());
  (*f)->publish_stats(stats_event(5));
  AuditForwarderStats s = wait_stats(**f, 1);
  EXPECT_EQ(s.stats_sent, 1u);
  EXPECT_EQ(s.cp_connects, 1u);
  f->reset();
  std::vector<json> frames = cp.wait_frames(3);
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[1]["kind"], "wire_deny");  // queued events go first
  EXPECT_EQ(frames[2]["kind"], "dataplane_stats");
  EXPECT_EQ(frames[2]["lcores"][0]["counters"]["rx_packets"], 5);
  EXPECT_TRUE(read_jsonl(file_).empty());
}

TEST_F(AuditForwarderTest, StatsSnapshotsForUnreachableCpAreDiscardedNotWritten) {
  auto f = AuditForwarder::start({.cp_socket = socket_, .fallback_path = file_});
  ASSERT_TRUE(f.is_ok());
  (*f)->publish_stats(stats_event(1));
  AuditForwarderStats s = wait_stats(**f, 1);
  EXPECT_EQ(s.stats_sent, 0u);
  EXPECT_EQ(s.stats_unsent, 1u);
  EXPECT_EQ(s.written_to_file, 0u);
  EXPECT_TRUE(read_jsonl(file_).empty());
}

TEST_F(AuditForwarderTest, FileOnlyModeWritesEveryEvent) {
  auto f = AuditForwarder::start({.fallback_path = file_});
  ASSERT_TRUE(f.is_ok());
  for (uint16_t p = 0; p < 10; ++p) (*f)->submit(deny_event(p).to_json());
  f->reset();  // the destructor delivers what is queued
  EXPECT_EQ(read_jsonl(file_).size(), 10u);
}

TEST_F(AuditForwarderTest, NoSinkAtAllCountsEventsLost) {
  auto f = AuditForwarder::start({});
  ASSERT_TRUE(f.is_ok());
  (*f)->submit(deny_event(1).to_json());
  (*f)->flush();
  EXPECT_EQ((*f)->stats().lost, 1u);
}

TEST_F(AuditForwarderTest, UnwritableAuditLogIsAStartError) {
  EXPECT_FALSE(AuditForwarder::start({.fallback_path = "/nonexistent/dir/a.jsonl"}).is_ok());
}

}  // namespace
}  // namespace pgwarden::packet
