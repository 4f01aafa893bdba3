// Session: one client connection and its upstream PostgreSQL connection, driven by the
// worker's EventLoop. Owned by its Worker; not thread-safe (everything runs on the worker
// thread). The session closes itself (Worker::release) and never blocks the loop: every
// escalation to pgwarden-cp is an asynchronous request.
//
// Lifecycle: startup (SSLRequest -> TLS, StartupMessage) -> AuthenticationCleartextPassword
// -> token -> cp `authenticate` -> upstream connect (TLS per grant) -> upstream SCRAM relayed
// to cp -> ParameterStatus / gateway BackendKeyData / ReadyForQuery -> statements.
//
// Statements (Query, Parse, FunctionCall) are checked in client order; while a check waits for
// cp the session stops consuming client messages (the client sees a running query) but keeps
// relaying upstream replies. A denied statement is replaced upstream by a statement that
// fails to parse and whose text carries a per-session nonce; the upstream's error for it is
// rewritten into the denial (42501). The upstream thus ends the implicit transaction or marks
// the explicit one failed exactly as it would for a real error, replies stay in protocol
// order, and the skip-until-Sync rule of the extended protocol holds on both sides.
//
// Large values (dataplane/session/large_values.h, docs/dataplane.md "Large values"): a Bind or
// CopyData over limits.max_message_bytes is relayed upstream as its bytes arrive; upstream rows
// and COPY lines too large to hold whole stream to the client through the ResultFilter
// (recorded as prefix + length + SHA-256, masked where the mask allows, else refused 54000 in
// step). Per-session memory stays bounded whatever the value size.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/protocol/budget.h"
#include "common/protocol/grant_types.h"
#include "common/status.h"
#include "dataplane/pgwire/framer.h"
#include "dataplane/session/cancel_map.h"
#include "dataplane/session/event_loop.h"
#include "dataplane/session/execution_ledger.h"
#include "dataplane/session/large_values.h"
#include "dataplane/session/recording_hold.h"
#include "dataplane/session/result_masking.h"
#include "dataplane/session/screen.h"
#include "dataplane/session/server_pool.h"
#include "dataplane/session/startup_settings.h"
#include "dataplane/session/stream.h"
#include "rules/lexer.h"

namespace pgwarden::session {

class Worker;

// What cp granted at login (the `authenticate` answer).
struct Grant {
  std::string subject;
  std::string policy_name;
  uint64_t policy_version = 0;
  uint64_t policy_hash = 0;
  bool read_only = true;
  bool allow_function_call = false;
  protocol::RecordingLevel recording = protocol::RecordingLevel::kFull;
  // policy.recording_required (and recording not off): every allowed statement's record must
  // be accepted by cp (`record` request) before the statement is forwarded. Absent: true
  // unless recording is off (fail closed).
  bool recording_required = true;
  int recording_row_cap = kDefaultRecordingRowCap;  // policy.recording_row_cap
  // policy.masks_values: the policy has mask rules, so error, notice and notification texts
  // are redacted (ResultFilterConfig::masks_values). Absent: true (fail closed).
  bool masks_values = true;
  // The config version of the masks cp decided with at login (policy.masks_version; 0: not
  // said). Later masks come with the rules generation (Screen::policy_masks).
  uint64_t masks_version = 0;
  std::vector<std::string> rule_sets;
  std::string host;
  int port = 5432;
  std::string unix_socket;
  std::string database;
  std::string role;
  protocol::UpstreamTlsMode tls_mode = protocol::UpstreamTlsMode::kDisable;
  std::string ca_file;
  std::vector<std::pair<std::string, std::string>> startup_parameters;
  // Opaque session ticket (cp's `ticket`): re-registers the session after a cp restart.
  std::string ticket;
  // policy.allowed_startup_settings: globs of the settings a client may set at login
  // (startup parameters and `options`). Absent in the grant: default_startup_settings().
  std::vector<std::string> allowed_startup_settings;
  // The identity's budgets with their usage as cp knows it (the answer's `budgets`; replaced
  // by `budget` events and the reregister answer). The session adds its own completed
  // statements and refuses (or sends for approval) statements once one is exhausted.
  std::vector<protocol::BudgetState> budgets;
  // The target's pooling (upstream.pool_mode "transaction"): upstream connections are shared
  // per transaction (server_pool.h, docs/dataplane.md "Transaction pooling").
  bool pool_transaction = false;
  int pool_size = 20;
  int pool_wait_timeout_ms = 5000;
};

// The `budgets` array of a cp answer or event; an error for anything malformed.
Result<std::vector<protocol::BudgetState>> parse_budgets(const nlohmann::json& budgets);

Result<Grant> parse_grant(const nlohmann::json& answer);

class Session {
 public:
  Session(Worker* worker, uint64_t id, int fd, size_t listener_index, const sockaddr_storage& peer);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void start();
  uint64_t id() const { return id_; }
  bool destroyed() const { return destroyed_; }
  // The worker started draining: idle sessions end now, busy ones after their statement.
  void on_drain();
  // Ends the session at once (drain deadline, worker stop).
  void terminate(std::string_view sqlstate, std::string_view message);
  // cp ended the session (kill event): a statement running upstream is cancelled, the client
  // gets FATAL `sqlstate` (57P01) with `message` and both connections close.
  void kill(std::string_view sqlstate, std::string_view message);
  // cp created approval request `approval_id` for the statement this session holds: sends the
  // client a NoticeResponse with `notice` now and a reminder every `reminder_ms` (0: none)
  // until the decision arrives. Ignored when no approval escalation is in flight.
  void on_approval_waiting(std::string approval_id, std::string notice, int64_t reminder_ms,
                           int64_t deadline_unix_ms);
  // The cp connection came back: sends `reregister` with the session's ticket. A session
  // that cannot be re-registered (no ticket, login unfinished, refused by cp) ends with 57P01.
  void reregister();
  // cp sent the identity's budgets anew (event `budget`: one was exhausted or reset).
  void set_budgets(std::vector<protocol::BudgetState> budgets);
  // The session id shared with cp (hex).
  const std::string& cp_session_id() const { return sid_hex_; }
  // The worker's pending-login budget evicted this connection (its slot is already free):
  // FATAL 53300 with `message` where the protocol allows it, else just closed.
  void evict_pending(std::string_view message);
  // Reads and processes whatever the client already sent. The worker asks a pending login
  // before evicting it: one whose first message is waiting unread (a loaded worker had not got
  // to it yet) is not idle, and completes its step here.
  void catch_up();
  // Transaction pooling: the pool answers a wait (ServerPool::Ready) with a connection, or
  // with null = a slot is free, open a connection.
  void on_pool_ready(std::unique_ptr<PooledServer> s);

 private:
  enum class State {
    kStartup,    // reading SSLRequest / StartupMessage
    kSslAccept,  // 'S' queued, TLS handshake follows once it is flushed
    kTlsHandshake,
    kAwaitPassword,    // AuthenticationCleartextPassword sent
    kAuthenticating,   // cp authenticate pending
    kUpstreamConnect,  // TCP/Unix connect in progress
    kUpstreamSsl,      // SSLRequest sent, waiting for 'S'/'N'
    kUpstreamTls,      // TLS handshake with upstream
    kUpstreamAuth,     // StartupMessage sent, authentication exchange
    kUpstreamStartup,  // AuthenticationOk seen, until ReadyForQuery
    kReady,            // statements
    kClosing,          // flushing a final message, then close
  };

  // A denial or refused statement whose upstream error will be rewritten.
  struct Rewrite {
    uint64_t cycle = 0;  // the ReadyForQuery (count) that ends the cycle it belongs to
    std::string sqlstate;
    std::string message;
    std::string rule;
    // The failing statement injected after a result dp refused inside a transaction: its
    // error is dropped (the client already got one); only its ReadyForQuery ('E') passes.
    bool silent = false;
    int position = 0;  // the ErrorResponse's P field (1-based character), 0 = none
  };

  // A decision about the client message at the front of the buffer (after an escalation).
  struct Decision {
    bool allow = false;
    std::string sqlstate;
    std::string rule;
    std::string message;
    int position = 0;       // a syntax error's cursor position (ErrorResponse P field)
    bool recorded = false;  // its write-ahead record was written (send_record)
    // Allowed by an approval (a reviewer's, or a standing shape grant): for a Parse, the
    // approval covers one Bind of the statement (refuse_spent_approval).
    bool approved = false;
    std::string approval_id;
  };

  class ClientIo : public IoHandler {
   public:
    explicit ClientIo(Session* s) : s_(s) {}
    void on_io(int, uint32_t events) override { s_->on_client_io(events); }

   private:
    Session* s_;
  };
  class UpstreamIo : public IoHandler {
   public:
    explicit UpstreamIo(Session* s) : s_(s) {}
    void on_io(int, uint32_t events) override { s_->on_upstream_io(events); }

   private:
    Session* s_;
  };

  void on_client_io(uint32_t events);
  void on_upstream_io(uint32_t events);
  // Reads what can be read, processes, flushes, updates epoll interest.
  void pump();
  void read_client();
  void read_upstream();
  void flush_client();
  void flush_upstream();
  void update_interest();

  // Client side.
  void process_client_input();
  // Returns false to stop processing (held, closing, or waiting for more state).
  bool handle_startup_packet(const pgwire::Message& m);
  bool handle_login_message(const pgwire::Message& m);
  bool handle_statement_message(const pgwire::Message& m);
  bool check_statement(const pgwire::Message& m, std::string_view sql);
  // The first exhausted budget of the identity (windows that ended are rolled first), or null.
  const protocol::BudgetState* exhausted_budget();
  // A statement (Query/Parse, or Execute/FunctionCall with `sql` describing it) that starts
  // while budget `b` is exhausted: refused with 53400, or (on_exceed approve) sent for
  // approval. Returns what check_statement returns.
  bool refuse_for_budget(const pgwire::Message& m, std::string_view sql,
                         const protocol::BudgetState& b);
  // A completion record of this session (the ResultFilter's): its usage counts locally.
  void account_locally(std::string_view statement_end_payload);
  void apply_denial(const pgwire::Message& m, const std::string& sqlstate,
                    const std::string& message, const std::string& rule, int position = 0);
  // A client message longer than limits.max_message_bytes in the statement phase: its bytes
  // are discarded as they arrive (never buffered) and the client gets ERROR 54000 in protocol
  // order, as for a denial; the session stays usable. False for message types that cannot be
  // answered that way (the framer then ends the session with FATAL 54000).
  bool refuse_oversized_message(uint8_t type, uint32_t length);
  // A Bind or CopyData longer than limits.max_message_bytes (parameters and COPY rows are data:
  // any size PostgreSQL accepts passes): relayed upstream as its bytes arrive, never buffered
  // whole; a Bind's names and parameters are noted as it passes (BindStream).
  void start_client_stream(uint8_t type, uint32_t length);
  void relay_client_stream();
  void finish_client_stream();
  // After authentication: every startup setting the client sent must be allowed by the policy
  // (startup_settings.h). False when the login was refused.
  bool admit_startup_settings();
  // `d`: the decision the message was forwarded under (Parse, or an Execute/FunctionCall that
  // needed its own record).
  void forward(const pgwire::Message& m, const Decision* d = nullptr);
  // Execute and FunctionCall of a recording-required session: forwarded only once their record
  // is written (a Parse's record covers its statement's first execution, ExecutionLedger).
  bool check_execution(const pgwire::Message& m);
  // Bind (`m`, or a stand-in for a streamed one) of `statement`, a name this session did not
  // prepare with a Parse we forwarded (a SQL PREPARE, whose approval covers only that PREPARE:
  // every EXECUTE is decided anew), is refused (42501, rule unknown_prepared_statement). True
  // when it was refused. Not pooled sessions: they map names themselves (session_pool.cc).
  bool refuse_unparsed_bind(const pgwire::Message& m, std::string_view statement);
  // Bind (`m` or a stand-in) of `statement`, whose Parse ran only by an approval: the approval
  // covers the first Bind after that Parse (the values it carries); any later Bind of the same
  // statement is refused (42501, rule approval_spent; audited) until the client prepares it
  // again, which asks for a new approval. True when refused. Marks the first Bind as spent.
  bool refuse_spent_approval(const pgwire::Message& m, std::string_view statement);
  // A forwarded Parse (`d` its decision) or Close: keeps approved_statements_ in step.
  void note_approved_statement(const pgwire::Message& m, const Decision* d);
  // Keeps parsed_statements_ in step with what is forwarded: Parse adds, Close removes, and a
  // statement text that may DEALLOCATE or DISCARD (SQL-level) forgets them all (fail closed:
  // a later Bind of such a name is refused rather than run under a stale decision).
  void note_statement_names(const pgwire::Message& m);
  // Bind (`m` or a stand-in) of `statement`, prepared under an older rules generation than the
  // worker screens with now: its text is screened again with the session's current rule set.
  // A deny match refuses it (42501, the rule; audited as a prescreen deny), an approve match
  // too (the statement must be prepared again to be sent for approval), and so does a statement
  // whose text was not kept. True when refused; otherwise its generation is brought up to date.
  // Transaction-pooled sessions: the named statements they keep for re-preparing (prepared_).
  bool refuse_stale_prepared(const pgwire::Message& m, std::string_view statement);
  // Screens `sql` (the text behind a statement, portal or cursor that `what` names, e.g.
  // `portal "p"`, decided under an older rules generation) with the session's current rule
  // set, and the cursors a FETCH/MOVE in it reads (refuse_stale_cursor). A deny or approve
  // match refuses `m` (42501; `redo` says what the client must do again for an approval), as
  // does a text that was not kept (`text_kept` false). True when refused.
  bool refuse_under_current_rules(const pgwire::Message& m, std::string_view sql, bool text_kept,
                                  const std::string& what, std::string_view decided,
                                  std::string_view redo);
  // Refuses `m` (42501, audited under `rule`): `what` was `decided` `when` and has no kept text
  // to check again; the client must `redo` it.
  void refuse_text_not_kept(const pgwire::Message& m, const std::string& what,
                            std::string_view decided, std::string_view when,
                            std::string_view redo, const char* rule);
  // Notes a Bind's portal (forwarded, or a streamed one) with the rules generation its Bind
  // passed under, and which Parse of `statement` it runs (the statement may be prepared
  // again or closed while the portal lives on).
  void note_portal(std::string_view portal, std::string_view statement);
  // Execute (`m`) of a portal bound under an older rules generation: its statement's text is
  // screened again (refuse_under_current_rules). True when refused.
  bool refuse_stale_portal(const pgwire::Message& m);
  // Keeps cursors_ in step with the DECLARE / CLOSE / DISCARD ALL texts forwarded.
  void note_cursors(std::string_view sql);
  // A FETCH or MOVE in `sql` of a cursor declared under an older rules generation: the
  // cursor's DECLARE is screened again with the current rule set; a deny or approve match
  // (or a DECLARE whose text was not kept) refuses `m` (42501). True when refused.
  bool refuse_stale_cursor(const pgwire::Message& m, std::string_view sql);
  // At a ReadyForQuery outside a transaction block: the portals and the cursors without
  // WITH HOLD of the cycles it ended are gone in PostgreSQL, so they go here too.
  void forget_transaction_objects();
  // Keeps portals_ and cursors_ in step with a message forwarded: Bind, Close of a portal,
  // the text of a Query or Parse.
  void note_transaction_objects(const pgwire::Message& m);
  // Picks up the rules of a new generation (Screen::generation() changed): the policy's
  // current rule sets, else the list the session was admitted with; and its masks
  // (pick_up_masks).
  void pick_up_rules();
  // The masks cp decides the session's statements with: the grant's, or the generation's for
  // the session's policy when newer (a reload changed them: cp moved the session to them).
  // Keys the verdict cache and mask plans by them (cache_version()) and follows
  // policy.masks_values for error-text redaction.
  void pick_up_masks();
  uint64_t cache_version() const;
  // Statements prepared, portals bound and cursors declared under older masks than the
  // session's (masks_version_) are analysed again by cp under the current ones before they
  // run (docs/masking.md, "Verdicts across a policy reload"), with the text the session kept.
  // kCurrent: nothing to do (or an allow brought them up to date); kRefused: `m` was refused
  // (42501, the reason and "(... before the policy changed)", audited); kWaiting: cp was asked,
  // `m` stays unprocessed until its answer (a refusal then comes as decision_).
  enum class MasksCheck { kCurrent, kRefused, kWaiting };
  MasksCheck recheck_prepared_masks(const pgwire::Message& m, std::string_view statement);
  MasksCheck recheck_portal_masks(const pgwire::Message& m);
  // The cursors a FETCH/MOVE in `sql` reads.
  MasksCheck recheck_cursor_masks(const pgwire::Message& m, std::string_view sql);
  struct MasksTarget {
    enum class Kind : uint8_t { kPrepared, kPortal, kCursor };
    Kind kind = Kind::kPrepared;
    std::string name;
  };
  // Asks cp to analyse `sql` (the kept text of `target`, decided under older masks).
  MasksCheck reanalyse_for_masks(const pgwire::Message& m, MasksTarget target,
                                 std::string_view sql, bool text_kept, const std::string& what,
                                 std::string_view decided, std::string_view redo);
  // The masks version `target` was decided under (null: no longer known).
  uint64_t* masks_version_of(const MasksTarget& target);
  // parsed_statements_ without `name` / without every named statement (the unnamed one stays).
  void forget_parsed(const std::string& name);
  void forget_named_parsed();
  // True (and the front message stays unprocessed) while statements forwarded earlier still
  // have results to come in a recording-required session; releases itself in pump().
  bool hold_for_results();
  void escalate_analyse(std::string sql, const ScreenResult& screen);
  // `approve_match`: the prescreen's first approve match (empty rule when none).
  void on_analysed(Result<nlohmann::json> r, std::string sql, uint64_t shape,
                   const PrescreenMatch& approve_match);
  void escalate_approval(std::string sql, uint64_t shape_key, std::string rule, std::string reason);
  void resume_with(Decision d);
  // An allowed statement of a recording-required session: its decision record goes to cp as a
  // `record` request and the statement is forwarded only once cp has queued it; on
  // recording_backpressure the statement is held (retried with backoff) up to
  // limits.recording_hold_timeout_ms, then refused with 53000.
  void record_then_resume(std::string_view sql, Decision d, const char* source);
  // `payload`: an encoded protocol::StatementFields (the write-ahead record).
  void send_record(std::string payload, Decision d);
  // cp answered recording_backpressure: schedules `retry` after the hold's backoff. False when
  // the hold timed out (the caller refuses the statement with hold_timeout_decision()).
  bool hold_for_recording(std::function<void()> retry);
  Decision hold_timeout_decision(std::string_view detail);
  void handle_cancel_request(const pgwire::Message& m);

  // Login.
  void on_authenticated(Result<nlohmann::json> answer);
  void connect_upstream();
  void on_upstream_connected();
  void send_upstream_startup();
  // The StartupMessage parameters sent upstream: user/database from the grant, the client's
  // admitted settings, then the grant's startup_parameters (which win).
  std::vector<std::pair<std::string, std::string>> upstream_startup_parameters() const;
  void process_upstream_login();
  void handle_upstream_auth(const pgwire::Message& m);
  void upstream_login_error(const pgwire::Message& m, bool after_auth_ok);
  bool upstream_login_last_error();
  void on_scram_answer(const std::string& step, Result<nlohmann::json> answer);
  void login_failed(std::string_view sqlstate, std::string_view message, std::string_view code);
  // Frees the pending-login slot (password received, or the connection is ending).
  void leave_pending();
  // Takes a max_connections slot; false (slot not taken) when they are all in use.
  bool take_connection_slot();
  void on_login_complete();

  // Upstream side (statement phase): streaming relay.
  void process_upstream_stream();
  void on_upstream_message(uint8_t type, std::string_view whole);
  // At the ReadyForQuery ending a cycle in which dp refused a result while the upstream
  // transaction is healthy ('T'): forwards the nonce statement so the upstream transaction
  // fails as the client was told; the ReadyForQuery the client gets is that statement's
  // ('E'). If the client already pipelined further cycles upstream, ends the session instead.
  // True when `whole` (the held ReadyForQuery) must not be forwarded.
  bool fail_upstream_transaction();
  // Result masking / recording hooks (result_masking.h).
  void request_mask_plan();
  void note_forwarded(const pgwire::Message& m);

  // Transaction pooling (session_pool.cc). A pooled session holds an upstream connection
  // (server_) from the first message of a transaction to the ReadyForQuery 'I' that ends it.
  bool pooled() const { return grant_.pool_transaction; }
  std::string pool_key() const;
  // Login of a pooled session: an idle connection of its key (synthetic login from the
  // connection's ParameterStatus), a new one (ordinary upstream login), or a wait.
  void pooled_login();
  // Statement phase: true when a connection is attached; otherwise one is being opened or
  // waited for and the message at the front stays unconsumed until then.
  bool pool_attach_or_wait();
  // Queues for the pool (pool_waiting_), with the wait timeout armed.
  void start_pool_wait();
  void on_pool_wait_timeout();
  void attach_server(std::unique_ptr<PooledServer> s);
  // The upstream login of a new pooled connection ended (ReadyForQuery).
  void on_pooled_server_opened();
  // Nothing of a transaction is left on the connection: ReadyForQuery 'I' seen, nothing in
  // flight in either direction.
  bool server_clean() const;
  void maybe_release_server();
  // Gives the connection back (clean) or closes it (dirty: the server rolls back an open
  // transaction when its connection closes), frees the pool slot and stops waiting.
  void return_server(bool reusable);
  // A message the pool could not serve in time: ERROR 53300 in protocol order.
  void refuse_pool_timeout(uint8_t type);
  // Answers the front message of a pooled session that got no upstream connection with
  // `sqlstate`/`message` (and ReadyForQuery, or skip-to-Sync for the extended protocol).
  void refuse_without_server(uint8_t type, std::string_view sqlstate, std::string_view message);
  // A pooled session's login of a new upstream connection (relogin_) failed: frees the slot,
  // keeps the session and makes its front message get this error. False when not a relogin.
  // Starts relogin_timer_ (REQUIRES: relogin_ just set).
  void arm_relogin_timer();
  bool refuse_after_failed_relogin(std::string_view sqlstate, std::string_view message,
                                   std::string_view code);
  // Client name checks of Parse/Bind/Describe/Close under pooling (42P05, 26000), answered
  // through the denial path. True when `m` was refused.
  bool refuse_pooled_statement(const pgwire::Message& m);
  // Appends `m` with its statement name mapped to the server's (re-preparing the statement on
  // this connection first when needed). False when `m` needs no mapping.
  bool append_pooled(const pgwire::Message& m);
  // ParseComplete / CloseComplete from a pooled connection: true when it answers a message
  // the gateway added (not relayed to the client).
  bool on_pooled_completion(uint8_t type);
  // A Bind over limits.max_message_bytes on a pooled connection: its statement name is mapped
  // (or the Bind refused, 26000) before its header goes upstream; the rest streams. False
  // while the names are not all buffered yet.
  bool start_pooled_bind_stream(uint32_t length);
  void on_pooled_cycle_end();
  struct ClientStatement;
  // Sends the statement's Parse first when this connection does not hold it (its ParseComplete
  // is dropped).
  void ensure_prepared(const ClientStatement& cs);

  void send_fatal(std::string_view sqlstate, std::string_view message);
  void close_after_flush();
  void destroy(std::string_view reason);
  void emit_event(nlohmann::json ev);
  // The statement's decision for the recording and the audit log. A denial with a `message`
  // (what the client is told), and every denial of a session whose recording is off, goes as a
  // JSON event with that message (audited with rule and reason whatever the recording level);
  // other decisions of a session with recording off are not sent (cp audits its own verdicts).
  void emit_statement(std::string_view sql, const char* verdict, const std::string& rule,
                      const char* source, std::string_view message = {});
  bool client_read_allowed() const;
  bool upstream_read_allowed() const;
  void arm_idle_timer();
  std::string session_id_hex() const;
  size_t client_in_pending() const { return client_in_.size() - client_in_off_; }
  size_t client_out_pending() const { return client_out_.size() - client_out_off_; }
  size_t up_out_pending() const { return up_out_.size() - up_out_off_; }
  bool busy() const;

  Worker* worker_;
  uint64_t id_;
  size_t listener_index_;
  sockaddr_storage peer_;
  std::string peer_text_;
  bool peer_loopback_ = false;
  State state_ = State::kStartup;
  bool destroyed_ = false;
  bool counted_ = false;  // holds a slot of Shared::connections (max_connections)
  // Counted in the worker's pending-login budget (accept -> password message).
  bool pending_login_ = true;

  ClientIo client_io_{this};
  UpstreamIo upstream_io_{this};
  Stream client_;
  Stream upstream_;
  uint32_t client_interest_ = 0;
  uint32_t upstream_interest_ = 0;
  bool client_registered_ = false;
  bool upstream_registered_ = false;
  bool client_eof_ = false;
  bool client_readable_ = false;  // epoll said readable; cleared when a read would block
  bool upstream_readable_ = false;
  bool upstream_hup_ = false;
  bool repump_scheduled_ = false;
  // Processing stopped with input buffered because the output towards the other side was
  // over limits.output_buffer_bytes (update_interest() schedules a pump once it is not).
  bool client_held_for_output_ = false;
  bool upstream_held_for_output_ = false;
  size_t client_need_ = 0;  // bytes the first incomplete client message needs

  pgwire::Framer client_framer_;
  pgwire::Framer upstream_framer_;  // login phase only
  std::string client_in_;
  size_t client_in_off_ = 0;
  std::string client_out_;
  size_t client_out_off_ = 0;
  std::string up_in_;
  size_t up_in_off_ = 0;
  std::string up_out_;
  size_t up_out_off_ = 0;

  // Startup.
  std::string user_;
  std::string target_;
  std::vector<std::pair<std::string, std::string>> client_params_;  // admitted settings
  std::vector<StartupSetting> client_settings_;  // as sent, checked after authentication
  std::string startup_options_error_;            // an `options` value that could not be read
  size_t client_skip_ = 0;            // bytes of an oversized client message still to discard
  size_t client_pass_remaining_ = 0;  // bytes of a streamed client message still to relay
  bool client_pass_bind_ = false;     // the streamed message is a Bind (bind_stream_)
  BindStream bind_stream_;

  uint64_t sid_ = 0;  // random session id shared with cp (hex)
  std::string sid_hex_;
  bool logged_in_ = false;
  bool authenticated_ = false;  // cp knows the session (session_end must be sent)
  int scram_step_ = 0;          // 0 none, 1 started, 2 continued, 3 server verified by cp
  CancelTarget cancel_target_;
  Grant grant_;
  GatewayKey gateway_key_;                     // the upstream's pid with the gateway's own secret
  std::shared_ptr<CancelEntry> cancel_entry_;  // gateway_key_'s target (re-pointed when pooled)
  bool cancel_registered_ = false;
  std::string scram_mechanism_;

  // Statement phase.
  bool waiting_cp_ = false;  // an escalation for the front client message is pending
  // A write-ahead record is in flight: what is already in up_out_ (the Bind before the
  // Execute that waits) is held back, up to kDeferredUpstreamCap, so that it leaves with the
  // statement it belongs to in one send instead of two.
  bool awaiting_record_ = false;
  bool upstream_output_held() const;
  // A recording-required session's next statement waits until the results of the ones before
  // it are complete (and so recorded before its own record): see hold_for_results().
  bool waiting_results_ = false;
  uint64_t escalation_seq_ = 0;
  std::optional<Decision> decision_;  // decided verdict for the front client message
  bool skip_until_sync_ = false;
  // Statements prepared by Parse messages forwarded in this session (client names; "" is the
  // unnamed statement), with the rules generation (Screen::generation()) that screened them
  // and their text while the session keeps at most kMaxParsedTextBytes of texts.
  struct ParsedStatement {
    std::string sql;
    uint64_t rules_generation = 0;
    bool text_kept = false;
    uint64_t serial = 0;  // parse_serial_ when it was prepared (BoundPortal)
    uint64_t masks_version = 0;  // masks_version_ it was decided under
  };
  std::unordered_map<std::string, ParsedStatement> parsed_statements_;
  // Statements (client names; "" is the unnamed statement) whose Parse was forwarded only by an
  // approval, and whether their one Bind was sent. A named entry is forgotten only at a Close
  // of that name (a Parse of a name in use fails upstream and leaves the approved statement in
  // place; a SQL DEALLOCATE is not trusted to have run); the unnamed one at the next Parse,
  // which replaces the unnamed statement. At most kMaxParsedStatements: an approved Parse over
  // that is refused (never an entry dropped, which would let its statement run again).
  struct ApprovedStatement {
    std::string approval_id;
    bool bound = false;
  };
  std::unordered_map<std::string, ApprovedStatement> approved_statements_;
  size_t parsed_text_bytes_ = 0;
  uint64_t parse_serial_ = 0;  // counts the Parse messages forwarded
  // Portals bound in this session (client names; "" is the unnamed portal): the Parse whose
  // statement they run (name and serial) and the rules generation their Bind passed under.
  // Forgotten at Close, and at the ReadyForQuery 'I' after their cycle (PostgreSQL drops a
  // transaction's portals at its end). At most kMaxParsedStatements: over it they are all
  // forgotten, and a later Execute of an unknown portal is then re-screened as one whose text
  // is not kept (refused after a reload).
  struct BoundPortal {
    std::string statement;
    uint64_t serial = 0;
    uint64_t rules_generation = 0;
    uint64_t cycle = 0;  // the Sync/Query cycle it was bound in
    uint64_t masks_version = 0;
  };
  // The text of the Parse `b` runs, when that Parse is still its statement's and was kept.
  bool kept_portal_text(const BoundPortal& b, std::string_view* sql) const;
  std::unordered_map<std::string, BoundPortal> portals_;
  uint64_t portals_lost_generation_ = 0;  // generation at which portals were forgotten (cap)
  // SQL cursors declared by statement texts forwarded in this session (names as
  // cursor_statements() reads them), with the DECLARE's text while at most
  // kMaxCursorTextBytes are kept, and the rules generation that screened it.
  struct DeclaredCursor {
    std::string sql;
    bool text_kept = false;
    bool with_hold = false;
    uint64_t rules_generation = 0;
    uint64_t cycle = 0;
    uint64_t masks_version = 0;
  };
  std::unordered_map<std::string, DeclaredCursor> cursors_;
  size_t cursor_text_bytes_ = 0;
  uint64_t cursors_lost_generation_ = 0;  // generation at which cursors were forgotten (cap)
  rules::LexedSql cursor_lexed_;          // scratch for note_cursors / refuse_stale_cursor
  uint64_t cycles_sent_ = 0;              // Query/Sync/FunctionCall forwarded upstream
  uint64_t cycles_received_ = 0;          // ReadyForQuery received
  std::deque<Rewrite> rewrites_;
  std::string nonce_;  // random, in every injected failing statement
  std::string nonce_sql_;
  char tx_status_ = 'I';
  // Streaming relay of upstream messages: bytes left of the message being passed through.
  size_t up_pass_remaining_ = 0;
  // kPlain: no filter involved; kFiltered: relayed and fed to the result filter (a large row
  // being recorded); kDiscard: fed to the filter, not relayed (refused or swallowed).
  enum class UpstreamPass : uint8_t { kPlain, kFiltered, kDiscard };
  UpstreamPass up_pass_ = UpstreamPass::kPlain;
  ScreenResult screen_;
  std::shared_ptr<const rules::CompiledRuleSet> rule_set_;
  uint64_t rules_generation_ = 0;
  uint64_t masks_version_ = 0;  // pick_up_masks()
  bool masks_values_ = true;
  int64_t last_client_activity_ms_ = 0;
  EventLoop::TimerId auth_timer_ = 0;
  EventLoop::TimerId startup_timer_ = 0;  // limits.startup_timeout_ms, while pending_login_
  EventLoop::TimerId idle_timer_ = 0;
  EventLoop::TimerId close_timer_ = 0;
  EventLoop::TimerId hold_timer_ = 0;  // retry of a statement held for the recorder
  // The approval request the held statement waits for (notices and reminders).
  struct ApprovalWait {
    uint64_t seq = 0;  // escalation_seq_ of the approval escalation; 0 = none in flight
    std::string id;
    std::string notice;
    int64_t since_ms = 0;  // monotonic
    int64_t reminder_ms = 0;
    int64_t deadline_unix_ms = 0;
  };
  ApprovalWait approval_wait_;
  EventLoop::TimerId reminder_timer_ = 0;
  void send_client_notice(std::string_view message);
  void arm_approval_reminder();
  void end_approval_wait();
  RecordingHold hold_;
  ExecutionLedger ledger_;  // which executions have their write-ahead record
  bool draining_ = false;
  uint64_t statements_ = 0;
  std::unique_ptr<ResultFilter> results_;  // created at login
  bool mask_plan_pending_ = false;         // upstream bytes held until the plan is known
  std::string approval_id_;                // of the decision being emitted

  // Transaction pooling (session_pool.cc).
  std::string pool_key_;                  // ServerPool key (pool_key())
  rules::LexedSql pool_lexed_;            // scratch for transaction_pooling_refusal()
  std::unique_ptr<PooledServer> server_;  // the connection held (its Stream is in upstream_)
  bool holds_slot_ = false;               // counted in the pool (held, or being opened)
  bool pool_waiting_ = false;             // queued in the pool for a connection
  bool pool_timed_out_ = false;           // the wait ended: refuse the front message (53300)
  bool relogin_ = false;                  // opening a new pooled connection after login
  // That login failed (the upstream is down or refused it): refuse the front message with
  // this ErrorResponse; the session stays (docs/operations.md, "Upstream restarts").
  std::string relogin_error_sqlstate_;
  std::string relogin_error_;
  bool local_sync_pending_ = false;  // answer the next Sync here (no connection was had)
  bool unsynced_ = false;            // extended-protocol messages forwarded since the last Sync
  bool unnamed_on_server_ = false;   // this transaction prepared the unnamed statement
  int32_t last_backend_pid_ = 0;     // recorded when a transaction lands on another backend
  EventLoop::TimerId pool_timer_ = 0;
  // The login of a new pooled connection after the session's login (relogin_) must end
  // within pool_wait_timeout_ms: a hung upstream (postmaster stopped, network black hole)
  // must not hold the statement forever, since a CancelRequest cannot reach a connection
  // that is still logging in.
  EventLoop::TimerId relogin_timer_ = 0;
  std::string login_parameter_status_;  // ParameterStatus of a pooled connection's login
  struct ClientStatement {
    std::string server_name;
    std::string parse;  // the Parse message under the server name (to re-prepare)
    bool confirmed = false;
    uint64_t rules_generation = 0;  // that screened the client's Parse (refuse_stale_prepared)
    uint64_t serial = 0;            // parse_serial_ when it was prepared (BoundPortal)
    uint64_t masks_version = 0;     // masks_version_ it was decided under
  };
  std::unordered_map<std::string, ClientStatement> prepared_;  // by client name
  struct InFlight {
    std::string server_name;
    std::string client_name;  // empty for a Parse or Close the gateway added
    uint64_t cycle = 0;
    bool swallow = false;
  };
  std::deque<InFlight> parses_in_flight_;  // ParseComplete to come, in order
  std::deque<InFlight> closes_in_flight_;  // CloseComplete to come, in order
};

}  // namespace pgwarden::session
