// PNG encoding of a raster (libpng's simplified API, to memory). 8-bit RGBA, no time or text
// chunks, fixed compression: the same image always gives the same bytes.
// Pure function; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "ctl/raster.h"

namespace sanigate::ctl {

// The PNG file of `image`. kInvalid for an empty image; kInternal when libpng fails.
Result<std::vector<uint8_t>> EncodePng(const Image& image);

}  // namespace sanigate::ctl
