#include "store/outbox.h"
#include "core/thread_name.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/clock.h"
#include "store/sqlite_db.h"

namespace sanigate::store {
namespace {

// "SANI" in PRAGMA application_id marks a file as ours; user_version is the schema version.
constexpr int64_t kApplicationId = 0x53414E49;
constexpr int64_t kSchemaVersion = 1;
constexpr size_t kDeadLetterKeep = 10000;
constexpr size_t kDeleteBatch = 64;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS outbox (
  seq      INTEGER PRIMARY KEY,
  priority INTEGER NOT NULL,
  ts       INTEGER NOT NULL,
  topic    TEXT    NOT NULL,
  payload  BLOB    NOT NULL,
  retain   INTEGER NOT NULL,
  size     INTEGER NOT NULL,
  pending  INTEGER NOT NULL DEFAULT 1  -- destinations still owed this row: bit per destination
);
CREATE INDEX IF NOT EXISTS outbox_by_priority ON outbox(priority);
CREATE TABLE IF NOT EXISTS dead_letter (
  seq INTEGER PRIMARY KEY, ts INTEGER, topic TEXT, payload BLOB, reason TEXT, at INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_state (
  device TEXT NOT NULL, key TEXT NOT NULL, active INTEGER NOT NULL, ts INTEGER NOT NULL,
  PRIMARY KEY (device, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS destination (bit INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS adapter_mark (
  device TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (device, key)
) WITHOUT ROWID;
)sql";

Status CheckHeader(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) || std::filesystem::file_size(path, ec) == 0)
    return Status::Ok();
  std::ifstream in(path, std::ios::binary);
  char header[16] = {};
  in.read(header, sizeof header);
  if (in.gcount() < 16 || std::memcmp(header, "SQLite format 3\0", 16) != 0)
    return DataLoss(path + ": not an SQLite database (foreign or corrupt file); it was left "
                           "untouched: move it away to start with an empty outbox");
  return Status::Ok();
}

}  // namespace

struct Outbox::Impl {
  OutboxOptions opt;
  Db writer_db;
  Stmt insert, remove, remove_exact, clear_bit, bump_seq, dead_insert, dead_trim, oldest, state_upsert,
      mark_upsert;

  // One per destination (index 0: the local broker). `bit` is its bit in the rows' `pending`
  // mask, kept by name in the `destination` table, so it need not equal the index.
  struct Dest {
    std::string name;
    uint32_t bit = 1;
    DestinationOptions opt;
    Db reader;  // its consumer's own connection
    Stmt lease;
    std::array<uint64_t, kPriorityCount> cursor{};     // highest seq handed out per priority
    std::unordered_set<uint64_t> settled_not_deleted;   // acked, not yet committed (under mu)
    std::function<void()> on_commit;                    // under listener_mu
  };
  std::vector<Dest> dests;

  struct Queued {
    Envelope env;
    SteadyClock::time_point at;
    uint32_t bits = 1;  // stored destination bits; 0: nobody wants the row (state and mark only)
  };
  struct Settlement {
    uint64_t seq;
    size_t dest;
  };
  struct Callback {
    uint64_t seq;
    DurableCallback fn;
  };

  mutable std::mutex mu;
  std::condition_variable writer_cv;   // work for the writer
  std::condition_variable durable_cv;  // commits for waiters
  std::deque<Queued> queue;
  std::deque<Callback> callbacks;
  std::vector<Settlement> to_delete;
  SteadyClock::time_point first_delete_at{};
  std::vector<std::pair<Settlement, std::string>> to_poison;
  uint64_t next_seq = 0;
  uint64_t committed_seq = 0;
  bool stop = false;
  OutboxStats stats;
  // Listeners are called with listener_mu held, so replacing one waits for a running call:
  // after SetCommitListener({}) returns, the old listener is never called again.
  std::mutex listener_mu;
  std::function<void(const ShedReport&)> on_shed;
  std::vector<ShedReport> removed_at_open;  // reported once a shed listener is set
  SteadyClock::time_point next_age_check{};
  bool big_backlog = false;     // to shrink the file once a large backlog drains
  bool vacuum_pending = false;  // give free pages back in small steps while idle
  int failures_in_a_row = 0;
  // The writer is gathering a group commit: appends need not wake it until the batch is full
  // (one wake-up per record cost a context switch each at thousands of records per second).
  bool lingering = false;

  // Drops everything still queued, reporting it by priority (used only when stopping while the
  // disk refuses every commit). Waiters get an error.
  void DropQueued(const char* reason) {
    std::array<uint64_t, kPriorityCount> rows{};
    std::array<int64_t, kPriorityCount> first{}, last{};
    std::vector<DurableCallback> fire;
    {
      std::lock_guard lk(mu);
      for (const auto& q : queue) {
        int p = static_cast<int>(q.env.msg.priority);
        if (rows[p]++ == 0) first[p] = q.env.msg.ts_ms;
        last[p] = q.env.msg.ts_ms;
      }
      queue.clear();
      to_delete.clear();
      to_poison.clear();
      for (auto& c : callbacks) fire.push_back(std::move(c.fn));
      callbacks.clear();
    }
    durable_cv.notify_all();
    for (int p = 0; p < kPriorityCount; ++p)
      if (rows[p]) Report(static_cast<Priority>(p), rows[p], first[p], last[p], reason);
    for (auto& f : fire) f(Status(Code::kResourceExhausted, "not stored: " + stats_error()));
  }
  std::string stats_error() {
    std::lock_guard lk(mu);
    return stats.last_error;
  }

  uint32_t StoredBits(uint32_t targets) const {
    uint32_t bits = 0;
    for (size_t d = 0; d < dests.size(); ++d)
      if (targets & (1u << d)) bits |= dests[d].bit;
    return bits;
  }
  // Under mu: a row with these stored bits was added (+1) or removed (-1) for each destination.
  void CountPending(uint32_t bits, int64_t delta) {
    for (size_t d = 0; d < dests.size(); ++d) {
      if (!(bits & dests[d].bit)) continue;
      auto& n = stats.destinations[d].pending_rows;
      n = delta >= 0 ? n + static_cast<uint64_t>(delta) : n - std::min<uint64_t>(n, static_cast<uint64_t>(-delta));
    }
  }
  size_t DestOfBit(uint32_t bit) const {
    for (size_t d = 0; d < dests.size(); ++d)
      if (dests[d].bit == bit) return d;
    return dests.size();
  }

  std::thread writer;
  // Checkpoints run on their own connection and thread so commits never wait for them.
  Db checkpoint_db;
  std::thread checkpointer;
  std::condition_variable checkpoint_cv;
  int wal_frames = 0;  // frames in the WAL after the last commit (from the WAL hook)
  void CheckpointLoop();

  Status Init();
  Status InitDestinations();
  void WriterLoop();
  Status Commit(std::vector<Queued>& batch, std::vector<Settlement>& dels,
                std::vector<std::pair<Settlement, std::string>>& poison, uint64_t* removed_rows,
                uint64_t* removed_bytes, std::vector<uint64_t>* settled_per_dest);
  // Destination `dest` is owed row `seq` no more: clears its bit, deletes the row when no
  // destination is left. Returns whether the bit was set; adds a deleted row's size.
  bool Unowe(uint64_t seq, size_t dest, Status* st, uint64_t* removed_rows, uint64_t* removed_bytes);
  void ShedIfNeeded(const char* reason = "size");
  void ShedByAge();
  void ShedDestinations(bool by_age);
  void Report(Priority p, uint64_t rows, int64_t oldest, int64_t newest, const char* reason,
              size_t dest = SIZE_MAX);
  void RefreshOldest();
};

Status Outbox::Impl::Init() {
  if (auto st = CheckHeader(opt.path); !st.ok()) return st;
  auto w = Db::Open(opt.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!w.ok()) return w.status();
  writer_db = std::move(w.value());

  // Identify the file before changing anything in it. Each query is finalized at once so no
  // read transaction stays open (journal_mode cannot change inside one).
  auto query = [&](const char* sql, std::string* text) -> Result<int64_t> {
    auto q = writer_db.Prepare(sql);
    if (!q.ok()) return DataLoss(q.status().message());
    Status err;
    int64_t v = 0;
    if (q->Step(&err)) {
      v = q->Int(0);
      if (text) *text = q->Text(0);
    }
    if (!err.ok()) return DataLoss(opt.path + ": " + err.message());
    return v;
  };
  auto app = query("PRAGMA application_id", nullptr);
  if (!app.ok()) return app.status();
  auto objects = query("SELECT count(*) FROM sqlite_master", nullptr);
  if (!objects.ok()) return objects.status();
  int64_t app_id = *app;
  if (app_id == 0 && *objects > 0)
    return DataLoss(opt.path + ": an SQLite database of another application (" +
                    std::to_string(*objects) +
                    " objects, no Sanigate id); it was left untouched: point outbox.path "
                    "elsewhere or move the file away");
  if (app_id != 0 && app_id != kApplicationId)
    return DataLoss(opt.path + ": an SQLite database of another application (application_id " +
                    std::to_string(app_id) + "); it was left untouched");
  bool fresh = app_id == 0;
  if (!fresh) {
    auto version = query("PRAGMA user_version", nullptr);
    if (!version.ok()) return version.status();
    if (*version > kSchemaVersion)
      return DataLoss(opt.path + ": written by a newer Sanigate (schema " +
                      std::to_string(*version) + ", this one knows " +
                      std::to_string(kSchemaVersion) + ")");
    std::string verdict;
    auto check = query("PRAGMA quick_check", &verdict);
    if (!check.ok()) return check.status();
    if (verdict != "ok") return DataLoss(opt.path + ": integrity check failed: " + verdict);
  }

  if (fresh) {
    // auto_vacuum must be chosen before the first table exists.
    if (auto st = writer_db.Exec("PRAGMA auto_vacuum=INCREMENTAL"); !st.ok()) return st;
  }
  if (auto st = writer_db.Exec("PRAGMA journal_mode=WAL"); !st.ok()) return st;
  if (auto st = writer_db.Exec("PRAGMA wal_autocheckpoint=0"); !st.ok()) return st;
  sqlite3_wal_hook(
      writer_db.raw(),
      [](void* self, sqlite3*, const char*, int frames) -> int {
        auto* impl = static_cast<Impl*>(self);
        {
          std::lock_guard lk(impl->mu);
          impl->wal_frames = frames;
        }
        if (frames >= 1000) impl->checkpoint_cv.notify_one();
        return SQLITE_OK;
      },
      this);
  if (auto st = writer_db.Exec(opt.sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      !st.ok())
    return st;
  if (opt.max_page_count > 0)
    (void)writer_db.Exec("PRAGMA max_page_count=" + std::to_string(opt.max_page_count));
  if (auto st = writer_db.Exec(kSchema); !st.ok()) return st;
  // Files from before upstream destinations: every row was owed to the local broker only. The
  // column is additive, so an older sanigate (a self-update rolled back) still opens the file.
  auto has_pending = query("SELECT count(*) FROM pragma_table_info('outbox') WHERE name='pending'", nullptr);
  if (!has_pending.ok()) return has_pending.status();
  if (*has_pending == 0) {
    if (auto st = writer_db.Exec("ALTER TABLE outbox ADD COLUMN pending INTEGER NOT NULL DEFAULT 1"); !st.ok())
      return st;
  }
  if (fresh) {
    // Ids are "{gateway}:{seq}". Starting a new database at now_ms*1000 keeps ids unique even
    // if an outbox file is lost and recreated.
    std::string init = "PRAGMA application_id=" + std::to_string(kApplicationId) +
                       "; PRAGMA user_version=" + std::to_string(kSchemaVersion) +
                       "; INSERT OR IGNORE INTO meta VALUES('last_seq'," +
                       std::to_string(static_cast<uint64_t>(NowMs()) * 1000) + ")";
    if (auto st = writer_db.Exec(init); !st.ok()) return st;
  }

  Status err;
  auto meta_seq = query("SELECT value FROM meta WHERE key='last_seq'", nullptr);
  if (!meta_seq.ok()) return meta_seq.status();
  uint64_t last = static_cast<uint64_t>(*meta_seq);
  auto q = writer_db.Prepare("SELECT coalesce(max(seq),0), count(*), coalesce(sum(size),0) FROM outbox");
  if (!q.ok()) return q.status();
  if (q->Step(&err)) {
    last = std::max<uint64_t>(last, static_cast<uint64_t>(q->Int(0)));
    stats.pending_rows = static_cast<uint64_t>(q->Int(1));
    stats.pending_bytes = static_cast<uint64_t>(q->Int(2));
  }
  q->Reset();
  if (!err.ok()) return err;
  next_seq = last + 1;
  committed_seq = last;
  if (auto st = InitDestinations(); !st.ok()) return st;

  auto prep = [&](Stmt& s, const std::string& sql) -> Status {
    auto r = writer_db.Prepare(sql);
    if (!r.ok()) return r.status();
    s = std::move(r.value());
    return Status::Ok();
  };
  if (auto st = prep(insert, "INSERT INTO outbox(seq,priority,ts,topic,payload,retain,size,pending) "
                             "VALUES(?,?,?,?,?,?,?,?)");
      !st.ok())
    return st;
  if (auto st = prep(remove, "DELETE FROM outbox WHERE seq=? RETURNING size,pending"); !st.ok()) return st;
  if (auto st = prep(remove_exact, "DELETE FROM outbox WHERE seq=?1 AND pending=?2 RETURNING size"); !st.ok())
    return st;
  if (auto st = prep(clear_bit, "UPDATE outbox SET pending=pending&~?1 WHERE seq=?2 AND (pending&?1)!=0 "
                                "RETURNING pending");
      !st.ok())
    return st;
  if (auto st = prep(bump_seq, "UPDATE meta SET value=? WHERE key='last_seq'"); !st.ok()) return st;
  if (auto st = prep(dead_insert,
                     "INSERT OR REPLACE INTO dead_letter SELECT seq,ts,topic,payload,?,? FROM "
                     "outbox WHERE seq=?");
      !st.ok())
    return st;
  if (auto st = prep(dead_trim, "DELETE FROM dead_letter WHERE seq <= (SELECT seq FROM dead_letter "
                                "ORDER BY seq DESC LIMIT 1 OFFSET " +
                                    std::to_string(kDeadLetterKeep) + ")");
      !st.ok())
    return st;
  if (auto st = prep(oldest, "SELECT ts FROM outbox ORDER BY seq LIMIT 1"); !st.ok()) return st;
  if (auto st = prep(state_upsert, "INSERT OR REPLACE INTO event_state(device,key,active,ts) VALUES(?,?,?,?)");
      !st.ok())
    return st;
  if (auto st = prep(mark_upsert, "INSERT OR REPLACE INTO adapter_mark(device,key,value) VALUES(?,?,?)"); !st.ok())
    return st;

  for (auto& d : dests) {
    auto r = Db::Open(opt.path, SQLITE_OPEN_READWRITE);
    if (!r.ok()) return r.status();
    d.reader = std::move(r.value());
    auto l = d.reader.Prepare(
        "SELECT seq,ts,topic,payload,retain FROM outbox WHERE priority=?1 AND seq>?2 AND "
        "(pending&?4)!=0 ORDER BY seq LIMIT ?3");
    if (!l.ok()) return l.status();
    d.lease = std::move(l.value());
  }
  auto c = Db::Open(opt.path, SQLITE_OPEN_READWRITE);
  if (!c.ok()) return c.status();
  checkpoint_db = std::move(c.value());
  RefreshOldest();
  return Status::Ok();
}

// Gives every configured destination its bit (kept by name), drops the backlog of destinations
// no longer configured (reported as shed, reason "removed"), and counts what each is owed.
Status Outbox::Impl::InitDestinations() {
  std::unordered_map<std::string, uint32_t> stored;
  {
    auto q = writer_db.Prepare("SELECT bit,name FROM destination");
    if (!q.ok()) return q.status();
    Status err;
    while (q->Step(&err)) stored[q->Text(1)] = static_cast<uint32_t>(q->Int(0));
    if (!err.ok()) return err;
  }
  dests.clear();
  dests.emplace_back();
  dests[0].name = "local";
  dests[0].bit = 1;
  uint32_t used = 1;
  for (const auto& u : opt.upstreams)
    if (auto it = stored.find(u.name); it != stored.end()) used |= 1u << it->second;
  for (const auto& u : opt.upstreams) {
    Dest d;
    d.name = u.name;
    d.opt = u;
    if (auto it = stored.find(u.name); it != stored.end()) {
      d.bit = 1u << it->second;
    } else {
      uint32_t b = 1;
      while (b < 31 && (used & (1u << b))) ++b;
      if (b >= 31) return Invalid("too many upstream destinations");
      used |= 1u << b;
      d.bit = 1u << b;
      auto ins = writer_db.Prepare("INSERT INTO destination(bit,name) VALUES(?,?)");
      if (!ins.ok()) return ins.status();
      if (auto st = ins->Bind(1, static_cast<int64_t>(b)).Bind(2, u.name).Run(); !st.ok()) return st;
    }
    dests.push_back(std::move(d));
  }
  stats.destinations.assign(dests.size(), {});
  for (size_t i = 0; i < dests.size(); ++i) stats.destinations[i].name = dests[i].name;

  // A destination taken out of the config: nobody will ever acknowledge its rows.
  for (const auto& [name, b] : stored) {
    if (used & (1u << b)) continue;
    int64_t bit = int64_t{1} << b;
    auto q = writer_db.Prepare("SELECT priority,count(*),min(ts),max(ts) FROM outbox WHERE (pending&?)!=0 GROUP BY priority");
    if (!q.ok()) return q.status();
    q->Bind(1, bit);
    std::vector<std::array<int64_t, 4>> groups;
    Status err;
    while (q->Step(&err)) groups.push_back({q->Int(0), q->Int(1), q->Int(2), q->Int(3)});
    if (!err.ok()) return err;
    std::string b_s = std::to_string(bit);
    if (auto st = writer_db.Exec("BEGIN IMMEDIATE; DELETE FROM outbox WHERE pending=" + b_s +
                                 "; UPDATE outbox SET pending=pending&~" + b_s + " WHERE (pending&" + b_s +
                                 ")!=0; DELETE FROM destination WHERE bit=" + std::to_string(b) + "; COMMIT");
        !st.ok()) {
      (void)writer_db.Exec("ROLLBACK");
      return st;
    }
    for (const auto& g : groups) {
      // Reported after the listeners exist? They do not yet: log through the first report.
      removed_at_open.push_back(ShedReport{static_cast<Priority>(g[0]), static_cast<uint64_t>(g[1]), g[2], g[3],
                                           "removed", name});
    }
  }

  auto q = writer_db.Prepare("SELECT pending,count(*) FROM outbox GROUP BY pending");
  if (!q.ok()) return q.status();
  Status err;
  uint64_t rows = 0;
  while (q->Step(&err)) {
    uint32_t bits = static_cast<uint32_t>(q->Int(0));
    uint64_t n = static_cast<uint64_t>(q->Int(1));
    rows += n;
    for (size_t d = 0; d < dests.size(); ++d)
      if (bits & dests[d].bit) stats.destinations[d].pending_rows += n;
  }
  if (!err.ok()) return err;
  stats.pending_rows = rows;
  auto size = writer_db.Prepare("SELECT coalesce(sum(size),0) FROM outbox");
  if (!size.ok()) return size.status();
  if (size->Step(&err)) stats.pending_bytes = static_cast<uint64_t>(size->Int(0));
  size->Reset();
  return err;
}

void Outbox::Impl::RefreshOldest() {
  Status err;
  std::optional<int64_t> ts;
  if (oldest.Step(&err)) {
    ts = oldest.Int(0);
    oldest.Reset();
  }
  std::lock_guard lk(mu);
  stats.oldest_ts = ts;
}

bool Outbox::Impl::Unowe(uint64_t seq, size_t dest, Status* st, uint64_t* removed_rows,
                         uint64_t* removed_bytes) {
  // Usually the last destination owed the row: delete it in one step.
  const int64_t bit = dests[dest].bit;
  bool hit = false;
  remove_exact.Bind(1, static_cast<int64_t>(seq)).Bind(2, bit);
  while (remove_exact.Step(st)) {
    hit = true;
    *removed_rows += 1;
    *removed_bytes += static_cast<uint64_t>(remove_exact.Int(0));
  }
  remove_exact.Reset();
  if (hit || !st->ok()) return hit;
  clear_bit.Bind(1, bit).Bind(2, static_cast<int64_t>(seq));
  while (clear_bit.Step(st)) hit = true;
  clear_bit.Reset();
  return hit;
}

Status Outbox::Impl::Commit(std::vector<Queued>& batch, std::vector<Settlement>& dels,
                            std::vector<std::pair<Settlement, std::string>>& poison,
                            uint64_t* removed_rows, uint64_t* removed_bytes,
                            std::vector<uint64_t>* settled_per_dest) {
  if (auto st = writer_db.Exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  Status st;
  for (const auto& q : batch) {
    const auto& m = q.env.msg;
    if (q.bits != 0) {
      insert.Bind(1, static_cast<int64_t>(q.env.seq))
          .Bind(2, static_cast<int64_t>(m.priority))
          .Bind(3, m.ts_ms)
          .Bind(4, m.topic)
          .BindBlob(5, m.payload)
          .Bind(6, m.retain ? 1 : 0)
          .Bind(7, static_cast<int64_t>(m.topic.size() + m.payload.size()))
          .Bind(8, static_cast<int64_t>(q.bits));
      st = insert.Run();
      if (!st.ok()) break;
    }
    if (m.state) {
      st = state_upsert.Bind(1, m.state->device).Bind(2, m.state->key).Bind(3, m.state->active ? 1 : 0)
               .Bind(4, m.state->ts_ms).Run();
      if (!st.ok()) break;
    }
    if (m.mark) {
      st = mark_upsert.Bind(1, m.mark->device).Bind(2, m.mark->key).Bind(3, m.mark->value).Run();
      if (!st.ok()) break;
    }
  }
  if (st.ok() && !batch.empty()) {
    st = bump_seq.Bind(1, static_cast<int64_t>(batch.back().env.seq)).Run();
  }
  for (const auto& [where, reason] : poison) {
    if (!st.ok()) break;
    std::string why = where.dest == 0 ? reason : dests[where.dest].name + ": " + reason;
    st = dead_insert.Bind(1, why).Bind(2, NowMs()).Bind(3, static_cast<int64_t>(where.seq)).Run();
    if (st.ok()) dels.push_back(where);
  }
  if (st.ok() && !poison.empty()) st = dead_trim.Run();
  *removed_rows = *removed_bytes = 0;
  settled_per_dest->assign(dests.size(), 0);
  for (const auto& d : dels) {
    if (!st.ok()) break;
    if (Unowe(d.seq, d.dest, &st, removed_rows, removed_bytes)) (*settled_per_dest)[d.dest]++;
  }
  if (st.ok()) st = writer_db.Exec("COMMIT");
  if (!st.ok()) (void)writer_db.Exec("ROLLBACK");
  return st;
}

void Outbox::Impl::Report(Priority p, uint64_t rows, int64_t oldest_ts, int64_t newest_ts,
                          const char* reason, size_t dest) {
  {
    std::lock_guard lk(mu);
    if (dest < dests.size()) stats.destinations[dest].shed[static_cast<int>(p)] += rows;
    else stats.shed[static_cast<int>(p)] += rows;
  }
  std::lock_guard call(listener_mu);
  if (on_shed)
    on_shed(ShedReport{p, rows, oldest_ts, newest_ts, reason, dest < dests.size() ? dests[dest].name : ""});
}

// Lowest priority first, oldest first, down to 99% of the bound so shedding does not run on
// every commit. Alarms go last and are reported like everything else.
void Outbox::Impl::ShedIfNeeded(const char* reason) {
  uint64_t rows, bytes;
  {
    std::lock_guard lk(mu);
    rows = stats.pending_rows;
    bytes = stats.pending_bytes;
  }
  if (rows <= opt.max_rows && bytes <= opt.max_bytes) return;
  uint64_t target_rows = opt.max_rows - opt.max_rows / 100;
  uint64_t target_bytes = opt.max_bytes - opt.max_bytes / 100;
  auto pick = writer_db.Prepare("SELECT seq,ts,size,pending FROM outbox WHERE priority=? ORDER BY seq LIMIT 500");
  if (!pick.ok()) return;
  for (int p = 0; p < kPriorityCount && (rows > target_rows || bytes > target_bytes); ++p) {
    uint64_t shed = 0;
    int64_t first_ts = 0, last_ts = 0;
    while (rows > target_rows || bytes > target_bytes) {
      std::vector<std::array<int64_t, 3>> victims;  // seq, size, pending
      pick->Bind(1, p);
      Status err;
      while ((rows > target_rows || bytes > target_bytes) && pick->Step(&err)) {
        victims.push_back({pick->Int(0), pick->Int(2), pick->Int(3)});
        if (shed == 0 && victims.size() == 1) first_ts = pick->Int(1);
        last_ts = pick->Int(1);
        rows -= 1;
        bytes -= std::min<uint64_t>(bytes, static_cast<uint64_t>(pick->Int(2)));
      }
      pick->Reset();
      if (victims.empty()) break;
      if (!writer_db.Exec("BEGIN IMMEDIATE").ok()) return;
      Status st;
      uint64_t freed = 0;
      for (auto [seq, size, pending] : victims) {
        st = remove.Bind(1, seq).Run();
        if (!st.ok()) break;
        freed += static_cast<uint64_t>(size);
      }
      if (!st.ok() || !writer_db.Exec("COMMIT").ok()) {
        (void)writer_db.Exec("ROLLBACK");
        return;
      }
      shed += victims.size();
      std::lock_guard lk(mu);
      for (const auto& v : victims) CountPending(static_cast<uint32_t>(v[2]), -1);
      stats.pending_rows -= std::min<uint64_t>(stats.pending_rows, victims.size());
      stats.pending_bytes -= std::min<uint64_t>(stats.pending_bytes, freed);
    }
    if (shed) Report(static_cast<Priority>(p), shed, first_ts, last_ts, reason);
  }
}

void Outbox::Impl::ShedByAge() {
  int64_t cutoff = NowMs() - opt.max_age_ms;
  for (int p = 0; p <= static_cast<int>(Priority::kStatus); ++p) {
    auto q = writer_db.Prepare(
        "SELECT pending, count(*), coalesce(sum(size),0), min(ts), max(ts) FROM outbox WHERE "
        "priority=? AND ts<? GROUP BY pending");
    if (!q.ok()) return;
    q->Bind(1, p).Bind(2, cutoff);
    Status err;
    uint64_t n = 0, size = 0;
    int64_t first = INT64_MAX, last = INT64_MIN;
    std::vector<std::pair<uint32_t, uint64_t>> per_mask;
    while (q->Step(&err)) {
      per_mask.emplace_back(static_cast<uint32_t>(q->Int(0)), static_cast<uint64_t>(q->Int(1)));
      n += static_cast<uint64_t>(q->Int(1));
      size += static_cast<uint64_t>(q->Int(2));
      first = std::min(first, q->Int(3));
      last = std::max(last, q->Int(4));
    }
    if (!err.ok() || n == 0) continue;
    auto del = writer_db.Prepare("DELETE FROM outbox WHERE priority=? AND ts<?");
    if (!del.ok() || !del->Bind(1, p).Bind(2, cutoff).Run().ok()) return;
    {
      std::lock_guard lk(mu);
      for (auto [bits, rows] : per_mask) CountPending(bits, -static_cast<int64_t>(rows));
      stats.pending_rows -= std::min(stats.pending_rows, n);
      stats.pending_bytes -= std::min(stats.pending_bytes, size);
    }
    Report(static_cast<Priority>(p), n, first, last, "age");
  }
}

// An upstream destination's own bounds: its oldest rows of the lowest priority first (alarms
// last) stop being owed to it; rows nobody else is owed are deleted. Reported per destination.
void Outbox::Impl::ShedDestinations(bool by_age) {
  for (size_t d = 1; d < dests.size(); ++d) {
    const auto& o = dests[d].opt;
    const int64_t bit = dests[d].bit;
    auto unowe_all = [&](Stmt& pick, int p, uint64_t limit, const char* reason) {
      uint64_t shed = 0, removed_rows = 0, removed_bytes = 0;
      int64_t first = 0, last = 0;
      std::vector<std::pair<uint64_t, int64_t>> victims;
      Status err;
      while (victims.size() < limit && pick.Step(&err)) victims.emplace_back(pick.Int(0), pick.Int(1));
      pick.Reset();
      if (victims.empty() || !writer_db.Exec("BEGIN IMMEDIATE").ok()) return uint64_t{0};
      Status st;
      for (auto [seq, ts] : victims) {
        if (!Unowe(seq, d, &st, &removed_rows, &removed_bytes)) continue;
        if (shed++ == 0) first = ts;
        last = ts;
      }
      if (!st.ok() || !writer_db.Exec("COMMIT").ok()) {
        (void)writer_db.Exec("ROLLBACK");
        return uint64_t{0};
      }
      {
        std::lock_guard lk(mu);
        auto& n = stats.destinations[d].pending_rows;
        n -= std::min(n, shed);
        stats.pending_rows -= std::min(stats.pending_rows, removed_rows);
        stats.pending_bytes -= std::min(stats.pending_bytes, removed_bytes);
      }
      if (shed) Report(static_cast<Priority>(p), shed, first, last, reason, d);
      return static_cast<uint64_t>(victims.size());
    };
    if (o.max_rows > 0) {
      for (int p = 0; p < kPriorityCount; ++p) {
        uint64_t pending;
        {
          std::lock_guard lk(mu);
          pending = stats.destinations[d].pending_rows;
        }
        if (pending <= o.max_rows) break;
        uint64_t excess = pending - (o.max_rows - o.max_rows / 100);
        auto pick = writer_db.Prepare("SELECT seq,ts FROM outbox WHERE priority=? AND (pending&?)!=0 ORDER BY seq LIMIT ?");
        if (!pick.ok()) return;
        while (excess > 0) {
          pick->Bind(1, p).Bind(2, bit).Bind(3, static_cast<int64_t>(std::min<uint64_t>(excess, 500)));
          uint64_t n = unowe_all(*pick, p, excess, "size");
          if (n == 0) break;
          excess -= std::min(excess, n);
        }
      }
    }
    if (by_age && o.max_age_ms > 0) {
      int64_t cutoff = NowMs() - o.max_age_ms;
      auto pick = writer_db.Prepare("SELECT seq,ts FROM outbox WHERE priority=? AND ts<? AND (pending&?)!=0 ORDER BY seq LIMIT 500");
      if (!pick.ok()) return;
      for (int p = 0; p <= static_cast<int>(Priority::kStatus); ++p) {
        while (true) {
          pick->Bind(1, p).Bind(2, cutoff).Bind(3, bit);
          if (unowe_all(*pick, p, 500, "age") == 0) break;
        }
      }
    }
  }
}

void Outbox::Impl::CheckpointLoop() {
  std::unique_lock lk(mu);
  while (!stop) {
    checkpoint_cv.wait_for(lk, std::chrono::seconds(1), [&] { return stop || wal_frames >= 1000; });
    if (stop) break;
    if (wal_frames == 0) continue;
    lk.unlock();
    // PASSIVE never blocks the writer; once all frames are copied the next commit restarts the
    // WAL from its beginning, so the file stays small.
    int log = 0, done = 0;
    sqlite3_wal_checkpoint_v2(checkpoint_db.raw(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    lk.lock();
    if (done >= log) wal_frames = 0;
  }
}

void Outbox::Impl::WriterLoop() {
  auto backoff = std::chrono::milliseconds(100);
  while (true) {
    std::vector<Queued> batch;
    std::vector<Settlement> dels;
    std::vector<std::pair<Settlement, std::string>> poison;
    {
      std::unique_lock lk(mu);
      // Deletes of acknowledged rows are not urgent: gather up to kDeleteBatch of them for at
      // most 50 ms so PUBACKs do not cost a commit each. A crash in between re-sends at most
      // those rows, so duplicates stay bounded (in-flight window + kDeleteBatch).
      auto deletes_due = [&] {
        return to_delete.size() >= kDeleteBatch || !to_poison.empty() ||
               (!to_delete.empty() && SteadyClock::now() - first_delete_at >= std::chrono::milliseconds(50));
      };
      auto has_work = [&] { return stop || !queue.empty() || deletes_due(); };
      if (vacuum_pending) {
        if (!writer_cv.wait_for(lk, std::chrono::milliseconds(20), has_work)) {
          lk.unlock();
          // Idle: return up to 1 MiB of free pages to the file system, then look again.
          (void)writer_db.Exec("PRAGMA incremental_vacuum(256)");
          auto q = writer_db.Prepare("PRAGMA freelist_count");
          Status err;
          bool empty = q.ok() && q->Step(&err) && q->Int(0) == 0;
          lk.lock();
          if (empty) vacuum_pending = false;
          continue;
        }
      } else if (!to_delete.empty()) {
        writer_cv.wait_until(lk, first_delete_at + std::chrono::milliseconds(50), has_work);
        if (!has_work()) continue;
      } else {
        // A first delete must wake us too, to start its 50 ms clock.
        writer_cv.wait(lk, [&] { return has_work() || !to_delete.empty(); });
        if (!has_work()) continue;
      }
      if (stop && queue.empty() && to_delete.empty() && to_poison.empty()) break;
      if (opt.commit_linger.count() > 0 && !stop && queue.size() < opt.commit_max_rows) {
        lingering = true;
        writer_cv.wait_for(lk, opt.commit_linger,
                           [&] { return stop || queue.size() >= opt.commit_max_rows; });
        lingering = false;
      }
      size_t n = std::min(queue.size(), opt.commit_max_rows);
      batch.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      dels.swap(to_delete);
      poison.swap(to_poison);
    }

    size_t deletes_requested = dels.size();
    uint64_t removed_rows = 0, removed_bytes = 0;
    std::vector<uint64_t> settled_per_dest;
    Status st = Commit(batch, dels, poison, &removed_rows, &removed_bytes, &settled_per_dest);
    std::vector<DurableCallback> fire;
    uint32_t batch_bits = 0;
    {
      std::unique_lock lk(mu);
      if (!st.ok()) {
        // Keep everything and try again: nothing accepted is dropped on a failed commit.
        stats.last_error = st.ToString();
        dels.resize(deletes_requested);
        for (auto it = batch.rbegin(); it != batch.rend(); ++it) queue.push_front(std::move(*it));
        to_delete.insert(to_delete.end(), dels.begin(), dels.end());
        to_poison.insert(to_poison.end(), poison.begin(), poison.end());
        bool full = st.code() == Code::kResourceExhausted;
        uint64_t rows_now = stats.pending_rows;
        bool stopping = stop;
        failures_in_a_row++;
        lk.unlock();
        if (stopping && failures_in_a_row >= 3) {
          // Shutting down and the disk will not take them: report what is lost, then exit.
          DropQueued("disk");
          continue;
        }
        if (full) {
          // A full disk: make room by shedding 10% of the stored rows, lowest priority first.
          uint64_t saved = opt.max_rows;
          opt.max_rows = std::max<uint64_t>(rows_now - rows_now / 10, 1);
          ShedIfNeeded("disk");
          opt.max_rows = saved;
        }
        std::unique_lock lk2(mu);
        writer_cv.wait_for(lk2, backoff, [&] { return stop; });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        continue;
      }
      failures_in_a_row = 0;
      backoff = std::chrono::milliseconds(100);
      stats.last_error.clear();
      uint64_t added_bytes = 0, added_rows = 0;
      for (const auto& q : batch) {
        if (q.bits == 0) continue;
        added_rows++;
        added_bytes += q.env.msg.topic.size() + q.env.msg.payload.size();
        batch_bits |= q.bits;
        CountPending(q.bits, 1);
      }
      stats.pending_rows += added_rows;
      stats.pending_bytes += added_bytes;
      stats.pending_rows -= std::min(stats.pending_rows, removed_rows);
      stats.pending_bytes -= std::min(stats.pending_bytes, removed_bytes);
      for (const auto& d : dels) dests[d.dest].settled_not_deleted.erase(d.seq);
      for (size_t d = 0; d < dests.size(); ++d) {
        auto& ds = stats.destinations[d];
        ds.pending_rows -= std::min(ds.pending_rows, settled_per_dest[d]);
        ds.settled += settled_per_dest[d];
      }
      for (const auto& [where, reason] : poison) stats.destinations[where.dest].poisoned++;
      stats.committed += batch.size();
      stats.settled += deletes_requested;
      stats.poisoned += poison.size();
      stats.commits += 1;
      if (!batch.empty()) committed_seq = batch.back().env.seq;
      while (!callbacks.empty() && callbacks.front().seq <= committed_seq) {
        fire.push_back(std::move(callbacks.front().fn));
        callbacks.pop_front();
      }
      if (stats.pending_rows > 10000) big_backlog = true;
    }
    durable_cv.notify_all();
    for (auto& f : fire) f(Status::Ok());
    if (batch_bits) {
      std::lock_guard call(listener_mu);
      for (auto& d : dests)
        if ((batch_bits & d.bit) && d.on_commit) d.on_commit();
    }

    ShedIfNeeded();
    auto now = SteadyClock::now();
    bool age_due = now >= next_age_check;
    ShedDestinations(age_due);
    if (age_due) {
      ShedByAge();
      next_age_check = now + std::chrono::minutes(10);
    }
    {
      // A large backlog drained: give the space back instead of keeping a huge file.
      std::lock_guard lk(mu);
      if (big_backlog && stats.pending_rows == 0 && queue.empty()) {
        big_backlog = false;
        vacuum_pending = true;
      }
    }
    RefreshOldest();
  }
}

Outbox::Outbox(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Outbox>> Outbox::Open(const OutboxOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  std::error_code ec;
  auto parent = std::filesystem::path(options.path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  if (auto st = impl->Init(); !st.ok()) return st;
  Impl* raw = impl.get();
  impl->writer = std::thread([raw] {
    NameThisThread("outbox-writer");
    raw->WriterLoop();
  });
  impl->checkpointer = std::thread([raw] {
    NameThisThread("outbox-ckpt");
    raw->CheckpointLoop();
  });
  return std::unique_ptr<Outbox>(new Outbox(std::move(impl)));
}

Outbox::~Outbox() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->writer_cv.notify_all();
  impl_->checkpoint_cv.notify_all();
  if (impl_->writer.joinable()) impl_->writer.join();
  if (impl_->checkpointer.joinable()) impl_->checkpointer.join();
  // A last full checkpoint so the next start reads a small WAL.
  (void)impl_->writer_db.Exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

uint64_t Outbox::Append(size_t n, const Builder& build, DurableCallback on_durable) {
  auto& d = *impl_;
  uint64_t last;
  bool wake = true;
  auto now = SteadyClock::now();
  {
    std::lock_guard lk(d.mu);
    for (size_t i = 0; i < n; ++i) {
      uint64_t seq = d.next_seq++;
      Impl::Queued q{Envelope{seq, build(i, seq)}, now};
      const OutMessage& m = q.env.msg;
      q.bits = d.StoredBits(m.targets ? m.targets : d.opt.route ? d.opt.route(m) : 1u);
      d.queue.push_back(std::move(q));
    }
    last = d.next_seq - 1;
    d.stats.appended += n;
    wake = !d.lingering || d.queue.size() >= d.opt.commit_max_rows;
    if (on_durable) {
      if (last <= d.committed_seq) {
        // Nothing new (n == 0): already durable.
      } else {
        d.callbacks.push_back({last, std::move(on_durable)});
        on_durable = nullptr;
      }
    }
  }
  if (on_durable) on_durable(Status::Ok());
  if (wake) d.writer_cv.notify_one();
  return last;
}

Status Outbox::WaitDurable(uint64_t seq, std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  std::unique_lock lk(d.mu);
  if (!d.durable_cv.wait_for(lk, timeout, [&] { return d.committed_seq >= seq; }))
    return Status(Code::kDeadline, "outbox commit of seq " + std::to_string(seq) +
                                       " not done within " + std::to_string(timeout.count()) +
                                       " ms" + (d.stats.last_error.empty() ? "" : ": " + d.stats.last_error));
  return Status::Ok();
}

Status Outbox::Flush(std::chrono::milliseconds timeout) {
  uint64_t seq;
  {
    std::lock_guard lk(impl_->mu);
    seq = impl_->next_seq - 1;
  }
  return WaitDurable(seq, timeout);
}

Result<std::vector<Envelope>> Outbox::Lease(size_t max, size_t dest) {
  if (dest >= impl_->dests.size()) return Invalid("no destination " + std::to_string(dest));
  auto& d = impl_->dests[dest];
  std::vector<Envelope> out;
  std::unordered_set<uint64_t> skip;
  {
    std::lock_guard lk(impl_->mu);
    skip = d.settled_not_deleted;
  }
  for (int p = kPriorityCount - 1; p >= 0 && out.size() < max; --p) {
    d.lease.Bind(1, p).Bind(2, static_cast<int64_t>(d.cursor[p]))
        .Bind(3, static_cast<int64_t>(max - out.size() + skip.size()))
        .Bind(4, static_cast<int64_t>(d.bit));
    Status err;
    while (out.size() < max && d.lease.Step(&err)) {
      uint64_t seq = static_cast<uint64_t>(d.lease.Int(0));
      d.cursor[p] = seq;
      if (skip.count(seq)) continue;
      Envelope e;
      e.seq = seq;
      e.msg.priority = static_cast<Priority>(p);
      e.msg.ts_ms = d.lease.Int(1);
      e.msg.topic = d.lease.Text(2);
      e.msg.payload = d.lease.Text(3);
      e.msg.retain = d.lease.Int(4) != 0;
      out.push_back(std::move(e));
    }
    d.lease.Reset();
    if (!err.ok()) return err;
  }
  return out;
}

void Outbox::Settle(uint64_t seq, size_t dest) {
  if (dest >= impl_->dests.size()) return;
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->to_delete.empty()) impl_->first_delete_at = SteadyClock::now();
    impl_->to_delete.push_back({seq, dest});
    impl_->dests[dest].settled_not_deleted.insert(seq);
    // The first one starts the writer's 50 ms clock; the rest ride along.
    size_t n = impl_->to_delete.size();
    if (n != 1 && n < kDeleteBatch) return;
  }
  impl_->writer_cv.notify_one();
}

void Outbox::Poison(uint64_t seq, std::string reason, size_t dest) {
  if (dest >= impl_->dests.size()) return;
  {
    std::lock_guard lk(impl_->mu);
    impl_->to_poison.push_back({{seq, dest}, std::move(reason)});
    impl_->dests[dest].settled_not_deleted.insert(seq);
  }
  impl_->writer_cv.notify_one();
}

void Outbox::ReleaseAll(size_t dest) {
  if (dest < impl_->dests.size()) impl_->dests[dest].cursor.fill(0);
}

size_t Outbox::destination_count() const { return impl_->dests.size(); }

Result<std::optional<int64_t>> Outbox::OldestPending(size_t dest) const {
  if (dest >= impl_->dests.size()) return Invalid("no destination " + std::to_string(dest));
  auto db = Db::Open(impl_->opt.path, SQLITE_OPEN_READONLY);
  if (!db.ok()) return db.status();
  auto q = db->Prepare("SELECT ts FROM outbox WHERE (pending&?)!=0 ORDER BY seq LIMIT 1");
  if (!q.ok()) return q.status();
  q->Bind(1, static_cast<int64_t>(impl_->dests[dest].bit));
  Status err;
  std::optional<int64_t> ts;
  if (q->Step(&err)) ts = q->Int(0);
  if (!err.ok()) return err;
  return ts;
}

void Outbox::SetCommitListener(std::function<void()> f, size_t dest) {
  std::lock_guard lk(impl_->listener_mu);
  if (dest < impl_->dests.size()) impl_->dests[dest].on_commit = std::move(f);
}

void Outbox::SetShedListener(std::function<void(const ShedReport&)> f) {
  std::vector<ShedReport> removed;
  {
    std::lock_guard lk(impl_->listener_mu);
    impl_->on_shed = std::move(f);
    if (impl_->on_shed) removed.swap(impl_->removed_at_open);
  }
  // The backlog of destinations taken out of the config, dropped at open, reported now.
  for (const auto& r : removed) {
    std::lock_guard call(impl_->listener_mu);
    if (impl_->on_shed) impl_->on_shed(r);
  }
}

OutboxStats Outbox::Stats() const {
  std::lock_guard lk(impl_->mu);
  OutboxStats s = impl_->stats;
  s.queued = impl_->queue.size();
  s.sqlite_memory_bytes = static_cast<uint64_t>(sqlite3_memory_used());
  return s;
}

namespace {
// Every row of `sql`, made by `row` from the statement. Its own connection: the reader
// connection belongs to the consumer thread.
template <class Row, class MakeRow>
Result<std::vector<Row>> ReadRows(const std::string& path, const char* sql, MakeRow row) {
  auto db = Db::Open(path, SQLITE_OPEN_READONLY);
  if (!db.ok()) return db.status();
  auto q = db->Prepare(sql);
  if (!q.ok()) return q.status();
  std::vector<Row> rows;
  Status err;
  while (q->Step(&err)) rows.push_back(row(*q));
  if (!err.ok()) return err;
  return rows;
}
}  // namespace

Result<std::vector<EventStateRow>> Outbox::EventStates() const {
  return ReadRows<EventStateRow>(impl_->opt.path, "SELECT device,key,active,ts FROM event_state", [](Stmt& q) {
    return EventStateRow{q.Text(0), q.Text(1), q.Int(2) != 0, q.Int(3)};
  });
}

Result<std::vector<MarkRow>> Outbox::Marks() const {
  return ReadRows<MarkRow>(impl_->opt.path, "SELECT device,key,value FROM adapter_mark",
                           [](Stmt& q) { return MarkRow{q.Text(0), q.Text(1), q.Text(2)}; });
}

uint64_t Outbox::last_seq() const {
  std::lock_guard lk(impl_->mu);
  return impl_->next_seq - 1;
}

}  // namespace sanigate::store
