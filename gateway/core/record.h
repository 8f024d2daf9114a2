// Record: the normalized message every adapter emits (a reading, an event or a device status),
// and its priority in the outbox. Plain value type: thread-safe to copy and move between threads.
// The JSON encoding of CONTRACT §3 lives in record_json.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace sanigate {

enum class RecordType { kReading, kEvent, kStatus };

// Outbox priority: higher is published first and shed last. Alarms are never shed silently.
enum class Priority : int { kTelemetry = 0, kStatus = 1, kEvent = 2, kAlarm = 3 };
inline constexpr int kPriorityCount = 4;
const char* PriorityName(Priority p);

enum class EventState { kActive, kCleared };
enum class Severity { kInfo, kWarning, kCritical };
const char* EventStateName(EventState s);
const char* SeverityName(Severity s);

using MetricValue = std::variant<double, int64_t, bool, std::string>;

struct Metric {
  std::string name;  // snake_case with the unit in the name: fill_level_pct, temperature_c
  MetricValue value;
};

struct Location {
  double lat = 0;  // WGS-84 degrees
  double lon = 0;
};

struct Record {
  RecordType type = RecordType::kReading;
  int64_t ts_ms = 0;     // time of the measurement, not of publishing
  std::string device;    // configured id, [a-z0-9._-]+
  std::string kind;      // garbage_room, bin, vehicle, worker, gateway, or a configured kind
  std::string protocol;  // source.protocol: modbus, lorawan, jt808, ...
  std::vector<Metric> metrics;
  std::vector<Metric> source_extra;  // extra source fields (radio metadata, unit id, backfill)
  std::optional<Location> location;
  // Per-metric quality flags of a reading, e.g. {"fill_level_pct", "out_of_range"}.
  std::vector<std::pair<std::string, std::string>> quality;

  // kEvent only
  std::string event;  // overflow, fire, tilt, door_open, low_battery, sos, offline, ...
  EventState state = EventState::kActive;
  Severity severity = Severity::kWarning;
  std::string message;
  // The trigger level of the rule that derived the event (active_at), so a consumer can say
  // "nh3_ppm 12.4 >= 10"; unset for events a device reports itself.
  std::optional<double> threshold;

  // kStatus only
  bool online = false;
  std::optional<int64_t> last_seen_ms;
  std::string reason;

  // Events default to their severity; a caller may raise it (e.g. shed alarms).
  std::optional<Priority> priority_override;

  // Adapter progress that must become durable with this record, in the same outbox transaction
  // (e.g. the LoRaWAN uplink counter a reading came with): after a crash the adapter reads it
  // back (RecordSink::LastMark) and knows the record was stored, so a retransmission is not
  // published again under a new id. Not part of the published payload.
  struct Mark {
    std::string key, value;
  };
  std::optional<Mark> mark;

  Priority priority() const;
  const Metric* FindMetric(const std::string& name) const;
};

// Builders for the common shapes, so adapters stay short.
Record MakeReading(std::string device, std::string kind, std::string protocol, int64_t ts_ms);
Record MakeEvent(std::string device, std::string kind, std::string protocol, int64_t ts_ms,
                 std::string event, EventState state, Severity severity);
Record MakeStatus(std::string device, std::string kind, std::string protocol, int64_t ts_ms,
                  bool online, std::optional<int64_t> last_seen_ms, std::string reason = {});

}  // namespace sanigate
