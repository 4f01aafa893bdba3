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
// Recording: statements are tracked as units (a simple Query, or one Execute of an extended
// cycle); the filter collects the rows as the client saw them (masked) up to the row cap and
// emits `rows` events in batches of kRowsPerEvent, then a completion event per unit through
// the EventSink: kind `statement` with "phase": "end" (sql, verdict, rule, approval_id,
// duration_ms, rows, rows_recorded, executed, error {sqlstate, message}). The decision event
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

#include "common/status.h"
#include "dataplane/masking/mask_apply.h"
#include "dataplane/pgwire/framer.h"
#include "rules/matcher.h"

namespace pgwarden::session {

inline constexpr size_t kRowsPerEvent = 100;
inline constexpr int kDefaultRecordingRowCap = 1000;

struct ResultFilterConfig {
  uint64_t policy_hash = 0;
  uint64_t policy_version = 0;
  std::string recording = "full";  // off | metadata | full
  int row_cap = kDefaultRecordingRowCap;
};

class ResultFilter {
 public:
  using EventSink = std::function<void(nlohmann::json event)>;
  enum class Action {
    kForward,   // append the message unchanged to the client output
    kConsumed,  // the filter appended whatever the client gets (maybe nothing)
    kNeedPlan,  // hold: request a plan for plan_request() and call again after set_plan*()
  };

  ResultFilter(ResultFilterConfig config, EventSink sink);
  ~ResultFilter();

  void set_rule_set(std::shared_ptr<const rules::CompiledRuleSet> set);

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
  // Appends Describe(portal) to `up_out` (to be followed by the Execute itself).
  void before_execute(std::string_view portal, uint64_t cycle, int64_t now_ms, std::string& up_out);

  // --- Upstream side.
  // True when the message must be handed whole to on_message(); false = stream it through.
  bool needs_whole(uint8_t type) const;
  // `whole`: type byte, length, body. `cycles_received`: ReadyForQuery count so far (before
  // this message). Appends the client's bytes to `out` unless the answer is kForward.
  Action on_message(uint8_t type, std::string_view whole, uint64_t cycles_received, int64_t now_ms,
                    std::string& out);
  // After kNeedPlan: the cp `mask_plan` request body but session_id ({"fields": [...]} or
  // {"copy": {...}}) and the cache key.
  const nlohmann::json& plan_request() const { return pending_request_; }
  uint64_t pending_key() const { return pending_key_; }
  // The cp answer for pending_key() ({"plan": {...}[, "copy": {...}]} or the plan itself) /
  // its failure (a 42501 status is relayed to the client as is: cp refused a COPY).
  void set_plan_answer(uint64_t key, const nlohmann::json& answer);
  void set_plan_error(uint64_t key, const Status& status);

  bool swallowing() const { return swallow_; }
  // True (once) when the filter refused a result since the last call: the client got a
  // dp-generated ErrorResponse the upstream knows nothing of. The session calls it at each
  // ReadyForQuery and, inside a transaction, makes the upstream transaction fail too.
  bool take_refusal() { return std::exchange(refused_, false); }
  uint64_t rows_masked() const { return rows_masked_; }

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
    nlohmann::json columns = nlohmann::json::array();
    nlohmann::json batch = nlohmann::json::array();
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
  // The statement that produced the current CopyOutResponse, or nullptr when unknown.
  const CopySource* copy_source(uint64_t* index) const;
  Action start_copy(const CopyPlan& plan, bool binary, std::string& out);
  // Per worker thread, like the RowDescription plan cache (bounded, cleared when full).
  using CopyPlanCache = std::unordered_map<uint64_t, std::shared_ptr<const CopyPlan>>;
  static CopyPlanCache& copy_plan_cache();
  void set_copy_answer(uint64_t key, const nlohmann::json& answer);
  void start_swallow(std::string_view sqlstate, std::string_view message, std::string& out);
  void record_row(std::string_view body);
  void flush_rows(Unit& u);
  void end_unit(Unit& u, int64_t now_ms);
  Unit* front_unit(uint64_t cycle);
  bool record_rows() const { return config_.recording == "full"; }
  bool record_any() const { return config_.recording != "off"; }

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
  std::vector<masking::DetectSpan> spans_;
  uint64_t rows_masked_ = 0;
};

}  // namespace pgwarden::session
