#include "app/model_message.h"

#include <cmath>
#include <limits>

#include "app/json_fields.h"
#include "core/untrusted.h"

namespace sanigate::fleet {
namespace {

using json = nlohmann::json;

// A counter sent as a number: whole and within int64 (a cast of anything else is undefined).
std::optional<int64_t> Count(const json& j, const char* key) {
  auto v = Num(j, key);
  if (!v || *v != std::floor(*v) || std::fabs(*v) >= 9.2e18) return std::nullopt;
  return static_cast<int64_t>(*v);
}

}  // namespace

std::optional<ModelMessage> DecodeModelMessage(const std::string& leaf, const std::string& payload, std::string* error) {
  if (leaf != "telemetry" && leaf != "event" && leaf != "status") {
    if (error) *error = "not a device message of the model";
    return std::nullopt;
  }
  auto parsed = ParseUntrustedJson(payload, {.max_bytes = kMaxDeviceMessageBytes, .max_depth = 16});
  if (!parsed.ok() || !parsed->is_object()) {
    if (error) *error = parsed.ok() ? "not a JSON object" : parsed.status().message();
    return std::nullopt;
  }
  ModelMessage m;
  m.doc = std::move(*parsed);
  const json& j = m.doc;
  Observation& obs = m.obs;
  RegistryDelta& d = m.delta;
  obs.ts_ms = FieldInt64(j, "ts").value_or(0);
  obs.kind = d.kind = Str(j, "kind");
  const json empty = json::object();
  auto src_it = j.find("source");
  const json& source = src_it != j.end() && src_it->is_object() ? *src_it : empty;
  obs.profile = d.profile = Str(source, "profile");
  d.protocol = Str(source, "protocol");
  d.gateway = Str(source, "gateway");
  d.firmware = Str(source, "firmware");
  d.model = Str(source, "model");
  obs.backfill = FieldBool(source, "backfill").value_or(false);
  if (auto loc = j.find("location"); loc != j.end() && loc->is_object() && leaf != "status") {
    auto lat = Num(*loc, "lat"), lon = Num(*loc, "lon");
    if (lat && lon && std::fabs(*lat) <= 90 && std::fabs(*lon) <= 180) m.location = std::pair{*lat, *lon};
  }

  // Numbers and booleans (0/1) are observed: a reading's values, an event's triggering value.
  if (auto mit = j.find("metrics"); mit != j.end() && mit->is_object() && leaf != "status") {
    for (auto it = mit->begin(); it != mit->end(); ++it) {
      if (it->is_number()) {
        if (double v = it->get<double>(); std::isfinite(v)) obs.metrics.emplace_back(it.key(), v);
      } else if (it->is_boolean()) {
        obs.metrics.emplace_back(it.key(), it->get<bool>() ? 1.0 : 0.0);
      }
    }
    if (leaf == "telemetry") d.metrics = *mit;
  }
  if (leaf == "telemetry") {
    obs.type = Observation::Type::kReading;
    if (auto q = j.find("quality"); q != j.end() && q->is_object())
      for (auto it = q->begin(); it != q->end(); ++it)
        if (it->is_string()) obs.quality.emplace_back(it.key(), it->get<std::string>());
    obs.rssi_dbm = Num(source, "rssi_dbm");
    obs.snr_db = Num(source, "snr_db");
    obs.fcnt = Count(source, "fcnt");
    obs.frames_lost = Count(source, "frames_lost");
    d.location = m.location;  // only a reading moves the device; an event's location places the event
  } else if (leaf == "event") {
    obs.type = Observation::Type::kEvent;
    obs.event = Str(j, "event");
    obs.event_active = Str(j, "state") == "active";
    obs.severity = Str(j, "severity");
    obs.threshold = Num(j, "threshold");  // the rule's level, when the event carries it
  } else {
    obs.type = Observation::Type::kStatus;
    obs.online = FieldBool(j, "online").value_or(false);
    d.online = obs.online;
    d.last_seen_ms = FieldInt64(j, "last_seen");
  }
  return m;
}

void ApplyToEntry(const ModelMessage& m, DeviceEntry& e, int64_t now_ms) {
  const Observation& obs = m.obs;
  const RegistryDelta& d = m.delta;
  for (auto [kept, said] : {std::pair{&e.kind, &d.kind}, {&e.profile, &d.profile}, {&e.protocol, &d.protocol},
                            {&e.gateway, &d.gateway}, {&e.firmware, &d.firmware}, {&e.model, &d.model}})
    if (!said->empty()) *kept = *said;
  switch (obs.type) {
    case Observation::Type::kReading: {
      // The registry keeps the latest value of every metric; a back-filled point is history.
      bool current = !obs.backfill || obs.ts_ms >= e.metrics_ts_ms;
      if (current && d.metrics.is_object()) {
        for (auto it = d.metrics.begin(); it != d.metrics.end(); ++it) e.metrics[it.key()] = *it;
        e.metrics_ts_ms = std::max(e.metrics_ts_ms, obs.ts_ms);
      }
      if (current && d.location) e.location = d.location;
      if (!obs.backfill) e.last_seen_ms = now_ms;
      break;
    }
    case Observation::Type::kEvent:
      if (!obs.backfill) e.last_seen_ms = now_ms;
      break;
    case Observation::Type::kStatus:
      e.online = d.online;
      if (d.last_seen_ms && e.last_seen_ms == 0) e.last_seen_ms = *d.last_seen_ms;
      break;
  }
}

}  // namespace sanigate::fleet
