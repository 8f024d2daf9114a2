// Replacing a small state file so that a crash or power cut leaves either the old or the new
// contents, never a torn file: write a temporary file beside it, fsync, rename over it, fsync
// the directory.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace sanigate {

Status WriteFileAtomically(const std::string& path, std::string_view contents, unsigned mode = 0644);

}  // namespace sanigate
