// Replay: renders a recording as the client saw it, psql-style (aligned tables with a
// centred header, a dashed rule and "(N rows)"), optionally in real time.
//
// Recording order contract (docs/recording.md): a statement's "rows" records come before its
// "statement" record (the dataplane sends "statement" when the statement completes, with its
// duration, row count and error), so replay prints each statement followed by the rows that
// preceded it.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "common/status.h"
#include "controlplane/recording/recording_file.h"

namespace pgwarden::recording {

struct ReplayOptions {
  // 0: print at once. > 0: wait (original gap / speed) between records, e.g. 1 = real time,
  // 10 = ten times faster; each wait is capped at max_gap.
  double speed = 0;
  std::chrono::milliseconds max_gap{5000};
  std::function<void(std::chrono::milliseconds)> sleep;  // default: std::this_thread::sleep_for
};

// Renders the verified part of the recording; if verification fails, a final line says where
// and why. Returns the verification report (errors only when the file cannot be read).
Result<VerifyReport> render_replay(const std::string& path, std::ostream& out,
                                   const ReplayOptions& options = {});

// A psql-aligned table ("(N rows)" footer not included). right_align: per column (numbers).
std::string render_table(const std::vector<std::string>& columns,
                         const std::vector<bool>& right_align,
                         const std::vector<std::vector<std::optional<std::string>>>& rows);

}  // namespace pgwarden::recording
