// RecordSink: where adapters put what they read. The pipeline implements it; adapters never see
// MQTT or SQLite. Implementations must be thread-safe and must not block for long.
#pragma once

#include <functional>
#include <optional>
#include <string>
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
  // Like EmitBatch, then calls `on_durable` once (from any thread) when the records are safely
  // stored: true = committed (or nothing needed storing), false = they could not be stored.
  // Adapters acknowledge a device (JT/T 808 0x8001) only after `true`.
  using DurableFn = std::function<void(bool durable)>;
  virtual void EmitDurable(std::vector<Record> records, DurableFn on_durable) {
    EmitBatch(std::move(records));
    on_durable(true);
  }
  // The state last announced to consumers for `event` of `device` (true: active), kept across
  // restarts; nullopt when never announced. An adapter that derives state events asks it for a
  // device it has not seen since it started, so a condition that ended while the gateway was
  // down is cleared.
  virtual std::optional<bool> LastAnnounced(const std::string& device, const std::string& event) const {
    (void)device;
    (void)event;
    return std::nullopt;
  }
  // The value of the last Record::mark `key` of `device` that was committed, kept across
  // restarts and crashes; nullopt when none was.
  virtual std::optional<std::string> LastMark(const std::string& device, const std::string& key) const {
    (void)device;
    (void)key;
    return std::nullopt;
  }
};

}  // namespace sanigate
