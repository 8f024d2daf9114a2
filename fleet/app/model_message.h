// One device message of the normalized model ({prefix}/{site}/devices/{id}/telemetry|event|status),
// decoded without I/O into what the health evaluator observes and what the registry learns, so
// the rules are unit-tested on golden payloads and fuzzed. A field of an unexpected type counts as
// absent; a message is refused only when it is not a JSON object within the limits.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "health/health.h"
#include "registry/registry.h"

namespace sanigate::fleet {

constexpr size_t kMaxDeviceMessageBytes = 256 * 1024;

// What the message says about the device's registry entry.
struct RegistryDelta {
  std::string kind, profile, protocol, gateway, firmware, model;  // empty: not said
  nlohmann::json metrics;  // telemetry: the metrics object as sent; null when there is none
  std::optional<std::pair<double, double>> location;              // a valid lat, lon of the message
  std::optional<bool> online;                                     // status
  std::optional<int64_t> last_seen_ms;                            // status: the gateway's last_seen
};

struct ModelMessage {
  Observation obs;      // obs.device is left to the caller (the registry key)
  RegistryDelta delta;
  // The message's own valid lat, lon (a reading's or an event's), for the heat map.
  std::optional<std::pair<double, double>> location;
  nlohmann::json doc;   // the whole message, for the heat-map feed
};

// nullopt, with the reason in `error`, for what is not a model message: bad JSON, not an object,
// over the limits, or a leaf other than telemetry, event and status.
std::optional<ModelMessage> DecodeModelMessage(const std::string& leaf, const std::string& payload, std::string* error);

// The registry's rules: identity fields that are said replace the kept ones; a back-filled
// message is history (its metrics and location are kept only when not older than the kept ones,
// and it is not "seen now"); a status sets online, and last_seen when nothing was seen yet.
void ApplyToEntry(const ModelMessage& m, DeviceEntry& e, int64_t now_ms);

}  // namespace sanigate::fleet
