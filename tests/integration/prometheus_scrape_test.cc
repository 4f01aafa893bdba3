// A real Prometheus server (Debian's `prometheus`, a throwaway process on a free port with a
// temporary config and TSDB) scrapes pgwarden-cp and pgwarden-dp of a real gateway. Checked
// through Prometheus's HTTP API: both targets are up, every series the example dashboard and
// the alert rules use exists, the series move with traffic (a denied statement increments the
// deny counter of its rule, a failed login its code), and the alert rules of
// docs/monitoring/pgwarden-alerts.yml load and evaluate without errors.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "common/source_root.h"
#include "tests/integration/gateway_harness.h"

namespace pgwarden::testing {
namespace {

using json = nlohmann::json;

constexpr const char* kPrometheusBin = "/usr/bin/prometheus";

std::string slurp_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The throwaway Prometheus server.
class Prometheus {
 public:
  ~Prometheus() { stop(); }

  Status start(const std::string& dir, int cp_port, int dp_port, const std::string& rule_file) {
    port_ = free_tcp_port();
    log_ = dir + "/prometheus.log";
    std::string config = dir + "/prometheus.yml";
    // Scrape and evaluate every 200 ms so samples appear quickly; timeouts must not exceed it.
    std::ofstream(config) << "global:\n"
                             "  scrape_interval: 200ms\n"
                             "  scrape_timeout: 200ms\n"
                             "  evaluation_interval: 200ms\n"
                             "rule_files:\n"
                             "  - "
                          << rule_file
                          << "\n"
                             "scrape_configs:\n"
                             "  - job_name: pgwarden-cp\n"
                             "    static_configs:\n"
                             "      - targets: ['127.0.0.1:"
                          << cp_port
                          << "']\n"
                             "  - job_name: pgwarden-dp\n"
                             "    static_configs:\n"
                             "      - targets: ['127.0.0.1:"
                          << dp_port << "']\n";
    std::vector<std::string> args = {
        kPrometheusBin, "--config.file=" + config, "--storage.tsdb.path=" + dir + "/tsdb",
        "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"};
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      FILE* f = freopen(log_.c_str(), "w", stdout);
      (void)f;
      dup2(STDOUT_FILENO, STDERR_FILENO);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    if (pid_ < 0) return internal_error("fork failed");
    bool ready =
        eventually([&] { return http_get(port_, "/-/ready").find("Ready") != std::string::npos; });
    if (!ready) return unavailable("prometheus did not become ready:\n" + log());
    return Status::ok();
  }

  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // /api/v1/query: the result vector (empty on any error).
  json query(const std::string& promql) const {
    json r =
        json::parse(http_get(port_, "/api/v1/query?query=" + url_encode(promql)), nullptr, false);
    if (!r.is_object() || r.value("status", "") != "success") return json::array();
    return r["data"]["result"];
  }
  // The value of a query that yields one sample; -1 when it yields none.
  double scalar(const std::string& promql) const {
    json v = query(promql);
    if (!v.is_array() || v.size() != 1) return -1;
    return std::stod(v[0]["value"][1].get<std::string>());
  }
  json rules() const {
    json r = json::parse(http_get(port_, "/api/v1/rules"), nullptr, false);
    return r.is_object() && r.contains("data") ? r["data"] : json::object();
  }
  std::string log() const { return slurp_file(log_); }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_;
};

std::string alert_rules_file() {
  return std::string(PGW_SOURCE_ROOT) + "/docs/monitoring/pgwarden-alerts.yml";
}
std::string dashboard_file() {
  return std::string(PGW_SOURCE_ROOT) + "/docs/monitoring/pgwarden-dashboard.json";
}

// Every pgwarden_* metric name in `text` (PromQL expressions of the dashboard or the rules).
std::set<std::string> metric_names(const std::string& text) {
  std::set<std::string> out;
  std::regex name("pgwarden_[a-z_]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator();
       ++it) {
    out.insert(it->str());
  }
  return out;
}

class PrometheusScrapeTest : public SharedGatewayTest<PrometheusScrapeTest> {
 public:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.metrics = true;
    o.approver_groups = {"reviewers"};
    o.admin_principals = {{"reviewer", {"reviewers"}}};
    return o;
  }

  static void SetUpTestSuite() {
    SharedGatewayTest<PrometheusScrapeTest>::SetUpTestSuite();
    if (::testing::Test::HasFatalFailure()) return;
    ASSERT_EQ(access(kPrometheusBin, X_OK), 0)
        << kPrometheusBin << " is missing: scripts/setup installs the Debian package prometheus";
    prometheus_ = new Prometheus();
    Status st = prometheus_->start(gw_->dir(), gw_->cp_metrics_port(), gw_->dp_metrics_port(),
                                   alert_rules_file());
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    // Both targets scraped successfully.
    ASSERT_TRUE(eventually([] {
      return prometheus_->scalar(R"(sum(up{job=~"pgwarden-cp|pgwarden-dp"}))") == 2;
    })) << prometheus_->log();
  }
  static void TearDownTestSuite() {
    delete prometheus_;
    prometheus_ = nullptr;
    SharedGatewayTest<PrometheusScrapeTest>::TearDownTestSuite();
  }

 protected:
  // Runs `sql` through the gateway; returns its SQLSTATE ("" on success).
  std::string run(const std::string& sql) {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    EXPECT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    Res r(PQexec(c.get(), sql.c_str()));
    return sqlstate(r.get());
  }
  // The current value of `promql` in Prometheus (0 when the series does not exist yet).
  double value(const std::string& promql) {
    double v = prometheus_->scalar(promql);
    return v < 0 ? 0 : v;
  }
  bool reaches(const std::string& promql, double at_least) {
    return eventually([&] { return prometheus_->scalar(promql) >= at_least; });
  }

  static inline Prometheus* prometheus_ = nullptr;
};

TEST_F(PrometheusScrapeTest, ADeniedStatementIncrementsTheDenyCounterOfItsRule) {
  const std::string deny =
      R"(sum(pgwarden_dp_statements_total{verdict="deny",rule="deny.drop_database",source="prescreen"}))";
  const std::string denied_total = "sum(pgwarden_dp_statements_denied_total)";
  double before = value(deny);
  double before_total = value(denied_total);
  EXPECT_EQ(run("DROP DATABASE postgres"), "42501");
  EXPECT_TRUE(reaches(deny, before + 1)) << prometheus_->query(deny).dump();
  EXPECT_TRUE(reaches(denied_total, before_total + 1));
  // Exactly one: the series counts statements, not scrapes.
  EXPECT_EQ(value(deny), before + 1);
}

TEST_F(PrometheusScrapeTest, AllowedStatementsMoveVerdictLoginCacheAndRecorderSeries) {
  const std::string allow = R"(sum(pgwarden_dp_statements_total{verdict="allow"}))";
  const std::string logins = R"(sum(pgwarden_dp_logins_total{outcome="ok"}))";
  const std::string lookups = "sum(pgwarden_dp_verdict_cache_lookups_total)";
  const std::string recorded = "sum(pgwarden_cp_recorder_bytes_written_total)";
  const std::string prescreen = "sum(pgwarden_dp_prescreen_seconds_count)";
  const std::string analysed = "sum(pgwarden_cp_analysis_seconds_count)";
  double allow0 = value(allow), logins0 = value(logins), lookups0 = value(lookups),
         recorded0 = value(recorded), prescreen0 = value(prescreen), analysed0 = value(analysed);
  {
    Conn c(PQconnectdb(gw_->conninfo().c_str()));
    ASSERT_EQ(PQstatus(c.get()), CONNECTION_OK) << PQerrorMessage(c.get());
    // The same shape twice: a cache miss (cp analyses it), then a hit.
    for (int i = 0; i < 2; ++i) {
      Res r(PQexec(c.get(), ("SELECT " + std::to_string(i + 40) + " AS answer").c_str()));
      ASSERT_EQ(PQresultStatus(r.get()), PGRES_TUPLES_OK) << PQerrorMessage(c.get());
    }
  }
  EXPECT_TRUE(reaches(allow, allow0 + 2));
  EXPECT_TRUE(reaches(logins, logins0 + 1));
  EXPECT_TRUE(reaches(lookups, lookups0 + 2));
  EXPECT_TRUE(reaches(prescreen, prescreen0 + 2));
  EXPECT_TRUE(reaches(analysed, analysed0 + 1));
  EXPECT_TRUE(reaches(recorded, recorded0 + 1));  // recording is on (level full) by default
  EXPECT_TRUE(reaches("sum(pgwarden_cp_recorder_fsync_seconds_count)", 1));
  EXPECT_TRUE(reaches(R"(sum(pgwarden_dp_verdict_cache_lookups_total{result="hit"}))", 1));
}

TEST_F(PrometheusScrapeTest, AHeldApprovalIsPendingThenCountedByItsOutcome) {
  auto made = gw_->pg().psql(
      "create table public.metrics_t (k int primary key, v text); "
      "insert into public.metrics_t values (1, 'orig'); alter table public.metrics_t owner to "
      "app_scram");
  ASSERT_TRUE(made.is_ok()) << made.status().to_string();
  const std::string pending = "sum(pgwarden_cp_approvals_pending)";
  const std::string denied = R"(sum(pgwarden_cp_approvals_resolved_total{state="denied"}))";
  const std::string held = "sum(pgwarden_dp_statements_held_approval_total)";
  const std::string by_reviewer =
      R"(sum(pgwarden_dp_statements_total{verdict="deny",source="approval"}))";
  double pending0 = value(pending), denied0 = value(denied), held0 = value(held),
         by_reviewer0 = value(by_reviewer);
  const std::string sql = "update public.metrics_t set v = 'changed'";  // approve rule: no WHERE
  std::string state;
  std::thread agent([&] { state = run(sql); });
  EXPECT_TRUE(reaches(pending, pending0 + 1)) << prometheus_->query(pending).dump();
  EXPECT_TRUE(reaches(held, held0 + 1));
  // The reviewer denies it.
  std::string id;
  CtlResult list = gw_->ctl("reviewer", {"approvals", "list", "--state", "pending", "--json"});
  json j = json::parse(list.out, nullptr, false);
  if (j.is_object() && j["approvals"].is_array()) {
    for (const json& a : j["approvals"]) {
      if (a.value("sql", "") == sql) id = a.value("id", "");
    }
  }
  EXPECT_FALSE(id.empty()) << list.out << list.err;
  if (!id.empty()) {
    EXPECT_EQ(gw_->ctl("reviewer", {"approvals", "deny", id, "--reason", "metrics test"}).code, 0);
  }
  agent.join();
  EXPECT_EQ(state, "42501");
  EXPECT_TRUE(reaches(denied, denied0 + 1)) << prometheus_->query(denied).dump();
  EXPECT_TRUE(reaches(by_reviewer, by_reviewer0 + 1));
  EXPECT_TRUE(eventually([&] { return prometheus_->scalar(pending) == pending0; }));
}

TEST_F(PrometheusScrapeTest, AFailedLoginIsCountedByItsCode) {
  const std::string failed = R"(sum(pgwarden_dp_login_failures_total{code="auth_failed"}))";
  double before = value(failed);
  std::string bad =
      "host=127.0.0.1 port=" + std::to_string(gw_->port()) +
      " dbname=demo user=agent sslmode=require connect_timeout=10 password=not-a-token";
  Conn c(PQconnectdb(bad.c_str()));
  ASSERT_NE(PQstatus(c.get()), CONNECTION_OK);
  EXPECT_TRUE(reaches(failed, before + 1))
      << prometheus_->query("pgwarden_dp_login_failures_total").dump();
  EXPECT_TRUE(reaches(R"(sum(pgwarden_dp_logins_total{outcome="failed"}))", 1));
}

TEST_F(PrometheusScrapeTest, EverySeriesTheDashboardAndTheAlertRulesUseExists) {
  // Make the labeled series exist: an allowed and a denied statement, a failed login.
  EXPECT_EQ(run("SELECT 1"), "");
  EXPECT_EQ(run("DROP DATABASE postgres"), "42501");
  std::string bad = "host=127.0.0.1 port=" + std::to_string(gw_->port()) +
                    " dbname=demo user=agent sslmode=require connect_timeout=10 password=wrong";
  Conn c(PQconnectdb(bad.c_str()));
  std::set<std::string> wanted = metric_names(slurp_file(dashboard_file()));
  for (const auto& n : metric_names(slurp_file(alert_rules_file()))) wanted.insert(n);
  ASSERT_GT(wanted.size(), 20u);
  for (const std::string& name : wanted) {
    // The packet layer's series exist only in DPDK appliance mode (no NIC here).
    if (name.starts_with("pgwarden_packet_")) continue;
    // A webhook exists only with approvals.webhook_url, audit_pg sinks only with a postgres
    // audit sink.
    if (name.starts_with("pgwarden_cp_webhook_") || name.starts_with("pgwarden_cp_audit_pg_")) {
      continue;
    }
    EXPECT_TRUE(eventually([&] { return !prometheus_->query(name).empty(); }, 10000))
        << name << " is used by docs/monitoring but was never scraped";
  }
}

TEST_F(PrometheusScrapeTest, TheAlertRulesLoadAndEvaluateWithoutErrors) {
  // Prometheus refused to start if the file did not parse; here every rule must also have
  // been evaluated at least once with health "ok" (e.g. no many-to-many matching errors).
  json last;
  bool all_ok = eventually([&] {
    last = prometheus_->rules();
    size_t rules = 0;
    for (const auto& g : last.value("groups", json::array())) {
      for (const auto& r : g.value("rules", json::array())) {
        if (r.value("health", "") != "ok") return false;
        ++rules;
      }
    }
    return rules >= 10;
  });
  EXPECT_TRUE(all_ok) << last.dump(1);
  // Nothing is wrong with this gateway: no critical alert fires.
  for (const auto& g : last.value("groups", json::array())) {
    for (const auto& r : g.value("rules", json::array())) {
      if (r.value("labels", json::object()).value("severity", "") != "critical") continue;
      EXPECT_NE(r.value("state", ""), "firing") << r.dump(1);
    }
  }
}

TEST_F(PrometheusScrapeTest, TheEndpointsExposeNoSecretsOrStatementText) {
  std::string secret_sql = "SELECT 'metrics-canary-7f3a' AS x";
  EXPECT_EQ(run(secret_sql), "");
  for (int port : {gw_->cp_metrics_port(), gw_->dp_metrics_port()}) {
    std::string text = http_get(port, "/metrics");
    ASSERT_NE(text.find("# TYPE"), std::string::npos) << text;
    EXPECT_EQ(text.find("metrics-canary-7f3a"), std::string::npos);
    EXPECT_EQ(text.find(gw_->token()), std::string::npos);
    EXPECT_EQ(text.find("svc:agent1"), std::string::npos);  // no identities as labels
  }
}

}  // namespace
}  // namespace pgwarden::testing
