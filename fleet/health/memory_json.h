// HealthMemory <-> JSON text, the form sanifleet keeps in registry.db (devices.health) so that a
// restart resumes every device's verdict and trackers. Kept apart from the evaluator, which is
// std only. Decoding never throws: a malformed or foreign text is nullopt (the device then starts
// from its registry entry alone). Pure functions, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "health/health.h"

namespace sanigate::fleet {

std::string EncodeHealthMemory(const HealthMemory& memory);
std::optional<HealthMemory> DecodeHealthMemory(std::string_view text);

}  // namespace sanigate::fleet
