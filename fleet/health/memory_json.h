// HealthMemory <-> JSON text, the form sanifleet keeps in registry.db (devices.health) so that a
// restart resumes every device's verdict and trackers; and the reasons as sanifleet publishes
// them. Kept apart from the evaluator, which is std only. Decoding never throws: a malformed or
// foreign text is nullopt (the device then starts from its registry entry alone). Pure
// functions, thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "health/health.h"

namespace sanigate::fleet {

std::string EncodeHealthMemory(const HealthMemory& memory);
std::optional<HealthMemory> DecodeHealthMemory(std::string_view text);

// The `reasons` array of a published verdict (fleet/health/{device}, the admin API):
// {"code","level","detail"} as always, plus "metric", "value", "threshold" when the reason rests
// on a measured value, and "stale": true for an alarm of a device that is offline.
nlohmann::json ReasonsToJson(const std::vector<HealthReason>& reasons);

}  // namespace sanigate::fleet
