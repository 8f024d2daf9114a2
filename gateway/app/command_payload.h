// The payload of a device command (`.../devices/{device}/cmd/{name}`), as anyone allowed to
// publish there may send it: {"args":[...]}, {"value":...}, {"timeout_ms":N} with or without
// either, a bare JSON string/number/boolean, or plain text (space-separated arguments).
// Pure and bounded: the size, depth, argument count and length are checked before anything is
// built, and errors quote at most a short escaped prefix. Fuzzed (tests/fuzz).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace sanigate::app {

constexpr size_t kMaxCommandPayloadBytes = 4096;
constexpr size_t kMaxCommandArgs = 16;
constexpr size_t kMaxCommandArgBytes = 256;

struct CommandPayload {
  std::vector<std::string> args;
  std::chrono::milliseconds timeout{0};  // 0: the command's own timeout
};

Result<CommandPayload> ParseCommandPayload(std::string_view payload);

}  // namespace sanigate::app
