#include "controlplane/ctl/rules_command.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include "common/source_root.h"

namespace pgwarden::ctl {
namespace {

const std::string kDeny = PGW_SOURCE_ROOT "/rules/sets/deny.rules";
const std::string kApprove = PGW_SOURCE_ROOT "/rules/sets/approve.rules";
const std::string kPii = PGW_SOURCE_ROOT "/rules/sets/pii.rules";

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

CliRun run(std::vector<std::string_view> args, const std::string& stdin_text = "") {
  std::istringstream in(stdin_text);
  std::ostringstream out, err;
  int code = run_rules_command(args, in, out, err);
  return {code, out.str(), err.str()};
}

TEST(RulesCheck, DefaultSetsAreValid) {
  CliRun r = run({"check", kDeny, kApprove, kPii});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("ok: 3 file(s)"), std::string::npos) << r.out;
}

TEST(RulesCheck, BadFileExitsOneWithFileLineErrors) {
  char tmpl[] = "/tmp/pgw-ctl-test.XXXXXX";
  std::string dir = mkdtemp(tmpl);
  std::string bad = dir + "/bad.rules";
  std::ofstream(bad) << "[r.a]\naction = deny\nview = code\nmessage = m\nseverity = low\n"
                        "pattern = (\nwhat = 1\n";
  CliRun r = run({"check", bad});
  std::filesystem::remove_all(dir);
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_NE(r.err.find(bad + ":7: unknown key 'what'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(bad + ":1: rule r.a: pattern rejected by Hyperscan"), std::string::npos)
      << r.err;
}

TEST(RulesCheck, MissingFileExitsOne) {
  EXPECT_EQ(run({"check", "/nonexistent.rules"}).code, kExitFailure);
}

TEST(RulesTest, DenyPrintsRuleAndExitsThree) {
  CliRun r = run({"test", "--set", kDeny, kApprove, "select 1; DROP/**/DATABASE prod"});
  EXPECT_EQ(r.code, kExitDeny);
  EXPECT_NE(r.out.find("match deny.drop_database deny critical"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("verdict deny"), std::string::npos);
}

TEST(RulesTest, ApproveExitsFourAndAllowExitsZero) {
  EXPECT_EQ(run({"test", "--set", kDeny, "--set", kApprove, "TRUNCATE t"}).code, kExitApprove);
  CliRun allow = run({"test", "--set", kDeny, kApprove, "select 'drop database x'"});
  EXPECT_EQ(allow.code, kExitOk);
  EXPECT_EQ(allow.out, "verdict allow\n");
}

TEST(RulesTest, ReportsEveryMatchingRule) {
  CliRun r = run({"test", "--set", kDeny, kApprove, "truncate t; alter system set x = 1"});
  EXPECT_EQ(r.code, kExitDeny);
  EXPECT_NE(r.out.find("approve.truncate"), std::string::npos);
  EXPECT_NE(r.out.find("deny.alter_system"), std::string::npos);
}

TEST(RulesTest, SqlFromStdin) {
  EXPECT_EQ(run({"test", "--set", kDeny, "-"}, "SET ROLE postgres").code, kExitDeny);
}

TEST(RulesTest, MissingSqlIsUsageError) {
  EXPECT_EQ(run({"test", "--set", kDeny}).code, kExitUsage);
  EXPECT_EQ(run({"test", "select 1"}).code, kExitUsage);
  EXPECT_EQ(run({"frobnicate"}).code, kExitUsage);
  EXPECT_EQ(run({}).code, kExitUsage);
}

TEST(RulesDetect, PrintsSpans) {
  CliRun r = run({"detect", "--set", kPii, "mail bob@example.com"});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_NE(r.out.find("detect detect.email [5,20)"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace pgwarden::ctl
