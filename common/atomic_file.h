// Replacing a small file atomically: readers see the old content or the new, never a mix,
// also after a crash (write a temporary file beside it, fsync it, rename it over the old
// one, fsync the directory so the rename itself is durable).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/status.h"

namespace pgwarden {

// Writes `content` to `path` + ".tmp" with `mode`, fsyncs, renames it to `path` and fsyncs the
// directory. On failure the temporary file is removed, `path` is unchanged and the status is
// unavailable with the failing step and errno text. Thread-safety: callers serialise writes
// of the same path.
Status replace_file_atomically(const std::string& path, std::string_view content, mode_t mode);

}  // namespace pgwarden
