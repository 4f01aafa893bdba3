// Rules reload with real processes (docs/operations.md, "Reloading rules and
// configuration"): pgwardenctl rules reload / config reload against a running pgwarden-cp and
// pgwarden-dp sharing a rule set directory, with live psql-like (libpq) sessions.
//
//   * a broken rule file: non-zero exit, the error with file:line, nothing applied (a valid
//     rule added in the same edit is not enforced, the old deny rules still are), status keeps
//     the generation;
//   * a good reload: `rules reload` returns only once every dataplane enforces the new
//     generation, so the new deny rule refuses the very next statement of an already open, idle
//     session (no polling, no signal to the dp); status shows the same generation in cp and dp;
//   * a statement prepared (Parse) before the reload that the new rules deny is refused at its
//     next execution (Bind), through `rules reload` and `rules add|remove`, also in a
//     transaction-pooled session;
//   * a portal bound before the reload (a suspended Execute with max_rows) whose statement the
//     new rules deny is refused at its next Execute, the transaction failed ('E'); a FETCH or
//     MOVE of a cursor declared before the reload whose DECLARE the new rules deny is refused
//     (also a WITH HOLD cursor after its transaction);
//   * a dataplane that does not confirm the new generation (stopped with SIGSTOP) makes the
//     reload exit 1 naming it; once it runs again it confirms and reloads succeed;
//   * a dp that (re)connects later runs cp's current generation.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/integration/gateway_harness.h"
#include "tests/integration/gateway_raw.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

int64_t ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// A deny rule in the rule file format.
std::string rule(const std::string& id, const std::string& pattern) {
  return "\n[" + id +
         "]\naction   = deny\nview     = text\nflags    = caseless\npattern  = " + pattern +
         "\nmessage  = " + id + " is refused\nseverity = high\n";
}

// Replaces the gateway's deny rule file (atomically, as an editor's save would).
void replace_deny_rules(const GatewayHarness& gw, const std::string& text) {
  const std::string file = gw.rules_dir() + "/deny.rules";
  const std::string tmp = file + ".tmp";
  std::ofstream(tmp, std::ios::trunc) << text;
  ASSERT_EQ(rename(tmp.c_str(), file.c_str()), 0);
}

GatewayOptions reload_options() {
  GatewayOptions o;
  o.own_rules_dir = true;
  o.loopback_only = true;  // the raw protocol sessions log in without TLS
  o.admin_principals = {{"ops", {"operators"}}};
  return o;
}

class GatewayReloadTest : public SharedGatewayTest<GatewayReloadTest> {
 public:
  static GatewayOptions gateway_options() { return reload_options(); }

 protected:
  std::string deny_file() const { return gw_->rules_dir() + "/deny.rules"; }
  void write_deny(const std::string& text) const { replace_deny_rules(*gw_, text); }
  json status() const {
    CtlResult r = gw_->ctl("ops", {"status", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    json j = json::parse(r.out, nullptr, false);
    return j.is_object() ? j : json::object();
  }
  static uint64_t cp_generation(const json& st) {
    return st.contains("rules") ? st["rules"].value("generation", uint64_t{0}) : 0;
  }
  // The session engine dataplane's entry in `status` (null when it has not reported yet).
  static json session_dp(const json& st) {
    for (const json& d : st.value("dataplanes", json::array())) {
      if (d.value("mode", "") == "session" && d.value("connected", false)) return d;
    }
    return nullptr;
  }
  // Waits until the dp reports that it runs cp's current generation.
  bool dp_in_sync(uint64_t* generation = nullptr) const {
    return eventually(
        [&] {
          json st = status();
          json d = session_dp(st);
          if (d.is_null()) return false;
          if (generation != nullptr) *generation = cp_generation(st);
          return d.value("rules_source", "") == "controlplane" &&
                 d.value("rules_generation", uint64_t{0}) == cp_generation(st) &&
                 d.value("rules_in_sync", false);
        },
        10000);
  }
  static std::string exec_state(PGconn* c, const std::string& sql) {
    Res r(PQexec(c, sql.c_str()));
    if (PQresultStatus(r.get()) == PGRES_TUPLES_OK || PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
      return "ok";
    }
    return sqlstate(r.get());
  }
  void SetUp() override {
    original_ = slurp(deny_file());
    ASSERT_FALSE(original_.empty());
  }
  void TearDown() override {
    // Leave the shared gateway with the shipped rules and policy for the next test.
    write_deny(original_);
    ASSERT_TRUE(gw_->rewrite_policy(GatewayOptions().policy_json).is_ok());
    (void)gw_->ctl("ops", {"rules", "reload"});
    SharedGatewayTest::TearDown();
  }
  std::string original_;
};

TEST_F(GatewayReloadTest, BrokenRuleFileIsRejectedWithFileAndLineAndTheOldRulesStay) {
  ASSERT_TRUE(dp_in_sync());
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  EXPECT_EQ(exec_state(c.get(), "DROP SCHEMA reload_nothing"), "42501");
  ASSERT_EQ(exec_state(c.get(), "SELECT 'reload_canary_a'"), "ok");
  const uint64_t before = cp_generation(status());
  ASSERT_GT(before, 0u);

  // One valid new rule and, below it, one broken rule in the same file.
  std::string edited = original_ + rule("deny.reload_canary_a", "reload_canary_a");
  size_t broken_line = static_cast<size_t>(std::count(edited.begin(), edited.end(), '\n')) + 3;
  edited +=
      "\n[deny.reload_broken]\naction   = explode\nview     = code\npattern  = x\n"
      "message  = m\nseverity = high\n";
  write_deny(edited);

  for (const char* group : {"rules", "config"}) {
    CtlResult r = gw_->ctl("ops", {group, "reload"});
    EXPECT_EQ(r.code, 1) << group << ": " << r.out << r.err;
    std::string where = deny_file() + ":" + std::to_string(broken_line) + ":";
    EXPECT_NE(r.err.find(where), std::string::npos) << "expected " << where << " in:\n" << r.err;
    EXPECT_NE(r.err.find("running version stays"), std::string::npos) << r.err;
  }
  // Nothing was applied anywhere: the valid canary rule is not enforced, the old rules are.
  EXPECT_EQ(exec_state(c.get(), "SELECT 'reload_canary_a'"), "ok");
  EXPECT_EQ(exec_state(c.get(), "DROP SCHEMA reload_nothing"), "42501");
  Conn fresh(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(fresh.get()), CONNECTION_OK) << PQerrorMessage(fresh.get());
  EXPECT_EQ(exec_state(fresh.get(), "SELECT 'reload_canary_a'"), "ok");
  EXPECT_EQ(exec_state(fresh.get(), "drop /* x */ SCHEMA reload_nothing"), "42501");
  json st = status();
  EXPECT_EQ(cp_generation(st), before);
  EXPECT_EQ(session_dp(st).value("rules_generation", uint64_t{0}), before);
  // Audited as a rejected reload, with the reason.
  EXPECT_TRUE(eventually(
      [&] {
        std::string audit = gw_->audit_log();
        return audit.find("\"config_reload\"") != std::string::npos &&
               audit.find("rejected") != std::string::npos &&
               audit.find("deny.rules:" + std::to_string(broken_line)) != std::string::npos;
      },
      5000))
      << gw_->audit_log();
}

TEST_F(GatewayReloadTest, AfterReloadReturnsTheNextStatementOfAnIdleSessionMeetsTheNewRule) {
  ASSERT_TRUE(dp_in_sync());
  const pid_t dp_pid = gw_->dp_pid();
  const size_t dp_log_before = gw_->dp_log().size();
  Conn idle(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(idle.get()), CONNECTION_OK) << PQerrorMessage(idle.get());
  ASSERT_EQ(exec_state(idle.get(), "SELECT 'reload_canary_b' AS x"), "ok");
  const uint64_t before = cp_generation(status());

  write_deny(original_ + rule("deny.reload_canary_b", "reload_canary_b"));
  CtlResult r = gw_->ctl("ops", {"rules", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("rules generation"), std::string::npos) << r.out;
  auto reloaded = Clock::now();

  // The session sat idle through the reload; the reload returned only once the dataplane
  // enforces the new generation, so its very next statement meets the new rule (no retry).
  ASSERT_EQ(exec_state(idle.get(), "SELECT 'reload_canary_b' AS x"), "42501");
  std::cout << "[ reload ] new deny rule enforced on an idle session's first statement, "
            << ms_since(reloaded) << " ms after `rules reload` returned\n";
  Res msg(PQexec(idle.get(), "SELECT 'reload_canary_b'"));
  EXPECT_NE(std::string(PQresultErrorMessage(msg.get())).find("deny.reload_canary_b"),
            std::string::npos)
      << PQresultErrorMessage(msg.get());
  // The session itself lives on; other statements still run.
  EXPECT_EQ(exec_state(idle.get(), "SELECT 1"), "ok");

  uint64_t now_generation = 0;
  ASSERT_TRUE(dp_in_sync(&now_generation)) << status().dump(2);
  EXPECT_GT(now_generation, before);
  CtlResult text = gw_->ctl("ops", {"status"});
  EXPECT_EQ(text.code, 0);
  EXPECT_NE(text.out.find("cp: rules generation " + std::to_string(now_generation)),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("rules generation " + std::to_string(now_generation) +
                          " (controlplane, in sync)"),
            std::string::npos)
      << text.out;

  // A reload without a change keeps the generation.
  CtlResult again = gw_->ctl("ops", {"config", "reload"});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(cp_generation(status()), now_generation);

  // No signal, no restart: the same dp process, and it never reloaded its own files.
  EXPECT_EQ(gw_->dp_pid(), dp_pid);
  std::string dp_log = gw_->dp_log().substr(dp_log_before);
  EXPECT_EQ(dp_log.find("reloaded config"), std::string::npos) << dp_log;
  EXPECT_NE(dp_log.find("from the control plane runs now"), std::string::npos) << dp_log;
  EXPECT_TRUE(eventually(
      [&] { return gw_->audit_log().find("\"rules_applied\"") != std::string::npos; }, 5000));
}

TEST_F(GatewayReloadTest, ARuleSetAddedToThePolicyReachesItsOpenSessions) {
  ASSERT_TRUE(dp_in_sync());
  Conn idle(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(idle.get()), CONNECTION_OK) << PQerrorMessage(idle.get());
  ASSERT_EQ(exec_state(idle.get(), "SELECT 'reload_canary_e'"), "ok");
  { std::ofstream(gw_->rules_dir() + "/extra.rules") << rule("extra.canary_e", "reload_canary_e"); }
  std::string policy = GatewayOptions().policy_json;
  const std::string from = R"("rule_sets": ["deny", "approve"])";
  ASSERT_NE(policy.find(from), std::string::npos);
  policy.replace(policy.find(from), from.size(), R"("rule_sets": ["deny", "approve", "extra"])");
  ASSERT_TRUE(gw_->rewrite_policy(policy).is_ok());
  CtlResult r = gw_->ctl("ops", {"config", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // `config reload` returned: the open session's next statement meets the added set.
  EXPECT_EQ(exec_state(idle.get(), "SELECT 'reload_canary_e'"), "42501");
  // The rules the session had still apply.
  EXPECT_EQ(exec_state(idle.get(), "DROP SCHEMA reload_nothing"), "42501");
}

// Runs prepared statement `name` (no parameters) and returns "ok" or the SQLSTATE; *message
// gets the error message.
std::string exec_prepared(PGconn* c, const char* name, std::string* message = nullptr) {
  Res r(PQexecPrepared(c, name, 0, nullptr, nullptr, nullptr, 0));
  if (message != nullptr) *message = PQresultErrorMessage(r.get());
  if (PQresultStatus(r.get()) == PGRES_TUPLES_OK || PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
    return "ok";
  }
  return sqlstate(r.get());
}

TEST_F(GatewayReloadTest, AStatementPreparedBeforeAReloadThatDeniesItIsRefusedAtItsNextExecution) {
  ASSERT_TRUE(dp_in_sync());
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res prepared(PQprepare(c.get(), "canary_p", "SELECT 'reload_canary_p' AS x", 0, nullptr));
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK)
      << PQresultErrorMessage(prepared.get());
  Res other(PQprepare(c.get(), "still_fine", "SELECT 'reload_still_fine' AS x", 0, nullptr));
  ASSERT_EQ(PQresultStatus(other.get()), PGRES_COMMAND_OK);
  ASSERT_EQ(exec_prepared(c.get(), "canary_p"), "ok");

  write_deny(original_ + rule("deny.reload_canary_p", "reload_canary_p"));
  CtlResult r = gw_->ctl("ops", {"rules", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // Prepared under the old rules, executed under the new ones: refused, with the rule.
  std::string message;
  EXPECT_EQ(exec_prepared(c.get(), "canary_p", &message), "42501");
  EXPECT_NE(message.find("deny.reload_canary_p"), std::string::npos) << message;
  EXPECT_NE(message.find("prepared before the rules changed"), std::string::npos) << message;
  // Each later execution too; a prepared statement the new rules allow still runs.
  EXPECT_EQ(exec_prepared(c.get(), "canary_p"), "42501");
  EXPECT_EQ(exec_prepared(c.get(), "still_fine"), "ok");
  // The refusal is audited with its rule and reason.
  EXPECT_TRUE(eventually(
      [&] {
        std::string audit = gw_->audit_log();
        return audit.find("\"rule\":\"deny.reload_canary_p\"") != std::string::npos &&
               audit.find("prepared before the rules changed") != std::string::npos;
      },
      5000));

  // `rules remove` also returns only once enforced: the statement runs again at once.
  CtlResult removed = gw_->ctl("ops", {"rules", "remove", "deny", "deny.reload_canary_p"});
  ASSERT_EQ(removed.code, 0) << removed.out << removed.err;
  EXPECT_EQ(exec_prepared(c.get(), "canary_p"), "ok");
  // And `rules add`: refused at the next execution right after it returns.
  CtlResult added =
      gw_->ctl("ops", {"rules", "add", "deny"}, rule("deny.reload_canary_q", "reload_still_fine"));
  ASSERT_EQ(added.code, 0) << added.out << added.err;
  EXPECT_EQ(exec_prepared(c.get(), "still_fine"), "42501");
  EXPECT_EQ(exec_state(c.get(), "SELECT 1"), "ok");
}

// The same through a transaction-pooled target: the session's prepared statements live on
// whichever server connection it borrows, and the Bind is screened again all the same.
class GatewayPooledReloadTest : public SharedGatewayTest<GatewayPooledReloadTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o = reload_options();
    o.target_extra_json = R"({"pool_mode": "transaction", "pool_size": 2})";
    return o;
  }
};

TEST_F(GatewayPooledReloadTest, APooledSessionsPreparedStatementIsScreenedAgainAfterAReload) {
  const std::string original = slurp(gw_->rules_dir() + "/deny.rules");
  ASSERT_FALSE(original.empty());
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  Res prepared(PQprepare(c.get(), "pooled_p", "SELECT 'reload_pooled_p' AS x", 0, nullptr));
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK)
      << PQresultErrorMessage(prepared.get());
  ASSERT_EQ(exec_prepared(c.get(), "pooled_p"), "ok");

  ASSERT_NO_FATAL_FAILURE(
      replace_deny_rules(*gw_, original + rule("deny.reload_pooled_p", "reload_pooled_p")));
  CtlResult r = gw_->ctl("ops", {"rules", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  std::string message;
  EXPECT_EQ(exec_prepared(c.get(), "pooled_p", &message), "42501");
  EXPECT_NE(message.find("deny.reload_pooled_p"), std::string::npos) << message;
  EXPECT_NE(message.find("prepared before the rules changed"), std::string::npos) << message;
  // The session goes on: a statement the rules allow runs on a pooled server connection.
  Res one(PQexec(c.get(), "SELECT 1"));
  EXPECT_EQ(PQresultStatus(one.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(one.get());

  ASSERT_NO_FATAL_FAILURE(replace_deny_rules(*gw_, original));
  CtlResult back = gw_->ctl("ops", {"rules", "reload"});
  ASSERT_EQ(back.code, 0) << back.out << back.err;
  EXPECT_EQ(exec_prepared(c.get(), "pooled_p"), "ok");
}

// A raw protocol session (libpq cannot keep a named portal open across other commands).
class RawSession {
 public:
  explicit RawSession(const GatewayHarness& gw) {
    fd_ = connect_tcp(gw.port());
    if (fd_ < 0) return;
    send_all(fd_, startup_packet("agent", "demo"));
    std::string body;
    if (read_message(fd_, &body, 10000) != 'R') {
      close_fd();
      return;
    }
    send_all(fd_, typed_message('p', cstr(gw.token())));
    for (;;) {
      int t = read_message(fd_, &body, 10000);
      if (t == 'Z') return;
      if (t <= 0 || t == 'E') {
        close_fd();
        return;
      }
    }
  }
  ~RawSession() { close_fd(); }
  bool ok() const { return fd_ >= 0; }

  // What the server answered to one cycle (up to ReadyForQuery).
  struct Cycle {
    std::string types;  // message types in order, ReadyForQuery included
    std::string sqlstate, message;
    char status = 0;  // ReadyForQuery's transaction status
  };
  Cycle query(const std::string& sql) {
    send_all(fd_, typed_message('Q', cstr(sql)));
    return read_cycle();
  }
  // Sends the messages then Sync; reads the cycle.
  Cycle extended(const std::string& messages) {
    send_all(fd_, messages + typed_message('S', ""));
    return read_cycle();
  }
  static std::string parse(const std::string& name, const std::string& sql) {
    return typed_message('P', cstr(name) + cstr(sql) + std::string(2, '\0'));
  }
  static std::string bind(const std::string& portal, const std::string& statement) {
    return typed_message('B', cstr(portal) + cstr(statement) + std::string(6, '\0'));
  }
  static std::string execute(const std::string& portal, uint32_t max_rows) {
    std::string body = cstr(portal);
    put32(body, max_rows);
    return typed_message('E', body);
  }

 private:
  Cycle read_cycle() {
    Cycle c;
    std::string body;
    for (;;) {
      int t = read_message(fd_, &body, 30000);
      if (t <= 0) {
        c.types += '!';  // closed or no answer
        return c;
      }
      c.types += static_cast<char>(t);
      if (t == 'E' && c.sqlstate.empty()) {
        c.sqlstate = error_sqlstate(body);
        size_t m = body.find(std::string("\0M", 2));
        if (m != std::string::npos) c.message = body.substr(m + 2, body.find('\0', m + 2) - m - 2);
      }
      if (t == 'Z') {
        c.status = body.empty() ? 0 : body[0];
        return c;
      }
    }
  }
  void close_fd() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

TEST_F(GatewayReloadTest, APortalBoundBeforeAReloadThatDeniesItIsRefusedAtItsNextExecute) {
  ASSERT_TRUE(dp_in_sync());
  RawSession s(*gw_);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s.query("BEGIN").status, 'T');
  // Two open portals (max_rows 1 leaves each suspended): one the new rules deny, one not.
  RawSession::Cycle bound =
      s.extended(RawSession::parse(
                     "denied_s", "SELECT g, 'reload_canary_portal' FROM generate_series(1, 5) g") +
                 RawSession::bind("denied_p", "denied_s") + RawSession::execute("denied_p", 1) +
                 RawSession::parse("fine_s", "SELECT g FROM generate_series(1, 5) g") +
                 RawSession::bind("fine_p", "fine_s") + RawSession::execute("fine_p", 1));
  ASSERT_EQ(bound.types, "12Ds12DsZ") << bound.message;
  ASSERT_EQ(bound.status, 'T');

  write_deny(original_ + rule("deny.reload_canary_portal", "reload_canary_portal"));
  CtlResult r = gw_->ctl("ops", {"rules", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;

  // The portal the new rules do not deny goes on where it stopped.
  RawSession::Cycle fine = s.extended(RawSession::execute("fine_p", 1));
  EXPECT_EQ(fine.types, "DsZ") << fine.message;
  // Its statement was prepared before the reload; the portal was bound before it: refused,
  // and the transaction is failed as PostgreSQL would have it after an error.
  RawSession::Cycle refused = s.extended(RawSession::execute("denied_p", 1));
  EXPECT_EQ(refused.types, "EZ");
  EXPECT_EQ(refused.sqlstate, "42501") << refused.message;
  EXPECT_NE(refused.message.find("deny.reload_canary_portal"), std::string::npos)
      << refused.message;
  EXPECT_NE(refused.message.find("portal \"denied_p\" was bound before the rules changed"),
            std::string::npos)
      << refused.message;
  EXPECT_EQ(refused.status, 'E');
  // Nothing else runs in the failed transaction (PostgreSQL's own answer, 25P02).
  RawSession::Cycle after = s.extended(RawSession::execute("fine_p", 1));
  EXPECT_EQ(after.sqlstate, "25P02") << after.message;
  EXPECT_EQ(s.query("ROLLBACK").status, 'I');
  RawSession::Cycle one = s.query("SELECT 1");
  EXPECT_EQ(one.types, "TDCZ") << one.message;

  // The refusal is audited as a prescreen deny with its rule and reason.
  EXPECT_TRUE(eventually(
      [&] {
        std::string audit = gw_->audit_log();
        return audit.find("\"rule\":\"deny.reload_canary_portal\"") != std::string::npos &&
               audit.find("was bound before the rules changed") != std::string::npos;
      },
      5000))
      << gw_->audit_log();
}

TEST_F(GatewayReloadTest, AFetchOfACursorDeclaredBeforeAReloadThatDeniesItIsRefused) {
  ASSERT_TRUE(dp_in_sync());
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  // A cursor WITH HOLD outlives its transaction; the others live in the open one.
  ASSERT_EQ(exec_state(c.get(), "BEGIN"), "ok");
  ASSERT_EQ(exec_state(c.get(),
                       "DECLARE held CURSOR WITH HOLD FOR "
                       "SELECT g, 'reload_canary_cursor' FROM generate_series(1, 5) g"),
            "ok");
  ASSERT_EQ(exec_state(c.get(), "COMMIT"), "ok");
  ASSERT_EQ(exec_state(c.get(), "BEGIN"), "ok");
  ASSERT_EQ(exec_state(c.get(),
                       "DECLARE \"Denied\" CURSOR FOR "
                       "SELECT g, 'reload_canary_cursor' FROM generate_series(1, 5) g"),
            "ok");
  ASSERT_EQ(exec_state(c.get(), "DECLARE fine CURSOR FOR SELECT g FROM generate_series(1, 5) g"),
            "ok");
  ASSERT_EQ(exec_state(c.get(), "FETCH 1 FROM \"Denied\""), "ok");

  write_deny(original_ + rule("deny.reload_canary_cursor", "reload_canary_cursor"));
  CtlResult r = gw_->ctl("ops", {"rules", "reload"});
  ASSERT_EQ(r.code, 0) << r.out << r.err;

  EXPECT_EQ(exec_state(c.get(), "FETCH NEXT FROM fine"), "ok");
  // Through the extended protocol (libpq's PQexecParams sends a Parse).
  Res refused(PQexecParams(c.get(), "MOVE FORWARD 1 IN \"Denied\"", 0, nullptr, nullptr, nullptr,
                           nullptr, 0));
  EXPECT_EQ(sqlstate(refused.get()), "42501") << PQresultErrorMessage(refused.get());
  std::string message = PQresultErrorMessage(refused.get());
  EXPECT_NE(message.find("deny.reload_canary_cursor"), std::string::npos) << message;
  EXPECT_NE(message.find("was declared before the rules changed"), std::string::npos) << message;
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_INERROR);
  ASSERT_EQ(exec_state(c.get(), "ROLLBACK"), "ok");
  // The held cursor survived the commit and is refused too (simple protocol, outside a block).
  Res held(PQexec(c.get(), "FETCH 2 FROM held"));
  EXPECT_EQ(sqlstate(held.get()), "42501") << PQresultErrorMessage(held.get());
  EXPECT_EQ(PQtransactionStatus(c.get()), PQTRANS_IDLE);
  EXPECT_EQ(exec_state(c.get(), "CLOSE held"), "ok");
  // A cursor declared under the new rules is screened at its DECLARE as always.
  ASSERT_EQ(exec_state(c.get(), "BEGIN"), "ok");
  EXPECT_EQ(
      exec_state(
          c.get(),
          "DECLARE again CURSOR FOR SELECT 'reload_canary_cursor' FROM generate_series(1, 2)"),
      "42501");
  ASSERT_EQ(exec_state(c.get(), "ROLLBACK"), "ok");
  EXPECT_EQ(exec_state(c.get(), "SELECT 1"), "ok");
}

TEST_F(GatewayReloadTest, AReloadADataplaneDoesNotConfirmExitsOneNamingTheDataplane) {
  ASSERT_TRUE(dp_in_sync());
  const std::string dp_name = session_dp(status()).value("name", std::string());
  ASSERT_FALSE(dp_name.empty()) << status().dump(2);
  write_deny(original_ + rule("deny.reload_canary_s", "reload_canary_s"));
  // A stopped dataplane cannot take the push, so it cannot confirm it.
  gw_->signal_dp(SIGSTOP);
  CtlResult r = gw_->ctl("ops", {"rules", "reload"});
  gw_->signal_dp(SIGCONT);
  EXPECT_EQ(r.code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("did not confirm"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dp_name), std::string::npos) << r.err;
  // Running again, it installs the push it had queued: the next reload confirms at once.
  ASSERT_TRUE(dp_in_sync()) << status().dump(2);
  CtlResult again = gw_->ctl("ops", {"config", "reload"});
  EXPECT_EQ(again.code, 0) << again.out << again.err;
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  EXPECT_EQ(exec_state(c.get(), "SELECT 'reload_canary_s'"), "42501");
}

TEST_F(GatewayReloadTest, ADataplaneThatConnectsLaterRunsTheCurrentGeneration) {
  write_deny(original_ + rule("deny.reload_canary_c", "reload_canary_c"));
  ASSERT_EQ(gw_->ctl("ops", {"rules", "reload"}).code, 0);
  uint64_t generation = 0;
  ASSERT_TRUE(dp_in_sync(&generation));
  // The dp's own copy of the files changes behind cp's back: cp never validated this one.
  write_deny(original_ + rule("deny.reload_canary_unvalidated", "reload_canary_d"));

  gw_->signal_dp(SIGTERM);
  ASSERT_TRUE(gw_->wait_dp_exit(15000));
  ASSERT_TRUE(gw_->start_dp().is_ok());
  uint64_t after = 0;
  ASSERT_TRUE(dp_in_sync(&after)) << status().dump(2);
  EXPECT_EQ(after, generation);
  bool enforced = eventually(
      [&] {
        Conn c(PQconnectdb(gw_->conninfo().c_str()));
        if (PQstatus(c.get()) != CONNECTION_OK) return false;
        return exec_state(c.get(), "SELECT 'reload_canary_c'") == "42501" &&
               exec_state(c.get(), "SELECT 'reload_canary_d'") == "ok";
      },
      5000);
  EXPECT_TRUE(enforced) << gw_->dp_log();
}

}  // namespace
}  // namespace pgwarden::testing
