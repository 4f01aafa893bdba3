// ApprovalStore: durable approval requests for statements a policy routes to a human.
//
// A statement that needs approval is held by the dataplane while pgwarden-cp creates an
// ApprovalRequest here; a reviewer (never the requester, always a member of one of the
// policy's approver groups) approves or denies it with pgwardenctl; an undecided request is
// denied with reason "timed out" at its deadline.
//
// Durability: every transition is appended as one JSON line to
// `<state_dir>/approvals.jsonl` and fdatasync'd before it takes effect in memory or is
// reported to anyone (journal first, then index, then waiters and the audit sink). On open
// the journal is replayed (the last snapshot of each request wins; a torn last line is
// ignored) and compacted. Requests still pending at open belong to sessions of a previous
// pgwarden-cp process: they become `abandoned` unless `session_alive` says otherwise.
//
// Waiting: the server registers a callback per request with wait(); it is called exactly once
// when the request leaves `pending` (approved, denied, expired or abandoned). Deadlines are
// kept in one heap served by one timer thread: no thread per waiting request.
//
// Thread-safety: all public methods are safe to call concurrently. Callbacks (waiters, the
// audit sink, the created hook) run without the store's lock held, on the thread that caused
// the transition (the decider's thread, the timer thread, the caller of abandon_session or
// open, or the caller of wait() if the request had already been decided).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "controlplane/policy/policy.h"

namespace pgwarden::approvals {

enum class ApprovalState { kPending, kApproved, kDenied, kExpired, kAbandoned };
enum class ApprovalScope {
  kOnce,   // this statement only
  kShape,  // later statements with the same shape key by the same identity, until expiry
};

std::string_view approval_state_name(ApprovalState state);
std::string_view approval_scope_name(ApprovalScope scope);
std::optional<ApprovalState> parse_approval_state(std::string_view name);
std::optional<ApprovalScope> parse_approval_scope(std::string_view name);
// Where a reviewer opens request `id` in the web console: `<public_url>/approvals/<id>`;
// "" when `public_url` is empty.
std::string approval_console_url(std::string_view public_url, std::string_view id);

// What a statement held for approval would do (approvals by effect, docs/approvals.md), as
// pgwarden-cp measured it when the request was made. Shown to reviewers; never decides.
struct ApprovalEffect {
  // Why the statement needs approval, each "rule: explanation", e.g. "where_absent: DELETE on
  // public.t has no WHERE clause: it changes every row"; the deciding rule first.
  std::vector<std::string> reasons;
  int64_t estimated_rows = -1;  // the planner's estimate (EXPLAIN, never run); -1 = none
  std::string estimate_note;    // why there is no estimate
  int64_t dry_run_rows = -1;    // rows changed by the rolled-back dry run; -1 = none
  std::string dry_run_note;     // why no dry run ran (policy dry_run on) or how it failed
  bool operator==(const ApprovalEffect&) const = default;
};

// One reviewer's approval of a request that needs several (policy approvals.required_approvals).
struct ApprovalVote {
  std::string decider;
  int64_t ms = 0;
  std::string reason;
  std::string via;  // "cli", "chat", "http", ... (who decided through what); "" = unknown
  ApprovalScope scope = ApprovalScope::kOnce;
  int64_t grant_seconds = 0;
  bool operator==(const ApprovalVote&) const = default;
};

struct ApprovalRequest {
  std::string id;  // 16 url-safe characters from a CSPRNG
  std::string session_id;
  std::string identity;  // subject of the requester
  std::vector<std::string> groups;
  std::string target;
  std::string sql;        // the full statement text
  std::string shape_key;  // hex shape key from the dataplane lexer
  std::string rule;       // the rule or policy setting that asked for approval
  std::string request_reason;
  std::vector<std::string> approver_groups;  // snapshot of the policy's at creation
  int64_t created_ms = 0;                    // unix epoch milliseconds
  int64_t deadline_ms = 0;
  ApprovalState state = ApprovalState::kPending;
  int64_t decided_ms = 0;
  std::string decider;  // subject of the approver; "pgwarden" for expiry/abandon
  std::string decision_reason;
  ApprovalScope scope = ApprovalScope::kOnce;
  int64_t grant_expires_ms = 0;  // kShape only
  ApprovalEffect effect;
  // Hygiene (docs/approvals.md, "Who may decide"): snapshots of the policy at creation.
  int required_approvals = 1;                   // distinct approvals needed ("N of M")
  std::vector<std::string> break_glass_groups;  // may approve alone, with a reason
  std::vector<std::string> requester_links;     // identities linked to the requester
  std::vector<ApprovalVote> votes;              // approvals so far (the last one decides)
  bool break_glass = false;                     // approved by a break-glass decision
  std::string via;                              // channel of the deciding decision

  bool terminal() const { return state != ApprovalState::kPending; }
  nlohmann::json to_json() const;
  nlohmann::json votes_json() const;
  static Result<ApprovalRequest> from_json(const nlohmann::json& j);
};

struct NewApprovalRequest {
  std::string session_id;
  std::string identity;
  std::vector<std::string> groups;
  std::string target;
  std::string sql;
  std::string shape_key;
  std::string rule;
  std::string reason;
  policy::ApprovalSettings settings;  // approver groups and timeout from the session's policy
  // The escalation's own deadline (protocol deadline_ms, unix ms); 0 = none. The request's
  // deadline is the earlier of this and now + settings.timeout_seconds.
  int64_t deadline_ms = 0;
  ApprovalEffect effect;
};

struct ApprovalDecision {
  bool approve = false;
  std::string decider;                      // subject of the reviewer
  std::vector<std::string> decider_groups;  // the reviewer's groups (from their token)
  std::string reason;
  ApprovalScope scope = ApprovalScope::kOnce;  // approve only
  int64_t grant_seconds = 0;                   // kShape: how long the grant lasts (> 0)
  // Approve alone, bypassing required_approvals: the decider must be in the request's
  // break_glass_groups and give a reason. Audited as event approval_break_glass (a page).
  bool break_glass = false;
  std::string via;  // the channel: "cli", "chat", "http", ...
};

struct StandingGrant {
  std::string approval_id;
  int64_t expires_ms = 0;
};

// A shape grant stands for statements that reach no further than the one a reviewer saw: the
// same shape may carry literals that widen the effect (`WHERE k = 1 OR 1 = 2` approved,
// `WHERE k = 1 OR 1 = 1` later; `WHERE k < 20` approved, `WHERE k < 1000000` later). Returns
// why a statement needing approval under `rule` with `effect` reaches further than the
// `granted` request (another rule; a reason whose rule the grant's request did not have; no
// estimate, or a larger one, where the grant's request had one); "" when it does not.
std::string wider_than_grant(const ApprovalRequest& granted, const std::string& rule,
                             const ApprovalEffect& effect);

// Called once per request when it leaves `pending`.
using ApprovalWaiter = std::function<void(const ApprovalRequest&)>;
// Receives one JSON audit record per transition: {"event": "approval_requested" |
// "approval_vote" (one of several required approvals; "decider", "reason") |
// "approval_approved" | "approval_denied" | "approval_expired" | "approval_abandoned" |
// "approval_break_glass" (after approval_approved; "severity": "critical", "page": true,
// "decider", "reason"), "ts": ms, "approval": {...}}.
using ApprovalAuditSink = std::function<void(const nlohmann::json&)>;

struct ApprovalStoreOptions {
  std::string state_dir;  // REQUIRES: exists and is writable
  ApprovalAuditSink audit;
  // Called after a request is durably created (e.g. WebhookNotifier::enqueue). Must not block.
  std::function<void(const ApprovalRequest&)> on_created;
  // At open: is the session of a pending request still connected? Unset = no session
  // survives a restart (the dataplane's escalation connection died with the old process).
  std::function<bool(const std::string& session_id)> session_alive;
  // Wall clock in unix epoch milliseconds; tests inject a fake one.
  std::function<int64_t()> clock_ms;
  // Shared state (controlplane/state, docs/scale-out.md): when set, every transition this
  // node makes is written there before the local journal (a decision only while the request
  // is still pending there); an error refuses the transition and is returned. Transitions
  // other nodes made arrive through apply_remote().
  // A vote (one of several required approvals) is written there too, compare-and-set on the
  // number of votes before it, so votes cast on different nodes add up to one N-of-M decision.
  std::function<Status(const ApprovalRequest& request, bool created)> replicate;
  // Shared state: the request as the store has it now (nullopt: unknown there), read at the
  // start of every decide() so votes cast on other nodes count. An error refuses the decision.
  std::function<Result<std::optional<ApprovalRequest>>(const std::string& id)> refresh;
  // Identities linked to `identity` (the same person's SSO subject, agents and service keys;
  // config approvals.identity_links), without `identity` itself. Unset = no links. Read at
  // creation (snapshot in requester_links) and again at each decision.
  std::function<std::vector<std::string>(const std::string& identity)> linked_identities;
  bool start_timer_thread = true;  // false: the owner calls expire_due() (tests)
  int64_t max_grant_seconds = 8 * 3600;
  size_t max_statement_bytes = 1 << 20;  // longer statements are refused, not truncated
};

class ApprovalStore {
 public:
  static Result<std::unique_ptr<ApprovalStore>> open(ApprovalStoreOptions options);
  ~ApprovalStore();
  ApprovalStore(const ApprovalStore&) = delete;
  ApprovalStore& operator=(const ApprovalStore&) = delete;

  // Persists a new pending request with deadline now + settings.timeout_seconds.
  Result<ApprovalRequest> create(const NewApprovalRequest& request);

  // Registers `waiter` for request `id`; called exactly once. If the request is already
  // terminal the waiter runs now, on this thread. not_found for an unknown id.
  Status wait(const std::string& id, ApprovalWaiter waiter);

  // Approves or denies. permission_denied when the decider is the requester or an identity
  // linked to it, is in none of the approver groups (break-glass: none of the break-glass
  // groups), or a break-glass decision has no reason; failed_precondition when the request is
  // no longer pending (an expired deadline is applied first) or the decider (or an identity
  // linked to them) already approved it; invalid_argument for a bad scope/duration. An
  // approval that is not the last one required leaves the request pending with one more vote.
  // One deny denies.
  Result<ApprovalRequest> decide(const std::string& id, const ApprovalDecision& decision);

  // Abandons every pending request of a session that ended. Returns how many.
  size_t abandon_session(const std::string& session_id);

  // Expires every pending request whose deadline is <= now. The timer thread calls this;
  // tests with a fake clock call it directly. Returns how many expired.
  size_t expire_due();

  // An unexpired shape-scoped approval for (identity, shape_key) at `now_ms`, if any.
  std::optional<StandingGrant> lookup_standing_grant(const std::string& identity,
                                                     const std::string& shape_key,
                                                     int64_t now_ms) const;

  // A request as another node wrote it (shared state store). Unknown here: added (pending
  // ones get a deadline). Pending here and terminal there: takes that outcome (journaled,
  // standing grant indexed, waiters called; not audited again, the deciding node did).
  // Pending in both with more votes there: takes those votes (journaled). Anything else is
  // ignored.
  Status apply_remote(const ApprovalRequest& request);

  std::optional<ApprovalRequest> get(const std::string& id) const;
  // Requests in `state` (all when unset), oldest first.
  std::vector<ApprovalRequest> list(std::optional<ApprovalState> state = std::nullopt) const;

  std::string journal_path() const;

 private:
  struct Impl;
  explicit ApprovalStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgwarden::approvals
