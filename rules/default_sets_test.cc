// Every default rule in rules/sets/ with positive and negative cases, including evasions:
// mixed case, comments between keywords, newlines and tabs, quoted identifiers, keywords
// inside string literals, and the dangerous statement not being the first one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <string>
#include <vector>

#include "common/source_root.h"
#include "rules/lexer.h"
#include "rules/matcher.h"

namespace pgwarden::rules {
namespace {

std::shared_ptr<const CompiledRuleSet> default_sets() {
  static std::shared_ptr<const CompiledRuleSet> set = [] {
    std::vector<std::string> files = {PGW_SOURCE_ROOT "/rules/sets/deny.rules",
                                      PGW_SOURCE_ROOT "/rules/sets/approve.rules",
                                      PGW_SOURCE_ROOT "/rules/sets/pii.rules"};
    Result<RuleSet> parsed = RuleSet::load_files(files);
    EXPECT_TRUE(parsed.is_ok()) << parsed.status().message();
    Result<std::shared_ptr<const CompiledRuleSet>> compiled =
        CompiledRuleSet::compile(std::move(parsed).value());
    EXPECT_TRUE(compiled.is_ok()) << compiled.status().message();
    return compiled.is_ok() ? std::move(compiled).value() : nullptr;
  }();
  return set;
}

struct SqlCase {
  const char* name;
  const char* rule;  // rule id under test
  bool matches;
  const char* sql;
};

void PrintTo(const SqlCase& c, std::ostream* os) { *os << c.name; }

std::vector<std::string> matched_ids(const CompiledRuleSet& set, const std::string& sql,
                                     Verdict* verdict) {
  struct Sink : MatchSink {
    std::vector<std::string> ids;
    void on_match(const Rule& r) override { ids.push_back(r.id); }
  } sink;
  *verdict = set.scan(lex_sql(sql), sink);
  return sink.ids;
}

class DefaultSqlRuleTest : public ::testing::TestWithParam<SqlCase> {};

TEST_P(DefaultSqlRuleTest, RuleMatchesExactlyWhenExpected) {
  const SqlCase& c = GetParam();
  std::shared_ptr<const CompiledRuleSet> set = default_sets();
  ASSERT_NE(set, nullptr);
  const Rule* rule = set->rule_set().find(c.rule);
  ASSERT_NE(rule, nullptr) << c.rule;
  Verdict verdict;
  std::vector<std::string> ids = matched_ids(*set, c.sql, &verdict);
  bool hit = std::find(ids.begin(), ids.end(), c.rule) != ids.end();
  EXPECT_EQ(hit, c.matches) << c.rule << " on: " << c.sql
                            << "\ncode view: " << lex_sql(c.sql).code();
  if (c.matches && rule->action == Action::kDeny) {
    EXPECT_EQ(verdict, Verdict::kDeny);
  }
  if (c.matches && rule->action == Action::kApprove) {
    EXPECT_NE(verdict, Verdict::kAllow);
  }
}

// Every rule must have at least one positive and one negative case here.
const SqlCase kSqlCases[] = {
    // deny.drop_database
    {"DropDatabasePlain", "deny.drop_database", true, "DROP DATABASE prod"},
    {"DropDatabaseBlockComment", "deny.drop_database", true, "DROP/**/DATABASE prod"},
    {"DropDatabaseLineComment", "deny.drop_database", true, "DROP--x\nDATABASE prod"},
    {"DropDatabaseMixedCaseTabs", "deny.drop_database", true, "dRoP\t\n  DaTaBaSe prod"},
    // A quoted identifier is never a keyword (PostgreSQL rejects `drop "database" x` as a
    // syntax error), so keyword rules do not match quoted words.
    {"DropDatabaseQuotedKeywordIdent", "deny.drop_database", false, "drop \"database\" prod"},
    {"DropDatabaseQuotedColumnName", "deny.drop_database", false,
     "SELECT \"drop database\" FROM audit_words"},
    {"DropDatabaseQuotedColumnAliased", "deny.drop_database", false,
     "SELECT \"drop\" database FROM audit_words"},
    {"DropDatabaseAfterQuotedColumn", "deny.drop_database", true,
     "SELECT \"drop database\" FROM audit_words; DROP DATABASE x"},
    {"DropDatabaseSecondStatement", "deny.drop_database", true,
     "select 1; select 2;\nDROP DATABASE IF EXISTS prod"},
    {"DropDatabaseNestedComment", "deny.drop_database", true, "drop /* a /* b */ c */database x"},
    {"DropDatabaseInsideLiteral", "deny.drop_database", false,
     "SELECT 'drop database prod' AS hint"},
    {"DropDatabaseInsideDollarLiteral", "deny.drop_database", false,
     "insert into notes values ($q$drop database x$q$)"},
    {"DropDatabaseInsideComment", "deny.drop_database", false, "select 1 -- drop database prod"},
    {"DropDatabaseAsColumnNames", "deny.drop_database", false,
     "select drop_database from settings"},
    // deny.drop_schema
    {"DropSchemaCascade", "deny.drop_schema", true, "DROP SCHEMA crm CASCADE"},
    {"DropSchemaCommentEvasion", "deny.drop_schema", true, "drop/*x*/schema crm"},
    {"DropSchemaInLiteral", "deny.drop_schema", false, "select E'drop schema \\' x'"},
    // deny.alter_system
    {"AlterSystemSet", "deny.alter_system", true, "ALTER SYSTEM SET work_mem = '1GB'"},
    {"AlterSystemSecondStatement", "deny.alter_system", true, "select 1;\talter\nsystem reset all"},
    {"AlterSystemInLiteral", "deny.alter_system", false, "select 'alter system'"},
    {"AlterTableIsNotAlterSystem", "deny.alter_system", false, "alter table system_log add c int"},
    // deny.copy_program
    {"CopyToProgram", "deny.copy_program", true, "COPY t TO PROGRAM 'curl http://x'"},
    {"CopyFromProgramQuery", "deny.copy_program", true, "copy (select 1) from/**/program 'id'"},
    {"CopyToProgramDollarQuoted", "deny.copy_program", true, "copy t to program $$id$$"},
    {"CopyToProgramEscapeString", "deny.copy_program", true, "CoPy t\tTO\nProgram E'id'"},
    {"CopyToStdout", "deny.copy_program", false, "COPY t TO STDOUT"},
    {"ProgramInLiteral", "deny.copy_program", false, "copy t from stdin; select 'to program'"},
    // deny.copy_server_file
    {"CopyFromServerFile", "deny.copy_server_file", true, "COPY t FROM '/etc/passwd'"},
    {"CopyToServerFileWithOptions", "deny.copy_server_file", true,
     "copy crm.customers to E'/tmp/dump.csv' with (format csv)"},
    {"CopyToServerFileAfterSelect", "deny.copy_server_file", true,
     "select 1; COPY \"Customers\" TO '/tmp/x'"},
    {"CopyToDollarQuotedFile", "deny.copy_server_file", true, "copy t to $$/tmp/x$$"},
    {"CopyToTaggedDollarFile", "deny.copy_server_file", true, "copy t to $f$/tmp/x$f$"},
    {"CopyToUnicodeStringFile", "deny.copy_server_file", true, "copy t to U&'/tmp/x'"},
    {"CopyToFileCommentsEverywhere", "deny.copy_server_file", true,
     "copy/**/t/* a */to--x\n'/tmp/x'"},
    {"CopyFromStdin", "deny.copy_server_file", false, "COPY t FROM STDIN WITH (FORMAT csv)"},
    {"CopyToStdoutWithDelimiter", "deny.copy_server_file", false,
     "copy t to stdout with (delimiter ',')"},
    // deny.server_file_read
    {"PgReadFile", "deny.server_file_read", true, "select pg_read_file('/etc/passwd')"},
    {"PgReadBinaryFileQualified", "deny.server_file_read", true,
     "SELECT pg_catalog.PG_READ_BINARY_FILE('postgresql.conf')"},
    {"PgReadFileQuotedIdentifier", "deny.server_file_read", true, "select \"pg_read_file\" ('x')"},
    {"PgReadFileUnicodeQuotedWithoutEscape", "deny.server_file_read", true,
     "select U&\"pg_read_file\"('/etc/passwd')"},
    {"PgStatFileCommentBeforeParen", "deny.server_file_read", true, "select pg_stat_file/**/('x')"},
    {"PgReadFileInLiteral", "deny.server_file_read", false, "select 'pg_read_file(1)' as doc"},
    {"PgReadFileColumnName", "deny.server_file_read", false, "select pg_read_file_count from t"},
    // deny.server_dir_listing
    {"PgLsDir", "deny.server_dir_listing", true, "select * from pg_ls_dir('.')"},
    {"PgLsWaldirMixedCase", "deny.server_dir_listing", true, "SELECT Pg_Ls_WalDir()"},
    {"PgLsDirInLiteral", "deny.server_dir_listing", false, "select 'pg_ls_dir(.)'"},
    // deny.large_object_file
    {"LoImport", "deny.large_object_file", true, "SELECT lo_import('/etc/passwd')"},
    {"LoExportSecond", "deny.large_object_file", true, "select 1; select lo_export(1, '/tmp/x')"},
    {"LoCreateIsFine", "deny.large_object_file", false, "select lo_create(0)"},
    // deny.dblink
    {"DblinkConnect", "deny.dblink", true, "SELECT dblink_connect('host=evil')"},
    {"DblinkQuery", "deny.dblink", true,
     "select * from dblink('dbname=x', 'select 1') as t(a int)"},
    {"DblinkInLiteral", "deny.dblink", false, "select 'dblink(1)'"},
    // deny.foreign_server
    {"CreateServerPostgresFdw", "deny.foreign_server", true,
     "CREATE SERVER evil FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'x')"},
    {"CreateUserMapping", "deny.foreign_server", true,
     "create user\nmapping for current_user server evil"},
    {"SelectFromServersTable", "deny.foreign_server", false, "select * from server_list"},
    // deny.privileged_role
    {"CreateRoleSuperuser", "deny.privileged_role", true, "CREATE ROLE x SUPERUSER LOGIN"},
    {"AlterUserBypassrls", "deny.privileged_role", true,
     "alter user app with /* harmless */ BYPASSRLS"},
    {"AlterRoleQuotedSuperuser", "deny.privileged_role", true,
     "select 1; ALTER ROLE \"app\" WITH \"superuser\""},
    {"CreateRoleNosuperuser", "deny.privileged_role", false,
     "CREATE ROLE x NOSUPERUSER NOBYPASSRLS LOGIN"},
    {"CreateRoleSuperuserInPassword", "deny.privileged_role", false,
     "create role x login password 'superuser'"},
    // deny.set_role
    {"SetRole", "deny.set_role", true, "SET ROLE postgres"},
    {"SetSessionAuthorization", "deny.set_role", true, "set session\tauthorization postgres"},
    {"SetLocalRoleSecond", "deny.set_role", true, "begin; SET LOCAL ROLE admin"},
    {"ResetRoleIsFine", "deny.set_role", false, "RESET ROLE"},
    {"SetSearchPath", "deny.set_role", false, "set search_path = 'role'"},
    {"SetQuotedRoleGenericForm", "deny.set_role", true, "SET \"role\" TO postgres"},
    {"SetLocalQuotedRoleUpperCase", "deny.set_role", true, "set local \"ROLE\" = 'admin'"},
    {"SetSessionAuthorizationGuc", "deny.set_role", true, "SET session_authorization TO bob"},
    {"SetQuotedSessionAuthorizationGuc", "deny.set_role", true,
     "set \"session_authorization\" = 'bob'"},
    {"SelectQuotedRoleColumn", "deny.set_role", false, "select \"role\" from members"},
    // deny.set_config_role
    {"SetConfigRole", "deny.set_config_role", true, "select set_config('role', 'postgres', false)"},
    {"SetConfigRoleUpperCase", "deny.set_config_role", true,
     "SELECT SET_CONFIG( 'ROLE' ,'x',true)"},
    {"SetConfigRoleEscapeString", "deny.set_config_role", true,
     "select set_config(E'role', 'postgres', false)"},
    {"SetConfigRoleDollarQuoted", "deny.set_config_role", true,
     "select set_config($x$role$x$, 'postgres', false)"},
    {"SetConfigOtherSetting", "deny.set_config_role", false,
     "select set_config('search_path', 'role', false)"},
    // deny.set_config_dynamic_name
    {"SetConfigConcatenatedName", "deny.set_config_dynamic_name", true,
     "select set_config('ro' || 'le', 'postgres', false)"},
    {"SetConfigCastThenConcat", "deny.set_config_dynamic_name", true,
     "select set_config('ro'::text || 'le', 'x', false)"},
    {"SetConfigNameFromSubselect", "deny.set_config_dynamic_name", true,
     "select set_config((select 'role'), 'x', false)"},
    {"SetConfigLiteralName", "deny.set_config_dynamic_name", false,
     "select set_config('app.tenant_id', $1, true)"},
    {"SetConfigCastLiteralName", "deny.set_config_dynamic_name", false,
     "SELECT set_config( 'app.tenant_id'::text , '42', true)"},
    // deny.load_library
    {"LoadLibrary", "deny.load_library", true, "LOAD '/tmp/evil.so'"},
    {"LoadSecondStatement", "deny.load_library", true, "select 1;load\n'auto_explain'"},
    {"LoadAsColumn", "deny.load_library", false, "select load from servers where load > 0.5"},
    // deny.create_extension
    {"CreateExtension", "deny.create_extension", true, "CREATE EXTENSION IF NOT EXISTS dblink"},
    {"CreateExtensionComment", "deny.create_extension", true, "create--\nextension plpython3u"},
    {"CreateExtensionInLiteral", "deny.create_extension", false, "select 'create extension x'"},
    // deny.terminate_backend
    {"TerminateBackend", "deny.terminate_backend", true,
     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"},
    {"TerminateBackendQuoted", "deny.terminate_backend", true,
     "select \"pg_terminate_backend\"(123)"},
    {"CancelBackendIsFine", "deny.terminate_backend", false, "select pg_cancel_backend(1)"},
    // deny.standard_conforming_strings
    {"ScsOff", "deny.standard_conforming_strings", true, "SET standard_conforming_strings = off"},
    {"ScsSetConfig", "deny.standard_conforming_strings", true,
     "select set_config('standard_conforming_strings', 'off', false)"},
    {"ScsShow", "deny.standard_conforming_strings", false, "SHOW standard_conforming_strings"},
    // deny.unicode_escaped_identifier
    {"UnicodeEscapedFunction", "deny.unicode_escaped_identifier", true,
     "select U&\"\\0070g_read_file\"('/etc/passwd')"},
    {"UnicodeIdentifierOtherEscapeCharacter", "deny.unicode_escaped_identifier", true,
     "select U&\"pg_re!0061d_file\" UESCAPE '!' ('/etc/passwd')"},
    {"UnicodePlainIdentifierWithUescape", "deny.unicode_escaped_identifier", true,
     "select U&\"abc\" uescape '!' from t"},
    {"UnicodeIdentifierWithoutEscape", "deny.unicode_escaped_identifier", false,
     "select U&\"plain\" from t"},

    // approve.drop_relation
    {"DropTable", "approve.drop_relation", true, "DROP TABLE crm.orders"},
    {"DropIndexComment", "approve.drop_relation", true, "drop/**/index concurrently i"},
    {"DropViewSecond", "approve.drop_relation", true, "select 1; DROP\n\tVIEW v"},
    {"DropMaterializedView", "approve.drop_relation", true, "drop materialized view mv"},
    {"DropTableInLiteral", "approve.drop_relation", false, "select 'drop table x'"},
    {"DropFunctionNotRelation", "approve.drop_relation", false, "drop function f()"},
    // approve.truncate
    {"Truncate", "approve.truncate", true, "TRUNCATE crm.orders"},
    {"TruncateSecondMixedCase", "approve.truncate", true, "select 1;TrUnCaTe TABLE t"},
    {"TruncateInLiteral", "approve.truncate", false, "select 'truncate' from t"},
    {"TruncateLogTable", "approve.truncate", false, "select * from truncate_log"},
    {"TruncateQuotedColumn", "approve.truncate", false, "select \"truncate\" from audit_words"},
    // approve.alter_table
    {"AlterTable", "approve.alter_table", true, "ALTER TABLE t ADD COLUMN c int"},
    {"AlterTableQuotedKeywordIsIdentifier", "approve.alter_table", false,
     "alter \"table\" t drop column c"},
    {"AlterTableQuotedRelation", "approve.alter_table", true,
     "alter table \"Alter Table\" drop column c"},
    {"AlterIndexIsNotTable", "approve.alter_table", false, "alter index i rename to j"},
    // approve.grant_revoke
    {"Grant", "approve.grant_revoke", true, "GRANT SELECT ON t TO public"},
    {"RevokeSecond", "approve.grant_revoke", true, "select 1; revoke all on t from x"},
    {"GrantInLiteral", "approve.grant_revoke", false, "insert into t values ('grant')"},
    // approve.delete_without_where
    {"DeleteNoWhere", "approve.delete_without_where", true, "DELETE FROM crm.orders"},
    // A quoted "where" is an alias or a column, never the WHERE clause.
    {"DeleteQuotedWhereAlias", "approve.delete_without_where", true,
     "DELETE FROM crm.orders AS \"where\""},
    {"DeleteNoWhereSemicolon", "approve.delete_without_where", true, "delete from t;"},
    {"DeleteNoWhereSecond", "approve.delete_without_where", true,
     "delete from a where id = 1; delete from b"},
    {"DeleteNoWhereAliasNamedWhereish", "approve.delete_without_where", true,
     "delete from t as somewhere returning *"},
    {"DeleteWhereInLiteralStillNoWhere", "approve.delete_without_where", true,
     "delete from t returning 'where'"},
    {"DeleteWithWhere", "approve.delete_without_where", false, "DELETE FROM t WHERE id = 1"},
    {"DeleteWithWhereComment", "approve.delete_without_where", false,
     "delete from t/**/where id = 1"},
    {"DeleteWithUsingWhere", "approve.delete_without_where", false,
     "delete from t using u where t.id = u.id"},
    // approve.update_without_where
    {"UpdateSetsColumnNamedWhere", "approve.update_without_where", true,
     "UPDATE t SET \"where\" = 1"},
    {"UpdateNoWhere", "approve.update_without_where", true, "UPDATE crm.customers SET notes = ''"},
    {"UpdateNoWhereSecond", "approve.update_without_where", true,
     "select 1; update t set a = 1, b = 'where'"},
    {"UpdateNoWhereAfterCte", "approve.update_without_where", true,
     "with x as (select 1) update t set a = 2"},
    {"UpdateWithWhere", "approve.update_without_where", false, "UPDATE t SET a = 1 WHERE id = $1"},
    {"SelectForUpdate", "approve.update_without_where", false, "select * from t for update"},
    {"UpsertDoUpdate", "approve.update_without_where", false,
     "insert into t values (1) on conflict (id) do update set a = excluded.a"},
    // approve.create_function
    {"CreateFunction", "approve.create_function", true,
     "CREATE FUNCTION f() RETURNS int AS $$ select 1 $$ LANGUAGE sql"},
    {"CreateOrReplaceFunction", "approve.create_function", true,
     "create or replace\nfunction f() returns int language sql as 'select 1'"},
    {"CreateProcedure", "approve.create_function", true, "create procedure p() as $$ $$"},
    {"CreateTableIsNotFunction", "approve.create_function", false, "create table function_log()"},
    // approve.do_block
    {"DoBlock", "approve.do_block", true, "DO $$ BEGIN PERFORM 1; END $$"},
    {"DoBlockLanguageSecond", "approve.do_block", true,
     "select 1; do language plpgsql $x$ begin end $x$"},
    {"OnConflictDoNothing", "approve.do_block", false,
     "insert into t values (1) on conflict do nothing"},
    {"DoInLiteral", "approve.do_block", false, "select 'do $$'"},
};

INSTANTIATE_TEST_SUITE_P(DefaultSets, DefaultSqlRuleTest, ::testing::ValuesIn(kSqlCases),
                         [](const ::testing::TestParamInfo<SqlCase>& info) {
                           return std::string(info.param.name);
                         });

struct ValueCase {
  const char* name;
  const char* rule;
  bool matches;
  const char* value;
  const char* span;  // expected matched text when matches
};

void PrintTo(const ValueCase& c, std::ostream* os) { *os << c.name; }

class DefaultDetectRuleTest : public ::testing::TestWithParam<ValueCase> {};

TEST_P(DefaultDetectRuleTest, DetectorFindsExactSpanOrNothing) {
  const ValueCase& c = GetParam();
  std::shared_ptr<const CompiledRuleSet> set = default_sets();
  ASSERT_NE(set, nullptr);
  ASSERT_NE(set->rule_set().find(c.rule), nullptr) << c.rule;
  std::vector<DetectSpan> spans;
  ASSERT_TRUE(set->detect(c.value, spans).is_ok());
  std::string_view value = c.value;
  std::vector<std::string> found;
  for (const DetectSpan& s : spans) {
    if (s.rule->id == c.rule) found.emplace_back(value.substr(s.begin, s.end - s.begin));
  }
  if (c.matches) {
    ASSERT_EQ(found.size(), 1u) << c.rule << " on: " << c.value;
    EXPECT_EQ(found[0], c.span);
  } else {
    EXPECT_TRUE(found.empty()) << c.rule << " on: " << c.value << " found: " << found[0];
  }
}

const ValueCase kValueCases[] = {
    {"EmailInSentence", "detect.email", true, "write to Jane.Doe+x@mail.example.co.uk now",
     "Jane.Doe+x@mail.example.co.uk"},
    {"NotAnEmail", "detect.email", false, "user at example dot com @home", ""},
    {"EmailPlusAddressingSubdomain", "detect.email", true, "ada+crm@mail.eu.example.org",
     "ada+crm@mail.eu.example.org"},
    {"EmailApostropheInLocalPart", "detect.email", true, "to sean.o'brien@example.ie.",
     "sean.o'brien@example.ie"},
    {"EmailQuotedLocalPart", "detect.email", true, R"(to "john doe"@example.com)",
     R"("john doe"@example.com)"},
    {"EmailQuotedLocalPartInJson", "detect.email", true, R"({"e": "\"j.d\"@example.com"})",
     R"(\"j.d\"@example.com)"},
    {"EmailInJsonAfterEscape", "detect.email", true, R"({"n":"a\nada@example.com"})",
     "ada@example.com"},
    {"EmailInArray", "detect.email", true, R"({ada@example.com,"b c"})", "ada@example.com"},
    {"RetinaFileNameIsNotEmail", "detect.email", false, "icon@2x.png", ""},
    {"CardWithSpaces", "detect.payment_card", true, "card: 4111 1111 1111 1111.",
     "4111 1111 1111 1111"},
    {"CardPlainDigits", "detect.payment_card", true, "5500005555555559", "5500005555555559"},
    {"CardFailsLuhn", "detect.payment_card", false, "order 4111111111111112 shipped", ""},
    {"ShortNumberIsNotCard", "detect.payment_card", false, "id 123456789", ""},
    {"CardAmexGrouped", "detect.payment_card", true, "amex 3782 822463 10005", "3782 822463 10005"},
    {"CardDashesInComposite", "detect.payment_card", true, "(7,4111-1111-1111-1111)",
     "4111-1111-1111-1111"},
    {"CardInJsonNumber", "detect.payment_card", true, R"({"card": 5500005555555559})",
     "5500005555555559"},
    {"CardAfterQuantity", "detect.payment_card", true, "qty 2 4111111111111111",
     "4111111111111111"},
    {"LuhnValidLargeIntegerIsNotCard", "detect.payment_card", false, "id 1234567890123452", ""},
    {"Ssn", "detect.us_ssn", true, "ssn 078-05-1120 on file", "078-05-1120"},
    {"SsnInvalidArea", "detect.us_ssn", false, "ssn 666-05-1120 and 000-12-3456", ""},
    {"SsnSpaces", "detect.us_ssn", true, R"({"ssn": "123 45 6789"})", "123 45 6789"},
    {"SsnInvalidGroupAndSerial", "detect.us_ssn", false, "123-00-4567 123-45-0000", ""},
    {"NinoGrouped", "detect.uk_nino", true, "NI number AB 12 34 56 C.", "AB 12 34 56 C"},
    {"NinoCompactInJson", "detect.uk_nino", true, R"({"nino":"AB123456C"})", "AB123456C"},
    {"NinoInvalidPrefix", "detect.uk_nino", false, "GB 12 34 56 C and QQ123456C", ""},
    {"BsnLabelled", "detect.nl_bsn", true, R"({"bsn": "111222333"})", "111222333"},
    {"BsnLabelledDotted", "detect.nl_bsn", true, "BSN: 1234.56.782", "1234.56.782"},
    {"BsnFailsElevenProof", "detect.nl_bsn", false, "bsn 123456789", ""},
    {"BsnWithoutLabel", "detect.nl_bsn", false, "order 111222333", ""},
    {"SteuerIdLabelled", "detect.de_steuer_id", true, R"({"steuer_id": "86095742719"})",
     "86095742719"},
    {"SteuerIdWrongCheckDigit", "detect.de_steuer_id", false, "Steuer-ID 86095742718", ""},
    {"PhoneNanp", "detect.phone", true, "call (555) 123-4567 today", "(555) 123-4567"},
    {"PhoneE164", "detect.phone", true, "tel +4915112345678", "+4915112345678"},
    {"DateIsNotPhone", "detect.phone", false, "2024-01-15 10:30", ""},
    // Phone numbers as people write them, and inside JSON, composite, array and hstore text.
    {"PhoneDutchDashes", "detect.phone", true, "call +31-20-555-0104 now", "+31-20-555-0104"},
    {"PhoneDutchSpaces", "detect.phone", true, "+31 20 555 0104", "+31 20 555 0104"},
    {"PhoneTrunkInParentheses", "detect.phone", true, "+44 (0)20 7946 0958", "+44 (0)20 7946 0958"},
    {"PhoneDoubleZeroPrefix", "detect.phone", true, "0049 30 12345678", "0049 30 12345678"},
    {"PhoneGermanMobileLongGroup", "detect.phone", true, "+49 151 12345678", "+49 151 12345678"},
    {"PhoneNanpNoSeparators", "detect.phone", true, "tel:+1(555)123-4567", "+1(555)123-4567"},
    {"PhoneFrenchDots", "detect.phone", true, "+33 1.23.45.67.89", "+33 1.23.45.67.89"},
    {"PhoneJapan", "detect.phone", true, "+81 3-1234-5678", "+81 3-1234-5678"},
    {"PhoneIndia", "detect.phone", true, "+91 98765 43210", "+91 98765 43210"},
    {"PhoneBrazil", "detect.phone", true, "+55 11 91234-5678", "+55 11 91234-5678"},
    {"PhoneNanpWithCountryCode", "detect.phone", true, "+1 (555) 123-4567", "+1 (555) 123-4567"},
    {"PhoneNanpTrunkPrefix", "detect.phone", true, "call 1-800-555-0199", "1-800-555-0199"},
    {"PhoneNationalDutch", "detect.phone", true, "tel 020-555 0104", "020-555 0104"},
    {"PhoneNationalUkParentheses", "detect.phone", true, "(020) 7946 0958", "(020) 7946 0958"},
    {"PhoneNationalUkMobile", "detect.phone", true, "mob 07700 900123", "07700 900123"},
    {"PhoneNationalGermanSlash", "detect.phone", true, "030/12345678", "030/12345678"},
    {"PhoneNationalFrench", "detect.phone", true, "01 23 45 67 89", "01 23 45 67 89"},
    {"PhoneNationalAustralia", "detect.phone", true, "(02) 9876 5432", "(02) 9876 5432"},
    {"PhoneInJson", "detect.phone", true, R"({"name": "Ada", "phone": "+31 20 555 0104"})",
     "+31 20 555 0104"},
    {"PhoneInJsonAfterEscape", "detect.phone", true, R"({"note": "call\n+31-20-555-0104"})",
     "+31-20-555-0104"},
    {"PhoneInComposite", "detect.phone", true, R"((1,"+31 20 555 0104"))", "+31 20 555 0104"},
    {"PhoneInCompositeUnquoted", "detect.phone", true, "(1,+31-20-555-0104,x)", "+31-20-555-0104"},
    {"PhoneInArray", "detect.phone", true, R"({"+31 20 555 0104",other})", "+31 20 555 0104"},
    {"PhoneInHstore", "detect.phone", true, R"("tel"=>"020-555 0104", "x"=>"1")", "020-555 0104"},
    {"TimestampIsNotPhone", "detect.phone", false, "2026-12-06 02:10:30+00", ""},
    {"EuropeanDateTimeIsNotPhone", "detect.phone", false, "06.12.2026 10:30", ""},
    {"UuidIsNotPhone", "detect.phone", false, "01234567-8901-2345-6789-012345678901", ""},
    {"IbanGrouped", "detect.iban", true, "pay DE89 3704 0044 0532 0130 00 thanks",
     "DE89 3704 0044 0532 0130 00"},
    {"IbanCompact", "detect.iban", true, "GB82WEST12345698765432", "GB82WEST12345698765432"},
    {"IbanBadChecksum", "detect.iban", false, "DE89370400440532013001", ""},
    {"IbanDutchGrouped", "detect.iban", true, "NL91 ABNA 0417 1643 00 EUR",
     "NL91 ABNA 0417 1643 00"},
    {"IbanFrenchWithLetter", "detect.iban", true, "FR14 2004 1010 0505 0001 3M02 606",
     "FR14 2004 1010 0505 0001 3M02 606"},
    {"IbanMaltaLongest", "detect.iban", true, "MT84MALT011000012345MTLCAST001S",
     "MT84MALT011000012345MTLCAST001S"},
    {"IbanNorwayShortest", "detect.iban", true, "NO93 8601 1117 947", "NO93 8601 1117 947"},
    {"IbanInJson", "detect.iban", true, R"({"iban":"DE89370400440532013000"})",
     "DE89370400440532013000"},
    {"IbanInArray", "detect.iban", true, R"({BE68539007547034,"x y"})", "BE68539007547034"},
    {"IbanWrongLengthForCountry", "detect.iban", false, "DE5137040044053201300", ""},
    {"Jwt", "detect.jwt", true,
     "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"},
    {"NotJwt", "detect.jwt", false, "eyJ.eyJ.short", ""},
    {"AwsKey", "detect.aws_access_key", true, "key=AKIAIOSFODNN7EXAMPLE;", "AKIAIOSFODNN7EXAMPLE"},
    {"AwsKeyTooShort", "detect.aws_access_key", false, "AKIAIOSFODNN7", ""},
    {"GithubToken", "detect.github_token", true, "ghp_0123456789abcdefghijABCDEFGHIJ012345",
     "ghp_0123456789abcdefghijABCDEFGHIJ012345"},
    {"GithubTokenTooShort", "detect.github_token", false, "ghp_0123456789", ""},
    {"SlackToken", "detect.slack_token", true, "xoxb-1234567890-abcdefghij",
     "xoxb-1234567890-abcdefghij"},
    {"SlackWordIsNotToken", "detect.slack_token", false, "xoxo hugs", ""},
    {"GoogleApiKey", "detect.google_api_key", true, "AIzaSyA-0123456789abcdefghijklmnopqrstu",
     "AIzaSyA-0123456789abcdefghijklmnopqrstu"},
    {"GoogleKeyTooShort", "detect.google_api_key", false, "AIzaSyA-0123", ""},
    {"StripeKey", "detect.stripe_secret_key", true, "sk_live_0123456789abcdefghijklmn",
     "sk_live_0123456789abcdefghijklmn"},
    {"StripeTestKeyIsNotLive", "detect.stripe_secret_key", false,
     "sk_test_0123456789abcdefghijklmn", ""},
};

INSTANTIATE_TEST_SUITE_P(DefaultSets, DefaultDetectRuleTest, ::testing::ValuesIn(kValueCases),
                         [](const ::testing::TestParamInfo<ValueCase>& info) {
                           return std::string(info.param.name);
                         });

// Numbers and ids that are not personal data: no PII detector may fire on them (alone, in JSON,
// in composite text).
class NotPiiTest : public ::testing::TestWithParam<const char*> {};

TEST_P(NotPiiTest, NoPersonalDataDetectorFires) {
  std::shared_ptr<const CompiledRuleSet> set = default_sets();
  ASSERT_NE(set, nullptr);
  const std::string value = GetParam();
  for (const std::string& v :
       {value, R"({"v": ")" + value + R"("})", "(1,\"" + value + "\")", "{" + value + "}"}) {
    std::vector<DetectSpan> spans;
    ASSERT_TRUE(set->detect(v, spans).is_ok());
    for (const DetectSpan& s : spans) {
      ADD_FAILURE() << s.rule->id << " fired on '" << v.substr(s.begin, s.end - s.begin)
                    << "' in: " << v;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    FalsePositives, NotPiiTest,
    ::testing::Values("ORD-2026-000123", "order 100234567", "#100234", "invoice 2026/000417",
                      "2026-12-06 02:10:30+00", "2026-12-06T02:10:30.123456+01:00", "2026-12-06",
                      "06.12.2026", "12/06/2026", "06.12.2026 10:30", "01/02/2026 12:00:00",
                      "550e8400-e29b-41d4-a716-446655440000",
                      "01234567-8901-2345-6789-012345678901", "192.168.100.200", "10.0.19045.2965",
                      "fe80::1ff:fe23:4567:890a", "v1.2.3", "1.2.3.4567", "$1,234.56",
                      "EUR 1 234 567,89", "1.234.567,89", "price 0.99", "978-3-16-148410-0",
                      "ISBN 0-306-40615-2", "12345678901234567890", "9007199254740993",
                      "1234567890123456", "1733452230000", "0x1a2b3c4d5e6f", "5f2b8c1e9a7d4e3f",
                      "sha 9e107d9d372bb6826bd81d3542a419d6", "lat 52.3702157 lon 4.8951679",
                      "tz +05:30", "+1 2026", "100-200-3000", "tracking 1Z999AA10123456784",
                      "000-12-3456", "666-12-3456", "4111111111111112", "DE89370400440532013001",
                      "icon@2x.png", "user at example dot com"),
    [](const ::testing::TestParamInfo<const char*>& info) {
      std::string name;
      for (char ch : std::string(info.param)) {
        name.push_back(std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_');
      }
      return name + "_" + std::to_string(info.index);
    });

TEST(DefaultSetsCoverage, EveryDefaultRuleHasPositiveAndNegativeCase) {
  std::shared_ptr<const CompiledRuleSet> set = default_sets();
  ASSERT_NE(set, nullptr);
  std::set<std::string> pos, neg;
  for (const SqlCase& c : kSqlCases) (c.matches ? pos : neg).insert(c.rule);
  for (const ValueCase& c : kValueCases) (c.matches ? pos : neg).insert(c.rule);
  for (const Rule& r : set->rule_set().rules()) {
    EXPECT_TRUE(pos.count(r.id)) << r.id << " has no positive case";
    EXPECT_TRUE(neg.count(r.id)) << r.id << " has no negative case";
  }
}

TEST(DefaultSetsVerdict, OrdinaryOrmStatementsAreAllowed) {
  std::shared_ptr<const CompiledRuleSet> set = default_sets();
  ASSERT_NE(set, nullptr);
  for (const char* sql : {
           "SELECT \"customers\".\"id\", \"customers\".\"email\" FROM \"crm\".\"customers\" "
           "WHERE \"customers\".\"id\" = $1 LIMIT 1",
           "INSERT INTO crm.orders (customer_id, total) VALUES ($1, $2) RETURNING id",
           "UPDATE crm.customers SET notes = 'drop database; delete from t' WHERE id = 7",
           "BEGIN; SELECT 1; COMMIT",
       }) {
    Verdict verdict;
    std::vector<std::string> ids = matched_ids(*set, sql, &verdict);
    EXPECT_EQ(verdict, Verdict::kAllow) << sql << " matched " << (ids.empty() ? "" : ids[0]);
  }
}

TEST(DefaultSetsVerdict, DenyWinsOverApproveInOneString) {
  std::shared_ptr<const CompiledRuleSet> set = default_sets();
  ASSERT_NE(set, nullptr);
  Verdict verdict;
  std::vector<std::string> ids =
      matched_ids(*set, "truncate t; drop database x; delete from y", &verdict);
  EXPECT_EQ(verdict, Verdict::kDeny);
  EXPECT_EQ(ids.size(), 3u);
}

}  // namespace
}  // namespace pgwarden::rules
