// Pipeline: the path from an adapter's Record to the durable outbox. Applies per-metric
// report-by-exception (deadband with a maximum silence), derives the `overflow` event with
// hysteresis from a fill level, encodes the contract JSON with the record's id, and appends.
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
};

class Pipeline : public RecordSink {
 public:
  Pipeline(store::Outbox& outbox, EncodeContext ctx);

  // Replaces all device rules (SIGHUP). Report-by-exception state of kept metrics survives.
  void SetRules(std::unordered_map<std::string, DeviceRules> rules);
  void Emit(Record record) override;
  void EmitBatch(std::vector<Record> records) override;
  void EmitDurable(std::vector<Record> records, DurableFn on_durable) override;
  PipelineStats Stats() const;
  const EncodeContext& context() const { return ctx_; }

 private:
  struct MetricState {
    MetricValue last;
    int64_t last_ts = 0;
  };
  struct DeviceState {
    std::unordered_map<std::string, MetricState> metrics;
    bool overflow_active = false;
    std::unordered_map<std::string, bool> events_active;  // by "event/metric"
  };

  // Filters a reading in place and appends derived events. Caller holds mu_.
  void Process(Record& r, std::vector<Record>& out);

  store::Outbox& outbox_;
  const EncodeContext ctx_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, DeviceRules> rules_;
  std::unordered_map<std::string, DeviceState> state_;
  PipelineStats stats_;
};

}  // namespace sanigate::pipeline
