#include "pipeline/pipeline.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

namespace sanigate::pipeline {
namespace {

std::optional<double> AsNumber(const MetricValue& v) {
  if (auto d = std::get_if<double>(&v)) return *d;
  if (auto i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return std::nullopt;
}

bool Changed(const MetricValue& before, const MetricValue& now, double deadband) {
  auto a = AsNumber(before), b = AsNumber(now);
  if (a && b) {
    if (std::isnan(*a) != std::isnan(*b)) return true;
    return std::fabs(*b - *a) >= deadband && (deadband > 0 || *a != *b);
  }
  return before != now;
}

// Back-filled events (JT/T 808 blind-area batches) are history, not the state now.
bool IsBackfill(const Record& r) {
  for (const auto& [k, v] : r.source_extra)
    if (k == "backfill" && std::holds_alternative<bool>(v) && std::get<bool>(v)) return true;
  return false;
}

}  // namespace

Pipeline::Pipeline(store::Outbox& outbox, EncodeContext ctx) : outbox_(outbox), ctx_(std::move(ctx)) {
  if (auto marks = outbox_.Marks(); marks.ok()) {
    for (auto& m : *marks) marks_[m.device][m.key] = std::move(m.value);
  } else {
    spdlog::error("pipeline: cannot read the adapters' marks ({}); starting without them", marks.status().message());
  }
  auto rows = outbox_.EventStates();
  if (!rows.ok()) {
    spdlog::error("pipeline: cannot read the announced event states ({}); starting without them",
                  rows.status().message());
    return;
  }
  size_t active = 0;
  for (const auto& row : *rows) {
    announced_[row.device][row.key] = row.active;
    active += row.active;
  }
  if (!rows->empty())
    spdlog::info("pipeline: {} announced event states loaded, {} active", rows->size(), active);
}

bool Pipeline::Active(const std::string& device, const std::string& key) const {
  auto d = announced_.find(device);
  if (d == announced_.end()) return false;
  auto k = d->second.find(key);
  return k != d->second.end() && k->second;
}

namespace {
// map[device][key], or nullopt.
template <class Nested>
auto Lookup(const Nested& map, const std::string& device, const std::string& key)
    -> std::optional<typename Nested::mapped_type::mapped_type> {
  auto d = map.find(device);
  if (d == map.end()) return std::nullopt;
  auto k = d->second.find(key);
  if (k == d->second.end()) return std::nullopt;
  return k->second;
}
}  // namespace

std::optional<bool> Pipeline::LastAnnounced(const std::string& device, const std::string& event) const {
  std::lock_guard lk(mu_);
  return Lookup(announced_, device, event);
}

std::optional<std::string> Pipeline::LastMark(const std::string& device, const std::string& key) const {
  std::lock_guard lk(mu_);
  return Lookup(marks_, device, key);
}

void Pipeline::AddStateEvent(Record e, const std::string& key, std::vector<Outgoing>& out) {
  bool active = e.state == EventState::kActive;
  if (!active && !Active(e.device, key)) {
    // A clear of what consumers were never told (or were already told is over). An `active`
    // always goes out: some events are one-off notices (outbox_shed), and adapters and rules
    // only repeat a state after a restart if the durable state says it was not announced.
    stats_.repeated_events++;
    return;
  }
  announced_[e.device][key] = active;
  store::EventStateRow row{e.device, key, active, e.ts_ms};
  out.push_back({std::move(e), std::move(row)});
}


void Pipeline::SetRules(std::unordered_map<std::string, DeviceRules> rules) {
  std::lock_guard lk(mu_);
  rules_ = std::move(rules);
}

void Pipeline::Process(Record& r, std::vector<Outgoing>& out) {
  stats_.records_in++;
  if (r.type == RecordType::kEvent && !IsBackfill(r)) {
    std::string key = r.event;
    return AddStateEvent(std::move(r), key, out);
  }
  if (r.type != RecordType::kReading) {
    out.push_back({std::move(r), std::nullopt});
    return;
  }
  auto rit = rules_.find(r.device);
  const DeviceRules* rules = rit == rules_.end() ? nullptr : &rit->second;
  DeviceState& st = state_[r.device];

  // Derived fill level, before anything that may use it.
  if (rules && rules->fill && !r.FindMetric(rules->fill->metric)) {
    const FillRule& f = *rules->fill;
    if (const Metric* d = r.FindMetric(f.from_metric)) {
      if (auto dist = AsNumber(d->value); dist && f.empty_distance != f.full_distance) {
        double pct = (f.empty_distance - *dist) / (f.empty_distance - f.full_distance) * 100.0;
        pct = std::round(std::clamp(pct, 0.0, 100.0) * 10) / 10;
        r.metrics.push_back({f.metric, pct});
      }
    }
  }

  // State events with hysteresis, from the unfiltered values.
  if (rules) {
    for (const EventRule& ev : rules->events) {
      const Metric* m = r.FindMetric(ev.metric);
      if (!m) continue;
      // Keyed by event and metric: fire from smoke and fire from temperature are separate states.
      // The state is what was last announced, across restarts.
      const std::string key = ev.event + "/" + ev.metric;
      bool active = Active(r.device, key);
      bool to_active = false, to_clear = false;
      if (!ev.active_at) {
        const bool* b = std::get_if<bool>(&m->value);
        if (!b) continue;
        to_active = !active && *b;
        to_clear = active && !*b;
      } else if (auto v = AsNumber(m->value)) {
        double clear = ev.clear_at.value_or(*ev.active_at);
        to_active = !active && (ev.below ? *v <= *ev.active_at : *v >= *ev.active_at);
        to_clear = active && (ev.below ? *v > clear : *v < clear);
      }
      if (!to_active && !to_clear) continue;
      Record e = MakeEvent(r.device, r.kind, r.protocol, r.ts_ms, ev.event,
                           to_active ? EventState::kActive : EventState::kCleared, ev.severity);
      e.metrics.push_back(*m);
      e.threshold = ev.active_at;
      e.location = r.location;
      e.source_extra = r.source_extra;
      AddStateEvent(std::move(e), key, out);
    }
  }

  // Overflow with hysteresis, from the unfiltered value.
  if (rules && rules->overflow) {
    const OverflowRule& o = *rules->overflow;
    if (const Metric* m = r.FindMetric(o.metric)) {
      if (auto v = AsNumber(m->value)) {
        bool active = Active(r.device, "overflow");
        bool to_active = !active && *v >= o.active_at;
        bool to_clear = active && *v < o.clear_below;
        if (to_active || to_clear) {
          Record e = MakeEvent(r.device, r.kind, r.protocol, r.ts_ms, "overflow",
                               to_active ? EventState::kActive : EventState::kCleared,
                               Severity::kWarning);
          e.metrics.push_back(*m);
          e.threshold = o.active_at;
          e.location = r.location;
          e.source_extra = r.source_extra;
          AddStateEvent(std::move(e), "overflow", out);
        }
      }
    }
  }

  // Report by exception, per metric.
  std::vector<Metric> kept;
  kept.reserve(r.metrics.size());
  for (auto& m : r.metrics) {
    const MetricRule* rule = nullptr;
    if (rules) {
      auto it = rules->metrics.find(m.name);
      if (it != rules->metrics.end() && it->second.deadband) rule = &it->second;
    }
    auto [it, fresh] = st.metrics.try_emplace(m.name);
    MetricState& ms = it->second;
    bool publish = fresh || !rule || Changed(ms.last, m.value, *rule->deadband) ||
                   r.ts_ms - ms.last_ts >= rule->max_silence_ms;
    if (publish) {
      ms.last = m.value;
      ms.last_ts = r.ts_ms;
      kept.push_back(std::move(m));
    } else {
      stats_.suppressed++;
    }
  }
  if (kept.empty()) return;
  r.metrics = std::move(kept);
  out.push_back({std::move(r), std::nullopt});
}

void Pipeline::Emit(Record record) {
  std::vector<Record> one;
  one.push_back(std::move(record));
  EmitBatch(std::move(one));
}

void Pipeline::EmitBatch(std::vector<Record> records) { EmitDurable(std::move(records), {}); }

void Pipeline::EmitDurable(std::vector<Record> records, DurableFn on_durable) {
  std::vector<Outgoing> out;
  out.reserve(records.size() + 1);
  {
    std::lock_guard lk(mu_);
    for (auto& r : records) {
      std::optional<store::MarkRow> mark;
      if (r.mark) mark = store::MarkRow{r.device, std::move(r.mark->key), std::move(r.mark->value)};
      size_t first = out.size();
      Process(r, out);
      // The mark rides on the first record this one became; when everything was suppressed,
      // on another record of the batch. With none at all nothing was published, so there is
      // nothing a later copy could duplicate.
      if (mark && !out.empty()) {
        size_t at = first < out.size() ? first : out.size() - 1;
        if (!out[at].mark) out[at].mark = std::move(mark);
      }
    }
    for (const auto& o : out) {
      switch (o.record.type) {
        case RecordType::kReading: stats_.readings_out++; break;
        case RecordType::kEvent: stats_.events_out++; break;
        case RecordType::kStatus: stats_.status_out++; break;
      }
    }
  }
  if (out.empty()) {
    if (on_durable) on_durable(true);  // all suppressed by report-by-exception: nothing to store
    return;
  }
  store::Outbox::DurableCallback durable;
  if (on_durable) durable = [f = std::move(on_durable)](const Status& s) { f(s.ok()); };
  // Encoding happens inside Append so each record carries the seq the outbox assigns.
  outbox_.Append(out.size(), [&](size_t i, uint64_t seq) {
    const Record& r = out[i].record;
    store::OutMessage m;
    m.state = out[i].state;
    m.mark = out[i].mark;
    m.priority = r.priority();
    m.ts_ms = r.ts_ms;
    m.topic = RecordTopic(r, ctx_);
    m.payload = EncodeRecord(r, ctx_, seq);
    m.retain = r.type == RecordType::kStatus;
    return m;
  }, std::move(durable));
}

PipelineStats Pipeline::Stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace sanigate::pipeline
