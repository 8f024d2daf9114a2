// Per-device rules the pipeline applies: report-by-exception per metric and the overflow event's
// hysteresis. Adapters declare them from their device config; the pipeline enforces them.
// Plain values: thread-safe to copy.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/record.h"

namespace sanigate {

struct MetricRule {
  std::optional<double> deadband;  // absent: every reading is published
  int64_t max_silence_ms = 300'000;  // with a deadband: publish at least this often
};

struct OverflowRule {
  std::string metric = "fill_level_pct";
  double active_at = 90;   // event active when the level reaches this
  double clear_below = 80; // cleared when it falls below this (hysteresis)
};

// A state event derived from one metric, with hysteresis: `door_open` while a bool is true,
// `fire` when temperature_c reaches 60 until it falls below 50, `low_battery` (below = true)
// when battery_pct drops to 15 until it rises above 20.
struct EventRule {
  std::string event;
  std::string metric;
  std::optional<double> active_at;  // absent: the metric is a bool, active while true
  std::optional<double> clear_at;   // absent: same as active_at
  bool below = false;               // active at or below active_at instead of at or above
  Severity severity = Severity::kWarning;
};

// fill_level_pct from an ultrasonic distance: 0 % at empty_distance (the bin's depth), 100 %
// at full_distance (the sensor's blind zone), clamped to 0..100.
struct FillRule {
  std::string from_metric = "distance_mm";
  double empty_distance = 1000;
  double full_distance = 100;
  std::string metric = "fill_level_pct";
};

struct DeviceRules {
  std::map<std::string, MetricRule> metrics;
  std::optional<FillRule> fill;
  std::optional<OverflowRule> overflow;
  std::vector<EventRule> events;
};

using RulesByDevice = std::unordered_map<std::string, DeviceRules>;

}  // namespace sanigate
