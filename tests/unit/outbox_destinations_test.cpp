// The outbox with upstream destinations: each destination leases, settles and sheds on its own;
// a row is deleted only when no destination is owed it; backlogs survive a reopen by name; a
// destination taken out of the config loses its backlog, reported; files from before the
// destination column are read as owed to the local broker. Real SQLite files, no sleeps.
#include <sqlite3.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/clock.h"
#include "store/outbox.h"
#include "outbox_shed_log.h"
#include "test_support.h"

namespace sanigate::store {
namespace {

using namespace std::chrono_literals;
constexpr auto kWait = 30s;

constexpr size_t kLocal = 0, kCity = 1, kDistrict = 2;

OutMessage Msg(Priority p, const std::string& topic, uint32_t targets = 0, int64_t ts = NowMs()) {
  OutMessage m;
  m.priority = p;
  m.ts_ms = ts;
  m.topic = topic;
  m.payload = "{}";
  m.targets = targets;
  return m;
}

std::vector<std::string> Topics(Outbox& ob, size_t dest, size_t max = 100000) {
  auto r = ob.Lease(max, dest);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  std::vector<std::string> out;
  if (r.ok())
    for (const auto& e : *r) out.push_back(e.msg.topic);
  return out;
}

std::vector<Envelope> Lease(Outbox& ob, size_t dest) {
  auto r = ob.Lease(100000, dest);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : std::vector<Envelope>{};
}

int64_t Count(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}


class DestinationsTest : public ::testing::Test {
 protected:
  OutboxOptions Options(std::vector<std::string> upstreams = {"city", "district"}) {
    OutboxOptions o;
    o.path = path_;
    for (auto& n : upstreams) o.upstreams.push_back({n, 0, 0});
    // Telemetry to everybody, status to the local broker only.
    o.route = [](const OutMessage& m) { return m.priority == Priority::kStatus ? 1u : 7u; };
    return o;
  }
  std::unique_ptr<Outbox> Open(const OutboxOptions& o) {
    auto r = Outbox::Open(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  uint64_t Append(Outbox& ob, const OutMessage& m) { return ob.Append(1, [&](size_t, uint64_t) { return m; }); }
  void Settle(Outbox& ob, size_t dest) {
    for (const auto& e : Lease(ob, dest)) ob.Settle(e.seq, dest);
  }

  unit::ScratchDir dir_;
  std::string path_ = dir_.File("outbox.db");
};

TEST_F(DestinationsTest, EachDestinationLeasesWhatItIsOwedAndTheRowGoesWhenAllAcknowledged) {
  auto ob = Open(Options());
  ASSERT_TRUE(ob);
  Append(*ob, Msg(Priority::kTelemetry, "t1"));
  Append(*ob, Msg(Priority::kStatus, "s1"));
  Append(*ob, Msg(Priority::kTelemetry, "t2", /*targets=*/0b100));  // the district only
  ASSERT_TRUE(ob->Flush(kWait).ok());

  EXPECT_EQ(Topics(*ob, kLocal), (std::vector<std::string>{"s1", "t1"}));
  EXPECT_EQ(Topics(*ob, kCity), (std::vector<std::string>{"t1"}));
  EXPECT_EQ(Topics(*ob, kDistrict), (std::vector<std::string>{"t1", "t2"}));
  auto s = ob->Stats();
  ASSERT_EQ(s.destinations.size(), 3u);
  EXPECT_EQ(s.destinations[kLocal].name, "local");
  EXPECT_EQ(s.destinations[kCity].name, "city");
  EXPECT_EQ(s.destinations[kLocal].pending_rows, 2u);
  EXPECT_EQ(s.destinations[kCity].pending_rows, 1u);
  EXPECT_EQ(s.destinations[kDistrict].pending_rows, 2u);

  // The local broker acknowledges everything: t1 stays for the upstreams, s1 is gone.
  ob->ReleaseAll(kLocal);
  Settle(*ob, kLocal);
  ASSERT_TRUE(ob->Flush(kWait).ok());
  ob.reset();  // commits the settlements
  EXPECT_EQ(Count(path_, "SELECT count(*) FROM outbox"), 2);

  ob = Open(Options());
  ASSERT_TRUE(ob);
  EXPECT_TRUE(Topics(*ob, kLocal).empty());
  EXPECT_EQ(Topics(*ob, kCity), (std::vector<std::string>{"t1"}));
  s = ob->Stats();
  EXPECT_EQ(s.destinations[kLocal].pending_rows, 0u);
  EXPECT_EQ(s.destinations[kCity].pending_rows, 1u);
  EXPECT_EQ(s.destinations[kDistrict].pending_rows, 2u);
  ob->ReleaseAll(kCity);
  Settle(*ob, kCity);
  Settle(*ob, kDistrict);
  ob.reset();
  EXPECT_EQ(Count(path_, "SELECT count(*) FROM outbox"), 0);
}

TEST_F(DestinationsTest, ASettledRowIsNotLeasedAgainToThatDestinationBeforeItsCommit) {
  auto ob = Open(Options());
  ASSERT_TRUE(ob);
  Append(*ob, Msg(Priority::kTelemetry, "t1"));
  ASSERT_TRUE(ob->Flush(kWait).ok());
  auto got = Lease(*ob, kCity);
  ASSERT_EQ(got.size(), 1u);
  ob->Settle(got[0].seq, kCity);
  ob->ReleaseAll(kCity);  // a reconnect right after the PUBACK
  EXPECT_TRUE(Topics(*ob, kCity).empty());
  EXPECT_EQ(Topics(*ob, kLocal), (std::vector<std::string>{"t1"}));
}

TEST_F(DestinationsTest, BacklogsAreFoundByNameWhenTheUpstreamsAreReordered) {
  auto ob = Open(Options({"city", "district"}));
  ASSERT_TRUE(ob);
  Append(*ob, Msg(Priority::kTelemetry, "for-district", 0b100));
  ASSERT_TRUE(ob->Flush(kWait).ok());
  ob.reset();
  ob = Open(Options({"district", "city"}));  // district is destination 1 now
  ASSERT_TRUE(ob);
  EXPECT_EQ(Topics(*ob, 1), (std::vector<std::string>{"for-district"}));
  EXPECT_TRUE(Topics(*ob, 2).empty());
  EXPECT_EQ(ob->Stats().destinations[1].name, "district");
  EXPECT_EQ(ob->Stats().destinations[1].pending_rows, 1u);
}

TEST_F(DestinationsTest, AnUpstreamTakenOutOfTheConfigLosesItsBacklogAndItIsReported) {
  ShedLog log;  // before the outbox: it may report while closing
  auto ob = Open(Options());
  ASSERT_TRUE(ob);
  for (int i = 0; i < 5; ++i) Append(*ob, Msg(Priority::kTelemetry, "t" + std::to_string(i)));
  ASSERT_TRUE(ob->Flush(kWait).ok());
  Settle(*ob, kLocal);
  Settle(*ob, kCity);
  ob.reset();  // the district still owed 5
  ASSERT_EQ(Count(path_, "SELECT count(*) FROM outbox"), 5);

  ob = Open(Options({"city"}));
  ASSERT_TRUE(ob);
  log.Attach(*ob);
  EXPECT_TRUE(log.WaitForRows(5));
  EXPECT_EQ(log.Total(), 5u);
  auto reports = log.reports();
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].destination, "district");
  EXPECT_EQ(reports[0].reason, "removed");
  EXPECT_EQ(Count(path_, "SELECT count(*) FROM outbox"), 0);
  EXPECT_EQ(Count(path_, "SELECT count(*) FROM destination"), 1);
}

TEST_F(DestinationsTest, AnUpstreamsOwnBoundShedsItsOldestTelemetryFirstAndSparesTheOthers) {
  OutboxOptions o = Options();
  o.upstreams[0].max_rows = 100;  // the city keeps at most 100
  ShedLog log;  // before the outbox: it may report while closing
  auto ob = Open(o);
  ASSERT_TRUE(ob);
  log.Attach(*ob);
  Append(*ob, Msg(Priority::kAlarm, "sos"));
  for (int i = 0; i < 300; ++i) Append(*ob, Msg(Priority::kTelemetry, "t" + std::to_string(i)));
  ASSERT_TRUE(ob->Flush(kWait).ok());
  ASSERT_TRUE(log.WaitForRows(201));
  for (const auto& r : log.reports()) {
    EXPECT_EQ(r.destination, "city");
    EXPECT_EQ(r.priority, Priority::kTelemetry);
  }
  auto s = ob->Stats();
  EXPECT_LE(s.destinations[kCity].pending_rows, 100u);
  EXPECT_EQ(s.destinations[kLocal].pending_rows, 301u);
  EXPECT_EQ(s.destinations[kDistrict].pending_rows, 301u);
  auto city = Topics(*ob, kCity);
  ASSERT_FALSE(city.empty());
  EXPECT_EQ(city.front(), "sos");   // alarms last to go
  EXPECT_EQ(city.back(), "t299");   // the newest kept
  EXPECT_EQ(Topics(*ob, kLocal).size(), 301u);
}

TEST_F(DestinationsTest, ARefusalByOneUpstreamIsDeadLetteredUnderItsNameAndTheOthersStillGetTheRow) {
  auto ob = Open(Options());
  ASSERT_TRUE(ob);
  Append(*ob, Msg(Priority::kTelemetry, "t1"));
  ASSERT_TRUE(ob->Flush(kWait).ok());
  auto got = Lease(*ob, kCity);
  ASSERT_EQ(got.size(), 1u);
  ob->Poison(got[0].seq, "not authorized", kCity);
  ob.reset();
  ob = Open(Options());
  ASSERT_TRUE(ob);
  EXPECT_TRUE(Topics(*ob, kCity).empty());
  EXPECT_EQ(Topics(*ob, kLocal), (std::vector<std::string>{"t1"}));
  EXPECT_EQ(Topics(*ob, kDistrict), (std::vector<std::string>{"t1"}));
  EXPECT_EQ(Count(path_, "SELECT count(*) FROM dead_letter WHERE reason='city: not authorized'"), 1);
}

TEST_F(DestinationsTest, AnOutboxFromBeforeDestinationsIsOwedToTheLocalBrokerOnly) {
  {
    OutboxOptions o;
    o.path = path_;
    auto ob = Open(o);
    ASSERT_TRUE(ob);
    Append(*ob, Msg(Priority::kTelemetry, "old"));
    ASSERT_TRUE(ob->Flush(kWait).ok());
  }
  // What an older sanigate wrote: no pending column, no destination table.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "ALTER TABLE outbox DROP COLUMN pending; DROP TABLE destination", nullptr, nullptr, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);

  auto ob = Open(Options());
  ASSERT_TRUE(ob);
  EXPECT_EQ(Topics(*ob, kLocal), (std::vector<std::string>{"old"}));
  EXPECT_TRUE(Topics(*ob, kCity).empty());
  Append(*ob, Msg(Priority::kTelemetry, "new"));
  ASSERT_TRUE(ob->Flush(kWait).ok());
  EXPECT_EQ(Topics(*ob, kCity), (std::vector<std::string>{"new"}));
}

TEST_F(DestinationsTest, AMessageNobodyWantsIsNotStored) {
  auto ob = Open(Options());
  ASSERT_TRUE(ob);
  Append(*ob, Msg(Priority::kTelemetry, "x", /*targets=*/0b1000));  // no destination 3
  ASSERT_TRUE(ob->Flush(kWait).ok());
  EXPECT_EQ(ob->Stats().pending_rows, 0u);
  EXPECT_EQ(Count(path_, "SELECT count(*) FROM outbox"), 0);
}

}  // namespace
}  // namespace sanigate::store
