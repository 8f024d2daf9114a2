#include "app/fleet_config.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

namespace sanigate::fleet {
namespace {

using settings::Node;

void ParseFleet(Node& n, FleetSection& f) {
  if (auto id = n.RequiredId("id")) f.id = *id;
  if (auto site = n.RequiredId("site")) f.site = *site;
  f.sites = {f.site};
  if (n.Has("sites")) {
    f.sites = n.StringArray("sites");
    for (const auto& s : f.sites)
      if (s != "+" && !settings::IsValidId(s)) n.Problem("sites", "\"" + s + "\" is not a site id ([a-z0-9._-]+) or \"+\"");
    if (f.sites.empty()) n.Problem("sites", "must name at least one site (or \"+\" for all)");
  }
  f.data_dir = n.String("data_dir", f.data_dir);
  if (f.data_dir.empty()) n.Problem("data_dir", "must not be empty");
  f.topic_prefix = settings::ReadTopicPrefix(n, f.topic_prefix);
  f.log_level = n.OneOf("log_level", f.log_level, {"trace", "debug", "info", "warn", "error"});
  f.registry_flush_ms = n.Int("registry_flush_ms", f.registry_flush_ms, 10, 60000);
  f.session_expiry_s = n.Int("session_expiry_s", f.session_expiry_s, 0, 7 * 86400);
  f.status_interval_s = n.Int("status_interval_s", f.status_interval_s, 1, 3600);
  f.shutdown_drain_ms = n.Int("shutdown_drain_ms", f.shutdown_drain_ms, 0, 60000);
  n.Finish();
}

// Keys a threshold table may set; an override starts from the defaults.
void ParseThresholds(Node& n, HealthThresholds& t) {
  if (n.Has("expected_interval_s")) t.expected_interval_ms = n.Int("expected_interval_s", 0, 1, 30 * 86400) * 1000;
  t.missed_reports_offline = static_cast<int>(n.Int("missed_reports_offline", t.missed_reports_offline, 0, 1000));
  t.missed_reports_degraded = static_cast<int>(n.Int("missed_reports_degraded", t.missed_reports_degraded, 0, 1000));
  t.low_battery_pct = n.Double("low_battery_pct", t.low_battery_pct, 0, 100);
  t.critical_battery_pct = n.Double("critical_battery_pct", t.critical_battery_pct, 0, 100);
  t.low_battery_v = n.Double("low_battery_v", t.low_battery_v, 0, 100);
  t.weak_rssi_dbm = n.Double("weak_rssi_dbm", t.weak_rssi_dbm, -200, 0);
  t.weak_snr_db = n.Double("weak_snr_db", t.weak_snr_db, -50, 50);
  t.packet_loss_pct = n.Double("packet_loss_pct", t.packet_loss_pct, 0, 100);
  t.modbus_error_pct = n.Double("modbus_error_pct", t.modbus_error_pct, 0, 100);
  t.critical_modbus_error_pct = n.Double("critical_modbus_error_pct", t.critical_modbus_error_pct, 0, 100);
  t.stuck_readings = static_cast<int>(n.Int("stuck_readings", t.stuck_readings, 2, 100000));
  t.stuck_min_ms = n.Int("stuck_min_s", t.stuck_min_ms / 1000, 0, 30 * 86400) * 1000;
  if (n.Has("stuck_metrics")) t.stuck_metrics = n.StringArray("stuck_metrics");
  t.overflow_unattended_ms = n.Int("overflow_unattended_s", t.overflow_unattended_ms / 1000, 1, 30 * 86400) * 1000;
  if (t.critical_battery_pct > t.low_battery_pct)
    n.Problem("critical_battery_pct", "is above low_battery_pct (" + std::to_string(t.low_battery_pct) + ")");
  if (t.missed_reports_degraded > 0 && t.missed_reports_offline > 0 && t.missed_reports_degraded >= t.missed_reports_offline)
    n.Problem("missed_reports_degraded", "must be below missed_reports_offline (" + std::to_string(t.missed_reports_offline) + ")");
}

void ParseHealth(Node& n, FleetConfig& cfg) {
  ParseThresholds(n, cfg.health.defaults);
  for (auto& o : n.TableArray("overrides")) {
    bool has_kind = o.Has("kind"), has_profile = o.Has("profile");
    std::string kind = o.String("kind", ""), profile = o.String("profile", "");
    HealthThresholds t = cfg.health.defaults;
    ParseThresholds(o, t);
    if (has_kind == has_profile) {
      o.Problem("kind", "give exactly one of kind or profile");
    } else if (has_kind) {
      if (!cfg.health.by_kind.emplace(kind, t).second) o.Problem("kind", "\"" + kind + "\" has another override above");
    } else {
      if (!cfg.health.by_profile.emplace(profile, t).second) o.Problem("profile", "\"" + profile + "\" has another override above");
    }
    o.Finish();
  }
  if (auto g = n.Table("gateways")) {
    auto& t = cfg.gateways;
    t.outbox_pending_degraded = g->Int("outbox_pending_degraded", t.outbox_pending_degraded, 1, 1'000'000'000);
    t.outbox_oldest_degraded_s = g->Int("outbox_oldest_degraded_s", t.outbox_oldest_degraded_s, 1, 365 * 86400);
    t.outbox_oldest_critical_s = g->Int("outbox_oldest_critical_s", t.outbox_oldest_critical_s, 1, 365 * 86400);
    t.status_silence_s = g->Int("status_silence_s", t.status_silence_s, 1, 86400);
    t.flaps_degraded = static_cast<int>(g->Int("flaps_degraded", t.flaps_degraded, 1, 1000));
    t.flap_window_s = g->Int("flap_window_s", t.flap_window_s, 1, 86400);
    g->Finish();
  }
  n.Finish();
}

// [heatmap]: the "one map" feed (fleet/README.md "The heat map").
void ParseHeatmap(Node& n, heatmap::HeatmapConfig& h) {
  h.enabled = n.Bool("enabled", h.enabled);
  if (n.Has("layers")) {
    h.layers.clear();
    for (const auto& name : n.StringArray("layers")) {
      auto layer = heatmap::ParseLayer(name);
      if (!layer) n.Problem("layers", "\"" + name + "\" is not a layer (vehicle_coverage, bin_fill, overflow, alarms, workers, unattended)");
      else if (!h.Has(*layer)) h.layers.push_back(*layer);
    }
  }
  h.feed_precision = static_cast<int>(n.Int("feed_precision", h.feed_precision, heatmap::kCoarsestPrecision, heatmap::kStoragePrecision));
  if (n.Has("windows")) {
    h.windows_s.clear();
    for (const auto& w : n.StringArray("windows")) {
      auto s = ParseDurationS(w);
      if (!s) n.Problem("windows", "\"" + w + "\" is not a duration like \"15m\", \"1h\" or \"24h\"");
      else if (86400 % *s != 0) n.Problem("windows", "\"" + w + "\" does not divide a day, so its windows would not line up day after day");
      else if (std::find(h.windows_s.begin(), h.windows_s.end(), *s) == h.windows_s.end()) h.windows_s.push_back(*s);
    }
    std::sort(h.windows_s.begin(), h.windows_s.end());
    // Points land in the smallest windows, which are folded into the larger ones: each must nest.
    for (int64_t w : h.windows_s)
      if (w % h.windows_s.front() != 0)
        n.Problem("windows", std::to_string(w) + " s is not a multiple of the smallest window (" + std::to_string(h.windows_s.front()) + " s)");
    if (n.Has("windows") && h.windows_s.empty()) n.Problem("windows", "name at least one window");
  }
  h.retention_s = n.Int("retention_s", h.retention_s, 60, 30 * 86400);
  if (n.Has("utc_offset")) {
    std::string o = n.String("utc_offset", "");
    int hh = 0, mm = 0;
    char sign = 0;
    if (o.size() == 6 && (o[0] == '+' || o[0] == '-') && o[3] == ':' && std::sscanf(o.c_str(), "%c%2d:%2d", &sign, &hh, &mm) == 3 &&
        hh <= 14 && mm < 60)
      h.utc_offset_s = (sign == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    else
      n.Problem("utc_offset", "\"" + o + "\" is not an offset like \"+08:00\"");
  }
  h.crs = n.OneOf("crs", "wgs84", {"wgs84", "gcj02"}) == "gcj02" ? heatmap::Crs::kGcj02 : heatmap::Crs::kWgs84;
  h.feed_interval_ms = n.Int("feed_interval_ms", h.feed_interval_ms, 100, 3600'000);
  h.unattended_after_s = n.Int("unattended_after_s", h.unattended_after_s, 60, 7 * 86400);
  h.unattended_precision = static_cast<int>(n.Int("unattended_precision", h.unattended_precision, heatmap::kCoarsestPrecision, heatmap::kStoragePrecision));
  h.state_max_age_s = n.Int("state_max_age_s", h.state_max_age_s, 1, 86400);
  h.max_gap_s = n.Int("max_gap_s", h.max_gap_s, 1, 86400);
  h.pass_gap_s = n.Int("pass_gap_s", h.pass_gap_s, 1, 86400);
  h.max_future_s = n.Int("max_future_s", h.max_future_s, 0, 86400);
  h.snapshot_interval_s = n.Int("snapshot_interval_s", h.snapshot_interval_s, 0, 86400);
  n.Finish();
}

Result<FleetConfig> Walk(settings::ParsedFile parsed, settings::ConfigErrors& errors, const std::string& name) {
  FleetConfig cfg;
  cfg.file = name;
  if (parsed.table) {
    Node root(*parsed.table, "", errors);
    if (auto f = root.Table("fleet")) ParseFleet(*f, cfg.fleet);
    else errors.Add(1, 1, "fleet", "required section is missing");
    std::string client_id = "sanifleet-" + cfg.fleet.id;
    if (auto m = root.Table("mqtt")) settings::ParseMqttSection(*m, cfg.mqtt, client_id);
    else cfg.mqtt.client_id = client_id;
    if (auto h = root.Table("health")) ParseHealth(*h, cfg);
    if (auto h = root.Table("heatmap")) ParseHeatmap(*h, cfg.heatmap);
    if (auto m = root.Table("metrics")) settings::ParseMetricsSection(*m, cfg.metrics, false);
    if (auto f = root.Table("firmware")) {
      if (f->Has("trusted_keys")) cfg.firmware.trusted_keys = f->StringArray("trusted_keys");
      for (const auto& k : cfg.firmware.trusted_keys)
        if (!std::filesystem::exists(k)) f->Problem("trusted_keys", "no such file " + k);
      cfg.firmware.max_chunk_kib = f->Int("max_chunk_kib", cfg.firmware.max_chunk_kib, 1, 1024);
      f->Finish();
    }
    root.Finish();
  }
  if (!errors.empty()) return Invalid(errors.Joined());
  return cfg;
}

}  // namespace

std::string FleetConfig::RegistryPath() const { return (std::filesystem::path(fleet.data_dir) / "registry.db").string(); }

std::optional<int64_t> ParseDurationS(std::string_view text) {
  if (text.size() < 2) return std::nullopt;
  int64_t unit = 0;
  switch (text.back()) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    default: return std::nullopt;
  }
  int64_t v = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9' || v > 1'000'000) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v <= 0) return std::nullopt;
  return v * unit;
}

Result<FleetConfig> LoadFleetConfig(const std::string& path) {
  settings::ConfigErrors errors(path);
  return Walk(settings::ParseFile(path, errors), errors, path);
}

Result<FleetConfig> LoadFleetConfigString(std::string_view text, const std::string& name) {
  settings::ConfigErrors errors(name);
  return Walk(settings::ParseString(text, name, errors), errors, name);
}

}  // namespace sanigate::fleet
