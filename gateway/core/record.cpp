#include "core/record.h"

namespace sanigate {

const char* PriorityName(Priority p) {
  switch (p) {
    case Priority::kTelemetry: return "telemetry";
    case Priority::kStatus: return "status";
    case Priority::kEvent: return "event";
    case Priority::kAlarm: return "alarm";
  }
  return "telemetry";
}

const char* EventStateName(EventState s) { return s == EventState::kActive ? "active" : "cleared"; }

const char* SeverityName(Severity s) {
  switch (s) {
    case Severity::kInfo: return "info";
    case Severity::kWarning: return "warning";
    case Severity::kCritical: return "critical";
  }
  return "warning";
}

Priority Record::priority() const {
  if (priority_override) return *priority_override;
  switch (type) {
    case RecordType::kReading: return Priority::kTelemetry;
    case RecordType::kStatus: return Priority::kStatus;
    case RecordType::kEvent:
      return severity == Severity::kCritical ? Priority::kAlarm : Priority::kEvent;
  }
  return Priority::kTelemetry;
}

const Metric* Record::FindMetric(const std::string& name) const {
  for (const auto& m : metrics)
    if (m.name == name) return &m;
  return nullptr;
}

Record MakeReading(std::string device, std::string kind, std::string protocol, int64_t ts_ms) {
  Record r;
  r.type = RecordType::kReading;
  r.device = std::move(device);
  r.kind = std::move(kind);
  r.protocol = std::move(protocol);
  r.ts_ms = ts_ms;
  return r;
}

Record MakeEvent(std::string device, std::string kind, std::string protocol, int64_t ts_ms,
                 std::string event, EventState state, Severity severity) {
  Record r = MakeReading(std::move(device), std::move(kind), std::move(protocol), ts_ms);
  r.type = RecordType::kEvent;
  r.event = std::move(event);
  r.state = state;
  r.severity = severity;
  return r;
}

Record MakeStatus(std::string device, std::string kind, std::string protocol, int64_t ts_ms,
                  bool online, std::optional<int64_t> last_seen_ms, std::string reason) {
  Record r = MakeReading(std::move(device), std::move(kind), std::move(protocol), ts_ms);
  r.type = RecordType::kStatus;
  r.online = online;
  r.last_seen_ms = last_seen_ms;
  r.reason = std::move(reason);
  return r;
}

}  // namespace sanigate
