// Per-device rules the pipeline applies: report-by-exception per metric and the overflow event's
// hysteresis. Adapters declare them from their device config; the pipeline enforces them.
// Plain values: thread-safe to copy.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

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

struct DeviceRules {
  std::map<std::string, MetricRule> metrics;
  std::optional<OverflowRule> overflow;
};

using RulesByDevice = std::unordered_map<std::string, DeviceRules>;

}  // namespace sanigate
