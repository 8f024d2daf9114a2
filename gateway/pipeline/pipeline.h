// Pipeline: the path from an adapter's Record to the durable outbox. Applies per-metric
// report-by-exception (deadband with a maximum silence), derives the `overflow` event with
// hysteresis from a fill level, encodes the contract JSON with the record's id, and appends.
// State events: the last announced state per device and event is durable (stored with the
// event record in the outbox) and reloaded at start; rules and adapters start from it, so every
// `active` is followed by a `cleared`, and a `cleared` of what was never announced is dropped.
// Thread-safety: Emit/EmitBatch/SetRules from any thread (one mutex, held briefly).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/device_rules.h"
#include "core/record_json.h"
#include "core/record_sink.h"
#include "store/outbox.h"

namespace sanigate::pipeline {

using sanigate::DeviceRules;
using sanigate::MetricRule;
using sanigate::OverflowRule;

struct PipelineStats {
  uint64_t records_in = 0, readings_out = 0, events_out = 0, status_out = 0, suppressed = 0;
  uint64_t repeated_events = 0;  // `cleared` events dropped: nothing active had been announced
};

class Pipeline : public RecordSink {
 public:
  Pipeline(store::Outbox& outbox, EncodeContext ctx);

  // Replaces all device rules (SIGHUP). Report-by-exception state of kept metrics survives.
  void SetRules(std::unordered_map<std::string, DeviceRules> rules);
  void Emit(Record record) override;
  void EmitBatch(std::vector<Record> records) override;
  void EmitDurable(std::vector<Record> records, DurableFn on_durable) override;
  std::optional<bool> LastAnnounced(const std::string& device, const std::string& event) const override;
  std::optional<std::string> LastMark(const std::string& device, const std::string& key) const override;
  PipelineStats Stats() const;
  const EncodeContext& context() const { return ctx_; }

 private:
  struct MetricState {
    MetricValue last;
    int64_t last_ts = 0;
  };
  struct DeviceState {
    std::unordered_map<std::string, MetricState> metrics;
  };
  // One record on its way to the outbox, with the durable state update of a state event.
  struct Outgoing {
    Record record;
    std::optional<store::EventStateRow> state;
    std::optional<store::MarkRow> mark;
  };

  // Filters a reading in place and appends derived events. Caller holds mu_.
  void Process(Record& r, std::vector<Outgoing>& out);
  // Appends a state event and records it as the announced state of `key`, unless it clears what
  // was not active. Caller holds mu_.
  void AddStateEvent(Record e, const std::string& key, std::vector<Outgoing>& out);
  // Announced state of `key` for `device`: false when never announced. Caller holds mu_.
  bool Active(const std::string& device, const std::string& key) const;

  store::Outbox& outbox_;
  const EncodeContext ctx_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, DeviceRules> rules_;
  std::unordered_map<std::string, DeviceState> state_;
  // device -> key (event, or "event/metric" for rule events) -> active; mirrors the outbox's
  // event_state table.
  std::unordered_map<std::string, std::unordered_map<std::string, bool>> announced_;
  // device -> key -> value of the adapter marks committed before this start (outbox adapter_mark).
  std::unordered_map<std::string, std::unordered_map<std::string, std::string>> marks_;
  PipelineStats stats_;
};

}  // namespace sanigate::pipeline
