#include "store/outbox.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
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
  size     INTEGER NOT NULL
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
  Db writer_db, reader_db;
  Stmt insert, remove, bump_seq, lease, dead_insert, dead_trim, oldest, state_upsert, mark_upsert;

  struct Queued {
    Envelope env;
    SteadyClock::time_point at;
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
  std::vector<uint64_t> to_delete;
  SteadyClock::time_point first_delete_at{};
  std::vector<std::pair<uint64_t, std::string>> to_poison;
  std::unordered_set<uint64_t> settled_not_deleted;  // acked, delete not yet committed
  uint64_t next_seq = 0;
  uint64_t committed_seq = 0;
  bool stop = false;
  OutboxStats stats;
  // Listeners are called with listener_mu held, so replacing one waits for a running call:
  // after SetCommitListener({}) returns, the old listener is never called again.
  std::mutex listener_mu;
  std::function<void()> on_commit;
  std::function<void(const ShedReport&)> on_shed;
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

  // Lease cursors: the highest seq handed out per priority (consumer thread only).
  std::array<uint64_t, kPriorityCount> cursor{};

  std::thread writer;
  // Checkpoints run on their own connection and thread so commits never wait for them.
  Db checkpoint_db;
  std::thread checkpointer;
  std::condition_variable checkpoint_cv;
  int wal_frames = 0;  // frames in the WAL after the last commit (from the WAL hook)
  void CheckpointLoop();

  Status Init();
  void WriterLoop();
  Status Commit(std::vector<Queued>& batch, std::vector<uint64_t>& dels,
                std::vector<std::pair<uint64_t, std::string>>& poison, uint64_t* removed_rows,
                uint64_t* removed_bytes);
  void ShedIfNeeded(const char* reason = "size");
  void ShedByAge();
  void Report(Priority p, uint64_t rows, int64_t oldest, int64_t newest, const char* reason);
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

  auto prep = [&](Stmt& s, const std::string& sql) -> Status {
    auto r = writer_db.Prepare(sql);
    if (!r.ok()) return r.status();
    s = std::move(r.value());
    return Status::Ok();
  };
  if (auto st = prep(insert, "INSERT INTO outbox(seq,priority,ts,topic,payload,retain,size) "
                             "VALUES(?,?,?,?,?,?,?)");
      !st.ok())
    return st;
  if (auto st = prep(remove, "DELETE FROM outbox WHERE seq=? RETURNING size"); !st.ok()) return st;
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

  auto r = Db::Open(opt.path, SQLITE_OPEN_READWRITE);
  if (!r.ok()) return r.status();
  reader_db = std::move(r.value());
  auto c = Db::Open(opt.path, SQLITE_OPEN_READWRITE);
  if (!c.ok()) return c.status();
  checkpoint_db = std::move(c.value());
  auto l = reader_db.Prepare(
      "SELECT seq,ts,topic,payload,retain FROM outbox WHERE priority=? AND seq>? ORDER BY seq "
      "LIMIT ?");
  if (!l.ok()) return l.status();
  lease = std::move(l.value());
  RefreshOldest();
  return Status::Ok();
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

Status Outbox::Impl::Commit(std::vector<Queued>& batch, std::vector<uint64_t>& dels,
                            std::vector<std::pair<uint64_t, std::string>>& poison,
                            uint64_t* removed_rows, uint64_t* removed_bytes) {
  if (auto st = writer_db.Exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  Status st;
  for (const auto& q : batch) {
    const auto& m = q.env.msg;
    insert.Bind(1, static_cast<int64_t>(q.env.seq))
        .Bind(2, static_cast<int64_t>(m.priority))
        .Bind(3, m.ts_ms)
        .Bind(4, m.topic)
        .BindBlob(5, m.payload)
        .Bind(6, m.retain ? 1 : 0)
        .Bind(7, static_cast<int64_t>(m.topic.size() + m.payload.size()));
    st = insert.Run();
    if (!st.ok()) break;
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
  for (const auto& [seq, reason] : poison) {
    if (!st.ok()) break;
    st = dead_insert.Bind(1, reason).Bind(2, NowMs()).Bind(3, static_cast<int64_t>(seq)).Run();
    if (st.ok()) dels.push_back(seq);
  }
  if (st.ok() && !poison.empty()) st = dead_trim.Run();
  *removed_rows = *removed_bytes = 0;
  for (uint64_t seq : dels) {
    if (!st.ok()) break;
    remove.Bind(1, static_cast<int64_t>(seq));
    while (remove.Step(&st)) {
      *removed_rows += 1;
      *removed_bytes += static_cast<uint64_t>(remove.Int(0));
    }
    remove.Reset();
  }
  if (st.ok()) st = writer_db.Exec("COMMIT");
  if (!st.ok()) (void)writer_db.Exec("ROLLBACK");
  return st;
}

void Outbox::Impl::Report(Priority p, uint64_t rows, int64_t oldest_ts, int64_t newest_ts,
                          const char* reason) {
  {
    std::lock_guard lk(mu);
    stats.shed[static_cast<int>(p)] += rows;
  }
  std::lock_guard call(listener_mu);
  if (on_shed) on_shed(ShedReport{p, rows, oldest_ts, newest_ts, reason});
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
  auto pick = writer_db.Prepare("SELECT seq,ts,size FROM outbox WHERE priority=? ORDER BY seq LIMIT 500");
  if (!pick.ok()) return;
  for (int p = 0; p < kPriorityCount && (rows > target_rows || bytes > target_bytes); ++p) {
    uint64_t shed = 0;
    int64_t first_ts = 0, last_ts = 0;
    while (rows > target_rows || bytes > target_bytes) {
      std::vector<std::pair<uint64_t, int64_t>> victims;
      pick->Bind(1, p);
      Status err;
      while ((rows > target_rows || bytes > target_bytes) && pick->Step(&err)) {
        victims.emplace_back(pick->Int(0), pick->Int(2));
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
      for (auto [seq, size] : victims) {
        st = remove.Bind(1, static_cast<int64_t>(seq)).Run();
        if (!st.ok()) break;
        freed += static_cast<uint64_t>(size);
      }
      if (!st.ok() || !writer_db.Exec("COMMIT").ok()) {
        (void)writer_db.Exec("ROLLBACK");
        return;
      }
      shed += victims.size();
      std::lock_guard lk(mu);
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
        "SELECT count(*), coalesce(sum(size),0), min(ts), max(ts) FROM outbox WHERE priority=? "
        "AND ts<?");
    if (!q.ok()) return;
    q->Bind(1, p).Bind(2, cutoff);
    Status err;
    if (!q->Step(&err) || q->Int(0) == 0) continue;
    uint64_t n = static_cast<uint64_t>(q->Int(0)), size = static_cast<uint64_t>(q->Int(1));
    int64_t first = q->Int(2), last = q->Int(3);
    q->Reset();
    auto del = writer_db.Prepare("DELETE FROM outbox WHERE priority=? AND ts<?");
    if (!del.ok() || !del->Bind(1, p).Bind(2, cutoff).Run().ok()) return;
    {
      std::lock_guard lk(mu);
      stats.pending_rows -= std::min(stats.pending_rows, n);
      stats.pending_bytes -= std::min(stats.pending_bytes, size);
    }
    Report(static_cast<Priority>(p), n, first, last, "age");
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
    std::vector<uint64_t> dels;
    std::vector<std::pair<uint64_t, std::string>> poison;
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
    Status st = Commit(batch, dels, poison, &removed_rows, &removed_bytes);
    std::vector<DurableCallback> fire;
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
      uint64_t added_bytes = 0;
      for (const auto& q : batch) added_bytes += q.env.msg.topic.size() + q.env.msg.payload.size();
      stats.pending_rows += batch.size();
      stats.pending_bytes += added_bytes;
      stats.pending_rows -= std::min(stats.pending_rows, removed_rows);
      stats.pending_bytes -= std::min(stats.pending_bytes, removed_bytes);
      for (uint64_t s : dels) settled_not_deleted.erase(s);
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
    if (!batch.empty()) {
      std::lock_guard call(listener_mu);
      if (on_commit) on_commit();
    }

    ShedIfNeeded();
    auto now = SteadyClock::now();
    if (now >= next_age_check) {
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
  impl->writer = std::thread([raw] { raw->WriterLoop(); });
  impl->checkpointer = std::thread([raw] { raw->CheckpointLoop(); });
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
      d.queue.push_back({Envelope{seq, build(i, seq)}, now});
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

Result<std::vector<Envelope>> Outbox::Lease(size_t max) {
  auto& d = *impl_;
  std::vector<Envelope> out;
  std::unordered_set<uint64_t> skip;
  {
    std::lock_guard lk(d.mu);
    skip = d.settled_not_deleted;
  }
  for (int p = kPriorityCount - 1; p >= 0 && out.size() < max; --p) {
    d.lease.Bind(1, p).Bind(2, static_cast<int64_t>(d.cursor[p]))
        .Bind(3, static_cast<int64_t>(max - out.size() + skip.size()));
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

void Outbox::Settle(uint64_t seq) {
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->to_delete.empty()) impl_->first_delete_at = SteadyClock::now();
    impl_->to_delete.push_back(seq);
    impl_->settled_not_deleted.insert(seq);
    // The first one starts the writer's 50 ms clock; the rest ride along.
    size_t n = impl_->to_delete.size();
    if (n != 1 && n < kDeleteBatch) return;
  }
  impl_->writer_cv.notify_one();
}

void Outbox::Poison(uint64_t seq, std::string reason) {
  {
    std::lock_guard lk(impl_->mu);
    impl_->to_poison.emplace_back(seq, std::move(reason));
    impl_->settled_not_deleted.insert(seq);
  }
  impl_->writer_cv.notify_one();
}

void Outbox::ReleaseAll() { impl_->cursor.fill(0); }

void Outbox::SetCommitListener(std::function<void()> f) {
  std::lock_guard lk(impl_->listener_mu);
  impl_->on_commit = std::move(f);
}

void Outbox::SetShedListener(std::function<void(const ShedReport&)> f) {
  std::lock_guard lk(impl_->listener_mu);
  impl_->on_shed = std::move(f);
}

OutboxStats Outbox::Stats() const {
  std::lock_guard lk(impl_->mu);
  OutboxStats s = impl_->stats;
  s.queued = impl_->queue.size();
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
