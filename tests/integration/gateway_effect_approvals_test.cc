// Approvals by effect, live: psql and libpq through pgwarden-dp to the sandbox PostgreSQL,
// decided with the real pgwardenctl. The policy allows every kind ("*", no approve rule set,
// so no word-level rule helps): writes that reach every row (WHERE absent, constant true,
// row-independent, TRUNCATE, inside a CTE) wait for a reviewer; writes the planner estimates
// over approve_when_rows_over wait too, with the estimate and the dry run's exact count in the
// request; nothing runs before a decision (row counts checked in PostgreSQL). SQL-level
// PREPARE/EXECUTE inherit verdicts across Query messages.
// One gateway for the suite; every test uses its own tables.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

class GatewayEffectApprovalsTest : public SharedGatewayTest<GatewayEffectApprovalsTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = R"({"name": "effects", "allowed_kinds": ["*"],
        "allowed_relations": ["public.*"], "read_only": false,
        "approve_when_rows_over": 50, "dry_run": true, "rule_sets": ["deny"]})";
    o.extra_service_keys = {"agent2"};
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 120;
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }

 protected:
  // public.<name>(k serial primary key, v text) with `rows` rows (v = 'orig'), analysed, owned
  // by the gateway's role.
  // ANALYZE runs after the load commits: rows loaded in the ANALYZE's own transaction count as
  // changed since it until a VACUUM, and a rolled-back dry run's dead rows would then make the
  // table read as changed (docs/approvals.md, statistics older than the data).
  static void make_table(const std::string& name, int rows) {
    std::string sql = "create table public." + name + " (k serial primary key, v text); " +
                      "insert into public." + name + " (v) select 'orig' from generate_series(1, " +
                      std::to_string(rows) + "); alter table public." + name +
                      " owner to app_scram";
    auto r = gw_->pg().psql(sql);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    r = gw_->pg().psql("analyze public." + name);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  }
  static std::string db(const std::string& sql) { return db_answer(*gw_, sql); }
  static json ctl_json(std::vector<std::string> args) {
    return ctl_json_as(*gw_, "reviewer", std::move(args));
  }
  // The pending request whose statement is `sql`, polled for up to 10 s ({} if none).
  static json wait_request(const std::string& sql) {
    auto end = Clock::now() + std::chrono::seconds(10);
    do {
      json req = pending_request(*gw_, "reviewer", sql);
      if (req.contains("id")) return req;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < end);
    return json::object();
  }
  static Conn agent() {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    return c;
  }
  // Denies request `id`; the held statement's client gets 42501 with the reason.
  static void deny(const std::string& id, PGconn* c) {
    CtlResult d = gw_->ctl("reviewer", {"approvals", "deny", id, "--reason", "not today"});
    ASSERT_EQ(d.code, 0) << d.out << d.err;
    Res r = next_result(c, 10000);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(sqlstate(r.get()), "42501");
    EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("not today"), std::string::npos);
    drain(c);
  }
};

TEST_F(GatewayEffectApprovalsTest, EveryUnboundedWriteWaitsAndNothingRunsBeforeADecision) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_bypass", 5));
  struct Case {
    std::string sql;
    std::string rule;
  };
  const std::vector<Case> cases = {
      {"delete from public.t_bypass where true", "policy.where_constant_true"},
      {"delete from public.t_bypass where 1=1", "policy.where_constant_true"},
      {"delete from public.t_bypass where k = 1 or true", "policy.where_constant_true"},
      {"delete from public.t_bypass where not false", "policy.where_constant_true"},
      {"update public.t_bypass set v = 'x' where 'a' = 'a'", "policy.where_constant_true"},
      {"update public.t_bypass set v = (select 'x' where true)", "policy.where_absent"},
      {"delete from public.t_bypass where now() > '2000-01-01'", "policy.where_row_independent"},
      {"delete from public.t_bypass where exists (select 1)", "policy.where_constant_true"},
      {"with d as (delete from public.t_bypass returning *) select count(*) from d",
       "policy.where_absent"},
      {"truncate public.t_bypass", "policy.truncate"},
      {"delete from public.t_bypass", "policy.where_absent"},
  };
  Conn c = agent();
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.sql);
    ASSERT_EQ(PQsendQuery(c.get(), tc.sql.c_str()), 1);
    json req = wait_request(tc.sql);
    ASSERT_TRUE(req.contains("id")) << "not held:\n" << gw_->cp_log();
    EXPECT_EQ(req["rule"], tc.rule);
    ASSERT_TRUE(req["effect"].is_array());
    ASSERT_FALSE(req["effect"].empty());
    // Held: the statement has not reached PostgreSQL.
    EXPECT_EQ(db("select count(*) || '/' || count(*) filter (where v = 'orig') "
                 "from public.t_bypass"),
              "5/5");
    ASSERT_NO_FATAL_FAILURE(deny(req["id"], c.get()));
  }
  EXPECT_EQ(db("select count(*) from public.t_bypass where v = 'orig'"), "5");
  // A restricted write runs at once.
  Res r(PQexec(c.get(), "delete from public.t_bypass where k = 1"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQcmdTuples(r.get()), "1");
  // Approved, the held psql statement runs and changes every row.
  const std::string sql = "update public.t_bypass set v = 'approved' where true";
  PsqlProcess psql(gw_->conninfo(), sql, gw_->dir() + "/bypass-psql.log");
  json req = wait_request(sql);
  ASSERT_TRUE(req.contains("id")) << psql.output();
  EXPECT_EQ(db("select count(*) from public.t_bypass where v = 'approved'"), "0");
  EXPECT_EQ(req["dry_run_rows"], 4) << req.dump();
  ASSERT_EQ(gw_->ctl("reviewer", {"approvals", "approve", req["id"]}).code, 0);
  ASSERT_EQ(psql.wait(10000), 0) << psql.output();
  EXPECT_NE(psql.output().find("UPDATE 4"), std::string::npos) << psql.output();
  EXPECT_EQ(db("select count(*) from public.t_bypass where v = 'approved'"), "4");
}

TEST_F(GatewayEffectApprovalsTest, PlannerEstimateOverTheThresholdWaitsWithEstimateAndDryRun) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_big", 400));
  Conn c = agent();
  // Cannot be folded (it depends on the row): the planner threshold catches it.
  const std::string sql = "update public.t_big set v = 'changed' where v is not null";
  ASSERT_EQ(PQsendQuery(c.get(), sql.c_str()), 1);
  json req = wait_request(sql);
  ASSERT_TRUE(req.contains("id")) << gw_->cp_log();
  const std::string id = req["id"];
  EXPECT_EQ(req["rule"], "policy.rows_over");
  ASSERT_TRUE(req["estimated_rows"].is_number_integer()) << req.dump();
  EXPECT_GT(req["estimated_rows"].get<int64_t>(), 300);
  EXPECT_LT(req["estimated_rows"].get<int64_t>(), 500);
  EXPECT_EQ(req["dry_run_rows"], 400) << req.dump();
  // The dry run was rolled back on cp's own connection: nothing changed.
  EXPECT_EQ(db("select count(*) from public.t_big where v = 'changed'"), "0");
  CtlResult show = gw_->ctl("reviewer", {"approvals", "show", id});
  ASSERT_EQ(show.code, 0) << show.err;
  for (const std::string& s :
       {std::string("estimated_rows:"), std::string("dry_run_rows:"), std::string("400"),
        std::string("rows_over: the planner estimates"), sql}) {
    EXPECT_NE(show.out.find(s), std::string::npos) << s << " not in:\n" << show.out;
  }
  ASSERT_NO_FATAL_FAILURE(deny(id, c.get()));
  EXPECT_EQ(db("select count(*) from public.t_big where v = 'changed'"), "0");

  // Under the threshold: runs at once.
  Res r(PQexec(c.get(), "update public.t_big set v = 'few' where k <= 3"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQcmdTuples(r.get()), "3");

  // Extended protocol: bind values are unknown at Parse, where the decision is taken. A
  // parameter compared other than by `column = $n` has no estimate (`k > $2` may be every
  // row), and the dry run is skipped with the reason.
  const std::string params_sql = "update public.t_big set v = $1 where k > $2";
  const char* values[] = {"p", "0"};
  ASSERT_EQ(PQsendQueryParams(c.get(), params_sql.c_str(), 2, nullptr, values, nullptr, nullptr, 0),
            1);
  json ext = wait_request(params_sql);
  ASSERT_TRUE(ext.contains("id")) << gw_->cp_log();
  EXPECT_EQ(ext["rule"], "policy.rows_over");
  EXPECT_NE(ext.value("estimate_note", "").find("bind parameters other than as `column = $n`"),
            std::string::npos)
      << ext.dump();
  EXPECT_TRUE(ext["dry_run_rows"].is_null());
  EXPECT_NE(ext.value("dry_run_note", "").find("bind parameters"), std::string::npos) << ext.dump();
  ASSERT_NO_FATAL_FAILURE(deny(ext["id"], c.get()));
  EXPECT_EQ(db("select count(*) from public.t_big where v = 'p'"), "0");
  // A write by key through the extended protocol is estimated and runs at once.
  const std::string by_key = "update public.t_big set v = $1 where k = $2";
  const char* key_values[] = {"k", "7"};
  Res k(PQexecParams(c.get(), by_key.c_str(), 2, nullptr, key_values, nullptr, nullptr, 0));
  EXPECT_EQ(PQresultStatus(k.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(k.get());
  EXPECT_STREQ(PQcmdTuples(k.get()), "1");
}

// Many small writes in one simple-Query message (or one statement's data-modifying CTEs) are
// judged together: their estimates add up against approve_when_rows_over (50 here).
TEST_F(GatewayEffectApprovalsTest, WritesOfOneRequestAddUpAgainstTheThreshold) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_many", 200));
  auto deletes = [](int from, int to) {
    std::string sql;
    for (int k = from; k <= to; ++k)
      sql += "delete from public.t_many where k = " + std::to_string(k) + ";";
    return sql;
  };
  Conn c = agent();
  const std::string sixty = deletes(1, 60);
  ASSERT_EQ(PQsendQuery(c.get(), sixty.c_str()), 1);
  json req = wait_request(sixty);
  ASSERT_TRUE(req.contains("id")) << gw_->cp_log();
  EXPECT_EQ(req["rule"], "policy.rows_over");
  EXPECT_EQ(req.value("estimated_rows", int64_t{0}), 60) << req.dump();
  EXPECT_NE(req.value("request_reason", "").find("by the 60 writes"), std::string::npos)
      << req.dump();
  ASSERT_NO_FATAL_FAILURE(deny(req["id"], c.get()));
  EXPECT_EQ(db("select count(*) from public.t_many"), "200");

  std::string ctes = "with ";
  for (int k = 1; k <= 60; ++k) {
    ctes += (k > 1 ? ", " : "") + std::string("d") + std::to_string(k) +
            " as (delete from public.t_many where k = " + std::to_string(k) + " returning k)";
  }
  ctes += " select 1";
  ASSERT_EQ(PQsendQuery(c.get(), ctes.c_str()), 1);
  req = wait_request(ctes);
  ASSERT_TRUE(req.contains("id")) << gw_->cp_log();
  EXPECT_EQ(req["rule"], "policy.rows_over");
  EXPECT_EQ(req.value("estimated_rows", int64_t{0}), 60) << req.dump();
  ASSERT_NO_FATAL_FAILURE(deny(req["id"], c.get()));
  EXPECT_EQ(db("select count(*) from public.t_many"), "200");

  // Under the threshold together: runs at once.
  Res r(PQexec(c.get(), deletes(1, 10).c_str()));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_EQ(db("select count(*) from public.t_many"), "190");
}

// A write to a table that foreign keys reference with ON DELETE / ON UPDATE actions changes
// rows of the referencing tables too: the estimate counts them (from the child's statistics),
// and a cascade without a bound needs approval with the reason.
TEST_F(GatewayEffectApprovalsTest, ForeignKeyCascadesCountAndUnboundedOnesWait) {
  auto setup = gw_->pg().psql(R"(
      create table public.fk_parent (k int primary key, v text);
      insert into public.fk_parent select g, 'orig' from generate_series(1, 5) g;
      create table public.fk_child (parent int references public.fk_parent on delete cascade);
      insert into public.fk_child select 1 + g % 5 from generate_series(1, 500) g;
      create table public.fk_nulled (parent int references public.fk_parent
                                     on delete set null on update cascade);
      insert into public.fk_nulled select 1 + g % 5 from generate_series(1, 500) g;
      create table public.fk_one (k int primary key, v text);
      insert into public.fk_one select g, 'orig' from generate_series(1, 5) g;
      create table public.fk_one_child (parent int references public.fk_one on delete cascade);
      insert into public.fk_one_child select g from generate_series(1, 5) g;
      create table public.fk_fresh (k int primary key);
      insert into public.fk_fresh select g from generate_series(1, 5) g;
      create table public.fk_fresh_child (parent int references public.fk_fresh
                                          on delete cascade);
      insert into public.fk_fresh_child values (1), (2), (3);
      create table public.fk_dparent (k int primary key, v text);
      insert into public.fk_dparent select g, 'orig' from generate_series(1, 5) g;
      create table public.fk_dchild (parent int references public.fk_dparent on delete cascade);
      insert into public.fk_dchild select 1 + g % 5 from generate_series(1, 500) g;
      analyze public.fk_dparent; analyze public.fk_dchild;
      alter table public.fk_dparent owner to app_scram;
      alter table public.fk_dchild owner to app_scram;
      create table public.fk_tree (k int primary key,
                                   up int references public.fk_tree on delete cascade);
      insert into public.fk_tree select g, nullif(g - 1, 0) from generate_series(1, 5) g;
      analyze public.fk_parent; analyze public.fk_child; analyze public.fk_nulled;
      analyze public.fk_one; analyze public.fk_one_child; analyze public.fk_fresh;
      analyze public.fk_tree;
      alter table public.fk_parent owner to app_scram; alter table public.fk_child owner to app_scram;
      alter table public.fk_nulled owner to app_scram; alter table public.fk_one owner to app_scram;
      alter table public.fk_one_child owner to app_scram;
      alter table public.fk_fresh owner to app_scram;
      alter table public.fk_fresh_child owner to app_scram;
      alter table public.fk_tree owner to app_scram)");
  ASSERT_TRUE(setup.is_ok()) << setup.status().to_string();
  const std::string untouched = "5/500/500";
  auto counts = [] {
    return db(
        "select (select count(*) from public.fk_parent) || '/' || (select count(*) from "
        "public.fk_child) || '/' || (select count(parent) from public.fk_nulled)");
  };
  Conn c = agent();
  struct Case {
    std::string sql;
    std::string in_reason;  // what the request must say
  };
  const std::vector<Case> held = {
      // 1 parent row + about 100 child rows (500 rows over 5 keys).
      {"delete from public.fk_parent where k = 1", "public.fk_child (ON DELETE CASCADE"},
      {"delete from public.fk_parent where k = 1", "public.fk_nulled (ON DELETE SET NULL"},
      {"update public.fk_parent set k = 10 where k = 1", "public.fk_nulled (ON UPDATE CASCADE"},
      {"with d as (delete from public.fk_parent where k = 2 returning k) select count(*) from d",
       "public.fk_child"},
      // No bound: never analysed, or a cycle (a self-referencing cascade).
      {"delete from public.fk_fresh where k = 1", "has never been analysed"},
      {"delete from public.fk_tree where k = 5", "cycle"},
  };
  for (const Case& h : held) {
    SCOPED_TRACE(h.sql);
    ASSERT_EQ(PQsendQuery(c.get(), h.sql.c_str()), 1);
    json req = wait_request(h.sql);
    ASSERT_TRUE(req.contains("id")) << gw_->cp_log();
    EXPECT_EQ(req["rule"], "policy.rows_over");
    EXPECT_NE(req.value("request_reason", "").find(h.in_reason), std::string::npos) << req.dump();
    ASSERT_NO_FATAL_FAILURE(deny(req["id"], c.get()));
    EXPECT_EQ(counts(), untouched);
    EXPECT_EQ(db("select count(*) from public.fk_fresh_child"), "3");
    EXPECT_EQ(db("select count(*) from public.fk_tree"), "5");
  }
  // Bounded and small: one parent row and the one child row its key has run at once.
  Res r(PQexec(c.get(), "delete from public.fk_one where k = 1"));
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  EXPECT_EQ(db("select count(*) from public.fk_one_child"), "4");
  // An UPDATE is not counted against ON DELETE-only foreign keys (fk_dchild: 100 rows per key,
  // which a DELETE of one parent row would count).
  Res u(PQexec(c.get(), "update public.fk_dparent set v = 'x' where k = 2"));
  EXPECT_EQ(PQresultStatus(u.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(u.get());
  EXPECT_STREQ(PQcmdTuples(u.get()), "1");
  const std::string del = "delete from public.fk_dparent where k = 2";
  ASSERT_EQ(PQsendQuery(c.get(), del.c_str()), 1);
  json req = wait_request(del);
  ASSERT_TRUE(req.contains("id")) << gw_->cp_log();
  EXPECT_GT(req.value("estimated_rows", int64_t{0}), 50) << req.dump();
  ASSERT_NO_FATAL_FAILURE(deny(req["id"], c.get()));
  EXPECT_EQ(db("select count(*) from public.fk_dchild"), "500");
}

TEST_F(GatewayEffectApprovalsTest, DryRunIsSkippedWhereARollbackCannotUndoTheSequence) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_src", 120));
  ASSERT_NO_FATAL_FAILURE(make_table("t_dst", 0));
  const std::string before = db("select last_value || '/' || is_called from public.t_dst_k_seq");
  Conn c = agent();
  const std::string sql = "insert into public.t_dst (v) select v from public.t_src";
  ASSERT_EQ(PQsendQuery(c.get(), sql.c_str()), 1);
  json req = wait_request(sql);
  ASSERT_TRUE(req.contains("id")) << gw_->cp_log();
  EXPECT_EQ(req["rule"], "policy.rows_over");
  EXPECT_TRUE(req["dry_run_rows"].is_null());
  EXPECT_NE(req.value("dry_run_note", "").find("sequences"), std::string::npos) << req.dump();
  EXPECT_EQ(db("select last_value || '/' || is_called from public.t_dst_k_seq"), before);
  ASSERT_NO_FATAL_FAILURE(deny(req["id"], c.get()));
  EXPECT_EQ(db("select count(*) from public.t_dst"), "0");

  // A user-defined stable function could run while planning: no EXPLAIN, so no estimate;
  // and a function outside pg_catalog is code pgwarden cannot analyse: the write waits (fail
  // closed) even though it changes one row.
  ASSERT_FALSE(db("create function public.pick_one() returns int stable language sql "
                  "as 'select 1'; select 'made'")
                   .empty());
  const std::string udf = "update public.t_src set v = 'u' where k = public.pick_one()";
  ASSERT_EQ(PQsendQuery(c.get(), udf.c_str()), 1);
  json held = wait_request(udf);
  ASSERT_TRUE(held.contains("id")) << gw_->cp_log();
  EXPECT_EQ(held["rule"], "policy.unknown_effect");
  EXPECT_NE(held.value("estimate_note", "").find("public.pick_one"), std::string::npos)
      << held.dump();
  ASSERT_NO_FATAL_FAILURE(deny(held["id"], c.get()));
  EXPECT_EQ(db("select count(*) from public.t_src where v = 'u'"), "0");
}

TEST_F(GatewayEffectApprovalsTest, SqlPrepareAndExecuteThroughPsqlInheritTheVerdict) {
  ASSERT_NO_FATAL_FAILURE(make_table("t_prep", 3));
  // Separate Query messages (psql -c each): EXECUTE inherits its PREPARE's allow.
  PsqlProcess ok(gw_->conninfo(),
                 {"prepare cnt(int) as select count(*) from public.t_prep where k <= $1",
                  "execute cnt(2)", "deallocate cnt"},
                 gw_->dir() + "/prep-ok.log");
  ASSERT_EQ(ok.wait(15000), 0) << ok.output();
  EXPECT_NE(ok.output().find("2"), std::string::npos) << ok.output();

  Conn c = agent();
  Res r(PQexec(c.get(), "prepare again as select v from public.t_prep where k = 1"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  r.reset(PQexec(c.get(), "execute again"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(r.get());
  EXPECT_STREQ(PQgetvalue(r.get(), 0, 0), "orig");
  // Another session never inherits this one's names (no verdict cached across sessions).
  Conn other = agent();
  r.reset(PQexec(other.get(), "execute again"));
  EXPECT_EQ(sqlstate(r.get()), "42501");
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("unknown_prepared_statement"),
            std::string::npos)
      << PQresultErrorMessage(r.get());
  // DEALLOCATE forgets.
  r.reset(PQexec(c.get(), "deallocate again"));
  ASSERT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  r.reset(PQexec(c.get(), "execute again"));
  EXPECT_EQ(sqlstate(r.get()), "42501");

  // A PREPARE the policy denies is refused at once and its EXECUTE stays unknown.
  r.reset(PQexec(c.get(), "prepare secret as select * from hr.salaries"));
  EXPECT_EQ(sqlstate(r.get()), "42501");
  r.reset(PQexec(c.get(), "execute secret"));
  EXPECT_EQ(sqlstate(r.get()), "42501");
  EXPECT_NE(std::string(PQresultErrorMessage(r.get())).find("unknown_prepared_statement"),
            std::string::npos);

  // PREPARE of an unbounded write waits like the write; approved, every EXECUTE waits too.
  const std::string prep = "prepare wipe as delete from public.t_prep";
  ASSERT_EQ(PQsendQuery(c.get(), prep.c_str()), 1);
  json req = wait_request(prep);
  ASSERT_TRUE(req.contains("id")) << gw_->cp_log();
  EXPECT_EQ(req["rule"], "policy.where_absent");
  ASSERT_EQ(gw_->ctl("reviewer", {"approvals", "approve", req["id"]}).code, 0);
  r = next_result(c.get(), 10000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(PQresultStatus(r.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(r.get());
  drain(c.get());
  ASSERT_EQ(PQsendQuery(c.get(), "execute wipe"), 1);
  json exec = wait_request("execute wipe");
  ASSERT_TRUE(exec.contains("id")) << gw_->cp_log();
  EXPECT_EQ(exec["rule"], "policy.where_absent");
  EXPECT_EQ(db("select count(*) from public.t_prep"), "3");
  ASSERT_NO_FATAL_FAILURE(deny(exec["id"], c.get()));
  EXPECT_EQ(db("select count(*) from public.t_prep"), "3");
}

TEST_F(GatewayEffectApprovalsTest, StarInAllowedKindsAllowsEveryKind) {
  Conn c = agent();
  for (const char* sql : {"select 1", "show server_version", "listen effect_channel",
                          "create temp table tmp_star (x int)", "discard plans"}) {
    Res r(PQexec(c.get(), sql));
    EXPECT_TRUE(PQresultStatus(r.get()) == PGRES_COMMAND_OK ||
                PQresultStatus(r.get()) == PGRES_TUPLES_OK)
        << sql << ": " << PQresultErrorMessage(r.get());
  }
}

}  // namespace
}  // namespace pgwarden::testing
