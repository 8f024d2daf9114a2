// Durable outbox: every record is committed to SQLite (WAL) before it can be published, and is
// deleted only after the broker acknowledged it. One writer thread does group commits; leases
// hand out committed rows by priority (alarms first), then oldest first.
// Thread-safety: Append/Settle/Poison/Stats from any thread; Lease/ReleaseAll from one consumer
// thread (the forwarder).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/record.h"
#include "core/status.h"

namespace sanigate::store {

struct OutboxOptions {
  std::string path;
  uint64_t max_rows = 2'000'000;
  uint64_t max_bytes = 512ull << 20;
  int64_t max_age_ms = 168ll * 3600 * 1000;  // telemetry and status only; events are kept
  size_t commit_max_rows = 1000;
  std::chrono::milliseconds commit_linger{0};
  bool sync_full = true;
  int64_t max_page_count = 0;  // >0 caps the file (tests use it to simulate a full disk)
};

// The last announced state of one state event (sos, overflow, offline, ...) of one device. It is
// stored in the same transaction as the event record, so after a crash or a restart the gateway
// knows what consumers were last told and can clear what is no longer true.
struct EventStateRow {
  std::string device;
  std::string key;  // the event name, or "event/metric" for events derived by rules
  bool active = false;
  int64_t ts_ms = 0;
};

// An adapter's progress mark (Record::mark) of one device, stored in the same transaction as the
// record it came with.
struct MarkRow {
  std::string device, key, value;
};

struct OutMessage {
  Priority priority = Priority::kTelemetry;
  int64_t ts_ms = 0;
  std::string topic;
  std::string payload;
  bool retain = false;
  std::optional<EventStateRow> state;  // set for a state event: kept durable with the record
  std::optional<MarkRow> mark;         // an adapter's progress, kept durable with the record
};

struct Envelope {
  uint64_t seq = 0;
  OutMessage msg;
};

// What the outbox dropped to stay within its bounds. Never silent: the gateway logs it, counts it
// in its status and publishes an `outbox_shed` event (critical when alarms were among them).
struct ShedReport {
  Priority priority = Priority::kTelemetry;
  uint64_t rows = 0;
  int64_t oldest_ts = 0;
  int64_t newest_ts = 0;
  std::string reason;  // "size", "age" or "disk"
};

struct OutboxStats {
  uint64_t pending_rows = 0;   // committed and not yet acknowledged
  uint64_t pending_bytes = 0;
  uint64_t queued = 0;         // appended, not yet committed
  std::optional<int64_t> oldest_ts;
  uint64_t appended = 0, committed = 0, settled = 0, poisoned = 0, commits = 0;
  std::array<uint64_t, kPriorityCount> shed{};
  std::string last_error;      // empty while healthy
};

class Outbox {
 public:
  // Opens or creates the database. A file that is not a Sanigate outbox (foreign, corrupt, or
  // from a newer version) is refused with kDataLoss and left untouched.
  static Result<std::unique_ptr<Outbox>> Open(const OutboxOptions& options);
  ~Outbox();  // commits what is queued, then closes
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  using Builder = std::function<OutMessage(size_t index, uint64_t seq)>;
  using DurableCallback = std::function<void(const Status&)>;
  // Assigns n consecutive sequence numbers, builds each message with its seq (records carry it
  // in their id) and queues them for the next group commit. Never waits for the disk. Returns
  // the last seq; `on_durable` runs on the writer thread after the commit.
  uint64_t Append(size_t n, const Builder& build, DurableCallback on_durable = {});
  // Waits until everything appended up to `seq` is committed.
  Status WaitDurable(uint64_t seq, std::chrono::milliseconds timeout);
  Status Flush(std::chrono::milliseconds timeout);

  // Committed rows not in flight: highest priority first, then by seq. Marks them in flight.
  Result<std::vector<Envelope>> Lease(size_t max);
  void Settle(uint64_t seq);                       // acknowledged: delete (batched)
  void Poison(uint64_t seq, std::string reason);   // refused by the broker: dead-letter it
  void ReleaseAll();                               // link lost: in-flight rows are pending again

  void SetCommitListener(std::function<void()> f);
  void SetShedListener(std::function<void(const ShedReport&)> f);
  OutboxStats Stats() const;
  // The last announced state of every (device, state event) committed so far.
  Result<std::vector<EventStateRow>> EventStates() const;
  // The last mark of every (device, key) committed so far.
  Result<std::vector<MarkRow>> Marks() const;
  uint64_t last_seq() const;

 private:
  struct Impl;
  explicit Outbox(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sanigate::store
