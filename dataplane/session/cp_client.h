// CpClient: the dataplane side of the dp <-> cp escalation protocol v1 (docs/protocol.md), one
// connection per worker, asynchronous inside the worker's EventLoop. Not thread-safe: every
// call happens on the loop thread.
//
// Frames are a 4-byte big-endian length (1..1 MiB) followed by a JSON object. Requests carry
// an id and an absolute deadline; responses may come in any order. The client reconnects with
// exponential backoff; while it is not connected (or before the hello exchange finished),
// requests fail at once with Unavailable (08006): the dataplane fails closed — unless the
// caller gives a `wait_for_cp_ms` budget: such a request waits (queued in call order) for
// the connection to come back, is sent right after the reconnection's on_ready_change(true)
// callback (which re-registers the live sessions) and fails with Unavailable when the budget
// runs out first. A request with a budget (other than `approval`) that is in flight when the
// connection drops is sent again on the next connection within the same budget (analyse and
// mask_plan may thus reach cp twice around a restart; never zero times). A write-ahead
// `record` is not sent again blindly, with or without the ring: see uncertain_ahead().
//
// Event ring (docs/protocol.md, "Event ring"): at each connection the client creates a shared
// memory RingRegion and two eventfds and hands them to cp with the hello (SCM_RIGHTS). When cp
// answers the hello with "ring": true, events (post(), event(), event_text()) and write-ahead
// records (record()) travel as binary records on the ring, published once per loop
// iteration; a record is answered through cp's "written up to N" watermark in the shared
// memory (refusals on the backward ring), so no frame crosses the socket for it. Otherwise
// (an older cp, or the ring could not be set up) the same calls fall back to JSON frames.
//
// Undelivered events: events made while there is no connection, and those a closing
// connection's cp did not take from the ring, are kept (up to 8 MiB per client; beyond that
// they are counted per session, take_lost(), and the session's reregister reports them so cp
// writes a recording_gap) and posted on the next connection right after the
// re-registrations, in order. A write-ahead record in flight when a connection closes is
// neither answered nor sent again until its session's reregister asked cp whether it was
// written (uncertain_ahead(), resolve_ahead()): a channel break or a cp restart records each
// statement exactly once.
//
// Re-registration before records: the requests made from inside on_ready_change(true) (the
// dataplane's `reregister` of each live session after a reconnection) are the connection's
// registration. Until cp has answered every one of them (or it timed out), nothing is written
// to the ring: events and write-ahead records made meanwhile wait in order (in the overflow)
// and go out once the last answer is in. cp handles a reregister before it answers it, so it
// never reads a record of a session it has not re-admitted yet; requests (JSON frames) need no
// such wait, as cp handles the frames of a connection in order. A connection without
// re-registrations (the first one) is never held.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "common/protocol/event_record.h"
#include "common/protocol/event_ring.h"
#include "common/status.h"
#include "dataplane/session/event_loop.h"

namespace pgwarden::session {

class CpClient : public IoHandler {
 public:
  // Called exactly once per request, on the loop thread, never from inside request().
  using Callback = std::function<void(Result<nlohmann::json>)>;

  static constexpr size_t kMaxFrame = 1 << 20;
  static constexpr int64_t kEventDelayMs = 2;
  static constexpr size_t kEventBatchBytes = 64 << 10;
  // A reregister's `ahead` carries the record itself up to this size (hex: twice that).
  static constexpr size_t kMaxAheadPayload = 256 << 10;

  // `use_ring`: offer the event ring at each connection (tests turn it off to exercise the
  // JSON fallback).
  CpClient(EventLoop* loop, std::string socket_path, bool use_ring = true);
  ~CpClient() override;
  CpClient(const CpClient&) = delete;
  CpClient& operator=(const CpClient&) = delete;

  // Starts connecting (and keeps reconnecting with backoff until stop()).
  void start();
  // Writes what is queued (as far as the socket takes it without blocking), then disconnects.
  void stop();

  // True once the hello exchange succeeded on the current connection.
  bool ready() const { return ready_; }
  // How many connections became ready so far (the current one's number while ready()).
  uint64_t connections_ready() const { return connections_ready_; }
  uint64_t policy_version() const { return policy_version_; }

  // Sends `type` with `fields` (id and deadline_ms are added). `timeout_ms` is relative; the
  // callback gets DeadlineExceeded if no answer arrives by then (plus a small grace).
  void request(const std::string& type, nlohmann::json fields, int64_t timeout_ms, Callback cb,
               int64_t wait_for_cp_ms = 0);
  // Fire-and-forget event (`type: event`); kept for the next connection when not connected
  // (see "Undelivered events").
  // Events are coalesced: they are written with the next request, when kEventBatchBytes are
  // queued, or kEventDelayMs after the first of them, whichever comes first (and on stop()),
  // so cp is woken once per batch rather than once per statement. Order on the socket is the
  // order of the calls, requests and events alike.
  void event(nlohmann::json fields);
  // The same with the frame body already serialized (a JSON object that includes
  // "type":"event"): the per-statement path avoids building a json tree.
  void event_text(std::string body);

  // A fire-and-forget binary record of `session` (0: dataplane-wide). Ordered with the other
  // events and records of this client; kept when not connected (see "Undelivered events"),
  // dropped (and counted) when more than the outbound cap is waiting for ring space.
  void post(protocol::RecordType type, uint64_t session, std::string_view payload);
  // A write-ahead statement record (payload: protocol::StatementFields) of `session`: `cb` gets
  // ok once cp's recorder wrote it, or cp's refusal (53000 hold, 53100/58030 write error, ...),
  // with the same timeout and wait_for_cp_ms semantics as request("record", ...).
  void record(uint64_t session, std::string payload, int64_t timeout_ms, Callback cb,
              int64_t wait_for_cp_ms = 0);
  // True while the current connection carries events on the shared-memory ring.
  bool ring_active() const { return ring_ != nullptr; }
  // The read end of a pipe whose write end this process holds until it exits. It rides with
  // the ring's descriptors on every hello ("life"): cp sees it hang up exactly when the
  // dataplane process is gone, also when cp cannot see the dp's pid (another pid namespace).
  static int process_life_fd();

  uint64_t events_dropped() const { return events_dropped_; }
  // Events of `session` this client could not deliver since the last call (not connected,
  // outbound caps, or left on the ring/overflow of a connection that closed before cp took
  // them), as the reregister's `lost` object {records, kinds: {kind: n}, first_ts, last_ts}
  // (unix ms; docs/protocol.md "reregister"); null when none. Clears the session's count.
  nlohmann::json take_lost(uint64_t session);
  // The session's write-ahead record that was in flight when the last connection closed
  // (cp may or may not have written it), as the reregister's `ahead` object {seq (on the
  // closed connection's ring; without a ring, the `record` request's id), ts_ms, source,
  // sql_sha256, payload_hex (the encoded record, up to kMaxAheadPayload)}; null when none. It is
  // neither sent again nor answered until resolve_ahead() (docs/protocol.md "reregister"), so that
  // a channel break or a cp restart records it exactly once.
  nlohmann::json uncertain_ahead(uint64_t session) const;
  // The reregister of `session` was answered: its `ahead` answer ({"seq", "state": "written" |
  // "refused" (with "error") | "unknown"}) completes the record in flight — written: answered
  // ok; refused: answered with the error; unknown or absent: sent again. A failed reregister
  // (`answer` not ok): Unavailable keeps it for the next connection, anything else fails it.
  void resolve_ahead(uint64_t session, const Result<nlohmann::json>& answer);
  // Puts back what take_lost() returned (its reregister did not reach cp).
  void restore_lost(uint64_t session, const nlohmann::json& lost);
  // Forgets the session's count (it ended).
  void forget_lost(uint64_t session) { lost_.erase(session); }
  uint64_t ring_records() const { return ring_records_; }
  uint64_t ring_consumer_wakes() const { return ring_consumer_wakes_; }
  // Called on the loop thread whenever ready() changes.
  void set_on_ready_change(std::function<void(bool)> fn) { on_ready_change_ = std::move(fn); }
  // Called on the loop thread with every frame cp sends unasked (no id: `type: event`, e.g.
  // kinds `kill` and `rules`), in order.
  void set_on_event(std::function<void(nlohmann::json)> fn) { on_event_ = std::move(fn); }
  size_t waiting_requests() const { return waiting_.size(); }
  // Liveness of a connected cp (a hung process, e.g. SIGSTOP, keeps its socket open): the
  // client sends a `ping` request after half of `ms` (limits.cp_unavailable_wait_ms; at least
  // 100 ms, at most kPingIntervalMs) without a byte from cp, and when cp then sends nothing (no
  // frame, no ring wake-up) for the rest of `ms` (at least kMinReplyWaitMs) it closes the
  // connection as if cp had gone: requests and records in flight then follow the reconnection
  // rules (wait budgets, uncertain_ahead()), an approval fails at once. A silent cp is thus
  // dropped after max(ms, about 1.1 s). 0: never.
  void set_silence_limit_ms(int64_t ms) { silence_limit_ms_ = ms; }
  // Connections closed because cp answered nothing for the silence limit.
  uint64_t silent_disconnects() const { return silent_disconnects_; }
  static constexpr int64_t kPingIntervalMs = 1000;
  static constexpr int64_t kMinReplyWaitMs = 1000;

  void on_io(int fd, uint32_t events) override;

 private:
  // The shared-memory event path of one connection.
  struct Ring {
    protocol::RingRegion region;
    int cp_wake_fd = -1;  // dp writes: records published while cp was parked
    int dp_wake_fd = -1;  // cp writes: the watermark passed dp_wants
    bool registered = false;
    uint64_t next_seq = 1;
    ~Ring();
  };
  struct RingPending {
    uint64_t session = 0;
    std::string payload;
    Callback cb;
    EventLoop::TimerId timer = 0;
    int64_t timeout_ms = 0;
    int64_t wait_until_ms = 0;
  };
  // A record waiting for ring space (kept in order with everything posted after it).
  struct Overflow {
    protocol::RecordType type;
    uint64_t session = 0;
    uint64_t seq = 0;
    std::string payload;
  };
  // Wakes the client when cp advanced the watermark (the dp_wake eventfd).
  struct WakeHandler : IoHandler {
    CpClient* client = nullptr;
    void on_io(int fd, uint32_t events) override;
  };
  std::unique_ptr<Ring> make_ring();
  void drop_ring();
  bool ring_write(protocol::RecordType type, uint64_t session, uint64_t seq,
                  std::string_view payload);
  void drain_overflow();
  void schedule_publish();
  void publish_ring();
  // Resolves the write-ahead records the watermark passed (refusals from the backward ring).
  void check_acks();
  void fail_ring_pending(const std::string& why);
  // Request `id` was answered (or timed out): when it was the last re-registration in flight,
  // the held ring records go out.
  void registration_answered(uint64_t id);
  // JSON fallback of post() / record().
  void post_json(protocol::RecordType type, uint64_t session, std::string_view payload);
  // Counts one event that will not reach cp: in events_dropped() and, for a session's event,
  // in what take_lost() reports for it. `ts_ms` 0: now.
  void count_lost(uint64_t session, std::string_view kind, int64_t ts_ms = 0);
  // The same for a record of the ring / overflow (the kind and session read from it).
  void count_lost_record(protocol::RecordType type, uint64_t session, std::string_view payload);
  // An event that cannot go out now (no connection, or left on the ring of one that closed):
  // kept, up to kMaxUndeliveredBytes (beyond: counted lost), for the next connection.
  void keep_undelivered(protocol::RecordType type, uint64_t session, std::string payload);
  // At a disconnection: keeps what cp did not take of the forward ring (published or not;
  // write-ahead records excepted: they are sent again or asked about).
  void keep_ring_leftovers();
  // On a new connection, after the re-registrations: posts the kept events, in order.
  void deliver_undelivered();
  struct Pending {
    Callback cb;
    EventLoop::TimerId timer = 0;
    // For a request sent again after a reconnection (wait budget given, not an approval).
    std::string type;
    nlohmann::json fields;
    int64_t timeout_ms = 0;
    int64_t wait_until_ms = 0;  // monotonic; 0: fails when the connection drops
    // A write-ahead record sent as a JSON request (no ring): not sent again blindly after a
    // reconnection but asked about, as a ring record is (hold_uncertain()).
    uint64_t record_session = 0;
    std::string record_payload;
  };
  // A request waiting for the connection (see request()).
  struct Waiting {
    uint64_t key = 0;
    std::string type;
    nlohmann::json fields;
    int64_t timeout_ms = 0;
    int64_t wait_until_ms = 0;
    Callback cb;
    EventLoop::TimerId timer = 0;
    // A write-ahead record (record()): sent again through record() with these.
    bool is_record = false;
    uint64_t session = 0;
    std::string payload;
  };
  // Parks `w` until the connection is back (send_waiting()) or its wait_until_ms passes.
  void enqueue_waiting(Waiting w);
  static Waiting waiting_record(uint64_t session, std::string payload, int64_t timeout_ms,
                                int64_t wait_until_ms, Callback cb);
  void send_waiting();
  // A write-ahead record of w.session that was in flight (ring seq or request id `seq`) when
  // the connection closed: held until the session's reregister says whether cp wrote it, or
  // until its wait budget runs out. False (nothing taken) when the session holds one already.
  bool hold_uncertain(uint64_t seq, Waiting& w);

  void connect_now();
  void schedule_reconnect();
  // `peer_closed`: cp closed the connection (or died); what it did not take of the ring is
  // then kept for the next connection. Otherwise (the dp closes it: stop(), a protocol error
  // of cp) everything written is published for cp to drain when it sees the close.
  void disconnect(const std::string& why, bool peer_closed = false);
  void send_frame(const nlohmann::json& frame, bool is_event);
  // Queues one frame. Requests are written after the current dispatch batch (schedule_flush);
  // events may wait for more (see event()).
  void send_body(const std::string& body, bool is_event);
  // Frames are written once per loop iteration, not one syscall each.
  void schedule_flush();
  void cancel_event_timer();
  void flush();
  void read_frames();
  void handle_frame(nlohmann::json frame);
  void update_interest();
  void fail_later(Callback cb, Status st);
  // Bytes (or a ring wake-up) from cp: it is alive.
  void heard_from_cp();
  // The liveness timer (set_silence_limit_ms): pings a quiet cp, drops a silent one.
  void arm_liveness();
  void check_liveness();
  int64_t ping_after_ms() const;
  int64_t reply_wait_ms() const;

  EventLoop* loop_;
  std::string socket_path_;
  int fd_ = -1;
  bool connecting_ = false;
  bool ready_ = false;
  bool stopped_ = false;
  uint64_t hello_id_ = 0;
  uint64_t next_id_ = 1;
  uint64_t policy_version_ = 0;
  int64_t backoff_ms_ = 100;
  EventLoop::TimerId reconnect_timer_ = 0;
  uint32_t interest_ = 0;
  std::string in_;
  std::string out_;
  size_t out_off_ = 0;
  std::map<uint64_t, Pending> pending_;
  uint64_t events_dropped_ = 0;
  struct Lost {
    uint64_t records = 0;
    std::map<std::string, uint64_t> kinds;
    int64_t first_ts = 0;
    int64_t last_ts = 0;
  };
  std::map<uint64_t, Lost> lost_;     // by session
  std::deque<Overflow> undelivered_;  // see keep_undelivered()
  size_t undelivered_bytes_ = 0;
  uint64_t connections_ready_ = 0;
  // Write-ahead records in flight when a connection closed, by session (see
  // uncertain_ahead()); `seq` is the record's seq on that connection's ring (its request id
  // in the JSON fallback).
  struct Uncertain {
    uint64_t seq = 0;
    Waiting record;
  };
  std::map<uint64_t, Uncertain> uncertain_;
  std::function<void(bool)> on_ready_change_;
  std::function<void(nlohmann::json)> on_event_;
  std::map<uint64_t, Waiting> waiting_;  // by key, in call order
  uint64_t next_waiting_key_ = 1;
  bool flush_scheduled_ = false;
  EventLoop::TimerId event_timer_ = 0;  // pending delayed flush of queued events
  bool use_ring_ = true;
  std::unique_ptr<Ring> offered_ring_;  // sent with the hello, not yet accepted
  bool fds_sent_ = false;
  std::unique_ptr<Ring> ring_;
  WakeHandler wake_handler_;
  std::map<uint64_t, RingPending> ring_pending_;  // by seq
  std::map<uint64_t, nlohmann::json> refused_;    // backward-ring refusals not yet covered
  std::deque<Overflow> overflow_;
  size_t overflow_bytes_ = 0;
  EventLoop::TimerId overflow_timer_ = 0;
  bool publish_scheduled_ = false;
  // Re-registrations of the current connection not answered yet (ids), and whether the ring
  // waits for them; in_ready_callback_ marks the requests that are re-registrations.
  std::set<uint64_t> registration_;
  bool ring_held_ = false;
  bool in_ready_callback_ = false;
  uint64_t ring_records_ = 0;
  uint64_t ring_consumer_wakes_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  int64_t silence_limit_ms_ = 0;
  int64_t last_heard_ms_ = 0;  // monotonic
  uint64_t ping_id_ = 0;       // the ping in flight (0: none)
  int64_t ping_sent_ms_ = 0;   // monotonic
  EventLoop::TimerId liveness_timer_ = 0;
  uint64_t silent_disconnects_ = 0;
};

// Maps a cp error object {sqlstate, code, message} to a Status carrying the SQLSTATE.
Status status_from_cp_error(const nlohmann::json& error);

}  // namespace pgwarden::session
