// Health evaluator. Design: observations only update raw per-device trackers (last traffic time,
// interval learner, radio windows, frame-loss ring, battery values, error rate, stuck runs) or set
// the direct reasons (gateway offline, alarms, out_of_range); Judge() then derives every
// threshold- and time-dependent reason from those trackers and schedules the device's single
// next deadline in an indexed min-heap. Tick pops only due devices and calls Judge on them.
#include "health/health.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <unordered_map>

#include "health/deadline_heap.h"
#include "health/trackers.h"

namespace sanigate::fleet {
namespace {

using detail::kNoTime;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int kMinLossFrames = 20;  // no packet_loss verdict on fewer expected frames
constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();
constexpr std::string_view kOutOfRangeFlag = "out_of_range";

// base + step * k, saturating at kNever (step, k > 0).
int64_t AddTimes(int64_t base, int64_t step, int64_t k) {
  if (step > (kNever - std::max<int64_t>(base, 0)) / k) return kNever;
  return base + step * k;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string Duration(int64_t ms) {
  if (ms < 1000) return std::to_string(ms) + "ms";
  int64_t s = ms / 1000;
  std::string out;
  auto part = [&](int64_t n, const char* unit) {
    if (n > 0) out += std::to_string(n) + unit;
  };
  part(s / 86400, "d");
  part(s % 86400 / 3600, "h");
  part(s % 3600 / 60, "m");
  part(s % 60, "s");
  return out;
}

// What a threshold reason rests on (HealthReason::metric, value, threshold).
struct Measure {
  std::string metric;
  std::optional<double> value, threshold;
};

// "nh3_ppm 12.4 >= 10", "fuel_pct 4 <= 5" (a value under its level), "tilt_deg 47"; "" when unknown.
std::string MeasureText(const Measure& m) {
  if (m.metric.empty() || !m.value) return {};
  std::string out = m.metric + " " + Num(*m.value);
  if (m.threshold) out += (*m.value < *m.threshold ? " <= " : " >= ") + Num(*m.threshold);
  return out;
}

// The event's own measure: its first metric and the rule's level it carries.
Measure EventMeasure(const Observation& obs) {
  if (obs.metrics.empty() || !std::isfinite(obs.metrics.front().second)) return {};
  return {obs.metrics.front().first, obs.metrics.front().second, obs.threshold};
}

// "odour: nh3_ppm 12.4 >= 10", or the event's name alone.
std::string AlarmDetail(std::string_view event, const Measure& m) {
  std::string text = MeasureText(m);
  return std::string(event) + (text.empty() ? "" : ": " + text);
}

// Reasons that report something the device said (and that may no longer hold once it is gone).
bool IsAlarm(std::string_view code) {
  return code == reason::kAlarm || code == reason::kSos || code == reason::kOverflow ||
         code == reason::kOverflowUnattended;
}

bool Worse(const HealthReason& a, const HealthReason& b) {
  if (a.level != b.level) return a.level > b.level;
  if (a.code != b.code) return a.code < b.code;
  return a.subject < b.subject;
}

}  // namespace

const char* HealthStateName(HealthState state) {
  switch (state) {
    case HealthState::kUnknown:
      return "unknown";
    case HealthState::kOk:
      return "ok";
    case HealthState::kDegraded:
      return "degraded";
    case HealthState::kCritical:
      return "critical";
    case HealthState::kOffline:
      return "offline";
  }
  return "unknown";
}

std::optional<HealthState> ParseHealthState(std::string_view name) {
  for (HealthState s : {HealthState::kUnknown, HealthState::kOk, HealthState::kDegraded,
                        HealthState::kCritical, HealthState::kOffline}) {
    if (name == HealthStateName(s)) return s;
  }
  return std::nullopt;
}

namespace {

struct Device {
  HealthVerdict verdict;
  std::string profile;
  const HealthThresholds* thresholds = nullptr;
  uint32_t thresholds_gen = 0;  // 0 = resolve again
  uint32_t heap_pos = detail::kNotQueued;
  bool observed = false;         // a reading, event or status was seen (or restored and ticked)
  bool restore_pending = false;  // restored; `observed` decided at the next Judge
  bool reasons_dirty = false;    // a reason appeared, vanished or changed level
  bool has_counters = false;
  int64_t seen_ms = kNoTime;         // now_ms of the last live reading/event
  int64_t overflow_since = kNoTime;  // measurement time the overflow became active
  // The active overflow's metric, its latest value and the rule's level (metric "" = unknown).
  std::string overflow_metric;
  double overflow_value = kNoValue, overflow_threshold = kNoValue;
  detail::IntervalLearner learner;
  detail::MeanWindow rssi, snr;
  detail::LossWindow loss;
  double battery_pct = kNoValue, battery_v = kNoValue;
  double modbus_error_pct = kNoValue;
  uint64_t requests = 0, errors = 0, delta_requests = 0;
  std::vector<detail::StuckTracker> stuck;
};

// Keeps the per-device footprint honest (strings and the reasons/stuck vectors allocate apart).
static_assert(sizeof(Device) <= 512, "per-device state grew beyond its budget");

// Sets the reason's level, detail and measure. Its `stale` flag is Finish's to change: the
// detail given here never has the stale suffix, Finish adds it back when it still applies.
void SetReason(Device& d, std::string_view code, std::string_view subject, HealthState level,
               std::string detail, const Measure& m = {}) {
  for (HealthReason& r : d.verdict.reasons) {
    if (r.code == code && r.subject == subject) {
      if (r.level != level) {
        r.level = level;
        d.reasons_dirty = true;
      }
      r.detail = std::move(detail);
      r.metric = m.metric;
      r.value = m.value;
      r.threshold = m.threshold;
      return;
    }
  }
  d.verdict.reasons.push_back(HealthReason{std::string(code), level, std::move(detail),
                                           std::string(subject), m.metric, m.value, m.threshold});
  d.reasons_dirty = true;
}

// Alarms of an offline device say so (flag and detail suffix); a flip is a change to publish.
void MarkStale(Device& d) {
  bool offline = std::any_of(d.verdict.reasons.begin(), d.verdict.reasons.end(),
                             [](const HealthReason& r) { return r.level == HealthState::kOffline; });
  for (HealthReason& r : d.verdict.reasons) {
    if (!IsAlarm(r.code)) continue;
    if (r.detail.ends_with(kStaleSuffix)) r.detail.resize(r.detail.size() - kStaleSuffix.size());
    if (offline) r.detail += kStaleSuffix;
    if (r.stale != offline) {
      r.stale = offline;
      d.reasons_dirty = true;
    }
  }
}

void ClearReason(Device& d, std::string_view code, std::string_view subject = {}) {
  size_t erased = std::erase_if(d.verdict.reasons, [&](const HealthReason& r) {
    return r.code == code && r.subject == subject;
  });
  if (erased > 0) d.reasons_dirty = true;
}

const double* FindMetric(const Observation& obs, std::string_view name) {
  for (const auto& [metric, value] : obs.metrics) {
    if (metric == name) return &value;
  }
  return nullptr;
}

bool Flagged(const Observation& obs, std::string_view metric) {
  for (const auto& [m, flag] : obs.quality) {
    if (m == metric && flag == kOutOfRangeFlag) return true;
  }
  return false;
}

// A live metric value usable for judging: present and not flagged out of range.
std::optional<double> Usable(const Observation& obs, std::string_view name) {
  const double* v = FindMetric(obs, name);
  if (v == nullptr || Flagged(obs, name) || !std::isfinite(*v)) return std::nullopt;
  return *v;
}

}  // namespace

struct HealthEvaluator::Impl {
  HealthConfig config;
  uint32_t gen = 1;
  std::unordered_map<std::string, Device> devices;
  detail::DeadlineHeap<Device> heap;
  // The last window in which sanifleet could not hear the fleet (PauseSilence).
  int64_t deaf_from_ms = kNoTime, deaf_until_ms = kNoTime;
  HealthStats stats;

  Device& GetOrCreate(const std::string& id) {
    auto [it, inserted] = devices.try_emplace(id);
    if (inserted) it->second.verdict.device = id;
    return it->second;
  }

  void SetIdentity(Device& d, const std::string& kind, const std::string& profile) {
    if (!kind.empty() && kind != d.verdict.kind) {
      d.verdict.kind = kind;
      d.thresholds_gen = 0;
    }
    if (!profile.empty() && profile != d.profile) {
      d.profile = profile;
      d.thresholds_gen = 0;
    }
  }

  const HealthThresholds& Thresholds(Device& d) {
    if (d.thresholds_gen != gen) {
      d.thresholds = &ThresholdsFor(config, d.verdict.kind, d.profile);
      d.thresholds_gen = gen;
      // Drop runs of metrics that are no longer watched.
      const auto& watched = d.thresholds->stuck_metrics;
      std::erase_if(d.stuck, [&](const detail::StuckTracker& s) {
        if (std::find(watched.begin(), watched.end(), s.metric) != watched.end()) return false;
        ClearReason(d, reason::kStuckValue, s.metric);
        return true;
      });
    }
    return *d.thresholds;
  }

  int64_t Interval(Device& d) {
    const HealthThresholds& t = Thresholds(d);
    return t.expected_interval_ms > 0 ? t.expected_interval_ms : d.learner.Estimate();
  }

  // Live traffic from the device itself: it was seen now.
  void Live(Device& d, const Observation& obs, int64_t now_ms) {
    d.seen_ms = std::max(d.seen_ms, now_ms);
    d.verdict.last_seen_ms = d.seen_ms;
    d.learner.Add(obs.ts_ms);
    if (obs.fcnt) {
      d.loss.AddFcnt(*obs.fcnt);
    } else if (obs.frames_lost) {
      d.loss.AddFramesLost(*obs.frames_lost);
    }
  }

  void ApplyEvent(Device& d, const Observation& obs, int64_t now_ms) {
    const std::string& ev = obs.event;
    if (ev.empty()) return;
    Measure m = EventMeasure(obs);
    if (ev == reason::kOverflow) {
      if (!obs.event_active) {
        d.overflow_since = kNoTime;
        d.overflow_metric.clear();
      } else {
        int64_t t = obs.ts_ms > 0 ? std::min(obs.ts_ms, now_ms) : now_ms;
        d.overflow_since = d.overflow_since == kNoTime ? t : std::min(d.overflow_since, t);
        if (!m.metric.empty()) {
          d.overflow_metric = m.metric;
          d.overflow_value = *m.value;
          d.overflow_threshold = m.threshold.value_or(kNoValue);
        }
      }
      return;  // the overflow reasons depend on time: Judge sets them
    }
    if (ev == reason::kSos) {
      if (obs.event_active) {
        SetReason(d, reason::kSos, {}, HealthState::kCritical, AlarmDetail("sos", m), m);
      } else {
        ClearReason(d, reason::kSos);
      }
      return;
    }
    std::optional<HealthState> level;
    if (ev == "fire" || obs.severity == "critical") {
      level = HealthState::kCritical;
    } else if (obs.severity != "info") {
      level = HealthState::kDegraded;  // warning, or unset (the gateway's default is warning)
    }
    if (obs.event_active && level) {
      SetReason(d, reason::kAlarm, ev, *level, AlarmDetail(ev, m), m);
    } else {
      ClearReason(d, reason::kAlarm, ev);
    }
  }

  void ApplyReading(Device& d, const Observation& obs) {
    // out_of_range: set while the latest reading of a metric is flagged.
    for (const auto& [metric, flag] : obs.quality) {
      if (flag != kOutOfRangeFlag) continue;
      const double* v = FindMetric(obs, metric);
      SetReason(d, reason::kOutOfRange, metric, HealthState::kDegraded,
                metric + (v ? " " + Num(*v) : std::string()) + " flagged out_of_range");
    }
    for (const auto& q : obs.quality) {
      if (!Flagged(obs, q.first)) ClearReason(d, reason::kOutOfRange, q.first);
    }
    for (const auto& m : obs.metrics) {
      if (!Flagged(obs, m.first)) ClearReason(d, reason::kOutOfRange, m.first);
    }

    // An active alarm or overflow quotes the latest value of its metric.
    for (HealthReason& r : d.verdict.reasons) {
      if ((r.code != reason::kAlarm && r.code != reason::kSos) || r.metric.empty()) continue;
      if (auto v = Usable(obs, r.metric)) {
        r.value = *v;
        r.detail = AlarmDetail(r.code == reason::kSos ? std::string_view("sos") : std::string_view(r.subject),
                               Measure{r.metric, r.value, r.threshold});
      }
    }
    if (!d.overflow_metric.empty()) {
      if (auto v = Usable(obs, d.overflow_metric)) d.overflow_value = *v;
    }

    std::optional<double> rssi = obs.rssi_dbm ? obs.rssi_dbm : Usable(obs, "rssi_dbm");
    if (rssi && std::isfinite(*rssi)) d.rssi.Add(*rssi);
    std::optional<double> snr = obs.snr_db ? obs.snr_db : Usable(obs, "snr_db");
    if (snr && std::isfinite(*snr)) d.snr.Add(*snr);
    if (auto v = Usable(obs, "battery_pct")) d.battery_pct = *v;
    if (auto v = Usable(obs, "battery_v")) d.battery_v = *v;

    const auto& watched = Thresholds(d).stuck_metrics;
    for (const auto& [metric, value] : obs.metrics) {
      if (std::find(watched.begin(), watched.end(), metric) == watched.end()) continue;
      if (Flagged(obs, metric)) continue;
      auto it = std::find_if(d.stuck.begin(), d.stuck.end(),
                             [&m = metric](const detail::StuckTracker& s) { return s.metric == m; });
      if (it == d.stuck.end()) {
        d.stuck.push_back(detail::StuckTracker{metric});
        it = d.stuck.end() - 1;
      }
      it->Add(value, obs.ts_ms);
    }
  }

  // Derives all threshold- and time-dependent reasons and reschedules the device's next timer.
  void Judge(Device& d, int64_t now_ms) {
    const HealthThresholds& t = Thresholds(d);
    int64_t interval = Interval(d);
    d.verdict.expected_interval_ms = interval;
    if (d.restore_pending) {
      d.restore_pending = false;
      if (d.seen_ms != kNoTime) d.observed = true;
    }
    int64_t next = kNever;

    // Silence.
    int off_k = t.missed_reports_offline > 0 ? t.missed_reports_offline : 0;
    int deg_k = t.missed_reports_degraded > 0 && (off_k == 0 || t.missed_reports_degraded < off_k)
                    ? t.missed_reports_degraded
                    : 0;
    if (interval > 0 && d.seen_ms != kNoTime && (off_k > 0 || deg_k > 0)) {
      int64_t off_at = off_k > 0 ? AddTimes(d.seen_ms, interval, off_k) : kNever;
      int64_t deg_at = deg_k > 0 ? AddTimes(d.seen_ms, interval, deg_k) : kNever;
      if (deaf_from_ms != kNoTime) {
        // A deadline that passed while sanifleet could not listen proves nothing: it gets one
        // expected interval after sanifleet can listen again.
        int64_t grace_until = AddTimes(deaf_until_ms, interval, 1);
        if (off_at != kNever && off_at >= deaf_from_ms) off_at = std::max(off_at, grace_until);
        if (deg_at != kNever && deg_at >= deaf_from_ms) deg_at = std::max(deg_at, grace_until);
      }
      // The silence as it is now (it may be longer than the threshold: a verdict after a pause,
      // or a restart), then the threshold it crossed.
      auto detail = [&](const char* verdict, int k) {
        return "no traffic for " + Duration(now_ms - d.seen_ms) + " (" + verdict + " after " +
               std::to_string(k) + " x expected interval " + Duration(interval) + ")";
      };
      if (now_ms >= off_at) {
        SetReason(d, reason::kSilent, {}, HealthState::kOffline, detail("offline", off_k));
      } else if (now_ms >= deg_at) {
        SetReason(d, reason::kSilent, {}, HealthState::kDegraded, detail("degraded", deg_k));
        next = off_at;
      } else {
        ClearReason(d, reason::kSilent);
        next = std::min(deg_at, off_at);
      }
    } else {
      ClearReason(d, reason::kSilent);
    }

    // Overflow, unattended after a while.
    if (d.overflow_since != kNoTime) {
      int64_t limit = std::max<int64_t>(t.overflow_unattended_ms, 0);
      int64_t at = limit > kNever - std::max<int64_t>(d.overflow_since, 0)
                       ? kNever
                       : d.overflow_since + limit;
      Measure m;
      if (!d.overflow_metric.empty() && !std::isnan(d.overflow_value)) {
        m = {d.overflow_metric, d.overflow_value,
             std::isnan(d.overflow_threshold) ? std::nullopt : std::optional<double>(d.overflow_threshold)};
      }
      std::string text = MeasureText(m);
      if (now_ms >= at) {
        ClearReason(d, reason::kOverflow);
        SetReason(d, reason::kOverflowUnattended, {}, HealthState::kCritical,
                  "overflow active for more than " + Duration(limit) + " without being cleared" +
                      (text.empty() ? "" : " (" + text + ")"),
                  m);
      } else {
        ClearReason(d, reason::kOverflowUnattended);
        SetReason(d, reason::kOverflow, {}, HealthState::kDegraded,
                  "overflow active" + (text.empty() ? "" : " (" + text + ")") + ", unattended after " +
                      Duration(limit),
                  m);
        next = std::min(next, at);
      }
    } else {
      ClearReason(d, reason::kOverflow);
      ClearReason(d, reason::kOverflowUnattended);
    }

    // Battery.
    {
      std::optional<HealthState> level;
      std::string detail;
      if (!std::isnan(d.battery_pct)) {
        if (d.battery_pct <= t.critical_battery_pct) {
          level = HealthState::kCritical;
          detail = "battery_pct " + Num(d.battery_pct) + " <= " + Num(t.critical_battery_pct);
        } else if (d.battery_pct <= t.low_battery_pct) {
          level = HealthState::kDegraded;
          detail = "battery_pct " + Num(d.battery_pct) + " <= " + Num(t.low_battery_pct);
        }
      }
      if (!std::isnan(d.battery_v) && d.battery_v <= t.low_battery_v) {
        if (!level) level = HealthState::kDegraded;
        if (!detail.empty()) detail += "; ";
        detail += "battery_v " + Num(d.battery_v) + " <= " + Num(t.low_battery_v);
      }
      if (level) {
        SetReason(d, reason::kLowBattery, {}, *level, std::move(detail));
      } else {
        ClearReason(d, reason::kLowBattery);
      }
    }

    // Radio, on full windows only.
    {
      std::string detail;
      if (d.rssi.full() && d.rssi.Mean() < t.weak_rssi_dbm) {
        detail = "rssi_dbm mean " + Num(d.rssi.Mean()) + " < " + Num(t.weak_rssi_dbm);
      }
      if (d.snr.full() && d.snr.Mean() < t.weak_snr_db) {
        if (!detail.empty()) detail += "; ";
        detail += "snr_db mean " + Num(d.snr.Mean()) + " < " + Num(t.weak_snr_db);
      }
      if (!detail.empty()) {
        SetReason(
            d, reason::kWeakRadio, {}, HealthState::kDegraded,
            detail + " over the last " + std::to_string(detail::MeanWindow::kSize) + " readings");
      } else {
        ClearReason(d, reason::kWeakRadio);
      }
    }

    // Frame loss.
    {
      int expected = d.loss.expected(), lost = d.loss.lost();
      double pct = expected > 0 ? 100.0 * lost / expected : 0;
      if (expected >= kMinLossFrames && pct > t.packet_loss_pct) {
        SetReason(d, reason::kPacketLoss, {}, HealthState::kDegraded,
                  "lost " + std::to_string(lost) + " of the last " + std::to_string(expected) +
                      " expected frames (" + Num(pct) + "% > " + Num(t.packet_loss_pct) + "%)");
      } else {
        ClearReason(d, reason::kPacketLoss);
      }
    }

    // Modbus error rate.
    {
      double pct = d.modbus_error_pct;
      std::optional<HealthState> level;
      if (!std::isnan(pct) && pct >= t.critical_modbus_error_pct) {
        level = HealthState::kCritical;
      } else if (!std::isnan(pct) && pct > t.modbus_error_pct) {
        level = HealthState::kDegraded;
      }
      if (level) {
        double limit =
            *level == HealthState::kCritical ? t.critical_modbus_error_pct : t.modbus_error_pct;
        SetReason(d, reason::kModbusErrors, {}, *level,
                  "modbus errors " + Num(pct) + "% of " + std::to_string(d.delta_requests) +
                      " requests " + (*level == HealthState::kCritical ? ">= " : "> ") +
                      Num(limit) + "%");
      } else {
        ClearReason(d, reason::kModbusErrors);
      }
    }

    // Stuck values.
    for (const detail::StuckTracker& s : d.stuck) {
      bool stuck = t.stuck_readings > 0 && s.count >= static_cast<uint32_t>(t.stuck_readings) &&
                   s.last_ts - s.first_ts >= t.stuck_min_ms;
      if (stuck) {
        SetReason(d, reason::kStuckValue, s.metric, HealthState::kDegraded,
                  s.metric + " stuck at " + Num(s.value) + " for " + std::to_string(s.count) +
                      " readings over " + Duration(s.last_ts - s.first_ts));
      } else {
        ClearReason(d, reason::kStuckValue, s.metric);
      }
    }

    // Every timer computed above lies after now_ms; the clamp keeps Tick finite even if not.
    if (next <= now_ms) next = now_ms + 1;
    if (next == kNever) {
      heap.Cancel(&d);
    } else {
      heap.Schedule(&d, next);
    }
  }

  std::optional<HealthChange> Finish(Device& d, int64_t now_ms) {
    HealthVerdict& v = d.verdict;
    MarkStale(d);
    if (d.reasons_dirty) std::sort(v.reasons.begin(), v.reasons.end(), Worse);
    HealthState state = !v.reasons.empty() ? v.reasons.front().level
                        : d.observed       ? HealthState::kOk
                                           : HealthState::kUnknown;
    bool state_changed = state != v.state;
    if (!state_changed && !d.reasons_dirty) return std::nullopt;
    d.reasons_dirty = false;
    HealthChange change;
    change.previous = v.state;
    change.state_changed = state_changed;
    if (state_changed) {
      v.state = state;
      v.since_ms = now_ms;
    }
    change.verdict = v;
    return change;
  }
};

HealthEvaluator::HealthEvaluator(HealthConfig config) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
}
HealthEvaluator::~HealthEvaluator() = default;
HealthEvaluator::HealthEvaluator(HealthEvaluator&&) noexcept = default;
HealthEvaluator& HealthEvaluator::operator=(HealthEvaluator&&) noexcept = default;

std::optional<HealthChange> HealthEvaluator::Observe(const Observation& obs, int64_t now_ms) {
  if (obs.device.empty()) return std::nullopt;
  Impl& im = *impl_;
  Device& d = im.GetOrCreate(obs.device);
  im.SetIdentity(d, obs.kind, obs.profile);
  d.observed = true;
  switch (obs.type) {
    case Observation::Type::kStatus:
      if (obs.online) {
        ClearReason(d, reason::kOffline);
      } else {
        SetReason(d, reason::kOffline, {}, HealthState::kOffline,
                  "gateway reports the device offline");
      }
      break;
    case Observation::Type::kEvent:
      if (obs.backfill) break;              // history: the live stream holds the current state
      if (obs.event == reason::kOffline) {  // the gateway's verdict, not traffic of the device
        if (obs.event_active) {
          SetReason(d, reason::kOffline, {}, HealthState::kOffline,
                    "gateway raised an offline event");
        } else {
          ClearReason(d, reason::kOffline);
        }
        break;
      }
      im.Live(d, obs, now_ms);
      im.ApplyEvent(d, obs, now_ms);
      break;
    case Observation::Type::kReading:
      if (obs.backfill) break;
      im.Live(d, obs, now_ms);
      im.ApplyReading(d, obs);
      break;
  }
  im.Judge(d, now_ms);
  return im.Finish(d, now_ms);
}

std::optional<HealthChange> HealthEvaluator::ObserveRequestCounters(const std::string& device,
                                                                    uint64_t requests,
                                                                    uint64_t errors,
                                                                    int64_t now_ms) {
  if (device.empty()) return std::nullopt;
  Impl& im = *impl_;
  Device& d = im.GetOrCreate(device);
  if (d.has_counters && requests >= d.requests && errors >= d.errors) {
    uint64_t dr = requests - d.requests, de = errors - d.errors;
    if (dr > 0) {
      d.modbus_error_pct =
          std::min(100.0, 100.0 * static_cast<double>(de) / static_cast<double>(dr));
      d.delta_requests = dr;
    }
  }  // else: first sample, or a counter went down (gateway restart): new baseline, no verdict
  d.requests = requests;
  d.errors = errors;
  d.has_counters = true;
  im.Judge(d, now_ms);
  return im.Finish(d, now_ms);
}

std::vector<HealthChange> HealthEvaluator::Tick(int64_t now_ms) {
  Impl& im = *impl_;
  std::vector<HealthChange> changes;
  while (Device* d = im.heap.PopDue(now_ms)) {
    ++im.stats.timer_evaluations;
    im.Judge(*d, now_ms);  // reschedules strictly after now_ms, or not at all
    if (auto change = im.Finish(*d, now_ms)) changes.push_back(std::move(*change));
  }
  return changes;
}

void HealthEvaluator::Restore(const std::string& device, const std::string& kind,
                              const std::string& profile, int64_t last_seen_ms,
                              int64_t learned_interval_ms, int64_t now_ms) {
  if (device.empty()) return;
  Impl& im = *impl_;
  Device& d = im.GetOrCreate(device);
  im.SetIdentity(d, kind, profile);
  if (last_seen_ms > 0) {
    d.seen_ms = std::max(d.seen_ms, std::min(last_seen_ms, now_ms));
    d.verdict.last_seen_ms = d.seen_ms;
  }
  if (learned_interval_ms > 0 && d.learner.Estimate() == 0) d.learner.Seed(learned_interval_ms);
  d.verdict.expected_interval_ms = im.Interval(d);
  d.restore_pending = true;
  im.heap.Schedule(&d, now_ms);
}

void HealthEvaluator::Restore(const std::string& device, const std::string& kind,
                              const std::string& profile, int64_t last_seen_ms,
                              int64_t learned_interval_ms, int64_t now_ms,
                              const HealthMemory& m) {
  if (device.empty()) return;
  Impl& im = *impl_;
  bool existed = im.devices.count(device) > 0;
  Restore(device, kind, profile, last_seen_ms, learned_interval_ms, now_ms);
  Device& d = im.devices.at(device);
  if (existed && d.observed) return;  // live traffic already said more than the saved state
  HealthVerdict& v = d.verdict;
  v.state = m.state;
  v.since_ms = m.since_ms;
  v.reasons = m.reasons;
  std::sort(v.reasons.begin(), v.reasons.end(), Worse);
  // A device with a saved verdict was heard before: it is never `unknown` again. Its trackers
  // carry the threshold verdicts (battery, radio, loss, errors, stuck) as if nothing happened.
  d.observed = m.state != HealthState::kUnknown;
  d.overflow_since = m.overflow_since_ms.value_or(kNoTime);
  // The overflow's measure lives in its saved reason; a stale alarm's in its detail's suffix.
  d.overflow_metric.clear();
  for (HealthReason& r : v.reasons) {
    r.stale = IsAlarm(r.code) && r.detail.ends_with(kStaleSuffix);
    if ((r.code == reason::kOverflow || r.code == reason::kOverflowUnattended) && !r.metric.empty() && r.value) {
      d.overflow_metric = r.metric;
      d.overflow_value = *r.value;
      d.overflow_threshold = r.threshold.value_or(kNoValue);
    }
  }
  d.battery_pct = m.battery_pct.value_or(kNoValue);
  d.battery_v = m.battery_v.value_or(kNoValue);
  d.modbus_error_pct = m.modbus_error_pct.value_or(kNoValue);
  d.has_counters = m.has_counters;
  d.requests = m.requests;
  d.errors = m.errors;
  d.delta_requests = m.delta_requests;
  d.rssi = detail::MeanWindow();
  for (double x : m.rssi_dbm) d.rssi.Add(x);
  d.snr = detail::MeanWindow();
  for (double x : m.snr_db) d.snr.Add(x);
  d.loss.Load({m.loss.bits_lo, m.loss.bits_hi, m.loss.head, m.loss.filled, m.loss.last_fcnt,
               m.loss.last_lost});
  d.stuck.clear();
  for (const auto& s : m.stuck)
    d.stuck.push_back(detail::StuckTracker{s.metric, s.value, s.count, s.first_ts, s.last_ts});
  d.thresholds_gen = 0;  // drops runs of metrics no longer watched at the next Judge
  d.reasons_dirty = false;
}

std::optional<HealthMemory> HealthEvaluator::Memory(const std::string& device) const {
  auto it = impl_->devices.find(device);
  if (it == impl_->devices.end()) return std::nullopt;
  const Device& d = it->second;
  HealthMemory m;
  m.state = d.verdict.state;
  m.since_ms = d.verdict.since_ms;
  m.reasons = d.verdict.reasons;
  if (d.overflow_since != kNoTime) m.overflow_since_ms = d.overflow_since;
  auto value = [](double x) { return std::isnan(x) ? std::nullopt : std::optional<double>(x); };
  m.battery_pct = value(d.battery_pct);
  m.battery_v = value(d.battery_v);
  m.modbus_error_pct = value(d.modbus_error_pct);
  m.has_counters = d.has_counters;
  m.requests = d.requests;
  m.errors = d.errors;
  m.delta_requests = d.delta_requests;
  m.rssi_dbm = d.rssi.Samples();
  m.snr_db = d.snr.Samples();
  auto loss = d.loss.Save();
  m.loss = {loss.bits_lo, loss.bits_hi, loss.head, loss.filled, loss.last_fcnt, loss.last_lost};
  for (const auto& s : d.stuck) m.stuck.push_back({s.metric, s.value, s.count, s.first_ts, s.last_ts});
  return m;
}

void HealthEvaluator::Forget(const std::string& device) {
  auto it = impl_->devices.find(device);
  if (it == impl_->devices.end()) return;
  impl_->heap.Cancel(&it->second);
  impl_->devices.erase(it);
}

const HealthVerdict* HealthEvaluator::Find(const std::string& device) const {
  auto it = impl_->devices.find(device);
  return it == impl_->devices.end() ? nullptr : &it->second.verdict;
}

std::vector<const HealthVerdict*> HealthEvaluator::All() const {
  std::vector<const HealthVerdict*> out;
  out.reserve(impl_->devices.size());
  for (const auto& [id, d] : impl_->devices) out.push_back(&d.verdict);
  return out;
}

size_t HealthEvaluator::size() const { return impl_->devices.size(); }

int64_t HealthEvaluator::NextDeadline() const { return impl_->heap.NextDeadline(); }

void HealthEvaluator::PauseSilence(int64_t from_ms, int64_t resume_ms) {
  Impl& im = *impl_;
  im.deaf_from_ms = std::min(from_ms, resume_ms);
  im.deaf_until_ms = resume_ms;
  for (auto& [id, d] : im.devices) im.heap.Schedule(&d, resume_ms);
}

void HealthEvaluator::SetConfig(HealthConfig config) {
  Impl& im = *impl_;
  im.config = std::move(config);
  if (++im.gen == 0) im.gen = 1;  // cached threshold pointers are stale; resolved when touched
  for (auto& [id, d] : im.devices) {
    d.thresholds = nullptr;
    d.thresholds_gen = 0;
    im.heap.Schedule(&d, 0);  // due at the next Tick, whatever its now_ms
  }
}

HealthStats HealthEvaluator::stats() const {
  return HealthStats{impl_->stats.timer_evaluations, impl_->heap.size()};
}

}  // namespace sanigate::fleet
