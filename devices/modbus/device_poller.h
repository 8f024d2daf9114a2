// DevicePoller: one Modbus device's poll cycle over a libmodbus context it is handed (its own
// TCP connection, or the shared context of a serial line): the read plan, decoding into a
// reading, per-point quality, re-planning when the device rejects an address, and the online /
// offline state machine with its status records and `offline` events.
// Not thread-safe: one worker owns a poller at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "api/adapter.h"
#include "core/record.h"
#include "modbus/modbus_config.h"

typedef struct _modbus modbus_t;

namespace sanigate::dev::modbus {

// One request: a run of registers or bits of one table covering several points.
struct ReadBlock {
  Table table = Table::kHolding;
  uint16_t start = 0;
  uint16_t count = 0;
  std::vector<size_t> points;  // indexes into the device's points
};

struct PlanLimits {
  size_t max_gap = 8;         // registers or bits that may be read over to merge two points
  size_t max_registers = 125; // FC03/FC04 limit
  size_t max_bits = 2000;     // FC01/FC02 limit
};

// Merges points into as few reads as the limits allow. Points listed in `skip` are left out.
// Pure: unit-tested.
std::vector<ReadBlock> PlanReads(const std::vector<PointConfig>& points, const PlanLimits& limits,
                                 const std::vector<bool>& skip = {});
inline std::vector<ReadBlock> PlanReads(const std::vector<PointConfig>& points, size_t max_gap) {
  return PlanReads(points, PlanLimits{max_gap, 125, 2000});
}

struct PollCounters {
  uint64_t requests = 0, timeouts = 0, exceptions = 0, errors = 0;
  double last_latency_ms = 0;  // of the last successful request
  double max_latency_ms = 0;
};

enum class PollOutcome { kOk, kFailed };

class DevicePoller {
 public:
  DevicePoller(DeviceConfig config, PlanLimits limits);

  // Runs one cycle on `ctx` (already connected; the slave id is set here). Appends the reading,
  // status changes and events to `out`. kFailed means the device did not answer (timeout or
  // connection error): the caller may reconnect.
  PollOutcome Poll(modbus_t* ctx, std::vector<Record>& out);
  // Executes one write command on `ctx` (the caller owns the line for its duration).
  CommandReply Write(modbus_t* ctx, const CommandRequest& request);
  const CommandConfig* FindCommand(const std::string& name) const;
  // The time a request may wait for the line, or nullopt after answering it at once (unknown
  // command). Shared by every transport's queue.
  std::optional<std::chrono::milliseconds> Admit(const CommandRequest& request, const ReplyFn& reply);

  // The caller could not even reach the device (connect failed): counts as a failed poll.
  void Unreachable(const std::string& why, std::vector<Record>& out);

  const DeviceConfig& config() const { return cfg_; }
  bool online() const { return online_; }
  bool failing() const { return failures_ >= cfg_.offline_after; }
  int failures() const { return failures_; }
  const PollCounters& counters() const { return counters_; }
  const std::string& last_error() const { return last_error_; }
  size_t planned_requests() const { return plan_.size(); }

  // Called around every request; a serial line uses them to keep the 3.5-character silence.
  std::function<void()> before_request, after_request;

 private:
  void Failed(std::vector<Record>& out);
  void Replan();

  DeviceConfig cfg_;
  PlanLimits limits_;
  std::vector<ReadBlock> plan_;
  std::vector<bool> split_;      // per point: read on its own (its block was rejected)
  std::vector<bool> rejected_;   // per point: the device rejects its address
  int cycles_ = 0;
  int failures_ = 0;
  bool online_ = false;
  bool announced_ = false;
  int64_t last_seen_ms_ = 0;
  std::string last_error_;
  PollCounters counters_;
};

}  // namespace sanigate::dev::modbus
