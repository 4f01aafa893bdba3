// EscalationServer: pgwarden-cp's side of the dp <-> cp protocol (docs/protocol.md).
//
// Threads: one event loop (epoll) accepts dp connections on the Unix socket, decodes frames
// and answers hello/event inline; authenticate, scram_*, analyse and mask_plan run on a
// WorkerPool and are answered as they finish, out of order; approval requests wait in the
// approvals::ApprovalStore (a waiter callback; one timer thread for all deadlines), so a long
// approval never occupies a worker and never delays an authenticate. An identity with an
// unexpired shape-scoped grant for the statement's shape key is allowed without a request.
// Responses are written by whichever thread produced them, under the connection's write lock
// (nonblocking, with the loop flushing what the socket could not take).
//
// Every request has a deadline: past it when it arrives, when a worker picks it up, or when
// its handler returns, the answer is error deadline_exceeded (57014).
//
// Sessions (authenticate -> scram_* -> analyse ... -> event session_end) are keyed by
// session_id, owned by the dp connection that authenticated them (other connections get
// unknown_session) and detached when that connection closes (see "Channel reconnects"
// below). A session keeps the config snapshot it was admitted under, so a reload applies to
// new sessions only. When a session ends (session_end event, a kill, its dp process gone) its
// pending approvals are abandoned and its recording is closed.
//
// Recording: session events go to the Recorder (session_start opens the recording with the
// policy's level and row cap). The authenticate answer tells the dp whether the session
// requires recording (policy.recording_required); such a session sends each allowed
// statement's decision as a `record` request and forwards the statement only after the
// answer, which is sent when the Recorder has *written* the record (write-ahead; with
// recording.sync "always" also synced) — or an error when it could not be written (53100 disk
// full, 58030 I/O error; audited as decision "refused", rule cp.recording_failed). Events and
// record requests of a recording-required session are never refused for a full queue (they
// are bounded by the dp waiting for each record), so its results are recorded, in order,
// before its next statement runs. Events of other sessions may be dropped for a full queue;
// the Recorder then writes a recording_gap record with the counts before the session's next
// record.
//
// Dataplane stats: `dataplane_stats` events are kept (latest per dataplane name) in a
// DataplaneRegistry, not audited; closing the connection marks them stale. Other dataplane
// events (wire_rules_reload) are audited like session events.
//
// Revocation (docs/operations.md "Ending sessions and revoking identities"): cp ends a live
// session by pushing {"type":"event","kind":"kill","session_id","sqlstate":"57P01","message"}
// to the dp connection that owns it, ending it in cp (approvals abandoned, recording closed
// with the reason) and auditing event session_kill. Sessions end this way on
// kill_sessions() (pgwardenctl sessions kill / identities revoke) and whenever
// revalidate_sessions() finds a grant that no longer holds: a revocation, a config reload
// that removed the target, the policy, the group mapping, the service key or the identity
// provider, a JWKS that no longer has the signing key, a token past exp (+ the provider's
// leeway) under a policy without token_expiry "keep". A sweeper thread revalidates every
// live session every 500 ms. authenticate refuses revoked identities and keys (28000,
// code revoked).
//
// Session tickets and cp restarts: the authenticate answer carries an opaque `ticket`
// (session_ticket.h). After a cp restart the dp sends `reregister` {session_id, ticket} for
// each live session on its new connection, before any other request of that session; cp
// verifies the ticket, re-checks the grant against the current config and revocations
// (refusing with 57P01, code revoked, when it no longer holds) and continues the session's
// recording with a restart marker (Recorder::resume_session).
//
// Channel reconnects (cp stays up): when a dp connection closes while the dp process lives
// (its life pipe, received with the hello, has not hung up; without one, its pid from
// SO_PEERCRED watched with a pidfd), its sessions are *detached*, not ended:
// their recordings stay open and the dp re-registers them on its next connection, which
// reattaches them (a session_resumed record, reason "dataplane reconnected"). They end —
// session_end "... the session ended abnormally" and the seal — when the dp process exits
// (its life pipe or pidfd fires) or when kReattachWindowMs pass without a re-registration. A
// reregister may carry `lost` {records, kinds, first_ts, last_ts}: events of the session the
// dp could not deliver while it had no connection; cp records them as a recording_gap right
// after the session_resumed record. A session that ended in cp (killed, expired, sealed recording)
// is never re-admitted: its reregister is refused with 57P01.
//
// Sessions that ended while cp was away: the dp re-registers a session that ended after its
// login and whose end cp may not have recorded with `"ended": true`. cp continues its
// recording without re-checking the grant (the session is over), records the events the dp
// kept for it (its session_end among them: the recorder seals it) and, should the session_end
// not arrive within kEndedGraceMs, ends it itself. Orphans: at start cp collects the
// recordings the previous cp may have left open (orphan_recordings.h); one that no dp
// re-registers within kReattachWindowMs — at once when every dp process connected to the
// previous cp has exited — is closed with a session_end that says it ended abnormally, and
// sealed.
//
// Thread-safety: start/stop from one thread; reload(), kill_sessions(),
// revalidate_sessions() and live_sessions() from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/metrics/histogram.h"
#include "common/protocol/event_record.h"
#include "common/protocol/event_ring.h"
#include "common/protocol/frame.h"
#include "common/protocol/messages.h"
#include "common/status.h"
#include "controlplane/approvals/approval_store.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/budgets/budget_book.h"
#include "controlplane/config/config.h"
#include "controlplane/recording/recorder.h"
#include "controlplane/server/dataplane_registry.h"
#include "controlplane/server/interfaces.h"
#include "controlplane/server/orphan_recordings.h"
#include "controlplane/server/revocation_store.h"
#include "controlplane/server/session_ticket.h"
#include "controlplane/server/worker_pool.h"

namespace pgwarden::server {

struct ServerHandlers {
  std::shared_ptr<Authenticator> authenticator;
  std::shared_ptr<StatementAnalyser> analyser;
  std::shared_ptr<MaskPlanner> mask_planner;
  // Not owned; must outlive the server. Null approvals: approval requests are denied (fail
  // closed). Null recorder: events are audited only.
  approvals::ApprovalStore* approvals = nullptr;
  recording::Recorder* recorder = nullptr;
  // Directory of the rule set files <name>.rules the policies name. Not empty: every load
  // compiles them (a config whose rule sets do not compile is rejected, the running one
  // stays) and dataplanes that ask for it in hello get the compiled generation pushed.
  std::string rules_dir;
  // Not owned. Null revocations: nothing is revoked. Null tickets: no ticket is issued and
  // reregister is refused (the session ends after a cp restart).
  RevocationStore* revocations = nullptr;
  const TicketKey* tickets = nullptr;
  // Session registry (controlplane/state): called when a session is admitted (authenticate,
  // reregister: started = true) and when it ends. Runs on the server's threads; must not
  // block. Unset: nothing is told.
  std::function<void(const std::string& session_id, const std::string& identity,
                     const std::string& target, bool started)>
      on_session;
  // Whether identity provider `provider` still has signing key `kid` (TokenValidator::
  // has_key on the current validator). Unset: keys are not checked after login.
  std::function<std::optional<bool>(const std::string& provider, const std::string& kid)>
      provider_has_key;
  // Not owned. Null: budgets are not enforced (none configured in tests that do not wire it).
  budgets::BudgetBook* budgets = nullptr;
  // Where the dp processes connected to this cp are listed for the next cp
  // (<state_dir>/dataplanes.json, DataplaneRoster). Empty: not kept; after a crash the next cp
  // then waits kReattachWindowMs before it seals recordings nobody re-registered.
  std::string dataplanes_path;
};

// Which live sessions kill_sessions() ends: every non-empty field must match.
struct SessionSelector {
  std::string session_id;
  std::string subject;
  std::string key_id;
  bool empty() const { return session_id.empty() && subject.empty() && key_id.empty(); }
};

// Counters, family_variant (read with EscalationServer::counter()).
#define PGW_CP_COUNTERS(X)    \
  X(connections_accepted)     \
  X(connections_refused)      \
  X(frames_bad)               \
  X(requests_total)           \
  X(requests_overloaded)      \
  X(requests_deadline)        \
  X(requests_unknown_type)    \
  X(auth_accepted)            \
  X(auth_rejected)            \
  X(scram_verified)           \
  X(scram_failed)             \
  X(events_received)          \
  X(events_bad)               \
  X(dataplane_stats_received) \
  X(dataplane_stats_refused)  \
  X(recording_dropped)        \
  X(recording_backpressure)   \
  X(recording_refused)        \
  X(audit_refused)            \
  X(approvals_requested)      \
  X(approvals_standing_grant) \
  X(reloads_applied)          \
  X(reloads_rejected)         \
  X(sessions_killed)          \
  X(auth_revoked)             \
  X(sessions_reregistered)    \
  X(reregister_refused)       \
  X(rules_pushes)             \
  X(rings_attached)           \
  X(ring_records)             \
  X(ring_batches)             \
  X(ring_dp_wakes)            \
  X(ring_refused)             \
  X(budgets_exhausted)        \
  X(budget_pushes)            \
  X(sessions_detached)        \
  X(sessions_reattached)      \
  X(sessions_abandoned)

enum class Counter {
#define PGW_X(name) k_##name,
  PGW_CP_COUNTERS(PGW_X)
#undef PGW_X
      kCount
};

class EscalationServer {
 public:
  // How long the sessions of a closed dp connection wait for their re-registration while the
  // dp process lives (see the header comment). The dp reconnects within 500 ms.
  static constexpr int64_t kReattachWindowMs = 30000;
  // How long a session re-registered as ended waits for the session_end its dp kept.
  static constexpr int64_t kEndedGraceMs = 10000;

  // `store` must hold a loaded config and outlive the server; so must `audit`.
  EscalationServer(config::ConfigStore& store, audit::AuditLog& audit, ServerHandlers handlers);
  ~EscalationServer();
  EscalationServer(const EscalationServer&) = delete;
  EscalationServer& operator=(const EscalationServer&) = delete;

  // Binds $.control_plane.socket (a stale socket file is replaced; mode 0660), starts the
  // workers and the loop.
  Status start();
  // Closes every connection, denies pending approvals, joins all threads. Idempotent.
  void stop();

  // Loads the config file again. Invalid: the running config stays, the errors are logged
  // and audited (event config_reload, decision rejected). Valid: new sessions use it and
  // every connected dp gets {"type":"event","kind":"policy_version","policy_version":N}.
  //
  // Rules (with handlers.rules_dir): the reload is validate-then-apply. The config is parsed,
  // then every rule set its policies name is read and compiled (rules::RuleBundle); any
  // error (file:line) rejects the whole reload: config and rules stay as they were,
  // audited as above. A valid bundle whose content hash differs from the running one
  // becomes a new rules generation (the new policy version) and is pushed to every dp
  // connection whose hello asked for rules ({"type":"event","kind":"rules","bundle":...});
  // a dp that connects later gets the current generation right after its hello answer.
  config::LoadOutcome reload();

  // Waits until every connected dataplane that asked for rules (its connections, as one
  // process) has acknowledged, with a `rules_applied` event (ok), that all its workers screen
  // with the running generation's content, or until `timeout_ms` pass. Returns the names of
  // those that have not (empty: all enforce it). A dp that disconnects is no longer waited for
  // (it gets the generation right after its next hello). Any thread but the loop's.
  std::vector<std::string> wait_rules_enforced(int64_t timeout_ms);

  // The rules generation cp runs: {"generation", "hash", "lists", "files", "rules",
  // "rule_file_bytes", "installed_unix_ms", "databases_shipped", "rules_dir"};
  // {"generation": 0} without a rules_dir.
  nlohmann::json rules_status() const;

  size_t session_count() const;
  // Live sessions, for the admin API: [{session_id, identity, key_id, provider, target,
  // policy, client_addr, token_exp_ms, reregistered}].
  nlohmann::json live_sessions() const;
  // Ends the live sessions `selector` matches (see the header comment); `cause` is the audit
  // cause ("admin_kill", "revoked", ...), `by` the admin principal. Returns their ids.
  std::vector<std::string> kill_sessions(const SessionSelector& selector, const std::string& reason,
                                         const std::string& by, const std::string& cause);
  // Re-checks every live session's grant against the current config, revocations, signing
  // keys and token expiry; ends those that no longer hold. Returns their ids.
  std::vector<std::string> revalidate_sessions(const std::string& cause);
  // Sends every live session of `subject` the current state of its budgets (event `budget`):
  // after a budget was exhausted, reset (pgwardenctl budgets reset) or reconfigured. Returns
  // how many sessions were told. Any thread.
  // `only_exhausted`: only to sessions with an exhausted budget (another node's usage).
  size_t push_budgets(const std::string& subject, bool only_exhausted = false);
  // The latest dataplane_stats snapshot of every dataplane (admin API: `dataplane`).
  const DataplaneRegistry& dataplanes() const { return dataplanes_; }
  uint64_t counter(Counter c) const { return counters_[static_cast<int>(c)].load(); }
  // How long the statement analyser took per `analyse` request (thread-safe).
  metrics::HistogramSnapshot analysis_latency() const { return analysis_latency_.snapshot(); }

 private:
  struct Connection;
  struct Session;
  // Moves `s` to the masks of its policy in `cfg` when they are newer than those it decides
  // with (docs/masking.md, "Verdicts across a policy reload"); every other setting stays the
  // one it was admitted with. Idempotent; masks versions only go forward. Thread-safe. True
  // when the session's masks changed.
  static bool follow_masks(Session& s, const config::Config& cfg);
  // follow_masks() for every open session.
  void follow_masks_all(const config::Config& cfg);
  // One validated rules generation and the event frame that ships it.
  struct RulesGeneration {
    uint64_t generation = 0;
    std::string hash;
    size_t lists = 0;
    size_t files = 0;
    size_t rules = 0;
    size_t rule_file_bytes = 0;
    bool databases_shipped = false;  // compiled databases travel with the sources
    int64_t installed_unix_ms = 0;
    protocol::json event;  // {"type":"event","kind":"rules","bundle":{...}}
  };
  // Reads and compiles the rule sets `cfg` names. Errors (one per diagnostic line) reject
  // the config; on success *out is the generation to install (generation not yet set).
  std::vector<config::ConfigError> prepare_rules(const config::Config& cfg,
                                                 std::shared_ptr<RulesGeneration>* out) const;
  // Installs `next` (keeping the running generation number when the content is the same)
  // and pushes it to every dp connection that asked for rules. Returns the installed one.
  std::shared_ptr<const RulesGeneration> install_rules(std::shared_ptr<RulesGeneration> next,
                                                       uint64_t version);

  static std::string rules_ack_key(const Connection& conn);
  void loop();
  void accept_all();
  void on_readable(const std::shared_ptr<Connection>& conn);
  void on_writable(const std::shared_ptr<Connection>& conn);
  void close_connection(const std::shared_ptr<Connection>& conn);
  // The dp process behind `conn` has exited (its life pipe hung up, or its pidfd is
  // readable). Neither known: false.
  static bool peer_exited(Connection& conn);
  // "the dataplane process (pid N)", or a name that says cp cannot see its pid.
  static std::string dataplane_name(int64_t peer);
  // The descriptor that tells that `conn`'s dp process exited: its life pipe, else its pidfd.
  static int& exit_watch_fd(Connection& conn);
  // Watches the exit of `conn`'s peer (the descriptor taken from conn) on the loop's epoll,
  // once per dp process.
  void watch_peer(Connection& conn);
  // Ends the detached sessions for which `pred` holds (their dp process exited, or their
  // window passed): session_end `reason`, audited, counted. Any thread.
  void end_detached(const std::function<bool(const Session&)>& pred, const std::string& reason);
  // The pidfd `fd` of a watched dp process fired: its detached sessions end.
  void on_peer_exit(int fd);
  void on_frame(const std::shared_ptr<Connection>& conn, const std::string& payload);
  void send(const std::shared_ptr<Connection>& conn, const protocol::json& message);
  void fail_connection(const std::shared_ptr<Connection>& conn, uint64_t id, std::string_view code,
                       const Status& status);
  void dispatch(const std::shared_ptr<Connection>& conn, protocol::json request, uint64_t id,
                std::string type, int64_t deadline_ms);
  protocol::json handle(const std::shared_ptr<Connection>& conn, const std::string& type,
                        const protocol::json& request, uint64_t id);
  protocol::json handle_authenticate(const std::shared_ptr<Connection>& conn,
                                     const protocol::json& request, uint64_t id);
  protocol::json handle_scram(const std::shared_ptr<Connection>& conn, const std::string& type,
                              const protocol::json& request, uint64_t id);
  protocol::json handle_analyse(const std::shared_ptr<Connection>& conn,
                                const protocol::json& request, uint64_t id);
  protocol::json handle_mask_plan(const std::shared_ptr<Connection>& conn,
                                  const protocol::json& request, uint64_t id);
  void handle_approval(const std::shared_ptr<Connection>& conn, const protocol::json& request,
                       uint64_t id, int64_t deadline_ms);
  void handle_event(const std::shared_ptr<Connection>& conn, protocol::json&& event);
  // Event ring (common/protocol/event_ring.h): maps the dp's memfd received with its hello
  // (`fds`: region, cp_wake, dp_wake; taken). False (fds closed) when it cannot be used.
  bool attach_ring(const std::shared_ptr<Connection>& conn, std::vector<int>& fds);
  // Loop thread: consumes every published record of the connection's ring (events and
  // write-ahead records, in order), in batches, then parks. Re-entrant calls return at once.
  void drain_ring(const std::shared_ptr<Connection>& conn);
  void on_ring_record(const std::shared_ptr<Connection>& conn, const protocol::RecordView& r);
  // The answer to write-ahead record `seq` of the ring (any thread): a refusal goes on the
  // backward ring, then the watermark moves over every contiguously answered seq and the dp
  // is woken if it waits for it.
  void ring_answer(const std::shared_ptr<Connection>& conn, uint64_t seq,
                   const protocol::json& answer);
  // Sends `answer` (to its request id), or (ring_seq != 0) answers the ring record.
  void reply(const std::shared_ptr<Connection>& conn, uint64_t ring_seq,
             const protocol::json& answer);
  protocol::json handle_reregister(const std::shared_ptr<Connection>& conn,
                                   const protocol::json& request, uint64_t id);
  // Write-ahead records in flight across a reconnection (reregister `ahead`): note_ahead()
  // keeps the session's last ring record (answer null: sent, not answered yet) and its
  // answer; ahead_json() renders it for the reregister answer (REQUIRES: s.ahead_mu held);
  // written_last() tells whether `last` (a recording's last record) is the record `ahead`
  // describes.
  void note_ahead(Session& s, uint64_t seq, const protocol::json& answer);
  static protocol::json ahead_json(const Session& s);
  static void forget_ahead(Session& s);  // REQUIRES: s.ahead_mu held
  static bool written_last(const protocol::json& last, const protocol::json& ahead);
  // The reregister's `lost` events (the dp could not deliver them) as a recording_gap.
  Status record_lost_events(const std::shared_ptr<Session>& session, const protocol::json& request);
  // Why the session's grant no longer holds under `cfg` at `now_ms` ("" when it holds).
  std::string grant_broken(const Session& session, const config::Config& cfg, int64_t now_ms);
  // Removes the session, pushes the kill to its dp, ends and audits it. False when it had
  // already ended.
  bool kill(const std::shared_ptr<Session>& session, const std::string& reason,
            const std::string& by, const std::string& cause);
  void sweep_loop();
  // Collects the recordings the previous cp may have left open (start()).
  void collect_orphans();
  // Seals the orphans whose time passed and the sessions re-registered as ended whose
  // session_end did not come (sweeper).
  void end_overdue(int64_t now_ms);
  // The answer, or null when it is sent later, once the Recorder has written the record.
  // `ring_seq` != 0: the record came on the event ring and is answered there (reply()).
  protocol::json handle_record(const std::shared_ptr<Connection>& conn, protocol::json request,
                               uint64_t id, uint64_t ring_seq = 0);
  // The write-ahead part of handle_record for session `session` (not null): `fields` are the
  // statement record's fields, `sql` its SQL (for holds and refusals), `audited` its audit
  // record (written once the record is).
  protocol::json record_ahead(const std::shared_ptr<Connection>& conn,
                              const std::shared_ptr<Session>& session,
                              recording::RecordFields fields, std::string sql,
                              std::optional<audit::AuditRecord> audited, uint64_t id,
                              uint64_t ring_seq);
  // A typed ring record (statement decision or write-ahead record, completion, rows): recorded
  // and audited from its pre-serialised fields, no JSON tree.
  void on_ring_event(const std::shared_ptr<Connection>& conn, const protocol::RecordView& r);
  // The audit record of a dp event; none for `rows` (result rows never reach the audit log).
  std::optional<audit::AuditRecord> audit_record_of(const std::shared_ptr<Session>& session,
                                                    const protocol::Event& event);
  // The audit record's session part (event, session id, identity, target, policy).
  audit::AuditRecord audit_base(const std::shared_ptr<Session>& session, std::string event,
                                std::string session_id);
  // A session marked behind: records its recording_gap. Ok when not behind (or no recorder).
  Status catch_up_recording(const std::shared_ptr<Session>& session);
  // A record the Recorder could not write (the statement is not run): counted and audited as
  // decision "refused", rule cp.recording_failed. Any thread.
  void recording_refused(const std::shared_ptr<Session>& session, const Status& why,
                         const std::string& sql);
  // Null while the audit log can be written (a failing log is retried first, so the first
  // statement after space returns heals it); else the refusal of request `id` (53100 disk
  // full, 58030 other errors; code audit_failed), counted (audit_refused) and audited as
  // decision "refused", rule cp.audit_failed (that line is lost too while the log fails).
  protocol::json audit_refusal(const std::shared_ptr<Session>& session, uint64_t id,
                               const std::string& sql);
  // Tells every dp connection when the audit log starts or stops failing (event `audit`,
  // `failing`): while it fails the dps ask before running cached verdicts. Any thread.
  void push_audit_state();
  // The refusal of request `id` because its audit line could not be written (`why`).
  protocol::json refuse_unaudited(const std::shared_ptr<Session>& session, uint64_t id,
                                  const std::string& sql, const Status& why);
  // The recording_backpressure (53000) answer to request `id`, audited as decision "hold".
  protocol::json recording_hold(const std::shared_ptr<Session>& session, uint64_t id,
                                const Status& why, const std::string& sql);
  std::shared_ptr<Session> find_session(const std::shared_ptr<Connection>& conn,
                                        const std::string& session_id);
  // A session is over (session_end or its connection closed): abandon its approvals and
  // close its recording.
  void end_session(const std::shared_ptr<Session>& session, const std::string& reason);
  // Appends the event to the session's recording. A refused append (queue full) is counted
  // as lost, marking a recording-required session behind, only with `count_loss` (an event;
  // a refused record request is not lost: its statement does not run).
  Status record_event(const std::shared_ptr<Session>& session, const std::string& kind,
                      protocol::json fields, bool count_loss);
  // The same for events other than session_start, with their fields serialised. `defer`:
  // written by the Recorder::commit() that ends the current ring batch (loop thread only).
  Status record_event(const std::shared_ptr<Session>& session, const std::string& kind,
                      recording::RecordFields fields, bool count_loss, bool defer = false);
  void bump(Counter c) { counters_[static_cast<int>(c)].fetch_add(1); }
  // An audit line for a recorded statement: on the loop thread batched (flushed after the
  // epoll batch), elsewhere written at once.
  void audit_recorded(const audit::AuditRecord& r);
  // Write-ahead records of the ring batch being committed (drain_ring, loop thread): their
  // audit lines are batched and they are answered together once the batch is written — one
  // write(2) per ring batch instead of one per statement — or all refused when it cannot be
  // (fail closed as for a single line).
  struct AuditedAnswer {
    std::weak_ptr<Connection> conn;
    std::shared_ptr<Session> session;
    uint64_t ring_seq = 0;
    std::string sql;
  };
  void answer_audit_group();
  // The budgets of an identity as the dp gets them (authenticate / reregister answers, events).
  protocol::json budget_states(const AuthenticatedIdentity& identity) const;
  // A completed statement (statement event, phase end): its usage goes to the identity's
  // budgets; a budget it exhausts is audited (budget_exhausted) and pushed to the sessions.
  void account_statement(const std::shared_ptr<Session>& session, const protocol::json& fields);
  // The same for a completion record read from the event ring (or any usage).
  void account_usage(const std::shared_ptr<Session>& session, const protocol::BudgetUsage& usage);

  config::ConfigStore& store_;
  audit::AuditLog& audit_;
  ServerHandlers handlers_;
  std::shared_ptr<const config::Config> boot_config_;  // listener settings (restart to change)

  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  // Loop thread only: event audit lines written with record_batched() since the last flush
  // (flushed once per epoll batch).
  bool audit_unflushed_ = false;
  // Loop thread only: inside drain_ring's Recorder::commit(), and what it collected.
  bool grouping_audit_ = false;
  std::vector<AuditedAnswer> audit_group_;
  // The audit state last pushed to the dps (push_audit_state()).
  std::atomic<bool> audit_pushed_{false};
  std::thread loop_thread_;
  std::unique_ptr<WorkerPool> pool_;

  mutable std::mutex conns_mu_;
  std::map<int, std::shared_ptr<Connection>> conns_;     // by fd
  std::map<int, std::shared_ptr<Connection>> ring_fds_;  // by cp_wake eventfd
  uint64_t next_conn_id_ = 1;

  mutable std::mutex sessions_mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  // Sessions that ended here, with the reason (the last kEndedKept): their reregister is
  // refused. Guarded by sessions_mu_.
  static constexpr size_t kEndedKept = 4096;
  std::map<std::string, std::string> ended_;
  std::deque<std::string> ended_order_;
  // Recordings the previous cp may have left open, by session id -> when to seal them unless
  // a dp re-registers the session first. Guarded by sessions_mu_.
  std::map<std::string, int64_t> orphans_;
  DataplaneRoster roster_;
  // Exit watches (life pipes or pidfds) of dp processes with (possibly) detached sessions, by
  // fd -> Connection::peer. Guarded by conns_mu_.
  std::map<int, int64_t> peer_watches_;

  DataplaneRegistry dataplanes_;

  std::mutex sweep_mu_;
  std::condition_variable sweep_cv_;
  std::thread sweep_thread_;
  // Guards rules_ and the connections' wants_rules, so that a push and a hello never leave
  // a dp on an older generation. Lock order: rules_mu_, then a connection's mu.
  mutable std::mutex rules_mu_;
  std::shared_ptr<const RulesGeneration> rules_;
  // What each dp process acknowledged (rules_ack_key -> content hash of the generation its
  // workers run) and its name (from rules_applied / dataplane_stats). Guarded by acks_mu_,
  // which may be taken under rules_mu_ (never the other way round); ack_events_ counts
  // acknowledgements and closed connections, rules_cv_ is notified on each.
  mutable std::mutex acks_mu_;
  std::map<std::string, std::string> rules_acked_;
  std::map<std::string, std::string> rules_dp_names_;
  uint64_t ack_events_ = 0;
  std::condition_variable rules_cv_;

  std::atomic<uint64_t> counters_[static_cast<int>(Counter::kCount)] = {};
  metrics::LatencyHistogram analysis_latency_;
};

}  // namespace pgwarden::server
