// PgSandbox: a throwaway PostgreSQL cluster for integration tests (scripts/pg-sandbox).
//
// The cluster is owned by this process: scripts/pg-sandbox's watchdog stops it and deletes
// its directory when the process exits for any reason, and stop() (also run by the
// destructor) does so at once. Integration tests never mock PostgreSQL; they use this.
#pragma once

#include <map>
#include <string>

#include "common/status.h"

namespace pgwarden::testing {

struct PgSandboxOptions {
  bool tls = false;  // throwaway CA + server certificate, ssl=on
};

class PgSandbox {
 public:
  PgSandbox() = default;
  ~PgSandbox() { stop(); }
  PgSandbox(const PgSandbox&) = delete;
  PgSandbox& operator=(const PgSandbox&) = delete;

  Status start(const PgSandboxOptions& options = {});
  void stop();
  bool running() const { return !env_.empty(); }

  // The KEY=VALUE lines printed by `pg-sandbox start` (PGHOST, PGPORT, PGW_SCRAM_USER, ...).
  const std::string& get(const std::string& key) const;
  const std::map<std::string, std::string>& env() const { return env_; }

  std::string host() const { return get("PGHOST"); }
  int port() const { return std::stoi(get("PGPORT")); }
  // libpq connection string for `role` (one of the sandbox roles) on database demo.
  std::string conninfo(const std::string& role = "app_scram") const;
  // Stops the server at once (pg_ctl stop -m immediate: a crash as clients see it) and starts
  // it again on the same port and data directory (crash recovery runs). Fault tests of a
  // PostgreSQL the gateway depends on (the shared state store).
  Status stop_immediate();
  Status restart();

  // Server log (log_statement=all): lets tests prove a statement never reached PostgreSQL.
  std::string server_log() const;

  // Runs `sql` as the superuser over the Unix socket with psql; returns psql's stdout
  // (unaligned, tuples only) or an error with psql's stderr.
  Result<std::string> psql(const std::string& sql, const std::string& db = "demo") const;

 private:
  std::map<std::string, std::string> env_;
};

// Runs a shell command, capturing stdout; error carries the exit status.
Result<std::string> run_command(const std::string& command);
// Runs a shell command and returns its stdout whatever its exit status (for commands whose
// error output is what a test checks, e.g. `psql ... 2>&1`).
std::string command_output(const std::string& command);

}  // namespace pgwarden::testing
