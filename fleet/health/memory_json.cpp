#include "health/memory_json.h"

#include <cmath>

#include <nlohmann/json.hpp>

namespace sanigate::fleet {
namespace {

using json = nlohmann::json;
constexpr int kVersion = 1;
constexpr size_t kMaxText = 64 * 1024;  // a device's memory is well under 2 KiB

}  // namespace

std::string EncodeHealthMemory(const HealthMemory& m) {
  json j = {{"v", kVersion}, {"state", HealthStateName(m.state)}, {"since", m.since_ms}};
  json reasons = json::array();
  for (const auto& r : m.reasons) {
    json jr = {{"code", r.code}, {"level", HealthStateName(r.level)}, {"detail", r.detail}, {"subject", r.subject}};
    // Optional keys: an older sanifleet reads the text without them (and ignores them).
    if (!r.metric.empty()) jr["metric"] = r.metric;
    if (r.value && std::isfinite(*r.value)) jr["value"] = *r.value;
    if (r.threshold && std::isfinite(*r.threshold)) jr["threshold"] = *r.threshold;
    reasons.push_back(std::move(jr));
  }
  j["reasons"] = std::move(reasons);
  if (m.overflow_since_ms) j["overflow_since"] = *m.overflow_since_ms;
  // NaN and infinities are not JSON; the evaluator never keeps them, but be safe.
  auto put = [&](const char* key, const std::optional<double>& v) {
    if (v && std::isfinite(*v)) j[key] = *v;
  };
  put("battery_pct", m.battery_pct);
  put("battery_v", m.battery_v);
  put("modbus_error_pct", m.modbus_error_pct);
  if (m.has_counters) j["counters"] = {m.requests, m.errors, m.delta_requests};
  if (!m.rssi_dbm.empty()) j["rssi"] = m.rssi_dbm;
  if (!m.snr_db.empty()) j["snr"] = m.snr_db;
  if (m.loss.filled > 0 || m.loss.last_fcnt >= 0 || m.loss.last_lost >= 0)
    j["loss"] = {m.loss.bits_lo, m.loss.bits_hi, m.loss.head, m.loss.filled, m.loss.last_fcnt, m.loss.last_lost};
  if (!m.stuck.empty()) {
    json stuck = json::array();
    for (const auto& s : m.stuck) stuck.push_back({s.metric, s.value, s.count, s.first_ts, s.last_ts});
    j["stuck"] = std::move(stuck);
  }
  return j.dump();
}

std::optional<HealthMemory> DecodeHealthMemory(std::string_view text) {
  if (text.empty() || text.size() > kMaxText) return std::nullopt;
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  // get<>() throws on a type mismatch: a stored text we did not write costs its device's memory only.
  try {
    if (j.at("v").get<int>() != kVersion) return std::nullopt;
    HealthMemory m;
    auto state = ParseHealthState(j.at("state").get<std::string>());
    if (!state) return std::nullopt;
    m.state = *state;
    m.since_ms = j.at("since").get<int64_t>();
    for (const auto& r : j.at("reasons")) {
      auto level = ParseHealthState(r.at("level").get<std::string>());
      if (!level || *level == HealthState::kOk || *level == HealthState::kUnknown) return std::nullopt;
      HealthReason reason;
      reason.code = r.at("code").get<std::string>();
      reason.level = *level;
      reason.detail = r.at("detail").get<std::string>();
      reason.subject = r.at("subject").get<std::string>();
      if (r.contains("metric")) reason.metric = r["metric"].get<std::string>();
      if (r.contains("value")) reason.value = r["value"].get<double>();
      if (r.contains("threshold")) reason.threshold = r["threshold"].get<double>();
      reason.stale = reason.detail.ends_with(kStaleSuffix);  // the evaluator keeps flag and suffix together
      m.reasons.push_back(std::move(reason));
    }
    if (j.contains("overflow_since")) m.overflow_since_ms = j["overflow_since"].get<int64_t>();
    for (auto [key, field] : {std::pair{"battery_pct", &m.battery_pct}, std::pair{"battery_v", &m.battery_v},
                              std::pair{"modbus_error_pct", &m.modbus_error_pct}})
      if (j.contains(key)) *field = j[key].get<double>();
    if (j.contains("counters")) {
      const json& c = j["counters"];
      m.has_counters = true;
      m.requests = c.at(0).get<uint64_t>();
      m.errors = c.at(1).get<uint64_t>();
      m.delta_requests = c.at(2).get<uint64_t>();
    }
    if (j.contains("rssi")) m.rssi_dbm = j["rssi"].get<std::vector<double>>();
    if (j.contains("snr")) m.snr_db = j["snr"].get<std::vector<double>>();
    if (j.contains("loss")) {
      const json& l = j["loss"];
      m.loss = {l.at(0).get<uint64_t>(), l.at(1).get<uint64_t>(), l.at(2).get<int>(),
                l.at(3).get<int>(),      l.at(4).get<int64_t>(),  l.at(5).get<int64_t>()};
    }
    if (j.contains("stuck"))
      for (const auto& s : j["stuck"])
        m.stuck.push_back({s.at(0).get<std::string>(), s.at(1).get<double>(), s.at(2).get<uint32_t>(),
                           s.at(3).get<int64_t>(), s.at(4).get<int64_t>()});
    return m;
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

nlohmann::json ReasonsToJson(const std::vector<HealthReason>& reasons) {
  json out = json::array();
  for (const auto& r : reasons) {
    json jr = {{"code", r.code}, {"level", HealthStateName(r.level)}, {"detail", r.detail}};
    if (!r.metric.empty()) jr["metric"] = r.metric;
    if (r.value && std::isfinite(*r.value)) jr["value"] = *r.value;
    if (r.threshold && std::isfinite(*r.threshold)) jr["threshold"] = *r.threshold;
    if (r.stale) jr["stale"] = true;
    out.push_back(std::move(jr));
  }
  return out;
}

}  // namespace sanigate::fleet
