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
  uint64_t polls = 0;          // poll cycles
  uint64_t partial_polls = 0;  // cycles cut short by a timeout after some answers (published)
  uint64_t failed_polls = 0;   // cycles without a single answer
  uint64_t requests = 0, timeouts = 0, exceptions = 0, errors = 0;
  uint64_t wrong_answers = 0;  // frames from another slave, or garbled: retried, never held against us
  double last_latency_ms = 0;  // of the last successful request
  double max_latency_ms = 0;
};

// kPartial: the device answered, but a later request of the cycle got no answer; what was read
// is published (the rest flagged in `quality`). After kPartial and kFailed a late answer may
// still be on its way: the caller resets the link before the next request.
enum class PollOutcome { kOk, kPartial, kFailed };

class DevicePoller {
 public:
  DevicePoller(DeviceConfig config, PlanLimits limits);

  // Runs one cycle on `ctx` (already connected; the slave id is set here). Appends the reading,
  // status changes and events to `out`. kFailed means the device did not answer at all (timeout
  // or connection error): the caller may reconnect. The cycle stops at the first request without
  // an answer, so a dead device costs one timeout per cycle.
  PollOutcome Poll(modbus_t* ctx, std::vector<Record>& out);
  // Executes one write command on `ctx` (the caller owns the line for its duration).
  CommandReply Write(modbus_t* ctx, const CommandRequest& request);
  const CommandConfig* FindCommand(const std::string& name) const;
  // The time a request may wait for the line, or nullopt after answering it at once (unknown
  // command). Shared by every transport's queue.
  std::optional<std::chrono::milliseconds> Admit(const CommandRequest& request, const ReplyFn& reply);

  // Consumers were told the device is offline (before a restart): it is announced back online,
  // with the event cleared, at its first answer, and not announced offline again meanwhile.
  void AssumeAnnouncedOffline() {
    online_ = false;
    announced_ = true;
  }

  // The caller could not even reach the device (connect failed): counts as a failed poll.
  void Unreachable(const std::string& why, std::vector<Record>& out);

  const DeviceConfig& config() const { return cfg_; }
  bool online() const { return online_; }
  bool failing() const { return failures_ >= cfg_.offline_after; }
  int failures() const { return failures_; }
  // Time until the next poll: the configured interval, or while the device is failing a
  // backoff doubling from it up to 10 s (or the interval, if longer), so a dead or late slave
  // costs the others one timeout per backoff, not per interval.
  std::chrono::milliseconds NextInterval() const;
  const PollCounters& counters() const { return counters_; }
  const std::string& last_error() const { return last_error_; }
  size_t planned_requests() const { return plan_.size(); }

  // Called around every request; a serial line uses them to keep the 3.5-character silence.
  std::function<void()> before_request, after_request;
  // Called after a wrong answer (another slave's frame, a bad CRC) before the request is sent
  // again: a serial line waits until it is quiet and drops what is left. Default: modbus_flush.
  std::function<void()> recover_line;

 private:
  void Failed(std::vector<Record>& out);
  void Replan();
  // One read request, sent again (at most twice) after a wrong answer. Returns libmodbus's rc;
  // `err` is errno after the last try.
  int Read(modbus_t* ctx, const ReadBlock& blk, std::vector<uint16_t>& regs,
           std::vector<uint8_t>& bits, int& err);
  // After another slave's frame: waits for this device's own answer to `blk` (RTU framing).
  int ReceiveOwnAnswer(modbus_t* ctx, const ReadBlock& blk, std::vector<uint16_t>& regs,
                       std::vector<uint8_t>& bits, int& err);
  // Decodes point `pi` from the block just read into `reading`.
  void DecodePoint(size_t pi, const ReadBlock& blk, const std::vector<uint16_t>& regs,
                   const std::vector<uint8_t>& bits, Record& reading) const;

  DeviceConfig cfg_;
  PlanLimits limits_;
  std::vector<ReadBlock> plan_;
  // Per point. A refusal is believed only when confirmed: a point is set aside (`rejected_`)
  // after its own request was refused in two cycles in a row; until then one transient
  // exception costs only that cycle's split. A merged block refused while each of its points
  // reads fine on its own has a hole in its gap: after two such cycles its points are read on
  // their own (`split_`) until the next re-probe.
  std::vector<bool> rejected_;
  std::vector<uint8_t> own_refusals_;  // consecutive cycles the point's own request was refused
  std::vector<bool> split_;
  std::vector<uint8_t> hole_strikes_;
  std::vector<int> probe_at_;          // cycle at which a rejected point is asked again alone
  int cycles_ = 0;
  int failures_ = 0;
  bool online_ = false;
  bool announced_ = false;
  int64_t last_seen_ms_ = 0;
  std::string last_error_;
  PollCounters counters_;
};

// The poller's figures in the form the gateway status shows per device.
DeviceCounters ToDeviceCounters(const DevicePoller& poller);

}  // namespace sanigate::dev::modbus
