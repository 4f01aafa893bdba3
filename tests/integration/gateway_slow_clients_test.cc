// Slow and partial clients over TLS, with real processes (docs/operations.md, "Login floods"
// and docs/dataplane.md, "Memory per session"): pgwarden-dp, pgwarden-cp, the sandbox
// PostgreSQL, OpenSSL raw clients and libpq.
//   * Hundreds of connections that stop half way through their TLS ClientHello, and hundreds
//     that finish TLS and the startup packet and then never answer the password request, are
//     held open at once: real libpq logins (TLS, token, upstream SCRAM, SELECT) all succeed
//     meanwhile; every stalled connection is closed by the gateway at limits.startup_timeout_ms,
//     those past the TLS handshake with FATAL 08006 naming the limit.
//   * Sessions that stop reading while a large result streams (TLS, no masking) each hold at
//     most the per-session buffers: dp's peak RSS grows by less than the documented bound per
//     session, other sessions are served, and closing them leaves no backend running.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/fd_limit.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"

namespace pgwarden::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kStartupTimeoutMs = 3000;

int64_t ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

std::string ssl_request() {
  std::string out;
  put32(out, 8);
  put32(out, 80877103);
  return out;
}

// The bytes of a real TLS ClientHello (OpenSSL's, through memory BIOs).
std::string client_hello() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  (void)SSL_connect(ssl);  // wants to read the ServerHello: the ClientHello is in wbio
  char* data = nullptr;
  long n = BIO_get_mem_data(wbio, &data);
  std::string hello(data, static_cast<size_t>(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return hello;
}

// A TLS connection that sent its startup packet and got the password request, then stalls.
struct StalledAtPassword {
  int fd = -1;
  SSL* ssl = nullptr;
  ~StalledAtPassword() {
    if (ssl != nullptr) SSL_free(ssl);
    if (fd >= 0) ::close(fd);
  }
};

class GatewaySlowClientsTest : public SharedGatewayTest<GatewaySlowClientsTest> {
 public:
  static GatewayOptions gateway_options() {
    raise_fd_limit();  // several hundred sockets here, as many in pgwarden-dp
    GatewayOptions o;
    o.startup_timeout_ms = kStartupTimeoutMs;
    // Room for all the stalled connections of one address: this test measures the timeout
    // and the logins beside them, not the eviction (gateway_login_flood covers that).
    o.max_pending_logins = 2048;
    o.max_pending_logins_per_source = 1024;
    o.extra_service_keys = {"r0", "r1", "r2",  "r3",  "r4",  "r5",  "r6",  "r7",
                            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"};
    return o;
  }

 protected:
  static SSL_CTX* client_ctx() {
    static SSL_CTX* ctx = [] {
      SSL_CTX* c = SSL_CTX_new(TLS_client_method());
      SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);  // the throwaway listener certificate
      return c;
    }();
    return ctx;
  }
  // Reads one message over TLS (type, body); 0 on EOF/error.
  static int ssl_message(SSL* ssl, std::string* body) {
    auto read_n = [&](char* p, size_t n) {
      size_t got = 0;
      while (got < n) {
        int r = SSL_read(ssl, p + got, static_cast<int>(n - got));
        if (r <= 0) return false;
        got += static_cast<size_t>(r);
      }
      return true;
    };
    char hdr[5];
    if (!read_n(hdr, 5)) return 0;
    uint32_t len = (uint32_t(uint8_t(hdr[1])) << 24) | (uint32_t(uint8_t(hdr[2])) << 16) |
                   (uint32_t(uint8_t(hdr[3])) << 8) | uint32_t(uint8_t(hdr[4]));
    if (len < 4 || len > (1u << 20)) return 0;
    body->assign(len - 4, '\0');
    if (!read_n(body->data(), len - 4)) return 0;
    return static_cast<unsigned char>(hdr[0]);
  }
  static bool stall_at_password(StalledAtPassword* s) {
    s->fd = connect_tcp(gw_->port());
    if (s->fd < 0) return false;
    timeval limit{20, 0};  // a gateway that never answers fails the test instead of hanging it
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    if (!send_all(s->fd, ssl_request())) return false;
    char answer = 0;
    if (::recv(s->fd, &answer, 1, 0) != 1 || answer != 'S') return false;
    s->ssl = SSL_new(client_ctx());
    SSL_set_fd(s->ssl, s->fd);
    if (SSL_connect(s->ssl) != 1) return false;
    std::string startup = startup_packet("agent", "demo");
    if (SSL_write(s->ssl, startup.data(), static_cast<int>(startup.size())) <= 0) return false;
    std::string body;
    return ssl_message(s->ssl, &body) == 'R';  // AuthenticationCleartextPassword: stop here
  }
  static int backends_like(const std::string& marker, const std::string& extra = "") {
    auto r = gw_->pg().psql("select count(*) from pg_stat_activity where query like '%" + marker +
                            "%' and pid <> pg_backend_pid()" + extra);
    return r.is_ok() ? std::atoi(r->c_str()) : -1;
  }
};

TEST_F(GatewaySlowClientsTest, HalfClientHellosAndLoginsStalledAtThePasswordDelayNoRealLogin) {
  constexpr int kEach = 150;
  const std::string hello = client_hello();
  ASSERT_GT(hello.size(), 100u);
  std::vector<int> half_hellos;
  for (int i = 0; i < kEach; ++i) {
    int fd = connect_tcp(gw_->port());
    ASSERT_GE(fd, 0);
    timeval limit{20, 0};  // a worker that stopped serving fails the test instead of hanging it
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
    ASSERT_TRUE(send_all(fd, ssl_request()));
    char answer = 0;
    ASSERT_EQ(::recv(fd, &answer, 1, 0), 1);
    ASSERT_EQ(answer, 'S');
    ASSERT_TRUE(send_all(fd, hello.substr(0, hello.size() / 2)));
    half_hellos.push_back(fd);
  }
  std::vector<std::unique_ptr<StalledAtPassword>> stalled;
  auto opened = Clock::now();
  for (int i = 0; i < kEach; ++i) {
    stalled.push_back(std::make_unique<StalledAtPassword>());
    ASSERT_TRUE(stall_at_password(stalled.back().get())) << "stalled login " << i;
  }
  std::printf(
      "[ slow   ] %d half ClientHellos and %d logins stalled at the password open "
      "(opening took %lld ms)\n",
      kEach, kEach, static_cast<long long>(ms_since(opened)));

  // Real logins meanwhile. The bound only catches a login that crawls (a loaded two-core box
  // may run other suites); a starved one fails outright.
  constexpr int64_t kBoundMs = 8000;
  int64_t worst = 0;
  for (int i = 0; i < 10; ++i) {
    auto t0 = Clock::now();
    Conn c(PQconnectdb(gw_->conninfo_as("r" + std::to_string(i)).c_str()));
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    Res r(PQexec(c.get(), "select 1"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
    worst = std::max(worst, ms_since(t0));
  }
  std::printf("[ slow   ] slowest of 10 real logins beside them: %lld ms (bound %lld ms)\n",
              static_cast<long long>(worst), static_cast<long long>(kBoundMs));
  EXPECT_LT(worst, kBoundMs);

  // Every stalled connection is cut at the startup timeout: those past TLS are told why.
  int told = 0;
  for (auto& s : stalled) {
    std::string body;
    int t = ssl_message(s->ssl, &body);
    if (t == 'E' && error_sqlstate(body) == "08006" &&
        body.find("startup_timeout_ms") != std::string::npos) {
      ++told;
    }
  }
  EXPECT_EQ(told, kEach) << "stalled logins not told FATAL 08006 naming the timeout";
  int closed = 0;
  for (int fd : half_hellos) {
    // Nothing can be said to a client without a TLS session: the socket is closed.
    if (read_until_close(fd, 20000) >= 0) ++closed;
    ::close(fd);
  }
  EXPECT_EQ(closed, kEach) << "half-handshake connections left open";
  std::printf(
      "[ slow   ] all %d stalled connections closed %lld ms after they were opened "
      "(startup_timeout_ms %d)\n",
      2 * kEach, static_cast<long long>(ms_since(opened)), kStartupTimeoutMs);
}

TEST_F(GatewaySlowClientsTest, ClientsThatStopReadingLargeResultsHoldBoundedMemory) {
  constexpr int kStalled = 16;
  // docs/dataplane.md, "Memory per session": about 4 MiB per session whose data needs no
  // masking; the allowance doubles it, plus 32 MiB for the process's own variation.
  constexpr long kBoundKib = kStalled * 8 * 1024 + 32 * 1024;
  ASSERT_TRUE(gw_->reset_dp_peak_rss());
  const long peak_before = gw_->dp_peak_rss_kib();
  std::vector<Conn> stalled;
  for (int i = 0; i < kStalled; ++i) {
    stalled.emplace_back(PQconnectdb(gw_->conninfo_as("r" + std::to_string(i)).c_str()));
    ASSERT_EQ(PQstatus(stalled.back().get()), CONNECTION_OK)
        << PQerrorMessage(stalled.back().get());
    // About 2 GB each, never read.
    ASSERT_EQ(PQsendQuery(stalled.back().get(),
                          "select g, repeat('x', 2000) as pad from generate_series(1, 1000000) g "
                          "-- slow-reader"),
              1);
  }
  // Every upstream backend blocks writing to the gateway: the gateway stopped reading them
  // because the clients stopped reading it. That is the most the sessions hold.
  ASSERT_TRUE(eventually(
      [&] { return backends_like("slow-reader", " and wait_event = 'ClientWrite'") == kStalled; },
      60000))
      << backends_like("slow-reader", " and wait_event = 'ClientWrite'") << " of " << kStalled
      << " backends blocked on the gateway";
  const long grown = gw_->dp_peak_rss_kib() - peak_before;
  std::printf(
      "[ slow   ] %d sessions stalled on large results: dp peak RSS grew by %ld KiB "
      "(bound %ld KiB)\n",
      kStalled, grown, kBoundKib);
  EXPECT_LT(grown, kBoundKib);
  // Others are served meanwhile.
  {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    Res r(PQexec(c.get(), "select count(*) from generate_series(1, 1000)"));
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  }
  // The clients go away: nothing keeps running upstream.
  stalled.clear();
  EXPECT_TRUE(eventually([&] { return backends_like("slow-reader") == 0; }, 30000))
      << backends_like("slow-reader") << " backends still run the abandoned statements";
}

}  // namespace
}  // namespace pgwarden::testing
