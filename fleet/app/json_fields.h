// Readers of fields of untrusted JSON for sanifleet's decoders (model messages, gateway
// statuses, the heat-map inputs): a field that is missing or of another type reads as absent,
// never as an exception (nlohmann's get() throws on a type mismatch).
#pragma once

#include <cmath>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/untrusted.h"

namespace sanigate::fleet {

// The string at `key`, or "" when absent or not a string.
inline std::string Str(const nlohmann::json& j, const char* key) { return FieldString(j, key).value_or(""); }

// The finite number at `key`.
inline std::optional<double> Num(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  double v = it->get<double>();
  return std::isfinite(v) ? std::optional(v) : std::nullopt;
}

}  // namespace sanigate::fleet
