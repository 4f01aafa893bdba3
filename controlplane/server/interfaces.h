// The seams where identity, policy analysis and masking plug into pgwarden-cp.
//
// EscalationServer calls these from its worker threads, concurrently: implementations must
// be thread-safe. Each call gets the config snapshot the session was admitted under (a
// reload never changes the rules under a running session).
//
// Wiring (ControlPlane, control_plane.cc):
//   * Authenticator: IdentityAuthenticator (identity::TokenValidator: JWTs and service keys).
//   * StatementAnalyser: PolicyAnalyser (controlplane/policy analyse_sql + evaluate, the
//     policy's deny_masked_in_expressions, and column lineage over the mask planner's catalog
//     under column masks). FailClosedAnalyser denies everything (default).
//   * MaskPlanner: CatalogMaskPlanner (controlplane/masking build_mask_plan over a PgCatalog
//     per target). FailClosedMaskPlanner refuses every result set (default).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/protocol/messages.h"
#include "common/status.h"
#include "controlplane/approvals/approval_store.h"
#include "controlplane/config/config.h"
#include "controlplane/policy/evaluator.h"
#include "controlplane/policy/policy.h"

namespace pgwarden::server {

struct AuthenticatedIdentity {
  std::string subject;
  std::string issuer;
  std::vector<std::string> groups;
  // Where the credential came from: the provider name or "service-key:<id>", the key it was
  // verified with (JWKS kid or service key id) and the token's exp (unix ms; 0: none).
  std::string provider;
  std::string key_id;
  int64_t expires_at_ms = 0;
};

// The outcome of an authentication: an identity, or a typed rejection whose `code` goes to
// the dp as error.code (e.g. "invalid_token", "token_expired") and whose status carries the
// SQLSTATE (28000) and a message safe to show the client (never the token).
struct AuthOutcome {
  bool ok = false;
  AuthenticatedIdentity identity;
  std::string code;
  Status error;

  static AuthOutcome accept(AuthenticatedIdentity id) {
    return AuthOutcome{true, std::move(id), {}, Status::ok()};
  }
  static AuthOutcome reject(std::string code, std::string message) {
    return AuthOutcome{false, {}, std::move(code), unauthenticated(std::move(message))};
  }
};

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  virtual AuthOutcome authenticate(const config::Config& config,
                                   const protocol::AuthenticateRequest& request) = 0;
};

// What cp's analysis keeps between the statements of one session (owned by the session).
struct SessionSqlState {
  static constexpr size_t kMaxPendingEffects = 16;
  std::mutex mu;  // guards everything below
  // SQL-level PREPARE names, so that EXECUTE inherits the verdict of its PREPARE.
  policy::PreparedStatements prepared;
  // What a statement answered "approve" would do (estimate, dry run), by statement text,
  // until its approval request takes it (oldest dropped beyond kMaxPendingEffects).
  std::map<std::string, approvals::ApprovalEffect> pending_effects;

  void put_effect(const std::string& sql, approvals::ApprovalEffect effect);
  // The effect stored for `sql` (removed); empty when none.
  approvals::ApprovalEffect take_effect(const std::string& sql);
};

// What an analyser or planner knows about the session a request belongs to.
struct SessionView {
  const std::string& session_id;
  const AuthenticatedIdentity& identity;
  const policy::Policy& policy;
  const config::Target& target;
  const config::Config& config;  // the snapshot the session was admitted under
  // The session's analysis state; null = none (EXECUTE of a SQL-level prepared statement is
  // then denied, and no effect is kept for an approval request).
  SessionSqlState* sql_state = nullptr;
};

class StatementAnalyser {
 public:
  virtual ~StatementAnalyser() = default;
  // Never fails: an analyser that cannot decide answers deny (fail closed).
  virtual protocol::AnalyseResponse analyse(const SessionView& session,
                                            const protocol::AnalyseRequest& request) = 0;
};

class MaskPlanner {
 public:
  virtual ~MaskPlanner() = default;
  // An error makes the dp refuse the result set (fail closed).
  virtual Result<protocol::MaskPlanResponse> plan(const SessionView& session,
                                                  const protocol::MaskPlanRequest& request) = 0;
};

// Every statement is denied (the default when no analyser is given).
class FailClosedAnalyser : public StatementAnalyser {
 public:
  protocol::AnalyseResponse analyse(const SessionView& session,
                                    const protocol::AnalyseRequest& request) override;
};

// Every mask plan request fails: results are refused (the default when no planner is given).
class FailClosedMaskPlanner : public MaskPlanner {
 public:
  Result<protocol::MaskPlanResponse> plan(const SessionView& session,
                                          const protocol::MaskPlanRequest& request) override;
};

}  // namespace pgwarden::server
