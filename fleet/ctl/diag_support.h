// Small helpers of `sanictl diag`: the --since value and running a helper
// program (journalctl, dpkg-query, the daemons' --version) with a deadline and bounded output.
// ParseSince is pure; RunProgram forks and reaps its own child only.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sanigate::ctl {

// "90s", "30m", "2h", "1d", "1h30m", or plain seconds; > 0. nullopt when malformed.
std::optional<int64_t> ParseSince(std::string_view text);

struct ProgramRun {
  bool started = false;
  std::string start_error;  // when !started: "not found" or the errno text
  int exit_code = -1;       // -1 when killed (by the deadline or a signal)
  bool timed_out = false;
  bool truncated = false;   // stdout was longer than the limit; the rest was read and dropped
  std::string out, err;     // err is kept to 64 KiB
};

// Runs argv (argv[0] searched in PATH) with stdin from /dev/null and LC_ALL=C, collecting stdout
// (up to max_out bytes) and stderr; SIGKILLs it at the deadline.
ProgramRun RunProgram(const std::vector<std::string>& argv, std::chrono::milliseconds timeout, size_t max_out);

}  // namespace sanigate::ctl
