// Durable outbox: every record is committed to SQLite (WAL) before it can be published, and is
// deleted only after every destination that wants it acknowledged it. One writer thread does
// group commits; leases hand out committed rows by priority (alarms first), then oldest first.
//
// Destinations: 0 is the local broker; upstream destinations ([[upstream]]) follow. Each row
// carries the set of destinations still owed it (a bit mask); each destination has its own
// lease cursor, its own in-flight set and its own retention, so a slow or dead destination never
// holds back another. Destinations are stored by name, so a restart keeps each one's backlog.
// Thread-safety: Append/Settle/Poison/Stats from any thread; Lease/ReleaseAll of destination d
// from one consumer thread per destination (its forwarder).
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

inline constexpr size_t kMaxDestinations = 16;  // the local broker and up to 15 upstreams

struct DestinationOptions {
  std::string name;          // stable id: its backlog is found again under it after a restart
  uint64_t max_rows = 0;     // backlog bound of this destination; 0 = the outbox's bounds only
  int64_t max_age_ms = 0;    // telemetry and status older than this are shed; 0 = the outbox's
};

struct OutMessage;

struct OutboxOptions {
  std::string path;
  uint64_t max_rows = 2'000'000;
  uint64_t max_bytes = 512ull << 20;
  int64_t max_age_ms = 168ll * 3600 * 1000;  // telemetry and status only; events are kept
  size_t commit_max_rows = 1000;
  std::chrono::milliseconds commit_linger{0};
  bool sync_full = true;
  int64_t max_page_count = 0;  // >0 caps the file (tests use it to simulate a full disk)
  // Upstream destinations, in order (destination 1, 2, ...). Destination 0 is always the local
  // broker and is not listed.
  std::vector<DestinationOptions> upstreams;
  // Which destinations want a message whose `targets` is 0 (a bit per destination). Unset: the
  // local broker only. A message nobody wants is not stored.
  std::function<uint32_t(const OutMessage&)> route;
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
  uint32_t targets = 0;                // destinations (bit d = destination d); 0 = OutboxOptions::route
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
  std::string reason;  // "size", "age", "disk" or "removed" (a destination no longer configured)
  std::string destination;  // empty: the rows were dropped for every destination
};

struct DestinationStats {
  std::string name;
  uint64_t pending_rows = 0;  // committed rows this destination has not acknowledged
  std::array<uint64_t, kPriorityCount> shed{};
  uint64_t settled = 0, poisoned = 0;
};

struct OutboxStats {
  uint64_t pending_rows = 0;   // committed and not yet acknowledged
  uint64_t pending_bytes = 0;
  uint64_t queued = 0;         // appended, not yet committed
  std::optional<int64_t> oldest_ts;
  uint64_t appended = 0, committed = 0, settled = 0, poisoned = 0, commits = 0;
  // SQLite's heap in this process (page caches of every connection included): the part of the
  // daemon's memory that grows with the database until the caches are full.
  uint64_t sqlite_memory_bytes = 0;
  std::array<uint64_t, kPriorityCount> shed{};
  std::string last_error;      // empty while healthy
  std::vector<DestinationStats> destinations;  // [0] is the local broker
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

  // Committed rows owed to destination `dest` and not in flight to it: highest priority first,
  // then by seq. Marks them in flight.
  Result<std::vector<Envelope>> Lease(size_t max, size_t dest = 0);
  // Acknowledged by `dest`: the row is deleted (batched) once no destination is owed it.
  void Settle(uint64_t seq, size_t dest = 0);
  // Refused by `dest`'s broker: a copy goes to the dead-letter table, `dest` is owed it no more.
  void Poison(uint64_t seq, std::string reason, size_t dest = 0);
  void ReleaseAll(size_t dest = 0);  // link lost: rows in flight to `dest` are pending again
  // The oldest measurement time among the rows owed to `dest` (reads on its own connection).
  Result<std::optional<int64_t>> OldestPending(size_t dest) const;
  size_t destination_count() const;

  // Called after each commit that stored rows for `dest`.
  void SetCommitListener(std::function<void()> f, size_t dest = 0);
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
