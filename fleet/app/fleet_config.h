// The sanifleet configuration: [fleet] (identity, data dir, which sites to follow), [mqtt]
// (shared with the gateway's parser), [health] thresholds with per-kind and per-profile
// overrides, and [health.gateways] for the gateways' verdicts. Plain values after loading.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "health/thresholds.h"
#include "heatmap/heatmap.h"
#include "settings/gateway_config.h"

namespace sanigate::fleet {

struct FleetSection {
  std::string id;                       // in record ids, client id and the fleet's own status
  std::string site;                     // the site whose fleet/admin topics it answers
  std::vector<std::string> sites;       // sites it follows; "+" = every site on the broker
  std::string data_dir = "/var/lib/sanifleet";
  std::string topic_prefix = "sanigate/v1";
  std::string log_level = "info";
  int64_t session_expiry_s = 3600;     // the broker queues the fleet's messages this long while sanifleet is away
  int64_t registry_flush_ms = 5000;     // registry changes reach SQLite within this (a flush writes every changed device)
  int64_t status_interval_s = 30;       // the fleet's retained status
  int64_t shutdown_drain_ms = 2000;
};

// Verdicts on gateways, from their retained status.
struct GatewayThresholds {
  int64_t outbox_pending_degraded = 10'000;   // records waiting → degraded "outbox_backlog"
  int64_t outbox_oldest_degraded_s = 900;     // oldest waiting record older than this → degraded
  int64_t outbox_oldest_critical_s = 6 * 3600;
  int64_t status_silence_s = 120;             // no status for this long while "online" → offline "silent"
  int flaps_degraded = 3;                     // online/offline changes within flap_window_s → degraded "link_flapping"
  int64_t flap_window_s = 600;
};

// [firmware]: the operators' public keys images must be signed with, and the chunk size served.
struct FirmwareSection {
  std::vector<std::string> trusted_keys;  // PEM files
  int64_t max_chunk_kib = 256;
};

struct FleetConfig {
  std::string file;
  FleetSection fleet;
  settings::MqttSection mqtt;
  HealthConfig health;
  GatewayThresholds gateways;
  heatmap::HeatmapConfig heatmap;
  FirmwareSection firmware;
  settings::MetricsSection metrics;  // [metrics]: listen, allow_remote (no per-device series here)
  std::string RegistryPath() const;  // data_dir/registry.db
};

// Every problem at once, one per line, "FILE:LINE:COL: key.path: problem" (as sanigate's).
Result<FleetConfig> LoadFleetConfig(const std::string& path);
// "90s", "15m", "1h", "1d" → seconds; nullopt when malformed or not positive.
std::optional<int64_t> ParseDurationS(std::string_view text);
Result<FleetConfig> LoadFleetConfigString(std::string_view text, const std::string& name);

}  // namespace sanigate::fleet
