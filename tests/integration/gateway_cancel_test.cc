// CancelRequest under faults, with real processes (docs/operations.md, "Cancelling
// statements"): the sandbox PostgreSQL, pgwarden-cp, pgwarden-dp, libpq and raw sockets.
//   * CancelRequests with a wrong key — the right process id with a guessed secret, or a made-up
//     pair — cancel nothing and reveal nothing (the gateway closes without a byte), also as a
//     flood of thousands, alongside a hundred half-sent cancel packets; the gateway's
//     descriptors come back to where they were, real logins keep working, and the right key
//     still cancels the statement (57014);
//   * a CancelRequest sent inside TLS (SSLRequest first, as libpq 17 does) cancels the
//     statement on the real backend;
//   * `pgwardenctl sessions kill` of a transaction-pooled session in a long statement ends the
//     statement on PostgreSQL too (no backend left running it).
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string cancel_packet(int32_t pid, int32_t secret) {
  std::string out;
  put32(out, 16);
  put32(out, 80877102);
  put32(out, static_cast<uint32_t>(pid));
  put32(out, static_cast<uint32_t>(secret));
  return out;
}

int open_fds(pid_t pid) {
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (::readdir(d) != nullptr) ++n;
  ::closedir(d);
  return n - 2;
}

class GatewayCancelTest : public SharedGatewayTest<GatewayCancelTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.loopback_only = true;  // raw logins without TLS from 127.0.0.1 (TLS is still offered)
    o.admin_principals = {{"ops", {"ops"}}};
    o.extra_service_keys = {"poolkill", "hung"};
    o.extra_targets_json =
        json{{"demo_pool",
              {{"pool_mode", "transaction"}, {"pool_size", 2}, {"pool_wait_timeout_ms", 2000}}}}
            .dump();
    return o;
  }

 protected:
  static bool running(const std::string& marker) {
    auto r = gw_->pg().psql("select count(*) from pg_stat_activity where query like '%" + marker +
                            "%' and state = 'active' and pid <> pg_backend_pid()");
    return r.is_ok() && std::atoi(r->c_str()) == 1;
  }
  static bool gone(const std::string& marker) {
    auto r = gw_->pg().psql("select count(*) from pg_stat_activity where query like '%" + marker +
                            "%' and pid <> pg_backend_pid()");
    return r.is_ok() && std::atoi(r->c_str()) == 0;
  }

  // A raw login (plaintext from loopback) that keeps the BackendKeyData the gateway issued.
  struct RawSession {
    int fd = -1;
    int32_t pid = 0;
    int32_t secret = 0;
    ~RawSession() {
      if (fd >= 0) ::close(fd);
    }
  };
  static bool raw_login(RawSession* s) {
    s->fd = connect_tcp(gw_->port());
    if (s->fd < 0) return false;
    if (!send_all(s->fd, startup_packet("agent", "demo"))) return false;
    std::string body;
    if (read_message(s->fd, &body, 10000) != 'R') return false;
    if (!send_all(s->fd, typed_message('p', cstr(gw_->token())))) return false;
    for (;;) {
      int t = read_message(s->fd, &body, 10000);
      if (t == 'K' && body.size() == 8) {
        auto be = [&](size_t at) {
          return static_cast<int32_t>(
              (uint32_t(uint8_t(body[at])) << 24) | (uint32_t(uint8_t(body[at + 1])) << 16) |
              (uint32_t(uint8_t(body[at + 2])) << 8) | uint32_t(uint8_t(body[at + 3])));
        };
        s->pid = be(0);
        s->secret = be(4);
      }
      if (t == 'Z') return s->pid != 0;
      if (t <= 0 || t == 'E') return false;
    }
  }
  // Reads the raw session's answer to its query: the SQLSTATE of its ErrorResponse, "ok" for
  // a result without error, "" when nothing complete arrived within `timeout_ms`.
  static std::string raw_outcome(RawSession& s, int timeout_ms) {
    std::string body;
    std::string state = "ok";
    for (;;) {
      int t = read_message(s.fd, &body, timeout_ms);
      if (t <= 0) return "";
      if (t == 'E') state = error_sqlstate(body);
      if (t == 'Z') return state;
    }
  }
};

TEST_F(GatewayCancelTest, WrongKeysCancelNothingRevealNothingAndAFloodExhaustsNothing) {
  RawSession s;
  ASSERT_TRUE(raw_login(&s));
  ASSERT_TRUE(send_all(s.fd, typed_message('Q', cstr("select pg_sleep(600), 'cx-wrong-key'"))));
  ASSERT_TRUE(eventually([] { return running("cx-wrong-key"); }, 10000));
  const int fds_before = open_fds(gw_->dp_pid());
  ASSERT_GT(fds_before, 0);

  // A hundred cancel packets cut in half, held open during the flood.
  std::vector<int> halves;
  for (int i = 0; i < 100; ++i) {
    int fd = connect_tcp(gw_->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, cancel_packet(s.pid, s.secret).substr(0, 8)));
    halves.push_back(fd);
  }
  // Thousands of wrong keys from 16 threads: the right pid with a guessed secret (what an
  // attacker who saw a pid would try) and made-up pairs. Each must be closed without a byte.
  constexpr int kThreads = 16;
  constexpr int kPerThread = 150;
  std::atomic<int> answered_bytes{0}, stayed_open{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<uint32_t>(t) * 7919u + 1);
      for (int i = 0; i < kPerThread; ++i) {
        int32_t secret = static_cast<int32_t>(rng());
        if (secret == s.secret) secret ^= 1;
        int32_t pid = (i % 2 == 0) ? s.pid : static_cast<int32_t>(rng() | 1);
        int fd = connect_tcp(gw_->port());
        if (fd < 0) continue;
        if (send_all(fd, cancel_packet(pid, secret))) {
          long got = read_until_close(fd, 10000);
          if (got > 0) answered_bytes.fetch_add(1);
          if (got < 0) stayed_open.fetch_add(1);
          done.fetch_add(1);
        }
        ::close(fd);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::printf(
      "[ cancel ] %d wrong-key CancelRequests handled; %d answered with bytes, %d left "
      "open\n",
      done.load(), answered_bytes.load(), stayed_open.load());
  EXPECT_EQ(done.load(), kThreads * kPerThread);
  EXPECT_EQ(answered_bytes.load(), 0) << "a wrong-key CancelRequest got an answer";
  EXPECT_EQ(stayed_open.load(), 0) << "a CancelRequest connection was left open";
  // A real login works meanwhile.
  {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    Res r(PQexec(c.get(), "select 1"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  for (int fd : halves) ::close(fd);
  // The statement was not cancelled by any of them.
  EXPECT_TRUE(running("cx-wrong-key")) << "a wrong key cancelled the statement";
  // Nothing was kept: the gateway's descriptors come back to where they were.
  int fds_after = -1;
  EXPECT_TRUE(eventually([&] { return (fds_after = open_fds(gw_->dp_pid())) <= fds_before; }))
      << "dp holds " << fds_after << " descriptors, " << fds_before << " before the flood";

  // The right key still cancels it.
  int fd = connect_tcp(gw_->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, cancel_packet(s.pid, s.secret)));
  EXPECT_EQ(read_until_close(fd, 10000), 0);
  ::close(fd);
  EXPECT_EQ(raw_outcome(s, 15000), "57014");
  EXPECT_TRUE(eventually([] { return !running("cx-wrong-key"); }, 10000));
}

TEST_F(GatewayCancelTest, CancelRequestInsideTlsCancelsTheBackend) {
  RawSession s;
  ASSERT_TRUE(raw_login(&s));
  ASSERT_TRUE(send_all(s.fd, typed_message('Q', cstr("select pg_sleep(600), 'cx-tls-cancel'"))));
  ASSERT_TRUE(eventually([] { return running("cx-tls-cancel"); }, 10000));

  int fd = connect_tcp(gw_->port());
  ASSERT_GE(fd, 0);
  std::string ssl_request;
  put32(ssl_request, 8);
  put32(ssl_request, 80877103);
  ASSERT_TRUE(send_all(fd, ssl_request));
  char answer = 0;
  ASSERT_EQ(::recv(fd, &answer, 1, 0), 1);
  ASSERT_EQ(answer, 'S');
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // the throwaway listener certificate
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  ASSERT_EQ(SSL_connect(ssl), 1) << ERR_error_string(ERR_get_error(), nullptr);
  std::string packet = cancel_packet(s.pid, s.secret);
  ASSERT_EQ(SSL_write(ssl, packet.data(), static_cast<int>(packet.size())),
            static_cast<int>(packet.size()));
  char buf[64];
  int n = SSL_read(ssl, buf, sizeof(buf));  // the gateway closes: nothing is answered
  EXPECT_LE(n, 0);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  EXPECT_EQ(raw_outcome(s, 15000), "57014");
}

TEST_F(GatewayCancelTest, KillOfAPooledSessionInALongStatementEndsItUpstream) {
  Conn c(PQconnectdb(gw_->conninfo_as("poolkill", "dbname=demo_pool").c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  ASSERT_EQ(PQsendQuery(c.get(), "select pg_sleep(600), 'cx-pool-kill'"), 1);
  ASSERT_TRUE(eventually([] { return running("cx-pool-kill"); }, 10000));
  CtlResult list = gw_->ctl("ops", {"sessions", "list", "--json"});
  ASSERT_EQ(list.code, 0) << list.err;
  std::string id;
  const json sessions = json::parse(list.out);
  for (const json& l : sessions["live"]) {
    if (l.value("identity", "") == "svc:poolkill") id = l.value("session_id", "");
  }
  ASSERT_FALSE(id.empty()) << list.out;
  CtlResult kill = gw_->ctl("ops", {"sessions", "kill", id, "--reason", "pooled long statement"});
  ASSERT_EQ(kill.code, 0) << kill.out << kill.err;
  Res r(PQgetResult(c.get()));
  EXPECT_EQ(sqlstate(r.get()), "57P01") << PQresultErrorMessage(r.get());
  EXPECT_TRUE(eventually([] { return gone("cx-pool-kill"); }, 10000))
      << "the killed pooled session's statement still runs in PostgreSQL";
  // The pool is usable afterwards (the dirty connection was not handed out again).
  Conn d(PQconnectdb(gw_->conninfo("dbname=demo_pool").c_str()));
  ASSERT_EQ(PQstatus(d.get()), CONNECTION_OK) << PQerrorMessage(d.get());
  for (int i = 0; i < 4; ++i) {
    Res ok(PQexec(d.get(), "select 1"));
    EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(ok.get());
  }
}

// PostgreSQL's postmaster hangs (SIGSTOP: the kernel still accepts connections, nobody answers
// them) when a pooled session needs a new upstream connection: the statement gets an error at
// pool_wait_timeout_ms instead of waiting forever (a CancelRequest cannot reach a connection
// that is still logging in), the session stays, and works once PostgreSQL answers again.
TEST_F(GatewayCancelTest, APooledLoginToAHungPostmasterEndsAtThePoolWaitTimeout) {
  auto dp_upstream_sockets = [] {
    // The dataplane's TCP connections to PostgreSQL, whatever their state (ESTABLISHED, or
    // CLOSE_WAIT until the dataplane has closed its side).
    std::string out = command_output(
        "ss -Htnp state all '( dport = :" + std::to_string(gw_->pg().port()) + " )' 2>/dev/null");
    int n = 0;
    for (size_t at = out.find("pgwarden-dp"); at != std::string::npos;
         at = out.find("pgwarden-dp", at + 1)) {
      ++n;
    }
    return n;
  };
  Conn c(PQconnectdb(gw_->conninfo_as("hung", "dbname=demo_pool").c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  // No pooled connection may be left for the statement to reuse: PostgreSQL ends them all, and
  // the dataplane drops each once it sees the close.
  ASSERT_TRUE(gw_->pg()
                  .psql("select pg_terminate_backend(pid) from pg_stat_activity where usename = "
                        "'app_scram'")
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return dp_upstream_sockets() == 0; }, 10000))
      << dp_upstream_sockets() << " dataplane sockets to PostgreSQL remain";
  auto pid_file =
      run_command("head -1 " + gw_->pg().get("PGW_SANDBOX_DIR") + "/data/postmaster.pid");
  ASSERT_TRUE(pid_file.is_ok()) << pid_file.status().to_string();
  const pid_t postmaster = static_cast<pid_t>(std::atoi(pid_file->c_str()));
  ASSERT_GT(postmaster, 0);
  ASSERT_EQ(::kill(postmaster, SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{postmaster};
  auto t0 = Clock::now();
  ASSERT_EQ(PQsendQuery(c.get(), "select 'cx-hung-postmaster'"), 1);
  // A gateway that waits for the hung login forever fails here instead of hanging the test.
  auto deadline = t0 + std::chrono::seconds(20);
  while (PQisBusy(c.get()) == 1 && Clock::now() < deadline) {
    pollfd p{PQsocket(c.get()), POLLIN, 0};
    (void)::poll(&p, 1, 200);
    if (PQconsumeInput(c.get()) == 0) break;
  }
  ASSERT_EQ(PQisBusy(c.get()), 0) << "the statement still waits for the hung postmaster";
  Res r(PQgetResult(c.get()));
  while (PGresult* more = PQgetResult(c.get())) PQclear(more);
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::printf("[ cancel ] pooled statement with a hung postmaster: %s after %lld ms: %s",
              sqlstate(r.get()).c_str(), static_cast<long long>(took),
              PQresultErrorMessage(r.get()));
  EXPECT_EQ(sqlstate(r.get()), "08006") << PQresultErrorMessage(r.get());
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("pool_wait_timeout_ms"),
            std::string::npos);
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << "the session did not survive";
  ::kill(postmaster, SIGCONT);
  Res ok(PQexec(c.get(), "select 1"));
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(ok.get());
}

}  // namespace
}  // namespace pgwarden::testing
