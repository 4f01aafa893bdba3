#include "dataplane/session/result_masking.h"

#include <algorithm>
#include <charconv>
#include <unordered_map>
#include <utility>

#include "dataplane/masking/error_redaction.h"
#include "dataplane/masking/rules_detector.h"
#include "dataplane/pgwire/messages.h"
#include "dataplane/session/event_loop.h"

namespace pgwarden::session {

namespace {

namespace pw = pgwarden::pgwire;
using json = nlohmann::json;

// Per worker thread (each worker runs its sessions on one thread): RowDescription+policy ->
// plan. Bounded: cleared when full (plans are cheap to ask for again).
constexpr size_t kPlanCacheCapacity = 4096;
using PlanCache = std::unordered_map<uint64_t, std::shared_ptr<const masking::RowMaskPlan>>;
PlanCache& plan_cache() {
  thread_local PlanCache cache;
  return cache;
}

uint64_t fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

std::string_view body_of(std::string_view whole) { return whole.substr(5); }

json value_json(std::string_view v, bool binary) { return protocol::text_value_json(v, binary); }

void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

// Rows affected from a CommandComplete tag ("SELECT 3", "INSERT 0 5", "COPY 7"); 0 if none.
uint64_t tag_rows(std::string_view tag) {
  size_t sp = tag.rfind(' ');
  if (sp == std::string_view::npos) return 0;
  uint64_t n = 0;
  auto r = std::from_chars(tag.data() + sp + 1, tag.data() + tag.size(), n);
  return r.ec == std::errc() ? n : 0;
}

// True when `sql` contains "copy" in any letter case: the statement may start a COPY (the
// keyword cannot be spelled otherwise), so its text is kept for the COPY mask plan.
bool mentions_copy(std::string_view sql) {
  for (size_t i = 0; i + 4 <= sql.size(); ++i) {
    if ((sql[i] | 0x20) == 'c' && (sql[i + 1] | 0x20) == 'o' && (sql[i + 2] | 0x20) == 'p' &&
        (sql[i + 3] | 0x20) == 'y') {
      return true;
    }
  }
  return false;
}

constexpr size_t kMaxCopyStatements = 4096;

// COPY text/CSV structure bytes a detector span never overwrites.
bool copy_structural(char c) {
  return c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '"' || c == '\\';
}

}  // namespace

ResultFilter::CopyPlanCache& ResultFilter::copy_plan_cache() {
  thread_local CopyPlanCache cache;
  return cache;
}

ResultFilter::ResultFilter(ResultFilterConfig config, EventSink sink)
    : config_(std::move(config)), sink_(std::move(sink)) {
  if (config_.row_cap < 0) config_.row_cap = 0;
}

ResultFilter::~ResultFilter() = default;

void ResultFilter::set_rule_set(std::shared_ptr<const rules::CompiledRuleSet> set) {
  if (set == rule_set_) return;
  rule_set_ = std::move(set);
  has_detect_ = rule_set_ != nullptr && rule_set_->has_detect_rules();
  detector_ = rule_set_ ? masking::make_rules_detector(rule_set_) : masking::Detector();
}

void ResultFilter::set_masks(uint64_t policy_version, bool masks_values) {
  config_.policy_version = policy_version;
  config_.masks_values = masks_values;
}

// ---------------------------------------------------------------------------------------------
// Client side

void ResultFilter::note_decision(std::string_view verdict, std::string_view rule,
                                 std::string_view approval_id) {
  last_decision_.verdict = verdict;
  last_decision_.rule = rule;
  last_decision_.approval_id = approval_id;
}

void ResultFilter::on_query_forwarded(std::string_view sql, uint64_t cycle, int64_t now_ms) {
  if (mentions_copy(sql)) copy_sources_.push_back(CopySource{cycle, true, 0, std::string(sql)});
  if (!track_units()) return;
  Unit u;
  u.cycle = cycle;
  u.simple = true;
  u.sql = sql;
  u.verdict = last_decision_.verdict;
  u.rule = last_decision_.rule;
  u.approval_id = last_decision_.approval_id;
  u.started_ms = now_ms;
  u.executed = true;
  units_.push_back(std::move(u));
}

void ResultFilter::on_parse_forwarded(std::string_view name, std::string_view sql) {
  if (mentions_copy(sql)) {
    if (copy_statements_.size() >= kMaxCopyStatements) copy_statements_.clear();
    copy_statements_[std::string(name)] = sql;
  } else if (!copy_statements_.empty()) {
    copy_statements_.erase(std::string(name));
  }
  if (!track_units()) return;
  if (statements_.size() >= 4096 && !statements_.contains(std::string(name))) statements_.clear();
  StatementInfo& info = statements_[std::string(name)];
  info = last_decision_;
  info.sql = sql;
}

void ResultFilter::on_bind_forwarded(std::string_view portal, std::string_view statement) {
  if (!copy_statements_.empty() || !copy_portals_.empty()) {
    auto it = copy_statements_.find(std::string(statement));
    if (it == copy_statements_.end()) {
      copy_portals_.erase(std::string(portal));
    } else {
      if (copy_portals_.size() >= kMaxCopyStatements) copy_portals_.clear();
      copy_portals_[std::string(portal)] = it->second;
    }
  }
  if (!track_units()) return;
  if (portals_.size() >= 4096 && !portals_.contains(std::string(portal))) portals_.clear();
  auto it = statements_.find(std::string(statement));
  portals_[std::string(portal)] = it != statements_.end() ? it->second : StatementInfo{};
}

void ResultFilter::on_describe_forwarded(uint64_t cycle) {
  describes_.push_back(DescribeWait{cycle, false});
}

void ResultFilter::before_execute(std::string_view portal, uint64_t cycle, int64_t now_ms,
                                  std::string& up_out) {
  pw::append_describe(up_out, 'P', portal);
  describes_.push_back(DescribeWait{cycle, true});
  if (cycle != exec_cycle_) {
    exec_cycle_ = cycle;
    exec_count_ = 0;
  }
  uint64_t ordinal = exec_count_++;
  if (!copy_portals_.empty()) {
    if (auto it = copy_portals_.find(std::string(portal)); it != copy_portals_.end()) {
      copy_sources_.push_back(CopySource{cycle, false, ordinal, it->second});
    }
  }
  if (!track_units()) return;
  Unit u;
  u.cycle = cycle;
  u.simple = false;
  auto it = portals_.find(std::string(portal));
  if (it != portals_.end()) {
    u.sql = it->second.sql;
    u.verdict = it->second.verdict;
    u.rule = it->second.rule;
    u.approval_id = it->second.approval_id;
  }
  u.started_ms = now_ms;
  units_.push_back(std::move(u));
}

// ---------------------------------------------------------------------------------------------
// Upstream side

bool ResultFilter::needs_whole(uint8_t type) const {
  if (swallow_) return true;
  switch (type) {
    case 'T':
    case 'n':
    case 'H':
    case 'c':
    case 'C':
    case 'I':
    case 's':
    case 'E':
    case 'Z':
      return true;
    case 'D':
      // No plan known: must be inspected (and refused). An empty plan streams unless the rows
      // are being recorded.
      if (!have_plan_ || masker_ != nullptr) return true;
      if (record_rows() && !units_.empty() && config_.row_cap > 0) return true;
      return false;
    case 'd':
      return !copy_out_ || masker_ != nullptr || copy_header_pending_ ||
             (copy_line_detect_ && has_detect_) || (record_rows() && !units_.empty());
    case 'N':
    case 'A':
      return config_.masks_values;
    default:
      return false;
  }
}

ResultFilter::Unit* ResultFilter::front_unit(uint64_t cycle) {
  for (Unit& u : units_) {
    if (u.cycle == cycle) return &u;
  }
  return nullptr;
}

void ResultFilter::enter_cycle(uint64_t cycles_received) {
  cycle_now_ = cycles_received + 1;
  // Replies of earlier cycles can no longer come.
  while (!describes_.empty() && describes_.front().cycle < cycle_now_) describes_.pop_front();
  while (!copy_sources_.empty() && copy_sources_.front().cycle < cycle_now_) {
    copy_sources_.pop_front();
  }
  if (count_cycle_ != cycle_now_) {
    count_cycle_ = cycle_now_;
    done_in_cycle_ = 0;
    copy_outs_in_cycle_ = 0;
  }
}

uint32_t ResultFilter::whole_limit(uint8_t type) const {
  if (swallow_) return kStreamRowsAbove;  // swallowed anyway: never buffer much of it
  switch (type) {
    case 'D':
      return have_plan_ && masker_ == nullptr ? kStreamRowsAbove : kMaxMaskedRowBytes;
    case 'd':
      if (copy_out_ && masker_ == nullptr && !(copy_line_detect_ && has_detect_)) {
        return kStreamRowsAbove;
      }
      return kMaxMaskedRowBytes;
    default:
      return kMaxInspectedMessageBytes;
  }
}

ResultFilter::Large ResultFilter::begin_large(uint8_t type, uint32_t length,
                                              uint64_t cycles_received, std::string& out) {
  enter_cycle(cycles_received);
  large_type_ = type;
  large_length_ = length >= 4 ? length - 4 : 0;
  large_record_ = false;
  large_refuse_ = false;
  large_reduce_ = false;
  large_split_ = false;
  large_consumed_ = 0;
  if (swallow_) {
    // Relayed as on_message() would: notices pass, everything else of the cycle is dropped.
    if (!config_.masks_values) {
      return type == 'N' || type == 'S' || type == 'A' ? Large::kPass : Large::kDiscard;
    }
    return type == 'S' ? Large::kPass : Large::kDiscard;
  }
  if (config_.masks_values && (type == 'N' || type == 'A')) {
    // Too large to go through the detectors: dropped (a notice is not part of any reply).
    return Large::kDiscard;
  }
  Unit* u = front_unit(cycle_now_);
  const bool record = record_rows() && u != nullptr && u->recorded < config_.row_cap;
  switch (type) {
    case 'D':
      if (!have_plan_) {
        start_swallow(
            "08P01",
            "pgwarden: result refused: a row arrived with no row description to mask it by", out);
        return Large::kDiscard;
      }
      if (masker_ != nullptr) {
        // Too large to mask in memory: dropped as it arrives, refused at its end (the column
        // is known by then).
        // Too large to mask whole. The row is rebuilt as it arrives: values whose masked form
        // does not depend on them are dropped for a placeholder; once a long value starts in
        // the unmasked tail of the row (no masked column from there on), the columns before it
        // are masked and the rest streams unchanged. Refused at its end when neither works.
        large_refuse_ = true;
        large_record_ = record;
        large_row_.start(formats_, false);
        const std::vector<masking::ColumnMask>& masks = masker_->plan().columns;
        std::vector<bool> shrink;
        for (const masking::ColumnMask& m : masks) shrink.push_back(masking::mask_ignores_value(m));
        size_t unmasked_from = formats_.size();
        while (unmasked_from > 0 &&
               (unmasked_from - 1 >= masks.size() ||
                masks[unmasked_from - 1].function == masking::MaskFunction::kNone)) {
          --unmasked_from;
        }
        large_reduce_ = true;
        large_reduced_.start(std::move(shrink), kMaxMaskedRowBytes, unmasked_from,
                             kStreamRowsAbove);
        return Large::kDiscard;
      }
      large_record_ = record;
      large_row_.start(formats_, record);
      return Large::kPass;
    case 'd':
      if (!copy_out_) {
        start_swallow("08P01", "pgwarden: unexpected CopyData from the upstream database", out);
        return Large::kDiscard;
      }
      if (masker_ != nullptr || copy_header_pending_ || (copy_line_detect_ && has_detect_)) {
        large_refuse_ = true;
        return Large::kDiscard;
      }
      large_record_ = record;
      if (record) large_line_.start(false, kRecordedValueBytes, kRecordedPrefixBytes);
      return Large::kPass;
    default:
      start_swallow("54000",
                    "pgwarden: result refused: a '" + std::string(1, static_cast<char>(type)) +
                        "' message of " + std::to_string(large_length_) +
                        " bytes from the upstream database is larger than the gateway inspects (" +
                        std::to_string(kMaxInspectedMessageBytes) + " bytes)",
                    out);
      return Large::kDiscard;
  }
}

void ResultFilter::large_chunk(std::string_view chunk, std::string& out) {
  if (large_type_ == 'D' && large_split_) {
    // The unmasked rest of a masked row.
    out.append(chunk);
    if (large_record_) large_out_row_.feed(chunk);
  } else if (large_type_ == 'D' && large_reduce_) {
    large_row_.feed(chunk);
    size_t used = large_reduced_.feed(chunk);
    large_consumed_ += used;
    if (large_reduced_.split() && start_split(out)) {
      std::string_view rest = chunk.substr(used);
      out.append(rest);
      if (large_record_) large_out_row_.feed(rest);
    }
  } else if (large_type_ == 'D' && (large_record_ || large_refuse_)) {
    large_row_.feed(chunk);
  } else if (large_type_ == 'd' && large_record_) {
    large_line_.update(chunk);
  }
}

bool ResultFilter::start_split(std::string& out) {
  large_reduce_ = false;
  const uint32_t k = large_reduced_.split_index();
  const std::string& reduced = large_reduced_.body();  // Int16 count, columns [0, k)
  std::string prefix_row;
  prefix_row.resize(2);
  store_be16(reinterpret_cast<uint8_t*>(prefix_row.data()), static_cast<uint16_t>(k));
  prefix_row.append(reduced, 2);
  masking::RowMaskPlan plan = masker_->plan();
  plan.column_count = k;
  if (plan.columns.size() > k) plan.columns.resize(k);
  auto m = masking::RowMasker::create(plan, plan.needs_detector() ? detector_ : nullptr);
  if (!m.is_ok()) return false;  // refused at the end
  scratch_.clear();
  auto r = (*m)->mask_data_row(pw::as_bytes(prefix_row), scratch_);
  if (!r.is_ok()) return false;
  std::string_view values =
      *r ? std::string_view(scratch_).substr(5 + 2) : std::string_view(prefix_row).substr(2);
  const uint64_t rest = large_length_ - large_consumed_;  // the long value onward, unchanged
  const uint64_t length = 4 + 2 + values.size() + 4 + rest;
  if (length > 0x7fffffff) return false;
  std::string head;
  head.resize(7);  // type, Int32 length, Int16 column count
  head[0] = 'D';
  pw::store_be32(reinterpret_cast<uint8_t*>(head.data() + 1), static_cast<uint32_t>(length));
  store_be16(reinterpret_cast<uint8_t*>(head.data() + 5),
             static_cast<uint16_t>(large_reduced_.count()));
  head.append(values);
  head.resize(head.size() + 4);
  pw::store_be32(reinterpret_cast<uint8_t*>(head.data() + head.size() - 4),
                 large_reduced_.split_length());
  out.append(head);
  if (large_record_) {
    large_out_row_.start(formats_, true);
    large_out_row_.feed(std::string_view(head).substr(5));
  }
  if (*r) ++rows_masked_;
  pending_masked_cells_ += (*m)->values_masked();
  large_split_ = true;
  large_refuse_ = false;
  return true;
}

void ResultFilter::end_large(std::string& out) {
  const uint8_t type = std::exchange(large_type_, 0);
  if (std::exchange(large_split_, false)) {
    Unit* u = front_unit(cycle_now_);
    if (std::exchange(large_record_, false) && u != nullptr && large_out_row_.complete()) {
      add_recorded_row(*u, large_out_row_.take_values(), large_out_row_.rendered_bytes());
    }
    return;
  }
  if (std::exchange(large_reduce_, false) && large_reduced_.ok()) {
    large_record_ = false;  // on_data_row records it
    large_refuse_ = false;
    const std::string& body = large_reduced_.body();
    std::string whole(1, 'D');
    whole.resize(5);
    pw::store_be32(reinterpret_cast<uint8_t*>(whole.data() + 1),
                   static_cast<uint32_t>(4 + body.size()));
    whole += body;
    on_data_row(whole, out);  // masked and recorded like a row that fits
    return;
  }
  if (large_refuse_) {
    large_refuse_ = false;
    large_record_ = false;
    std::string what;
    if (type == 'D') {
      int i = large_row_.largest_index();
      std::string name = i >= 0 && static_cast<size_t>(i) < column_names_.size()
                             ? column_names_[static_cast<size_t>(i)]
                             : "?";
      what = "column \"" + name + "\" holds a value of " +
             std::to_string(large_row_.largest_length()) + " bytes in a row of " +
             std::to_string(large_length_) + " bytes";
    } else {
      what = "a COPY line of " + std::to_string(large_length_) + " bytes";
    }
    start_swallow("54000",
                  "pgwarden: result refused: " + what +
                      ", and the policy masks or scans this result; the gateway masks rows up to " +
                      std::to_string(kMaxMaskedRowBytes) +
                      " bytes besides the values of redact/null columns (select a shorter part "
                      "of the value, e.g. with substring(), or leave the column unmasked)",
                  out);
    return;
  }
  if (!large_record_) return;
  large_record_ = false;
  Unit* u = front_unit(cycle_now_);
  if (u == nullptr) return;
  size_t bytes = 0;
  if (type == 'D') {
    if (large_row_.failed() || !large_row_.complete()) return;  // PostgreSQL's bytes: not a row
    bytes = large_row_.rendered_bytes();
    add_recorded_row(*u, large_row_.take_values(), bytes);
  } else {
    json line = large_line_.finish(&bytes);
    add_recorded_row(*u, json::array({std::move(line)}), bytes);
  }
}

ResultFilter::Action ResultFilter::on_message(uint8_t type, std::string_view whole,
                                              uint64_t cycles_received, int64_t now_ms,
                                              std::string& out) {
  enter_cycle(cycles_received);
  if (config_.masks_values && (type == 'N' || type == 'A')) {
    return redact_text_message(type, whole, out);
  }
  if (swallow_ && type != 'Z') {
    if (type == 'N' || type == 'S' || type == 'A') return Action::kForward;
    if (type == 'C' || type == 'I' || type == 's' || type == 'E') {
      // The swallowed result still ends its unit: a session holding its next pipelined
      // statement until the earlier results are in (recording.required) must not wait forever.
      if (type != 'E') ++done_in_cycle_;
      if (Unit* u = front_unit(cycle_now_)) end_extended_unit(*u, now_ms);
    }
    return Action::kConsumed;
  }
  switch (type) {
    case 'T':
    case 'n': {
      bool extended = !describes_.empty() && describes_.front().cycle == cycle_now_;
      bool injected = extended && describes_.front().injected;
      if (extended && !injected) {
        describes_.pop_front();
        return Action::kForward;  // the client's own Describe: rows follow an injected one
      }
      if (type == 'n') {
        if (extended) describes_.pop_front();
        have_plan_ = true;
        masker_.reset();
        return injected ? Action::kConsumed : Action::kForward;
      }
      Action a = on_row_description(whole, injected, out);
      if (a != Action::kNeedPlan && extended) describes_.pop_front();
      return a;
    }
    case 'D':
      return on_data_row(whole, out);
    case 'H':
      return on_copy_out(whole, out);
    case 'd':
      return on_copy_data(whole, out);
    case 'c':
      copy_out_ = false;
      return Action::kForward;
    case 'C':
    case 'I':
    case 's': {
      have_plan_ = false;
      masker_.reset();
      copy_out_ = false;
      ++done_in_cycle_;
      Unit* u = front_unit(cycle_now_);
      if (u == nullptr) return Action::kForward;
      if (type == 'C') {
        pw::CommandComplete cc;
        if (pw::parse(pw::as_bytes(body_of(whole)), &cc).ok()) u->rows += tag_rows(cc.tag);
      }
      end_extended_unit(*u, now_ms);
      return Action::kForward;
    }
    case 'E': {
      have_plan_ = false;
      masker_.reset();
      copy_out_ = false;
      // The recording keeps the message as the client gets it (append_error()).
      std::string redacted;
      if (config_.masks_values && redact_text_message(type, whole, redacted) == Action::kConsumed &&
          !redacted.empty()) {
        whole = redacted;
      }
      Unit* u = front_unit(cycle_now_);
      if (u != nullptr && u->sqlstate.empty()) {
        pw::ErrorResponse er;
        if (pw::parse(pw::as_bytes(body_of(whole)), &er).ok()) {
          u->sqlstate = er.sqlstate();
          u->error = er.message();
        }
        end_extended_unit(*u, now_ms);
      }
      return Action::kForward;
    }
    case 'Z': {
      swallow_ = false;
      have_plan_ = false;
      masker_.reset();
      copy_out_ = false;
      while (!describes_.empty() && describes_.front().cycle <= cycle_now_) describes_.pop_front();
      while (Unit* u = front_unit(cycle_now_)) end_unit(*u, now_ms);
      return Action::kForward;
    }
    default:
      return Action::kForward;
  }
}

void ResultFilter::end_extended_unit(Unit& u, int64_t now_ms) {
  // A simple Query's units end at its ReadyForQuery; an Execute's at its own completion.
  if (u.simple) return;
  u.executed = true;
  end_unit(u, now_ms);
}

void ResultFilter::append_error(std::string_view whole, std::string& out) {
  if (!config_.masks_values || redact_text_message('E', whole, out) == Action::kForward) {
    out.append(whole);
  }
}

ResultFilter::Action ResultFilter::redact_text_message(uint8_t type, std::string_view whole,
                                                       std::string& out) {
  std::string_view body = body_of(whole);
  const masking::Detector none;
  const masking::Detector& detector = has_detect_ ? detector_ : none;
  Result<bool> r =
      type == 'A' ? masking::redact_notification(body, detector, out)
                  : masking::redact_error_message(static_cast<char>(type), body, detector, out);
  if (!r.is_ok()) {
    // A notice or notification is dropped; an error is replaced (one for one: the protocol
    // stays in step).
    if (type == 'E') {
      pw::append_error_response(out, "ERROR", "08P01",
                                "pgwarden: malformed ErrorResponse from the upstream database");
    }
    return Action::kConsumed;
  }
  return *r ? Action::kConsumed : Action::kForward;
}

const masking::RowMaskPlan& ResultFilter::effective_plan(const masking::RowMaskPlan& plan,
                                                         masking::RowMaskPlan* scratch) const {
  if (has_detect_ || !plan.needs_detector()) return plan;
  // The session's rule sets have no detect rules: there is nothing to detect, so `detect`
  // columns pass as they are (no detection is not a reason to refuse a result).
  *scratch = plan;
  for (masking::ColumnMask& c : scratch->columns) {
    if (c.function == masking::MaskFunction::kDetect) c.function = masking::MaskFunction::kNone;
  }
  return *scratch;
}

ResultFilter::Action ResultFilter::on_row_description(std::string_view whole, bool injected,
                                                      std::string& out) {
  std::string_view body = body_of(whole);
  pw::RowDescription rd;
  if (!pw::parse(pw::as_bytes(body), &rd).ok()) {
    start_swallow("08P01", "pgwarden: malformed RowDescription from the upstream database", out);
    return Action::kConsumed;
  }
  uint64_t key = mix(mix(fnv1a(body), config_.policy_hash), config_.policy_version);
  PlanCache& cache = plan_cache();
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (failed_ && failed_key_ == key) {
      failed_ = false;
      start_swallow("08006",
                    "pgwarden: result refused: the mask plan for it could not be obtained (" +
                        failed_status_.message() + ")",
                    out);
      return Action::kConsumed;
    }
    pending_key_ = key;
    pending_copy_ = false;
    json fields = json::array();
    for (const pw::FieldDescription& f : rd.fields) {
      fields.push_back({{"name", value_json(f.name, false)},
                        {"table_oid", f.table_oid},
                        {"attnum", f.attnum},
                        {"type_oid", f.type_oid},
                        {"format", f.format}});
    }
    pending_request_ = {{"fields", std::move(fields)}};
    return Action::kNeedPlan;
  }
  masking::RowMaskPlan undetected;
  const masking::RowMaskPlan& plan = effective_plan(*it->second, &undetected);
  masker_.reset();
  if (!plan.empty()) {
    if (plan.needs_detector() && !detector_) {
      start_swallow("42501",
                    "pgwarden: result refused: its mask plan needs content detectors and the "
                    "session has no detect rules",
                    out);
      return Action::kConsumed;
    }
    auto m = masking::RowMasker::create(plan, plan.needs_detector() ? detector_ : nullptr);
    if (!m.is_ok()) {
      start_swallow("42501", "pgwarden: result refused: " + m.status().message(), out);
      return Action::kConsumed;
    }
    masker_ = std::move(*m);
  }
  have_plan_ = true;
  formats_.clear();
  column_names_.clear();
  for (const pw::FieldDescription& f : rd.fields) {
    formats_.push_back(f.format);
    column_names_.emplace_back(f.name);
  }
  if (Unit* u = front_unit(cycle_now_)) {
    flush_rows(*u);
    u->batch.clear_columns();
    for (const pw::FieldDescription& f : rd.fields) {
      u->batch.add_column(f.name, f.type_oid, f.format);
    }
  }
  if (injected) return Action::kConsumed;
  return Action::kForward;
}

ResultFilter::Action ResultFilter::on_data_row(std::string_view whole, std::string& out) {
  if (!have_plan_) {
    start_swallow("08P01",
                  "pgwarden: result refused: a row arrived with no row description to mask it by",
                  out);
    return Action::kConsumed;
  }
  std::string_view client_body = body_of(whole);
  if (masker_ != nullptr) {
    scratch_.clear();
    const uint64_t masked_before = masker_->values_masked();
    auto r = masker_->mask_data_row(pw::as_bytes(client_body), scratch_);
    note_masked(masked_before);
    if (!r.is_ok()) {
      start_swallow(r.status().sqlstate().empty() ? "08P01" : r.status().sqlstate(),
                    "pgwarden: result refused: " + r.status().message(), out);
      return Action::kConsumed;
    }
    if (*r) {
      ++rows_masked_;
      out.append(scratch_);
      client_body = std::string_view(scratch_).substr(5);
    } else {
      out.append(whole);
    }
  } else {
    out.append(whole);
  }
  record_row(client_body);
  return Action::kConsumed;
}

const ResultFilter::CopySource* ResultFilter::copy_source(uint64_t* index) const {
  const CopySource* simple = nullptr;
  const CopySource* extended = nullptr;
  size_t in_cycle = 0;
  for (const CopySource& c : copy_sources_) {
    if (c.cycle != cycle_now_) continue;
    ++in_cycle;
    if (c.simple) simple = &c;
    if (!c.simple && c.execute == done_in_cycle_) extended = &c;
  }
  if (simple != nullptr) {
    // A cycle with one simple Query: the n-th CopyOutResponse is its n-th COPY TO STDOUT. A
    // cycle that also ran Executes (no Sync before the Query) is ambiguous: refused.
    *index = copy_outs_in_cycle_;
    return in_cycle == 1 ? simple : nullptr;
  }
  *index = 0;
  return extended;
}

ResultFilter::Action ResultFilter::on_copy_out(std::string_view whole, std::string& out) {
  std::string_view body = body_of(whole);
  pw::CopyOutResponse cr;
  if (!pw::parse(pw::as_bytes(body), &cr).ok()) {
    start_swallow("08P01", "pgwarden: malformed CopyOutResponse from the upstream database", out);
    return Action::kConsumed;
  }
  uint64_t index = 0;
  const CopySource* source = copy_source(&index);
  if (source == nullptr) {
    start_swallow("42501",
                  "pgwarden: COPY TO STDOUT refused: the statement that started it is not known "
                  "to the gateway, so its masking is unknown",
                  out);
    return Action::kConsumed;
  }
  uint64_t key = mix(mix(mix(fnv1a(source->sql, fnv1a("copy")), index), fnv1a(body)),
                     mix(config_.policy_hash, config_.policy_version));
  CopyPlanCache& cache = copy_plan_cache();
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (failed_ && failed_key_ == key) {
      failed_ = false;
      if (failed_status_.sqlstate() == "42501") {
        start_swallow("42501", failed_status_.message(), out);
      } else {
        start_swallow("08006",
                      "pgwarden: COPY TO STDOUT refused: its mask plan could not be obtained (" +
                          failed_status_.message() + ")",
                      out);
      }
      return Action::kConsumed;
    }
    pending_key_ = key;
    pending_copy_ = true;
    pending_request_ = {{"copy",
                         {{"sql", value_json(source->sql, false)},
                          {"index", index},
                          {"format", static_cast<int>(cr.format)},
                          {"columns", cr.column_formats.size()}}}};
    return Action::kNeedPlan;
  }
  std::shared_ptr<const CopyPlan> plan = it->second;  // start_copy may clear the cache
  ++copy_outs_in_cycle_;
  return start_copy(*plan, cr.format != 0, out);
}

ResultFilter::Action ResultFilter::start_copy(const CopyPlan& plan, bool binary, std::string& out) {
  masker_.reset();
  copy_line_detect_ = plan.line_detect;
  copy_header_pending_ = false;
  const bool detects = plan.line_detect || plan.plan.needs_detector();
  if (binary) {
    bool masked = std::any_of(plan.plan.columns.begin(), plan.plan.columns.end(),
                              [](const masking::ColumnMask& c) {
                                return c.function != masking::MaskFunction::kNone &&
                                       c.function != masking::MaskFunction::kDetect;
                              });
    if (masked || (detects && has_detect_)) {
      start_swallow("42501",
                    "pgwarden: binary COPY TO STDOUT is refused because this policy masks "
                    "result values; use text or CSV format",
                    out);
      return Action::kConsumed;
    }
    copy_line_detect_ = false;
  } else if (masking::RowMaskPlan undetected; !effective_plan(plan.plan, &undetected).empty()) {
    const masking::RowMaskPlan& row_plan = effective_plan(plan.plan, &undetected);
    if (row_plan.needs_detector() && !detector_) {
      start_swallow("42501",
                    "pgwarden: COPY refused: its mask plan needs content detectors and the "
                    "session has no detect rules",
                    out);
      return Action::kConsumed;
    }
    auto m = masking::RowMasker::create(row_plan, row_plan.needs_detector() ? detector_ : nullptr);
    if (!m.is_ok()) {
      start_swallow("42501", "pgwarden: COPY refused: " + m.status().message(), out);
      return Action::kConsumed;
    }
    masker_ = std::move(*m);
    copy_format_ = plan.format;
    copy_header_pending_ = plan.header;
  }
  copy_out_ = true;
  formats_.assign(1, 0);
  if (Unit* u = front_unit(cycle_now_)) {
    flush_rows(*u);
    u->batch.clear_columns();
    u->batch.add_column("copy_line", 25, 0);
  }
  return Action::kForward;
}

ResultFilter::Action ResultFilter::on_copy_data(std::string_view whole, std::string& out) {
  if (!copy_out_) {
    start_swallow("08P01", "pgwarden: unexpected CopyData from the upstream database", out);
    return Action::kConsumed;
  }
  std::string_view line = body_of(whole);
  size_t start = out.size();
  bool masked = false;
  if (copy_header_pending_) {
    copy_header_pending_ = false;  // the HEADER line: column names, passed as is
  } else if (masker_ != nullptr) {
    scratch_.clear();
    const uint64_t masked_before = masker_->values_masked();
    auto r = masker_->mask_copy_line(line, scratch_, copy_format_);
    note_masked(masked_before);
    if (!r.is_ok()) {
      start_swallow(r.status().sqlstate().empty() ? "08P01" : r.status().sqlstate(),
                    "pgwarden: result refused: " + r.status().message(), out);
      return Action::kConsumed;
    }
    if (*r) {
      pw::append_copy_data(out, scratch_);
      masked = true;
      ++rows_masked_;
    }
  } else if (copy_line_detect_ && has_detect_) {
    spans_.clear();
    detector_(line, &spans_);
    if (!spans_.empty()) {
      out.append(whole);
      char* p = out.data() + start + 5;
      for (const masking::DetectSpan& s : spans_) {
        size_t end = std::min(s.end, line.size());
        for (size_t i = s.begin; i < end; ++i) {
          if (!copy_structural(p[i])) p[i] = '*';
        }
      }
      masked = true;
      ++rows_masked_;
      ++pending_masked_cells_;
    }
  }
  if (!masked) out.append(whole);
  if (record_rows()) {
    std::string_view seen = std::string_view(out).substr(start + 5);
    if (!seen.empty() && seen.back() == '\n') seen.remove_suffix(1);
    if (Unit* u = front_unit(cycle_now_); u != nullptr && u->recorded < config_.row_cap) {
      if (seen.size() <= kRecordedValueBytes) {
        // A short line goes as it is (cp renders it); a long one as prefix, length and digest.
        u->batch.begin_row(1);
        u->batch.add_value(seen);
        note_recorded_row(*u, seen.size());
      } else {
        size_t bytes = 0;
        large_line_.start(false, kRecordedValueBytes, kRecordedPrefixBytes);
        large_line_.update(seen);
        json value = large_line_.finish(&bytes);
        add_recorded_row(*u, json::array({std::move(value)}), bytes);
      }
    }
  }
  return Action::kConsumed;
}

void ResultFilter::start_swallow(std::string_view sqlstate, std::string_view message,
                                 std::string& out) {
  pw::append_error_response(out, "ERROR", sqlstate, message);
  swallow_ = true;
  refused_ = true;
  have_plan_ = false;
  masker_.reset();
  copy_out_ = false;
  if (Unit* u = front_unit(cycle_now_); u != nullptr && u->sqlstate.empty()) {
    u->sqlstate = sqlstate;
    u->error = message;
    u->batch.clear_rows();  // the client saw none of this result's rows after the error
    u->batch_bytes = 0;
  }
}

void ResultFilter::record_row(std::string_view body) {
  if (!record_rows()) return;
  Unit* u = front_unit(cycle_now_);
  if (u == nullptr || u->recorded >= config_.row_cap) return;
  if (body.size() > kRecordedValueBytes) {
    // A long row: long values are summarised (prefix, length, digest) as they are rendered.
    row_values_.start(formats_, true);
    size_t used = row_values_.feed(body);
    if (!row_values_.complete() || used != body.size()) return;
    add_recorded_row(*u, row_values_.take_values(), row_values_.rendered_bytes());
    return;
  }
  pw::DataRow row;
  if (!pw::parse(pw::as_bytes(body), &row).ok()) return;
  // Values as the client saw them; cp renders them (binary-format columns as hex).
  u->batch.begin_row(static_cast<uint32_t>(row.columns.size()));
  for (const pw::Value& v : row.columns) {
    if (v.is_null) {
      u->batch.add_null();
    } else {
      u->batch.add_value(v.text());
    }
  }
  note_recorded_row(*u, body.size());
}

void ResultFilter::add_recorded_row(Unit& u, const json& values, size_t bytes) {
  u.batch.add_rendered_row(values);
  note_recorded_row(u, bytes);
}

void ResultFilter::note_recorded_row(Unit& u, size_t bytes) {
  u.batch_bytes += bytes;
  ++u.recorded;
  // By count, and by size so one rows event stays far below the event path's limits.
  if (u.batch.rows() >= kRowsPerEvent || u.batch_bytes >= kRecordedRowBytes) flush_rows(u);
}

void ResultFilter::flush_rows(Unit& u) {
  if (u.batch.rows() == 0) return;
  u.batch_bytes = 0;
  if (!record_rows()) return u.batch.clear_rows();
  std::string payload = u.batch.take(unix_ms());
  sink_(protocol::RecordType::kRows, payload);
}

std::string_view ResultFilter::portal_sql(std::string_view portal) const {
  auto it = portals_.find(std::string(portal));
  return it == portals_.end() ? std::string_view() : std::string_view(it->second.sql);
}

void ResultFilter::note_masked(uint64_t before) {
  if (masker_ != nullptr) pending_masked_cells_ += masker_->values_masked() - before;
}

void ResultFilter::end_unit(Unit& u, int64_t now_ms) {
  flush_rows(u);
  protocol::StatementEndFields ev;
  ev.verdict = protocol::verdict_from(u.verdict);
  ev.executed = u.executed;
  ev.ts_ms = unix_ms();
  ev.duration_ms = std::max<int64_t>(0, now_ms - u.started_ms);
  ev.rows = u.rows;
  ev.rows_recorded = u.recorded;
  ev.sql = u.sql;
  ev.rule = u.rule;
  ev.approval_id = u.approval_id;
  ev.sqlstate = u.sqlstate;
  ev.error = u.error;
  ev.result_bytes = std::exchange(pending_result_bytes_, 0);
  ev.masked_cells = std::exchange(pending_masked_cells_, 0);
  end_record_.clear();  // reused: no allocation per statement once it has grown
  ev.encode(end_record_);
  sink_(protocol::RecordType::kStatementEnd, end_record_);
  for (auto it = units_.begin(); it != units_.end(); ++it) {
    if (&*it == &u) {
      units_.erase(it);
      break;
    }
  }
}

void ResultFilter::end_units_on_upstream_loss(std::string_view sqlstate, std::string_view message,
                                              int64_t now_ms) {
  while (!units_.empty()) {
    Unit& u = units_.front();
    if (u.sqlstate.empty()) {
      u.sqlstate = std::string(sqlstate);
      u.error = std::string(message);
    }
    end_unit(u, now_ms);  // erases it
  }
}

void ResultFilter::set_plan_answer(uint64_t key, const json& answer) {
  if (pending_copy_) return set_copy_answer(key, answer);
  const json& j = answer.is_object() && answer.contains("plan") ? answer["plan"] : answer;
  auto plan = masking::RowMaskPlan::from_json(j);
  if (!plan.is_ok()) {
    return set_plan_error(key, internal_error("bad mask plan: " + plan.status().message()));
  }
  PlanCache& cache = plan_cache();
  if (cache.size() >= kPlanCacheCapacity) cache.clear();
  cache[key] = std::make_shared<const masking::RowMaskPlan>(std::move(*plan));
}

void ResultFilter::set_copy_answer(uint64_t key, const json& answer) {
  auto bad = [&](std::string what) {
    set_plan_error(key, internal_error("bad COPY mask plan: " + what));
  };
  if (!answer.is_object() || !answer.contains("plan") || !answer.contains("copy") ||
      !answer["copy"].is_object()) {
    return bad("it needs \"plan\" and \"copy\"");
  }
  auto plan = masking::RowMaskPlan::from_json(answer["plan"]);
  if (!plan.is_ok()) return bad(plan.status().message());
  const json& c = answer["copy"];
  auto text = [&](const char* k) -> const std::string* {
    auto it = c.find(k);
    return it != c.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
  };
  auto flag = [&](const char* k) {
    auto it = c.find(k);
    return it != c.end() && it->is_boolean() && it->get<bool>();
  };
  const std::string* format = text("format");
  const std::string* delimiter = text("delimiter");
  const std::string* null_marker = text("null");
  const std::string* quote = text("quote");
  const std::string* escape = text("escape");
  if (format == nullptr || (*format != "text" && *format != "csv" && *format != "binary") ||
      delimiter == nullptr || delimiter->size() != 1 || null_marker == nullptr ||
      null_marker->size() > masking::kMaxRedactText || quote == nullptr || quote->size() != 1 ||
      escape == nullptr || escape->size() != 1) {
    return bad("format, delimiter, null, quote or escape missing or invalid");
  }
  auto cp = std::make_shared<CopyPlan>();
  cp->plan = std::move(*plan);
  cp->format = masking::CopyFormat{*format == "csv", (*delimiter)[0], *null_marker, (*quote)[0],
                                   (*escape)[0]};
  cp->header = flag("header");
  cp->line_detect = flag("line_detect");
  CopyPlanCache& cache = copy_plan_cache();
  if (cache.size() >= kPlanCacheCapacity) cache.clear();
  cache[key] = std::move(cp);
}

void ResultFilter::set_plan_error(uint64_t key, const Status& status) {
  failed_ = true;
  failed_key_ = key;
  failed_status_ = status;
}

}  // namespace pgwarden::session
