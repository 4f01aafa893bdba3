// Approval journal write errors with real processes (docs/approvals.md, "When the approval
// journal cannot be written"): pgwarden-cp's state directory, which holds approvals.jsonl, is a
// small tmpfs the harness mounts and this test fills (the audit log is elsewhere, so what fails
// is the journal alone; the policy records nothing, so no recording write gets in the way).
//   * a statement that needs an approval while the journal cannot be written is refused at once
//     with 53100 and a message naming the journal (never run, never left waiting);
//   * a reviewer's `pgwardenctl approvals approve` that cannot be journaled exits 1 with the
//     error on stderr, and the request stays pending (its client keeps waiting, nothing ran);
//   * once space returns, the same approval works and the held statement runs; new requests
//     are made and decided again;
//   * the journal parses line by line, and a cp restart sees exactly the journaled decisions.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "tests/integration/approval_client.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class GatewayApprovalJournalTest : public SharedGatewayTest<GatewayApprovalJournalTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = R"({"name": "agents", "allowed_kinds": ["select", "update"],
        "allowed_relations": ["public.*", "pg_catalog.*"], "rule_sets": ["deny", "approve"],
        "read_only": false,
        "recording": {"level": "off"}})";
    o.approver_groups = {"reviewers"};
    o.approval_timeout_s = 300;
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    o.state_tmpfs_kib = 1024;
    char tmpl[] = "/tmp/pgw-journal-audit-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) audit_dir_ = tmpl;
    o.config_merge_patch =
        json{{"audit",
              {{"sinks", json::array({{{"type", "file"}, {"path", audit_dir_ + "/audit.log"}}})}}}}
            .dump();
    return o;
  }
  static void SetUpTestSuite() {
    // The state tmpfs needs mount(2): without it (not root) the harness cannot start.
    if (::geteuid() != 0) {
      skip_ = "needs root to mount the state directory's tmpfs";
      return;
    }
    SharedGatewayTest::SetUpTestSuite();
    if (gw_ == nullptr) return;
    auto made = gw_->pg().psql(
        "CREATE TABLE public.aj_t (k int PRIMARY KEY, v text); INSERT INTO public.aj_t VALUES "
        "(1, 'orig'), (2, 'orig'); ALTER TABLE public.aj_t OWNER TO app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }
  static void TearDownTestSuite() {
    SharedGatewayTest::TearDownTestSuite();
    std::error_code ec;
    if (!audit_dir_.empty()) fs::remove_all(audit_dir_, ec);
  }

 protected:
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove(filler(), ec);
    SharedGatewayTest::TearDown();
  }
  static std::string filler() { return gw_->state_dir() + "/filler"; }
  static void fill_disk() { fill_file_system(filler()); }
  static std::string table() {
    return db_answer(*gw_, "SELECT string_agg(v, ',' ORDER BY k) FROM public.aj_t");
  }
  // Waits for the pending request of `sql` and returns its id ("" when none appeared).
  static std::string wait_pending(const std::string& sql) {
    std::string id;
    eventually(
        [&] {
          id = pending_request(*gw_, "reviewer", sql).value("id", "");
          return !id.empty();
        },
        20000);
    return id;
  }
  static json all_requests() {
    json list = ctl_json_as(*gw_, "reviewer", {"approvals", "list", "--state", "all"});
    return list.is_object() && list.contains("approvals") ? list["approvals"] : json::array();
  }

  static inline std::string audit_dir_;
  static inline std::string skip_;
};

TEST_F(GatewayApprovalJournalTest, AFullJournalRefusesRequestsAndDecisionsUntilSpaceReturns) {
  Conn held(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(held.get()), CONNECTION_OK) << PQerrorMessage(held.get());
  Conn other(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(other.get()), CONNECTION_OK) << PQerrorMessage(other.get());

  // Each request's journal line is longer than a page (an 8 KiB comment), so that no line can
  // fit the few bytes the journal file's last page may still have once the disk is full.
  const std::string pad = " /* " + std::string(8192, 'p') + " */";
  // A request made while the journal can be written: pending, its client waits.
  const std::string first = "UPDATE public.aj_t SET v = 'first'" + pad;
  ASSERT_EQ(PQsendQuery(held.get(), first.c_str()), 1);
  const std::string a = wait_pending(first);
  ASSERT_FALSE(a.empty()) << "no pending request for " << first;

  ASSERT_NO_FATAL_FAILURE(fill_disk());

  // A new request cannot be journaled: refused at once with 53100, not run, not waiting.
  const std::string second = "UPDATE public.aj_t SET v = 'second'" + pad;
  ASSERT_EQ(PQsendQuery(other.get(), second.c_str()), 1);
  Res refused = next_result(other.get(), 30000);
  ASSERT_NE(refused, nullptr) << "the client was left waiting";
  EXPECT_EQ(sqlstate(refused.get()), "53100") << PQresultErrorMessage(refused.get());
  const std::string why = PQresultErrorMessage(refused.get());
  EXPECT_NE(why.find("approval journal could not be written"), std::string::npos) << why;
  EXPECT_NE(why.find("ENOSPC"), std::string::npos) << why;
  drain(other.get());

  // A reviewer's approval that cannot be journaled: exit 1, the error on stderr, still pending.
  CtlResult approve = gw_->ctl("reviewer", {"approvals", "approve", a, "--reason", "ok"});
  EXPECT_EQ(approve.code, 1) << approve.out << approve.err;
  EXPECT_NE(approve.err.find("approval journal could not be written"), std::string::npos)
      << approve.err;
  json shown = ctl_json_as(*gw_, "reviewer", {"approvals", "show", a});
  EXPECT_EQ(shown.value("state", ""), "pending") << shown.dump();
  ASSERT_EQ(PQconsumeInput(held.get()), 1);
  EXPECT_EQ(PQisBusy(held.get()), 1) << "the held statement was answered";
  EXPECT_EQ(table(), "orig,orig");

  // Space returns: the same approval works and the held statement runs.
  fs::remove(filler());
  CtlResult approved = gw_->ctl("reviewer", {"approvals", "approve", a, "--reason", "ok"});
  ASSERT_EQ(approved.code, 0) << approved.out << approved.err;
  Res ran = next_result(held.get(), 30000);
  ASSERT_NE(ran, nullptr);
  EXPECT_EQ(PQresultStatus(ran.get()), PGRES_COMMAND_OK) << PQresultErrorMessage(ran.get());
  drain(held.get());
  EXPECT_EQ(table(), "first,first");

  // New requests are journaled and decided again.
  const std::string third = "UPDATE public.aj_t SET v = 'third'";
  ASSERT_EQ(PQsendQuery(other.get(), third.c_str()), 1);
  const std::string c = wait_pending(third);
  ASSERT_FALSE(c.empty());
  ASSERT_EQ(gw_->ctl("reviewer", {"approvals", "deny", c, "--reason", "no"}).code, 0);
  Res denied = next_result(other.get(), 30000);
  ASSERT_NE(denied, nullptr);
  EXPECT_EQ(sqlstate(denied.get()), "42501") << PQresultErrorMessage(denied.get());
  drain(other.get());
  EXPECT_EQ(table(), "first,first");

  // The journal is whole lines: no torn line was left by the failed writes.
  std::ifstream journal(gw_->state_dir() + "/approvals.jsonl");
  size_t lines = 0;
  for (std::string line; std::getline(journal, line);) {
    ++lines;
    EXPECT_FALSE(json::parse(line, nullptr, false).is_discarded())
        << "line " << lines << ": " << line;
  }
  EXPECT_GE(lines, 4u);  // a: requested, approved; c: requested, denied

  // A restarted cp sees exactly the journaled decisions: a approved, c denied, nothing else.
  ASSERT_TRUE(gw_->stop_cp().is_ok());
  ASSERT_TRUE(gw_->start_cp().is_ok());
  std::map<std::string, std::string> states;
  for (const json& r : all_requests()) states[r.value("id", "")] = r.value("state", "");
  EXPECT_EQ(states, (std::map<std::string, std::string>{{a, "approved"}, {c, "denied"}}));
}

}  // namespace
}  // namespace pgwarden::testing
