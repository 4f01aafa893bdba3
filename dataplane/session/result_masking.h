// ResultFilter: the session's upstream -> client result path for masking and recording.
//
// Masking. Every result set is announced by a RowDescription ('T'); the filter looks up the
// mask plan for it (per-worker-thread cache keyed by hash(RowDescription bytes) + policy hash
// + policy version; a miss returns kNeedPlan and the session asks cp `mask_plan`, holding all
// upstream -> client bytes of the session until the answer is in). DataRows are rewritten by
// masking::RowMasker (text and binary formats; detect columns use the session rule set's
// detect rules). An empty plan costs nothing per row: DataRows stream through unparsed.
//
// Extended protocol: a DataRow reply to Execute carries no RowDescription of its own, and the
// client may have described the portal earlier (or never). The filter therefore injects a
// Describe(portal) in front of every Execute it forwards (before_execute()); the upstream's
// RowDescription/NoData reply to that injected Describe is consumed here (the client never
// sees it) and selects the plan for the rows that follow. Describe replies are matched to
// Describe messages in order within a Sync cycle; the queue of a cycle is dropped at its
// ReadyForQuery (after an error the upstream skips to Sync and sends no more replies).
//
// COPY TO STDOUT (CopyOutResponse carries no table OIDs). The filter remembers the SQL of
// every forwarded Query / prepared statement that mentions COPY (case-insensitive), and which
// Execute of its cycle ran it. At a CopyOutResponse it asks cp `mask_plan` with the `copy`
// variant {sql, index (the n-th CopyOutResponse of a simple Query), format, columns}; cp plans
// the table's columns with the RowDescription rules (controlplane/server/copy_planner.h) and
// answers the plan plus the COPY options (cached per worker thread like RowDescription plans,
// keyed by SQL + index + CopyOutResponse + policy). CopyData rows are then rewritten by
// masking::RowMasker::mask_copy_line (text or CSV; a HEADER line passes through); for
// `COPY (query)` cp sends no column masks and `line_detect`: each whole line is scanned by the
// detector and every detected byte becomes '*' (line structure intact). cp refuses (42501)
// binary COPY of masked columns, COPY (query) using masked columns and unsupported options;
// the dp relays that error. A CopyOutResponse whose statement is not known (or a cycle mixing a
// simple Query with Executes that may COPY) is refused. Binary COPY OUT that would need the
// detector is refused (42501).
//
// Fail closed: a DataRow/CopyData with no plan known, a mask_plan error, a malformed row, or a
// row over the inspection limit produces an ErrorResponse to the client, and every further
// message of that request cycle (but NoticeResponse/ParameterStatus/Notification) is
// swallowed up to ReadyForQuery, so the client stays in protocol sync and never sees an
// unmasked value. Inside a transaction the session then fails the upstream transaction too
// (take_refusal()), so a later COMMIT cannot commit work the client saw fail.
//
// Large messages: the session hands a DataRow or CopyData whole only up to whole_limit() (rows
// the plan masks or scans: kMaxMaskedRowBytes; anything else: kStreamRowsAbove). A larger one
// streams (begin_large / large_chunk / end_large): unmasked rows and COPY lines pass to the
// client chunk by chunk while the recording keeps each value's prefix, length and SHA-256
// (large_values.h); a row that needs masking is rebuilt as it arrives with the values of its
// redact/null columns (whose masked form does not depend on the value) replaced by a
// placeholder, and masked whole if the rest fits kMaxMaskedRowBytes; otherwise (and for COPY
// lines that need masking or scanning) it is discarded as it arrives and refused with ERROR
// 54000 naming the column and the limit (the rest of the cycle is swallowed
// as for any refusal), so the protocol stays in step and memory stays bounded.
//
// Recording: statements are tracked as units (a simple Query, or one Execute of an extended
// cycle); the filter collects the rows as the client saw them (masked) up to the row cap and
// emits `rows` records (protocol::RecordType::kRows, the values as the client saw them, as
// bytes) in batches of kRowsPerEvent, then a completion record per unit (kStatementEnd: sql,
// verdict, rule, approval_id, duration_ms, rows, rows_recorded, executed, error sqlstate and
// message) through the EventSink; cp turns them into the recording's JSON. The decision event
// (kind `statement`, no phase) is sent by the session when the statement is checked, so the
// order per statement is statement -> rows... -> statement(phase end).
//
// Thread-safety: one filter per session, used on the session's worker thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/protocol/event_record.h"
#include "common/protocol/grant_types.h"
#include "common/status.h"
#include "dataplane/masking/mask_apply.h"
#include "dataplane/pgwire/framer.h"
#include "dataplane/session/large_values.h"
#include "rules/matcher.h"

namespace pgwarden::session {

inline constexpr size_t kRowsPerEvent = 100;
inline constexpr int kDefaultRecordingRowCap = 1000;
// Rows/COPY lines that must be masked or scanned are buffered whole up to this size.
inline constexpr uint32_t kMaxMaskedRowBytes = 16u << 20;
// Rows/COPY lines that need no masking are handed whole only up to this size, else streamed.
inline constexpr uint32_t kStreamRowsAbove = 256u << 10;
// Any other upstream message is inspected whole up to this size.
inline constexpr uint32_t kMaxInspectedMessageBytes = 16u << 20;

struct ResultFilterConfig {
  uint64_t policy_hash = 0;
  uint64_t policy_version = 0;
  protocol::RecordingLevel recording = protocol::RecordingLevel::kFull;
  int row_cap = kDefaultRecordingRowCap;
  // Emit completion records (kStatementEnd) even when recording is off: the session's
  // identity has budgets, which cp accounts from them (docs/budgets.md).
  bool account = false;
  // The session's policy masks values: the DETAIL of integrity-constraint errors is replaced
  // and error, notice and notification texts go through the detectors
  // (masking/error_redaction.h); a notice or notification too large to inspect is dropped.
  bool masks_values = false;
};

class ResultFilter {
 public:
  // Receives binary event records (kRows, kStatementEnd; common/protocol/event_record.h).
  using EventSink = std::function<void(protocol::RecordType type, std::string_view payload)>;
  enum class Action {
    kForward,   // append the message unchanged to the client output
    kConsumed,  // the filter appended whatever the client gets (maybe nothing)
    kNeedPlan,  // hold: request a plan for plan_request() and call again after set_plan*()
  };

  ResultFilter(ResultFilterConfig config, EventSink sink);
  ~ResultFilter();

  void set_rule_set(std::shared_ptr<const rules::CompiledRuleSet> set);
  // The session's masks changed (a reload): plans are keyed by `policy_version` from now on,
  // and error texts are redacted when `masks_values`.
  void set_masks(uint64_t policy_version, bool masks_values);

  // --- Client side (called as messages are forwarded upstream; `cycle` = the ReadyForQuery
  // count that will end the message's cycle).
  // The statement decision just emitted (remembered for the next forwarded Query/Parse).
  void note_decision(std::string_view verdict, std::string_view rule, std::string_view approval_id);
  void on_query_forwarded(std::string_view sql, uint64_t cycle, int64_t now_ms);
  void on_parse_forwarded(std::string_view name, std::string_view sql);
  void on_bind_forwarded(std::string_view portal, std::string_view statement);
  void on_describe_forwarded(uint64_t cycle);
  // Statements forwarded whose results are not complete yet (recorded sessions).
  bool results_pending() const { return !units_.empty(); }
  // The upstream connection was lost (closed or reset by the server: a crash, a restart,
  // pg_terminate_backend) with statements in flight: each gets its completion record now,
  // with `sqlstate` and `message` as its error (unless it already had one), so that no
  // recording shows a statement cut by the loss as completed. Rows received before the loss
  // are recorded first, as usual.
  void end_units_on_upstream_loss(std::string_view sqlstate, std::string_view message,
                                  int64_t now_ms);
  // Appends Describe(portal) to `up_out` (to be followed by the Execute itself).
  void before_execute(std::string_view portal, uint64_t cycle, int64_t now_ms, std::string& up_out);

  // --- Upstream side.
  // True when the message must be handed whole to on_message(); false = stream it through.
  bool needs_whole(uint8_t type) const;
  // `whole`: type byte, length, body. `cycles_received`: ReadyForQuery count so far (before
  // this message). Appends the client's bytes to `out` unless the answer is kForward.
  Action on_message(uint8_t type, std::string_view whole, uint64_t cycles_received, int64_t now_ms,
                    std::string& out);
  // The largest message (type byte, length, body) of `type` the session hands whole to
  // on_message(); a larger one streams through begin_large().
  uint32_t whole_limit(uint8_t type) const;
  // A message too large to hand whole: kPass = relay its bytes to the client (header first,
  // the session appends it), kDiscard = drop them. Every body byte goes through large_chunk(),
  // then end_large() (which may append an ErrorResponse to `out`).
  enum class Large { kPass, kDiscard };
  Large begin_large(uint8_t type, uint32_t length, uint64_t cycles_received, std::string& out);
  // `out`: the client's bytes the filter writes itself (a masked row it rebuilt).
  void large_chunk(std::string_view chunk, std::string& out);
  void end_large(std::string& out);

  // After kNeedPlan: the cp `mask_plan` request body but session_id ({"fields": [...]} or
  // {"copy": {...}}) and the cache key.
  const nlohmann::json& plan_request() const { return pending_request_; }
  uint64_t pending_key() const { return pending_key_; }
  // The cp answer for pending_key() ({"plan": {...}[, "copy": {...}]} or the plan itself) /
  // its failure (a 42501 status is relayed to the client as is: cp refused a COPY).
  void set_plan_answer(uint64_t key, const nlohmann::json& answer);
  void set_plan_error(uint64_t key, const Status& status);

  // An upstream ErrorResponse (type byte, length, body) the session relays: appends it to
  // `out` as the client may see it (config masks_values: class-23 DETAIL replaced, detectors
  // over its texts; masking/error_redaction.h). Called after the session's own checks of the
  // raw message (its nonce statement's error is never relayed).
  void append_error(std::string_view whole, std::string& out);

  // True from a refusal up to the cycle's ReadyForQuery: the rest of the cycle is swallowed.
  bool swallowing() const { return swallow_; }
  // True (once) when the filter refused a result since the last call: the client got a
  // dp-generated ErrorResponse the upstream knows nothing of. The session calls it at each
  // ReadyForQuery and, inside a transaction, makes the upstream transaction fail too.
  bool take_refusal() { return std::exchange(refused_, false); }
  uint64_t rows_masked() const { return rows_masked_; }
  // A DataRow or CopyData of `bytes` (type byte and length included) left the upstream: added
  // to the result_bytes of the next completion record (whether the message was filtered,
  // streamed or passed through).
  void note_result_bytes(uint64_t bytes) { pending_result_bytes_ += bytes; }
  // The SQL of the statement bound to `portal` ("" when unknown: units are not tracked).
  std::string_view portal_sql(std::string_view portal) const;

 private:
  struct Unit {
    uint64_t cycle = 0;
    std::string sql;
    std::string verdict;
    std::string rule;
    std::string approval_id;
    int64_t started_ms = 0;
    uint64_t rows = 0;
    std::string sqlstate;
    std::string error;
    protocol::RowsWriter batch;  // recorded rows not yet sent (with the current columns)
    size_t batch_bytes = 0;      // value bytes in `batch`
    int recorded = 0;
    bool executed = false;
    bool simple = false;  // a simple Query (ends at ReadyForQuery) vs one Execute
  };
  struct StatementInfo {
    std::string sql;
    std::string verdict;
    std::string rule;
    std::string approval_id;
  };
  struct DescribeWait {
    uint64_t cycle = 0;
    bool injected = false;
  };
  // A forwarded statement that may start a COPY TO STDOUT.
  struct CopySource {
    uint64_t cycle = 0;
    bool simple = false;   // a simple Query (any number of statements)
    uint64_t execute = 0;  // else: the Execute's ordinal within its cycle
    std::string sql;
  };
  // cp's plan for one COPY TO STDOUT.
  struct CopyPlan {
    masking::RowMaskPlan plan;
    masking::CopyFormat format;
    bool header = false;
    bool line_detect = false;
  };

  Action on_row_description(std::string_view whole, bool injected, std::string& out);
  // `plan`, or (when the session has no detect rules) a copy in `*scratch` whose `detect`
  // columns pass unchanged. The result is valid while both arguments are.
  const masking::RowMaskPlan& effective_plan(const masking::RowMaskPlan& plan,
                                             masking::RowMaskPlan* scratch) const;
  Action on_data_row(std::string_view whole, std::string& out);
  Action on_copy_out(std::string_view whole, std::string& out);
  Action on_copy_data(std::string_view whole, std::string& out);
  // ErrorResponse / NoticeResponse / NotificationResponse when the policy masks values:
  // kConsumed after appending the rewritten (or, malformed, replacing or nothing) message.
  Action redact_text_message(uint8_t type, std::string_view whole, std::string& out);
  // The statement that produced the current CopyOutResponse, or nullptr when unknown.
  const CopySource* copy_source(uint64_t* index) const;
  Action start_copy(const CopyPlan& plan, bool binary, std::string& out);
  // Per worker thread, like the RowDescription plan cache (bounded, cleared when full).
  using CopyPlanCache = std::unordered_map<uint64_t, std::shared_ptr<const CopyPlan>>;
  static CopyPlanCache& copy_plan_cache();
  void set_copy_answer(uint64_t key, const nlohmann::json& answer);
  // The large row split (RowReducer::split): masks the columns before the split, appends the
  // rebuilt row's header and head to `out`. False when that failed (the row is refused).
  bool start_split(std::string& out);
  void start_swallow(std::string_view sqlstate, std::string_view message, std::string& out);
  void record_row(std::string_view body);
  // Adds one recorded row to the unit's batch (flushed by count and by size).
  // A recorded row rendered here (long values summarised), then counted against the batch.
  void add_recorded_row(Unit& u, const nlohmann::json& values, size_t bytes);
  void note_recorded_row(Unit& u, size_t bytes);
  // Enters the cycle of an upstream message (drops state of earlier cycles).
  void enter_cycle(uint64_t cycles_received);
  void flush_rows(Unit& u);
  void end_unit(Unit& u, int64_t now_ms);
  // Ends `u` when it is an Execute's unit (extended protocol), executed.
  void end_extended_unit(Unit& u, int64_t now_ms);
  Unit* front_unit(uint64_t cycle);
  bool record_rows() const { return config_.recording == protocol::RecordingLevel::kFull; }
  bool record_any() const { return config_.recording != protocol::RecordingLevel::kOff; }
  // Units (and their completion records) are kept when recording or accounting needs them.
  bool track_units() const { return record_any() || config_.account; }
  // Values masking changed since the last completion record (RowMasker::values_masked
  // deltas, plus one per COPY line the detectors masked).
  void note_masked(uint64_t before);

  ResultFilterConfig config_;
  EventSink sink_;
  std::shared_ptr<const rules::CompiledRuleSet> rule_set_;
  masking::Detector detector_;
  bool has_detect_ = false;

  std::deque<DescribeWait> describes_;
  std::unordered_map<std::string, StatementInfo> statements_;  // prepared name -> info
  std::unordered_map<std::string, StatementInfo> portals_;     // portal name -> info
  StatementInfo last_decision_;
  std::deque<Unit> units_;

  // Current result set.
  bool have_plan_ = false;  // a RowDescription (or NoData) selected the plan below
  std::unique_ptr<masking::RowMasker> masker_;  // null = empty plan
  std::vector<int16_t> formats_;                // result column formats (for recording)
  std::vector<std::string> column_names_;       // of the current RowDescription

  // The large message being streamed (begin_large .. end_large).
  uint8_t large_type_ = 0;
  uint64_t large_length_ = 0;
  bool large_record_ = false;  // its values go to the recording
  bool large_refuse_ = false;  // refused at its end (it needed masking or scanning)
  ValueListStream large_row_;
  bool large_reduce_ = false;  // masked from large_reduced_ at its end, if that fits
  RowReducer large_reduced_;
  uint64_t large_consumed_ = 0;    // body bytes fed to large_reduced_ before a split
  bool large_split_ = false;       // masked head sent; the rest streams unchanged
  ValueListStream large_out_row_;  // the row as the client gets it (recording after a split)
  ValueRecorder large_line_;
  ValueListStream row_values_;  // renders whole rows for the recording
  bool copy_out_ = false;
  bool copy_header_pending_ = false;  // the next CopyData is the HEADER line
  bool copy_line_detect_ = false;     // COPY (query): run the detector over whole lines
  masking::CopyFormat copy_format_;
  bool swallow_ = false;
  bool refused_ = false;  // see take_refusal()
  uint64_t cycle_now_ = 0;

  // COPY statement tracking (client side: forwarded SQL; upstream side: position in cycle).
  std::deque<CopySource> copy_sources_;
  std::unordered_map<std::string, std::string> copy_statements_;  // prepared name -> COPY SQL
  std::unordered_map<std::string, std::string> copy_portals_;     // portal -> COPY SQL
  uint64_t exec_cycle_ = 0;          // client side: cycle of exec_count_
  uint64_t exec_count_ = 0;          // Executes forwarded in exec_cycle_
  uint64_t count_cycle_ = 0;         // upstream side: cycle of the two counts below
  uint64_t done_in_cycle_ = 0;       // Executes completed (C/I/s) in count_cycle_
  uint64_t copy_outs_in_cycle_ = 0;  // CopyOutResponses in count_cycle_

  nlohmann::json pending_request_;
  uint64_t pending_key_ = 0;
  bool pending_copy_ = false;
  uint64_t failed_key_ = 0;
  bool failed_ = false;
  Status failed_status_;
  std::string scratch_;
  std::string end_record_;  // the completion record being encoded (end_unit)
  std::vector<masking::DetectSpan> spans_;
  uint64_t rows_masked_ = 0;
  uint64_t pending_result_bytes_ = 0;
  uint64_t pending_masked_cells_ = 0;
};

}  // namespace pgwarden::session
