// GatewayHarness: a real pgwarden deployment for integration tests — the sandbox PostgreSQL
// (tests/support/pg_sandbox.h), pgwarden-cp and pgwarden-dp as separate processes with a
// generated config (TLS listener with a throwaway certificate, a service key as the token, a
// `demo` target pointing at the sandbox). Processes die with the test process
// (PR_SET_PDEATHSIG) and are stopped by stop() / the destructor.
//
// Binaries come from the environment (meson sets them): PGW_DP_BIN, PGW_CP_BIN, and
// PGW_CTL_BIN (pgwardenctl) for ctl().
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sys/types.h>

#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "tests/integration/cp_process.h"
#include "tests/support/pg_sandbox.h"

namespace pgwarden::testing {

struct GatewayOptions {
  bool loopback_only = false;  // listener accepts tokens without TLS from loopback peers
  int max_connections = 200;
  int auth_timeout_s = 10;
  int idle_timeout_s = 3600;
  int max_message_bytes = 1 << 20;
  int workers = 2;
  int target_port = 0;  // 0 = the sandbox; anything else: a port nobody listens on
  // Upstream TLS (the sandbox then runs with ssl=on): disable | require | verify-full.
  std::string upstream_tls_mode = "disable";
  std::string upstream_ca_file;  // verify-full; "" = the sandbox's own CA
  // $.recording.queue_capacity / hold_timeout_ms; 0 / -1 = the defaults.
  int recording_queue_capacity = 0;
  int recording_hold_timeout_ms = -1;
  std::string recording_sync;  // $.recording.sync: "" = default, "always" or "<ms>"
  // > 0: the state dir (<dir>/state: recordings, checkpoint, approvals) is a tmpfs of this
  // many KiB (needs root), unmounted by stop(): fault tests fill it up.
  int state_tmpfs_kib = 0;
  // The state dir is an ext4 file system on a loop device (needs root and /dev/loop*) whose
  // image lives on its own tmpfs; break_state_device() makes every write past the first
  // MiBs fail with EIO (the device shrinks under the file system), heal_state_device() gives
  // the space back. Unmounted and detached by stop().
  bool state_loop_device = false;
  // With a journal (mounted errors=remount-ro) the first failed journal commit turns the file
  // system read-only for good (EROFS); without one (errors=continue) a failed write is EIO
  // and writing works again after heal_state_device().
  bool state_loop_journal = false;
  std::string masking_key_file;  // $.masking.key_file; "" = none
  // Policy JSON object for the one policy (groups/targets are filled in when absent).
  std::string policy_json =
      R"({"name": "agents", "allowed_kinds": ["select", "insert", "update", "delete",
          "copy_to_stdout", "copy_from_stdin", "transaction", "prepare", "execute",
          "deallocate", "set", "show", "ddl_create"],
          "allowed_relations": ["crm.*", "public.*", "pg_catalog.*"],
          "allowed_functions": ["pg_catalog.pg_sleep"],
          "read_only": false, "rule_sets": ["deny", "approve"]})";
  // Identities besides `agent1` (svc:agent1): each id gets a service key (token(id)) with
  // identity `svc:<id>` in group `agents`.
  std::vector<std::string> extra_service_keys;
  // Groups of a service key other than the default ["agents"], by key id.
  std::map<std::string, std::vector<std::string>> service_key_groups;
  // More policies (a JSON array of policy objects), after the one of `policy_json`; "" = none.
  std::string extra_policies_json;
  // Approvals: when `approver_groups` is not empty, the policy gets
  // `"approvals": {"approver_groups": ..., "timeout_s": approval_timeout_s}` (replacing any
  // `approvals` object in policy_json).
  std::vector<std::string> approver_groups;
  int approval_timeout_s = 300;
  // Admin API for pgwardenctl: when not empty, cp gets `control_plane.admin_socket`
  // (<dir>/admin.sock) and these principals, each with a generated credential in a 0600 file
  // (hashed with `pgwarden-cp --hash-credential`). Run commands with ctl(name, args).
  struct AdminPrincipal {
    std::string name;
    std::vector<std::string> groups;
  };
  std::vector<AdminPrincipal> admin_principals;
  // $.identity.providers (a JSON array), e.g. a JWKS-file provider for JWT tests; "" = none.
  std::string identity_providers_json;
  // $.limits.cp_unavailable_wait_ms; -1 = the default.
  int cp_unavailable_wait_ms = -1;
  // Rule set files: when true, the source tree's rules/sets are copied to <dir>/rules and
  // both cp and dp get `--rules-dir <dir>/rules` (tests edit them with rules_dir()).
  bool own_rules_dir = false;
  // $.limits (login-flood budget); 0 = not written (the defaults).
  int max_pending_logins = 0;
  int max_pending_logins_per_source = 0;
  int startup_timeout_ms = 0;
  // $.metrics: when true, cp and dp serve Prometheus /metrics on free loopback ports
  // (cp_metrics_port(), dp_metrics_port()).
  bool metrics = false;
  // $.budgets (a JSON array, docs/budgets.md); "" = none.
  std::string budgets_json;
  // Several gateway nodes (docs/scale-out.md): when `state_store_conninfo` is not empty, cp
  // gets $.control_plane.state_store {"kind": "postgres", "dsn_file", "node_id"} (the conninfo
  // in a 0600 file in the test dir). `target` (not owned, must outlive the harness): the
  // target database is that sandbox (another node's pg()) instead of one of its own.
  std::string state_store_conninfo;
  std::string node_id = "node-a";
  PgSandbox* target = nullptr;
  // A JSON merge patch (RFC 7396) applied to the generated config last, for keys the options
  // above do not cover (e.g. {"approvals": {"reminder_interval_s": 1}}); "" = none.
  std::string config_merge_patch;
  // $.control_plane.http (a JSON object: the HTTPS admin API); "" = none.
  std::string control_plane_http_json;
  // pgwarden-cp runs behind this command (CpProcess::start), e.g. in a pid namespace of its
  // own; empty = directly.
  std::vector<std::string> cp_command_prefix;
  // Extra keys merged into the `demo` target (a JSON object), e.g.
  // {"pool_mode": "transaction", "pool_size": 5}; "" = none.
  std::string target_extra_json;
  // More targets (a JSON object {name: {keys}}): each is a copy of `demo` (same sandbox, role
  // and credential) named `name` with `keys` merged in, e.g.
  // {"demo_pool": {"pool_mode": "transaction", "pool_size": 3}}. Clients pick one with
  // conninfo("dbname=<name>"); "" = none.
  std::string extra_targets_json;
};

class GatewayHarness {
 public:
  GatewayHarness() = default;
  ~GatewayHarness() { stop(); }
  GatewayHarness(const GatewayHarness&) = delete;
  GatewayHarness& operator=(const GatewayHarness&) = delete;

  Status start(const GatewayOptions& options = {});
  void stop();

  // libpq conninfo through the gateway with the valid token (sslmode=require).
  std::string conninfo(const std::string& extra = "") const;
  // The same as the identity of service key `key_id` (agent1 or one of extra_service_keys).
  std::string conninfo_as(const std::string& key_id, const std::string& extra = "") const;
  const std::string& token() const { return token_; }
  // The token of service key `key_id`; "" when there is none.
  std::string token(const std::string& key_id) const;

  // Runs the real pgwardenctl against cp's admin socket as admin principal `principal` (one of
  // GatewayOptions::admin_principals; an unknown name runs with a credential file that does
  // not exist). Returns its exit code, stdout and stderr.
  CtlResult ctl(const std::string& principal, const std::vector<std::string>& args,
                const std::string& input = "") const;
  std::string admin_socket() const { return dir_ + "/admin.sock"; }
  // The rule set directory cp and dp use when GatewayOptions::own_rules_dir.
  std::string rules_dir() const { return dir_ + "/rules"; }
  // The audit log (file sink) as written so far.
  std::string audit_log() const;
  int port() const { return dp_port_; }
  // The /metrics ports (GatewayOptions::metrics); 0 when off.
  int cp_metrics_port() const { return cp_metrics_port_; }
  int dp_metrics_port() const { return dp_metrics_port_; }
  // The target database: the harness's own sandbox or GatewayOptions::target.
  PgSandbox& pg() { return *target_; }
  const std::string& dir() const { return dir_; }
  std::string state_dir() const { return dir_ + "/state"; }

  pid_t dp_pid() const { return dp_pid_; }
  Status stop_cp();
  Status start_cp();
  void signal_cp(int sig);
  // Sends `sig` to pgwarden-dp; wait_dp_exit waits for it to exit (true if it did).
  void signal_dp(int sig);
  bool wait_dp_exit(int timeout_ms, int* status = nullptr);
  // Starts pgwarden-dp again (after it exited) with the same arguments; waits as start() does.
  Status start_dp();
  // Rewrites the config file with new $.budgets (reload it to apply).
  Status rewrite_budgets(const std::string& budgets_json);
  // Rewrites the config file with a new policy (for SIGHUP reload tests).
  Status rewrite_policy(const std::string& policy_json);
  // state_loop_device only (see GatewayOptions).
  Status break_state_device();
  Status heal_state_device();
  // Rewrites the config file without service key `key_id` (reload it to apply).
  Status remove_service_key(const std::string& key_id);
  // kill -9 of pgwarden-cp (its socket file is left behind, as after a crash).
  void crash_cp();
  // SIGTERM to pgwarden-cp and wait for its exit; returns its exit status (-1: killed).
  int stop_cp_gracefully();
  std::string dp_log() const;
  std::string cp_log() const;
  // Resident memory of pgwarden-dp in KiB (from /proc).
  long dp_rss_kib() const;
  // Peak resident memory (VmHWM) of pgwarden-dp in KiB; reset_dp_peak_rss() starts a new peak
  // from the current RSS (/proc/<pid>/clear_refs, needs root or the same user): measure what a
  // test itself makes dp hold.
  long dp_peak_rss_kib() const;
  bool reset_dp_peak_rss() const;

 private:
  Status write_config();
  Status add_service_key(const std::string& id);
  Status add_admin_principal(const std::string& name);

  struct ServiceKey {
    std::string id;
    std::string token;
    std::string salt;
    std::string hash;
  };

  GatewayOptions options_;
  PgSandbox pg_;
  PgSandbox* target_ = &pg_;
  std::string dir_;
  std::string token_;
  std::vector<ServiceKey> service_keys_;
  std::map<std::string, std::string> admin_hashes_;  // principal -> credential_hash
  std::map<std::string, std::string> admin_files_;   // principal -> credential file
  std::string policy_json_;
  int dp_port_ = 0;
  int cp_metrics_port_ = 0;
  int dp_metrics_port_ = 0;
  CpProcess cp_;
  pid_t dp_pid_ = -1;
  bool state_mounted_ = false;
  std::string state_loop_;  // /dev/loopN under the state dir (state_loop_device)
  Status mount_state_device();
  std::vector<std::string> dp_argv_;
};

// libpq handles for tests: a connection closed with PQfinish, a result freed with PQclear.
struct PgConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, PgConnCloser>;
struct PgResultCloser {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Res = std::unique_ptr<PGresult, PgResultCloser>;

// The SQLSTATE of a result ("" for none or a null result).
inline std::string sqlstate(const PGresult* r) {
  const char* s = r == nullptr ? nullptr : PQresultErrorField(r, PG_DIAG_SQLSTATE);
  return s == nullptr ? "" : s;
}

// A free TCP port on 127.0.0.1 (bound then released).
int free_tcp_port();
// Connects a plain TCP socket to 127.0.0.1:port (blocking); -1 on failure.
int connect_tcp(int port);

// GET http://127.0.0.1:port/path (HTTP/1.0: the server closes, no chunking). The body, or ""
// when the connection failed.
std::string http_get(int port, const std::string& path);

// The value of the unlabelled sample `name` in a Prometheus text exposition, or -1.
double prometheus_sample(const std::string& text, const std::string& name);

// Fills the file system that holds `filler` (a new file) to the last byte, or until `leave`
// bytes are free (whole 64 KiB blocks first, then, when leave is 0, byte by byte for what the
// stream buffer held back). For fault tests on a small tmpfs.
void fill_file_system(const std::string& filler, size_t leave = 0);

// The non-empty lines psql prints for `sql` on `pg` (unaligned, no headers), as a set.
std::set<std::string> query_lines(PgSandbox& pg, const std::string& sql);

// One gateway per test suite, started with `Derived::gateway_options()` (by default the
// defaults with the policy `Derived::kPolicy`); on a failed test the dp and cp logs are
// printed. Derived test classes use `gw_`.
template <typename Derived>
class SharedGatewayTest : public ::testing::Test {
 protected:
  static GatewayOptions gateway_options() {
    GatewayOptions o;
    o.policy_json = Derived::kPolicy;
    return o;
  }
  static void SetUpTestSuite() {
    gw_ = new GatewayHarness();
    Status st = gw_->start(Derived::gateway_options());
    ASSERT_TRUE(st.is_ok()) << st.to_string();
  }
  static void TearDownTestSuite() {
    delete gw_;
    gw_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure() && gw_ != nullptr) {
      std::cerr << "---- dp log ----\n" << gw_->dp_log() << "---- cp log ----\n" << gw_->cp_log();
    }
  }

  static inline GatewayHarness* gw_ = nullptr;
};

// For a test that stops cp: start() starts it again; if the test ends before (a failed
// assertion), the destructor does, so that the suite's other tests find cp running.
class CpStartsAgain {
 public:
  explicit CpStartsAgain(GatewayHarness* gw) : gw_(gw) {}
  ~CpStartsAgain() {
    if (!started_) {
      EXPECT_TRUE(gw_->start_cp().is_ok());
    }
  }
  CpStartsAgain(const CpStartsAgain&) = delete;
  CpStartsAgain& operator=(const CpStartsAgain&) = delete;
  Status start() {
    started_ = true;
    return gw_->start_cp();
  }

 private:
  GatewayHarness* gw_;
  bool started_ = false;
};

// Re-checks `done` (an observable event: a status field, a row, a file) until it holds or
// `timeout_ms` passes; the 20 ms pause between checks only avoids a busy loop.
bool eventually(const std::function<bool()>& done, int timeout_ms = 20000);

}  // namespace pgwarden::testing
