// Recordings a stopped pgwarden-cp left open, and the dataplane processes that could still
// re-register them (docs/operations.md, "Control-plane restarts").
//
// When cp stops (a crash, kill -9) while sessions are live, their recordings stay open: a
// dataplane that lives re-registers its sessions once cp is back and the recordings go on. A
// recording nobody re-registers — its dataplane died, or lost the session, while cp was down —
// would stay unsealed for ever. At start cp therefore collects the recordings that may have been
// open (possibly_open_recordings) and seals each one that no dataplane re-registered in time
// (seal_orphan) with a session_end that says the session ended abnormally. "In time" is the
// reattach window, or at once when every dataplane process connected to the previous cp is
// known to have exited (DataplaneRoster, a small file in the state directory).
//
// Thread-safety: DataplaneRoster is safe from any thread; the functions are stateless.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "controlplane/recording/recorder.h"

namespace pgwarden::server {

// The start time of process `pid` as the kernel gives it (field 22 of /proc/<pid>/stat, clock
// ticks since boot): with the pid it names one process, whatever reuses the pid later. 0 when
// there is no such process visible here.
uint64_t process_start_time(pid_t pid);

// The dataplane processes connected to this cp, kept in `path` (JSON, rewritten atomically,
// mode 0600) so that the next cp knows, after a crash, whether any of them can still come back.
class DataplaneRoster {
 public:
  // What the file of the previous cp said.
  struct Previous {
    bool known = false;        // the file existed and parsed
    bool unknown_pid = false;  // a dataplane without a usable pid was connected (another pid
                               // namespace): nothing can be said about it
    std::vector<std::pair<pid_t, uint64_t>> processes;  // pid, process_start_time
    // Every listed process has exited (none runs with the same pid and start time) and no
    // dataplane without a pid was connected: no dataplane can re-register a session.
    bool all_exited() const;
  };

  // `path` empty: nothing is kept and load() says unknown.
  explicit DataplaneRoster(std::string path) : path_(std::move(path)) {}

  Previous load() const;
  // A connection from dataplane process `pid` (0: unknown pid) was accepted. Rewrites the file
  // when the process is new. Logs and ignores write errors (the next cp then waits the window).
  void connected(pid_t pid);
  // Dataplane process `pid` exited.
  void exited(pid_t pid);

 private:
  void save();  // REQUIRES: mu_ held

  const std::string path_;
  std::mutex mu_;
  std::map<pid_t, uint64_t> processes_;
  bool unknown_pid_ = false;
};

// Session ids whose recordings in `dir` may have been open when the cp that wrote
// `checkpoint_path` stopped: those the checkpoint lists as not sealed, and every recording
// changed since shortly before the checkpoint was written (sessions that started after it).
// Without a checkpoint: the recordings changed in the last 24 hours. Sealed recordings among
// them are harmless: seal_orphan() leaves them alone.
std::vector<std::string> possibly_open_recordings(const std::string& dir,
                                                  const std::string& checkpoint_path);

// Closes session `id`'s recording if it is still open on disk: resumes it (a session_resumed
// record, reason "control plane restart") and appends session_end with `reason`; the recorder
// seals it. True when it did; false (nothing written) when the recording does not exist or is
// sealed already.
Result<bool> seal_orphan(recording::Recorder& recorder, const std::string& id,
                         const std::string& reason);

}  // namespace pgwarden::server
