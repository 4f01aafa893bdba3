#include "dataplane/session/pool_restrictions.h"

#include <gtest/gtest.h>

#include "rules/lexer.h"

namespace pgwarden::session {
namespace {

struct Case {
  const char* sql;
  bool refused;
};

class PoolRestrictionsTest : public ::testing::TestWithParam<Case> {};

TEST_P(PoolRestrictionsTest, RefusesSessionStateOnly) {
  rules::LexedSql lexed = rules::lex_sql(GetParam().sql);
  std::string why = transaction_pooling_refusal(lexed.code());
  EXPECT_EQ(!why.empty(), GetParam().refused) << GetParam().sql << " -> " << why;
  if (!why.empty()) {
    EXPECT_NE(why.find("in transaction pooling mode"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Statements, PoolRestrictionsTest,
    ::testing::Values(
        Case{"SELECT 1", false}, Case{"set search_path = x", true},
        Case{"SET SESSION statement_timeout = 5", true}, Case{"SET ROLE admin", true},
        Case{"SET SESSION AUTHORIZATION bob", true}, Case{"SET LOCAL statement_timeout = 5", false},
        Case{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", false},
        Case{"SET CONSTRAINTS ALL DEFERRED", false}, Case{"RESET statement_timeout", false},
        Case{"begin; select 1; set work_mem = '1MB'; commit", true},
        Case{"SELECT 'set x = 1'", false}, Case{"/* set x=1 */ SELECT 1", false},
        Case{"LISTEN chan", true}, Case{"UNLISTEN *", false}, Case{"NOTIFY chan", false},
        Case{"PREPARE q AS SELECT 1", true}, Case{"PREPARE TRANSACTION 'x'", false},
        Case{"DEALLOCATE ALL", true}, Case{"DISCARD ALL", true}, Case{"LOAD 'auto_explain'", true},
        Case{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", true},
        Case{"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", false},
        Case{"DECLARE c CURSOR FOR SELECT 'with hold'", false},
        Case{"CREATE TEMP TABLE t (a int)", true},
        Case{"CREATE TEMPORARY TABLE t (a int) ON COMMIT DROP", false},
        Case{"create local temporary table t as select 1", true},
        Case{"CREATE TEMP VIEW v AS SELECT 1", true}, Case{"CREATE TABLE temp (a int)", false},
        Case{"SELECT 1 INTO TEMP t", true}, Case{"SELECT 1 INTO t2", false},
        Case{"SELECT pg_advisory_lock(1)", true},
        Case{"select PG_TRY_ADVISORY_LOCK_SHARED(1)", true},
        Case{"SELECT pg_advisory_xact_lock(1)", false},
        Case{"SELECT pg_advisory_unlock_all()", false},
        Case{"SELECT set_config('app.x', 'y', false)", true},
        Case{"SELECT set_config('app.x', 'y', true)", false},
        Case{"SELECT set_config('app.x', lower('Y'), true)", false},
        Case{"SELECT set_config('app.x', 'y', f(true))", true},
        Case{"SELECT set_config('app.x', 'y', $1)", true}, Case{"", false}));

}  // namespace
}  // namespace pgwarden::session
