// CpClient against a fake control plane on a real Unix socket (fakes over mocks for I/O).
#include "dataplane/session/cp_client.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

namespace pgwarden::session {
namespace {

using nlohmann::json;

std::string read_frame(int fd) {
  unsigned char hdr[4];
  size_t got = 0;
  while (got < 4) {
    ssize_t n = recv(fd, hdr + got, 4 - got, 0);
    if (n <= 0) return {};
    got += static_cast<size_t>(n);
  }
  uint32_t len =
      (uint32_t{hdr[0]} << 24) | (uint32_t{hdr[1]} << 16) | (uint32_t{hdr[2]} << 8) | hdr[3];
  std::string body(len, '\0');
  got = 0;
  while (got < len) {
    ssize_t n = recv(fd, body.data() + got, len - got, 0);
    if (n <= 0) return {};
    got += static_cast<size_t>(n);
  }
  return body;
}

void write_frame(int fd, const json& j) {
  std::string body = j.dump();
  uint32_t n = static_cast<uint32_t>(body.size());
  std::string f = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                   static_cast<char>(n >> 8), static_cast<char>(n)};
  f += body;
  ASSERT_EQ(send(fd, f.data(), f.size(), MSG_NOSIGNAL), static_cast<ssize_t>(f.size()));
}

class FakeCp {
 public:
  explicit FakeCp(std::string path) : path_(std::move(path)) {
    unlink(path_.c_str());
    fd_ = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, path_.c_str(), sizeof(sa.sun_path) - 1);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    EXPECT_EQ(listen(fd_, 4), 0);
  }
  ~FakeCp() {
    close(fd_);
    unlink(path_.c_str());
  }
  int accept_one() { return accept(fd_, nullptr, nullptr); }

 private:
  std::string path_;
  int fd_;
};

void run_until(EventLoop& loop, const std::function<bool()>& done, int64_t ms = 5000) {
  int64_t end = monotonic_ms() + ms;
  while (!done() && monotonic_ms() < end) loop.run_once(20);
}

TEST(CpClientTest, HelloThenOutOfOrderAnswersReachTheirCallers) {
  std::string path = "/tmp/pgw-cpclient-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  std::thread server([&] {
    int c = cp.accept_one();
    json hello = json::parse(read_frame(c));
    EXPECT_EQ(hello["type"], "hello");
    EXPECT_EQ(hello["protocol"], 1);
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"policy_version", 7}});
    json a = json::parse(read_frame(c));
    json b = json::parse(read_frame(c));
    EXPECT_TRUE(a.contains("deadline_ms"));
    // Answer in reverse order.
    write_frame(c, {{"id", b["id"]}, {"ok", true}, {"verdict", "allow"}});
    write_frame(c, {{"id", a["id"]},
                    {"ok", false},
                    {"error", {{"sqlstate", "28000"}, {"code", "bad"}, {"message", "no"}}}});
    char x;
    recv(c, &x, 1, 0);
    close(c);
  });
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  client.start();
  run_until(loop, [&] { return client.ready(); });
  ASSERT_TRUE(client.ready());
  EXPECT_EQ(client.policy_version(), 7u);
  std::optional<Status> first;
  std::optional<std::string> second;
  client.request("authenticate", {{"token", "t"}}, 2000,
                 [&](Result<json> r) { first = r.status(); });
  client.request("analyse", {{"sql", "select 1"}}, 2000, [&](Result<json> r) {
    second = r.is_ok() ? (*r)["verdict"].get<std::string>() : "error";
  });
  run_until(loop, [&] { return first.has_value() && second.has_value(); });
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(first->sqlstate(), "28000");
  EXPECT_EQ(*second, "allow");
  client.stop();
  server.join();
}

TEST(CpClientTest, RequestsFailClosedWhenControlPlaneIsAbsent) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, "/tmp/pgw-no-such-cp.sock");
  client.start();
  std::optional<Status> st;
  client.request("analyse", {}, 1000, [&](Result<json> r) { st = r.status(); });
  EXPECT_FALSE(st.has_value());  // never called synchronously
  run_until(loop, [&] { return st.has_value(); });
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code(), StatusCode::kUnavailable);
  EXPECT_EQ(st->sqlstate(), "08006");
  client.stop();
}

TEST(CpClientTest, PendingRequestFailsWhenControlPlaneDisconnects) {
  std::string path = "/tmp/pgw-cpclient2-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  std::thread server([&] {
    int c = cp.accept_one();
    json hello = json::parse(read_frame(c));
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"policy_version", 1}});
    read_frame(c);
    close(c);  // dies without answering
  });
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  client.start();
  run_until(loop, [&] { return client.ready(); });
  std::optional<Status> st;
  client.request("analyse", {}, 5000, [&](Result<json> r) { st = r.status(); });
  run_until(loop, [&] { return st.has_value(); });
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code(), StatusCode::kUnavailable);
  EXPECT_FALSE(client.ready());
  client.stop();
  server.join();
}

// A cp that answers pings is kept however long a request waits; one that stops answering
// anything (a stopped process keeps its socket open) is dropped after the silence limit, and
// what waited for it fails closed.
TEST(CpClientTest, ASilentControlPlaneIsDroppedAfterTheSilenceLimit) {
  std::string path = "/tmp/pgw-cpclient-silent-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  std::atomic<int> pings{0};
  std::thread server([&] {
    int c = cp.accept_one();
    json hello = json::parse(read_frame(c));
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"policy_version", 1}});
    for (std::string f = read_frame(c); !f.empty(); f = read_frame(c)) {
      json j = json::parse(f, nullptr, false);
      if (j.value("type", "") != "ping") continue;
      // The first ping is answered; then this cp hangs (reads, answers nothing).
      if (pings.fetch_add(1) == 0) write_frame(c, {{"id", j["id"]}, {"ok", true}});
    }
    close(c);  // the client closed the connection
  });
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  client.set_silence_limit_ms(300);
  client.start();
  run_until(loop, [&] { return client.ready(); });
  ASSERT_TRUE(client.ready());
  std::optional<Status> st;
  client.request("approval", {{"sql", "delete from t"}}, 3600000,
                 [&](Result<json> r) { st = r.status(); });
  run_until(
      loop, [&] { return st.has_value(); }, 20000);
  ASSERT_TRUE(st.has_value()) << "a request to a silent cp never failed";
  EXPECT_EQ(st->code(), StatusCode::kUnavailable);
  EXPECT_NE(st->message().find("answered nothing"), std::string::npos) << st->message();
  EXPECT_EQ(client.silent_disconnects(), 1u);
  // The answered ping kept the connection; the unanswered one ended it.
  EXPECT_EQ(pings.load(), 2);
  client.stop();
  server.join();
}

TEST(CpClientTest, CoalescedEventsKeepTheirOrderAndReachCpWithoutARequestOrOnStop) {
  std::string path = "/tmp/pgw-cpclient3-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  client.start();
  int c = cp.accept_one();
  ASSERT_GE(c, 0);
  run_until(
      loop, [] { return false; }, 50);  // the hello is written
  json hello = json::parse(read_frame(c));
  write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"policy_version", 1}});
  run_until(loop, [&] { return client.ready(); });
  ASSERT_TRUE(client.ready());
  auto event = [](int n) {
    return R"({"type":"event","kind":"statement","session_id":"s","n":)" + std::to_string(n) + "}";
  };
  // Events alone are written by the delay timer, in order.
  for (int n = 0; n < 3; ++n) client.event_text(event(n));
  run_until(
      loop, [] { return false; }, 10 * CpClient::kEventDelayMs);
  for (int n = 0; n < 3; ++n) EXPECT_EQ(json::parse(read_frame(c))["n"], n);
  // A request is written after the events queued before it.
  client.event_text(event(3));
  bool answered = false;
  client.request("analyse", {{"sql", "select 1"}}, 2000, [&](Result<json>) { answered = true; });
  client.event_text(event(4));
  loop.run_once(0);  // the request's flush runs after the current batch
  EXPECT_EQ(json::parse(read_frame(c))["n"], 3);
  json req = json::parse(read_frame(c));
  EXPECT_EQ(req["type"], "analyse");
  EXPECT_EQ(json::parse(read_frame(c))["n"], 4);
  write_frame(c, {{"id", req["id"]}, {"ok", true}, {"verdict", "allow"}});
  run_until(loop, [&] { return answered; });
  EXPECT_TRUE(answered);
  // stop() writes what is still queued before it disconnects.
  client.event_text(event(5));
  client.stop();
  EXPECT_EQ(json::parse(read_frame(c))["n"], 5);
  close(c);
}

}  // namespace
}  // namespace pgwarden::session

namespace pgwarden::session {
namespace {

TEST(CpClientTest, RequestWithWaitBudgetIsSentAfterReconnectAndReregistrationFirst) {
  std::string path = "/tmp/pgw-cpclient-wait-" + std::to_string(getpid()) + ".sock";
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  std::vector<std::string> order;  // frame types as the fake cp saw them
  std::optional<json> event_seen;
  client.set_on_event([&](json ev) { event_seen = std::move(ev); });
  // On every (re)connection the caller re-registers first; it must precede queued requests.
  client.set_on_ready_change([&](bool up) {
    if (up) client.request("reregister", {{"session_id", "s1"}}, 2000, [](Result<json>) {});
  });
  client.start();  // nobody listens yet
  std::optional<std::string> waited;
  std::optional<Status> refused;
  client.request(
      "analyse", {{"sql", "select 1"}}, 2000,
      [&](Result<json> r) { waited = r.is_ok() ? "ok" : r.status().message(); },
      /*wait_for_cp_ms=*/5000);
  client.request("authenticate", {{"token", "t"}}, 2000,
                 [&](Result<json> r) { refused = r.status(); });  // no budget: at once
  run_until(loop, [&] { return refused.has_value(); });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->code(), StatusCode::kUnavailable);
  EXPECT_FALSE(waited.has_value());
  EXPECT_EQ(client.waiting_requests(), 1u);

  FakeCp cp(path);
  std::thread server([&] {
    int c = cp.accept_one();
    json hello = json::parse(read_frame(c));
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"policy_version", 9}});
    for (int i = 0; i < 2; ++i) {
      json req = json::parse(read_frame(c));
      order.push_back(req["type"]);
      write_frame(c, {{"id", req["id"]}, {"ok", true}});
    }
    write_frame(c, {{"type", "event"}, {"kind", "kill"}, {"session_id", "s1"}});
    char x;
    recv(c, &x, 1, 0);
    close(c);
  });
  run_until(loop, [&] { return waited.has_value() && event_seen.has_value(); });
  client.stop();
  server.join();
  EXPECT_EQ(waited, "ok");
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], "reregister");
  EXPECT_EQ(order[1], "analyse");
  ASSERT_TRUE(event_seen.has_value());
  EXPECT_EQ((*event_seen)["kind"], "kill");
}

TEST(CpClientTest, WaitBudgetRunsOutWithUnavailable) {
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, "/tmp/pgw-no-such-cp-wait.sock");
  client.start();
  std::optional<Status> st;
  int64_t t0 = monotonic_ms();
  client.request(
      "record", {{"sql", "x"}}, 2000, [&](Result<json> r) { st = r.status(); },
      /*wait_for_cp_ms=*/200);
  run_until(loop, [&] { return st.has_value(); });
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code(), StatusCode::kUnavailable);
  EXPECT_NE(st->message().find("cp_unavailable_wait_ms"), std::string::npos);
  EXPECT_GE(monotonic_ms() - t0, 190);
  EXPECT_EQ(client.waiting_requests(), 0u);
  client.stop();
}

// The hello's first bytes carry the ring's descriptors (SCM_RIGHTS): read them with the frame.
std::string read_frame_with_fds(int fd, std::vector<int>* fds) {
  char hdr[4];
  iovec iov{hdr, sizeof hdr};
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t got = recvmsg(fd, &msg, MSG_WAITALL);
  if (got != 4) {
    ADD_FAILURE() << "recvmsg: " << got << " " << strerror(errno);
    return {};
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t k = 0; k < n; ++k) {
      int f;
      memcpy(&f, CMSG_DATA(c) + k * sizeof(int), sizeof f);
      fds->push_back(f);
    }
  }
  auto* p = reinterpret_cast<unsigned char*>(hdr);
  uint32_t len = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  std::string body(len, '\0');
  if (recv(fd, body.data(), len, MSG_WAITALL) != static_cast<ssize_t>(len)) return {};
  return body;
}

bool wait_readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

// A record the fake cp took off the forward ring (the payload copied).
struct RingRecord {
  protocol::RecordHeader header;
  std::string payload;
};

// The fake cp's consumer: takes `count` records off the forward ring, parking and waiting on
// cp_wake as cp does. Fails when the dp does not wake the parked consumer.
::testing::AssertionResult read_ring(protocol::SpscRing& fwd, int cp_wake_fd, size_t count,
                                     std::vector<RingRecord>* out) {
  while (out->size() < count) {
    protocol::RecordView v;
    if (fwd.peek(&v)) {
      out->push_back(RingRecord{v.header, std::string(v.payload)});
      fwd.advance();
      continue;
    }
    fwd.release();
    if (!fwd.park()) continue;
    if (!wait_readable(cp_wake_fd, 5000)) {
      return ::testing::AssertionFailure() << "the dp did not wake the parked consumer after "
                                           << out->size() << " of " << count << " records";
    }
    uint64_t n;
    if (read(cp_wake_fd, &n, sizeof n) != 8) return ::testing::AssertionFailure() << "cp_wake";
  }
  fwd.release();
  return ::testing::AssertionSuccess();
}

// The fake cp's answer: every record up to seq `written` is answered (refusals, if any, are
// already on the backward ring); the dp is woken when it waits for one of them.
void answer_through(protocol::RingRegion& region, int dp_wake_fd, uint64_t written) {
  protocol::WatermarkBlock& wm = region.watermark();
  wm.written.store(written);
  if (wm.dp_wants.exchange(0) != 0) {
    uint64_t one = 1;
    EXPECT_EQ(write(dp_wake_fd, &one, sizeof one), 8);
  }
}

// Events and write-ahead records travel on the ring; the records are answered through the
// watermark, a refusal through the backward ring, and the dp is woken by its eventfd.
TEST(CpClientTest, RingCarriesEventsAndRecordsAnsweredByTheWatermark) {
  std::string path = "/tmp/pgw-cpclient-ring-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  std::atomic<bool> server_ok{false};
  std::thread server([&] {
    int c = cp.accept_one();
    std::vector<int> fds;
    json hello = json::parse(read_frame_with_fds(c, &fds));
    ASSERT_TRUE(hello.contains("ring"));
    ASSERT_EQ(fds.size(), 4u);  // region, cp_wake, dp_wake and the dp process's life pipe
    struct stat life {};
    ASSERT_EQ(fstat(fds[3], &life), 0);
    EXPECT_TRUE(S_ISFIFO(life.st_mode));
    pollfd alive{fds[3], POLLIN, 0};
    EXPECT_EQ(poll(&alive, 1, 0), 0);  // no hang-up while the process lives
    auto region = protocol::RingRegion::attach(fds[0]);
    ASSERT_TRUE(region.is_ok()) << region.status().message();
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"ring", true}});
    std::vector<RingRecord> seen;
    ASSERT_TRUE(read_ring(region->forward(), fds[1], 3, &seen));
    EXPECT_EQ(seen[0].header.type, static_cast<uint16_t>(protocol::RecordType::kStatement));
    EXPECT_EQ(seen[0].header.session, 7u);
    EXPECT_EQ(seen[1].header.type, static_cast<uint16_t>(protocol::RecordType::kStatementRecord));
    EXPECT_EQ(seen[1].header.seq, 1u);
    EXPECT_EQ(seen[2].header.seq, 2u);
    auto rec = protocol::record_to_json(protocol::RecordType::kStatementRecord, seen[2].payload);
    ASSERT_TRUE(rec.is_ok());
    EXPECT_EQ((*rec)["sql"], "SELECT 2");
    // Record 2 is refused (disk full); then the watermark passes both.
    std::string err = R"({"sqlstate":"53100","code":"recording_failed","message":"disk full"})";
    ASSERT_TRUE(region->backward().try_write(
        static_cast<uint16_t>(protocol::BackwardType::kRecordRefused), 0, 2, {err}));
    region->backward().publish();
    answer_through(*region, fds[2], 2);
    close(fds[1]);
    close(fds[2]);
    close(fds[3]);
    server_ok = true;
    // Keep the connection open until the client is done.
    char b;
    (void)recv(c, &b, 1, 0);
    close(c);
  });
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  client.start();
  run_until(loop, [&] { return client.ready(); });
  ASSERT_TRUE(client.ready());
  EXPECT_TRUE(client.ring_active());
  protocol::StatementFields ev;
  ev.sql = "SELECT 1";
  ev.rule = "r";
  std::string p0, p1, p2;
  ev.encode(p0);
  client.post(protocol::RecordType::kStatement, 7, p0);
  ev.encode(p1);
  ev.sql = "SELECT 2";
  ev.encode(p2);
  std::optional<Result<json>> first, second;
  client.record(7, p1, 5000, [&](Result<json> r) { first.emplace(std::move(r)); });
  client.record(7, p2, 5000, [&](Result<json> r) { second.emplace(std::move(r)); });
  run_until(loop, [&] { return first.has_value() && second.has_value(); });
  ASSERT_TRUE(first.has_value() && second.has_value());
  EXPECT_TRUE(first->is_ok()) << first->status().message();
  ASSERT_FALSE(second->is_ok());
  EXPECT_EQ(second->status().sqlstate(), "53100");
  EXPECT_EQ(second->status().message(), "disk full");
  client.stop();
  server.join();
  EXPECT_TRUE(server_ok);
}

// After a reconnection the dp re-registers its live sessions; their records must not reach
// the ring before cp answered those re-registrations (cp would not know the session yet and
// refuse the record): they are held, in order, and published once the answer is in.
TEST(CpClientTest, RingRecordsWaitUntilTheReregistrationsAreAnswered) {
  std::string path = "/tmp/pgw-cpclient-rereg-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  std::atomic<bool> reregister_read{false};
  std::atomic<bool> client_published{false};
  std::atomic<bool> held{false};
  std::vector<RingRecord> seen;  // after the answer, in ring order
  std::thread server([&] {
    int c = cp.accept_one();
    std::vector<int> fds;
    json hello = json::parse(read_frame_with_fds(c, &fds));
    ASSERT_EQ(fds.size(), 4u);
    auto region = protocol::RingRegion::attach(fds[0]);
    ASSERT_TRUE(region.is_ok()) << region.status().message();
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"ring", true}});
    json rereg = json::parse(read_frame(c));
    EXPECT_EQ(rereg["type"], "reregister");
    reregister_read = true;
    while (!client_published) std::this_thread::yield();
    protocol::RecordView v;
    held = !region->forward().peek(&v);  // nothing before the answer
    write_frame(c, {{"id", rereg["id"]}, {"ok", true}, {"policy", {{"version", 1}}}});
    ASSERT_TRUE(read_ring(region->forward(), fds[1], 2, &seen));
    answer_through(*region, fds[2], 1);
    close(fds[1]);
    close(fds[2]);
    close(fds[3]);
    char b;
    (void)recv(c, &b, 1, 0);
    close(c);
  });
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  std::optional<Status> reregistered;
  client.set_on_ready_change([&](bool up) {
    if (!up) return;
    client.request("reregister", {{"session_id", "0000000000000007"}}, 5000,
                   [&](Result<json> r) { reregistered = r.status(); });
  });
  protocol::StatementFields ev;
  ev.sql = "INSERT 1";
  std::string payload;
  ev.encode(payload);
  // A statement that waited for cp (its record goes out right after the re-registration).
  std::optional<Result<json>> recorded;
  client.record(
      7, payload, 5000, [&](Result<json> r) { recorded.emplace(std::move(r)); },
      /*wait_for_cp_ms=*/5000);
  client.start();
  run_until(loop, [&] { return client.ready() && reregister_read.load(); });
  EXPECT_TRUE(client.ready());
  EXPECT_TRUE(client.ring_active());
  client.post(protocol::RecordType::kStatement, 7, payload);  // an event made meanwhile
  // Give the loop every chance to publish (its publish is deferred to the next iteration).
  for (int i = 0; i < 10; ++i) loop.run_once(1);
  EXPECT_FALSE(reregistered.has_value());
  client_published = true;
  run_until(loop, [&] { return recorded.has_value(); });
  client.stop();
  server.join();
  EXPECT_TRUE(held) << "a record reached the ring before cp answered the reregister";
  ASSERT_TRUE(reregistered.has_value());
  EXPECT_TRUE(reregistered->is_ok());
  ASSERT_TRUE(recorded.has_value());
  EXPECT_TRUE(recorded->is_ok()) << recorded->status().message();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].header.type, static_cast<uint16_t>(protocol::RecordType::kStatementRecord));
  EXPECT_EQ(seen[1].header.type, static_cast<uint16_t>(protocol::RecordType::kStatement));
}

// The fake cp's side of a connection that accepts the ring: the hello (with the three
// descriptors) is answered with "ring": true. `fds`: region, cp_wake, dp_wake, life.
protocol::RingRegion accept_with_ring(FakeCp& cp, int* conn, std::vector<int>* fds) {
  *conn = cp.accept_one();
  json hello = json::parse(read_frame_with_fds(*conn, fds));
  EXPECT_EQ(fds->size(), 4u);
  auto region = protocol::RingRegion::attach(fds->empty() ? -1 : (*fds)[0]);
  EXPECT_TRUE(region.is_ok()) << region.status().message();
  write_frame(*conn, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}, {"ring", true}});
  return region.is_ok() ? std::move(*region) : protocol::RingRegion();
}

// Closes the fake cp's side once the client has disconnected.
void close_after_client(int conn, const std::vector<int>& fds) {
  for (size_t i = 1; i < fds.size(); ++i) close(fds[i]);
  char b;
  (void)recv(conn, &b, 1, 0);
  close(conn);
}

// A completion record's payload.
std::string end_payload(std::string_view sql) {
  protocol::StatementEndFields end;
  end.sql = sql;
  std::string payload;
  end.encode(payload);
  return payload;
}

// A statement's results are published at the end of the loop iteration that wrote them: cp
// takes them without waiting for the session's next record.
TEST(CpClientTest, ResultsRecordsArePublishedAtTheEndOfTheLoopIteration) {
  std::string path = "/tmp/pgw-cpclient-busy-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  std::atomic<bool> posted{false};
  std::atomic<bool> checked{false};
  bool published = false;
  std::thread server([&] {
    int c = -1;
    std::vector<int> fds;
    protocol::RingRegion region = accept_with_ring(cp, &c, &fds);
    while (!posted) std::this_thread::yield();
    protocol::RecordView v;
    published = region.forward().peek(&v);
    checked = true;
    close_after_client(c, fds);
  });
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  client.start();
  run_until(loop, [&] { return client.ready(); });
  ASSERT_TRUE(client.ring_active());
  client.post(protocol::RecordType::kStatementEnd, 7, end_payload("SELECT 1"));
  loop.run_once(0);  // the end of the iteration publishes
  posted = true;
  while (!checked) std::this_thread::yield();  // (stop() would publish anyway)
  client.stop();
  server.join();
  EXPECT_TRUE(published) << "results were not published at the end of the loop iteration";
}

// A control plane that does not answer "ring": true gets the same events as JSON frames.
TEST(CpClientTest, WithoutTheRingEventsAndRecordsFallBackToJsonFrames) {
  std::string path = "/tmp/pgw-cpclient-noring-" + std::to_string(getpid()) + ".sock";
  FakeCp cp(path);
  std::thread server([&] {
    int c = cp.accept_one();
    json hello = json::parse(read_frame(c));  // recv(): any descriptors are discarded
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}});
    json e = json::parse(read_frame(c));
    EXPECT_EQ(e["type"], "event");
    EXPECT_EQ(e["kind"], "statement");
    EXPECT_EQ(e["session_id"], "0000000000000007");
    EXPECT_EQ(e["sql"], "SELECT 1");
    json r = json::parse(read_frame(c));
    EXPECT_EQ(r["type"], "record");
    EXPECT_EQ(r["sql"], "SELECT 1");
    write_frame(c, {{"id", r["id"]}, {"ok", true}});
    char b;
    (void)recv(c, &b, 1, 0);
    close(c);
  });
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path);
  client.start();
  run_until(loop, [&] { return client.ready(); });
  ASSERT_TRUE(client.ready());
  EXPECT_FALSE(client.ring_active());
  protocol::StatementFields ev;
  ev.sql = "SELECT 1";
  std::string p;
  ev.encode(p);
  client.post(protocol::RecordType::kStatement, 7, p);
  std::optional<Result<json>> done;
  client.record(7, p, 5000, [&](Result<json> r) { done.emplace(std::move(r)); });
  run_until(loop, [&] { return done.has_value(); });
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->is_ok());
  client.stop();
  server.join();
}

// Events made while there is no connection wait in the client (up to 8 MiB) and reach cp on
// the next connection, in order, after the re-registrations; what did not fit is counted for
// its session (take_lost(): the reregister's `lost`, recorded by cp as a recording_gap).
TEST(CpClientTest, EventsMadeWithoutAConnectionAreDeliveredAfterTheReregistrationOrCountedLost) {
  std::string path = "/tmp/pgw-cpclient-kept-" + std::to_string(getpid()) + ".sock";
  EventLoop loop;
  ASSERT_TRUE(loop.init().is_ok());
  CpClient client(&loop, path, /*use_ring=*/false);
  json lost;
  client.set_on_ready_change([&](bool up) {
    if (!up) return;
    lost = client.take_lost(7);
    client.request("reregister", {{"session_id", "0000000000000007"}, {"lost", lost}}, 2000,
                   [](Result<json>) {});
  });
  client.start();              // nobody listens yet
  constexpr int kEvents = 12;  // ~1 MB each: 8 are kept, 4 do not fit
  for (int i = 0; i < kEvents; ++i) {
    protocol::RowsWriter rows;
    rows.add_column("v", 25, 0);
    rows.begin_row(1);
    rows.add_value(std::string(1000000, static_cast<char>('a' + i)));
    client.post(protocol::RecordType::kRows, 7, rows.take(1000 + i));
  }
  FakeCp cp(path);
  std::vector<json> frames;
  std::thread server([&] {
    int c = cp.accept_one();
    json hello = json::parse(read_frame(c));
    write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}});
    json reg = json::parse(read_frame(c));
    frames.push_back(reg);
    write_frame(c, {{"id", reg["id"]}, {"ok", true}});
    for (int i = 0; i < kEvents; ++i) {
      std::string f = read_frame(c);
      if (f.empty()) break;
      frames.push_back(json::parse(f));
      if (frames.back().value("kind", "") != "rows") break;
    }
    close(c);
  });
  run_until(
      loop, [&] { return client.ready() && frames.size() >= 9; }, 10000);
  client.stop();
  server.join();
  ASSERT_GE(frames.size(), 9u);
  EXPECT_EQ(frames[0]["type"], "reregister");
  EXPECT_EQ(frames[0]["lost"]["records"], 4);
  EXPECT_EQ(frames[0]["lost"]["kinds"]["rows"], 4);
  EXPECT_GT(frames[0]["lost"]["first_ts"].get<int64_t>(), 0);
  for (int i = 0; i < 8; ++i) {  // the kept ones, in the order they were made
    const json& e = frames[1 + i];
    EXPECT_EQ(e["kind"], "rows");
    EXPECT_EQ(e["session_id"], "0000000000000007");
    EXPECT_EQ(e["ts_ms"], 1000 + i);
  }
  EXPECT_TRUE(client.take_lost(7).is_null());
}

// Without the ring a write-ahead record travels as a `record` request. One in flight when the
// connection drops may have been written by cp: it is not sent again blindly (that would record
// the statement twice) but asked about in the session's reregister (`ahead`, by request id);
// "written" completes it, "unknown" sends it again.
TEST(CpClientTest, AJsonRecordInFlightAcrossAReconnectionIsAskedAboutNotSentAgain) {
  for (const std::string state : {"written", "unknown"}) {
    std::string path = "/tmp/pgw-cpclient-ahead-" + std::to_string(getpid()) + ".sock";
    FakeCp cp(path);
    EventLoop loop;
    ASSERT_TRUE(loop.init().is_ok());
    CpClient client(&loop, path, /*use_ring=*/false);
    client.set_on_ready_change([&](bool up) {
      if (!up) return;
      json request = {{"session_id", "0000000000000007"}};
      if (json ahead = client.uncertain_ahead(7); !ahead.is_null()) request["ahead"] = ahead;
      client.request("reregister", std::move(request), 2000,
                     [&client](Result<json> r) { client.resolve_ahead(7, r); });
    });
    std::vector<json> second;  // what the second connection carried
    std::thread server([&] {
      int c = cp.accept_one();
      json hello = json::parse(read_frame(c));
      write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}});
      (void)read_frame(c);  // the first connection's reregister: no `ahead`
      json rec = json::parse(read_frame(c));
      EXPECT_EQ(rec["type"], "record");
      close(c);  // cp "wrote" it and went away before it answered
      c = cp.accept_one();
      hello = json::parse(read_frame(c));
      write_frame(c, {{"id", hello["id"]}, {"ok", true}, {"protocol", 1}});
      json reg = json::parse(read_frame(c));
      second.push_back(reg);
      json answer = {{"id", reg["id"]}, {"ok", true}};
      if (reg.contains("ahead")) answer["ahead"] = {{"seq", reg["ahead"]["seq"]}, {"state", state}};
      write_frame(c, answer);
      if (state == "unknown") {
        json again = json::parse(read_frame(c));
        second.push_back(again);
        write_frame(c, {{"id", again["id"]}, {"ok", true}});
      }
      char b;
      (void)recv(c, &b, 1, 0);
      close(c);
    });
    client.start();
    run_until(loop, [&] { return client.ready(); });
    protocol::StatementFields ev;
    ev.sql = "INSERT INTO t VALUES (1)";
    ev.ts_ms = 1764029901002;
    std::string p;
    ev.encode(p);
    std::optional<Result<json>> done;
    client.record(
        7, p, 5000, [&](Result<json> r) { done.emplace(std::move(r)); },
        /*wait_for_cp_ms=*/5000);
    run_until(
        loop, [&] { return done.has_value(); }, 10000);
    client.stop();
    server.join();
    ASSERT_TRUE(done.has_value()) << state;
    EXPECT_TRUE(done->is_ok()) << state << ": " << done->status().to_string();
    ASSERT_GE(second.size(), 1u) << state;
    ASSERT_TRUE(second[0].contains("ahead")) << second[0].dump();
    EXPECT_EQ(second[0]["ahead"]["ts_ms"], 1764029901002);
    // "written": nothing follows the reregister; "unknown": the record, once.
    ASSERT_EQ(second.size(), state == "written" ? 1u : 2u) << state;
    if (state == "unknown") {
      EXPECT_EQ(second[1]["type"], "record");
      EXPECT_EQ(second[1]["sql"], "INSERT INTO t VALUES (1)");
    }
  }
}

}  // namespace
}  // namespace pgwarden::session
