// Health thresholds of the fleet manager: one HealthThresholds set per device, chosen whole by
// profile, else by kind, else the defaults (no field-by-field merge: build an override by copying
// the defaults and changing fields). Plain value types; ThresholdsFor is a pure function.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sanigate::fleet {

struct HealthThresholds {
  // Silence. 0 = learn the interval from traffic (see IntervalLearner in trackers.h).
  int64_t expected_interval_ms = 0;
  int missed_reports_offline = 3;  // silent for interval × this → offline "silent"; <= 0 disables
  int missed_reports_degraded = 2;  // silent for interval × this → degraded "silent", if < offline

  // Battery (metrics battery_pct, battery_v of live readings).
  double low_battery_pct = 20;      // <= → degraded "low_battery"
  double critical_battery_pct = 5;  // <= → critical "low_battery"
  double low_battery_v = 3.3;       // <= → degraded "low_battery"

  // Radio, averaged over the last kRadioWindow (5) live readings; judged only on a full window.
  double weak_rssi_dbm = -120;  // mean < → degraded "weak_radio"
  double weak_snr_db = -15;     // mean < → degraded "weak_radio"

  // LoRaWAN frame loss over the last 100 expected frames (judged from 20 expected frames on).
  double packet_loss_pct = 10;  // > → degraded "packet_loss"

  // Modbus error rate over the delta between two request-counter samples.
  double modbus_error_pct = 20;           // > → degraded "modbus_errors"
  double critical_modbus_error_pct = 90;  // >= → critical "modbus_errors"

  // Stuck values: this many consecutive identical values of one watched metric spanning at
  // least stuck_min_ms of measurement time → degraded "stuck_value".
  int stuck_readings = 20;
  int64_t stuck_min_ms = 6 * 3600'000;
  std::vector<std::string> stuck_metrics = {"fill_level_pct", "temperature_c", "nh3_ppm", "h2s_ppm",
                                            "water_level_pct"};

  // An overflow event active this long → critical "overflow_unattended"; before, degraded
  // "overflow". Other alarms: sos → critical "sos"; fire → critical "alarm"; any other active
  // event with severity critical → critical "alarm", warning (or unset) → degraded "alarm",
  // info → no reason.
  int64_t overflow_unattended_ms = 2 * 3600'000;
};

struct HealthConfig {
  HealthThresholds defaults;
  std::map<std::string, HealthThresholds> by_kind, by_profile;
};

// The set that applies to a device: by_profile[profile] if present (and profile non-empty),
// else by_kind[kind], else defaults. The reference points into `config`.
const HealthThresholds& ThresholdsFor(const HealthConfig& config, const std::string& kind,
                                      const std::string& profile);

}  // namespace sanigate::fleet
