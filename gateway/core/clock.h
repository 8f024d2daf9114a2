// Wall-clock and monotonic time helpers. Record timestamps are wall-clock milliseconds since the
// Unix epoch (UTC) of the measurement; waits and deadlines use the monotonic clock.
// Stateless functions: thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

namespace sanigate {

using SteadyClock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

inline int64_t NowMs() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace sanigate
