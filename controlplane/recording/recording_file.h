// Reading recordings (written by Recorder): hash-chain verification, tolerant reading, listing
// and retention. A reader never trusts a file: every record is parsed and checked.
//
// Thread-safety: free functions over files; safe to call concurrently with the Recorder
// appending (a half-written last line is reported as a torn tail, not as tampering).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace pgwarden::recording {

inline constexpr std::string_view kGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// Canonical bytes of a record (without its "hash" member) and its chain hash.
std::string canonical_bytes(const nlohmann::json& record);
std::string chain_hash(std::string_view prev_hex, std::string_view canonical);

// The chain hash fed in pieces, reusing one digest context (the Recorder hashes each record
// around its "hash" member without copying it out). Not thread-safe: one per thread.
class ChainHasher {
 public:
  ChainHasher();
  ~ChainHasher();
  ChainHasher(const ChainHasher&) = delete;
  ChainHasher& operator=(const ChainHasher&) = delete;
  void begin(std::string_view prev_hex);
  void update(std::string_view canonical_part);
  // Writes the 64 lowercase hex digits of SHA-256(prev || parts) to out[0..63].
  void finish_hex(char* out);

 private:
  ::evp_md_ctx_st* ctx_;
};

struct ChainHead {
  uint64_t seq = 0;
  std::string hash;
  bool sealed = false;
};

// The Recorder's checkpoint file: the synced chain head of every open (and recently sealed)
// session, {"version": 1, "written_ms", "sessions": {id: {"seq", "hash", "sealed"}}}.
struct Checkpoint {
  int64_t written_ms = 0;
  std::map<std::string, ChainHead> heads;
};
// not_found when there is none; invalid_argument when it cannot be parsed.
Result<Checkpoint> read_checkpoint(const std::string& path);

struct VerifyReport {
  bool ok = true;          // every complete record verified (and, from verify_session, the
                           // file reaches its checkpointed head)
  uint64_t records = 0;    // records verified before the first failure (or all)
  uint64_t bad_seq = 0;    // the seq expected at the first failing record (0 when ok)
  std::string reason;      // "malformed json", "hash mismatch", "prev mismatch", "seq gap",
                           // "record after seal", "bad seal", "truncated", "checkpoint mismatch"
  bool torn_tail = false;  // the file ends in a partial line (crash mid-write): ignored
  uint64_t torn_bytes = 0;
  std::string last_hash;  // hash of the last verified record
  bool sealed = false;    // the last record is a valid seal
  // verify_session() only:
  // "sealed" | "open" (intact, still open in the live cp) | "unsealed" (intact as far as
  // known, never sealed: crash) | "truncated" | "tampered".
  std::string state;
  std::string detail;                   // a sentence for operators
  uint64_t gaps = 0;                    // recording_gap records (verify_session only)
  uint64_t missing_records = 0;         // records those gaps say are missing
  // Records recorded twice around a control-plane crash (redelivered_records()).
  uint64_t redelivered = 0;
  std::optional<ChainHead> checkpoint;  // the checkpointed head of this session, if any

  // {ok, records, torn_tail, last_hash, sealed, [bad_seq, reason], [torn_bytes], [state,
  // detail, gaps, missing_records], [checkpoint_seq]}: the admin API's and `pgwardenctl sessions
  // verify --json`'s form.
  nlohmann::json to_json() const;
};

// Records of a verified recording that a restarted pgwarden-cp wrote a second time: a cp killed
// after it wrote a batch of ring events and before it released them leaves them on the
// dataplane's ring, which delivers them again after the session's re-registration. They are
// the first records after a `session_resumed` record (reason "control plane restart", and the
// optional recording_gap after it) that equal, apart from seq, ts, prev and hash, the records
// right before it (at most kMaxRedelivered per restart: one ring batch).
inline constexpr size_t kMaxRedelivered = 256;
uint64_t redelivered_records(const std::vector<nlohmann::json>& records);

// Verifies the chain. not_found/unavailable only when the file cannot be read; tampering is a
// report with ok == false.
Result<VerifyReport> verify_recording(const std::string& path);

// Verification of a session against the checkpoint (its entry in `checkpoint`, may be null)
// and the live cp's view (`open_in_live_cp`; nullopt when unknown, e.g. reading a state dir):
// detects tampering, a truncated tail or deleted last records (fewer records than the
// checkpointed seq, or a different hash at that seq), and a missing seal (state "unsealed",
// detail says crash or still open).
Result<VerifyReport> verify_session(const std::string& path, const Checkpoint* checkpoint,
                                    std::optional<bool> open_in_live_cp);

// The verified records (up to the first failure), and the report.
Result<std::vector<nlohmann::json>> read_recording(const std::string& path,
                                                   VerifyReport* report = nullptr);

// The end of a recording, read without reading the rest (the Recorder continues a session's
// chain from it after a pgwarden-cp restart). Costs O(size of the last record), whatever the
// size of the file.
struct RecordingTail {
  uint64_t records = 0;     // seq of the last complete record (0: no record)
  std::string last_hash;    // its hash ("" when there is none)
  std::string last_kind;    // its kind
  nlohmann::json last;      // the record itself (without "hash"); null when none
  uint64_t good_bytes = 0;  // the file up to and including the last complete line
  bool torn_tail = false;   // the file ends in a partial line (crash mid-write)
  uint64_t torn_bytes = 0;
  bool ok = true;      // the last record parses and its hash covers its content
  std::string reason;  // why not ("malformed json", "missing seq, prev or hash",
                       // "hash mismatch")
};
// not_found/unavailable only when the file cannot be read. The records before the last one
// are not looked at: tampering there is verify_recording()'s to find, and appending to the
// file does not hide it (the chain still breaks at the changed record).
Result<RecordingTail> read_recording_tail(const std::string& path);

struct RecordingSummary {
  std::string session_id;
  std::string path;
  std::string identity;
  std::string target;
  int64_t start_ms = 0;
  int64_t end_ms = 0;  // 0 while the session is open (or it ended without session_end)
  uint64_t statements = 0;
  uint64_t size_bytes = 0;
  bool verified = true;
};

// Every <id>.jsonl in `dir`, oldest first.
Result<std::vector<RecordingSummary>> list_recordings(const std::string& dir);

struct RetentionPolicy {
  int max_age_days = 0;          // 0 = no age limit
  uint64_t max_total_bytes = 0;  // 0 = no size limit
};

// Deletes recordings that started more than max_age_days before now_ms, then the oldest
// until the total size fits max_total_bytes. Sessions in `active` are never deleted. Returns
// the deleted session ids, oldest first.
Result<std::vector<std::string>> apply_retention(const std::string& dir,
                                                 const RetentionPolicy& policy, int64_t now_ms,
                                                 const std::set<std::string>& active = {});

}  // namespace pgwarden::recording
