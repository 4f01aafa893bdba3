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
// unknown_session) and dropped when that connection closes. A session keeps the config
// snapshot it was admitted under, so a reload applies to new sessions only. When a session
// ends (session_end event or its dp connection closing) its pending approvals are abandoned
// and its recording is closed.
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
// Thread-safety: start/stop from one thread; reload() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/status.h"
#include "controlplane/approvals/approval_store.h"
#include "controlplane/audit/audit_log.h"
#include "controlplane/config/config.h"
#include "controlplane/protocol/frame.h"
#include "controlplane/protocol/messages.h"
#include "controlplane/recording/recorder.h"
#include "controlplane/server/dataplane_registry.h"
#include "controlplane/server/interfaces.h"
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
  X(approvals_requested)      \
  X(approvals_standing_grant) \
  X(reloads_applied)          \
  X(reloads_rejected)

enum class Counter {
#define PGW_X(name) k_##name,
  PGW_CP_COUNTERS(PGW_X)
#undef PGW_X
      kCount
};

class EscalationServer {
 public:
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
  config::LoadOutcome reload();

  size_t session_count() const;
  // The latest dataplane_stats snapshot of every dataplane (admin API: `dataplane`).
  const DataplaneRegistry& dataplanes() const { return dataplanes_; }
  uint64_t counter(Counter c) const { return counters_[static_cast<int>(c)].load(); }

 private:
  struct Connection;
  struct Session;

  void loop();
  void accept_all();
  void on_readable(const std::shared_ptr<Connection>& conn);
  void on_writable(const std::shared_ptr<Connection>& conn);
  void close_connection(const std::shared_ptr<Connection>& conn);
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
  // The answer, or null when it is sent later, once the Recorder has written the record.
  protocol::json handle_record(const std::shared_ptr<Connection>& conn, protocol::json request,
                               uint64_t id);
  // The audit record of a dp event; none for `rows` (result rows never reach the audit log).
  std::optional<audit::AuditRecord> audit_record_of(const std::shared_ptr<Session>& session,
                                                    const protocol::Event& event);
  // A session marked behind: records its recording_gap. Ok when not behind (or no recorder).
  Status catch_up_recording(const std::shared_ptr<Session>& session);
  // A record the Recorder could not write (the statement is not run): counted and audited as
  // decision "refused", rule cp.recording_failed. Any thread.
  void recording_refused(const std::shared_ptr<Session>& session, const Status& why,
                         const std::string& sql);
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
  void bump(Counter c) { counters_[static_cast<int>(c)].fetch_add(1); }

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
  std::thread loop_thread_;
  std::unique_ptr<WorkerPool> pool_;

  mutable std::mutex conns_mu_;
  std::map<int, std::shared_ptr<Connection>> conns_;  // by fd
  uint64_t next_conn_id_ = 1;

  mutable std::mutex sessions_mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;

  DataplaneRegistry dataplanes_;

  std::atomic<uint64_t> counters_[static_cast<int>(Counter::kCount)] = {};
};

}  // namespace pgwarden::server
