#include "core/record_json.h"

#include <cmath>
#include <nlohmann/json.hpp>

namespace sanigate {
namespace {

using json = nlohmann::ordered_json;

json MetricJson(const MetricValue& v) {
  return std::visit(
      [](const auto& x) -> json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, double>) {
          // NaN/Inf are not JSON; a sensor that produces them is reported as null.
          if (!std::isfinite(x)) return nullptr;
          return x;
        } else {
          return x;
        }
      },
      v);
}

json MetricsJson(const std::vector<Metric>& metrics) {
  json m = json::object();
  for (const auto& metric : metrics) {
    // NaN/Inf have no JSON form: such a metric is left out rather than sent as null.
    if (auto d = std::get_if<double>(&metric.value); d && !std::isfinite(*d)) continue;
    m[metric.name] = MetricJson(metric.value);
  }
  return m;
}

json SourceJson(const Record& r, const EncodeContext& ctx) {
  json s = {{"protocol", r.protocol}, {"gateway", ctx.gateway}};
  for (const auto& extra : r.source_extra) s[extra.name] = MetricJson(extra.value);
  return s;
}

}  // namespace

std::string RecordId(const std::string& gateway, uint64_t seq) {
  return gateway + ":" + std::to_string(seq);
}

std::string EncodeRecord(const Record& r, const EncodeContext& ctx, uint64_t seq) {
  json j;
  if (r.type == RecordType::kStatus) {
    // The contract leads a device status with its state; the common fields follow.
    j["online"] = r.online;
    j["last_seen"] = r.last_seen_ms ? json(*r.last_seen_ms) : json(nullptr);
  }
  j["id"] = RecordId(ctx.gateway, seq);
  j["ts"] = r.ts_ms;
  j["device"] = r.device;
  j["kind"] = r.kind;
  j["source"] = SourceJson(r, ctx);
  switch (r.type) {
    case RecordType::kReading:
      j["metrics"] = MetricsJson(r.metrics);
      if (!r.quality.empty()) {
        json q = json::object();
        for (const auto& [metric, flag] : r.quality) q[metric] = flag;
        j["quality"] = q;
      }
      break;
    case RecordType::kEvent:
      j["event"] = r.event;
      j["state"] = EventStateName(r.state);
      j["severity"] = SeverityName(r.severity);
      if (!r.metrics.empty()) j["metrics"] = MetricsJson(r.metrics);
      if (!r.message.empty()) j["message"] = r.message;
      if (r.threshold && std::isfinite(*r.threshold)) j["threshold"] = *r.threshold;
      break;
    case RecordType::kStatus:
      if (!r.reason.empty()) j["reason"] = r.reason;
      break;
  }
  if (r.location && r.type != RecordType::kStatus)
    j["location"] = {{"lat", r.location->lat}, {"lon", r.location->lon}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string RecordTopic(const Record& r, const EncodeContext& ctx) {
  std::string t = ctx.topic_prefix + "/" + ctx.site + "/devices/" + r.device;
  switch (r.type) {
    case RecordType::kReading: return t + "/telemetry";
    case RecordType::kEvent: return t + "/event";
    case RecordType::kStatus: return t + "/status";
  }
  return t;
}

}  // namespace sanigate
