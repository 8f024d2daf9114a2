// Per-device health state machine of the fleet manager (sanifleet): turns normalized readings,
// events, statuses and Modbus request counters into a verdict (state + reasons) per device, with
// timers for silence and unattended overflow. The evaluator owns all per-device state; callers
// own parsing, I/O and the clock (time is always passed in as now_ms). Not thread-safe: one owner
// thread calls everything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "health/thresholds.h"

namespace sanigate::fleet {

enum class HealthState : uint8_t { kUnknown, kOk, kDegraded, kCritical, kOffline };

// "unknown", "ok", "degraded", "critical", "offline".
const char* HealthStateName(HealthState state);
std::optional<HealthState> ParseHealthState(std::string_view name);

// Stable reason codes (snake_case), as published in the fleet/health payload.
namespace reason {
inline constexpr std::string_view kSilent = "silent";
inline constexpr std::string_view kOffline = "offline";
inline constexpr std::string_view kLowBattery = "low_battery";
inline constexpr std::string_view kWeakRadio = "weak_radio";
inline constexpr std::string_view kPacketLoss = "packet_loss";
inline constexpr std::string_view kModbusErrors = "modbus_errors";
inline constexpr std::string_view kStuckValue = "stuck_value";
inline constexpr std::string_view kOutOfRange = "out_of_range";
inline constexpr std::string_view kOverflow = "overflow";
inline constexpr std::string_view kOverflowUnattended = "overflow_unattended";
inline constexpr std::string_view kSos = "sos";
inline constexpr std::string_view kAlarm = "alarm";
}  // namespace reason

struct HealthReason {
  std::string code;                            // one of reason::k*
  HealthState level = HealthState::kDegraded;  // kDegraded, kCritical or kOffline
  // Human text with the numbers, e.g. "battery_pct 12 <= 20", "odour: nh3_ppm 12.4 >= 10",
  // "no traffic for 25m (offline after 3 x expected interval 5m)"; an alarm of a device that is
  // offline ends with kStaleSuffix.
  std::string detail;
  std::string subject;  // the metric or event concerned (stuck_value, out_of_range, alarm), or ""
  // What a threshold reason rests on, when known: the metric, its latest value and the level it
  // is judged against (alarm and overflow: the event's metric and its rule's level).
  std::string metric;
  std::optional<double> value, threshold;
  // An alarm (alarm, sos, overflow, overflow_unattended) of a device that is offline: the last
  // thing it said, not known to be true now.
  bool stale = false;
};

inline constexpr std::string_view kStaleSuffix = " (stale: device offline)";

// One message of the normalized model (CONTRACT §3) about one device, parsed by the caller.
struct Observation {
  enum class Type { kReading, kEvent, kStatus };
  Type type = Type::kReading;
  int64_t ts_ms = 0;                  // measurement time from the payload
  std::string device, kind, profile;  // kind/profile may be empty: the last non-empty one is kept
  // Numeric and boolean (0/1) metrics only. kEvent: the event's own metrics (the value that
  // raised or cleared it), which alarm and overflow reasons quote.
  std::vector<std::pair<std::string, double>> metrics;
  std::vector<std::pair<std::string, std::string>> quality;  // {"fill_level_pct","out_of_range"}
  bool backfill = false;  // a late point (JT/T 808 batch): history, never "seen now"
  std::optional<double> rssi_dbm, snr_db;  // radio metadata from payload "source"
  std::optional<int64_t> fcnt;             // LoRaWAN frame counter of this uplink
  std::optional<int64_t> frames_lost;      // cumulative lost-frame count from the gateway
  // kEvent
  std::string event;  // overflow, fire, tilt, door_open, low_battery, sos, offline, odour, ...
  bool event_active = false;  // state "active" (true) vs "cleared"
  std::string severity;       // info, warning, critical
  // The level of the gateway's rule that raised it, when the event carries one: the reason then
  // reads "nh3_ppm 12.4 >= 10" ("<=" for a value below it).
  std::optional<double> threshold;
  // kStatus (the gateway's retained device status)
  bool online = false;
};

struct HealthVerdict {
  std::string device, kind;
  HealthState state = HealthState::kUnknown;
  std::vector<HealthReason> reasons;  // most severe first, then by code, then by subject
  int64_t since_ms = 0;               // now_ms of the call that last changed the state
  int64_t last_seen_ms = 0;           // now_ms of the last live reading/event (0 = never)
  int64_t expected_interval_ms = 0;   // configured or learned; 0 = not known yet
};

struct HealthChange {
  HealthVerdict verdict;
  HealthState previous = HealthState::kUnknown;
  bool state_changed = false;  // false when only the reasons changed
};

// What the evaluator knows about one device beyond its registry entry (last seen, interval):
// the verdict with its reasons and the trackers behind the threshold verdicts. Saved by the
// owner (sanifleet writes it to registry.db) and handed back to Restore after a restart, so
// that an active overflow, alarm or low battery stays a reason until it clears. Plain values.
struct HealthMemory {
  HealthState state = HealthState::kUnknown;
  int64_t since_ms = 0;
  std::vector<HealthReason> reasons;
  std::optional<int64_t> overflow_since_ms;  // measurement time the active overflow began
  std::optional<double> battery_pct, battery_v, modbus_error_pct;
  bool has_counters = false;  // Modbus request/error counters of the last gateway status
  uint64_t requests = 0, errors = 0, delta_requests = 0;
  std::vector<double> rssi_dbm, snr_db;  // the radio windows, oldest first
  struct Loss {
    uint64_t bits_lo = 0, bits_hi = 0;
    int head = 0, filled = 0;
    int64_t last_fcnt = -1, last_lost = -1;
  } loss;
  struct Stuck {
    std::string metric;
    double value = 0;
    uint32_t count = 0;
    int64_t first_ts = 0, last_ts = 0;
  };
  std::vector<Stuck> stuck;
};

// Counters for the owner's own status page and for tests.
struct HealthStats {
  uint64_t timer_evaluations = 0;  // devices re-evaluated by Tick since construction
  size_t scheduled = 0;            // devices with a pending timer
};

class HealthEvaluator {
 public:
  explicit HealthEvaluator(HealthConfig config = {});
  ~HealthEvaluator();
  HealthEvaluator(HealthEvaluator&&) noexcept;
  HealthEvaluator& operator=(HealthEvaluator&&) noexcept;
  HealthEvaluator(const HealthEvaluator&) = delete;
  HealthEvaluator& operator=(const HealthEvaluator&) = delete;

  // Each returns the change it caused if the state or the set of reasons (code, subject, level)
  // changed; a detail-only update (new numbers) is not a change. Unknown devices are created.
  std::optional<HealthChange> Observe(const Observation& obs, int64_t now_ms);
  // Cumulative Modbus request/error counters of one device (gateway status, every ~30 s). The
  // error rate is judged on the delta to the previous call; a counter that went down (gateway
  // restart) starts a new baseline and judges nothing.
  std::optional<HealthChange> ObserveRequestCounters(const std::string& device, uint64_t requests,
                                                     uint64_t errors, int64_t now_ms);
  // Fires the timers due at now_ms (silence degraded/offline, overflow becoming unattended,
  // restored devices, re-evaluation after SetConfig). Cost: O(k log n) for k due devices.
  std::vector<HealthChange> Tick(int64_t now_ms);
  // After a restart: a device known from the registry with its last seen time and its learned
  // interval (0 = unknown). It stays `unknown` until the next Tick(>= now_ms), which computes its
  // state from silence (ok, degraded or offline). Merges into an existing device.
  void Restore(const std::string& device, const std::string& kind, const std::string& profile,
               int64_t last_seen_ms, int64_t learned_interval_ms, int64_t now_ms);
  // The same with what Memory() returned before the restart: the device resumes with its stored
  // verdict (state, since, reasons) and trackers instead of `unknown`; the next Tick re-judges
  // what depends on time or thresholds and reports only real changes.
  void Restore(const std::string& device, const std::string& kind, const std::string& profile,
               int64_t last_seen_ms, int64_t learned_interval_ms, int64_t now_ms,
               const HealthMemory& memory);
  // What to save for a device (nullopt for an unknown device).
  std::optional<HealthMemory> Memory(const std::string& device) const;
  void Forget(const std::string& device);

  // Pointers stay valid until the device is forgotten or the evaluator is destroyed.
  const HealthVerdict* Find(const std::string& device) const;
  std::vector<const HealthVerdict*> All() const;  // any order
  size_t size() const;
  // ms of the earliest pending timer, or INT64_MAX. 0 right after SetConfig (everything due).
  int64_t NextDeadline() const;
  // sanifleet could not hear the fleet from `from_ms` to `resume_ms` (its own link was down, or it
  // was not running): silence deadlines that fell in that window move to resume_ms + the
  // device's expected interval, so nobody is declared silent for messages sanifleet could not
  // receive. Devices already silent before `from_ms` keep their verdict. Every device is
  // re-judged at the next Tick.
  void PauseSilence(int64_t from_ms, int64_t resume_ms);
  // Replaces the thresholds. Every device is re-judged with the new ones at the next Tick (its
  // changes are reported there), not here.
  void SetConfig(HealthConfig config);
  HealthStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sanigate::fleet
