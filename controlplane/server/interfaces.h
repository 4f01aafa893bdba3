// The seams where identity, policy analysis and masking plug into pgwarden-cp.
//
// EscalationServer calls these from its worker threads, concurrently: implementations must
// be thread-safe. Each call gets the config snapshot the session was admitted under (a
// reload never changes the rules under a running session).
//
// Wiring (controlplane/server/main.cc, make_handlers()):
//   * Authenticator: CompositeAuthenticator sends "pgwsk.<id>.<secret>" tokens to
//     ServiceKeyAuthenticator and everything else to the JWT authenticator — nullptr until
//     controlplane/identity is wired in, which rejects JWTs with invalid_token.
//   * StatementAnalyser: FailClosedAnalyser (denies everything) until controlplane/policy's
//     analyse_sql + evaluate are wired in.
//   * MaskPlanner: FailClosedMaskPlanner (refuses result sets) until masking is wired in.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "controlplane/config/config.h"
#include "controlplane/policy/policy.h"
#include "controlplane/protocol/messages.h"

namespace pgwarden::server {

struct AuthenticatedIdentity {
  std::string subject;
  std::string issuer;
  std::vector<std::string> groups;
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

// What an analyser or planner knows about the session a request belongs to.
struct SessionView {
  const std::string& session_id;
  const AuthenticatedIdentity& identity;
  const policy::Policy& policy;
  const config::Target& target;
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

// Service keys from $.identity.service_keys: token "pgwsk.<id>.<secret>".
class ServiceKeyAuthenticator : public Authenticator {
 public:
  static constexpr std::string_view kTokenPrefix = "pgwsk.";
  static constexpr std::string_view kIssuer = "pgwarden:service-key";
  AuthOutcome authenticate(const config::Config& config,
                           const protocol::AuthenticateRequest& request) override;
};

// Routes service-key tokens to `service_keys` and all others to `jwt` (may be null: then
// JWTs are rejected with invalid_token).
class CompositeAuthenticator : public Authenticator {
 public:
  CompositeAuthenticator(std::shared_ptr<Authenticator> service_keys,
                         std::shared_ptr<Authenticator> jwt)
      : service_keys_(std::move(service_keys)), jwt_(std::move(jwt)) {}
  AuthOutcome authenticate(const config::Config& config,
                           const protocol::AuthenticateRequest& request) override;

 private:
  std::shared_ptr<Authenticator> service_keys_;
  std::shared_ptr<Authenticator> jwt_;
};

// Placeholder until controlplane/policy is wired in: every statement is denied.
class FailClosedAnalyser : public StatementAnalyser {
 public:
  protocol::AnalyseResponse analyse(const SessionView& session,
                                    const protocol::AnalyseRequest& request) override;
};

// Placeholder until masking is wired in: every mask plan request fails (result refused).
class FailClosedMaskPlanner : public MaskPlanner {
 public:
  Result<protocol::MaskPlanResponse> plan(const SessionView& session,
                                          const protocol::MaskPlanRequest& request) override;
};

}  // namespace pgwarden::server
