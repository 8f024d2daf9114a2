// RecordSink: where adapters put what they read. The pipeline implements it; adapters never see
// MQTT or SQLite. Implementations must be thread-safe and must not block for long.
#pragma once

#include <vector>

#include "core/record.h"

namespace sanigate {

class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual void Emit(Record record) = 0;
  virtual void EmitBatch(std::vector<Record> records) {
    for (auto& r : records) Emit(std::move(r));
  }
};

}  // namespace sanigate
