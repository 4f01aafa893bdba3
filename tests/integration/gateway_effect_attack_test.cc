// Approvals by effect and deny rules under hostile SQL, live: psql and libpq (simple and
// extended protocol, multi-statement strings, SQL PREPARE/EXECUTE) through pgwarden-dp to the
// sandbox PostgreSQL, decided with the real pgwardenctl. Each class of bypass is tried the way
// an agent would try it; every test asserts that nothing reached PostgreSQL before a decision
// (the table's rows, checked in PostgreSQL), that the client got the documented SQLSTATE, and
// that the decision was audited.
//
// Two gateways: one with a policy that allows every kind (no word-level approve rules, so only
// the effect analysis can hold a statement), one with the quick-start policy's settings
// (approve_kinds delete, approve_when_rows_over 10, the deny and approve rule sets) for shape
// grants and transactions.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// What happened to one statement an agent sent.
struct Outcome {
  std::string held_rule;  // the approval request's rule when it was held (then denied)
  std::string id;         // that request's id
  std::string sqlstate;   // the error the client got ("" when it ran or was held)
  std::string message;
  bool ran = false;  // completed without error and without a request
};

template <typename Derived>
class AttackGatewayTest : public SharedGatewayTest<Derived> {
 protected:
  using SharedGatewayTest<Derived>::gw_;

  static std::string db(const std::string& sql) { return db_answer(*gw_, sql); }
  // public.<name>(k int primary key, v text) with `rows` rows (v = 'orig'), analysed, owned by
  // the gateway's role.
  // ANALYZE runs after the load commits (see gateway_effect_approvals' make_table).
  static void make_table(const std::string& name, int rows) {
    ASSERT_FALSE(db("create table public." + name + " (k int primary key, v text); insert into " +
                    "public." + name + " select g, 'orig' from generate_series(1, " +
                    std::to_string(rows) + ") g; alter table public." + name +
                    " owner to app_scram; select 1")
                     .empty());
    ASSERT_EQ(db("analyze public." + name + "; select 1"), "1");
  }
  static Conn agent(const std::string& key = "agent1") {
    Conn c(PQconnectdb(gw_->conninfo_as(key).c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  // Waits for the statement already sent on `c` (`sql` as the request shows it): either its
  // results arrive, or a pending request for it appears; a request is left pending when
  // `leave_pending`, otherwise it is denied and the client's 42501 is checked.
  static Outcome await(PGconn* c, const std::string& sql, bool leave_pending = false) {
    Outcome o;
    auto end = Clock::now() + std::chrono::seconds(20);
    auto next_poll = Clock::now();
    while (Clock::now() < end) {
      if (PQconsumeInput(c) == 0) {
        o.sqlstate = "connection lost";
        return o;
      }
      if (PQisBusy(c) == 0) {
        o.ran = true;
        while (PGresult* raw = PQgetResult(c)) {
          Res r(raw);
          // A COPY ... FROM that was let through: end it without rows (its statement-level
          // triggers still fire).
          if (PQresultStatus(raw) == PGRES_COPY_IN) PQputCopyEnd(c, nullptr);
          if (PQresultStatus(raw) == PGRES_FATAL_ERROR && o.sqlstate.empty()) {
            o.ran = false;
            o.sqlstate = sqlstate(raw);
            o.message = PQresultErrorMessage(raw);
          }
          if (PQisBusy(c) != 0) PQconsumeInput(c);
        }
        return o;
      }
      if (Clock::now() >= next_poll) {
        json p = pending_request(*gw_, "reviewer", sql);
        if (p.contains("id")) {
          o.held_rule = p.value("rule", "");
          o.id = p.value("id", "");
          if (leave_pending) return o;
          CtlResult d = gw_->ctl("reviewer", {"approvals", "deny", o.id, "--reason", "attack"});
          EXPECT_EQ(d.code, 0) << d.out << d.err;
          Res r = next_result(c, 10000);
          EXPECT_NE(r, nullptr);
          EXPECT_EQ(sqlstate(r.get()), "42501") << sql;
          drain(c);
          return o;
        }
        next_poll = Clock::now() + std::chrono::milliseconds(250);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    o.sqlstate = "timeout";
    return o;
  }
  static Outcome attempt(PGconn* c, const std::string& sql) {
    EXPECT_EQ(PQsendQuery(c, sql.c_str()), 1) << PQerrorMessage(c);
    return await(c, sql);
  }
  // True when the audit log has a deny of statement `sql`: a policy decision (event
  // "decision") or a dataplane refusal (event "statement": a prescreen deny rule, a Bind),
  // which reaches the log through the event ring a moment later (wait with eventually()).
  static bool audited_deny(const std::string& sql) {
    std::istringstream lines(gw_->audit_log());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("sql", "") == sql && j.value("decision", "") == "deny" &&
          (j.value("event", "") == "decision" || j.value("event", "") == "statement")) {
        return true;
      }
    }
    return false;
  }
  static std::vector<json> approval_audit(const std::string& id) {
    std::vector<json> out;
    std::istringstream lines(gw_->audit_log());
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("approval_id", "") == id) out.push_back(std::move(j));
    }
    return out;
  }
  // Asserts that `o` was held under `rule`, and that the request and its denial were audited.
  static void expect_held(const Outcome& o, const std::string& rule, const std::string& sql) {
    EXPECT_EQ(o.held_rule, rule) << sql << " ran=" << o.ran << " " << o.sqlstate << " "
                                 << o.message;
    if (o.id.empty()) return;
    bool requested = false, denied = false;
    for (const json& j : approval_audit(o.id)) {
      requested |= j.value("event", "") == "approval_requested";
      denied |= j.value("event", "") == "approval_denied";
    }
    EXPECT_TRUE(requested && denied) << sql << "\n" << gw_->audit_log();
  }
};

// --- every kind allowed: only the effect analysis holds -------------------------------------

class GatewayEffectAttackTest : public AttackGatewayTest<GatewayEffectAttackTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = R"({"name": "effects", "allowed_kinds": ["*"],
        "allowed_relations": ["public.*"], "read_only": false,
        "approve_when_rows_over": 50, "dry_run": true, "rule_sets": ["deny"],
        "allowed_functions": ["pg_catalog.lo_*", "public.touch_v"]})";
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }

 protected:
  // Tables of this suite have 5 rows: far under the policy's row threshold, so the planner
  // cannot be what holds a statement.
  static std::string state(const std::string& name) {
    return db("select count(*) || '/' || count(*) filter (where v = 'orig') from public." + name);
  }
};

TEST_F(GatewayEffectAttackTest, TautologiesHiddenFromAWhereCheckWaitWhateverTheTableSize) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_taut", 5));
  ASSERT_NO_FATAL_FAILURE(make_table("t_other", 5));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"update public.t_taut set v = 'x' where k = k", "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where ctid = ctid", "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where k > 0 or k <= 0", "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where k < 3 or k = 3 or k > 3", "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where v like '%'", "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where lower(v) = lower(v)", "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where k in (select k from public.t_taut)",
       "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where t_taut.k = any (select k from public.t_taut)",
       "policy.where_tautology"},
      {"delete from public.t_taut t where exists (select 1 from public.t_taut s where s.k = t.k)",
       "policy.where_tautology"},
      {"update public.t_taut set v = 'x' where k is not distinct from k",
       "policy.where_constant_true"},
      {"update public.t_taut set v = 'x' where v is null or v is not null",
       "policy.where_constant_true"},
      {"merge into public.t_taut t using public.t_other o on t.k = t.k "
       "when matched then delete",
       "policy.where_tautology"},
      // The brief's row-independent forms (already held before): every row or none.
      {"update public.t_taut set v = 'x' where coalesce(null, true)", "policy.where_constant_true"},
      {"update public.t_taut set v = 'x' where (select true)", "policy.where_constant_true"},
      {"update public.t_taut set v = 'x' where true::text = 'true'", "policy.where_constant_true"},
      {"update public.t_taut set v = 'x' where random() < 2", "policy.where_row_independent"},
      {"update public.t_taut set v = 'x' from public.t_other", "policy.where_absent"},
      {"delete from public.t_taut using public.t_other where t_other.k > 0",
       "policy.where_row_independent"},
      // Inside a multi-statement string and a transaction: the string waits as a whole.
      {"begin; update public.t_taut set v = 'y' where k = 1; "
       "delete from public.t_taut where k = k; commit",
       "policy.where_tautology"},
      // An upsert whose source is the target itself updates every row it reads.
      {"insert into public.t_taut select k, 'y' from public.t_taut "
       "on conflict (k) do update set v = excluded.v",
       "policy.where_absent"},
      // A tautology in a data-modifying CTE.
      {"with d as (delete from public.t_taut where k >= k returning k) select count(*) from d",
       "policy.where_tautology"},
  };
  Conn c = agent();
  for (const auto& [sql, rule] : cases) {
    SCOPED_TRACE(sql);
    Outcome o = attempt(c.get(), sql);
    expect_held(o, rule, sql);
    EXPECT_EQ(state("t_taut"), "5/5");
  }
  // The extended protocol (Parse with a placeholder) and SQL PREPARE/EXECUTE hold the same.
  const std::string ext = "update public.t_taut set v = $1 where k = k";
  const char* values[] = {"x"};
  ASSERT_EQ(PQsendQueryParams(c.get(), ext.c_str(), 1, nullptr, values, nullptr, nullptr, 0), 1);
  expect_held(await(c.get(), ext), "policy.where_tautology", ext);
  Outcome prep = attempt(c.get(), "prepare wipe as delete from public.t_taut where k = k");
  expect_held(prep, "policy.where_tautology", "prepare");
  EXPECT_EQ(state("t_taut"), "5/5");
  // Near misses choose rows: they run at once.
  for (const char* sql : {"update public.t_taut set v = 'n' where k > 4 or k < 4",
                          "update public.t_taut set v = 'n' where v like 'z%'",
                          "update public.t_taut set v = 'n' where k <> k"}) {
    Outcome o = attempt(c.get(), sql);
    EXPECT_TRUE(o.ran) << sql << " held=" << o.held_rule << " " << o.message;
  }
  EXPECT_EQ(state("t_taut"), "5/1");  // k > 4 OR k < 4 changed four rows
}

TEST_F(GatewayEffectAttackTest, WritesHiddenInCodeWaitForApproval) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_code", 5));
  ASSERT_FALSE(db(R"(set role app_scram;
      create function public.purge() returns int language sql as
        'delete from public.t_code; select 1';
      create function public.purge_definer() returns int language plpgsql security definer as
        'begin delete from public.t_code; return 1; end';
      create function public.yes(int) returns boolean language sql as 'select true';
      create procedure public.purge_proc() language sql as 'delete from public.t_code';
      create table public.t_code_log (a int);
      reset role; select 1)")
                   .empty());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"select public.purge()", "policy.unknown_effect"},
      {"select purge()", "policy.unknown_effect"},
      {"select purge_definer()", "policy.unknown_effect"},
      {"select * from public.t_code where purge() = 1", "policy.unknown_effect"},
      {"select (select purge())", "policy.unknown_effect"},
      {"update public.t_code set v = 'x' where yes(k)", "policy.unknown_effect"},
      {"call public.purge_proc()", "policy.unknown_effect"},
      {"do $$ begin delete from public.t_code; end $$", "policy.unknown_effect"},
      {"explain analyze select purge()", "policy.unknown_effect"},
      // Code that would run on every later write, where no request is made.
      {"create rule r_code as on insert to public.t_code_log do also delete from public.t_code",
       "policy.unknown_effect"},
      {"create trigger trg_code after insert on public.t_code_log "
       "execute function public.purge()",
       "policy.unknown_effect"},
  };
  Conn c = agent();
  for (const auto& [sql, rule] : cases) {
    SCOPED_TRACE(sql);
    expect_held(attempt(c.get(), sql), rule, sql);
    EXPECT_EQ(state("t_code"), "5/5");
  }
  // Over the extended protocol too.
  const std::string ext = "select purge() + $1::int";
  const char* values[] = {"1"};
  ASSERT_EQ(PQsendQueryParams(c.get(), ext.c_str(), 1, nullptr, values, nullptr, nullptr, 0), 1);
  expect_held(await(c.get(), ext), "policy.unknown_effect", ext);
  EXPECT_EQ(state("t_code"), "5/5");
  // Built-in functions are not held.
  Outcome builtin =
      attempt(c.get(), "select lower(v), now(), count(*) from public.t_code group by 1");
  EXPECT_TRUE(builtin.ran) << builtin.message << builtin.held_rule;
}

// Writes the statement's text does not show: a rule on the written table adds a query of its
// own (EXPLAIN plans it after the INSERT: it counts in the planner bound), and a trigger on a
// written table, on one of its partitions, on a view (INSTEAD OF) or on a table a foreign key
// cascades to runs code whose writes no plan shows (no bound, unless allowed_functions lists
// the trigger's function); a table a foreign key cascades to that was empty at its last
// ANALYZE has rows the statistics do not show (no bound). The rules and triggers are made
// directly in PostgreSQL, as an application's schema would have them: through the gateway,
// CREATE RULE / TRIGGER would wait.
TEST_F(GatewayEffectAttackTest, RulesAndTriggersOnWrittenTablesCountInTheBound) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_hid_big", 200));  // over the threshold of 50
  ASSERT_NO_FATAL_FAILURE(make_table("t_hid_victim", 5));
  ASSERT_FALSE(db(R"(set role app_scram;
      create table public.t_hid_rlog (a int);
      create rule r_hid as on insert to public.t_hid_rlog do also delete from public.t_hid_big;
      create function public.hid_purge() returns trigger language plpgsql as
        'begin delete from public.t_hid_victim; return null; end';
      create table public.t_hid_tlog (a int);
      create trigger trg_hid after insert on public.t_hid_tlog
        for each statement execute function public.hid_purge();
      create table public.t_hid_part (k int, v text) partition by range (k);
      create table public.t_hid_part1 partition of public.t_hid_part for values from (0) to (100);
      insert into public.t_hid_part values (1, 'orig');
      create trigger trg_hid_p after delete on public.t_hid_part1
        for each statement execute function public.hid_purge();
      create view public.v_hid as select * from public.t_hid_part;
      create trigger trg_hid_v instead of update on public.v_hid
        for each row execute function public.hid_purge();
      create table public.t_hid_parent (k int primary key);
      insert into public.t_hid_parent values (1), (2);
      create table public.t_hid_child (k int references public.t_hid_parent on delete cascade);
      insert into public.t_hid_child values (1);
      create trigger trg_hid_c after delete on public.t_hid_child
        for each statement execute function public.hid_purge();
      create table public.t_hid_gparent (k int primary key);
      insert into public.t_hid_gparent values (1), (2);
      create table public.t_hid_gchild (k int references public.t_hid_gparent on delete cascade)
        with (autovacuum_enabled = false);
      reset role;
      analyze public.t_hid_parent, public.t_hid_child, public.t_hid_gparent, public.t_hid_gchild;
      insert into public.t_hid_gchild select 1 from generate_series(1, 1000); select 1)")
                   .empty());
  const std::vector<std::string> cases = {
      "insert into public.t_hid_rlog values (1)",
      "insert into public.t_hid_tlog values (1)",
      "delete from public.t_hid_part where k = 1",
      "update public.v_hid set v = 'x' where k = 1",
      "delete from public.t_hid_parent where k = 2",
      // The cascade's table was empty at its last ANALYZE and holds 1,000 rows now.
      "delete from public.t_hid_gparent where k = 1",
  };
  Conn c = agent();
  for (const std::string& sql : cases) {
    SCOPED_TRACE(sql);
    expect_held(attempt(c.get(), sql), "policy.rows_over", sql);
    EXPECT_EQ(state("t_hid_big"), "200/200");
    EXPECT_EQ(state("t_hid_victim"), "5/5");
  }
  // The request tells the reviewer which trigger left the write without a bound.
  json req = ctl_json_as(*gw_, "reviewer", {"approvals", "list", "--state", "all"});
  bool named = false;
  for (const json& r : req.value("approvals", json::array())) {
    const std::string why = "public.t_hid_tlog has trigger trg_hid, which runs public.hid_purge()";
    named |= r.value("sql", "") == cases[1] && r.dump().find(why) != std::string::npos;
  }
  EXPECT_TRUE(named) << req.dump();
  // COPY ... FROM cannot be EXPLAINed: the trigger on its table is found in the catalog.
  const std::string copy = "copy public.t_hid_tlog from stdin";
  expect_held(attempt(c.get(), copy), "policy.rows_over", copy);
  EXPECT_EQ(state("t_hid_victim"), "5/5");
  // Over the extended protocol too.
  const std::string ext = "insert into public.t_hid_tlog values ($1::int)";
  const char* values[] = {"1"};
  ASSERT_EQ(PQsendQueryParams(c.get(), ext.c_str(), 1, nullptr, values, nullptr, nullptr, 0), 1);
  expect_held(await(c.get(), ext), "policy.rows_over", ext);
  EXPECT_EQ(state("t_hid_victim"), "5/5");
  EXPECT_EQ(db("select count(*) from public.t_hid_rlog"), "0");
  EXPECT_EQ(db("select count(*) from public.t_hid_part"), "1");
  EXPECT_EQ(db("select count(*) from public.t_hid_parent"), "2");
  EXPECT_EQ(db("select count(*) from public.t_hid_gchild"), "1000");

  // Triggers whose function is built in or listed in allowed_functions keep the plan's bound:
  // a small UPDATE by key runs at once.
  ASSERT_FALSE(db(R"(set role app_scram;
      create function public.touch_v() returns trigger language plpgsql as
        'begin new.v := new.v || ''!''; return new; end';
      create trigger trg_touch before update on public.t_hid_victim
        for each row execute function public.touch_v();
      create trigger trg_same before update on public.t_hid_victim
        for each row execute function suppress_redundant_updates_trigger();
      reset role; select 1)")
                   .empty());
  Outcome small = attempt(c.get(), "update public.t_hid_victim set v = 'x' where k = 1");
  EXPECT_TRUE(small.ran) << small.held_rule << small.message;
  EXPECT_EQ(db("select v from public.t_hid_victim where k = 1"), "x!");
}

// A table without statistics (never analysed; VACUUM alone or an ANALYZE while it was empty
// leaves none): the planner guesses `v = 'orig'` at 0.5% of the table however many rows it
// matches. A write to it, or choosing its rows by reading it, is then bounded by the most rows
// the written table's pages can hold; after ANALYZE the plan's estimate decides again.
TEST_F(GatewayEffectAttackTest, WritesToTablesWithoutStatisticsAreBoundedByTheirSize) {
  ASSERT_FALSE(db(R"(create table public.t_nostats (k int primary key, v text)
        with (autovacuum_enabled = false);
      insert into public.t_nostats select g, 'orig' from generate_series(1, 500) g;
      alter table public.t_nostats owner to app_scram; select 1)")
                   .empty());
  // VACUUM sets reltuples and relpages, not column statistics.
  EXPECT_EQ(db("vacuum public.t_nostats"), "");
  Conn c = agent();
  const std::string sql = "delete from public.t_nostats where v = 'orig'";
  expect_held(attempt(c.get(), sql), "policy.rows_over", sql);
  EXPECT_EQ(state("t_nostats"), "500/500");
  json list = ctl_json_as(*gw_, "reviewer", {"approvals", "list", "--state", "all"});
  bool noted = false;
  for (const json& r : list.value("approvals", json::array())) {
    noted |= r.value("sql", "") == sql &&
             r.dump().find("public.t_nostats has rows but no statistics") != std::string::npos;
  }
  EXPECT_TRUE(noted) << list.dump();
  // The same guess for a table the write reads to choose its rows (an analysed target).
  ASSERT_NO_FATAL_FAILURE(make_table("t_join", 100));
  const std::string join =
      "delete from public.t_join using public.t_nostats o where t_join.k = o.k and o.v = 'orig'";
  expect_held(attempt(c.get(), join), "policy.rows_over", join);
  const std::string sub =
      "delete from public.t_join where k in (select k from public.t_nostats where v = 'orig')";
  expect_held(attempt(c.get(), sub), "policy.rows_over", sub);
  EXPECT_EQ(state("t_join"), "100/100");
  // Once analysed, a delete of one row by key runs at once (and the big one still waits).
  ASSERT_EQ(db("analyze public.t_nostats; select 1"), "1");
  Outcome one = attempt(c.get(), "delete from public.t_nostats where k = 1");
  EXPECT_TRUE(one.ran) << one.held_rule << one.message;
  expect_held(attempt(c.get(), sql), "policy.rows_over", sql);
  EXPECT_EQ(state("t_nostats"), "499/499");
}

// Statistics that exist but describe older data: every row's flag set after ANALYZE, then a
// DELETE by flag is estimated by the old statistics (no row had flag 1: about one row). Once
// more rows changed since ANALYZE than autovacuum's own trigger (50 + 10%), the write is
// counted as the rows written since plus the estimate, up to the table's rows: held, nothing
// deleted. A keyed write (primary key equality) is bounded by the key and still runs.
TEST_F(GatewayEffectAttackTest, WritesChoosingByStatisticsOlderThanTheDataAreBoundedByTheChanges) {
  ASSERT_FALSE(db(R"(create table public.t_stale (k int primary key, v text, flag int)
        with (autovacuum_enabled = false);
      insert into public.t_stale select g, 'orig', 0 from generate_series(1, 500) g;
      alter table public.t_stale owner to app_scram; select 1)")
                   .empty());
  ASSERT_EQ(db("analyze public.t_stale; select 1"), "1");
  ASSERT_NO_FATAL_FAILURE(make_table("t_stale_by", 100));
  ASSERT_EQ(db("update public.t_stale set flag = 1; select 1"), "1");
  // PostgreSQL reports a session's counts when it ends or goes idle: wait for them.
  ASSERT_TRUE(eventually([] {
    return db("select n_mod_since_analyze >= 500 from pg_stat_user_tables"
              " where relid = 'public.t_stale'::regclass") == "t";
  }));
  Conn c = agent();
  const std::string sql = "delete from public.t_stale where flag = 1";
  expect_held(attempt(c.get(), sql), "policy.rows_over", sql);
  EXPECT_EQ(state("t_stale"), "500/500");
  json list = ctl_json_as(*gw_, "reviewer", {"approvals", "list", "--state", "all"});
  bool noted = false;
  for (const json& r : list.value("approvals", json::array())) {
    noted |= r.value("sql", "") == sql &&
             r.dump().find("public.t_stale changed since its last ANALYZE") != std::string::npos;
  }
  EXPECT_TRUE(noted) << list.dump();
  // A table read to choose the rows that changed since its statistics: the written table's
  // rows (100, over the threshold of 50).
  const std::string sub =
      "delete from public.t_stale_by where k in (select k from public.t_stale where flag = 1)";
  expect_held(attempt(c.get(), sub), "policy.rows_over", sub);
  EXPECT_EQ(state("t_stale_by"), "100/100");
  // By primary key: at most one row whatever the statistics say (simple and extended).
  Outcome one = attempt(c.get(), "delete from public.t_stale where k = 1");
  EXPECT_TRUE(one.ran) << one.held_rule << one.message;
  const char* two[] = {"2"};
  Res keyed(PQexecParams(c.get(), "update public.t_stale set v = 'x' where k = $1", 1, nullptr, two,
                         nullptr, nullptr, 0));
  EXPECT_EQ(PQresultStatus(keyed.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(keyed.get());
  // After ANALYZE the plan's estimate (every row has flag 1) holds it as well.
  ASSERT_EQ(db("analyze public.t_stale; select 1"), "1");
  expect_held(attempt(c.get(), sql), "policy.rows_over", sql);
  EXPECT_EQ(state("t_stale"), "499/498");
  // A table loaded and analysed in one transaction: PostgreSQL counts the loaded rows as
  // changed since the ANALYZE once it commits, yet its statistics describe them. A write of
  // a few rows by a range runs at once.
  ASSERT_FALSE(db(R"(create table public.t_loaded (k int primary key, v text)
        with (autovacuum_enabled = false);
      insert into public.t_loaded select g, 'orig' from generate_series(1, 500) g;
      analyze public.t_loaded; alter table public.t_loaded owner to app_scram; select 1)")
                   .empty());
  ASSERT_TRUE(eventually([] {
    return db("select n_mod_since_analyze >= 500 from pg_stat_user_tables"
              " where relid = 'public.t_loaded'::regclass") == "t";
  }));
  Outcome few = attempt(c.get(), "delete from public.t_loaded where k <= 3");
  EXPECT_TRUE(few.ran) << few.held_rule << few.message;
  EXPECT_EQ(state("t_loaded"), "497/497");
}

// A statement sent with Parse is decided at its Parse, before the bind values are known. The
// generic plan guesses `k > $1` at a third of the table and `v LIKE $1` at 0.5%: both under
// the threshold of 50 for 100 rows, while `$1 = 0` or `'%'` reach every row. Such writes have
// no bound; `k = $1` keeps the plan's estimate and runs at once.
TEST_F(GatewayEffectAttackTest, BindParametersThatMayReachEveryRowHaveNoBound) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_param", 100));
  Conn c = agent();
  const std::vector<std::pair<std::string, const char*>> cases = {
      {"delete from public.t_param where k > $1", "0"},
      {"delete from public.t_param where v like $1", "%"},
      {"update public.t_param set v = 'x' where k = any ($1::int[])", "{1,2,3}"},
  };
  for (const auto& [sql, value] : cases) {
    SCOPED_TRACE(sql);
    const char* values[] = {value};
    ASSERT_EQ(PQsendQueryParams(c.get(), sql.c_str(), 1, nullptr, values, nullptr, nullptr, 0), 1);
    expect_held(await(c.get(), sql), "policy.rows_over", sql);
    EXPECT_EQ(state("t_param"), "100/100");
  }
  // A named prepared statement: held at its Parse (PQprepare), nothing runs.
  const std::string named = "delete from public.t_param where k >= $1";
  ASSERT_EQ(PQsendPrepare(c.get(), "del_from", named.c_str(), 1, nullptr), 1);
  expect_held(await(c.get(), named), "policy.rows_over", named);
  const char* zero[] = {"0"};
  Res refused(PQexecPrepared(c.get(), "del_from", 1, zero, nullptr, nullptr, 0));
  EXPECT_EQ(PQresultStatus(refused.get()), PGRES_FATAL_ERROR);
  EXPECT_EQ(state("t_param"), "100/100");
  // By key: the plan's estimate (one row) decides.
  const std::string by_key = "delete from public.t_param where k = $1";
  const char* one[] = {"1"};
  Res deleted(PQexecParams(c.get(), by_key.c_str(), 1, nullptr, one, nullptr, nullptr, 0));
  EXPECT_EQ(PQresultStatus(deleted.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(deleted.get());
  EXPECT_STREQ(PQcmdTuples(deleted.get()), "1");
  EXPECT_EQ(state("t_param"), "99/99");
}

// A reviewer approves a prepared statement's Parse without seeing any values: the approval
// covers the Bind that follows it (one execution, with the values it carries). A second Bind of
// the same statement, with any values, is refused (42501, audited) and changes nothing;
// preparing it again asks for a new approval. Also when the client pipelines both executions
// behind the held Parse.
TEST_F(GatewayEffectAttackTest, ApprovedPreparedStatementRunsOnceThenAsksAgain) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_once", 100));
  Conn c = agent();
  const std::string sql = "delete from public.t_once where k >= $1";
  ASSERT_EQ(PQsendPrepare(c.get(), "del_once", sql.c_str(), 1, nullptr), 1);
  Outcome held = await(c.get(), sql, /*leave_pending=*/true);
  ASSERT_EQ(held.held_rule, "policy.rows_over") << held.sqlstate << " " << held.message;
  EXPECT_EQ(state("t_once"), "100/100");
  CtlResult a = gw_->ctl("reviewer", {"approvals", "approve", held.id, "--reason", "k >= 96"});
  ASSERT_EQ(a.code, 0) << a.out << a.err;
  Res prepared = next_result(c.get(), 10000);
  ASSERT_NE(prepared, nullptr);
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK)
      << PQresultErrorMessage(prepared.get());
  drain(c.get());
  // The approved execution: the values the reviewer was told about.
  const char* approved[] = {"96"};
  Res first(PQexecPrepared(c.get(), "del_once", 1, approved, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(first.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(first.get());
  EXPECT_STREQ(PQcmdTuples(first.get()), "5");
  EXPECT_EQ(state("t_once"), "95/95");
  // Any further execution, whatever its values, is refused before it reaches PostgreSQL.
  for (const char* value : {"0", "96"}) {
    const char* values[] = {value};
    Res again(PQexecPrepared(c.get(), "del_once", 1, values, nullptr, nullptr, 0));
    EXPECT_EQ(PQresultStatus(again.get()), PGRES_FATAL_ERROR) << value;
    EXPECT_EQ(sqlstate(again.get()), "42501") << value;
    EXPECT_NE(std::string(PQresultErrorMessage(again.get())).find("covers one execution"),
              std::string::npos)
        << PQresultErrorMessage(again.get());
  }
  // A Bind over max_message_bytes (1 MiB here), relayed to PostgreSQL as it arrives: refused
  // the same, before its first byte goes upstream (PostgreSQL would answer 22P02).
  const std::string big(2 << 20, '9');
  const char* big_values[] = {big.c_str()};
  Res streamed(PQexecPrepared(c.get(), "del_once", 1, big_values, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(streamed.get()), "42501") << PQresultErrorMessage(streamed.get());
  EXPECT_EQ(state("t_once"), "95/95");
  EXPECT_TRUE(
      eventually([] { return audited_deny("-- Bind of prepared statement \"del_once\""); }));
  // A SQL EXECUTE of the same statement is decided on its own, never under the spent approval.
  Outcome executed = attempt(c.get(), "execute del_once(0)");
  EXPECT_FALSE(executed.ran) << executed.sqlstate;
  EXPECT_EQ(state("t_once"), "95/95");
  // The session still works, and preparing the statement again asks again (denied: intact).
  Res ok(PQexec(c.get(), "select 1"));
  EXPECT_EQ(PQresultStatus(ok.get()), PGRES_TUPLES_OK);
  ASSERT_EQ(PQsendPrepare(c.get(), "del_again", sql.c_str(), 1, nullptr), 1);
  expect_held(await(c.get(), sql), "policy.rows_over", sql);
  EXPECT_EQ(state("t_once"), "95/95");

  // Pipelined: Parse, then two Bind/Execute of it, all sent before the Parse is decided.
  ASSERT_EQ(PQenterPipelineMode(c.get()), 1);
  ASSERT_EQ(PQsendPrepare(c.get(), "del_pipe", sql.c_str(), 1, nullptr), 1);
  const char* pipe_first[] = {"91"};
  const char* pipe_second[] = {"0"};
  ASSERT_EQ(PQsendQueryPrepared(c.get(), "del_pipe", 1, pipe_first, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  ASSERT_EQ(PQsendQueryPrepared(c.get(), "del_pipe", 1, pipe_second, nullptr, nullptr, 0), 1);
  ASSERT_EQ(PQpipelineSync(c.get()), 1);
  json p;
  ASSERT_TRUE(eventually([&] {
    p = pending_request(*gw_, "reviewer", sql);
    return p.contains("id");
  }));
  EXPECT_EQ(state("t_once"), "95/95");
  CtlResult b = gw_->ctl("reviewer", {"approvals", "approve", p.value("id", "")});
  ASSERT_EQ(b.code, 0) << b.out << b.err;
  // Results in order: the Parse, the first execution, its sync; the second execution, its sync.
  std::vector<std::string> seen;
  std::string second_state;
  auto end = Clock::now() + std::chrono::seconds(20);
  while (seen.size() < 5 && Clock::now() < end) {
    Res r = next_result(c.get(), 10000);
    if (r == nullptr) continue;  // the end of one query's results
    const ExecStatusType st = PQresultStatus(r.get());
    if (st == PGRES_FATAL_ERROR) second_state = sqlstate(r.get());
    seen.push_back(PQresStatus(st) +
                   std::string(st == PGRES_COMMAND_OK ? PQcmdTuples(r.get()) : ""));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"PGRES_COMMAND_OK", "PGRES_COMMAND_OK5",
                                            "PGRES_PIPELINE_SYNC", "PGRES_FATAL_ERROR",
                                            "PGRES_PIPELINE_SYNC"}));
  EXPECT_EQ(second_state, "42501");
  EXPECT_EQ(PQexitPipelineMode(c.get()), 1) << PQerrorMessage(c.get());
  EXPECT_EQ(state("t_once"), "90/90");
}

// Functions that act on other sessions, the server, its WAL or replication are on the
// dangerous-function list: refused at once (42501, audited) under a policy that allows every
// statement kind, unless the policy lists them in allowed_functions. Nothing reaches
// PostgreSQL: the other session survives.
TEST_F(GatewayEffectAttackTest, FunctionsActingOnTheServerAreRefusedUnderEveryKind) {
  Conn victim = agent();
  Res pid_r(PQexec(victim.get(), "select pg_backend_pid()"));
  ASSERT_EQ(PQresultStatus(pid_r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(pid_r.get());
  const std::string pid = PQgetvalue(pid_r.get(), 0, 0);
  Conn c = agent();
  const std::vector<std::string> statements = {
      "select pg_terminate_backend(" + pid + ")",
      "select pg_cancel_backend(" + pid + ")",
      "select pg_catalog.pg_terminate_backend(pid) from pg_stat_activity",
      "select pg_reload_conf()",
      "select pg_rotate_logfile()",
      "select pg_switch_wal()",
      "select pg_drop_replication_slot('pgw_attack_slot')",
      "select * from dblink_exec('dbname=demo', 'delete from public.t')"};
  for (const std::string& sql : statements) {
    SCOPED_TRACE(sql);
    Outcome o = attempt(c.get(), sql);
    EXPECT_EQ(o.sqlstate, "42501") << o.message << " held=" << o.held_rule << " ran=" << o.ran;
    EXPECT_TRUE(o.held_rule.empty());
    EXPECT_TRUE(eventually([&] { return audited_deny(sql); }, 10000)) << sql;
  }
  Res alive(PQexec(victim.get(), "select 1"));
  EXPECT_EQ(PQresultStatus(alive.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(alive.get());
}

TEST_F(GatewayEffectAttackTest, DropsOfStoredDataWait) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_drop", 5));
  ASSERT_FALSE(db("create view public.v_drop as select * from public.t_drop; "
                  "alter view public.v_drop owner to app_scram; select 1")
                   .empty());
  Conn c = agent();
  for (const char* sql :
       {"drop table public.t_drop cascade", "drop view public.v_drop cascade",
        "alter table public.t_drop drop column v", "truncate public.t_drop cascade"}) {
    SCOPED_TRACE(sql);
    expect_held(attempt(c.get(), sql),
                std::string_view(sql).starts_with("truncate") ? "policy.truncate" : "policy.drop",
                sql);
    EXPECT_EQ(state("t_drop"), "5/5");
  }
  EXPECT_EQ(db("select count(*) from public.v_drop"), "5");
}

// DDL that is not a DROP but destroys stored values or takes rows out of a table: held as
// `drop`, and nothing changed in PostgreSQL before the decision (the reviewer denies).
TEST_F(GatewayEffectAttackTest, DdlThatDestroysOrHidesRowsWithoutADropWaits) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_ddl", 5));
  ASSERT_FALSE(db(R"(create table public.p_ddl (k int, v text) partition by range (k);
      create table public.p_ddl_1 partition of public.p_ddl for values from (1) to (100);
      insert into public.p_ddl select g, 'orig' from generate_series(1, 5) g;
      create table public.i_ddl (k int, v text);
      create table public.i_ddl_child () inherits (public.i_ddl);
      insert into public.i_ddl_child select g, 'orig' from generate_series(1, 5) g;
      create table public.fk_ddl (k int references public.t_ddl (k));
      alter table public.p_ddl owner to app_scram; alter table public.p_ddl_1 owner to app_scram;
      alter table public.i_ddl owner to app_scram;
      alter table public.i_ddl_child owner to app_scram;
      alter table public.fk_ddl owner to app_scram; select 1)")
                   .empty());
  auto column_type = [](const std::string& table, const std::string& column) {
    return db(
        "select format_type(atttypid, atttypmod) from pg_attribute where attrelid = "
        "'public." +
        table + "'::regclass and attname = '" + column + "'");
  };
  Conn c = agent();
  for (const char* sql : {
           "alter table public.t_ddl alter column v type text using null",
           "alter table public.t_ddl alter v set data type varchar(1)",
           "alter table public.t_ddl add column w int, alter column v type int using 0",
           "alter table public.p_ddl detach partition public.p_ddl_1",
           "alter table public.i_ddl_child no inherit public.i_ddl",
       }) {
    SCOPED_TRACE(sql);
    expect_held(attempt(c.get(), sql), "policy.drop", sql);
    EXPECT_EQ(state("t_ddl"), "5/5");
    EXPECT_EQ(column_type("t_ddl", "v"), "text");
    EXPECT_EQ(db("select count(*) from public.p_ddl"), "5");
    EXPECT_EQ(db("select count(*) from public.i_ddl"), "5");
  }
  // TRUNCATE of a partitioned parent empties every partition; a keyed DELETE in a WITH inside
  // COPY (...) TO cannot be EXPLAINed, so it has no estimate. Both held, nothing changed.
  const std::string trunc_parent = "truncate public.p_ddl";
  expect_held(attempt(c.get(), trunc_parent), "policy.truncate", trunc_parent);
  const std::string copy_delete =
      "copy (with d as (delete from public.t_ddl where k = 1 returning k) select k from d) to "
      "stdout";
  expect_held(attempt(c.get(), copy_delete), "policy.rows_over", copy_delete);
  EXPECT_EQ(db("select count(*) from public.p_ddl_1"), "5");
  EXPECT_EQ(state("t_ddl"), "5/5");
  // Rows taken out of the WAL (a crash empties the table): held as `drop`, still logged.
  const std::string unlogged = "alter table public.t_ddl set unlogged";
  expect_held(attempt(c.get(), unlogged), "policy.drop", unlogged);
  EXPECT_EQ(db("select relpersistence from pg_class where oid = 'public.t_ddl'::regclass"), "p");
  // Switching trigger code on or off for every later write (DISABLE TRIGGER ALL also stops the
  // foreign key's enforcement): held as `unknown_effect`, every trigger still enabled.
  ASSERT_FALSE(db(R"(create function public.refuse_delete() returns trigger language plpgsql as
        $$ begin raise exception 'rows of fk_ddl are kept'; end $$;
      create trigger keep_rows before delete on public.fk_ddl
        for each row execute function public.refuse_delete(); select 1)")
                   .empty());
  for (const char* sql :
       {"alter table public.t_ddl disable trigger all",
        "alter table public.fk_ddl disable trigger user", "drop trigger keep_rows on public.fk_ddl",
        "alter table public.t_ddl enable trigger all",
        "alter table public.fk_ddl enable always trigger no_such_trigger"}) {
    SCOPED_TRACE(sql);
    expect_held(attempt(c.get(), sql), "policy.unknown_effect", sql);
  }
  EXPECT_EQ(db("select count(*) from pg_trigger where tgrelid in ('public.t_ddl'::regclass,"
               " 'public.fk_ddl'::regclass) and tgenabled <> 'O'"),
            "0");
  EXPECT_NE(db("select count(*) from pg_trigger where tgrelid = 'public.t_ddl'::regclass"), "0");
  EXPECT_EQ(db("select count(*) from pg_trigger where tgname = 'keep_rows'"), "1");
  // Changes that keep every stored row and value run at once.
  for (const char* sql :
       {"alter table public.t_ddl add column note text", "vacuum public.t_ddl",
        "analyze public.t_ddl", "reindex table public.t_ddl",
        "cluster public.t_ddl using t_ddl_pkey", "alter table public.t_ddl set (fillfactor = 90)",
        "alter table public.t_ddl drop constraint t_ddl_pkey cascade"}) {
    Outcome o = attempt(c.get(), sql);
    EXPECT_TRUE(o.ran) << sql << " held=" << o.held_rule << " " << o.message;
  }
  EXPECT_EQ(state("t_ddl"), "5/5");
  EXPECT_EQ(db("select count(*) from pg_constraint where conrelid = 'public.fk_ddl'::regclass"),
            "0");  // the foreign key went with the primary key; no row did
}

// Stored data destroyed without DML or DDL on a table: a large object unlinked, cut or
// overwritten through pg_catalog's functions (in a SELECT, a WHERE, a CTE), and a
// materialized view emptied by REFRESH ... WITH NO DATA. Large-object functions are denied
// unless a policy lists them in allowed_functions (this suite's does); listed, a call that
// destroys data is still held as `drop`, like DROP TABLE under allowed_kinds "*". The large
// object and the view's rows are intact in PostgreSQL before the decision (the reviewer
// denies).
TEST_F(GatewayEffectAttackTest, LargeObjectsAndMaterializedViewsEmptiedWait) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_lo", 5));
  const std::string oid = db(
      "select lo_from_bytea(0, 'large-object-payload')::text");
  ASSERT_FALSE(oid.empty());
  ASSERT_FALSE(db("alter large object " + oid + " owner to app_scram; "
                  "create materialized view public.mv_lo as select * from public.t_lo; "
                  "alter materialized view public.mv_lo owner to app_scram; select 1")
                   .empty());
  auto lo_contents = [&] {
    return db("select convert_from(lo_get(" + oid + "), 'UTF8')");
  };
  Conn c = agent();
  const std::string statements[] = {
      "select lo_unlink(" + oid + ")",
      "select pg_catalog.lo_unlink(" + oid + "::oid)",
      "select k from public.t_lo where lo_unlink(" + oid + ") = 1",
      "select lo_put(" + oid + ", 0, '\\x00')",
      "with d as (select lo_truncate(lo_open(" + oid + ", 131072), 0)) select * from d",
      "refresh materialized view public.mv_lo with no data",
  };
  for (const std::string& sql : statements) {
    SCOPED_TRACE(sql);
    expect_held(attempt(c.get(), sql), "policy.drop", sql);
    EXPECT_EQ(lo_contents(), "large-object-payload");
    EXPECT_EQ(db("select count(*) from public.mv_lo"), "5");
  }
  // Reading a large object and a REFRESH that fills the view run at once.
  for (const std::string& sql : {"select length(lo_get(" + oid + "))",
                                 std::string("refresh materialized view public.mv_lo")}) {
    Outcome o = attempt(c.get(), sql);
    EXPECT_TRUE(o.ran) << sql << " held=" << o.held_rule << " " << o.message;
  }
}

TEST_F(GatewayEffectAttackTest, DenyRulesHoldAgainstSpellingTricks) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_deny", 5));
  Conn c = agent();
  // Spelling tricks on the wire (case, comments, tabs, newlines, quoting of the file name),
  // functions reading or writing server files, server-side extensions.
  for (const char* sql :
       {"DrOp/**/DATABASE demo", "drop\tdatabase demo", "drop -- x\n database demo",
        "select 1; drop database demo", "copy public.t_deny to '/tmp/pgw_attack'",
        "copy public.t_deny to E'/tmp/pgw_attack'", "copy public.t_deny to $$/tmp/pgw_attack$$",
        "copy public.t_deny to U&'/tmp/pgw_attack'", "CoPy public.t_deny TO\nProgram 'true'",
        "copy (select 1) to program $x$true$x$", "select pg_read_file('/etc/passwd')",
        "select lo_export(1, '/tmp/pgw_attack')", "create extension dblink",
        "alter/**/system set work_mem = '1MB'", "set role postgres",
        "set session authorization postgres"}) {
    SCOPED_TRACE(sql);
    Outcome o = attempt(c.get(), sql);
    EXPECT_EQ(o.sqlstate, "42501") << o.message << " held=" << o.held_rule << " ran=" << o.ran;
    EXPECT_TRUE(o.held_rule.empty());
    EXPECT_TRUE(eventually([&] { return audited_deny(sql); }, 10000)) << gw_->audit_log();
  }
  EXPECT_EQ(state("t_deny"), "5/5");
  EXPECT_NE(db("select datname from pg_database where datname = 'demo'"), "");
  // The same through the extended protocol (one Parse message per statement).
  for (const char* sql : {"DrOp/**/DATABASE demo", "copy public.t_deny to $$/tmp/pgw_attack$$"}) {
    Res r(PQexecParams(c.get(), sql, 0, nullptr, nullptr, nullptr, nullptr, 0));
    EXPECT_EQ(sqlstate(r.get()), "42501") << sql << ": " << PQresultErrorMessage(r.get());
  }
  // A DO block cannot reach a deny rule's text (its body is a literal): it waits for a
  // reviewer, who sees the body (and PostgreSQL refuses DROP DATABASE inside a function).
  const std::string dyn = "do $$ begin execute 'copy public.t_deny to program ''true'''; end $$";
  expect_held(attempt(c.get(), dyn), "policy.unknown_effect", dyn);
}

// --- the quick-start settings: shape grants, identities, transactions ----------------------

class GatewayQuickstartAttackTest : public AttackGatewayTest<GatewayQuickstartAttackTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = R"({"name": "demo-agents",
        "allowed_kinds": ["select", "insert", "update", "delete", "copy_to_stdout",
                          "transaction", "prepare", "execute", "deallocate", "show"],
        "allowed_relations": ["crm.*", "public.*"], "read_only": false,
        "approve_kinds": ["delete"], "approve_when_rows_over": 10, "dry_run": true,
        "rule_sets": ["deny", "approve", "pii"]})";
    o.extra_service_keys = {"agent2"};
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }

 protected:
  static std::string count(const std::string& name) {
    return db("select count(*) from public." + name);
  }
  // Approves request `id` (scope shape for 10 minutes) and waits for the client's result.
  static void approve_shape(const std::string& id, PGconn* c) {
    CtlResult a =
        gw_->ctl("reviewer", {"approvals", "approve", id, "--scope", "shape", "--for", "10m"});
    ASSERT_EQ(a.code, 0) << a.out << a.err;
    Res r = next_result(c, 10000);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
    drain(c);
  }
};

TEST_F(GatewayQuickstartAttackTest, ShapeGrantsDoNotWidenToLiteralsThatReachMoreRows) {
  ASSERT_NO_FATAL_FAILURE(make_table("q_shape", 100));
  Conn c = agent();
  // A delete of one row, approved for its shape.
  const std::string one = "delete from public.q_shape where k = 1 or 1 = 2";
  ASSERT_EQ(PQsendQuery(c.get(), one.c_str()), 1);
  Outcome held = await(c.get(), one, /*leave_pending=*/true);
  ASSERT_EQ(held.held_rule, "policy.approve_kinds");
  ASSERT_NO_FATAL_FAILURE(approve_shape(held.id, c.get()));
  EXPECT_EQ(count("q_shape"), "99");
  // The grant covers the same shape with another row.
  Outcome two = attempt(c.get(), "delete from public.q_shape where k = 2 or 1 = 2");
  EXPECT_TRUE(two.ran) << two.held_rule << two.message;
  EXPECT_EQ(count("q_shape"), "98");
  // ... not the same shape whose literals make it reach every row.
  const std::string all = "delete from public.q_shape where k = 3 or 1 = 1";
  expect_held(attempt(c.get(), all), "policy.approve_kinds", all);
  EXPECT_EQ(count("q_shape"), "98");
  // ... nor another identity.
  Conn other = agent("agent2");
  const std::string four = "delete from public.q_shape where k = 4 or 1 = 2";
  expect_held(attempt(other.get(), four), "policy.approve_kinds", four);
  EXPECT_EQ(count("q_shape"), "98");

  // A planner-threshold approval for 20 rows does not stand for a million.
  const std::string few = "update public.q_shape set v = 'few' where k < 30";
  ASSERT_EQ(PQsendQuery(c.get(), few.c_str()), 1);
  Outcome over = await(c.get(), few, /*leave_pending=*/true);
  ASSERT_EQ(over.held_rule, "policy.rows_over");
  ASSERT_NO_FATAL_FAILURE(approve_shape(over.id, c.get()));
  Outcome fewer = attempt(c.get(), "update public.q_shape set v = 'fewer' where k < 20");
  EXPECT_TRUE(fewer.ran) << fewer.held_rule << fewer.message;
  const std::string many = "update public.q_shape set v = 'many' where k < 1000000";
  expect_held(attempt(c.get(), many), "policy.rows_over", many);
  EXPECT_EQ(db("select count(*) from public.q_shape where v = 'many'"), "0");
}

TEST_F(GatewayQuickstartAttackTest, RollbackToSavepointThenReplayNeedsANewApproval) {
  ASSERT_NO_FATAL_FAILURE(make_table("q_tx", 5));
  Conn c = agent();
  Res r(PQexec(c.get(), "begin"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK);
  r.reset(PQexec(c.get(), "savepoint s"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK);
  const std::string del = "delete from public.q_tx where k = 1";
  ASSERT_EQ(PQsendQuery(c.get(), del.c_str()), 1);
  Outcome first = await(c.get(), del, /*leave_pending=*/true);
  ASSERT_EQ(first.held_rule, "policy.approve_kinds");
  ASSERT_EQ(gw_->ctl("reviewer", {"approvals", "approve", first.id}).code, 0);
  Res done = next_result(c.get(), 10000);
  ASSERT_NE(done, nullptr);
  EXPECT_STREQ(PQcmdTuples(done.get()), "1");
  drain(c.get());
  r.reset(PQexec(c.get(), "rollback to savepoint s"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK);
  // The same text again: a once-approval does not stand for a replay.
  Outcome replay = attempt(c.get(), del);
  expect_held(replay, "policy.approve_kinds", del);
  EXPECT_NE(replay.id, first.id);
  r.reset(PQexec(c.get(), "rollback"));
  EXPECT_EQ(count("q_tx"), "5");
}

// A SQL PREPARE is decided once and every EXECUTE of it anew; a protocol-level Bind of the same
// name (PQexecPrepared without PQprepare) would run it with no decision at all.
TEST_F(GatewayQuickstartAttackTest, SqlPreparedStatementsRunOnlyThroughExecute) {
  ASSERT_NO_FATAL_FAILURE(make_table("q_bind", 5));
  Conn c = agent();
  const std::string prep = "prepare del_one(int) as delete from public.q_bind where k = $1";
  ASSERT_EQ(PQsendQuery(c.get(), prep.c_str()), 1);
  Outcome held = await(c.get(), prep, /*leave_pending=*/true);
  ASSERT_EQ(held.held_rule, "policy.approve_kinds");
  ASSERT_EQ(gw_->ctl("reviewer", {"approvals", "approve", held.id}).code, 0);
  Res r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  drain(c.get());
  expect_held(attempt(c.get(), "execute del_one(1)"), "policy.approve_kinds", "execute");
  const char* values[] = {"2"};
  r.reset(PQexecPrepared(c.get(), "del_one", 1, values, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(r.get()), "42501") << PQresultErrorMessage(r.get());
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("not prepared with a Parse"),
            std::string::npos)
      << PQresultErrorMessage(r.get());
  EXPECT_EQ(count("q_bind"), "5");
  EXPECT_TRUE(
      eventually([&] { return audited_deny("-- Bind of prepared statement \"del_one\""); }, 10000))
      << gw_->audit_log();
  // A Bind over max_message_bytes (1 MiB) is streamed upstream as it arrives: refused before.
  const std::string big(2 << 20, '7');
  const char* big_values[] = {big.c_str()};
  r.reset(PQexecPrepared(c.get(), "del_one", 1, big_values, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(r.get()), "42501") << PQresultErrorMessage(r.get());
  EXPECT_EQ(count("q_bind"), "5");
  // Names prepared with Parse bind as usual ...
  r.reset(PQprepare(c.get(), "cnt", "select count(*) from public.q_bind", 0, nullptr));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  r.reset(PQexecPrepared(c.get(), "cnt", 0, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "5");
  // ... until a SQL DEALLOCATE, after which the name may be a SQL PREPARE's.
  r.reset(PQexec(c.get(), "deallocate cnt"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  const std::string reuse = "prepare cnt as delete from public.q_bind where k = 3";
  ASSERT_EQ(PQsendQuery(c.get(), reuse.c_str()), 1);
  Outcome again = await(c.get(), reuse, /*leave_pending=*/true);
  ASSERT_EQ(again.held_rule, "policy.approve_kinds");
  ASSERT_EQ(gw_->ctl("reviewer", {"approvals", "approve", again.id}).code, 0);
  r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  drain(c.get());
  r.reset(PQexecPrepared(c.get(), "cnt", 0, nullptr, nullptr, nullptr, 0));
  EXPECT_EQ(sqlstate(r.get()), "42501") << PQresultErrorMessage(r.get());
  EXPECT_EQ(count("q_bind"), "5");
  // The session goes on: the refusal ended at its Sync.
  r.reset(PQexec(c.get(), "select 1"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
}

TEST_F(GatewayQuickstartAttackTest, KindsTheQuickstartPolicyDoesNotAllowAreRefusedAtOnce) {
  ASSERT_NO_FATAL_FAILURE(make_table("q_kinds", 5));
  Conn c = agent();
  for (const char* sql :
       {"do $$ begin delete from public.q_kinds; end $$",
        "merge into public.q_kinds t using public.q_kinds s on true when matched then delete",
        "truncate public.q_kinds", "drop table public.q_kinds",
        "copy public.q_kinds to '/tmp/pgw_attack'", "copy public.q_kinds from stdin",
        "select * from public.q_kinds for update", "alter table public.q_kinds drop column v",
        "create rule r as on insert to public.q_kinds do also delete from public.q_kinds",
        "set session_replication_role = replica", "select pg_terminate_backend(1)",
        "select lo_unlink(1)"}) {
    SCOPED_TRACE(sql);
    Outcome o = attempt(c.get(), sql);
    EXPECT_EQ(o.sqlstate, "42501") << o.message << " held=" << o.held_rule << " ran=" << o.ran;
    EXPECT_TRUE(o.held_rule.empty());
    EXPECT_TRUE(eventually([&] { return audited_deny(sql); }, 10000)) << gw_->audit_log();
  }
  EXPECT_EQ(count("q_kinds"), "5");
}

}  // namespace
}  // namespace pgwarden::testing
