// The durable SQLite outbox: ids, lease order, settle/poison/release, persistence across reopen,
// group commit, shedding, and refusal of files that are not (or no longer) ours. Every test
// works in its own mkdtemp directory; waits are on the outbox's own signals, never sleeps.
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <future>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/clock.h"
#include "store/outbox.h"
#include "outbox_shed_log.h"
#include "test_support.h"

namespace sanigate::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using unit::ReadFile;
using unit::ScratchDir;
using unit::WriteFile;

constexpr auto kWait = 30s;  // generous: only reached when something is broken

OutMessage Msg(Priority p, const std::string& topic, int64_t ts = NowMs()) {
  OutMessage m;
  m.priority = p;
  m.ts_ms = ts;
  m.topic = topic;
  m.payload = "{\"topic\":\"" + topic + "\"}";
  m.retain = p == Priority::kStatus;
  return m;
}

uint64_t AppendOne(Outbox& ob, const OutMessage& m) {
  return ob.Append(1, [&](size_t, uint64_t) { return m; });
}

std::vector<Envelope> LeaseAll(Outbox& ob, size_t max = 100000) {
  auto r = ob.Lease(max);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r.value() : std::vector<Envelope>{};
}

std::vector<std::string> Topics(const std::vector<Envelope>& envs) {
  std::vector<std::string> out;
  for (const auto& e : envs) out.push_back(e.msg.topic);
  return out;
}

// Runs SQL on a database file with the plain sqlite3 API (as another program would).
void Sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << msg;
}

// Rows of a query as "a|b|c" strings.
std::vector<std::string> Query(const std::string& path, const std::string& sql) {
  std::vector<std::string> rows;
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    ADD_FAILURE() << "cannot open " << path;
    return rows;
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sqlite3_errmsg(db);
    sqlite3_close(db);
    return rows;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::string row;
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      if (i) row += "|";
      const unsigned char* t = sqlite3_column_text(st, i);
      row += t ? reinterpret_cast<const char*>(t) : "NULL";
    }
    rows.push_back(row);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

std::set<std::string> DirEntries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}


class OutboxTest : public ::testing::Test {
 protected:
  OutboxOptions Options() {
    OutboxOptions o;
    o.path = path_;
    return o;
  }
  std::unique_ptr<Outbox> Open(const OutboxOptions& o) {
    auto r = Outbox::Open(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  std::unique_ptr<Outbox> Open() { return Open(Options()); }

  ScratchDir dir_;
  std::string path_ = dir_.File("outbox.db");
};

TEST_F(OutboxTest, FreshDatabaseStartsIdsAtNowMsTimes1000) {
  int64_t before = NowMs();
  auto ob = Open();
  ASSERT_TRUE(ob);
  int64_t after = NowMs();
  uint64_t start = ob->last_seq();
  EXPECT_GE(start, static_cast<uint64_t>(before) * 1000);
  EXPECT_LE(start, static_cast<uint64_t>(after) * 1000);
  EXPECT_EQ(start % 1000, 0u);
  EXPECT_EQ(AppendOne(*ob, Msg(Priority::kTelemetry, "t")), start + 1);
  EXPECT_EQ(AppendOne(*ob, Msg(Priority::kTelemetry, "t")), start + 2);
}

TEST_F(OutboxTest, MissingParentDirectoryIsCreated) {
  OutboxOptions o = Options();
  o.path = dir_.File("a/b/outbox.db");
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  EXPECT_TRUE(fs::exists(o.path));
}

TEST_F(OutboxTest, AppendedBatchGetsConsecutiveSeqsPassedToTheBuilder) {
  auto ob = Open();
  ASSERT_TRUE(ob);
  uint64_t start = ob->last_seq();
  std::vector<std::pair<size_t, uint64_t>> seen;
  uint64_t last = ob->Append(3, [&](size_t i, uint64_t seq) {
    seen.emplace_back(i, seq);
    return Msg(Priority::kTelemetry, "t" + std::to_string(seq));
  });
  EXPECT_EQ(last, start + 3);
  EXPECT_EQ(seen, (std::vector<std::pair<size_t, uint64_t>>{
                      {0, start + 1}, {1, start + 2}, {2, start + 3}}));
  ASSERT_TRUE(ob->WaitDurable(last, kWait).ok());
  std::vector<Envelope> got = LeaseAll(*ob);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[1].seq, start + 2);
  EXPECT_EQ(got[1].msg.topic, "t" + std::to_string(start + 2));
}

TEST_F(OutboxTest, DurableCallbackRunsAfterTheCommit) {
  auto ob = Open();
  ASSERT_TRUE(ob);
  Outbox* raw = ob.get();
  const uint64_t expected_seq = ob->last_seq() + 1;
  std::promise<std::pair<bool, bool>> done;  // {status ok, seq committed when called}
  uint64_t seq = ob->Append(
      1, [](size_t, uint64_t) { return Msg(Priority::kEvent, "e"); },
      [&](const Status& st) {
        done.set_value({st.ok(), raw->WaitDurable(expected_seq, 0ms).ok()});
      });
  EXPECT_EQ(seq, expected_seq);
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(fut.get(), std::make_pair(true, true));
}

class LeaseOrderTest : public OutboxTest {
 protected:
  void SetUp() override {
    ob_ = Open();
    ASSERT_TRUE(ob_);
    // Interleaved on purpose: the lease order must come from priority, then seq.
    ts0_ = NowMs();
    for (auto [p, t] : {std::pair{Priority::kTelemetry, "T1"}, {Priority::kAlarm, "A1"},
                        {Priority::kStatus, "S1"}, {Priority::kEvent, "E1"},
                        {Priority::kTelemetry, "T2"}, {Priority::kAlarm, "A2"},
                        {Priority::kEvent, "E2"}, {Priority::kStatus, "S2"}}) {
      last_ = AppendOne(*ob_, Msg(p, t, ts0_ + static_cast<int64_t>(seq_of_.size())));
      seq_of_[t] = last_;
    }
    ASSERT_TRUE(ob_->WaitDurable(last_, kWait).ok());
  }
  std::unique_ptr<Outbox> ob_;
  int64_t ts0_ = 0;  // recent: older rows would be shed by age (max_age_ms)
  uint64_t last_ = 0;
  std::map<std::string, uint64_t> seq_of_;
};

TEST_F(LeaseOrderTest, AlarmsThenEventsThenStatusThenTelemetryEachBySeq) {
  std::vector<Envelope> got = LeaseAll(*ob_);
  EXPECT_EQ(Topics(got),
            (std::vector<std::string>{"A1", "A2", "E1", "E2", "S1", "S2", "T1", "T2"}));
  for (const auto& e : got) {
    SCOPED_TRACE(e.msg.topic);
    EXPECT_EQ(e.seq, seq_of_[e.msg.topic]);
  }
}

TEST_F(LeaseOrderTest, LeasedEnvelopeCarriesTheAppendedMessage) {
  std::vector<Envelope> got = LeaseAll(*ob_);
  ASSERT_EQ(got.size(), 8u);
  const Envelope& s1 = got[4];
  EXPECT_EQ(s1.msg.topic, "S1");
  EXPECT_EQ(s1.msg.priority, Priority::kStatus);
  EXPECT_EQ(s1.msg.ts_ms, ts0_ + 2);
  EXPECT_EQ(s1.msg.payload, "{\"topic\":\"S1\"}");
  EXPECT_TRUE(s1.msg.retain);
  EXPECT_FALSE(got[0].msg.retain);
  EXPECT_EQ(got[0].msg.priority, Priority::kAlarm);
}

TEST_F(LeaseOrderTest, LeaseHonoursMaxAndTheNextLeaseContinues) {
  EXPECT_EQ(Topics(LeaseAll(*ob_, 3)), (std::vector<std::string>{"A1", "A2", "E1"}));
  EXPECT_EQ(Topics(LeaseAll(*ob_, 100)),
            (std::vector<std::string>{"E2", "S1", "S2", "T1", "T2"}));
}

TEST_F(LeaseOrderTest, SecondLeaseDoesNotReturnLeasedRows) {
  ASSERT_EQ(LeaseAll(*ob_).size(), 8u);
  EXPECT_TRUE(LeaseAll(*ob_).empty());
  uint64_t t3 = AppendOne(*ob_, Msg(Priority::kTelemetry, "T3"));
  ASSERT_TRUE(ob_->WaitDurable(t3, kWait).ok());
  std::vector<Envelope> got = LeaseAll(*ob_);
  ASSERT_EQ(Topics(got), (std::vector<std::string>{"T3"}));
  EXPECT_EQ(got[0].seq, t3);
}

TEST_F(LeaseOrderTest, NewAlarmIsLeasedBeforeOlderUnleasedTelemetry) {
  EXPECT_EQ(Topics(LeaseAll(*ob_, 7)),
            (std::vector<std::string>{"A1", "A2", "E1", "E2", "S1", "S2", "T1"}));
  uint64_t a3 = AppendOne(*ob_, Msg(Priority::kAlarm, "A3"));
  ASSERT_TRUE(ob_->WaitDurable(a3, kWait).ok());
  EXPECT_EQ(Topics(LeaseAll(*ob_)), (std::vector<std::string>{"A3", "T2"}));
}

TEST_F(LeaseOrderTest, ReleaseAllMakesLeasedUnsettledRowsLeasableAgainInOrder) {
  ASSERT_EQ(LeaseAll(*ob_).size(), 8u);
  ob_->Settle(seq_of_["A1"]);
  ob_->Settle(seq_of_["S2"]);
  ob_->ReleaseAll();
  EXPECT_EQ(Topics(LeaseAll(*ob_)),
            (std::vector<std::string>{"A2", "E1", "E2", "S1", "T1", "T2"}));
  EXPECT_TRUE(LeaseAll(*ob_).empty());
}

TEST_F(LeaseOrderTest, SettledRowsAreGoneAfterReopenAndUnsettledRowsPersist) {
  ASSERT_EQ(LeaseAll(*ob_).size(), 8u);
  // S2 has the highest seq of all: settling it must not let seqs go back after reopen.
  for (const char* t : {"A1", "E2", "T1", "S2"}) ob_->Settle(seq_of_[t]);
  ASSERT_TRUE(ob_->Flush(kWait).ok());
  uint64_t last_before = ob_->last_seq();
  EXPECT_EQ(last_before, last_);
  ob_.reset();

  auto ob = Open();
  ASSERT_TRUE(ob);
  EXPECT_EQ(ob->Stats().pending_rows, 4u);
  EXPECT_EQ(ob->last_seq(), last_before);
  std::vector<Envelope> got = LeaseAll(*ob);
  EXPECT_EQ(Topics(got), (std::vector<std::string>{"A2", "E1", "S1", "T2"}));
  for (const auto& e : got) EXPECT_EQ(e.seq, seq_of_[e.msg.topic]) << e.msg.topic;

  uint64_t next = AppendOne(*ob, Msg(Priority::kTelemetry, "after"));
  EXPECT_EQ(next, last_before + 1);
}

TEST_F(LeaseOrderTest, PoisonedRowIsDeadLetteredAndNotLeasedAgain) {
  ASSERT_EQ(LeaseAll(*ob_).size(), 8u);
  ob_->Poison(seq_of_["E1"], "payload too large");
  ob_->ReleaseAll();
  EXPECT_EQ(Topics(LeaseAll(*ob_)),
            (std::vector<std::string>{"A1", "A2", "E2", "S1", "S2", "T1", "T2"}));
  ob_.reset();  // commits the queued poison

  EXPECT_EQ(Query(path_, "SELECT seq, topic, reason FROM dead_letter"),
            (std::vector<std::string>{std::to_string(seq_of_["E1"]) + "|E1|payload too large"}));
  auto ob = Open();
  ASSERT_TRUE(ob);
  EXPECT_EQ(ob->Stats().pending_rows, 7u);
  EXPECT_EQ(Topics(LeaseAll(*ob)),
            (std::vector<std::string>{"A1", "A2", "E2", "S1", "S2", "T1", "T2"}));
}

TEST_F(OutboxTest, ConcurrentAppendsAreGroupCommitted) {
  OutboxOptions o = Options();
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  constexpr int kThreads = 4, kPerThread = 2500;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerThread; ++i)
        seqs[t].push_back(AppendOne(*ob, Msg(Priority::kTelemetry, "t" + std::to_string(t))));
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(ob->Flush(60s).ok());

  OutboxStats s = ob->Stats();
  EXPECT_EQ(s.appended, 10000u);
  EXPECT_EQ(s.committed, 10000u);
  EXPECT_EQ(s.pending_rows, 10000u);
  EXPECT_EQ(s.queued, 0u);
  EXPECT_LT(s.commits, s.appended / 10) << "commits: " << s.commits;

  std::vector<uint64_t> all;
  for (const auto& v : seqs) {
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), 10000u);
  EXPECT_EQ(all.back() - all.front(), 9999u) << "seqs are not one consecutive run";
  EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end()) << "duplicate seq";

  std::vector<Envelope> got = LeaseAll(*ob);
  ASSERT_EQ(got.size(), 10000u);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].seq, all[i]) << i;
}

TEST_F(OutboxTest, OneCommitTakesAtMostCommitMaxRows) {
  OutboxOptions o = Options();
  o.commit_max_rows = 100;
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  uint64_t last = ob->Append(1000, [](size_t, uint64_t) { return Msg(Priority::kTelemetry, "t"); });
  ASSERT_TRUE(ob->WaitDurable(last, kWait).ok());
  EXPECT_EQ(ob->Stats().commits, 10u);
  EXPECT_EQ(ob->Stats().committed, 1000u);
}

TEST_F(OutboxTest, OverMaxRowsShedsOldestTelemetryAndKeepsAlarms) {
  OutboxOptions o = Options();
  o.max_rows = 100;  // below OutboxOptions' documented minimum; Outbox does not enforce it
  ShedLog log;  // outlives the outbox, which may report while closing
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  log.Attach(*ob);
  const int64_t ts0 = NowMs();
  uint64_t first = ob->last_seq() + 1;
  // One Append so all 155 rows land in one commit: 155 -> shed to 99 (1% under the bound).
  ob->Append(155, [&](size_t i, uint64_t) {
    return i < 150 ? Msg(Priority::kTelemetry, "t", ts0 + static_cast<int64_t>(i))
                   : Msg(Priority::kAlarm, "a", ts0 + static_cast<int64_t>(i));
  });
  ASSERT_TRUE(log.WaitForRows(56));

  OutboxStats s = ob->Stats();
  EXPECT_EQ(s.pending_rows, 99u);
  EXPECT_LE(s.pending_rows, o.max_rows);
  EXPECT_EQ(s.shed[static_cast<int>(Priority::kTelemetry)], 56u);
  EXPECT_EQ(s.shed[static_cast<int>(Priority::kAlarm)], 0u);

  uint64_t telemetry_reported = 0;
  for (const auto& r : log.reports()) {
    EXPECT_EQ(r.priority, Priority::kTelemetry);
    EXPECT_EQ(r.reason, "size");
    if (r.priority == Priority::kTelemetry) telemetry_reported += r.rows;
  }
  EXPECT_EQ(telemetry_reported, s.shed[static_cast<int>(Priority::kTelemetry)]);
  ASSERT_EQ(log.reports().size(), 1u);
  EXPECT_EQ(log.reports()[0].oldest_ts, ts0);
  EXPECT_EQ(log.reports()[0].newest_ts, ts0 + 55);

  std::vector<Envelope> got = LeaseAll(*ob);
  ASSERT_EQ(got.size(), 99u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i].msg.priority, Priority::kAlarm) << i;
  EXPECT_EQ(got[5].seq, first + 56) << "the oldest telemetry is shed first";
  EXPECT_EQ(got.back().seq, first + 149);
}

TEST_F(OutboxTest, AlarmsAloneOverMaxRowsAreShedAndReportedAsAlarms) {
  OutboxOptions o = Options();
  o.max_rows = 100;
  ShedLog log;  // outlives the outbox, which may report while closing
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  log.Attach(*ob);
  uint64_t first = ob->last_seq() + 1;
  ob->Append(150, [](size_t, uint64_t) { return Msg(Priority::kAlarm, "a"); });
  ASSERT_TRUE(log.WaitForRows(51));

  OutboxStats s = ob->Stats();
  EXPECT_EQ(s.pending_rows, 99u);
  EXPECT_EQ(s.shed[static_cast<int>(Priority::kAlarm)], 51u);
  EXPECT_EQ(s.shed[static_cast<int>(Priority::kTelemetry)], 0u);
  std::vector<ShedReport> reports = log.reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].priority, Priority::kAlarm);
  EXPECT_EQ(reports[0].rows, 51u);

  std::vector<Envelope> got = LeaseAll(*ob);
  ASSERT_EQ(got.size(), 99u);
  EXPECT_EQ(got.front().seq, first + 51);
}

TEST_F(OutboxTest, TelemetryAndStatusOlderThanMaxAgeAreShedButEventsAreKept) {
  OutboxOptions o = Options();
  o.max_age_ms = 3600 * 1000;
  ShedLog log;  // outlives the outbox, which may report while closing
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  log.Attach(*ob);
  const int64_t now = NowMs(), old = now - 2 * 3600 * 1000;
  const std::vector<OutMessage> msgs = {
      Msg(Priority::kTelemetry, "old-t", old), Msg(Priority::kStatus, "old-s", old),
      Msg(Priority::kEvent, "old-e", old),     Msg(Priority::kAlarm, "old-a", old),
      Msg(Priority::kTelemetry, "new-t", now)};
  // One commit; the first commit after opening runs the age check.
  ob->Append(msgs.size(), [&](size_t i, uint64_t) { return msgs[i]; });
  ASSERT_TRUE(log.WaitForRows(2));

  std::vector<ShedReport> reports = log.reports();
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].priority, Priority::kTelemetry);
  EXPECT_EQ(reports[1].priority, Priority::kStatus);
  for (const auto& r : reports) {
    EXPECT_EQ(r.rows, 1u);
    EXPECT_EQ(r.reason, "age");
    EXPECT_EQ(r.oldest_ts, old);
    EXPECT_EQ(r.newest_ts, old);
  }
  EXPECT_EQ(ob->Stats().pending_rows, 3u);
  EXPECT_EQ(Topics(LeaseAll(*ob)), (std::vector<std::string>{"old-a", "old-e", "new-t"}));
}

// --- Files that are not ours ------------------------------------------------------------------

class ForeignFileTest : public OutboxTest {
 protected:
  // Opening must fail with kDataLoss, leave the file byte for byte as it was and create nothing.
  Status ExpectRefusedAndUntouched() {
    std::string before = ReadFile(path_);
    std::set<std::string> entries = DirEntries(dir_.path());
    auto r = Outbox::Open(Options());
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kDataLoss) << r.status().ToString();
    EXPECT_TRUE(ReadFile(path_) == before) << "the file was modified";
    EXPECT_EQ(DirEntries(dir_.path()), entries);
    return r.status();
  }
};

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen() & 0xFF);
  return s;
}

TEST_F(ForeignFileTest, RandomBytesAreRefusedAsDataLossAndLeftUntouched) {
  std::string bytes = RandomBytes(8192, 42);
  bytes[0] = 'X';  // never the SQLite magic
  WriteFile(path_, bytes);
  Status st = ExpectRefusedAndUntouched();
  EXPECT_NE(st.message().find("not an SQLite database"), std::string::npos) << st.message();
}

TEST_F(ForeignFileTest, SqliteHeaderFollowedByGarbageIsRefusedAsDataLoss) {
  std::string bytes = std::string("SQLite format 3\0", 16) + RandomBytes(8192 - 16, 7);
  WriteFile(path_, bytes);
  (void)ExpectRefusedAndUntouched();
}

TEST_F(ForeignFileTest, OutboxWithDamagedPagesIsRefusedAsDataLoss) {
  {
    auto ob = Open();
    ASSERT_TRUE(ob);
    uint64_t last = ob->Append(300, [](size_t i, uint64_t) {
      OutMessage m = Msg(Priority::kTelemetry, "t");
      m.payload = std::string(400, static_cast<char>('a' + i % 26));
      return m;
    });
    ASSERT_TRUE(ob->WaitDurable(last, kWait).ok());
  }
  std::string bytes = ReadFile(path_);
  ASSERT_GT(bytes.size(), 8u * 4096);
  // Keep page 1 (header and schema) and overwrite every later page with a fixed pattern.
  for (size_t i = 4096; i < bytes.size(); ++i) bytes[i] = static_cast<char>(0xA5);
  WriteFile(path_, bytes);
  (void)ExpectRefusedAndUntouched();
}

TEST_F(ForeignFileTest, SqliteDatabaseOfAnotherApplicationIsRefused) {
  Sql(path_, "CREATE TABLE readings(id INTEGER PRIMARY KEY, v REAL);"
             "INSERT INTO readings(v) VALUES (1.5), (2.5);");
  Status st = ExpectRefusedAndUntouched();
  EXPECT_NE(st.message().find("another application"), std::string::npos) << st.message();
  EXPECT_EQ(Query(path_, "SELECT count(*) FROM readings"), (std::vector<std::string>{"2"}));
}

TEST_F(ForeignFileTest, SqliteDatabaseWithAnotherApplicationIdIsRefused) {
  Sql(path_, "PRAGMA application_id=1234; CREATE TABLE t(x);");
  Status st = ExpectRefusedAndUntouched();
  EXPECT_NE(st.message().find("application_id 1234"), std::string::npos) << st.message();
}

TEST_F(ForeignFileTest, OutboxFromANewerSchemaVersionIsRefused) {
  {
    auto ob = Open();
    ASSERT_TRUE(ob);
    uint64_t seq = AppendOne(*ob, Msg(Priority::kAlarm, "keep me"));
    ASSERT_TRUE(ob->WaitDurable(seq, kWait).ok());
  }
  Sql(path_, "PRAGMA user_version=99;");
  Status st = ExpectRefusedAndUntouched();
  EXPECT_NE(st.message().find("newer"), std::string::npos) << st.message();
  EXPECT_EQ(Query(path_, "SELECT topic FROM outbox"), (std::vector<std::string>{"keep me"}));
}

// --- Full disk ---------------------------------------------------------------------------------

TEST_F(OutboxTest, FullDiskIsReportedAndShedsInsteadOfCrashing) {
  OutboxOptions o = Options();
  o.max_page_count = 40;  // ~160 KB: about 70 of the rows below
  o.commit_max_rows = 10;
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  Outbox* raw = ob.get();
  std::mutex mu;
  std::vector<ShedReport> reports;
  std::vector<std::string> errors_at_shed;
  ob->SetShedListener([&](const ShedReport& r) {
    std::string err = raw->Stats().last_error;  // the writer reports right after the failure
    std::lock_guard lk(mu);
    reports.push_back(r);
    errors_at_shed.push_back(err);
  });
  const int64_t ts0 = NowMs();
  ob->Append(300, [&](size_t i, uint64_t) {
    OutMessage m = Msg(Priority::kTelemetry, "t", ts0 + static_cast<int64_t>(i));
    m.payload = std::string(2000, 'x');
    return m;
  });
  Status flushed = ob->Flush(60s);
  EXPECT_TRUE(flushed.ok() || flushed.code() == Code::kDeadline) << flushed.ToString();

  OutboxStats s = ob->Stats();
  {
    std::lock_guard lk(mu);
    ASSERT_FALSE(reports.empty()) << "a full disk must shed (and report) to make room";
    ASSERT_FALSE(errors_at_shed.empty());
    EXPECT_NE(errors_at_shed[0], "");
    EXPECT_NE(errors_at_shed[0].find("resource exhausted"), std::string::npos) << errors_at_shed[0];
    EXPECT_NE(errors_at_shed[0].find("full"), std::string::npos) << errors_at_shed[0];
    uint64_t shed = 0;
    for (const auto& r : reports) {
      EXPECT_EQ(r.priority, Priority::kTelemetry);
      shed += r.rows;
    }
    if (flushed.ok()) {
      // Everything is committed, so the writer is idle and the counts are final.
      EXPECT_EQ(s.committed, 300u);
      EXPECT_EQ(shed, s.shed[static_cast<int>(Priority::kTelemetry)]);
      EXPECT_EQ(s.pending_rows + shed, s.committed);
      EXPECT_EQ(s.last_error, "") << "healthy again once everything is committed";
    }
  }
  uint64_t pending = s.pending_rows;
  ob.reset();

  auto again = Open(o);
  ASSERT_TRUE(again) << "the outbox must still open after running full";
  if (flushed.ok()) {
    EXPECT_EQ(again->Stats().pending_rows, pending);
  }
}

TEST_F(OutboxTest, FullDiskSheddingIsReportedWithReasonDisk) {
  OutboxOptions o = Options();
  o.max_page_count = 40;
  o.commit_max_rows = 10;
  ShedLog log;  // outlives the outbox, which may report while closing
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  log.Attach(*ob);
  ob->Append(300, [](size_t, uint64_t) {
    OutMessage m = Msg(Priority::kTelemetry, "t");
    m.payload = std::string(2000, 'x');
    return m;
  });
  ASSERT_TRUE(log.WaitForRows(1));
  EXPECT_EQ(log.reports()[0].reason, "disk");
}

TEST_F(OutboxTest, DestructorReturnsWhileTheDiskStaysFull) {
  OutboxOptions o = Options();
  o.max_page_count = 20;  // ~80 KB
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  uint64_t seq = ob->Append(1, [](size_t, uint64_t) {
    OutMessage m = Msg(Priority::kAlarm, "huge");
    m.payload = std::string(1 << 20, 'x');  // can never fit
    return m;
  });
  Status st = ob->WaitDurable(seq, 2s);
  EXPECT_EQ(st.code(), Code::kDeadline);
  auto closed = std::make_shared<std::promise<void>>();
  std::future<void> done = closed->get_future();
  std::thread([closed, ob = std::move(ob)]() mutable {
    ob.reset();
    closed->set_value();
  }).detach();
  EXPECT_EQ(done.wait_for(20s), std::future_status::ready) << "~Outbox() hangs";
}

}  // namespace
}  // namespace sanigate::store
