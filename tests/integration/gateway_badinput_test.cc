// Hostile and broken clients against pgwarden-dp: garbage, truncated and oversized packets, a
// client that stops reading, hundreds of connections at once. After each, the gateway must
// still serve a well-behaved client, with bounded memory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <openssl/rand.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"

namespace pgwarden::testing {
namespace {

class GatewayBadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gw_ = new GatewayHarness();
    GatewayOptions o;
    o.loopback_only = true;  // raw clients log in without TLS from 127.0.0.1
    o.max_connections = 2000;
    // This suite tests the connection machinery with 500 concurrent raw connections from one
    // address; the login-flood budget has its own suite (gateway_login_flood).
    o.max_pending_logins = 2000;
    o.max_pending_logins_per_source = 2000;
    Status st = gw_->start(o);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void TearDownTestSuite() {
    delete gw_;
    gw_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "---- dp log ----\n" << gw_->dp_log();
    ExpectWellBehavedClientIsServed();
  }

  static void ExpectWellBehavedClientIsServed() {
    PGconn* c = PQconnectdb(gw_->conninfo().c_str());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    PGresult* r = PQexec(c, "select count(*) from crm.customers");
    EXPECT_EQ(PQresultStatus(r), PGRES_TUPLES_OK) << PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
  }

  // Logs in over plaintext (loopback-only listener); returns the socket after ReadyForQuery.
  static int raw_login() {
    int fd = connect_tcp(gw_->port());
    if (fd >= 0 && !login_plaintext(fd, gw_->token())) {
      close(fd);
      fd = -1;
    }
    return fd;
  }

  static GatewayHarness* gw_;
};

GatewayHarness* GatewayBadInputTest::gw_ = nullptr;

TEST_F(GatewayBadInputTest, RandomBytesGetAProtocolErrorOrAClose) {
  for (int i = 0; i < 20; ++i) {
    int fd = connect_tcp(gw_->port());
    ASSERT_GE(fd, 0);
    std::string junk(4096, '\0');
    RAND_bytes(reinterpret_cast<unsigned char*>(junk.data()), static_cast<int>(junk.size()));
    send_all(fd, junk);
    std::string body;
    int t = read_message(fd, &body, 5000);
    EXPECT_TRUE(t == 'E' || t == 0) << t;
    close(fd);
  }
}

TEST_F(GatewayBadInputTest, RandomBytesAfterLoginEndTheSessionWith08P01) {
  int fd = raw_login();
  ASSERT_GE(fd, 0);
  std::string junk = "\x01\x02garbage that is not a message";
  send_all(fd, junk);
  std::string body;
  int t = read_message(fd, &body, 5000);
  ASSERT_EQ(t, 'E');
  EXPECT_EQ(error_sqlstate(body), "08P01");
  close(fd);
}

TEST_F(GatewayBadInputTest, TruncatedStartupPacketsAreHarmless) {
  for (int i = 0; i < 50; ++i) {
    int fd = connect_tcp(gw_->port());
    ASSERT_GE(fd, 0);
    std::string s = startup_packet("agent", "demo");
    send_all(fd, s.substr(0, static_cast<size_t>(i % 10)));
    close(fd);
  }
}

TEST_F(GatewayBadInputTest, GiantLengthHeaderIsRefusedWith54000WithoutAllocating) {
  long before = gw_->dp_rss_kib();
  int fd = connect_tcp(gw_->port());
  ASSERT_GE(fd, 0);
  std::string hdr;
  put32(hdr, 0x40000000);  // a 1 GiB startup packet
  put32(hdr, 196608);
  send_all(fd, hdr);
  std::string body;
  ASSERT_EQ(read_message(fd, &body, 5000), 'E');
  EXPECT_EQ(error_sqlstate(body), "54000");
  close(fd);

  fd = raw_login();
  ASSERT_GE(fd, 0);
  std::string q(1, 'Q');
  put32(q, 0x40000000);  // a 1 GiB Query
  q += "select ";
  send_all(fd, q);
  ASSERT_EQ(read_message(fd, &body, 5000), 'E');
  EXPECT_EQ(error_sqlstate(body), "54000");
  // An ERROR in protocol order, not a FATAL: the rest of the message is discarded as it
  // arrives (never buffered) and the session would go on after it.
  EXPECT_EQ(read_message(fd, &body, 5000), 'Z');
  close(fd);
  EXPECT_LT(gw_->dp_rss_kib() - before, 32 * 1024);
}

TEST_F(GatewayBadInputTest, ClientThatStopsReadingDoesNotGrowGatewayMemory) {
  int fd = raw_login();
  ASSERT_GE(fd, 0);
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  long before = gw_->dp_rss_kib();
  // ~400 MB of result rows that the client never reads.
  send_all(fd, typed_message('Q', cstr("select repeat('x', 10000) from "
                                       "generate_series(1, 40000)")));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  long grown = gw_->dp_rss_kib() - before;
  EXPECT_LT(grown, 64 * 1024) << "dp grew by " << grown << " KiB";
  // Other sessions are unaffected while this one is stalled.
  ExpectWellBehavedClientIsServed();
  close(fd);
}

TEST_F(GatewayBadInputTest, FiveHundredConcurrentConnectionsOpenAndClose) {
  std::vector<int> fds;
  for (int i = 0; i < 500; ++i) {
    int fd = connect_tcp(gw_->port());
    ASSERT_GE(fd, 0) << i;
    fds.push_back(fd);
  }
  std::string sp = startup_packet("agent", "demo");
  for (size_t i = 0; i < fds.size(); i += 2) send_all(fds[i], sp);
  int asked = 0;
  for (size_t i = 0; i < fds.size(); i += 2) {
    std::string body;
    if (read_message(fds[i], &body, 10000) == 'R') ++asked;
  }
  EXPECT_EQ(asked, 250);
  for (int fd : fds) close(fd);
  // Full logins in parallel too.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 40; ++i) {
    threads.emplace_back([&] {
      PGconn* c = PQconnectdb(gw_->conninfo().c_str());
      if (PQstatus(c) == CONNECTION_OK) {
        PGresult* r = PQexec(c, "select 1");
        if (PQresultStatus(r) == PGRES_TUPLES_OK) ++ok;
        else ADD_FAILURE() << "select 1: " << PQerrorMessage(c);
        PQclear(r);
      } else {
        ADD_FAILURE() << "login: " << PQerrorMessage(c);
      }
      PQfinish(c);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
}

}  // namespace
}  // namespace pgwarden::testing
