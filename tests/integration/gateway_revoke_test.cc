// Revocation and control-plane restarts with real processes (docs/operations.md, "Ending
// sessions and revoking identities" and "Control-plane restarts"): pgwarden-cp, pgwarden-dp,
// pgwardenctl, libpq clients and the sandbox PostgreSQL. Live sessions end with FATAL 57P01
// on `sessions kill` (by id, identity, key), on `identities revoke` (which also refuses new
// logins, across a cp restart), on a config reload that removes their service key, on a
// JWKS refresh that drops their signing key and at their token's exp. After a kill -9 of cp
// a healthy session runs a new statement shape once cp is back and its recording continues
// with a restart marker; during the outage a cached-shape statement of a recording-required
// session does not run and gets 08006 after limits.cp_unavailable_wait_ms.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "controlplane/identity/test_signer.h"
#include "tests/integration/gateway_harness.h"
#include "tests/integration/recordings.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kCpWaitMs = 3000;

identity::testing::TestSigner& key_a() {
  static identity::testing::TestSigner s("ES256", "key-a");
  return s;
}
identity::testing::TestSigner& key_b() {
  static identity::testing::TestSigner s("ES256", "key-b");
  return s;
}

std::string jwks_path() { return "/tmp/pgw-revoke-jwks-" + std::to_string(::getpid()) + ".json"; }

void write_jwks(const std::string& text) {
  std::string tmp = jwks_path() + ".tmp";
  std::ofstream(tmp) << text;
  std::rename(tmp.c_str(), jwks_path().c_str());
}

int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string jwt(identity::testing::TestSigner& key, const std::string& sub, int64_t exp) {
  return key.sign(json{{"iss", "https://idp.test"},
                       {"aud", "pgwarden"},
                       {"sub", sub},
                       {"groups", {"agents"}},
                       {"iat", now_s()},
                       {"exp", exp}});
}

// Captures FATAL/ERROR messages libpq receives outside a query (the kill's ErrorResponse).
struct Notices {
  std::string sqlstate;
  std::string message;
};

void on_notice(void* arg, const PGresult* r) {
  auto* n = static_cast<Notices*>(arg);
  const char* st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (st != nullptr) n->sqlstate = st;
  if (msg != nullptr) n->message = msg;
}

class RevokeTest : public SharedGatewayTest<RevokeTest> {
 public:
  static GatewayOptions gateway_options() {
    write_jwks(key_a().jwks());
    GatewayOptions o;
    o.extra_service_keys = {"kill2",  "kill3",  "rev1", "rmkey", "long1",
                            "rmkey2", "grace1", "tx1",  "copy1"};
    o.admin_principals = {{"alice", {"ops"}}};
    o.cp_unavailable_wait_ms = kCpWaitMs;
    o.identity_providers_json = json::array({{{"name", "idp"},
                                              {"issuer", "https://idp.test"},
                                              {"audiences", {"pgwarden"}},
                                              {"jwks_file", jwks_path()},
                                              {"leeway_s", 0},
                                              {"jwks_min_refresh_s", 1}}})
                                    .dump();
    return o;
  }
  static void TearDownTestSuite() {
    SharedGatewayTest<RevokeTest>::TearDownTestSuite();
    ::unlink(jwks_path().c_str());
  }

 protected:
  struct Client {
    Conn conn;
    Notices notices;
  };

  std::unique_ptr<Client> connect_with(const std::string& conninfo) {
    auto c = std::make_unique<Client>();
    c->conn.reset(PQconnectdb(conninfo.c_str()));
    EXPECT_EQ(PQstatus(c->conn.get()), CONNECTION_OK) << PQerrorMessage(c->conn.get());
    PQsetNoticeReceiver(c->conn.get(), on_notice, &c->notices);
    return c;
  }
  std::unique_ptr<Client> connect_key(const std::string& key) {
    return connect_with(gw_->conninfo_as(key));
  }
  std::string conninfo_token(const std::string& token) {
    return "host=127.0.0.1 port=" + std::to_string(gw_->port()) +
           " dbname=demo user=agent sslmode=require connect_timeout=10 password=" + token;
  }

  // The cp session id of the live session of `identity` (pgwardenctl sessions list).
  std::vector<std::string> live_ids(const std::string& identity) {
    CtlResult r = gw_->ctl("alice", {"sessions", "list", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    std::vector<std::string> ids;
    json j = json::parse(r.out, nullptr, false);
    if (j.is_discarded()) return ids;
    for (const json& s : j["live"]) {
      if (s.value("identity", "") == identity) ids.push_back(s.value("session_id", ""));
    }
    return ids;
  }

  // Waits (on the sockets) until the server closes one of the connections; returns the ms
  // it took from `since` (and which one in `*closed`), or -1 when all stay open for
  // `timeout_ms`. The FATAL that preceded the close lands in the client's notices.
  static int64_t wait_closed(std::vector<Client*> clients, Clock::time_point since,
                             int timeout_ms = 5000, Client** closed = nullptr) {
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < end) {
      std::vector<pollfd> fds;
      for (Client* c : clients) fds.push_back(pollfd{PQsocket(c->conn.get()), POLLIN, 0});
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
      if (::poll(fds.data(), fds.size(), std::max(left, 1)) <= 0) continue;
      for (size_t i = 0; i < clients.size(); ++i) {
        if (fds[i].revents == 0) continue;
        PGconn* conn = clients[i]->conn.get();
        bool lost = PQconsumeInput(conn) == 0;
        (void)PQisBusy(conn);  // parses what arrived: the FATAL goes to the notice receiver
        if (lost || PQstatus(conn) == CONNECTION_BAD) {
          if (clients[i]->notices.message.empty()) {
            clients[i]->notices.message = PQerrorMessage(conn);
          }
          if (closed != nullptr) *closed = clients[i];
          return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since)
              .count();
        }
      }
    }
    return -1;
  }
  static int64_t wait_closed(Client& c, Clock::time_point since, int timeout_ms = 5000) {
    return wait_closed(std::vector<Client*>{&c}, since, timeout_ms);
  }

  static bool alive(Client& c) {
    Res r(PQexec(c.conn.get(), "select 1"));
    return PQresultStatus(r.get()) == PGRES_TUPLES_OK;
  }

  static std::string login_error(const std::string& conninfo, std::string* state = nullptr) {
    Conn c(PQconnectdb(conninfo.c_str()));
    if (PQstatus(c.get()) == CONNECTION_OK) return "";
    std::string err = PQerrorMessage(c.get());
    (void)state;
    return err;
  }
};

TEST_F(RevokeTest, KillByIdIdentityAndKeyClosesLiveSessionsWithinOneSecond) {
  auto by_id = connect_key("agent1");
  auto by_identity = connect_key("kill2");
  auto by_key = connect_key("kill3");
  auto bystander = connect_key("agent1");
  ASSERT_TRUE(alive(*by_id) && alive(*by_identity) && alive(*by_key) && alive(*bystander));
  std::vector<std::string> agent1 = live_ids("svc:agent1");
  ASSERT_EQ(agent1.size(), 2u);
  CtlResult table = gw_->ctl("alice", {"sessions", "list"});
  EXPECT_NE(table.out.find("LIVE SESSION"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find(agent1[0]), std::string::npos) << table.out;
  // Which of the two is `by_id`: kill one, and see which socket closes.
  auto t0 = Clock::now();
  CtlResult r = gw_->ctl("alice", {"sessions", "kill", agent1[0], "--reason", "incident 42"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  Client* killed = nullptr;
  int64_t ms = wait_closed({by_id.get(), bystander.get()}, t0, 5000, &killed);
  ASSERT_NE(killed, nullptr) << "no agent1 session was closed\n" << gw_->dp_log();
  std::printf("[ revoke ] sessions kill ID: command -> closed client socket in %lld ms\n",
              static_cast<long long>(ms));
  EXPECT_LT(ms, 1000);
  EXPECT_EQ(killed->notices.sqlstate, "57P01");
  EXPECT_NE(killed->notices.message.find("incident 42"), std::string::npos)
      << killed->notices.message;
  Client* other = killed == by_id.get() ? bystander.get() : by_id.get();
  EXPECT_TRUE(alive(*other)) << "the other session of the identity must keep running";

  t0 = Clock::now();
  r = gw_->ctl("alice", {"sessions", "kill", "--identity", "svc:kill2", "--reason", "off"});
  ASSERT_EQ(r.code, 0) << r.err;
  ms = wait_closed(*by_identity, t0);
  std::printf("[ revoke ] sessions kill --identity: %lld ms\n", static_cast<long long>(ms));
  EXPECT_GE(ms, 0);
  EXPECT_LT(ms, 1000);
  EXPECT_EQ(by_identity->notices.sqlstate, "57P01");

  t0 = Clock::now();
  r = gw_->ctl("alice", {"sessions", "kill", "--key", "kill3"});
  ASSERT_EQ(r.code, 0) << r.err;
  ms = wait_closed(*by_key, t0);
  std::printf("[ revoke ] sessions kill --key: %lld ms\n", static_cast<long long>(ms));
  EXPECT_GE(ms, 0);
  EXPECT_LT(ms, 1000);
  EXPECT_TRUE(alive(*other));

  // A kill ends only live sessions; an unknown id is reported (exit 4) and kills nothing.
  r = gw_->ctl("alice", {"sessions", "kill", "0000000000000000"});
  EXPECT_EQ(r.code, 4) << r.out << r.err;
  std::string audit = gw_->audit_log();
  EXPECT_NE(audit.find("\"session_kill\""), std::string::npos);
  EXPECT_NE(audit.find("incident 42"), std::string::npos);
  EXPECT_NE(audit.find("\"by\":\"alice\""), std::string::npos);
}

TEST_F(RevokeTest, KillDuringALongStatementCancelsItUpstream) {
  auto c = connect_key("long1");
  ASSERT_EQ(PQsendQuery(c->conn.get(), "select pg_sleep(30), 'long-running-kill-me'"), 1);
  auto running = [&] {
    auto r = gw_->pg().psql(
        "select count(*) from pg_stat_activity where query like '%long-running-kill-me%' "
        "and pid <> pg_backend_pid()");
    return r.is_ok() && r->find('1') != std::string::npos;
  };
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!running() && Clock::now() < deadline) {
  }
  ASSERT_TRUE(running()) << "the statement never reached PostgreSQL";
  std::vector<std::string> ids = live_ids("svc:long1");
  ASSERT_EQ(ids.size(), 1u);
  auto t0 = Clock::now();
  CtlResult r = gw_->ctl("alice", {"sessions", "kill", ids[0], "--reason", "stop the scan"});
  ASSERT_EQ(r.code, 0) << r.err;
  // The client is mid-query: libpq gets the FATAL as the query's result, then the close.
  Res res(PQgetResult(c->conn.get()));
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::printf("[ revoke ] kill during a running statement: client error after %lld ms\n",
              static_cast<long long>(ms));
  EXPECT_LT(ms, 1000);
  EXPECT_EQ(sqlstate(res.get()), "57P01") << PQresultErrorMessage(res.get());
  EXPECT_NE(std::string(PQresultErrorMessage(res.get())).find("stop the scan"), std::string::npos);
  // The upstream backend is cancelled, not left sleeping for 30 s.
  deadline = Clock::now() + std::chrono::seconds(5);
  while (running() && Clock::now() < deadline) {
  }
  EXPECT_FALSE(running()) << "the killed session's statement still runs in PostgreSQL";
}

// A kill in the middle of a transaction and in the middle of a COPY FROM STDIN: the client
// gets 57P01, the upstream connection is closed (PostgreSQL rolls the transaction and the
// COPY back: nothing of either is ever committed, no backend stays idle in transaction), and
// the session's recording ends with session_killed, session_end and the seal.
TEST_F(RevokeTest, KillMidTransactionAndMidCopyCommitsNothingAndSealsTheRecording) {
  ASSERT_TRUE(gw_->pg()
                  .psql("create table if not exists public.rv_tx (v text); "
                        "grant all on public.rv_tx to app_scram;")
                  .is_ok());
  auto upstream = [](const std::string& app) {
    auto n = gw_->pg().psql("select count(*) from pg_stat_activity where application_name = '" +
                            app + "'");
    return n.is_ok() ? std::atoi(n->c_str()) : -1;
  };
  auto rows = [](const std::string& like) {
    auto n = gw_->pg().psql("select count(*) from public.rv_tx where v like '" + like + "'");
    return n.is_ok() ? std::atoi(n->c_str()) : -1;
  };
  for (const std::string mode : {"transaction", "copy"}) {
    SCOPED_TRACE(mode);
    const std::string key = mode == "copy" ? "copy1" : "tx1";
    const std::string app = "rv_" + mode;
    auto c = connect_with(gw_->conninfo_as(key, "application_name=" + app));
    PGconn* conn = c->conn.get();
    if (mode == "transaction") {
      Res begin(PQexec(conn, "begin"));
      ASSERT_EQ(PQresultStatus(begin.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
      Res ins(PQexec(conn, "insert into public.rv_tx values ('tx-row')"));
      ASSERT_EQ(PQresultStatus(ins.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn);
    } else {
      Res copy(PQexec(conn, "copy public.rv_tx from stdin"));
      ASSERT_EQ(PQresultStatus(copy.get()), PGRES_COPY_IN) << PQerrorMessage(conn);
      for (int i = 0; i < 100; ++i) {
        std::string line = "copy-row-" + std::to_string(i) + "\n";
        ASSERT_EQ(PQputCopyData(conn, line.data(), static_cast<int>(line.size())), 1);
      }
      ASSERT_EQ(PQflush(conn), 0);
    }
    ASSERT_EQ(upstream(app), 1);
    std::vector<std::string> ids = live_ids("svc:" + key);
    ASSERT_EQ(ids.size(), 1u);
    auto t0 = Clock::now();
    CtlResult r = gw_->ctl("alice", {"sessions", "kill", ids[0], "--reason", "mid " + mode});
    ASSERT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_GE(wait_closed(*c, t0), 0) << "the client was not disconnected";
    // In COPY IN libpq reads the FATAL only once the copy ends: it is the COPY's result.
    std::string state = c->notices.sqlstate;
    if (mode == "copy") (void)PQputCopyEnd(conn, nullptr);
    for (int i = 0; i < 4 && state.empty(); ++i) {
      Res res(PQgetResult(conn));
      if (res == nullptr) break;
      state = sqlstate(res.get());
    }
    EXPECT_EQ(state, "57P01") << c->notices.message;
    EXPECT_TRUE(eventually([&] { return upstream(app) == 0; }))
        << "the upstream connection of the killed session is still open";
    EXPECT_EQ(rows(mode == "copy" ? "copy-row-%" : "tx-row"), 0);
    std::vector<Recording> recs;
    ASSERT_TRUE(eventually([&] {
      recs = recordings_with(gw_->state_dir(), mode == "copy" ? "copy public.rv_tx" : "'tx-row'");
      return recs.size() == 1 && recs[0].report.sealed;
    })) << "the killed session's recording was not sealed";
    EXPECT_TRUE(recs[0].report.ok) << recs[0].report.reason;
    EXPECT_EQ(count_kind(recs[0], "session_killed"), 1u);
    const nlohmann::json& end = recs[0].records[recs[0].records.size() - 2];
    EXPECT_EQ(end.value("kind", ""), "session_end");
    EXPECT_NE(end.value("reason", "").find("mid " + mode), std::string::npos) << end.dump();
  }
}

TEST_F(RevokeTest, KeyRemovedWhileCpIsDownEndsTheSessionAtReregistration) {
  auto doomed = connect_key("rmkey2");
  auto healthy = connect_key("agent1");
  ASSERT_TRUE(alive(*doomed) && alive(*healthy));
  gw_->crash_cp();
  ASSERT_TRUE(gw_->remove_service_key("rmkey2").is_ok());
  auto t0 = Clock::now();
  ASSERT_TRUE(gw_->start_cp().is_ok());
  int64_t ms = wait_closed(*doomed, t0, 10000);
  std::printf("[ revoke ] key removed while cp was down: session ended %lld ms after restart\n",
              static_cast<long long>(ms));
  EXPECT_GE(ms, 0);
  EXPECT_EQ(doomed->notices.sqlstate, "57P01");
  EXPECT_NE(doomed->notices.message.find("service key rmkey2 was removed"), std::string::npos)
      << doomed->notices.message;
  // The other session was re-registered and runs a new shape.
  Res r(PQexec(healthy->conn.get(), "select 'after reregistration' as reregistered_ok"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_NE(gw_->audit_log().find("\"cause\":\"reregister\""), std::string::npos);
}

TEST_F(RevokeTest, GracefulCpRestartIsInvisibleToALiveSession) {
  auto c = connect_key("grace1");
  Res first(PQexec(c->conn.get(), "select 'before graceful restart' as g1"));
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(first.get());
  std::vector<std::string> ids = live_ids("svc:grace1");
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(gw_->stop_cp_gracefully(), 0);
  ASSERT_TRUE(gw_->start_cp().is_ok());
  // Sent right away: it waits for the reconnection and the re-registration, then runs.
  Res after(PQexec(c->conn.get(), "select 'after graceful restart' as g2"));
  ASSERT_EQ(PQresultStatus(after.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(after.get());
  CtlResult replay;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  do {
    replay = gw_->ctl("alice", {"sessions", "replay", ids[0], "--json"});
    ASSERT_EQ(replay.code, 0) << replay.err;
  } while (replay.out.find("after graceful restart") == std::string::npos &&
           Clock::now() < deadline);
  EXPECT_NE(replay.out.find("session_resumed"), std::string::npos);
  EXPECT_NE(replay.out.find("after graceful restart"), std::string::npos);
  CtlResult v = gw_->ctl("alice", {"sessions", "verify", ids[0], "--json"});
  EXPECT_EQ(v.code, 0) << v.out << v.err;
}

TEST_F(RevokeTest, RevokedIdentityIsRefusedAndStaysRevokedAcrossCpRestart) {
  auto live = connect_key("rev1");
  ASSERT_TRUE(alive(*live));
  auto t0 = Clock::now();
  CtlResult r = gw_->ctl("alice", {"identities", "revoke", "svc:rev1", "--reason", "token leaked"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  int64_t ms = wait_closed(*live, t0);
  std::printf("[ revoke ] identities revoke -> closed socket in %lld ms\n",
              static_cast<long long>(ms));
  EXPECT_GE(ms, 0);
  EXPECT_LT(ms, 1000);
  EXPECT_EQ(live->notices.sqlstate, "57P01");
  EXPECT_NE(live->notices.message.find("token leaked"), std::string::npos);

  std::string err = login_error(gw_->conninfo_as("rev1"));
  EXPECT_NE(err.find("revoked"), std::string::npos) << err;
  EXPECT_NE(err.find("token leaked"), std::string::npos) << err;

  r = gw_->ctl("alice", {"identities", "list", "--json"});
  ASSERT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("svc:rev1"), std::string::npos);
  r = gw_->ctl("alice", {"identities", "list"});
  EXPECT_NE(r.out.find("token leaked"), std::string::npos) << r.out;

  // kill -9 and restart: the revocation is read back from the state directory.
  gw_->crash_cp();
  ASSERT_TRUE(gw_->start_cp().is_ok());
  err = login_error(gw_->conninfo_as("rev1"));
  bool refused_revoked = false;
  for (int i = 0; i < 50 && !refused_revoked; ++i) {
    // Until dp reconnected, the refusal is "control plane unreachable"; then "revoked".
    err = login_error(gw_->conninfo_as("rev1"));
    refused_revoked = err.find("revoked") != std::string::npos;
    if (!refused_revoked) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(refused_revoked) << err;

  r = gw_->ctl("alice", {"identities", "unrevoke", "svc:rev1"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(login_error(gw_->conninfo_as("rev1")), "");
  std::string audit = gw_->audit_log();
  EXPECT_NE(audit.find("identities.revoke"), std::string::npos);
  EXPECT_NE(audit.find("\"cause\":\"revoked\""), std::string::npos);
}

TEST_F(RevokeTest, ServiceKeyRemovedByConfigReloadEndsItsSessions) {
  auto doomed = connect_key("rmkey");
  auto other = connect_key("agent1");
  ASSERT_TRUE(alive(*doomed) && alive(*other));
  ASSERT_TRUE(gw_->remove_service_key("rmkey").is_ok());
  auto t0 = Clock::now();
  CtlResult r = gw_->ctl("alice", {"config", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  int64_t ms = wait_closed(*doomed, t0);
  std::printf("[ revoke ] key removal + config reload -> closed socket in %lld ms\n",
              static_cast<long long>(ms));
  EXPECT_GE(ms, 0);
  EXPECT_EQ(doomed->notices.sqlstate, "57P01");
  EXPECT_NE(doomed->notices.message.find("service key rmkey was removed"), std::string::npos)
      << doomed->notices.message;
  EXPECT_TRUE(alive(*other));
}

TEST_F(RevokeTest, JwksRefreshDroppingTheSigningKeyEndsTheSession) {
  auto signed_a = connect_with(conninfo_token(jwt(key_a(), "jwt-user-a", now_s() + 3600)));
  ASSERT_TRUE(alive(*signed_a));
  // Rotation at the identity provider: only key-b is published now.
  write_jwks(key_b().jwks());
  auto t0 = Clock::now();
  // A token of the new key makes cp refetch the JWKS (unknown kid, at most once a second).
  std::string token_b = jwt(key_b(), "jwt-user-b", now_s() + 3600);
  std::unique_ptr<Client> signed_b;
  for (int i = 0; i < 50; ++i) {
    Conn c(PQconnectdb(conninfo_token(token_b).c_str()));
    if (PQstatus(c.get()) == CONNECTION_OK) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  int64_t ms = wait_closed(*signed_a, t0, 5000);
  std::printf("[ revoke ] JWKS rotation -> closed socket in %lld ms\n", static_cast<long long>(ms));
  EXPECT_GE(ms, 0);
  EXPECT_EQ(signed_a->notices.sqlstate, "57P01");
  EXPECT_NE(signed_a->notices.message.find("key-a"), std::string::npos)
      << signed_a->notices.message;
  write_jwks(key_a().jwks(std::vector<const identity::testing::TestSigner*>{&key_b()}));
}

TEST_F(RevokeTest, TokenExpiryEndsTheSessionAtExp) {
  write_jwks(key_a().jwks(std::vector<const identity::testing::TestSigner*>{&key_b()}));
  int64_t exp = now_s() + 2;
  std::unique_ptr<Client> c;
  for (int i = 0; i < 20; ++i) {
    c = std::make_unique<Client>();
    c->conn.reset(PQconnectdb(conninfo_token(jwt(key_b(), "short-lived", exp)).c_str()));
    if (PQstatus(c->conn.get()) == CONNECTION_OK) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(PQstatus(c->conn.get()), CONNECTION_OK) << PQerrorMessage(c->conn.get());
  PQsetNoticeReceiver(c->conn.get(), on_notice, &c->notices);
  ASSERT_TRUE(alive(*c));
  auto t0 = Clock::now();
  int64_t ms = wait_closed(*c, t0, 8000);
  ASSERT_GE(ms, 0) << "the session outlived its token";
  int64_t late_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count() -
                    exp * 1000;
  std::printf("[ revoke ] token exp -> closed socket %lld ms after exp\n",
              static_cast<long long>(late_ms));
  EXPECT_GE(late_ms, 0);
  EXPECT_LT(late_ms, 1500);
  EXPECT_EQ(c->notices.sqlstate, "57P01");
  EXPECT_NE(c->notices.message.find("expired"), std::string::npos) << c->notices.message;
}

TEST_F(RevokeTest, TokenExpiryKeepLetsTheSessionOutliveItsToken) {
  // The policy opts out of ending sessions at `exp` (token_expiry: keep).
  auto policy_version = [&] {
    json s = json::parse(gw_->ctl("alice", {"status", "--json"}).out, nullptr, false);
    return s.is_object() ? s.value("policy_version", int64_t{0}) : int64_t{0};
  };
  auto apply_policy = [&](const std::string& token_expiry) {
    json pol = json::parse(GatewayOptions{}.policy_json);
    pol["token_expiry"] = token_expiry;
    int64_t before = policy_version();
    ASSERT_TRUE(gw_->rewrite_policy(pol.dump()).is_ok());
    gw_->signal_cp(SIGHUP);
    auto until = Clock::now() + std::chrono::seconds(10);
    while (policy_version() == before && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_NE(policy_version(), before) << "the reload never landed";
  };
  ASSERT_NO_FATAL_FAILURE(apply_policy("keep"));
  write_jwks(key_a().jwks(std::vector<const identity::testing::TestSigner*>{&key_b()}));
  int64_t exp = now_s() + 2;
  std::unique_ptr<Client> c;
  for (int i = 0; i < 20; ++i) {
    c = std::make_unique<Client>();
    c->conn.reset(PQconnectdb(conninfo_token(jwt(key_b(), "keeps-going", exp)).c_str()));
    if (PQstatus(c->conn.get()) == CONNECTION_OK) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(PQstatus(c->conn.get()), CONNECTION_OK) << PQerrorMessage(c->conn.get());
  PQsetNoticeReceiver(c->conn.get(), on_notice, &c->notices);
  // What is being tested is a point in time: the token's exp, plus more than the expiry
  // sweeper's period (500 ms; leeway 0 here) and the 1.5 s the default would take.
  auto past_exp = Clock::now() + std::chrono::milliseconds((exp - now_s()) * 1000 + 2000);
  int64_t closed = wait_closed(
      *c, Clock::now(),
      static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(past_exp - Clock::now()).count()));
  EXPECT_EQ(closed, -1) << "ended although the policy keeps sessions: " << c->notices.message;
  EXPECT_TRUE(alive(*c));
  std::istringstream audit(gw_->audit_log());
  for (std::string line; std::getline(audit, line);) {
    if (line.find("keeps-going") == std::string::npos) continue;
    EXPECT_EQ(line.find("session_kill"), std::string::npos) << line;
  }
  c.reset();
  ASSERT_NO_FATAL_FAILURE(apply_policy("end"));
}

TEST_F(RevokeTest, CpKill9MidStatementIsInvisibleToAHealthySessionAndNothingRunsUnrecorded) {
  ASSERT_TRUE(gw_->pg()
                  .psql("create table if not exists public.rv_t (v int); "
                        "grant all on public.rv_t to app_scram;")
                  .is_ok());
  auto c = connect_key("agent1");
  Res ins(PQexec(c->conn.get(), "insert into public.rv_t values (1)"));  // cached shape now
  ASSERT_EQ(PQresultStatus(ins.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(ins.get());
  std::vector<std::string> before = live_ids("svc:agent1");
  // Its verdict and mask plan are cached in the dp; its record is confirmed before it runs.
  Res warm(PQexec(c->conn.get(), "select pg_sleep(0.01), 'mid'"));
  ASSERT_EQ(PQresultStatus(warm.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(warm.get());
  // Mid-statement: the statement runs upstream while cp dies.
  ASSERT_EQ(PQsendQuery(c->conn.get(), "select pg_sleep(1), 'mid-statement-marker'"), 1);
  auto running = [&] {
    auto r = gw_->pg().psql(
        "select count(*) from pg_stat_activity where query like '%mid-statement-marker%' "
        "and pid <> pg_backend_pid()");
    return r.is_ok() && r->find('1') != std::string::npos;
  };
  auto until = Clock::now() + std::chrono::seconds(10);
  while (!running() && Clock::now() < until) {
  }
  ASSERT_TRUE(running()) << "the statement never reached PostgreSQL";
  gw_->crash_cp();
  Res mid(PQgetResult(c->conn.get()));
  while (Res more{PQgetResult(c->conn.get())}) {
  }
  EXPECT_EQ(PQresultStatus(mid.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(mid.get());

  // Outage: a cached-shape statement of this recording-required session waits, then 08006.
  auto t0 = Clock::now();
  Res refused(PQexec(c->conn.get(), "insert into public.rv_t values (999)"));
  int64_t waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::printf("[ revoke ] cp down: cached-shape insert refused after %lld ms\n",
              static_cast<long long>(waited));
  EXPECT_EQ(sqlstate(refused.get()), "08006") << PQresultErrorMessage(refused.get());
  EXPECT_GE(waited, kCpWaitMs - 200);
  auto count = gw_->pg().psql("select count(*) from public.rv_t where v = 999");
  ASSERT_TRUE(count.is_ok());
  EXPECT_EQ(count->find('1'), std::string::npos) << "the refused insert ran: " << *count;
  // New logins are refused while cp is down.
  EXPECT_NE(login_error(gw_->conninfo()).find("control plane"), std::string::npos);

  // A statement sent during the outage waits for cp and runs once it is back.
  ASSERT_EQ(PQsendQuery(c->conn.get(), "select 40 + 2 as answer_during_outage"), 1);
  ASSERT_TRUE(gw_->start_cp().is_ok());
  Res waited_res(PQgetResult(c->conn.get()));
  while (Res more{PQgetResult(c->conn.get())}) {
  }
  EXPECT_EQ(PQresultStatus(waited_res.get()), PGRES_TUPLES_OK)
      << PQresultErrorMessage(waited_res.get());
  // After the restart: a new statement shape runs.
  Res fresh(PQexec(c->conn.get(), "select 7 * 6 as new_shape_after_restart"));
  ASSERT_EQ(PQresultStatus(fresh.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(fresh.get());
  EXPECT_STREQ(PQgetvalue(fresh.get(), 0, 0), "42");

  // The recording continued in the same log with a restart marker and verifies.
  std::string id;
  for (const std::string& s : live_ids("svc:agent1")) {
    if (std::find(before.begin(), before.end(), s) != before.end()) id = s;
  }
  ASSERT_FALSE(id.empty());
  // Records are written by cp's group commit: wait until the last statement's is there.
  CtlResult replay;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  do {
    replay = gw_->ctl("alice", {"sessions", "replay", id, "--json"});
    ASSERT_EQ(replay.code, 0) << replay.err;
  } while (replay.out.find("new_shape_after_restart") == std::string::npos &&
           Clock::now() < deadline);
  CtlResult v = gw_->ctl("alice", {"sessions", "verify", id, "--json"});
  EXPECT_EQ(v.code, 0) << v.out << v.err;
  EXPECT_NE(v.out.find("\"ok\": true"), std::string::npos) << v.out;
  EXPECT_NE(replay.out.find("session_resumed"), std::string::npos);
  EXPECT_NE(replay.out.find("new_shape_after_restart"), std::string::npos);
  EXPECT_NE(replay.out.find("answer_during_outage"), std::string::npos);
  // The refused insert never ran. The dp kept its refusal while cp was down, so the recording
  // says so — a deny (rule recording_unconfirmed) — and never records it as allowed.
  auto records = nlohmann::json::parse(replay.out, nullptr, false);
  ASSERT_TRUE(records.is_object() && records.contains("records")) << replay.out;
  for (const auto& r : records["records"]) {
    if (r.value("sql", "").find("values (999)") == std::string::npos) continue;
    EXPECT_EQ(r.value("verdict", ""), "deny") << r.dump();
    EXPECT_EQ(r.value("rule", ""), "recording_unconfirmed") << r.dump();
  }
}

}  // namespace
}  // namespace pgwarden::testing
