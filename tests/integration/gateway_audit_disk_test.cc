// The audit log on a full disk fails closed, with real processes (docs/recording.md, "Audit log
// write errors"): pgwarden-cp's file audit sink lives on a small tmpfs this test mounts (the
// state directory stays on the ordinary disk, so the session recordings keep working and what
// refuses statements is the audit log alone). The test fills the tmpfs while a libpq session
// runs statements through pgwarden-dp:
//   * statements are refused with SQLSTATE 53100 and a message that names the audit log;
//   * no statement runs without its audit line (every row in the database has one);
//   * `pgwardenctl status` shows the outage (audit: state failing, error, refused count) and cp
//     logs cp.audit_failed once;
//   * once space is freed the next statement runs without a restart, the first line written
//     after the outage is audit_write_resumed (with the refused count), and the file parses
//     line by line.
// And (GatewayRecordingOffDenialsTest) every denial of a session whose policy records nothing
// (`off`) or only metadata is an audit record with its rule and reason: a deny rule on the
// dataplane (prescreen), a policy denial by cp, and the same denial answered from the dp's
// verdict cache.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mount.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class GatewayAuditDiskTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pgw-auditfs-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // 256 KiB: room for the lines of the start and the first statements, filled by the test.
    if (::mount("pgw-auditfs", dir_.c_str(), "tmpfs", 0, "size=256k,mode=0700") != 0) {
      skip_ = "mounting a tmpfs is not permitted here (" + std::string(std::strerror(errno)) +
              "): the audit disk cannot be filled";
      return;
    }
    mounted_ = true;
    GatewayOptions o;
    o.admin_principals = {{"ops", {"ops"}}};
    // agent2: recording not required, so its cached verdicts need no write-ahead record (their
    // audit lines are written after they ran).
    o.extra_policies_json = R"([{"name": "norec", "groups": ["norec"], "targets": ["*"],
        "allowed_kinds": ["select", "insert"], "allowed_relations": ["public.*", "pg_catalog.*"],
        "read_only": false, "rule_sets": ["deny", "approve"],
        "recording": {"level": "metadata", "required": false}}])";
    o.extra_service_keys = {"agent2"};
    o.service_key_groups = {{"agent2", {"norec"}}};
    o.config_merge_patch =
        json{{"audit", {{"sinks", json::array({{{"type", "file"}, {"path", audit_path()}}})}}}}
            .dump();
    gw_ = new GatewayHarness();
    Status st = gw_->start(o);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    auto made = gw_->pg().psql(
        "CREATE TABLE public.audit_t (v text PRIMARY KEY); GRANT ALL ON public.audit_t TO "
        "app_scram");
    ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  }
  static void TearDownTestSuite() {
    delete gw_;  // stops cp, which holds the audit file open
    gw_ = nullptr;
    if (mounted_ && ::umount2(dir_.c_str(), 0) != 0) (void)::umount2(dir_.c_str(), MNT_DETACH);
    mounted_ = false;
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove(filler(), ec);
    if (HasFailure() && gw_ != nullptr) {
      std::cerr << "---- dp log ----\n" << gw_->dp_log() << "---- cp log ----\n" << gw_->cp_log();
    }
  }

  static std::string audit_path() { return dir_ + "/audit.log"; }
  static std::string filler() { return dir_ + "/filler"; }
  // Fills the tmpfs to the last byte.
  static void fill_disk() { fill_file_system(filler()); }
  // Every line of the audit file, each parsed (a line that does not parse fails the test).
  static std::vector<json> audit_lines() {
    std::ifstream in(audit_path());
    std::vector<json> out;
    size_t n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
      json j = json::parse(line, nullptr, false);
      EXPECT_FALSE(j.is_discarded()) << "audit line " << n << " is not JSON: " << line;
      if (!j.is_discarded()) out.push_back(std::move(j));
    }
    return out;
  }
  static json status_json() {
    CtlResult r = gw_->ctl("ops", {"status", "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    json j = json::parse(r.out, nullptr, false);
    return j.is_object() && j.contains("audit") ? j["audit"] : json::object();
  }
  static std::set<std::string> table_values() {
    return query_lines(gw_->pg(), "SELECT v FROM public.audit_t");
  }
  struct Outcome {
    std::string state;  // "ok" or the SQLSTATE
    std::string message;
  };
  static Outcome insert(PGconn* c, const std::string& v) {
    Res r(PQexec(c, ("INSERT INTO public.audit_t VALUES ('" + v + "')").c_str()));
    if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) return {"ok", ""};
    return {sqlstate(r.get()), PQresultErrorMessage(r.get())};
  }

  static inline std::string dir_;
  static inline std::string skip_;
  static inline bool mounted_ = false;
  static inline GatewayHarness* gw_ = nullptr;
};

TEST_F(GatewayAuditDiskTest, AFullAuditDiskRefusesStatementsWith53100AndHealsWhenSpaceReturns) {
  const size_t cp_log_before = gw_->cp_log().size();  // the suite's other tests log too
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  ASSERT_EQ(insert(c.get(), "before").state, "ok");
  EXPECT_EQ(status_json().value("state", ""), "ok");

  ASSERT_NO_FATAL_FAILURE(fill_disk());
  // The audit file's last page may still take a few lines: statements run until a line does
  // not fit; from then on every statement is refused.
  std::vector<std::string> ran;
  Outcome first_refusal;
  for (int i = 0; i < 500 && first_refusal.state.empty(); ++i) {
    std::string v = "during-" + std::to_string(i);
    Outcome o = insert(c.get(), v);
    if (o.state == "ok") {
      ran.push_back(v);
    } else {
      first_refusal = o;
    }
  }
  ASSERT_FALSE(first_refusal.state.empty()) << "the audit disk never filled up";
  EXPECT_EQ(first_refusal.state, "53100") << first_refusal.message;
  EXPECT_NE(first_refusal.message.find("audit log could not be written"), std::string::npos)
      << first_refusal.message;
  EXPECT_NE(first_refusal.message.find("ENOSPC"), std::string::npos) << first_refusal.message;
  for (int i = 0; i < 3; ++i) {
    Outcome o = insert(c.get(), "refused-" + std::to_string(i));
    EXPECT_EQ(o.state, "53100") << o.message;
  }
  // Other statements of the session are refused the same way; the session stays open.
  Res select(PQexec(c.get(), "SELECT count(*) FROM public.audit_t"));
  EXPECT_EQ(sqlstate(select.get()), "53100") << PQresultErrorMessage(select.get());
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK);

  json failing = status_json();
  EXPECT_EQ(failing.value("state", ""), "failing") << failing.dump();
  EXPECT_GE(failing.value("refused", 0), 5) << failing.dump();
  EXPECT_NE(failing.value("last_error", "").find("ENOSPC"), std::string::npos) << failing.dump();
  EXPECT_GT(failing.value("since_ms", int64_t{0}), 0) << failing.dump();
  CtlResult text = gw_->ctl("ops", {"status"});
  EXPECT_NE(text.out.find("audit:\n  state failing"), std::string::npos) << text.out;
  CtlResult counters = gw_->ctl("ops", {"status", "--json"});
  json all = json::parse(counters.out, nullptr, false);
  EXPECT_GE(all["counters"].value("audit_refused", 0), 5) << counters.out;
  // One cp.audit_failed per outage, not per statement; no statement text in it.
  std::string cp_log = gw_->cp_log().substr(cp_log_before);
  size_t events = 0;
  for (size_t at = cp_log.find("cp.audit_failed"); at != std::string::npos;
       at = cp_log.find("cp.audit_failed", at + 1)) {
    ++events;
  }
  EXPECT_EQ(events, 1u) << cp_log;
  EXPECT_EQ(cp_log.find("refused-0"), std::string::npos) << cp_log;

  // Space returns: the next statement heals the log (no restart, no waiting) and runs.
  fs::remove(filler());
  ASSERT_EQ(insert(c.get(), "after").state, "ok");
  EXPECT_EQ(status_json().value("state", ""), "ok");

  // Exactly the statements that were not refused ran, and each has its audit line.
  std::set<std::string> expected = {"before", "after"};
  expected.insert(ran.begin(), ran.end());
  std::set<std::string> rows;  // this test's rows (the other test's start with "norec-")
  for (const std::string& v : table_values()) {
    if (!v.starts_with("norec-")) rows.insert(v);
  }
  EXPECT_EQ(rows, expected);
  std::vector<json> lines = audit_lines();  // every line parses
  std::set<std::string> audited;
  size_t resumed_at = 0, after_at = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& l = lines[i];
    std::string sql = l.value("sql", "");
    for (const std::string& v : expected) {
      if (l.value("event", "") == "statement" && l.value("decision", "") == "allow" &&
          sql == "INSERT INTO public.audit_t VALUES ('" + v + "')") {
        audited.insert(v);
        if (v == "after") after_at = i;
      }
    }
    if (l.value("event", "") == "audit_write_resumed" && resumed_at == 0 &&
        l.value("refused", 0) >= 5) {  // this test's outage (the other test may have had one)
      resumed_at = i;
      EXPECT_GT(l.value("failing_since_ms", int64_t{0}), 0) << l.dump();
      EXPECT_NE(l.value("reason", "").find("ENOSPC"), std::string::npos) << l.dump();
    }
  }
  EXPECT_EQ(audited, expected) << "a statement ran without its audit line";
  ASSERT_GT(resumed_at, 0u) << "no audit_write_resumed line";
  EXPECT_LT(resumed_at, after_at) << "the outage record must come first after the outage";
}

TEST_F(GatewayAuditDiskTest, ASessionWithoutWriteAheadRecordingIsRefusedOnceTheAuditLogFails) {
  // Recording not required: the dp runs cached allows without asking cp — until cp says its
  // audit log fails; from then on it asks, and cp refuses.
  Conn c(PQconnectdb(gw_->conninfo_as("agent2").c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  ASSERT_EQ(insert(c.get(), "norec-before").state, "ok");  // analysed: the verdict is cached
  ASSERT_EQ(insert(c.get(), "norec-cached").state, "ok");
  ASSERT_EQ(status_json().value("state", ""), "ok");

  ASSERT_NO_FATAL_FAILURE(fill_disk());
  Outcome first_refusal;
  for (int i = 0; i < 500 && first_refusal.state.empty(); ++i) {
    Outcome o = insert(c.get(), "norec-during-" + std::to_string(i));
    if (o.state != "ok") first_refusal = o;
  }
  ASSERT_FALSE(first_refusal.state.empty()) << "cached statements kept running unaudited";
  // The dp learns of the failure from cp's first failed write: the statement whose line that
  // was may have run (counted in lines_lost), none after it.
  EXPECT_EQ(first_refusal.state, "53100") << first_refusal.message;
  EXPECT_NE(first_refusal.message.find("audit log could not be written"), std::string::npos)
      << first_refusal.message;
  // From then on every statement is refused while the disk is full.
  for (int i = 0; i < 3; ++i) {
    Outcome o = insert(c.get(), "norec-refused-" + std::to_string(i));
    EXPECT_EQ(o.state, "53100") << o.message;
  }
  EXPECT_EQ(table_values().count("norec-refused-0"), 0u);

  fs::remove(filler());
  ASSERT_EQ(insert(c.get(), "norec-after").state, "ok");
  EXPECT_EQ(status_json().value("state", ""), "ok");
  EXPECT_EQ(insert(c.get(), "norec-after-2").state, "ok");
  for (const json& l : audit_lines()) (void)l;  // every line still parses
}

// The audit file is moved away and a directory takes its path (a mistaken rotation, an
// operator's error): cp must not write on into the moved file nobody reads as the log. The
// statements are refused (58030, naming EISDIR) until the path can be opened again; then a new
// file starts at the path with audit_file_reopened and audit_write_resumed.
TEST_F(GatewayAuditDiskTest, AnAuditFileReplacedByADirectoryRefusesStatementsUntilItCanBeOpened) {
  Conn c(PQconnectdb(gw_->conninfo().c_str()));
  ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
  ASSERT_EQ(insert(c.get(), "dir-before").state, "ok");
  // The file and a directory swap names in one step: cp, which may write an audit line at any
  // moment, never sees the path empty (it would open a new file there).
  const std::string moved = audit_path() + ".moved";
  ASSERT_TRUE(fs::create_directory(moved));
  ASSERT_EQ(::renameat2(AT_FDCWD, moved.c_str(), AT_FDCWD, audit_path().c_str(), RENAME_EXCHANGE),
            0)
      << std::strerror(errno);
  for (int i = 0; i < 3; ++i) {
    Outcome o = insert(c.get(), "dir-refused-" + std::to_string(i));
    EXPECT_EQ(o.state, "58030") << o.message;
    EXPECT_NE(o.message.find("audit log could not be written"), std::string::npos) << o.message;
    EXPECT_NE(o.message.find("EISDIR"), std::string::npos) << o.message;
  }
  EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK);
  json failing = status_json();
  EXPECT_EQ(failing.value("state", ""), "failing") << failing.dump();
  EXPECT_NE(failing.value("last_error", "").find("open " + audit_path()), std::string::npos)
      << failing.dump();
  for (const std::string& v : table_values()) {
    EXPECT_FALSE(v.starts_with("dir-refused-")) << v << " ran while the audit log failed";
  }
  {
    // Nothing was written into the moved file after the move.
    std::ifstream in(moved);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(all.find("dir-refused-"), std::string::npos);
  }

  fs::remove(audit_path());  // the directory goes: the next statement opens a new file
  ASSERT_EQ(insert(c.get(), "dir-after").state, "ok");
  EXPECT_EQ(status_json().value("state", ""), "ok");
  std::vector<json> lines = audit_lines();
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(lines[0].value("event", ""), "audit_file_reopened") << lines[0].dump();
  EXPECT_EQ(lines[1].value("event", ""), "audit_write_resumed") << lines[1].dump();
  EXPECT_NE(lines[1].value("reason", "").find("EISDIR"), std::string::npos) << lines[1].dump();
  EXPECT_GE(lines[1].value("refused", 0), 3) << lines[1].dump();
  bool after = false;
  for (const json& l : lines) {
    after = after || (l.value("event", "") == "statement" &&
                      l.value("sql", "").find("'dir-after'") != std::string::npos);
  }
  EXPECT_TRUE(after) << "the statement after the outage has no audit line";
}

class GatewayRecordingOffDenialsTest : public SharedGatewayTest<GatewayRecordingOffDenialsTest> {
 public:
  // agent1: policy "agents", recording off; agent2: policy "meta", recording metadata. Both
  // may only SELECT, so INSERT is a policy denial (cacheable).
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = R"({"name": "agents", "allowed_kinds": ["select"],
        "allowed_relations": ["public.*", "pg_catalog.*"], "rule_sets": ["deny", "approve"],
        "recording": {"level": "off"}})";
    o.extra_policies_json = R"([{"name": "meta", "groups": ["meta"], "targets": ["*"],
        "allowed_kinds": ["select"], "allowed_relations": ["public.*", "pg_catalog.*"],
        "rule_sets": ["deny", "approve"], "recording": {"level": "metadata"}}])";
    o.extra_service_keys = {"agent2"};
    o.service_key_groups = {{"agent2", {"meta"}}};
    return o;
  }

 protected:
  // The audit lines whose sql is `sql` and whose decision is deny.
  static std::vector<json> denials_of(const std::string& sql) {
    std::vector<json> out;
    std::istringstream in(gw_->audit_log());
    for (std::string line; std::getline(in, line);) {
      json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.value("sql", "") == sql && j.value("decision", "") == "deny") {
        out.push_back(std::move(j));
      }
    }
    return out;
  }
  // Runs `sql`, expects 42501, and waits until the audit log has a denial of it with a rule
  // and a reason (from `source` when not empty: the dp's statement record).
  static void expect_audited_denial(PGconn* c, const std::string& sql, const std::string& source,
                                    const std::string& subject) {
    Res r(PQexec(c, sql.c_str()));
    ASSERT_EQ(sqlstate(r.get()), "42501") << sql << ": " << PQresultErrorMessage(r.get());
    bool found = eventually(
        [&] {
          for (const json& d : denials_of(sql)) {
            if (!source.empty() && d.value("source", "") != source) continue;
            if (d.value("identity", "") != subject) continue;
            if (!d.value("rule", "").empty() && !d.value("reason", "").empty()) return true;
          }
          return false;
        },
        10000);
    EXPECT_TRUE(found) << "no audited denial (rule and reason, source '" << source << "') of "
                       << sql << " for " << subject << " in:\n"
                       << gw_->audit_log();
  }
  static void expect_every_denial_audited(const std::string& key, const std::string& marker) {
    Conn c(PQconnectdb(gw_->conninfo_as(key).c_str()));
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    const std::string subject = "svc:" + key;
    // A deny rule, decided on the dataplane.
    expect_audited_denial(c.get(), "SELECT pg_read_file('/etc/" + marker + "')", "prescreen",
                          subject);
    // A policy denial by cp (audited by cp), then the same shape from the dp's verdict cache.
    expect_audited_denial(c.get(), "INSERT INTO public.t VALUES ('" + marker + "-1')", "", subject);
    expect_audited_denial(c.get(), "INSERT INTO public.t VALUES ('" + marker + "-2')", "cache",
                          subject);
  }
};

TEST_F(GatewayRecordingOffDenialsTest,
       DenialsOfASessionWithRecordingOffAreAuditedWithRuleAndReason) {
  expect_every_denial_audited("agent1", "rec-off");
}

TEST_F(GatewayRecordingOffDenialsTest, DenialsOfASessionWithMetadataRecordingAreAuditedToo) {
  expect_every_denial_audited("agent2", "rec-meta");
}

}  // namespace
}  // namespace pgwarden::testing
